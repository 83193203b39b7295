//! The pc machine's ACPI tables and Intel MultiProcessor table, built with rust-vmm's
//! [`acpi_tables`] (its table types, `sdt::Sdt` and the `aml` module for the DSDT).
//!
//! - [`build_pc_tables`] turns a [`PcAcpiConfig`] into [`AcpiTables`]: the two files QEMU
//!   hands firmware over fw_cfg, [`TABLES_FILE`] (FACS, DSDT, FADT, MADT, HPET, RSDT, in
//!   QEMU's order) and [`RSDP_FILE`], and the fix-ups the firmware applies (allocations,
//!   [`PointerFixup`]s, then [`ChecksumFixup`]s: what `etc/table-loader` encodes).
//! - [`AcpiTables::link`] applies those fix-ups for given guest addresses and
//!   [`AcpiTables::write_to_memory`] / [`AcpiTables::write_to_bios_area`] lay the linked
//!   tables into guest memory, for booting Linux without firmware.
//! - With a [`Piix4PmConfig`] the FADT is QEMU pc's: revision 1 (ACPI 1.0), SCI 9, SMI_CMD
//!   0xb2, ACPI_ENABLE 0xf1 / ACPI_DISABLE 0xf0, PM1a_EVT/PM1a_CNT/PM_TMR at the PM base
//!   +0/+4/+8, GPE0 at 0xafe0, flags WBINVD | PROC_C1 | SLP_BUTTON | RTC_S4 |
//!   USE_PLATFORM_CLOCK (PWR_BUTTON clear: the fixed-feature power button). Without one it
//!   is hardware-reduced.
//! - The DSDT has the CPUs (ACPI0007), `\_SB.PCI0` (PNP0A03, `_CRS`, a 128-entry `_PRT`
//!   on LNKA-LNKD with the PIIX3 swizzle, LNKS for the SCI), the link devices reading and
//!   writing the PIIX3 PIRQ registers at 00:01.0 offset 0x60, the ISA bridge with COM1, the
//!   HPET and the sleep packages `\_S3_`, `\_S4_`, `\_S5_`.
//! - [`mptable`]: the MP specification 1.4 table ([`write_mptable_to_ebda`]).
//!
//! ```
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vmkit_acpi::{build_pc_tables, PcAcpiConfig, BIOS_AREA_RSDP};
//!
//! let tables = build_pc_tables(&PcAcpiConfig::qemu_pc(2, 0x800_0000))?;
//! assert_eq!(&tables.rsdp[..8], b"RSD PTR ");
//! assert_eq!(&tables.tables[..4], b"FACS");
//!
//! // Without firmware: lay them in the BIOS area with pointers resolved.
//! let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
//! let linked = tables.write_to_bios_area(&memory)?;
//! let rsdt: u32 = memory.read_obj(GuestAddress(BIOS_AREA_RSDP + 16)).unwrap();
//! assert_eq!(u64::from(rsdt), linked.tables_addr + u64::from(tables.offsets.rsdt.start));
//! # Ok::<(), vmkit_acpi::Error>(())
//! ```
#![forbid(unsafe_code)]

mod config;
pub mod dsdt;
mod error;
pub mod mptable;
mod tables;

pub use config::{
    IoApicConfig, PcAcpiConfig, PciConfig, Piix4PmConfig, ACPI_DISABLE_CMD, ACPI_ENABLE_CMD,
    HPET_ADDRESS, HPET_LEN, IOAPIC_ADDRESS, LAPIC_ADDRESS, MAX_CPUS, PIIX4_GPE0_BLK,
    PIIX4_GPE0_BLK_LEN, PIIX4_PM_IO_BASE, SCI_IRQ, SMI_CMD_PORT,
};
pub use error::{Error, Result};
pub use mptable::{write_mptable_at, write_mptable_to_ebda, Irq0Pin, MpTableConfig};
pub use tables::{
    build_pc_tables, AcpiFile, AcpiTables, AllocZone, Allocation, ChecksumFixup, LinkedTables,
    PointerFixup, TableOffsets, BIOS_AREA_END, BIOS_AREA_RSDP, BIOS_AREA_TABLES, HPET_BLOCK_ID,
    OEM_ID, OEM_REVISION, OEM_TABLE_ID, PCI_LEVEL_IRQS, RSDP_ALIGN, RSDP_FILE, TABLES_ALIGN,
    TABLES_FILE,
};

/// The byte that makes `bytes` sum to 0 mod 256.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
        .wrapping_neg()
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
        assert_eq!(checksum(&[]), 0);
    }

    #[test]
    fn pirq_swizzle_is_piix3s() {
        // PIIX3: slot 1 INTA is PIRQA, slot 2 INTA PIRQB, slot 0 INTA PIRQD.
        assert_eq!(dsdt::pirq_link(1, 0), 0);
        assert_eq!(dsdt::pirq_link(2, 0), 1);
        assert_eq!(dsdt::pirq_link(0, 0), 3);
        assert_eq!(dsdt::pirq_link(3, 3), 1);
        for slot in 0..32 {
            let links: Vec<_> = (0..4).map(|pin| dsdt::pirq_link(slot, pin)).collect();
            let mut sorted = links.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                [0, 1, 2, 3],
                "slot {slot}: each pin on its own link"
            );
        }
    }
}
