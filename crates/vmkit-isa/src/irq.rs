//! Where ISA interrupt lines go: the in-kernel irqchip or the userspace 8259A pair.
//!
//! Devices drive an [`IsaIrqLine`] (a [`vmkit_hw::IrqLine`] bound to one ISA IRQ); the line
//! hands every level change to the machine's [`IrqRouter`]:
//!
//! - vmkit-pc's `KernelIrqRouter` (in-kernel model, `KVM_CREATE_IRQCHIP`): `KVM_IRQ_LINE` with
//!   GSI = ISA IRQ. KVM's default routing sends GSIs 0-15 to both its PIC pair and its
//!   IOAPIC, so the guest may use either.
//! - [`UserspacePic`] (userspace model, QEMU's `kernel_irqchip=off`): a
//!   [`vmkit_i8259::DualPic`] in the VMM. Its INT output is a [`PicIntr`] that the vCPU loop
//!   polls without a lock ([`UserspacePic::intr_pending`]) and that calls a waker on each
//!   rising edge, so a halted or running vCPU can be kicked to take the interrupt.
//! - [`RecordingRouter`]: records levels and edges, for tests.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use vmkit_hw::IrqLine;
use vmkit_i8259::DualPic;

use crate::{Error, Result};

/// Number of ISA IRQ lines (0-15).
pub const ISA_IRQ_COUNT: u32 = 16;

/// The cascade IRQ of the PC/AT PIC pair; ISA devices wired to IRQ 2 reach the slave's IR1
/// (IRQ 9) on a PC/AT.
pub const ISA_CASCADE_IRQ: u32 = 2;

/// Where the PC/AT bus sends a device's IRQ 2: the slave 8259A's IR1.
pub const ISA_CASCADE_REDIRECT: u32 = 9;

/// Locks a mutex, recovering the data if a thread panicked while holding it: device state
/// stays usable (a panic elsewhere is already being reported) rather than poisoning the VM.
pub(crate) use vmkit_hw::lock;

/// Receives the level changes of the ISA IRQ lines 0-15.
///
/// Called on whatever thread a device runs on (vCPU threads for guest accesses, the main
/// loop for timers and input), often with the device's lock held: implementations must not
/// block for long and must not call back into devices.
pub trait IrqRouter: Send + Sync {
    /// ISA IRQ `irq` (0-15) is now driven `high` or low.
    fn set_irq(&self, irq: u32, high: bool);
}

impl<T: IrqRouter + ?Sized> IrqRouter for Arc<T> {
    fn set_irq(&self, irq: u32, high: bool) {
        (**self).set_irq(irq, high)
    }
}

/// An ISA device's interrupt output: an [`IrqLine`] bound to one ISA IRQ of a router.
///
/// Several devices may hold lines for the same IRQ (COM1 and COM3 share IRQ 4 on a PC); as in
/// QEMU, the last level driven wins, so only one of them should have its interrupt enabled
/// at a time.
#[derive(Clone)]
pub struct IsaIrqLine {
    router: Arc<dyn IrqRouter>,
    irq: u32,
}

impl IsaIrqLine {
    /// Binds ISA IRQ `irq` of `router`.
    ///
    /// # Errors
    /// [`Error::InvalidIrq`] unless `irq` is 0-15.
    pub fn new(router: Arc<dyn IrqRouter>, irq: u32) -> Result<Self> {
        if irq >= ISA_IRQ_COUNT {
            return Err(Error::InvalidIrq(irq));
        }
        Ok(Self { router, irq })
    }

    /// The ISA IRQ this line drives.
    pub fn irq(&self) -> u32 {
        self.irq
    }

    /// The router the line reports to.
    pub fn router(&self) -> &Arc<dyn IrqRouter> {
        &self.router
    }
}

impl IrqLine for IsaIrqLine {
    fn set_level(&self, high: bool) {
        self.router.set_irq(self.irq, high);
    }
}

impl fmt::Debug for IsaIrqLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsaIrqLine")
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

/// A waker called on each rising edge of the userspace PIC's INT output.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

struct IntrState {
    level: AtomicBool,
    rising_edges: AtomicU64,
    waker: RwLock<Option<Waker>>,
}

/// The userspace PIC's INT output (the CPU's INTR pin).
///
/// The level lives in an atomic so the vCPU loop can test it without taking the PIC lock; a
/// rising edge also calls the waker set with [`UserspacePic::set_waker`]. The waker runs with
/// the PIC locked (the PIC drives its output from inside its register logic), so it must not
/// touch the PIC: it should only kick or unpark the vCPU that injects interrupts.
#[derive(Clone)]
pub struct PicIntr {
    state: Arc<IntrState>,
}

impl PicIntr {
    fn new() -> Self {
        Self {
            state: Arc::new(IntrState {
                level: AtomicBool::new(false),
                rising_edges: AtomicU64::new(0),
                waker: RwLock::new(None),
            }),
        }
    }

