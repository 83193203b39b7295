//! The HPET of QEMU's pc (vmkit-hpet at 0xFED00000), wired to the machine's interrupts.
//!
//! The HPET drives GSIs; this machine routes ISA IRQ n to GSI n (KVM's default routing, no
//! IRQ0 override in the MADT), so in legacy replacement mode timer 0, which the HPET reports
//! on GSI 2 (where QEMU's routing puts ISA IRQ0), is delivered as IRQ 0 here. While legacy
//! replacement is on, the 8254 and the RTC are cut off from IRQ 0 and IRQ 8 as on real
//! chipsets (QEMU's `pit_enabled` line and its RTC input gating): the userspace 8254 and the
//! RTC through [`LegacyGate`], the in-kernel 8254 with `KVM_PIT_FLAGS_HPET_LEGACY`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmkit_hpet::{Hpet, HpetIrq, TimedMmio, LEGACY_TIMER0_GSI};
use vmkit_hw::{Clock, DeviceTimers};
use vmkit_isa::IrqRouter;

/// Bus entry name of the HPET.
pub const HPET_NAME: &str = "/machine/hpet";

/// The machine's HPET model.
pub type MachineHpet = Hpet<Arc<HpetLines>, Arc<dyn Clock>>;

/// ISA IRQs that legacy replacement takes from the 8254 (0) and the RTC (8).
const PIT_IRQ: u32 = 0;
const RTC_IRQ: u32 = 8;

/// The router ISA devices drive: forwards everything, except IRQ 0 and 8 while the HPET is
/// in legacy replacement mode.
pub struct LegacyGate {
    inner: Arc<dyn IrqRouter>,
    muted: AtomicBool,
}

impl LegacyGate {
    /// Gates `inner`.
    pub fn new(inner: Arc<dyn IrqRouter>) -> Self {
        Self {
            inner,
            muted: AtomicBool::new(false),
        }
    }

    /// Cuts the 8254 and RTC off (lowering their lines first) or reconnects them.
    pub fn set_muted(&self, muted: bool) {
        if muted && !self.muted.load(Ordering::Acquire) {
            self.inner.set_irq(PIT_IRQ, false);
            self.inner.set_irq(RTC_IRQ, false);
        }
        self.muted.store(muted, Ordering::Release);
    }

    /// Whether IRQ 0 and 8 are cut off.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Acquire)
    }
}

impl IrqRouter for LegacyGate {
    fn set_irq(&self, irq: u32, high: bool) {
        if (irq == PIT_IRQ || irq == RTC_IRQ) && self.muted() {
            return;
        }
        self.inner.set_irq(irq, high);
    }
}

/// The in-kernel 8254's legacy switch (`KVM_PIT_FLAGS_HPET_LEGACY`), for the in-kernel
/// interrupt model.
pub trait PitLegacy: Send + Sync {
    /// Stops (`true`) or restarts the in-kernel 8254's interrupt output.
    fn set_hpet_legacy(&self, legacy: bool);
}

impl PitLegacy for vmkit_kvm::Vm {
    fn set_hpet_legacy(&self, legacy: bool) {
        let vm = self.as_raw();
        let result = vm.get_pit2().and_then(|mut state| {
            if legacy {
                state.flags |= kvm_bindings::KVM_PIT_FLAGS_HPET_LEGACY;
            } else {
                state.flags &= !kvm_bindings::KVM_PIT_FLAGS_HPET_LEGACY;
            }
            vm.set_pit2(&state)
        });
        if let Err(e) = result {
            eprintln!("vmkit: switching the in-kernel 8254 for HPET legacy mode failed: {e}");
        }
    }
}

/// The HPET's interrupt outputs: GSIs to the machine's router, legacy replacement to the
/// gate and the in-kernel 8254.
pub struct HpetLines {
    router: Arc<dyn IrqRouter>,
    gate: Arc<LegacyGate>,
    pit: Option<Arc<dyn PitLegacy>>,
    legacy: AtomicBool,
}

