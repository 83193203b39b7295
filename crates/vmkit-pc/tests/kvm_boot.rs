//! Boot paths on real KVM: firmware at the reset vector, real mode at 0x7c00, 32-bit
//! protected mode and 64-bit long mode with identity paging. Guests are a handful of
//! instructions (this project's CI host interprets guest kernel code slowly).

use std::sync::Arc;

use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress};
use vmkit_kvm::{KvmMemoryListener, KvmSystem, Vcpu, VcpuExit, Vm};
use vmkit_memory::AddressSpace;
use vmkit_pc::boot::{EFER_LMA, LONG_MODE_CR0};
use vmkit_pc::firmware::RESET_VECTOR;
use vmkit_pc::{
    configure_kvm_pages, long_mode_at, long_mode_at_with, map_firmware, protected_mode_32_at,
    real_mode_at, reset_vector, IdentityMap, MemoryLayout, RamRegions,
};
use vmkit_testutil::{assemble, require_kvm};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const MARKER_PORT: u16 = 0x10;

struct Machine {
    // Field order: the address space (and its KVM listener) goes before the VM handle.
    space: AddressSpace,
    vcpu: Vcpu,
    layout: MemoryLayout,
    regions: RamRegions,
    _vm: Arc<Vm>,
}

fn machine(ram_size: u64) -> Machine {
    let vm = Arc::new(KvmSystem::open().unwrap().create_vm().unwrap());
    configure_kvm_pages(&vm).unwrap();
    let mut space = AddressSpace::new("system");
    let layout = MemoryLayout::new(ram_size).unwrap();
    let regions = layout.map_into(&mut space).unwrap();
    // SAFETY: registered with an AddressSpace and never called directly.
    let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
    space.register_listener(Box::new(listener)).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    Machine {
        space,
        vcpu,
        layout,
        regions,
        _vm: vm,
    }
}

/// Runs until the guest writes one byte to the marker port and then halts; returns the byte.
fn run_to_marker_and_halt(vcpu: &mut Vcpu) -> u8 {
    let marker = match vcpu.run().unwrap() {
        VcpuExit::IoOut {
            port, size, data, ..
        } if port == MARKER_PORT && size == 1 => data[0],
        other => {
            let description = format!("{other:?}");
            panic!(
                "expected an OUT to port {MARKER_PORT:#x}, got {description}; regs {:?}",
                vcpu.regs().unwrap()
            );
        }
    };
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        other => panic!("expected HLT after the marker, got {other:?}"),
    }
    marker
}