    /// The current INT level.
    pub fn level(&self) -> bool {
        self.state.level.load(Ordering::Acquire)
    }

    /// How many times INT rose.
    pub fn rising_edges(&self) -> u64 {
        self.state.rising_edges.load(Ordering::Relaxed)
    }
}

impl IrqLine for PicIntr {
    fn set_level(&self, high: bool) {
        let was_high = self.state.level.swap(high, Ordering::AcqRel);
        if high && !was_high {
            self.state.rising_edges.fetch_add(1, Ordering::Relaxed);
            let waker = self
                .state
                .waker
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(wake) = waker {
                wake();
            }
        }
    }
}

impl fmt::Debug for PicIntr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PicIntr")
            .field("level", &self.level())
            .field("rising_edges", &self.rising_edges())
            .finish_non_exhaustive()
    }
}

/// The userspace interrupt model: the PC/AT 8259A pair running in the VMM, and the
/// [`IrqRouter`] that feeds it.
///
/// ISA IRQ 2 is routed to IRQ 9, as the PC/AT bus does (the master's IR2 is the slave's
/// cascade input). Level changes for lines 16 and up are counted
/// ([`dropped_irqs`](Self::dropped_irqs)) and ignored.
///
/// The vCPU loop checks [`intr_pending`](Self::intr_pending) (an atomic load) before each
/// entry into the guest; when the vCPU can take an interrupt it calls
/// [`acknowledge`](Self::acknowledge) and injects the vector with `KVM_INTERRUPT`, otherwise
/// it asks KVM for an interrupt window.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use vmkit_isa::{IrqRouter, UserspacePic};
///
/// let pic = UserspacePic::new();
/// let kicks = Arc::new(AtomicU32::new(0));
/// let counter = Arc::clone(&kicks);
/// pic.set_waker(Arc::new(move || { counter.fetch_add(1, Ordering::Relaxed); }));
/// // ICW1-ICW4 for both chips: vectors 0x20 and 0x28.
/// {
///     let mut chips = pic.lock();
///     for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1),
///                           (0xa0, 0x11), (0xa1, 0x28), (0xa1, 2), (0xa1, 1)] {
///         chips.write_port(port, &[value]);
///     }
/// }
/// pic.set_irq(4, true);
/// assert!(pic.intr_pending());
/// assert_eq!(kicks.load(Ordering::Relaxed), 1);
/// assert_eq!(pic.acknowledge(), Some(0x24));
/// ```
pub struct UserspacePic {
    pic: Arc<Mutex<DualPic<PicIntr>>>,
    intr: PicIntr,
    dropped: AtomicU64,
}

impl UserspacePic {
    /// A PIC pair in its power-on state, INT low, no waker.
    pub fn new() -> Self {
        let intr = PicIntr::new();
        Self {
            pic: Arc::new(Mutex::new(DualPic::new(intr.clone()))),
            intr,
            dropped: AtomicU64::new(0),
        }
    }

    /// Sets the function called on each rising edge of INT (replacing any previous one).
    /// It runs with the PIC locked: it must not call into the PIC.
    pub fn set_waker(&self, waker: Waker) {
        *self
            .intr
            .state
            .waker
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(waker);
    }

    /// Whether INT is high: an interrupt waits for an INTA cycle. Lock-free.
    pub fn intr_pending(&self) -> bool {
        self.intr.level()
    }

    /// Runs the INTA cycle if INT is still high and returns the vector to inject; `None` if
    /// the request went away (another vCPU took it, or the guest masked it).
    pub fn acknowledge(&self) -> Option<u8> {
        let mut pic = lock(&self.pic);
        pic.interrupt_pending().then(|| pic.acknowledge())
    }

    /// The vector [`acknowledge`](Self::acknowledge) would return, without acknowledging.
    pub fn pending_vector(&self) -> Option<u8> {
        lock(&self.pic).pending_vector()
    }

    /// The shared PIC pair (what the `i8259` device maps on the port bus).
    pub fn pic(&self) -> &Arc<Mutex<DualPic<PicIntr>>> {
        &self.pic
    }