impl HpetLines {
    /// Lines onto `router` (ungated), muting `gate` and `pit` in legacy mode.
    pub fn new(
        router: Arc<dyn IrqRouter>,
        gate: Arc<LegacyGate>,
        pit: Option<Arc<dyn PitLegacy>>,
    ) -> Self {
        Self {
            router,
            gate,
            pit,
            legacy: AtomicBool::new(false),
        }
    }
}

impl HpetIrq for HpetLines {
    fn set_gsi(&self, gsi: u32, high: bool) {
        let irq = if gsi == LEGACY_TIMER0_GSI && self.legacy.load(Ordering::Acquire) {
            PIT_IRQ
        } else {
            gsi
        };
        self.router.set_irq(irq, high);
    }

    fn legacy_replacement_changed(&self, enabled: bool) {
        self.legacy.store(enabled, Ordering::Release);
        self.gate.set_muted(enabled);
        if let Some(pit) = &self.pit {
            pit.set_hpet_legacy(enabled);
        }
    }
}

/// An HPET for the machine: the model (register it with `timers` too) and its MMIO adapter.
pub fn build_hpet(
    lines: Arc<HpetLines>,
    clock: Arc<dyn Clock>,
    timers: &DeviceTimers,
) -> (Arc<Mutex<MachineHpet>>, TimedMmio<MachineHpet>) {
    let hpet = Arc::new(Mutex::new(Hpet::pc(lines, clock)));
    timers.register(HPET_NAME, hpet.clone());
    let mmio = TimedMmio::new(Arc::clone(&hpet), timers.clone());
    (hpet, mmio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmkit_hpet::{timer_comparator, timer_config, CFG_ENABLE, CFG_LEGACY, REG_CONFIG};
    use vmkit_hpet::{TN_INT_ENABLE, TN_INT_TYPE_LEVEL};
    use vmkit_hw::ManualClock;

    #[derive(Default)]
    struct Levels(Mutex<Vec<(u32, bool)>>);

    impl IrqRouter for Levels {
        fn set_irq(&self, irq: u32, high: bool) {
            self.0.lock().unwrap().push((irq, high));
        }
    }

    #[derive(Default)]
    struct Pit(Mutex<Vec<bool>>);

    impl PitLegacy for Pit {
        fn set_hpet_legacy(&self, legacy: bool) {
            self.0.lock().unwrap().push(legacy);
        }
    }

    #[test]
    fn legacy_mode_delivers_timer0_on_irq0_and_mutes_the_pit_and_rtc() {
        let levels = Arc::new(Levels::default());
        let gate = Arc::new(LegacyGate::new(levels.clone()));
        let pit = Arc::new(Pit::default());
        let lines = Arc::new(HpetLines::new(
            levels.clone(),
            gate.clone(),
            Some(pit.clone()),
        ));
        let clock = ManualClock::new(0);
        let timers = DeviceTimers::new(Arc::new(clock.clone()));
        let (hpet, _mmio) = build_hpet(lines, Arc::new(clock.clone()), &timers);

        gate.set_irq(0, true); // the 8254, before legacy mode: passes
        {
            let mut h = hpet.lock().unwrap();
            h.write(
                timer_config(0),
                &(TN_INT_TYPE_LEVEL | TN_INT_ENABLE).to_le_bytes(),
            );
            h.write(timer_comparator(0), &100u64.to_le_bytes());
            h.write(REG_CONFIG, &(CFG_ENABLE | CFG_LEGACY).to_le_bytes());
        }
        assert_eq!(*pit.0.lock().unwrap(), vec![true]);
        assert!(gate.muted());
        gate.set_irq(0, true); // the 8254 again: dropped
        gate.set_irq(8, true); // the RTC: dropped
        gate.set_irq(4, true); // COM1: passes
        clock.set(1_000);
        timers.service();
        let got = levels.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![(0, true), (0, false), (8, false), (4, true), (0, true)],
            "8254 high, muted (IRQ 0 and 8 lowered), COM1, then HPET timer 0 on IRQ 0"
        );

        hpet.lock()
            .unwrap()
            .write(REG_CONFIG, &CFG_ENABLE.to_le_bytes());
        assert!(!gate.muted());
        assert_eq!(*pit.0.lock().unwrap(), vec![true, false]);
    }
}
