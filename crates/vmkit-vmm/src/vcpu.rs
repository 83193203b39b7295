//! The vCPU thread: `run()`, decode, dispatch through the buses, back into `KVM_RUN`.
//!
//! The exit path takes no global lock and allocates nothing: the buses are per-vCPU handles
//! over RCU tables, counters are per vCPU, and requests from the controller are one relaxed
//! atomic load per iteration. Only a device's own lock is taken, by the device access itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use vmkit_bus::{MmioHandle, PioHandle};
use vmkit_kvm::{ExitKind, SystemEventKind, Vcpu, VcpuExit};

use crate::control::{Controller, ExitReason, MachineEvent, VcpuAction};
use crate::dump::{describe_exit_failure, GuestMemoryReader};

/// A userspace interrupt controller as the vCPU loop sees it (the PIC's INTR pin and INTA
/// cycle), for the userspace interrupt model.
pub trait InterruptController: Send + Sync {
    /// Whether the controller asserts INTR now. Called before every guest entry: make it a
    /// lock-free read.
    fn interrupt_pending(&self) -> bool;
    /// The INTA cycle: the vector to inject, or `None` if the request went away.
    fn acknowledge(&self) -> Option<u8>;
}

/// Puts the vCPU into its reset state (registers, MSRs, ...); called on the vCPU's own thread
/// after a machine reset. `index` 0 is the boot processor.
pub type ResetCpuFn = dyn Fn(&Vcpu, usize) -> Result<(), String> + Send + Sync;

/// Where a halted vCPU (userspace interrupt model) sleeps until an interrupt or a request.
#[derive(Debug, Default)]
pub struct HaltWaiter {
    woken: Mutex<bool>,
    sleeping: AtomicBool,
    cv: Condvar,
}

impl HaltWaiter {
    /// Wakes the vCPU if it sleeps in `hlt` (remembered if it is about to). Returns whether
    /// it was asleep: then it is not inside `KVM_RUN` and needs no kick.
    pub fn wake(&self) -> bool {
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        *woken = true;
        self.cv.notify_all();
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Sleeps until `ready()` holds, re-checking after every wake.
    fn wait_until(&self, ready: impl Fn() -> bool) {
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if ready() {
                *woken = false;
                self.sleeping.store(false, Ordering::SeqCst);
                return;
            }
            if !*woken {
                self.sleeping.store(true, Ordering::SeqCst);
                woken = self.cv.wait(woken).unwrap_or_else(|e| e.into_inner());
            }
            *woken = false;
        }
    }
}

/// Exit counts of one vCPU, by [`ExitKind`]. Written only by its vCPU thread (plain
/// load+store, no locked instruction), read by anyone.
#[derive(Debug, Default)]
pub struct VcpuStats {
    counts: [AtomicU64; ExitKind::ALL.len()],
}

