//! Minimal ACPI tables that let a Linux guest built without `CONFIG_X86_MPPARSE` (Debian's
//! cloud kernel, for one) find every vCPU and the IOAPIC.
//!
//! The tables, in order from the start of the area, each on a 16-byte boundary:
//!
//! - RSDP (ACPI 2.0+, revision 2): first, so it sits on the 16-byte boundary Linux's legacy
//!   scan of 0xe0000-0xfffff looks at; it points at the XSDT.
//! - XSDT: lists the FADT and the MADT.
//! - FADT (revision 6) with `HW_REDUCED_ACPI`: the guest expects no PM timer, SCI or
//!   ACPI-mode switch; `IAPC_BOOT_ARCH` says legacy ISA devices and an 8042 are present and
//!   VGA is not. It points at the DSDT.
//! - DSDT: the header only (an empty AML body is valid).
//! - MADT: one Processor Local APIC entry per vCPU (ACPI processor id = APIC id = vCPU
//!   index, enabled) and one IOAPIC (id `num_cpus`, at [`IOAPIC_DEFAULT_BASE`], GSI base 0).
//!
//! There is deliberately no Interrupt Source Override for ISA IRQ 0: KVM's default GSI
//! routing sends GSI n to IOAPIC pin n and the in-kernel PIT raises GSI 0, so IRQ 0 really
//! is on pin 0 (see [`Irq0Pin`](crate::Irq0Pin)). Without overrides Linux maps ISA IRQ n to
//! GSI n, which is exactly that routing.
//!
//! The default area, [`ACPI_START`]..[`ACPI_END`], is the system BIOS area the pc machine
//! reports reserved in its e820 map; the VMM must back it with memory.

use std::ops::Range;

use vm_memory::{Bytes, GuestAddress};

use crate::mptable::{APIC_DEFAULT_BASE, IOAPIC_DEFAULT_BASE, MAX_CPUS};
use crate::{Error, Result};

/// Default start of the ACPI tables: the system BIOS area (Linux scans 0xe0000-0xfffff for
/// the RSDP).
pub const ACPI_START: u64 = 0xf_0000;
/// End of the default area (1 MiB).
pub const ACPI_END: u64 = 0x10_0000;
/// OEM id written in the RSDP and every table header.
pub const OEM_ID: [u8; 6] = *b"VMKIT ";
/// OEM table id written in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"VMKITPC ";

const RSDP_LEN: usize = 36;
/// Bytes of the RSDP covered by the ACPI 1.0 checksum.
const RSDP_V1_LEN: usize = 20;
const HEADER_LEN: usize = 36;
const FADT_LEN: usize = 276;
const FADT_REVISION: u8 = 6;
const MADT_REVISION: u8 = 4;
const XSDT_REVISION: u8 = 1;
const DSDT_REVISION: u8 = 2;
const MADT_LOCAL_APIC_LEN: u8 = 8;
const MADT_IOAPIC_LEN: u8 = 12;
const MADT_TYPE_LOCAL_APIC: u8 = 0;
const MADT_TYPE_IOAPIC: u8 = 1;
/// MADT flags: PCAT_COMPAT, the machine also has dual 8259s.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
/// Local APIC flags: Enabled.
const LOCAL_APIC_ENABLED: u32 = 1 << 0;
/// FADT flags: HW_REDUCED_ACPI.
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IAPC_BOOT_ARCH: LEGACY_DEVICES (ISA devices such as the serial ports), 8042 present, VGA
/// not present.
const IAPC_BOOT_ARCH: u16 = (1 << 0) | (1 << 1) | (1 << 2);
/// The ISA IRQ conventionally used for the SCI (unused with HW_REDUCED_ACPI, but Linux
/// configures the pin named here, so name the usual one rather than IRQ 0).
const SCI_IRQ: u16 = 9;
const TABLE_ALIGN: usize = 16;

