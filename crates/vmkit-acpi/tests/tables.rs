//! The tables decoded back with a parser written from the ACPI specification, independently
//! of the builder: signatures, lengths, checksums, FADT fields at their revision-1 offsets,
//! MADT entries, RSDT entries after linking, DSDT names; and the fw_cfg fix-up list.

use std::process::Command;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_acpi::{
    build_pc_tables, AcpiFile, AcpiTables, AllocZone, Error, PcAcpiConfig, PciConfig,
    BIOS_AREA_RSDP, BIOS_AREA_TABLES,
};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
}

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn read(memory: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    memory.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

/// A whole table at `addr`, its signature and checksum checked.
fn sdt(memory: &GuestMemoryMmap<()>, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
    let header = read(memory, addr, 36);
    assert_eq!(&header[..4], signature, "signature at {addr:#x}");
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "{signature:?} length {len}");
    let bytes = read(memory, addr, len);
    assert!(sums_to_zero(&bytes), "{signature:?} checksum");
    assert_eq!(&bytes[10..16], b"VMKIT ", "{signature:?} OEM id");
    bytes
}

/// Linux's legacy scan: 16-byte steps over 0xe0000-0xfffff for a checksummed "RSD PTR ".
fn scan_rsdp(memory: &GuestMemoryMmap<()>) -> u64 {
    (0xe_0000u64..0x10_0000)
        .step_by(16)
        .find(|&addr| {
            let bytes = read(memory, addr, 20);
            &bytes[..8] == b"RSD PTR " && sums_to_zero(&bytes)
        })
        .expect("RSDP found by the legacy scan")
}

#[derive(Debug, Default, PartialEq)]
struct Madt {
    lapic_address: u32,
    flags: u32,
    cpus: Vec<(u8, u8, u32)>,           // (uid, apic id, flags)
    ioapics: Vec<(u8, u32, u32)>,       // (id, address, gsi base)
    overrides: Vec<(u8, u8, u32, u16)>, // (bus, source, gsi, flags)
    nmis: Vec<(u8, u16, u8)>,           // (uid, flags, lint)
}

fn parse_madt(madt: &[u8]) -> Madt {
    let mut out = Madt {
        lapic_address: u32_at(madt, 36),
        flags: u32_at(madt, 40),
        ..Madt::default()
    };
    let mut at = 44;
    while at < madt.len() {
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        assert!(len >= 2 && at + len <= madt.len(), "entry at {at} overruns");
        let e = &madt[at..at + len];
        match kind {
            0 => {
                assert_eq!(len, 8);
                out.cpus.push((e[2], e[3], u32_at(e, 4)));
            }
            1 => {
                assert_eq!(len, 12);
                assert_eq!(e[3], 0, "reserved");
                out.ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8)));
            }
            2 => {
                assert_eq!(len, 10);
                out.overrides.push((e[2], e[3], u32_at(e, 4), u16_at(e, 8)));
            }
            4 => {
                assert_eq!(len, 6);
                out.nmis.push((e[2], u16_at(e, 3), e[5]));
            }
            other => panic!("unexpected MADT entry type {other}"),
        }
        at += len;
    }
    out
}

/// Finds an AML NameSeg.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything reached from the RSDP after linking into memory: (RSDT entries by signature).
fn walk(memory: &GuestMemoryMmap<()>) -> Vec<(Vec<u8>, u64)> {
    let rsdp_addr = scan_rsdp(memory);
    let rsdp = read(memory, rsdp_addr, 20);
    assert_eq!(rsdp[15], 0, "ACPI 1.0 RSDP, as QEMU's pc");
    assert_eq!(&rsdp[9..15], b"VMKIT ");
    let rsdt_addr = u64::from(u32_at(&rsdp, 16));
    let rsdt = sdt(memory, rsdt_addr, b"RSDT");
    assert_eq!((rsdt.len() - 36) % 4, 0);
    rsdt[36..]
        .chunks(4)
        .map(|c| {
            let addr = u64::from(u32_at(c, 0));
            (read(memory, addr, 4), addr)
        })
        .collect()
}