    /// Locks the PIC pair.
    pub fn lock(&self) -> MutexGuard<'_, DualPic<PicIntr>> {
        lock(&self.pic)
    }

    /// The INT output line.
    pub fn intr(&self) -> &PicIntr {
        &self.intr
    }

    /// Machine reset: both chips to their power-on state; INT drops.
    pub fn reset(&self) {
        lock(&self.pic).reset();
    }

    /// Level changes for lines that do not exist (16 and up), ignored.
    pub fn dropped_irqs(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Default for UserspacePic {
    fn default() -> Self {
        Self::new()
    }
}

impl IrqRouter for UserspacePic {
    fn set_irq(&self, irq: u32, high: bool) {
        let line = if irq == ISA_CASCADE_IRQ {
            ISA_CASCADE_REDIRECT
        } else {
            irq
        };
        let accepted = u8::try_from(line)
            .ok()
            .is_some_and(|line| lock(&self.pic).set_irq_level(line, high).is_ok());
        if !accepted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for UserspacePic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserspacePic")
            .field("intr", &self.intr)
            .field("dropped", &self.dropped_irqs())
            .finish_non_exhaustive()
    }
}

/// A router that records each line's level and rising edges: for tests, and for VMMs that
/// poll. Lines 16 and up are ignored.
#[derive(Debug, Default)]
pub struct RecordingRouter {
    levels: [AtomicBool; ISA_IRQ_COUNT as usize],
    rising_edges: [AtomicU64; ISA_IRQ_COUNT as usize],
}

impl RecordingRouter {
    /// All lines low, no edges.
    pub fn new() -> Self {
        Self::default()
    }

    /// The level of ISA IRQ `irq` (false for lines that do not exist).
    pub fn level(&self, irq: u32) -> bool {
        usize::try_from(irq)
            .ok()
            .and_then(|i| self.levels.get(i))
            .is_some_and(|l| l.load(Ordering::Acquire))
    }

    /// How many times ISA IRQ `irq` rose.
    pub fn rising_edges(&self, irq: u32) -> u64 {
        usize::try_from(irq)
            .ok()
            .and_then(|i| self.rising_edges.get(i))
            .map_or(0, |e| e.load(Ordering::Acquire))
    }
}

impl IrqRouter for RecordingRouter {
    fn set_irq(&self, irq: u32, high: bool) {
        let Some(index) = usize::try_from(irq).ok() else {
            return;
        };
        if let (Some(level), Some(edges)) = (self.levels.get(index), self.rising_edges.get(index)) {
            if !level.swap(high, Ordering::AcqRel) && high {
                edges.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(pic: &UserspacePic, master_base: u8, slave_base: u8) {
        let mut chips = pic.lock();
        for (port, value) in [
            (0x20, 0x11),
            (0x21, master_base),
            (0x21, 4),
            (0x21, 1),
            (0xa0, 0x11),
            (0xa1, slave_base),
            (0xa1, 2),
            (0xa1, 1),
        ] {
            chips.write_port(port, &[value]);
        }
    }

    #[test]
    fn isa_line_validates_and_forwards() {
        let router = Arc::new(RecordingRouter::new());
        assert!(matches!(
            IsaIrqLine::new(router.clone(), 16),
            Err(Error::InvalidIrq(16))
        ));
        let line = IsaIrqLine::new(router.clone(), 7).unwrap();
        line.pulse();
        line.raise();
        assert_eq!(router.rising_edges(7), 2);
        assert!(router.level(7));
        assert!(!router.level(99));
        assert_eq!(line.irq(), 7);
    }

    #[test]
    fn irq2_is_redirected_to_irq9() {
        // PC/AT: a card on bus IRQ 2 reaches the slave's IR1 (vector slave base + 1).
        let pic = UserspacePic::new();
        program(&pic, 0x30, 0x38);
        pic.set_irq(2, true);
        assert_eq!(pic.pending_vector(), Some(0x39));
        assert_eq!(pic.acknowledge(), Some(0x39));
        assert_eq!(pic.dropped_irqs(), 0);
    }

    #[test]
    fn nonexistent_lines_are_counted_not_fatal() {
        let pic = UserspacePic::new();
        pic.set_irq(16, true);
        pic.set_irq(u32::MAX, true);
        assert_eq!(pic.dropped_irqs(), 2);
        assert!(!pic.intr_pending());
        assert_eq!(pic.acknowledge(), None);
    }

    #[test]
    fn waker_runs_on_rising_edges_only_and_reset_drops_int() {
        let pic = UserspacePic::new();
        program(&pic, 0x20, 0x28);
        let kicks = Arc::new(AtomicU64::new(0));
        let k = Arc::clone(&kicks);
        pic.set_waker(Arc::new(move || {
            k.fetch_add(1, Ordering::Relaxed);
        }));
        pic.set_irq(3, true);
        pic.set_irq(4, true); // INT already high: no new edge
        assert_eq!(kicks.load(Ordering::Relaxed), 1);
        assert_eq!(pic.acknowledge(), Some(0x23));
        // 8259A: IRQ 4 waits while the higher-priority IRQ 3 is in service...
        assert!(!pic.intr_pending());
        // ...and INT rises again at the non-specific EOI (OCW2 0x20).
        pic.lock().write_port(0x20, &[0x20]);
        assert!(pic.intr_pending());
        assert_eq!(kicks.load(Ordering::Relaxed), 2);
        pic.reset();
        assert!(!pic.intr_pending());
        assert_eq!(pic.intr().rising_edges(), 2);
    }
}