impl VcpuStats {
    #[inline]
    fn count(&self, kind: ExitKind) {
        let slot = &self.counts[kind as usize];
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// How many exits of `kind` this vCPU has taken.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Non-zero counts by kind name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ExitKind::ALL
            .iter()
            .map(|&kind| (kind.name(), self.get(kind)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// Userspace model: inject when the guest can take it, else ask for an interrupt window.
#[inline]
fn inject_pending(
    vcpu: &mut Vcpu,
    index: usize,
    pic: &dyn InterruptController,
    window_requested: &mut bool,
) {
    if pic.interrupt_pending() {
        if vcpu.ready_for_interrupt_injection() && vcpu.interrupt_flag() {
            if let Some(vector) = pic.acknowledge() {
                if let Err(e) = vcpu.inject_interrupt(vector) {
                    eprintln!("vmkit: vCPU {index}: injecting vector {vector:#x} failed: {e}");
                }
            }
        }
        // Ask again while anything is left: the window opens after this injection.
        let want = pic.interrupt_pending();
        if want != *window_requested {
            vcpu.set_request_interrupt_window(want);
            *window_requested = want;
        }
    } else if *window_requested {
        vcpu.set_request_interrupt_window(false);
        *window_requested = false;
    }
}

/// Everything one vCPU thread needs.
pub struct VcpuRunner {
    pub(crate) vcpu: Vcpu,
    pub(crate) index: usize,
    pub(crate) pio: PioHandle,
    pub(crate) mmio: MmioHandle,
    pub(crate) pic: Option<Arc<dyn InterruptController>>,
    pub(crate) controller: Arc<Controller>,
    pub(crate) stats: Arc<VcpuStats>,
    pub(crate) halt: Arc<HaltWaiter>,
    pub(crate) reset_cpu: Arc<ResetCpuFn>,
    pub(crate) memory: Arc<dyn GuestMemoryReader>,
}

impl VcpuRunner {
    /// Runs until the controller says stop.
    pub fn run(mut self) {
        let mut generation = 0u64;
        let mut window_requested = false;
        loop {
            if self.controller.has_request() {
                match self.controller.vcpu_check_with(
                    &mut generation,
                    self.index,
                    Some(&mut self.vcpu),
                ) {
                    VcpuAction::Exit => return,
                    VcpuAction::Run => {}
                    VcpuAction::ResetThenRun => {
                        if let Err(e) = (self.reset_cpu)(&self.vcpu, self.index) {
                            self.fail(format!("vCPU {} could not be reset: {e}", self.index));
                            continue;
                        }
                    }
                }
            }
            if let Some(pic) = self.pic.as_deref() {
                inject_pending(&mut self.vcpu, self.index, pic, &mut window_requested);
            }
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) => {
                    let text = describe_exit_failure(
                        &self.vcpu,
                        self.index,
                        &format!("KVM_RUN failed: {e}"),
                        self.memory.as_ref(),
                    );
                    self.fail(text);
                    continue;
                }
            };
            self.stats.count(exit.kind());
            match exit {
                VcpuExit::IoOut {
                    port, size, data, ..
                } => {
                    for transfer in data.chunks(usize::from(size.max(1))) {
                        self.pio.write(port, transfer);
                    }
                }
                VcpuExit::IoIn {
                    port, size, data, ..
                } => {
                    for transfer in data.chunks_mut(usize::from(size.max(1))) {
                        self.pio.read(port, transfer);
                    }
                }
                VcpuExit::MmioWrite { addr, data } => {
                    self.mmio.write(addr, data);
                }
                VcpuExit::MmioRead { addr, data } => {
                    self.mmio.read(addr, data);
                }
                VcpuExit::Interrupted | VcpuExit::IrqWindowOpen | VcpuExit::Debug { .. } => {}
                VcpuExit::Hlt => self.halt_until_interrupt(),
                VcpuExit::Shutdown => {
                    // A triple fault: the CPU is unusable until the machine resets. Said
                    // with where it happened: with -no-reboot it is how vmkit ends.
                    let text = describe_exit_failure(
                        &self.vcpu,
                        self.index,
                        "triple fault (KVM_EXIT_SHUTDOWN): the machine resets, or ends with \
                         -no-reboot",
                        self.memory.as_ref(),
                    );
                    eprint!("{text}");
                    self.controller.post(MachineEvent::Reset);
                    self.wait_for_request();
                }
                VcpuExit::SystemEvent(event) => {
                    let event = match event.kind {
                        SystemEventKind::Shutdown => MachineEvent::Exit(ExitReason::PowerOff),
                        SystemEventKind::Reset => MachineEvent::Reset,
                        SystemEventKind::Wakeup => continue,
                        SystemEventKind::Crash | SystemEventKind::Other(_) => {
                            let text =
                                format!("vCPU {}: guest system event {:?}", self.index, event);
                            MachineEvent::Exit(ExitReason::InternalError(text))
                        }
                    };
                    self.controller.post(event);
                    self.wait_for_request();
                }
                other => {
                    let what = match &other {
                        VcpuExit::InternalError(e) => format!(
                            "KVM internal error: {} (suberror {}), data {:x?}",
                            e.suberror_name(),
                            e.suberror,
                            e.data()
                        ),
                        VcpuExit::FailEntry { hardware_reason, cpu } => format!(
                            "VM entry failed: hardware reason {hardware_reason:#x} on host CPU {cpu}"
                        ),
                        other => format!("unhandled exit {other:?}"),
                    };
                    let text =
                        describe_exit_failure(&self.vcpu, self.index, &what, self.memory.as_ref());
                    self.fail(text);
                }
            }
        }
    }

    /// `hlt` left the guest (no in-kernel irqchip): sleep, without spinning, until an interrupt
    /// the guest would take arrives or the controller wants something.
    fn halt_until_interrupt(&mut self) {
        let interrupts_enabled = self.vcpu.interrupt_flag();
        self.halt.wait_until(|| {
            self.controller.has_request()
                || (interrupts_enabled && self.pic.as_ref().is_some_and(|p| p.interrupt_pending()))
        });
    }

    fn wait_for_request(&self) {
        self.halt.wait_until(|| self.controller.has_request());
    }

    /// Stops the machine with an internal error and waits to be told to exit.
    fn fail(&mut self, text: String) {
        eprintln!("{text}");
        self.controller
            .post(MachineEvent::Exit(ExitReason::InternalError(text)));
        self.wait_for_request();
    }
}
