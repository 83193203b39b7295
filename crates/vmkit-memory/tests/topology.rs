//! Exact listener call sequences for topology changes (priorities, aliases, ROM, removal,
//! enable/disable, transactions, dirty logging, registration).

use vmkit_memory::{AddressSpace, ListenerEvent, RecordingListener, RegionId, Result, SectionKind};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

type Summary = (&'static str, u64, u64, String);

fn ev(op: &'static str, addr: u64, size: u64, name: &str) -> Summary {
    (op, addr, size, name.to_owned())
}

fn begin() -> Summary {
    ev("begin", 0, 0, "")
}

fn commit() -> Summary {
    ev("commit", 0, 0, "")
}

fn setup() -> Result<(AddressSpace, RecordingListener)> {
    let mut space = AddressSpace::new("system");
    let recorder = RecordingListener::new();
    space.register_listener(Box::new(recorder.clone()))?;
    assert_eq!(recorder.take_summary(), vec![begin(), commit()]);
    Ok((space, recorder))
}

#[test]
fn priorities_rom_enable_disable_and_removal() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let ram = space.new_ram("ram", MIB)?;
    let vga = space.new_io("vga", 128 * KIB)?;
    let bios = space.new_rom("bios", 64 * KIB)?;

    space.add_subregion(root, 0, ram)?;
    assert_eq!(
        rec.take_summary(),
        vec![begin(), ev("add", 0, MIB, "ram"), commit()]
    );

    // Higher priority I/O splits the RAM.
    space.add_subregion_overlap(root, 0xa0000, vga, 1)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, MIB, "ram"),
            ev("add", 0, 0xa0000, "ram"),
            ev("add", 0xa0000, 0x20000, "vga"),
            ev("add", 0xc0000, 0x40000, "ram"),
            commit(),
        ]
    );

    // Equal priority: the later-added ROM wins over the RAM.
    space.add_subregion(root, 0xf0000, bios)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("del", 0xc0000, 0x40000, "ram"),
            ev("nop", 0, 0xa0000, "ram"),
            ev("nop", 0xa0000, 0x20000, "vga"),
            ev("add", 0xc0000, 0x30000, "ram"),
            ev("add", 0xf0000, 0x10000, "bios"),
            commit(),
        ]
    );
    let ListenerEvent::Add(bios_section) = &events[5] else {
        panic!("expected add, got {:?}", events[5]);
    };
    assert_eq!(bios_section.kind, SectionKind::Rom);
    assert_eq!(bios_section.host_addr, space.region_host_addr(bios)?);
    let ListenerEvent::Add(ram_tail) = &events[4] else {
        panic!("expected add, got {:?}", events[4]);
    };
    assert_eq!(ram_tail.offset_in_region, 0xc0000);
    assert_eq!(ram_tail.host_addr, space.region_host_addr(ram)? + 0xc0000);

    // Lower the ROM below the RAM: the RAM tail becomes one merged range again.
    space.set_priority(bios, -1)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0xc0000, 0x30000, "ram"),
            ev("del", 0xf0000, 0x10000, "bios"),
            ev("nop", 0, 0xa0000, "ram"),
            ev("nop", 0xa0000, 0x20000, "vga"),
            ev("add", 0xc0000, 0x40000, "ram"),
            commit(),
        ]
    );

    space.set_enabled(vga, false)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0xa0000, "ram"),
            ev("del", 0xa0000, 0x20000, "vga"),
            ev("del", 0xc0000, 0x40000, "ram"),
            ev("add", 0, MIB, "ram"),
            commit(),
        ]
    );

    // The hidden ROM leaves without changing the view: no listener call at all.
    space.remove_subregion(root, bios)?;
    assert_eq!(rec.take_summary(), vec![]);

    space.set_enabled(vga, true)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, MIB, "ram"),
            ev("add", 0, 0xa0000, "ram"),
            ev("add", 0xa0000, 0x20000, "vga"),
            ev("add", 0xc0000, 0x40000, "ram"),
            commit(),
        ]
    );

    // Moving the I/O region.
    space.set_address(vga, 0x80000)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0xa0000, "ram"),
            ev("del", 0xa0000, 0x20000, "vga"),
            ev("del", 0xc0000, 0x40000, "ram"),
            ev("add", 0, 0x80000, "ram"),
            ev("add", 0x80000, 0x20000, "vga"),
            ev("add", 0xa0000, 0x60000, "ram"),
            commit(),
        ]
    );

    space.remove_subregion(root, vga)?;
    space.remove_subregion(root, ram)?;
    rec.take();
    assert!(space.flat_view().is_empty());
    Ok(())
}