#[test]
fn firmware_reset_vector_runs_at_the_top_of_4_gib() {
    require_kvm!();
    let mut m = machine(16 * MIB);
    let size = 4096u64;
    let mut image = vec![0xf4u8; size as usize];
    // CS base 0xffff_0000, IP 0xfff0: the image's 16th byte from the end.
    let code = assemble(16, 0xfff0, |a| {
        a.mov(al, 0x2a)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    image[(size - 16) as usize..][..code.len()].copy_from_slice(&code);
    map_firmware(&mut m.space, &image).unwrap();
    reset_vector(&m.vcpu).unwrap();

    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x2a);
    let regs = m.vcpu.regs().unwrap();
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!(regs.rip, 0xfff0 + code.len() as u64);
    assert_eq!(sregs.cs.base + regs.rip, RESET_VECTOR + code.len() as u64);
    assert_eq!((sregs.cs.selector, sregs.cs.base), (0xf000, 0xffff_0000));
    assert_eq!(regs.rdx & 0xffff_ffff, 0x600, "EDX holds the CPU signature");
    assert_eq!(sregs.cr0 & 1, 0, "still in real mode");
}

#[test]
fn a_far_jump_from_the_reset_vector_continues_in_the_isa_alias() {
    require_kvm!();
    let mut m = machine(16 * MIB);
    let size = 64 * 1024u64;
    let mut image = vec![0xf4u8; size as usize];
    let jump = assemble(16, 0xfff0, |a| a.jmp_far(0xf000, 0xe000));
    image[(size - 16) as usize..][..jump.len()].copy_from_slice(&jump);
    // f000:e000 is 0xfe000, i.e. image offset 0xe000 seen through the alias below 1 MiB.
    let code = assemble(16, 0xe000, |a| {
        a.mov(al, 0x42)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    image[0xe000..][..code.len()].copy_from_slice(&code);
    map_firmware(&mut m.space, &image).unwrap();
    reset_vector(&m.vcpu).unwrap();

    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x42);
    let regs = m.vcpu.regs().unwrap();
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!((sregs.cs.selector, sregs.cs.base), (0xf000, 0xf_0000));
    assert_eq!(regs.rip, 0xe000 + code.len() as u64);
}

#[test]
fn real_mode_at_runs_a_boot_sector_at_0x7c00() {
    require_kvm!();
    let mut m = machine(16 * MIB);
    let code = assemble(16, 0x7c00, |a| {
        a.mov(ax, 0x1234)?;
        a.mov(word_ptr(0x600), ax)?;
        a.mov(al, 0x7c)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    let memory = m.space.memory_snapshot();
    memory.write_slice(&code, GuestAddress(0x7c00)).unwrap();
    real_mode_at(&m.vcpu, 0x7c00).unwrap();

    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x7c);
    assert_eq!(memory.read_obj::<u16>(GuestAddress(0x600)).unwrap(), 0x1234);
    let regs = m.vcpu.regs().unwrap();
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!((sregs.cs.selector, sregs.cs.base), (0, 0));
    assert_eq!(regs.rip, 0x7c00 + code.len() as u64);
}

#[test]
fn real_mode_at_reaches_addresses_above_64_kib_through_cs() {
    require_kvm!();
    let mut m = machine(16 * MIB);
    let code = assemble(16, 0x2340, |a| {
        a.mov(al, 0x12)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    m.space
        .memory_snapshot()
        .write_slice(&code, GuestAddress(0x1_2340))
        .unwrap();
    real_mode_at(&m.vcpu, 0x1_2340).unwrap();
    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x12);
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!((sregs.cs.selector, sregs.cs.base), (0x1000, 0x1_0000));
    assert_eq!(m.vcpu.regs().unwrap().rip, 0x2340 + code.len() as u64);
}

#[test]
fn protected_mode_32_at_runs_flat_32_bit_code() {
    require_kvm!();
    let mut m = machine(128 * MIB);
    let entry = 0x10_0000u32;
    let code = assemble(32, u64::from(entry), |a| {
        a.mov(dword_ptr(0x200_0000), 0xdead_beefu32)?;
        a.push(0x5a5a)?;
        a.mov(al, 0x32)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    let memory = m.space.memory_snapshot();
    memory
        .write_slice(&code, GuestAddress(u64::from(entry)))
        .unwrap();
    protected_mode_32_at(&m.vcpu, &*memory, entry, 0x8000).unwrap();

    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x32);
    assert_eq!(
        memory.read_obj::<u32>(GuestAddress(0x200_0000)).unwrap(),
        0xdead_beef
    );
    assert_eq!(
        memory.read_obj::<u32>(GuestAddress(0x7ffc)).unwrap(),
        0x5a5a
    );
    let regs = m.vcpu.regs().unwrap();
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!(regs.rip, u64::from(entry) + code.len() as u64);
    assert_eq!(regs.rsp, 0x7ffc);
    assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (0x10, 1, 0));
    assert_eq!(sregs.ds.selector, 0x18);
}

/// Long mode: store `value` at `target`, push it, report 0x64 and halt.
fn run_long_mode_store(m: &mut Machine, map: Option<IdentityMap>, target: u64, value: u64) {
    let entry = 0x10_0000u64;
    let stack = 0x8000u64;
    let code = assemble(64, entry, |a| {
        a.mov(rax, target)?;
        a.mov(rbx, value)?;
        a.mov(qword_ptr(rax), rbx)?;
        a.push(rbx)?;
        a.mov(al, 0x64)?;
        a.out(MARKER_PORT as i32, al)?;
        a.hlt()
    });
    let memory = m.space.memory_snapshot();
    memory.write_slice(&code, GuestAddress(entry)).unwrap();
    match map {
        Some(map) => long_mode_at_with(&m.vcpu, &*memory, entry, stack, &map).unwrap(),
        None => long_mode_at(&m.vcpu, &*memory, entry, stack).unwrap(),
    }

    assert_eq!(run_to_marker_and_halt(&mut m.vcpu), 0x64);
    assert_eq!(memory.read_obj::<u64>(GuestAddress(target)).unwrap(), value);
    assert_eq!(
        memory.read_obj::<u64>(GuestAddress(stack - 8)).unwrap(),
        value
    );
    let regs = m.vcpu.regs().unwrap();
    let sregs = m.vcpu.sregs().unwrap();
    assert_eq!(
        regs.rip,
        entry + code.len() as u64,
        "stopped right after HLT"
    );
    assert_eq!(regs.rsp, stack - 8);
    assert_eq!((sregs.cs.l, sregs.cs.db, sregs.cs.selector), (1, 0, 0x10));
    assert_ne!(sregs.efer & EFER_LMA, 0, "long mode active");
    assert_eq!(sregs.cr0, LONG_MODE_CR0);
}

#[test]
fn long_mode_at_writes_above_1_gib_with_2_gib_of_ram() {
    require_kvm!();
    let mut m = machine(2 * GIB);
    let target = GIB + 0x1238;
    run_long_mode_store(&mut m, None, target, 0x1122_3344_5566_7788);
    // The same bytes through the backing region (pc.ram offset == address below 3 GiB).
    let mut bytes = [0u8; 8];
    m.space
        .read_region(m.regions.ram, target, &mut bytes)
        .unwrap();
    assert_eq!(u64::from_le_bytes(bytes), 0x1122_3344_5566_7788);
}

#[test]
fn long_mode_at_writes_above_4_gib_with_5_gib_of_ram() {
    require_kvm!();
    let mut m = machine(5 * GIB);
    assert_eq!(m.layout.ram_end(), 6 * GIB);
    let map = IdentityMap::covering(m.layout.ram_end());
    assert_eq!(map.size, 6 * GIB);
    let target = 4 * GIB + GIB / 2 + 0x40;
    run_long_mode_store(&mut m, Some(map), target, 0x0bad_cafe_f00d_d00d);
    // Guest 4.5 GiB is pc.ram offset 3.5 GiB: the part above 4 GiB continues after the low part.
    let mut bytes = [0u8; 8];
    m.space
        .read_region(m.regions.ram, 3 * GIB + GIB / 2 + 0x40, &mut bytes)
        .unwrap();
    assert_eq!(u64::from_le_bytes(bytes), 0x0bad_cafe_f00d_d00d);
}

#[test]
fn an_exception_in_long_mode_shuts_the_guest_down() {
    require_kvm!();
    let mut m = machine(16 * MIB);
    let entry = 0x10_0000u64;
    let code = assemble(64, entry, |a| a.ud2());
    let memory = m.space.memory_snapshot();
    memory.write_slice(&code, GuestAddress(entry)).unwrap();
    long_mode_at(&m.vcpu, &*memory, entry, 0x8000).unwrap();
    // The empty boot IDT turns #UD into a triple fault.
    let exit = m.vcpu.run().unwrap();
    assert!(matches!(exit, VcpuExit::Shutdown), "{exit:?}");
}
