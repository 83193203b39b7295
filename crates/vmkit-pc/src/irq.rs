//! The in-kernel interrupt model's ISA IRQ router: vmkit-isa's [`IrqRouter`] over KVM's
//! `KVM_IRQ_LINE`. It lives here, next to KVM, so that vmkit-isa and the device crates stay
//! free of KVM.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vmkit_isa::IrqRouter;

/// The in-kernel interrupt model's router: `KVM_IRQ_LINE` with GSI = ISA IRQ.
///
/// With `KVM_CREATE_IRQCHIP`, KVM's default routing feeds GSIs 0-15 to both its PIC pair and
/// its IOAPIC (pin = GSI), so the same call serves a guest in PIC mode and in APIC mode.
/// IRQ 2 is passed through as GSI 2 (IOAPIC pin 2); an ISA device should not use it.
///
/// A failing ioctl (e.g. no irqchip was created) cannot be reported to the device, which
/// only drives a pin: it is counted ([`error_count`](Self::error_count)) and the first one
/// is printed to stderr. Nothing here panics.
pub struct KernelIrqRouter {
    vm: Arc<vmkit_kvm::Vm>,
    errors: AtomicU64,
    reported: AtomicBool,
}

impl KernelIrqRouter {
    /// A router driving the in-kernel irqchip of `vm` (create it first with
    /// [`vmkit_kvm::Vm::create_irqchip`]).
    pub fn new(vm: Arc<vmkit_kvm::Vm>) -> Self {
        Self {
            vm,
            errors: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        }
    }

    /// How many `KVM_IRQ_LINE` calls failed.
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The VM whose irqchip is driven.
    pub fn vm(&self) -> &Arc<vmkit_kvm::Vm> {
        &self.vm
    }
}

impl IrqRouter for KernelIrqRouter {
    fn set_irq(&self, irq: u32, high: bool) {
        if let Err(e) = self.vm.set_irq_line(irq, high) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if !self.reported.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "vmkit: driving ISA IRQ {irq} through KVM_IRQ_LINE failed: {e} \
                     (was the in-kernel irqchip created?); further failures are only counted"
                );
            }
        }
    }
}

impl fmt::Debug for KernelIrqRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelIrqRouter")
            .field("errors", &self.error_count())
            .finish_non_exhaustive()
    }
}
