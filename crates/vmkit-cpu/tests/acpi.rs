//! Parses the ACPI tables back out of guest memory with a parser written from the spec,
//! independently of the writer.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_cpu::acpi::{ACPI_END, ACPI_START};
use vmkit_cpu::write_acpi_tables;

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn read(memory: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    memory.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
}
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}
fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().map(|b| u32::from(*b)).sum::<u32>() % 256 == 0
}

/// Reads a whole table at `addr`: checks its signature and checksum, returns its bytes and
/// revision.
fn sdt(memory: &GuestMemoryMmap<()>, addr: u64, signature: &[u8; 4]) -> (Vec<u8>, u8) {
    let header = read(memory, addr, 36);
    assert_eq!(&header[..4], signature, "signature at {addr:#x}");
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "{signature:?} length {len}");
    let bytes = read(memory, addr, len);
    assert!(sums_to_zero(&bytes), "{signature:?} checksum");
    assert_eq!(&bytes[10..16], b"VMKIT ", "{signature:?} OEM id");
    (bytes.clone(), bytes[8])
}

/// Finds the RSDP as Linux's legacy scan does: 16-byte steps over 0xe0000-0xfffff.
fn scan_rsdp(memory: &GuestMemoryMmap<()>) -> u64 {
    (0xe_0000u64..0x10_0000)
        .step_by(16)
        .find(|&addr| {
            let bytes = read(memory, addr, 20);
            &bytes[..8] == b"RSD PTR " && sums_to_zero(&bytes)
        })
        .expect("RSDP found by the legacy scan")
}

fn check(num_cpus: usize) {
    let memory = memory();
    let tables = write_acpi_tables(&memory, num_cpus).unwrap();
    assert!(tables.range.start >= ACPI_START && tables.range.end <= ACPI_END);

    let rsdp_addr = scan_rsdp(&memory);
    assert_eq!(rsdp_addr, tables.rsdp);
    assert_eq!(rsdp_addr % 16, 0);
    assert!((0xe_0000..0x10_0000).contains(&rsdp_addr));
    let rsdp = read(&memory, rsdp_addr, 36);
    assert_eq!(&rsdp[9..15], b"VMKIT ");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    assert!(
        sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp),
        "RSDP checksums"
    );

    let xsdt_addr = u64_at(&rsdp, 24);
    let (xsdt, _) = sdt(&memory, xsdt_addr, b"XSDT");
    let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(entries.len(), 2);
    let signatures: Vec<Vec<u8>> = entries.iter().map(|&a| read(&memory, a, 4)).collect();
    assert!(signatures.contains(&b"FACP".to_vec()) && signatures.contains(&b"APIC".to_vec()));
    let find = |sig: &[u8; 4]| entries[signatures.iter().position(|s| s == sig).unwrap()];

    let (fadt, fadt_rev) = sdt(&memory, find(b"FACP"), b"FACP");
    assert_eq!(fadt_rev, 6);
    assert_eq!(fadt.len(), 276);
    assert_ne!(u32_at(&fadt, 112) & (1 << 20), 0, "HW_REDUCED_ACPI");
    let boot_arch = u16_at(&fadt, 109);
    assert_ne!(boot_arch & (1 << 1), 0, "8042 present");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
    let dsdt_addr = u64_at(&fadt, 140);
    assert_eq!(
        u64::from(u32_at(&fadt, 40)),
        dsdt_addr,
        "DSDT and X_DSDT agree"
    );
    let (dsdt, _) = sdt(&memory, dsdt_addr, b"DSDT");
    assert_eq!(dsdt.len(), 36, "header-only DSDT");

    let (madt, madt_rev) = sdt(&memory, find(b"APIC"), b"APIC");
    assert!(madt_rev >= 1);
    assert_eq!(u32_at(&madt, 36), 0xfee0_0000, "local APIC address");
    assert_eq!(u32_at(&madt, 40) & 1, 1, "PCAT_COMPAT");
    let (mut cpus, mut ioapics, mut others) = (Vec::new(), Vec::new(), 0);
    let mut at = 44;
    while at < madt.len() {
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        assert!(len >= 2 && at + len <= madt.len(), "entry at {at} overruns");
        let entry = &madt[at..at + len];
        match kind {
            0 => {
                assert_eq!(len, 8);
                cpus.push((entry[2], entry[3], u32_at(entry, 4)));
            }
            1 => {
                assert_eq!(len, 12);
                ioapics.push((entry[2], u32_at(entry, 4), u32_at(entry, 8)));
            }
            _ => others += 1,
        }
        at += len;
    }
    assert_eq!(at, madt.len());
    assert_eq!(others, 0, "no interrupt source overrides or other entries");
    let expected: Vec<(u8, u8, u32)> = (0..num_cpus as u8).map(|i| (i, i, 1)).collect();
    assert_eq!(cpus, expected, "processor id = APIC id = index, enabled");
    assert_eq!(ioapics, vec![(num_cpus as u8, 0xfec0_0000, 0)]);
}

#[test]
fn one_cpu() {
    check(1);
}

#[test]
fn two_cpus() {
    check(2);
}

#[test]
fn eight_cpus() {
    check(8);
}

#[test]
fn fails_cleanly_without_memory_behind_the_area() {
    let small: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let err = write_acpi_tables(&small, 2).unwrap_err();
    assert!(err.to_string().contains("0xf0000"), "{err}");
}
