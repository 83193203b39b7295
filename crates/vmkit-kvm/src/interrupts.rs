//! Interrupts from a userspace interrupt controller (the i8259 pair modelled in the VMM,
//! no in-kernel irqchip), delivered as KVM wants them.
//!
//! KVM accepts `KVM_INTERRUPT` only right after an exit that reported
//! `ready_for_interrupt_injection` with the guest's IF set; otherwise the VMM asks for an
//! interrupt window (`request_interrupt_window`) and KVM exits as soon as the guest can take
//! one. [`InterruptWindow::service`] does that before each `KVM_RUN`, for any controller
//! behind [`InterruptController`].

use crate::{Result, Vcpu};

/// A userspace interrupt controller as a vCPU loop sees it (INTR and INTA).
pub trait InterruptController: Send + Sync {
    /// Whether the controller asserts INTR now. Called before every guest entry: make it a
    /// lock-free read.
    fn interrupt_pending(&self) -> bool;
    /// The INTA cycle: the vector to inject, or `None` if the request went away.
    fn acknowledge(&self) -> Option<u8>;
}

/// The inject-or-request-a-window state of one vCPU.
#[derive(Debug, Default)]
pub struct InterruptWindow {
    requested: bool,
}

impl InterruptWindow {
    /// No window requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Before `KVM_RUN`: injects the controller's vector when the guest can take it (an
    /// INTA cycle), and keeps an interrupt window requested exactly while anything is
    /// still pending. An error means `KVM_INTERRUPT` failed; the vector was acknowledged.
    #[inline]
    pub fn service(&mut self, vcpu: &mut Vcpu, controller: &dyn InterruptController) -> Result<()> {
        let mut result = Ok(());
        if controller.interrupt_pending() {
            if vcpu.ready_for_interrupt_injection() && vcpu.interrupt_flag() {
                if let Some(vector) = controller.acknowledge() {
                    result = vcpu.inject_interrupt(vector);
                }
            }
            // Ask again while anything is left: the window opens after this injection.
            self.set(vcpu, controller.interrupt_pending());
        } else {
            self.set(vcpu, false);
        }
        result
    }

    /// Whether an interrupt window is requested now.
    pub fn requested(&self) -> bool {
        self.requested
    }

    fn set(&mut self, vcpu: &mut Vcpu, want: bool) {
        if want != self.requested {
            vcpu.set_request_interrupt_window(want);
            self.requested = want;
        }
    }
}