#[test]
fn equal_priority_newest_wins_and_move_refreshes_age() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let a = space.new_ram("a", 0x4000)?;
    let b = space.new_ram("b", 0x4000)?;
    space.add_subregion(root, 0, a)?;
    space.add_subregion(root, 0x2000, b)?;
    let names = |s: &AddressSpace| {
        s.flat_view()
            .iter()
            .map(|s| (s.guest_addr, s.size, s.name.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&space),
        vec![(0, 0x2000, "a".into()), (0x2000, 0x4000, "b".into())]
    );
    rec.take();
    // Re-placing `a` (same offset) makes it the newest: it now wins the overlap.
    space.set_address(a, 0)?;
    assert_eq!(
        names(&space),
        vec![(0, 0x4000, "a".into()), (0x4000, 0x2000, "b".into())]
    );
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0x2000, "a"),
            ev("del", 0x2000, 0x4000, "b"),
            ev("add", 0, 0x4000, "a"),
            ev("add", 0x4000, 0x2000, "b"),
            commit(),
        ]
    );
    Ok(())
}

#[test]
fn bios_alias_below_one_mib() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let ram = space.new_ram("ram", MIB)?;
    let bios = space.new_rom("bios", 256 * KIB)?;
    space.add_subregion(root, 0, ram)?;
    space.add_subregion(root, 4096 * MIB - 256 * KIB, bios)?;
    rec.take();

    // The last 128 KiB of the BIOS, also visible at 0xe0000.
    let isa_bios = space.new_alias("isa-bios", bios, 128 * KIB, 128 * KIB)?;
    space.add_subregion_overlap(root, 0xe0000, isa_bios, 1)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("del", 0, MIB, "ram"),
            ev("add", 0, 0xe0000, "ram"),
            ev("add", 0xe0000, 0x20000, "bios"),
            ev("nop", 0xfffc_0000, 0x40000, "bios"),
            commit(),
        ]
    );
    let ListenerEvent::Add(window) = &events[3] else {
        panic!("expected add, got {:?}", events[3]);
    };
    assert_eq!(window.kind, SectionKind::Rom);
    assert_eq!(window.region, bios);
    assert_eq!(window.offset_in_region, 128 * KIB);
    assert_eq!(window.host_addr, space.region_host_addr(bios)? + 128 * KIB);

    // Slide the window to the first half of the BIOS.
    space.set_alias_offset(isa_bios, 0)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("del", 0xe0000, 0x20000, "bios"),
            ev("nop", 0, 0xe0000, "ram"),
            ev("add", 0xe0000, 0x20000, "bios"),
            ev("nop", 0xfffc_0000, 0x40000, "bios"),
            commit(),
        ]
    );
    let ListenerEvent::Add(window) = &events[3] else {
        panic!("expected add, got {:?}", events[3]);
    };
    assert_eq!(window.offset_in_region, 0);

    // Making the RAM read-only turns its sections into ROM: del + add, not nop.
    space.set_readonly(ram, true)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("del", 0, 0xe0000, "ram"),
            ev("add", 0, 0xe0000, "ram"),
            ev("nop", 0xe0000, 0x20000, "bios"),
            ev("nop", 0xfffc_0000, 0x40000, "bios"),
            commit(),
        ]
    );
    assert!(matches!(&events[2], ListenerEvent::Add(s) if s.kind == SectionKind::Rom));
    Ok(())
}

