//! Bad input is an error (with the tree unchanged), never a panic.

use vmkit_memory::{AddressSpace, Error, RecordingListener, Result, PAGE_SIZE};

#[test]
fn bad_sizes_and_offsets() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    assert!(matches!(space.new_ram("r", 0), Err(Error::ZeroSize { .. })));
    assert!(matches!(space.new_io("i", 0), Err(Error::ZeroSize { .. })));
    assert!(matches!(
        space.new_ram("r", 100),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.new_rom("r", PAGE_SIZE + 1),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.new_container("c", 10),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.new_ram("huge", u64::MAX - PAGE_SIZE + 1),
        Err(Error::TooLarge { .. } | Error::Mmap { .. })
    ));

    let ram = space.new_ram("ram", 2 * PAGE_SIZE)?;
    assert!(matches!(
        space.add_subregion(root, 0x800, ram),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.add_subregion(root, u64::MAX - PAGE_SIZE * 2 + 1, ram),
        Err(Error::Overflow { .. } | Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.add_subregion(root, u64::MAX - (PAGE_SIZE - 1), ram),
        Err(Error::Overflow { .. })
    ));
    // I/O may be anywhere and any size, but not overflow.
    let io = space.new_io("io", 3)?;
    space.add_subregion(root, 0x1_0001, io)?;
    space.remove_subregion(root, io)?;
    assert!(matches!(
        space.add_subregion(root, u64::MAX - 1, io),
        Err(Error::Overflow { .. })
    ));
    space.add_subregion(root, u64::MAX - 3, io)?;
    assert_eq!(
        space.flat_view().last().map(|s| s.guest_addr),
        Some(u64::MAX - 3)
    );
    Ok(())
}

#[test]
fn bad_aliases() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let rom = space.new_rom("rom", 4 * PAGE_SIZE)?;
    assert!(matches!(
        space.new_alias("a", rom, 2 * PAGE_SIZE, 3 * PAGE_SIZE),
        Err(Error::AliasOutOfRange { .. })
    ));
    assert!(matches!(
        space.new_alias("a", rom, u64::MAX - (PAGE_SIZE - 1), 2 * PAGE_SIZE),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        space.new_alias("a", rom, 0x10, PAGE_SIZE),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        space.new_alias("a", rom, 0, 0),
        Err(Error::ZeroSize { .. })
    ));
    let alias = space.new_alias("a", rom, 0, 2 * PAGE_SIZE)?;
    assert!(matches!(
        space.set_alias_offset(alias, 3 * PAGE_SIZE),
        Err(Error::AliasOutOfRange { .. })
    ));
    assert!(matches!(
        space.set_alias_offset(rom, 0),
        Err(Error::NotAnAlias(_))
    ));
    // Aliases of I/O regions are byte-granular.
    let io = space.new_io("io", 10)?;
    let io_alias = space.new_alias("io-window", io, 3, 5)?;
    assert!(matches!(
        space.new_alias("x", io, 3, 8),
        Err(Error::AliasOutOfRange { .. })
    ));
    let root = space.root();
    space.add_subregion(root, 0x7, io_alias)?;
    assert_eq!(space.lookup(0x7).map(|s| s.offset_in_region), Some(3));
    Ok(())
}

#[test]
fn tree_misuse() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let rec = RecordingListener::new();
    space.register_listener(Box::new(rec.clone()))?;
    let root = space.root();
    let outer = space.new_container("outer", 16 * PAGE_SIZE)?;
    let inner = space.new_container("inner", 8 * PAGE_SIZE)?;
    let ram = space.new_ram("ram", PAGE_SIZE)?;
    space.add_subregion(root, 0, outer)?;
    space.add_subregion(outer, 0, inner)?;
    space.add_subregion(inner, 0, ram)?;
    rec.take();

    // Already in the tree (anywhere).
    assert!(matches!(
        space.add_subregion(root, 0, ram),
        Err(Error::AlreadyMapped { .. })
    ));
    assert!(matches!(
        space.add_subregion(inner, 0, ram),
        Err(Error::AlreadyMapped { .. })
    ));
    // Cycles: itself, an ancestor, and through an alias.
    let lonely = space.new_container("lonely", PAGE_SIZE)?;
    assert!(matches!(
        space.add_subregion(lonely, 0, lonely),
        Err(Error::Cycle { .. })
    ));
    space.remove_subregion(root, outer)?;
    assert!(matches!(
        space.add_subregion(inner, 0, outer),
        Err(Error::Cycle { .. })
    ));
    let loop_alias = space.new_alias("loop", outer, 0, PAGE_SIZE)?;
    assert!(matches!(
        space.add_subregion(inner, 0x1000, loop_alias),
        Err(Error::Cycle { .. })
    ));
    assert!(matches!(
        space.add_subregion(ram, 0, lonely),
        Err(Error::NotAContainer(_))
    ));
    assert!(matches!(
        space.add_subregion(lonely, 0, root),
        Err(Error::RootRegion)
    ));
    space.add_subregion(root, 0, outer)?;
    rec.take();

    // Removing what is not there.
    assert!(matches!(
        space.remove_subregion(outer, ram),
        Err(Error::NotMapped { .. })
    ));
    assert!(matches!(
        space.remove_subregion(root, lonely),
        Err(Error::NotMapped { .. })
    ));
    assert!(matches!(
        space.set_address(lonely, 0),
        Err(Error::NotMapped { .. })
    ));
    assert!(matches!(
        space.set_priority(lonely, 1),
        Err(Error::NotMapped { .. })
    ));

    // Wrong kinds.
    let io = space.new_io("io", 1)?;
    assert!(matches!(
        space.set_readonly(io, true),
        Err(Error::IoRegion(_))
    ));
    assert!(matches!(
        space.set_dirty_logging(outer, true),
        Err(Error::NotRam(_))
    ));

    // Destroying what is in use.
    assert!(matches!(
        space.destroy_region(ram),
        Err(Error::RegionInUse { .. })
    ));
    assert!(matches!(
        space.destroy_region(outer),
        Err(Error::RegionInUse { .. })
    ));
    assert!(matches!(space.destroy_region(root), Err(Error::RootRegion)));
    let alias_target = space.new_rom("target", PAGE_SIZE)?;
    let _alias = space.new_alias("alias", alias_target, 0, PAGE_SIZE)?;
    assert!(matches!(
        space.destroy_region(alias_target),
        Err(Error::RegionInUse { .. })
    ));
    space.destroy_region(lonely)?;
    assert!(matches!(
        space.add_subregion(root, 0, lonely),
        Err(Error::UnknownRegion(_))
    ));
    assert!(matches!(
        space.abort_transaction(),
        Err(Error::NoTransaction)
    ));

    // None of the failures reached the listener or changed the view.
    assert_eq!(rec.take_summary(), vec![]);
    assert_eq!(space.flat_view().len(), 1);
    Ok(())
}

#[test]
fn errors_read_well() {
    let mut space = AddressSpace::new("system");
    let err = space.new_ram("pc.ram", 1000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "region `pc.ram`: size 0x3e8 is not a multiple of 4 KiB (RAM, ROM, containers and \
         aliases of them are mapped in whole pages)"
    );
}
