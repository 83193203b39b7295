//! The KVM memory listener with real KVM: slots follow the flat view through overlaps, aliases,
//! ROM and removal; a guest sees the memory; dirty pages reach the address space's bitmap.

use std::sync::Arc;

use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress};
use vmkit_kvm::{KvmMemoryListener, KvmSystem, SlotFlags, VcpuExit, Vm};
use vmkit_memory::{AddressSpace, Error as MemoryError, SectionKind};
use vmkit_testutil::{assemble, require_kvm};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// (guest address, size, read-only, dirty-logged) of every slot, sorted.
fn slots_of(vm: &Vm) -> Vec<(u64, u64, bool, bool)> {
    let mut slots: Vec<_> = vm
        .memory_slots()
        .iter()
        .map(|s| (s.guest_addr, s.size, s.flags.readonly, s.flags.log_dirty))
        .collect();
    slots.sort_unstable();
    slots
}

/// The same, computed from the flat view: every page-aligned RAM/ROM section.
fn expected_slots(space: &AddressSpace) -> Vec<(u64, u64, bool, bool)> {
    space
        .flat_view()
        .iter()
        .filter_map(|s| s.page_aligned())
        .filter(|s| matches!(s.kind, SectionKind::Ram | SectionKind::Rom))
        .map(|s| {
            (
                s.guest_addr,
                s.size,
                s.kind == SectionKind::Rom,
                s.dirty_log,
            )
        })
        .collect()
}

fn vm() -> Arc<Vm> {
    Arc::new(KvmSystem::open().unwrap().create_vm().unwrap())
}

#[test]
fn slots_follow_the_flat_view() {
    require_kvm!();
    let vm = vm();
    let mut space = AddressSpace::new("system");
    let ram = space.new_ram("ram", 4 * MIB).unwrap();
    space.add_subregion(space.root(), 0, ram).unwrap();
    // SAFETY: registered with an AddressSpace and never called directly.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
    space.register_listener(Box::new(listener)).unwrap();
    assert_eq!(slots_of(&vm), vec![(0, 4 * MIB, false, false)]);

    // A higher-priority ROM over the middle splits RAM into two slots around it.
    let rom = space.new_rom("option-rom", 128 * KIB).unwrap();
    space
        .add_subregion_overlap(space.root(), MIB, rom, 1)
        .unwrap();
    assert_eq!(slots_of(&vm), expected_slots(&space));
    assert_eq!(slots_of(&vm).len(), 3);
    assert!(slots_of(&vm).contains(&(MIB, 128 * KIB, true, false)));

    // An MMIO hole punches RAM too, and gets no slot.
    let mmio = space.new_io("mmio-dev", 64 * KIB).unwrap();
    space
        .add_subregion_overlap(space.root(), 2 * MIB, mmio, 2)
        .unwrap();
    assert_eq!(slots_of(&vm), expected_slots(&space));
    assert_eq!(slots_of(&vm).len(), 4);

    // An alias of the ROM's last 64 KiB placed at 3 MiB (like the BIOS below 1 MiB).
    let alias = space
        .new_alias("rom-alias", rom, 64 * KIB, 64 * KIB)
        .unwrap();
    space
        .add_subregion_overlap(space.root(), 3 * MIB, alias, 3)
        .unwrap();
    assert_eq!(slots_of(&vm), expected_slots(&space));

    // Removing the ROM heals that part of RAM; slot numbers are reused, not exhausted.
    space.remove_subregion(space.root(), rom).unwrap();
    assert_eq!(slots_of(&vm), expected_slots(&space));
    let max_slot = vm.memory_slots().iter().map(|s| s.slot).max().unwrap();
    assert!(max_slot < 8, "slot numbers are reused (highest {max_slot})");

    // Dirty logging switches on in place.
    space.set_dirty_logging(ram, true).unwrap();
    assert_eq!(slots_of(&vm), expected_slots(&space));
    assert!(slots_of(&vm).iter().filter(|s| !s.2).all(|s| s.3));

    drop(space);
    assert!(
        vm.memory_slots().is_empty(),
        "dropping the space removes every slot"
    );
}