#[test]
fn containers_clip_and_hide_their_subregions() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let pci = space.new_container("pci", 0x10000)?;
    let dev0 = space.new_io("dev0", 0x100)?;
    let dev1 = space.new_io("dev1", 0x100)?;
    let big = space.new_io("big", 0x3000)?;
    space.add_subregion(pci, 0x1000, dev0)?;
    space.add_subregion_overlap(pci, 0x1080, dev1, 1)?;
    // Extends past the container's end: clipped to it.
    space.add_subregion(pci, 0xe000, big)?;
    assert_eq!(rec.take_summary(), vec![], "pci is not mapped yet");

    space.add_subregion(root, 0xfe00_0000, pci)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("add", 0xfe00_1000, 0x80, "dev0"),
            ev("add", 0xfe00_1080, 0x100, "dev1"),
            ev("add", 0xfe00_e000, 0x2000, "big"),
            commit(),
        ]
    );
    let dev0_section = space.lookup(0xfe00_1010).cloned();
    assert_eq!(
        dev0_section.map(|s| (s.kind, s.offset_in_region, s.name.to_string())),
        Some((SectionKind::Io, 0, "dev0".to_owned()))
    );
    assert_eq!(
        space.lookup(0xfe00_1090).map(|s| s.offset_in_region),
        Some(0)
    );
    assert!(space.lookup(0xfe00_0fff).is_none());

    space.set_enabled(pci, false)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0xfe00_1000, 0x80, "dev0"),
            ev("del", 0xfe00_1080, 0x100, "dev1"),
            ev("del", 0xfe00_e000, 0x2000, "big"),
            commit(),
        ]
    );
    Ok(())
}

#[test]
fn transaction_gives_one_begin_commit() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let ids: (RegionId, RegionId) = space.transaction(|t| {
        let ram = t.new_ram("ram", 2 * MIB)?;
        let bios = t.new_rom("bios", 128 * KIB)?;
        let isa = t.new_alias("isa-bios", bios, 0, 128 * KIB)?;
        let uart = t.new_io("uart", 8)?;
        t.add_subregion(root, 0, ram)?;
        t.add_subregion(root, 4096 * MIB - 128 * KIB, bios)?;
        t.add_subregion_overlap(root, 0xe0000, isa, 1)?;
        t.add_subregion_overlap(root, 0x1000, uart, 2)?;
        t.set_priority(uart, 3)?;
        t.set_enabled(uart, false)?;
        Ok((ram, bios))
    })?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("add", 0, 0xe0000, "ram"),
            ev("add", 0xe0000, 0x20000, "bios"),
            ev("add", 0x100000, MIB, "ram"),
            ev("add", 0xfffe_0000, 0x20000, "bios"),
            commit(),
        ]
    );
    assert_eq!(space.region_kind(ids.1)?, vmkit_memory::RegionKind::Rom);

    // A failing closure changes nothing, and regions it created are gone.
    let mut created = None;
    let result = space.transaction(|t| {
        let extra = t.new_ram("extra", 0x1000)?;
        created = Some(extra);
        t.add_subregion(root, 0x4000_0000, extra)?;
        t.remove_subregion(root, ids.0)?;
        t.add_subregion(root, 0, ids.0)?;
        t.add_subregion(root, 0, ids.0) // already mapped: error
    });
    assert!(matches!(
        result,
        Err(vmkit_memory::Error::AlreadyMapped { .. })
    ));
    assert_eq!(rec.take_summary(), vec![]);
    let created = created.expect("closure ran");
    assert!(matches!(
        space.region_name(created),
        Err(vmkit_memory::Error::UnknownRegion(_))
    ));
    assert_eq!(space.flat_view().len(), 4);

    // Nested begin/commit: only the outermost commit updates.
    space.begin_transaction();
    space.set_enabled(ids.0, false)?;
    space.begin_transaction();
    space.set_enabled(ids.0, true)?;
    space.set_enabled(ids.1, false)?;
    space.commit_transaction()?;
    assert_eq!(rec.take_summary(), vec![]);
    space.commit_transaction()?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0xe0000, "ram"),
            ev("del", 0xe0000, 0x20000, "bios"),
            ev("del", 0x100000, MIB, "ram"),
            ev("del", 0xfffe_0000, 0x20000, "bios"),
            // Hiding the alias target hides the alias too; the RAM pieces merge.
            ev("add", 0, 2 * MIB, "ram"),
            commit(),
        ]
    );
    assert!(matches!(
        space.commit_transaction(),
        Err(vmkit_memory::Error::NoTransaction)
    ));
    Ok(())
}

