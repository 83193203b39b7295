//! A fake KVM-slot listener (the shape of vmkit-kvm's): after every change its slots equal the
//! flat view's RAM/ROM ranges; refusals (no free slot) undo the change everywhere; dirty logs
//! flow from its `log_sync` into `sync_dirty_log`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryBackend;
use vmkit_memory::{
    AddressSpace, DirtyBitmap, Error, ListenerError, ListenerResult, MemoryListener,
    RecordingListener, Result, Section, SectionKind, PAGE_SIZE,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    gpa: u64,
    size: u64,
    hva: u64,
    readonly: bool,
    log_dirty: bool,
}

#[derive(Default)]
struct SlotState {
    max_slots: u32,
    slots: BTreeMap<u32, Slot>,
    /// Dirty pages the "guest" wrote, by guest page address, reported by log_sync.
    guest_dirty: Vec<u64>,
    in_update: bool,
}

#[derive(Clone)]
struct FakeKvm(Arc<Mutex<SlotState>>);

impl FakeKvm {
    fn new(max_slots: u32) -> Self {
        Self(Arc::new(Mutex::new(SlotState {
            max_slots,
            ..SlotState::default()
        })))
    }

    fn slots_by_gpa(&self) -> Vec<Slot> {
        let mut slots: Vec<Slot> = self.0.lock().unwrap().slots.values().cloned().collect();
        slots.sort_by_key(|s| s.gpa);
        slots
    }
}

impl MemoryListener for FakeKvm {
    fn name(&self) -> &str {
        "fake kvm"
    }

    fn begin(&mut self) -> ListenerResult {
        self.0.lock().unwrap().in_update = true;
        Ok(())
    }

    fn commit(&mut self) -> ListenerResult {
        self.0.lock().unwrap().in_update = false;
        Ok(())
    }

    fn region_add(&mut self, section: &Section) -> ListenerResult {
        let Some(pages) = section.page_aligned() else {
            return Ok(());
        };
        let mut state = self.0.lock().unwrap();
        assert!(state.in_update, "region_add outside begin/commit");
        let overlaps = state
            .slots
            .values()
            .any(|s| pages.guest_addr < s.gpa + s.size && s.gpa < pages.guest_addr + pages.size);
        if overlaps {
            return Err(ListenerError::new(format!(
                "slot overlap at {:#x}",
                pages.guest_addr
            )));
        }
        let free = (0..state.max_slots).find(|n| !state.slots.contains_key(n));
        let Some(free) = free else {
            return Err(ListenerError::new("no free memory slot"));
        };
        state.slots.insert(
            free,
            Slot {
                gpa: pages.guest_addr,
                size: pages.size,
                hva: pages.host_addr,
                readonly: pages.kind == SectionKind::Rom,
                log_dirty: pages.dirty_log,
            },
        );
        Ok(())
    }

    fn region_del(&mut self, section: &Section) -> ListenerResult {
        let Some(pages) = section.page_aligned() else {
            return Ok(());
        };
        let mut state = self.0.lock().unwrap();
        assert!(state.in_update, "region_del outside begin/commit");
        let slot = state
            .slots
            .iter()
            .find(|(_, s)| s.gpa == pages.guest_addr && s.size == pages.size)
            .map(|(n, _)| *n);
        let slot = slot.ok_or_else(|| ListenerError::new("del of an unknown slot"))?;
        state.slots.remove(&slot);
        Ok(())
    }

    fn log_start(&mut self, section: &Section) -> ListenerResult {
        self.set_log(section, true)
    }

    fn log_stop(&mut self, section: &Section) -> ListenerResult {
        self.set_log(section, false)
    }

    fn log_sync(&mut self, section: &Section, bitmap: &mut DirtyBitmap) -> ListenerResult {
        let Some(pages) = section.page_aligned() else {
            return Ok(());
        };
        let mut state = self.0.lock().unwrap();
        // Build the KVM words for this slot and hand them over shifted to the bitmap's base.
        let npages = pages.size / PAGE_SIZE;
        let mut words = vec![0u64; npages.div_ceil(64) as usize];
        let mut reported = Vec::new();
        for &addr in &state.guest_dirty {
            if addr >= pages.guest_addr && addr < pages.guest_addr + pages.size {
                let page = (addr - pages.guest_addr) / PAGE_SIZE;
                words[(page / 64) as usize] |= 1 << (page % 64);
                reported.push(addr);
            }
        }
        state.guest_dirty.retain(|a| !reported.contains(a));
        bitmap.merge_words_at((pages.guest_addr - bitmap.base()) / PAGE_SIZE, &words);
        Ok(())
    }
}

