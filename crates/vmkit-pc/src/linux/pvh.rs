//! The PVH boot's `hvm_start_info`, module list and memory map.

use super::*;

pub(super) fn write_pvh_start_info<M: GuestMemoryBackend>(
    memory: &M,
    plan: &LoadedLinux,
    e820: &E820Map,
) -> Result<()> {
    if e820.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(Error::Config(format!(
            "the e820 map has {} entries, more than the {PVH_MEMMAP_MAX_ENTRIES} PVH's memory \
             map has room for",
            e820.len()
        )));
    }
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .entries()
        .iter()
        .map(|entry| hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind.code(),
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: plan.cmdline_addr,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: u32::try_from(memmap.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let modules: Vec<hvm_modlist_entry> = plan
        .initrd
        .iter()
        .map(|(addr, size)| hvm_modlist_entry {
            paddr: *addr,
            size: *size,
            ..Default::default()
        })
        .collect();
    start_info.nr_modules = u32::try_from(modules.len()).unwrap_or(0);
    if !modules.is_empty() {
        start_info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, memory)
        .map_err(|e| Error::Config(format!("cannot write the PVH start info: {e}")))
}