#[test]
fn registration_replays_and_unregistration_deletes() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let ram = space.new_ram("ram", 0x10000)?;
    let io = space.new_io("io", 0x10)?;
    space.add_subregion(root, 0, ram)?;
    space.add_subregion(root, 0x20000, io)?;
    let rec = RecordingListener::new();
    let id = space.register_listener(Box::new(rec.clone()))?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("add", 0, 0x10000, "ram"),
            ev("add", 0x20000, 0x10, "io"),
            commit(),
        ]
    );
    let _listener = space.unregister_listener(id)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("del", 0x20000, 0x10, "io"),
            ev("del", 0, 0x10000, "ram"),
            commit(),
        ]
    );
    space.remove_subregion(root, io)?;
    assert_eq!(
        rec.take_summary(),
        vec![],
        "unregistered listeners hear nothing"
    );
    assert!(space.unregister_listener(id).is_err());
    Ok(())
}

#[test]
fn dirty_logging_start_stop_are_nop_plus_log_calls() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let ram = space.new_ram("ram", 0x100000)?;
    let io = space.new_io("io", 0x1000)?;
    space.add_subregion(root, 0, ram)?;
    space.add_subregion_overlap(root, 0x8000, io, 1)?;
    rec.take();

    space.set_dirty_logging(ram, true)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("nop", 0, 0x8000, "ram"),
            ev("log_start", 0, 0x8000, "ram"),
            ev("nop", 0x8000, 0x1000, "io"),
            ev("nop", 0x9000, 0xf7000, "ram"),
            ev("log_start", 0x9000, 0xf7000, "ram"),
            commit(),
        ]
    );
    assert!(matches!(&events[2], ListenerEvent::LogStart(s) if s.dirty_log));

    // A section added while logging is on carries the flag itself.
    space.remove_subregion(root, io)?;
    let events = rec.take();
    assert!(matches!(&events[4], ListenerEvent::Add(s) if s.dirty_log && s.size == 0x100000));

    space.set_dirty_logging(ram, false)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("nop", 0, 0x100000, "ram"),
            ev("log_stop", 0, 0x100000, "ram"),
            commit(),
        ]
    );
    Ok(())
}

#[test]
fn contiguous_views_of_one_backing_merge() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let ram = space.new_ram("ram", 0x4000)?;
    let low = space.new_alias("low", ram, 0, 0x2000)?;
    let high = space.new_alias("high", ram, 0x2000, 0x2000)?;
    space.add_subregion(root, 0x10000, high)?;
    space.add_subregion(root, 0x12000, low)?;
    // Not contiguous in the backing (high half first): two ranges.
    assert_eq!(space.flat_view().len(), 2);
    space.set_address(high, 0x12000)?;
    space.set_address(low, 0x10000)?;
    // low then high: one range over the whole backing.
    let view = space.flat_view();
    assert_eq!(view.len(), 1);
    assert_eq!(
        (view[0].guest_addr, view[0].size, view[0].offset_in_region),
        (0x10000, 0x4000, 0)
    );
    assert_eq!(
        rec.take_summary().last(),
        Some(&commit()),
        "every change is bracketed"
    );
    Ok(())
}