impl FakeKvm {
    fn set_log(&mut self, section: &Section, on: bool) -> ListenerResult {
        let Some(pages) = section.page_aligned() else {
            return Ok(());
        };
        let mut state = self.0.lock().unwrap();
        let slot = state
            .slots
            .values_mut()
            .find(|s| s.gpa == pages.guest_addr && s.size == pages.size)
            .ok_or_else(|| ListenerError::new("log change of an unknown slot"))?;
        slot.log_dirty = on;
        Ok(())
    }
}

/// The slots the flat view calls for.
fn expected_slots(space: &AddressSpace) -> Vec<Slot> {
    space
        .flat_view()
        .iter()
        .filter_map(Section::page_aligned)
        .map(|s| Slot {
            gpa: s.guest_addr,
            size: s.size,
            hva: s.host_addr,
            readonly: s.kind == SectionKind::Rom,
            log_dirty: s.dirty_log,
        })
        .collect()
}

fn check(space: &AddressSpace, kvm: &FakeKvm) {
    assert_eq!(kvm.slots_by_gpa(), expected_slots(space));
}

#[test]
fn slots_follow_a_pc_like_memory_map() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let kvm = FakeKvm::new(32);
    space.register_listener(Box::new(kvm.clone()))?;

    // QEMU's pc layout: one RAM block shown through aliases below and above 4 GiB.
    let ram = space.new_ram("pc.ram", 6 * MIB)?;
    let below = space.new_alias("ram-below-4g", ram, 0, 4 * MIB)?;
    let above = space.new_alias("ram-above-4g", ram, 4 * MIB, 2 * MIB)?;
    let bios = space.new_rom("pc.bios", 256 * KIB)?;
    let isa_bios = space.new_alias("isa-bios", bios, 128 * KIB, 128 * KIB)?;
    let vga = space.new_io("vga-lowmem", 128 * KIB)?;
    let pci = space.new_container("pci", 256 * MIB)?;
    let mmio = space.new_io("hpet", 0x400)?;
    space.add_subregion(root, 0, below)?;
    check(&space, &kvm);
    space.add_subregion(root, 4096 * MIB, above)?;
    check(&space, &kvm);
    space.add_subregion(root, 4096 * MIB - 256 * KIB, bios)?;
    check(&space, &kvm);
    space.add_subregion_overlap(root, 0xe0000, isa_bios, 1)?;
    check(&space, &kvm);
    space.add_subregion_overlap(root, 0xa0000, vga, 1)?;
    check(&space, &kvm);
    space.add_subregion(pci, 0xed0000, mmio)?;
    space.add_subregion_overlap(root, 0xf000_0000, pci, -1)?;
    check(&space, &kvm);

    // Shadow RAM for 0xc0000..0xe0000 (a PAM-like switch): RAM alias over the I/O hole.
    let shadow = space.new_alias("pam-c0000", ram, 0xc0000, 0x20000)?;
    space.add_subregion_overlap(root, 0xc0000, shadow, 2)?;
    check(&space, &kvm);
    space.set_readonly(shadow, true)?;
    check(&space, &kvm);
    space.set_enabled(shadow, false)?;
    check(&space, &kvm);

    // A sub-page I/O overlay inside RAM: the two RAM pieces lose the shared partial pages.
    let tiny = space.new_io("tiny", 0x10)?;
    space.add_subregion_overlap(root, 0x20_0008, tiny, 5)?;
    check(&space, &kvm);
    assert!(kvm
        .slots_by_gpa()
        .iter()
        .any(|s| s.gpa == 0x20_1000 && s.hva == space.region_host_addr(ram).unwrap() + 0x20_1000));
    space.set_address(tiny, 0x30_0000)?;
    check(&space, &kvm);

    space.set_dirty_logging(ram, true)?;
    check(&space, &kvm);
    assert!(kvm
        .slots_by_gpa()
        .iter()
        .filter(|s| !s.readonly)
        .all(|s| s.log_dirty));

    space.transaction(|t| {
        t.remove_subregion(root, isa_bios)?;
        t.remove_subregion(root, vga)?;
        t.set_address(above, 8192 * MIB)?;
        t.set_dirty_logging(ram, false)
    })?;
    check(&space, &kvm);
    space.remove_subregion(root, below)?;
    space.remove_subregion(root, above)?;
    check(&space, &kvm);
    assert_eq!(kvm.slots_by_gpa().len(), 1, "only the BIOS is left");
    Ok(())
}