#[test]
fn running_out_of_slots_rolls_the_change_back() {
    require_kvm!();
    let vm = vm();
    let mut space = AddressSpace::new("system");
    // SAFETY: registered with an AddressSpace and never called directly.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), 2) };
    space.register_listener(Box::new(listener)).unwrap();
    let a = space.new_ram("a", 64 * KIB).unwrap();
    let b = space.new_ram("b", 64 * KIB).unwrap();
    let c = space.new_ram("c", 64 * KIB).unwrap();
    space.add_subregion(space.root(), 0, a).unwrap();
    space.add_subregion(space.root(), MIB, b).unwrap();
    let err = space.add_subregion(space.root(), 2 * MIB, c).unwrap_err();
    assert!(matches!(err, MemoryError::Listener { .. }), "{err}");
    assert!(err.to_string().contains("kvm"), "{err}");
    assert_eq!(slots_of(&vm), expected_slots(&space));
    assert_eq!(slots_of(&vm).len(), 2);
}

#[test]
fn guest_runs_from_the_address_space_and_dirty_pages_are_tracked() {
    require_kvm!();
    let vm = vm();
    let mut space = AddressSpace::new("system");
    let ram = space.new_ram("ram", MIB).unwrap();
    space.add_subregion(space.root(), 0, ram).unwrap();
    // The RAM's first 64 KiB also visible at 0x80000 through an alias.
    let alias = space.new_alias("low-alias", ram, 0, 64 * KIB).unwrap();
    space
        .add_subregion_overlap(space.root(), 0x8_0000, alias, 1)
        .unwrap();
    space.set_dirty_logging(ram, true).unwrap();
    // SAFETY: registered with an AddressSpace and never called directly.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
    space.register_listener(Box::new(listener)).unwrap();

    let code = assemble(16, 0x1000, |a| {
        a.mov(ax, 0x8000u32)?;
        a.mov(es, ax)?;
        a.mov(bx, 0x5000)?;
        a.mov(al, byte_ptr(bx).es())?; // reads RAM 0x5000 through the alias
        a.out(0x90, al)?;
        a.mov(byte_ptr(0x7000), 0x11)?; // dirties page 7
        a.mov(ax, 0x1000u32)?;
        a.mov(ds, ax)?;
        a.mov(byte_ptr(0x3000), 0x22)?; // 1000:3000 dirties page 0x13
        a.hlt()
    });
    let memory = space.memory_snapshot();
    memory.write_slice(&code, GuestAddress(0x1000)).unwrap();
    memory.write_obj(0xabu8, GuestAddress(0x5000)).unwrap();
    // Anything the loader dirtied is not the guest's.
    space.sync_dirty_log(ram).unwrap();

    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.sregs().unwrap();
    for seg in [&mut sregs.cs, &mut sregs.ds] {
        seg.base = 0;
        seg.selector = 0;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    match vcpu.run().unwrap() {
        VcpuExit::IoOut {
            port: 0x90, data, ..
        } => assert_eq!(data, &[0xab]),
        other => panic!("expected the aliased read, got {other:?}"),
    }
    assert!(matches!(vcpu.run().unwrap(), VcpuExit::Hlt));

    let bitmap = space.sync_dirty_log(ram).unwrap();
    let pages: Vec<u64> = bitmap.dirty_pages().collect();
    assert_eq!(pages, vec![7, 0x13]);
    let mut byte = [0u8];
    space.read_region(ram, 0x7000, &mut byte).unwrap();
    assert_eq!(byte[0], 0x11);
    // The slot flags say what the address space asked for.
    assert!(vm.memory_slots().iter().all(|s| s.flags
        == SlotFlags {
            log_dirty: true,
            readonly: false
        }));
}