/// Where [`write_acpi_tables`] put each table (guest-physical addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// The Root System Description Pointer (16-byte aligned).
    pub rsdp: u64,
    /// The Extended System Description Table.
    pub xsdt: u64,
    /// The Fixed ACPI Description Table.
    pub fadt: u64,
    /// The Differentiated System Description Table (header only).
    pub dsdt: u64,
    /// The Multiple APIC Description Table.
    pub madt: u64,
    /// Everything written.
    pub range: Range<u64>,
}

/// Writes the tables for `num_cpus` vCPUs at [`ACPI_START`].
pub fn write_acpi_tables<M>(memory: &M, num_cpus: usize) -> Result<AcpiTables>
where
    M: Bytes<GuestAddress> + ?Sized,
    M::E: std::fmt::Display,
{
    write_acpi_tables_at(memory, num_cpus, ACPI_START..ACPI_END)
}

/// Writes the tables for `num_cpus` vCPUs into `area`, whose start must be 16-byte aligned
/// (and, for Linux's legacy RSDP scan, inside 0xe0000-0xfffff).
pub fn write_acpi_tables_at<M>(memory: &M, num_cpus: usize, area: Range<u64>) -> Result<AcpiTables>
where
    M: Bytes<GuestAddress> + ?Sized,
    M::E: std::fmt::Display,
{
    let (bytes, tables) = build_acpi_tables(num_cpus, &area)?;
    memory
        .write_slice(&bytes, GuestAddress(area.start))
        .map_err(|e| Error::AcpiGuestMemory {
            addr: area.start,
            reason: e.to_string(),
        })?;
    Ok(tables)
}

/// Builds the tables' bytes as they go at `area.start`.
fn build_acpi_tables(num_cpus: usize, area: &Range<u64>) -> Result<(Vec<u8>, AcpiTables)> {
    let requested = u32::try_from(num_cpus).unwrap_or(u32::MAX);
    if num_cpus == 0 {
        return Err(Error::BadVcpuIndex { index: 0, count: 0 });
    }
    if requested > MAX_CPUS {
        return Err(Error::TooManyCpus {
            requested,
            max: MAX_CPUS,
        });
    }
    if area.start % TABLE_ALIGN as u64 != 0 {
        return Err(Error::AcpiMisaligned { start: area.start });
    }
    let base = area.start;
    let mut out = Vec::new();
    let place = |out: &mut Vec<u8>, table: Vec<u8>| -> u64 {
        let offset = out.len();
        out.extend_from_slice(&table);
        out.resize(align_up(out.len()), 0);
        base.wrapping_add(offset as u64)
    };

    // Offsets are fixed by the sizes, so the addresses are known before the bytes.
    let rsdp = base;
    let xsdt = rsdp + align_up(RSDP_LEN) as u64;
    let fadt = xsdt + align_up(HEADER_LEN + 16) as u64;
    let dsdt = fadt + align_up(FADT_LEN) as u64;
    let madt = dsdt + align_up(HEADER_LEN) as u64;

    let placed = [
        place(&mut out, build_rsdp(xsdt)),
        place(&mut out, build_xsdt(&[fadt, madt])),
        place(&mut out, build_fadt(dsdt)),
        place(&mut out, build_dsdt()),
        place(&mut out, build_madt(num_cpus)),
    ];
    debug_assert_eq!(placed, [rsdp, xsdt, fadt, dsdt, madt]);

    let needed = out.len() as u64;
    let available = area.end.saturating_sub(area.start);
    if needed > available {
        return Err(Error::AcpiNoRoom {
            cpus: requested,
            needed,
            available,
            start: area.start,
        });
    }
    let tables = AcpiTables {
        rsdp,
        xsdt,
        fadt,
        dsdt,
        madt,
        range: base..base + needed,
    };
    Ok((out, tables))
}

fn align_up(len: usize) -> usize {
    len.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

/// Two's-complement checksum byte: makes the bytes sum to 0 mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
        .wrapping_neg()
}