#[test]
fn out_of_slots_undoes_the_change_everywhere() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let recorder = RecordingListener::new();
    let kvm = FakeKvm::new(2);
    let late = RecordingListener::new();
    space.register_listener(Box::new(recorder.clone()))?;
    space.register_listener(Box::new(kvm.clone()))?;
    space.register_listener(Box::new(late.clone()))?;

    let ram = space.new_ram("ram", MIB)?;
    space.add_subregion(root, 0, ram)?;
    let rom = space.new_rom("rom", 64 * KIB)?;
    space.add_subregion(root, 2 * MIB, rom)?;
    check(&space, &kvm);
    let view_before = space.flat_view().to_vec();
    let snapshot_regions_before = space.memory_snapshot().num_regions();
    recorder.take();
    late.take();

    // Splitting the RAM with a page-sized hole needs 2 slots + the ROM's: refused.
    let hole = space.new_io("hole", PAGE_SIZE)?;
    let err = space
        .add_subregion_overlap(root, 0x8000, hole, 1)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Listener { listener, .. } if listener == "fake kvm"),
        "{err}"
    );
    assert!(err.to_string().contains("no free memory slot"));

    assert_eq!(space.flat_view(), &view_before[..]);
    assert_eq!(
        space.region_parent(hole)?,
        None,
        "the tree change was undone"
    );
    assert_eq!(
        space.memory_snapshot().num_regions(),
        snapshot_regions_before
    );
    check(&space, &kvm);
    // The listener before the failing one saw the change and then its inverse.
    let summary = recorder.take_summary();
    assert_eq!(
        summary,
        vec![
            ("begin", 0, 0, String::new()),
            ("del", 0, MIB, "ram".to_owned()),
            ("add", 0, 0x8000, "ram".to_owned()),
            ("add", 0x8000, 0x1000, "hole".to_owned()),
            ("add", 0x9000, MIB - 0x9000, "ram".to_owned()),
            ("nop", 2 * MIB, 64 * KIB, "rom".to_owned()),
            ("commit", 0, 0, String::new()),
            ("begin", 0, 0, String::new()),
            ("del", 0x9000, MIB - 0x9000, "ram".to_owned()),
            ("del", 0x8000, 0x1000, "hole".to_owned()),
            ("del", 0, 0x8000, "ram".to_owned()),
            ("add", 0, MIB, "ram".to_owned()),
            ("commit", 0, 0, String::new()),
        ]
    );
    // The one after it never heard of the change.
    assert_eq!(late.take_summary(), vec![]);

    // With the ROM gone there is room: the same change now succeeds.
    space.remove_subregion(root, rom)?;
    space.add_subregion_overlap(root, 0x8000, hole, 1)?;
    check(&space, &kvm);
    assert_eq!(kvm.slots_by_gpa().len(), 2);

    // A refused transaction restores the tree as it was at begin.
    let extra = space.new_ram("extra", 64 * KIB)?;
    let more = space.new_ram("more", 64 * KIB)?;
    let err = space
        .transaction(|t| {
            t.add_subregion(root, 8 * MIB, extra)?;
            t.add_subregion(root, 16 * MIB, more)
        })
        .unwrap_err();
    assert!(matches!(err, Error::Listener { .. }));
    assert_eq!(space.region_parent(extra)?, None);
    assert_eq!(space.region_parent(more)?, None);
    check(&space, &kvm);

    // A refused registration leaves nothing behind in the refusing listener.
    let small = FakeKvm::new(1);
    let err = space
        .register_listener(Box::new(small.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::Listener { .. }));
    assert!(small.slots_by_gpa().is_empty());
    Ok(())
}

#[test]
fn dirty_log_sync_goes_through_listeners() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let root = space.root();
    let kvm = FakeKvm::new(8);
    space.register_listener(Box::new(kvm.clone()))?;
    let ram = space.new_ram("ram", MIB)?;
    space.add_subregion(root, 0, ram)?;
    // The second half of the RAM is also visible at 16 MiB through an alias.
    let window = space.new_alias("window", ram, 512 * KIB, 512 * KIB)?;
    space.add_subregion(root, 16 * MIB, window)?;

    assert!(matches!(
        space.sync_dirty_log(ram),
        Err(Error::DirtyLogDisabled(_))
    ));
    space.set_dirty_logging(ram, true)?;
    check(&space, &kvm);

    kvm.0.lock().unwrap().guest_dirty = vec![0x3000, 0x8_0000, 16 * MIB + 0x1000];
    let bitmap = space.sync_dirty_log(ram)?;
    assert_eq!(bitmap.base(), 0);
    assert_eq!(bitmap.pages(), MIB / PAGE_SIZE);
    // Region offsets: 0x3000 directly; 0x80000 directly; 16 MiB + 0x1000 is region offset
    // 512 KiB + 0x1000 through the alias.
    assert_eq!(
        bitmap.dirty_addresses().collect::<Vec<_>>(),
        vec![0x3000, 0x8_0000, 0x8_1000]
    );
    // The listener reset its log.
    assert_eq!(space.sync_dirty_log(ram)?.count_dirty(), 0);

    let io = space.new_io("io", 16)?;
    assert!(matches!(space.sync_dirty_log(io), Err(Error::NotRam(_))));
    Ok(())
}
