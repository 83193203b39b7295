//! The vm-memory snapshot of the flat view: aliases, ROM, lifetimes, sub-page trimming.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmkit_memory::{AddressSpace, Result, PAGE_SIZE};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[test]
fn write_at_alias_read_at_target() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let ram = space.new_ram("ram", 2 * MIB)?;
    let bios = space.new_rom("bios", 256 * KIB)?;
    let isa_bios = space.new_alias("isa-bios", bios, 128 * KIB, 128 * KIB)?;
    let high = space.new_alias("ram-high", ram, MIB, MIB)?;
    space.add_subregion(root, 0, ram)?;
    space.add_subregion(root, 4096 * MIB - 256 * KIB, bios)?;
    space.add_subregion_overlap(root, 0xe0000, isa_bios, 1)?;
    space.add_subregion(root, 4096 * MIB, high)?;

    let memory = space.memory_snapshot();
    // Through the isa-bios window (0xe0000 + 0x1234 = BIOS offset 128 KiB + 0x1234)...
    memory
        .write_obj(0xdead_beef_u32, GuestAddress(0xe1234))
        .unwrap();
    // ...read back at the BIOS's own address below 4 GiB, and in the region itself.
    let value: u32 = memory
        .read_obj(GuestAddress(4096 * MIB - 256 * KIB + 128 * KIB + 0x1234))
        .unwrap();
    assert_eq!(value, 0xdead_beef);
    let mut raw = [0u8; 4];
    space.read_region(bios, 128 * KIB + 0x1234, &mut raw)?;
    assert_eq!(u32::from_le_bytes(raw), 0xdead_beef);

    // RAM alias above 4 GiB: the same bytes as RAM at 1 MiB.
    memory
        .write_slice(b"vmkit", GuestAddress(4096 * MIB + 0x10))
        .unwrap();
    let mut text = [0u8; 5];
    memory
        .read_slice(&mut text, GuestAddress(MIB + 0x10))
        .unwrap();
    assert_eq!(&text, b"vmkit");

    // An access that straddles the RAM/isa-bios boundary spans two snapshot regions.
    memory
        .write_slice(&[1, 2, 3, 4], GuestAddress(0xe0000 - 2))
        .unwrap();
    let mut buf = [0u8; 2];
    space.read_region(bios, 128 * KIB, &mut buf)?;
    assert_eq!(buf, [3, 4]);

    // Unassigned addresses are not memory.
    assert!(memory.read_obj::<u8>(GuestAddress(0x4000_0000)).is_err());
    Ok(())
}

#[test]
fn snapshots_are_swapped_on_commit_and_keep_memory_alive() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let handle = space.guest_memory();
    assert_eq!(handle.memory().num_regions(), 0);

    let ram = space.new_ram("ram", MIB)?;
    space.add_subregion(root, 0, ram)?;
    use vm_memory::GuestAddressSpace;
    let old = handle.memory();
    assert_eq!(old.num_regions(), 1);
    old.write_obj(0x55u8, GuestAddress(0x800)).unwrap();

    // Unmap and destroy the region while `old` still holds a snapshot of it.
    space.remove_subregion(root, ram)?;
    assert_eq!(
        handle.memory().num_regions(),
        0,
        "the handle sees the new view"
    );
    space.destroy_region(ram)?;
    assert!(space.region_name(ram).is_err());
    // The old snapshot (and clones of it) still work: the backing is kept alive.
    let cloned = (*old).clone();
    drop(old);
    assert_eq!(cloned.read_obj::<u8>(GuestAddress(0x800)).unwrap(), 0x55);
    let region = cloned.find_region(GuestAddress(0)).unwrap();
    let mapping = region.get_mmap();
    drop(cloned);
    assert_eq!(mapping.size() as u64, MIB);
    Ok(())
}

#[test]
fn sub_page_io_overlay_trims_the_snapshot_to_whole_pages() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let ram = space.new_ram("ram", 16 * PAGE_SIZE)?;
    let io = space.new_io("io", 0x10)?;
    space.add_subregion(root, 0, ram)?;
    space.add_subregion_overlap(root, 4 * PAGE_SIZE + 0x100, io, 1)?;
    assert_eq!(space.flat_view().len(), 3);
    let memory = space.memory_snapshot();
    let ranges: Vec<(u64, u64)> = memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
    assert_eq!(
        ranges,
        vec![(0, 4 * PAGE_SIZE), (5 * PAGE_SIZE, 11 * PAGE_SIZE)]
    );
    // The partial page is still reachable through the region itself.
    space.write_region(ram, 4 * PAGE_SIZE, &[9])?;
    assert!(memory.read_obj::<u8>(GuestAddress(4 * PAGE_SIZE)).is_err());
    Ok(())
}

#[test]
fn region_access_is_bounds_checked() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let rom = space.new_rom("rom", PAGE_SIZE)?;
    space.write_region(rom, PAGE_SIZE - 2, &[1, 2])?;
    assert!(space.write_region(rom, PAGE_SIZE - 1, &[1, 2]).is_err());
    assert!(space.write_region(rom, u64::MAX, &[1]).is_err());
    let mut buf = [0u8; 2];
    assert!(space.read_region(rom, PAGE_SIZE, &mut buf).is_err());
    let io = space.new_io("io", 4)?;
    assert!(space.write_region(io, 0, &[1]).is_err());
    Ok(())
}
