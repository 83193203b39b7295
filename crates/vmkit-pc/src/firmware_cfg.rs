//! What the pc machine tells firmware through fw_cfg, as QEMU's pc does: CPU count, RAM
//! size, the `etc/e820` RAM map, `bootorder`, and the ACPI tables with the
//! `etc/table-loader` script that links them (QEMU's BIOS linker/loader).

use vm_memory::GuestAddressSpace;
use vmkit_acpi::{AcpiFile, AcpiTables, AllocZone as AcpiZone};
use vmkit_fwcfg::{AllocZone, E820Entry, FwCfg, TableLoader};

use crate::error::Result;
use crate::layout::{MemoryLayout, FOUR_GIB, KVM_IDENTITY_MAP_ADDRESS, KVM_RESERVED_SIZE};

/// e820 type of usable RAM.
const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
const E820_RESERVED: u32 = 2;

/// QEMU's `etc/e820` for `layout`: the RAM below and above 4 GiB as whole ranges (firmware
/// carves out its own areas), and KVM's identity-map and TSS pages reserved.
pub fn e820_entries(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut entries = vec![E820Entry::from((0, layout.below_4g_size(), E820_RAM))];
    if layout.above_4g_size() > 0 {
        entries.push((FOUR_GIB, layout.above_4g_size(), E820_RAM).into());
    }
    entries.push((KVM_IDENTITY_MAP_ADDRESS, KVM_RESERVED_SIZE, E820_RESERVED).into());
    entries
}

/// The `etc/table-loader` commands for `tables`: allocate each file, patch the pointers,
/// then the checksums (the order QEMU's `bios_linker_loader` emits).
pub fn table_loader(tables: &AcpiTables) -> Result<TableLoader> {
    let mut loader = TableLoader::new();
    for allocation in &tables.allocations {
        let zone = match allocation.zone {
            AcpiZone::High => AllocZone::High,
            AcpiZone::FSeg => AllocZone::Fseg,
        };
        let size = u32::try_from(tables.file(allocation.file).len()).unwrap_or(u32::MAX);
        loader.allocate(allocation.file.name(), size, allocation.align, zone)?;
    }
    for pointer in &tables.pointers {
        loader.add_pointer(
            pointer.file.name(),
            pointer.target.name(),
            pointer.offset,
            pointer.size,
        )?;
    }
    for checksum in &tables.checksums {
        loader.add_checksum(
            checksum.file.name(),
            checksum.offset,
            checksum.start,
            checksum.length,
        )?;
    }
    Ok(loader)
}

/// Fills `fw_cfg` for a machine of `layout` with `cpus` vCPUs and `tables`; `bootorder`
/// lists OpenFirmware device paths (QEMU's bootindex order).
pub fn populate<M: GuestAddressSpace>(
    fw_cfg: &mut FwCfg<M>,
    layout: &MemoryLayout,
    cpus: u16,
    tables: &AcpiTables,
    bootorder: &[&str],
) -> Result<()> {
    fw_cfg.set_cpus(cpus, cpus);
    fw_cfg.set_ram_size(layout.ram_size());
    fw_cfg.set_nographic(true);
    fw_cfg.add_e820(&e820_entries(layout))?;
    if bootorder.is_empty() {
        // Empty without bootindex properties, as QEMU's (an empty list, not one empty entry).
        fw_cfg.add_file("bootorder", Vec::new())?;
    } else {
        fw_cfg.add_bootorder(bootorder)?;
    }
    fw_cfg.add_file(AcpiFile::Tables.name(), tables.tables.clone())?;
    fw_cfg.add_file(AcpiFile::Rsdp.name(), tables.rsdp.clone())?;
    fw_cfg.add_file("etc/table-loader", table_loader(tables)?.to_bytes())?;
    Ok(())
}