fn linked_qemu_pc(cpus: u8) -> (AcpiTables, GuestMemoryMmap<()>) {
    let tables = build_pc_tables(&PcAcpiConfig::qemu_pc(cpus, 0x800_0000)).unwrap();
    let memory = memory();
    tables.write_to_bios_area(&memory).unwrap();
    (tables, memory)
}

#[test]
fn qemu_pc_tables_decode() {
    for cpus in [1u8, 2, 9] {
        let (tables, memory) = linked_qemu_pc(cpus);
        assert_eq!(scan_rsdp(&memory), BIOS_AREA_RSDP);
        let entries = walk(&memory);
        let sigs: Vec<&[u8]> = entries.iter().map(|(s, _)| s.as_slice()).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"HPET"], "RSDT entries");
        let find = |sig: &[u8]| entries.iter().find(|(s, _)| s == sig).unwrap().1;

        // FADT revision 1, fields at their ACPI 1.0 offsets.
        let fadt = sdt(&memory, find(b"FACP"), b"FACP");
        assert_eq!(fadt[8], 1, "FADT revision");
        assert_eq!(fadt.len(), 116, "ACPI 1.0 FADT length");
        let facs_addr = u64::from(u32_at(&fadt, 36));
        let dsdt_addr = u64::from(u32_at(&fadt, 40));
        assert_eq!(fadt[44], 1, "INT_MODEL multiple APIC");
        assert_eq!(u16_at(&fadt, 46), 9, "SCI_INT");
        assert_eq!(u32_at(&fadt, 48), 0xb2, "SMI_CMD");
        assert_eq!((fadt[52], fadt[53]), (0xf1, 0xf0), "ACPI_ENABLE/DISABLE");
        assert_eq!(u32_at(&fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(&fadt, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(&fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(&fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(&fadt, 80), 0xafe0, "GPE0_BLK");
        assert_eq!(
            (fadt[88], fadt[89], fadt[90], fadt[91], fadt[92]),
            (4, 2, 0, 4, 4),
            "PM1_EVT, PM1_CNT, PM2_CNT, PM_TMR, GPE0 lengths"
        );
        assert_eq!(
            (u16_at(&fadt, 96), u16_at(&fadt, 98)),
            (0xfff, 0xfff),
            "no C2/C3"
        );
        assert_eq!(fadt[108], 0x32, "CENTURY");
        let flags = u32_at(&fadt, 112);
        let cluster = if cpus > 8 { 1 << 18 } else { 0 };
        // WBINVD, PROC_C1, SLP_BUTTON, RTC_S4, USE_PLATFORM_CLOCK; PWR_BUTTON clear.
        assert_eq!(
            flags,
            1 | (1 << 2) | (1 << 5) | (1 << 7) | (1 << 15) | cluster
        );

        let facs = read(&memory, facs_addr, 64);
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
        assert_eq!(facs_addr % 64, 0, "FACS 64-byte aligned");
        assert_eq!(facs_addr, BIOS_AREA_TABLES, "FACS first in the blob");

        // DSDT: AML definition block header and the expected names.
        let dsdt = sdt(&memory, dsdt_addr, b"DSDT");
        assert_eq!(dsdt[8], 1, "DSDT revision 1");
        let body = &dsdt[36..];
        assert_eq!(body[0], 0x10, "body starts with Scope (\\_SB)");
        for name in [
            "_S3_", "_S4_", "_S5_", "PCI0", "_PRT", "LNKA", "LNKB", "LNKC", "LNKD", "LNKS", "ISA_",
            "P40C", "PRQ0", "IQST", "IQCR", "COM1", "HPET", "C000", "_CRS", "_PRS", "_SRS", "_DIS",
        ] {
            assert!(contains(body, name.as_bytes()), "DSDT has no {name}");
        }
        // \_S5_ = Package (4) {0, 0, 0, 0}: NameOp '\' "_S5_" PackageOp len 6 count 4 zeros.
        assert!(contains(
            body,
            &[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]
        ));
        assert!(contains(
            body,
            &[0x08, b'\\', b'_', b'S', b'3', b'_', 0x12, 0x06, 0x04, 1, 1, 0, 0]
        ));
        let cpu_devices = (0..cpus).filter(|i| contains(body, format!("C{i:03X}").as_bytes()));
        assert_eq!(cpu_devices.count(), usize::from(cpus));
        // The 32-bit hole in PCI0's _CRS as a DWordMemory (0x87) with min 128 MiB and max
        // just below the IOAPIC.
        let mut hole = 0x800_0000u32.to_le_bytes().to_vec();
        hole.extend_from_slice(&0xfebf_ffffu32.to_le_bytes());
        assert!(contains(body, &hole));

        // MADT.
        let madt = parse_madt(&sdt(&memory, find(b"APIC"), b"APIC"));
        assert_eq!(madt.lapic_address, 0xfee0_0000);
        assert_eq!(madt.flags, 1, "PCAT_COMPAT");
        let expected: Vec<_> = (0..cpus).map(|i| (i, i, 1)).collect();
        assert_eq!(madt.cpus, expected);
        assert_eq!(madt.ioapics, [(0, 0xfec0_0000, 0)]);
        assert_eq!(
            madt.overrides,
            [
                (0, 0, 2, 0),
                (0, 5, 5, 0xd),
                (0, 9, 9, 0xd),
                (0, 10, 10, 0xd),
                (0, 11, 11, 0xd)
            ],
            "IRQ0 -> GSI2; PCI IRQs and SCI level, active high"
        );
        assert_eq!(madt.nmis, [(0xff, 0, 1)], "LINT1 NMI on every CPU");

        // HPET.
        let hpet = sdt(&memory, find(b"HPET"), b"HPET");
        assert_eq!(hpet.len(), 56);
        assert_eq!(u32_at(&hpet, 36), 0x8086_a201, "event timer block id");
        assert_eq!(hpet[40], 0, "system memory");
        assert_eq!(u64_at(&hpet, 44), 0xfed0_0000);

        // The blob's table order is QEMU's.
        let o = &tables.offsets;
        let order = [
            o.facs.start,
            o.dsdt.start,
            o.fadt.start,
            o.madt.start,
            o.hpet.clone().unwrap().start,
            o.rsdt.start,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(o.rsdt.end as usize, tables.tables.len(), "RSDT last");
    }
}

#[test]
fn fw_cfg_files_and_fixups() {
    let tables = build_pc_tables(&PcAcpiConfig::qemu_pc(2, 0x4000_0000)).unwrap();
    assert_eq!(AcpiFile::Tables.name(), "etc/acpi/tables");
    assert_eq!(AcpiFile::Rsdp.name(), "etc/acpi/rsdp");
    assert_eq!(tables.rsdp.len(), 20);
    assert_eq!(tables.allocations.len(), 2);
    assert!(tables
        .allocations
        .iter()
        .any(|a| a.file == AcpiFile::Rsdp && a.zone == AllocZone::FSeg && a.align == 16));
    assert!(tables
        .allocations
        .iter()
        .any(|a| a.file == AcpiFile::Tables && a.zone == AllocZone::High && a.align == 64));

    // Unpatched pointers hold offsets into their target file.
    let o = &tables.offsets;
    let value = |p: &vmkit_acpi::PointerFixup| {
        let bytes = tables.file(p.file);
        let at = p.offset as usize;
        match p.size {
            4 => u64::from(u32_at(bytes, at)),
            8 => u64_at(bytes, at),
            other => panic!("size {other}"),
        }
    };
    let mut targets: Vec<(AcpiFile, u32, u64)> = tables
        .pointers
        .iter()
        .map(|p| (p.file, p.offset, value(p)))
        .collect();
    targets.sort_by_key(|t| (t.0 == AcpiFile::Rsdp, t.1));
    let hpet = o.hpet.clone().unwrap();
    assert_eq!(
        targets,
        [
            (AcpiFile::Tables, o.fadt.start + 36, u64::from(o.facs.start)),
            (AcpiFile::Tables, o.fadt.start + 40, u64::from(o.dsdt.start)),
            (AcpiFile::Tables, o.rsdt.start + 36, u64::from(o.fadt.start)),
            (AcpiFile::Tables, o.rsdt.start + 40, u64::from(o.madt.start)),
            (AcpiFile::Tables, o.rsdt.start + 44, u64::from(hpet.start)),
            (AcpiFile::Rsdp, 16, u64::from(o.rsdt.start)),
        ]
    );
    assert!(tables.pointers.iter().all(|p| p.target == AcpiFile::Tables));

    // One checksum per table but the FACS, each over the whole table, and the RSDP's.
    let mut sums: Vec<_> = tables
        .checksums
        .iter()
        .map(|c| (c.file, c.start, c.length, c.offset))
        .collect();
    sums.sort_by_key(|s| (s.0 == AcpiFile::Rsdp, s.1));
    let table =
        |r: &std::ops::Range<u32>| (AcpiFile::Tables, r.start, r.end - r.start, r.start + 9);
    assert_eq!(
        sums,
        [
            table(&o.dsdt),
            table(&o.fadt),
            table(&o.madt),
            table(&hpet),
            table(&o.rsdt),
            (AcpiFile::Rsdp, 0, 20, 8),
        ]
    );
    // Checksums are also valid before linking, and after linking anywhere.
    for c in &tables.checksums {
        let bytes = tables.file(c.file);
        assert!(sums_to_zero(
            &bytes[c.start as usize..(c.start + c.length) as usize]
        ));
    }
    let linked = tables.link(0x3fff_0000, 0xf_5a30).unwrap();
    for c in &tables.checksums {
        let bytes = match c.file {
            AcpiFile::Tables => &linked.tables,
            AcpiFile::Rsdp => &linked.rsdp,
        };
        assert!(sums_to_zero(
            &bytes[c.start as usize..(c.start + c.length) as usize]
        ));
    }
    assert_eq!(
        u64::from(u32_at(&linked.rsdp, 16)),
        0x3fff_0000 + u64::from(o.rsdt.start)
    );
}

#[test]
fn without_chipset_is_hardware_reduced_with_identity_irq0() {
    let tables = build_pc_tables(&PcAcpiConfig::without_chipset(2)).unwrap();
    let memory = memory();
    tables.write_to_bios_area(&memory).unwrap();
    let entries = walk(&memory);
    let sigs: Vec<&[u8]> = entries.iter().map(|(s, _)| s.as_slice()).collect();
    assert_eq!(sigs, [b"FACP", b"APIC"]);
    let fadt = sdt(&memory, entries[0].1, b"FACP");
    assert_eq!(fadt[8], 6, "FADT revision 6");
    assert_eq!(fadt.len(), 276);
    assert_ne!(u32_at(&fadt, 112) & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_eq!(u32_at(&fadt, 36), 0, "no FACS");
    assert_eq!(
        u64::from(u32_at(&fadt, 40)),
        u64_at(&fadt, 140),
        "DSDT = X_DSDT"
    );
    let boot_arch = u16_at(&fadt, 109);
    assert_eq!(boot_arch & 0b111, 0b111, "legacy devices, 8042, no VGA");
    let dsdt = sdt(&memory, u64_at(&fadt, 140), b"DSDT");
    assert!(contains(&dsdt, b"_S5_") && contains(&dsdt, b"COM1"));
    assert!(!contains(&dsdt, b"PCI0") && !contains(&dsdt, b"_S3_"));
    let madt = parse_madt(&sdt(&memory, entries[1].1, b"APIC"));
    assert_eq!(madt.cpus, [(0, 0, 1), (1, 1, 1)]);
    assert_eq!(
        madt.ioapics,
        [(2, 0xfec0_0000, 0)],
        "IOAPIC id after the CPUs, as the MP table"
    );
    assert!(
        madt.overrides.is_empty(),
        "KVM's default routing needs no override"
    );
}

#[test]
fn config_errors_name_the_problem() {
    let mut config = PcAcpiConfig::qemu_pc(2, 0x800_0000);
    config.apic_ids = vec![];
    assert!(matches!(build_pc_tables(&config), Err(Error::NoCpus)));
    config.apic_ids = vec![0, 0xff];
    let err = build_pc_tables(&config).unwrap_err();
    assert!(err.to_string().contains("0xff"), "{err}");
    config.apic_ids = vec![3, 3];
    assert!(matches!(
        build_pc_tables(&config),
        Err(Error::BadApicId {
            cpu: 1,
            apic_id: 3,
            ..
        })
    ));
    config.apic_ids = vec![0, 2, 4];
    config.pci = Some(PciConfig {
        hole32_start: 0xe000_0000,
        hole32_end: 0xfeff_ffff,
        hole64: None,
    });
    assert!(matches!(
        build_pc_tables(&config),
        Err(Error::BadPciHole { .. })
    ));
    config.pci = Some(PciConfig::for_ram_below_4g(0xc000_0000));
    let tables = build_pc_tables(&config).unwrap();

    // Placement errors.
    let memory = memory();
    assert!(matches!(
        tables.write_to_memory(&memory, 0x1000, 0xf_0008),
        Err(Error::Misaligned { what: "RSDP", .. })
    ));
    assert!(matches!(
        tables.write_to_memory(&memory, 0x1010, 0xf_0000),
        Err(Error::Misaligned { what: "tables", .. })
    ));
    assert!(matches!(
        tables.write_to_memory(&memory, 0x1000, 0x1_0000),
        Err(Error::RsdpOutsideBiosArea { .. })
    ));
    assert!(matches!(
        tables.write_to_memory(&memory, 0xe_ffc0, 0xf_0000),
        Err(Error::Overlap { .. })
    ));
    assert!(matches!(
        tables.write_to_memory(&memory, 0x2_0000_0000, 0xf_0000),
        Err(Error::PointerOverflow { size: 4, .. })
    ));
    let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let err = tables.write_to_bios_area(&small).unwrap_err();
    assert!(err.to_string().contains("0xf0040"), "{err}");
}

#[test]
fn the_largest_machine_fits_the_bios_area() {
    let mut config = PcAcpiConfig::qemu_pc(255, 0x800_0000);
    config.pci = Some(PciConfig {
        hole64: Some((0x1_0000_0000, 0x1f_ffff_ffff)),
        ..PciConfig::for_ram_below_4g(0x800_0000)
    });
    let tables = build_pc_tables(&config).unwrap();
    let memory = memory();
    tables.write_to_bios_area(&memory).unwrap();
    let entries = walk(&memory);
    let madt = parse_madt(&sdt(&memory, entries[1].1, b"APIC"));
    assert_eq!(madt.cpus.len(), 255);
}

/// Optional: with ACPICA's `iasl` installed (Debian package acpica-tools), disassemble the
/// DSDT and require it to decode without errors. Skipped, with a note, without it.
#[test]
fn iasl_disassembles_the_dsdt_when_installed() {
    let Ok(version) = Command::new("iasl").arg("-v").output() else {
        eprintln!("iasl not installed: skipping the disassembly check");
        return;
    };
    assert!(version.status.success() || !version.stdout.is_empty());
    let dir = std::env::temp_dir().join(format!("vmkit-acpi-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let configs = [
        (PcAcpiConfig::qemu_pc(2, 0x800_0000), true),
        (PcAcpiConfig::without_chipset(2), false),
    ];
    for (config, pci) in configs {
        let tables = build_pc_tables(&config).unwrap();
        let o = &tables.offsets;
        let dsdt = &tables.tables[o.dsdt.start as usize..o.dsdt.end as usize];
        std::fs::write(dir.join("dsdt.dat"), dsdt).unwrap();
        let out = Command::new("iasl")
            .current_dir(&dir)
            .args(["-d", "dsdt.dat"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "iasl -d failed: {text}");
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
        assert!(dsl.contains("Name (\\_S5"), "no \\_S5 in the disassembly");
        for needle in ["Device (PCI0)", "Name (_PRT", "Device (LNKA)"] {
            assert_eq!(dsl.contains(needle), pci, "{needle} in the disassembly");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
