//! The in-kernel IRQ router against real KVM.

use std::sync::Arc;

use vmkit_hw::IrqLine;
use vmkit_isa::{IrqRouter, IsaIrqLine};
use vmkit_pc::KernelIrqRouter;

#[test]
fn kernel_irq_router_drives_kvm_irq_lines() {
    vmkit_testutil::require_kvm!();
    let kvm = vmkit_kvm::KvmSystem::open().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irqchip().unwrap();
    let router = Arc::new(KernelIrqRouter::new(Arc::new(vm)));
    let line = IsaIrqLine::new(router.clone(), 4).unwrap();
    line.raise();
    line.lower();
    line.pulse();
    router.set_irq(4, true);
    router.set_irq(4, false);
    assert_eq!(
        router.error_count(),
        0,
        "KVM_IRQ_LINE succeeded with an irqchip"
    );

    let direct = KernelIrqRouter::new(Arc::new(kvm.create_vm().unwrap()));
    direct.set_irq(4, true);
    // No irqchip on this VM: KVM_IRQ_LINE fails with ENXIO, counted, not fatal.
    assert_eq!(direct.error_count(), 1);
    direct.set_irq(4, false);
    assert_eq!(direct.error_count(), 2);
}