fn build_rsdp(xsdt: u64) -> Vec<u8> {
    let mut rsdp = Vec::with_capacity(RSDP_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend_from_slice(&OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT: the XSDT is enough
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&xsdt.to_le_bytes());
    rsdp.push(0); // extended checksum of all 36 bytes
    rsdp.extend_from_slice(&[0; 3]);
    rsdp[8] = checksum(&rsdp[..RSDP_V1_LEN]);
    rsdp[32] = checksum(&rsdp);
    rsdp
}

/// A table: the standard 36-byte header for `signature` followed by `body`, checksummed.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(signature);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.push(revision);
    bytes.push(0); // checksum
    bytes.extend_from_slice(&OEM_ID);
    bytes.extend_from_slice(&OEM_TABLE_ID);
    bytes.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    bytes.extend_from_slice(b"VMKT"); // creator id
    bytes.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    bytes.extend_from_slice(body);
    bytes[9] = checksum(&bytes);
    bytes
}

fn build_xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    table(b"XSDT", XSDT_REVISION, &body)
}

fn build_fadt(dsdt: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - HEADER_LEN];
    let mut put = |offset: usize, bytes: &[u8]| {
        // Offsets below are the spec's, from the start of the table.
        let at = offset - HEADER_LEN;
        body[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // 40: DSDT (32-bit). The tables live below 1 MiB, so it fits.
    put(40, &u32::try_from(dsdt).unwrap_or(0).to_le_bytes());
    put(46, &SCI_IRQ.to_le_bytes());
    put(109, &IAPC_BOOT_ARCH.to_le_bytes());
    put(112, &FADT_HW_REDUCED_ACPI.to_le_bytes());
    // 131: FADT minor version (ACPI 6.0).
    put(131, &[0]);
    put(140, &dsdt.to_le_bytes()); // X_DSDT
    table(b"FACP", FADT_REVISION, &body)
}

fn build_dsdt() -> Vec<u8> {
    table(b"DSDT", DSDT_REVISION, &[])
}

fn build_madt(num_cpus: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&APIC_DEFAULT_BASE.to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    // Callers check num_cpus <= MAX_CPUS (254), so every id fits a byte.
    let ids = (0..num_cpus).map(|cpu| u8::try_from(cpu).unwrap_or(u8::MAX));
    for id in ids {
        body.extend_from_slice(&[MADT_TYPE_LOCAL_APIC, MADT_LOCAL_APIC_LEN, id, id]);
        body.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
    }
    let ioapic_id = u8::try_from(num_cpus).unwrap_or(u8::MAX);
    body.extend_from_slice(&[MADT_TYPE_IOAPIC, MADT_IOAPIC_LEN, ioapic_id, 0]);
    body.extend_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    table(b"APIC", MADT_REVISION, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_makes_bytes_sum_to_zero() {
        let bytes = [1u8, 2, 250, 7];
        let sum = bytes
            .iter()
            .fold(checksum(&bytes), |s, b| s.wrapping_add(*b));
        assert_eq!(sum, 0);
    }

    #[test]
    fn refuses_zero_too_many_and_misaligned() {
        assert!(build_acpi_tables(0, &(ACPI_START..ACPI_END)).is_err());
        assert!(matches!(
            build_acpi_tables(255, &(ACPI_START..ACPI_END)),
            Err(Error::TooManyCpus { requested: 255, .. })
        ));
        assert!(matches!(
            build_acpi_tables(1, &(ACPI_START + 8..ACPI_END)),
            Err(Error::AcpiMisaligned { .. })
        ));
        assert!(matches!(
            build_acpi_tables(8, &(ACPI_START..ACPI_START + 0x100)),
            Err(Error::AcpiNoRoom { .. })
        ));
    }

    #[test]
    fn the_largest_machine_fits_the_default_area() {
        let (bytes, tables) = build_acpi_tables(254, &(ACPI_START..ACPI_END)).unwrap();
        assert_eq!(tables.range.end - tables.range.start, bytes.len() as u64);
        assert!(tables.range.end <= ACPI_END);
    }
}
