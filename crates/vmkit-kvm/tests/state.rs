//! vCPU and VM state through vmkit-kvm against real KVM: a guest stopped mid-loop, its
//! state saved and put into a second VM, runs on there exactly as it would have.
//!
//! These run when /dev/kvm works; with `VMKIT_REQUIRE_KVM=1` (CI) an unusable KVM fails them.

use iced_x86::code_asm::*;
use vmkit_kvm::state::{StateContext, VcpuState, VmState, MSR_IA32_TSC};
use vmkit_kvm::{KvmSystem, MemorySlot, SlotFlags, Vcpu, VcpuExit, Vm};
use vmkit_testutil::{assemble, require_kvm, GuestRam};

const RAM_SIZE: usize = 0x10000;
const CODE: u64 = 0x1000;

fn vm_with(kvm: &KvmSystem, ram: &GuestRam) -> (Vm, Vcpu) {
    let vm = kvm.create_vm().expect("create VM");
    vm.create_irqchip().expect("in-kernel irqchip");
    vm.create_pit2().expect("in-kernel PIT");
    // SAFETY: `ram` outlives the VM in every test below.
    unsafe {
        vm.set_memory_slot(MemorySlot {
            slot: 0,
            guest_addr: 0,
            size: RAM_SIZE as u64,
            host_addr: ram.host_addr(),
            flags: SlotFlags::default(),
        })
    }
    .expect("memory slot");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    let cpuid = kvm.supported_cpuid().unwrap();
    vcpu.set_cpuid(&cpuid).unwrap();
    (vm, vcpu)
}

/// The counter the guest reports at its next `out 0x10, ax`.
fn next_report(vcpu: &mut Vcpu) -> u16 {
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut {
                port: 0x10, data, ..
            } => {
                return u16::from_le_bytes([data[0], data[1]]);
            }
            VcpuExit::IoOut { .. } | VcpuExit::Interrupted => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
}

#[test]
fn a_saved_vcpu_continues_in_another_vm() {
    require_kvm!();
    let code = assemble(16, CODE, |a| {
        let mut top = a.create_label();
        a.mov(bx, 0u32)?;
        a.set_label(&mut top)?;
        a.inc(bx)?;
        a.mov(ax, bx)?;
        a.out(0x10, ax)?;
        a.jmp(top)
    });
    let kvm = KvmSystem::open().unwrap();
    let ctx = StateContext::new(&kvm).unwrap();
    assert!(!ctx.msr_indices().is_empty(), "KVM lists MSRs");
    let mut ram_a = GuestRam::new(RAM_SIZE);
    ram_a.write(CODE as usize, &code);
    let (vm_a, mut a) = vm_with(&kvm, &ram_a);
    let mut sregs = a.sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    a.set_sregs(&sregs).unwrap();
    let mut regs = a.regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    a.set_regs(&regs).unwrap();
    for expect in 1..=5u16 {
        assert_eq!(next_report(&mut a), expect);
    }

    // Through JSON, as a stream would carry it.
    let vcpu_state: VcpuState =
        serde_json::from_str(&serde_json::to_string(&a.save_state(&ctx).unwrap()).unwrap())
            .unwrap();
    let vm_state: VmState = serde_json::from_str(
        &serde_json::to_string(&vm_a.save_state(true, true).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(vcpu_state.msrs.iter().any(|&(i, _)| i == MSR_IA32_TSC));
    assert!(vcpu_state.xsave.len() >= 1024);

    let mut ram_b = GuestRam::new(RAM_SIZE);
    ram_b.write(CODE as usize, &code);
    let (vm_b, mut b) = vm_with(&kvm, &ram_b);
    vm_b.restore_state(&vm_state, true, true).unwrap();
    b.restore_state(&ctx, &vcpu_state).unwrap();
    assert_eq!(b.regs().unwrap().rip, vcpu_state.regs.rip);
    assert_eq!(b.sregs().unwrap().cr0, vcpu_state.sregs.cr0);
    for expect in 6..=10u16 {
        assert_eq!(next_report(&mut b), expect, "restored VM");
        assert_eq!(next_report(&mut a), expect, "source VM");
    }
    let tsc_b = b.save_state(&ctx).unwrap();
    let tsc = |s: &VcpuState| s.msrs.iter().find(|m| m.0 == MSR_IA32_TSC).unwrap().1;
    assert!(
        tsc(&tsc_b) >= tsc(&vcpu_state),
        "the TSC carried on, not restarted"
    );

    // A state for another vCPU, of another version, or for a VM without a PIT is refused.
    let mut other = vcpu_state.clone();
    other.id = 3;
    let err = b.restore_state(&ctx, &other).unwrap_err().to_string();
    assert!(err.contains("vCPU 3"), "{err}");
    other.id = 0;
    other.version = 99;
    assert!(b
        .restore_state(&ctx, &other)
        .unwrap_err()
        .to_string()
        .contains("version 99"));
    let err = vm_b
        .restore_state(&vm_state, true, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("-irqchip"), "{err}");
}