/// Records like `RecordingListener` but refuses its next `commit` when told to.
struct CommitRefuser {
    inner: RecordingListener,
    refuse_next_commit: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl vmkit_memory::MemoryListener for CommitRefuser {
    fn begin(&mut self) -> vmkit_memory::ListenerResult {
        self.inner.begin()
    }
    fn region_add(&mut self, s: &vmkit_memory::Section) -> vmkit_memory::ListenerResult {
        self.inner.region_add(s)
    }
    fn region_del(&mut self, s: &vmkit_memory::Section) -> vmkit_memory::ListenerResult {
        self.inner.region_del(s)
    }
    fn commit(&mut self) -> vmkit_memory::ListenerResult {
        use std::sync::atomic::Ordering;
        if self.refuse_next_commit.swap(false, Ordering::SeqCst) {
            return Err(vmkit_memory::ListenerError::new("commit refused"));
        }
        self.inner.commit()
    }
}

#[test]
fn refused_commit_is_undone_inside_the_same_bracket() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let ram = space.new_ram("ram", 0x2000)?;
    space.add_subregion(root, 0, ram)?;
    let first = RecordingListener::new();
    let refusing = RecordingListener::new();
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    space.register_listener(Box::new(first.clone()))?;
    space.register_listener(Box::new(CommitRefuser {
        inner: refusing.clone(),
        refuse_next_commit: flag.clone(),
    }))?;
    first.take();
    refusing.take();

    flag.store(true, Ordering::SeqCst);
    let err = space.set_enabled(ram, false).unwrap_err();
    assert!(err.to_string().contains("commit refused"), "{err}");
    assert_eq!(space.flat_view().len(), 1);
    // The refusing listener is still inside the bracket: undo, then commit.
    assert_eq!(
        refusing.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0x2000, "ram"),
            ev("add", 0, 0x2000, "ram"),
            commit(),
        ]
    );
    // The listener before it committed the change and then gets the inverse bracket.
    assert_eq!(
        first.take_summary(),
        vec![
            begin(),
            ev("del", 0, 0x2000, "ram"),
            commit(),
            begin(),
            ev("add", 0, 0x2000, "ram"),
            commit(),
        ]
    );
    // The tree was restored too: the next change starts from "enabled".
    space.set_enabled(ram, false)?;
    assert!(space.flat_view().is_empty());
    Ok(())
}

/// Dropping the address space tells listeners to delete every section first, so a KVM
/// listener removes its slots before the memory behind them is unmapped.
#[test]
fn drop_deletes_every_section_for_listeners() -> Result<()> {
    let rec = RecordingListener::new();
    {
        let mut space = AddressSpace::new("system");
        let ram = space.new_ram("ram", 2 * MIB)?;
        let rom = space.new_rom("bios", 64 * KIB)?;
        space.add_subregion(space.root(), 0, ram)?;
        space.add_subregion(space.root(), 4 * MIB, rom)?;
        space.register_listener(Box::new(rec.clone()))?;
        rec.take();
    }
    assert_eq!(
        rec.take_summary(),
        vec![
            ("begin", 0, 0, String::new()),
            ("del", 4 * MIB, 64 * KIB, "bios".to_string()),
            ("del", 0, 2 * MIB, "ram".to_string()),
            ("commit", 0, 0, String::new()),
        ]
    );
    Ok(())
}

#[test]
fn region_access_reaches_unmapped_ram_and_refuses_out_of_range() {
    let mut space = AddressSpace::new("system");
    let ram = space.new_ram("ram", 0x2000).unwrap();
    let access = space.region_access(ram).unwrap();
    assert_eq!((access.name(), access.size()), ("ram", 0x2000));
    access.write(0x1ffe, &[1, 2]).unwrap();
    let mut back = [0u8; 2];
    space.read_region(ram, 0x1ffe, &mut back).unwrap();
    assert_eq!(back, [1, 2]);
    assert!(access.write(0x1fff, &[1, 2]).is_err());
    assert!(access.read(u64::MAX, &mut back).is_err());
    let container = space.new_container("c", 0x1000).unwrap();
    assert!(space.region_access(container).is_err());
}
