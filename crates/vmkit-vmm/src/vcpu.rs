//! The vCPU thread: `run()`, decode, dispatch through the buses, back into `KVM_RUN`.
//!
//! The exit path takes no global lock and allocates nothing: the buses are per-vCPU handles
//! over RCU tables, counters are per vCPU, and requests from the controller are one relaxed
//! atomic load per iteration. Only a device's own lock is taken, by the device access itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use vmkit_bus::{MmioHandle, PioHandle};
use vmkit_kvm::{ExitKind, InterruptWindow, SystemEventKind, Vcpu, VcpuExit};

use crate::control::{Controller, ExitReason, MachineEvent, VcpuAction};
use crate::dump::{describe_exit_failure, GuestMemoryReader};
use crate::emulate::{Finished, KvmCpu};

/// KVM_INTERNAL_ERROR_EMULATION: KVM's emulator could not run the instruction.
const INTERNAL_ERROR_EMULATION: u32 = 1;

pub use vmkit_kvm::InterruptController;

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
    /// Internal-error exits vmkit finished itself, by [`Finished`] kind.
    finished: [AtomicU64; Finished::ALL.len()],
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

    /// How many instructions of `kind` vmkit finished after KVM handed them back.
    pub fn finished(&self, kind: Finished) -> u64 {
        self.finished[kind as usize].load(Ordering::Relaxed)
    }

    fn count_finished(&self, kind: Finished) {
        let slot = &self.finished[kind as usize];
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Non-zero counts by kind name, then the finished instructions
    /// (`finished-cmpxchg16b`, ...).
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ExitKind::ALL
            .iter()
            .map(|&kind| (kind.name(), self.get(kind)))
            .chain(
                Finished::ALL
                    .iter()
                    .map(|&kind| (kind.counter_name(), self.finished(kind))),
            )
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// Delivers the coalesced ring's writes to the buses, oldest first.
#[inline]
fn drain_coalesced(ring: &vmkit_kvm::CoalescedRing, pio: &mut PioHandle, mmio: &mut MmioHandle) {
    ring.drain(|write| {
        if write.pio {
            pio.write(u16::try_from(write.addr).unwrap_or(u16::MAX), write.bytes());
        } else {
            mmio.write(write.addr, write.bytes());
        }
    });
}

fn internal_error_text(e: &vmkit_kvm::InternalError) -> String {
    format!(
        "KVM internal error: {} (suberror {}), data {:x?}",
        e.suberror_name(),
        e.suberror,
        e.data()
    )
}

/// An exit off the fast path, copied out of the `kvm_run` page so that handling it may use
/// the vCPU again.
enum SlowExit {
    /// An instruction KVM's emulator could not run (KVM_INTERNAL_ERROR_EMULATION).
    Emulation(vmkit_kvm::InternalError),
    /// A debug exception with guest debugging on.
    Debug { dr6: u64 },
    /// A triple fault.
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT.
    SystemEvent(vmkit_kvm::SystemEvent),
    /// Anything vmkit cannot go on from, described.
    Failed(String),
}

impl From<VcpuExit<'_>> for SlowExit {
    fn from(exit: VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::InternalError(e) if e.suberror == INTERNAL_ERROR_EMULATION => {
                SlowExit::Emulation(e)
            }
            VcpuExit::Debug { dr6, .. } => SlowExit::Debug { dr6 },
            VcpuExit::Shutdown => SlowExit::Shutdown,
            VcpuExit::SystemEvent(event) => SlowExit::SystemEvent(event),
            VcpuExit::InternalError(e) => SlowExit::Failed(internal_error_text(&e)),
            VcpuExit::FailEntry {
                hardware_reason,
                cpu,
            } => SlowExit::Failed(format!(
                "VM entry failed: hardware reason {hardware_reason:#x} on host CPU {cpu}"
            )),
            other => SlowExit::Failed(format!("unhandled exit {other:?}")),
        }
    }
}

/// What [`VcpuRunner::serve_request`] leaves the loop to do.
enum Served {
    /// Enter the guest.
    Run,
    /// Stop the thread.
    Exit,
    /// Look at the requests again before entering (a failure was just posted).
    Recheck,
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
    ///
    /// The loop below is the whole exit path: a pending request is one atomic load, then
    /// `KVM_RUN`, the exit decoded once by vmkit-kvm, and port and MMIO accesses go straight
    /// into this thread's bus handle (which calls the device under its own lock). Every
    /// other exit leaves the fast path through `SlowExit`.
    pub fn run(mut self) {
        let mut generation = 0u64;
        let mut window = InterruptWindow::new();
        let mut debug = crate::debug::VcpuDebug::default();
        // Writes KVM queued instead of exiting (port 0x80): delivered in order before any
        // exit is handled, so a later access to the same device sees them.
        let coalesced = self.vcpu.coalesced_ring().cloned();
        loop {
            if self.controller.has_request() {
                match self.serve_request(&mut generation, &mut debug) {
                    Served::Exit => {
                        if let Some(ring) = &coalesced {
                            drain_coalesced(ring, &mut self.pio, &mut self.mmio);
                        }
                        return;
                    }
                    // The reset failed and the failure is posted: check again, do not run.
                    Served::Recheck => continue,
                    Served::Run => {}
                }
            }
            if let Some(pic) = self.pic.as_deref() {
                if let Err(e) = window.service(&mut self.vcpu, pic) {
                    eprintln!(
                        "vmkit: vCPU {}: injecting an interrupt failed: {e}",
                        self.index
                    );
                }
            }
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) => {
                    self.fail_with_state(&format!("KVM_RUN failed: {e}"));
                    continue;
                }
            };
            if let Some(ring) = &coalesced {
                drain_coalesced(ring, &mut self.pio, &mut self.mmio);
            }
            self.stats.count(exit.kind());
            let slow = match exit {
                VcpuExit::IoOut {
                    port, size, data, ..
                } => {
                    for transfer in data.chunks(usize::from(size.max(1))) {
                        self.pio.write(port, transfer);
                    }
                    continue;
                }
                VcpuExit::IoIn {
                    port, size, data, ..
                } => {
                    for transfer in data.chunks_mut(usize::from(size.max(1))) {
                        self.pio.read(port, transfer);
                    }
                    continue;
                }
                VcpuExit::MmioWrite { addr, data } => {
                    self.mmio.write(addr, data);
                    continue;
                }
                VcpuExit::MmioRead { addr, data } => {
                    self.mmio.read(addr, data);
                    continue;
                }
                VcpuExit::Interrupted | VcpuExit::IrqWindowOpen => continue,
                VcpuExit::Hlt => {
                    self.halt_until_interrupt();
                    continue;
                }
                other => SlowExit::from(other),
            };
            self.slow_exit(slow, &mut debug);
        }
    }

    /// What the controller asked for (pause, reset, stop, a debugger's resume) before the
    /// next `KVM_RUN`.
    fn serve_request(
        &mut self,
        generation: &mut u64,
        debug: &mut crate::debug::VcpuDebug,
    ) -> Served {
        let action = self
            .controller
            .vcpu_check(self.index, generation, &mut self.vcpu);
        match action {
            VcpuAction::Exit => return Served::Exit,
            VcpuAction::Run => {}
            VcpuAction::ResetThenRun => {
                if let Err(e) = (self.reset_cpu)(&self.vcpu, self.index) {
                    self.fail(format!("vCPU {} could not be reset: {e}", self.index));
                    return Served::Recheck;
                }
            }
        }
        debug.on_resume(
            &self.controller,
            &self.vcpu,
            self.index,
            self.memory.as_ref(),
        );
        Served::Run
    }

    /// The exits off the fast path: instructions KVM handed back, debug exits, triple
    /// faults, system events and failures.
    fn slow_exit(&mut self, exit: SlowExit, debug: &mut crate::debug::VcpuDebug) {
        match exit {
            SlowExit::Emulation(error) => {
                // An int3 the debugger planted is its breakpoint's hit, not the guest's.
                if debug.on_emulation_failure(
                    &self.controller,
                    &self.vcpu,
                    self.index,
                    self.memory.as_ref(),
                ) {
                    return;
                }
                // Finished here where that can be done exactly, else reported as any other
                // internal error (the text is made only then: Linux's SLUB takes this path
                // thousands of times).
                if !self.finish_instruction() {
                    self.fail_with_state(&internal_error_text(&error));
                }
            }
            SlowExit::Debug { dr6 } => {
                debug.on_debug_exit(
                    &self.controller,
                    &self.vcpu,
                    self.index,
                    dr6,
                    self.memory.as_ref(),
                );
            }
            SlowExit::Shutdown => {
                // A triple fault: the CPU is unusable until the machine resets. Said with
                // where it happened: with -no-reboot it is how vmkit ends.
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
            SlowExit::SystemEvent(event) => {
                let event = match event.kind {
                    SystemEventKind::Shutdown => MachineEvent::Exit(ExitReason::PowerOff),
                    SystemEventKind::Reset => MachineEvent::Reset,
                    SystemEventKind::Wakeup => return,
                    SystemEventKind::Crash | SystemEventKind::Other(_) => {
                        let text = format!("vCPU {}: guest system event {:?}", self.index, event);
                        MachineEvent::Exit(ExitReason::InternalError(text))
                    }
                };
                self.controller.post(event);
                self.wait_for_request();
            }
            SlowExit::Failed(what) => self.fail_with_state(&what),
        }
    }

    /// [`fail`](Self::fail) with the vCPU's registers and the code at RIP in the text.
    fn fail_with_state(&mut self, what: &str) {
        let text = describe_exit_failure(&self.vcpu, self.index, what, self.memory.as_ref());
        self.fail(text);
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

    /// An instruction KVM could not emulate: finished here when [`crate::emulate`] can do
    /// it exactly (the vCPU then resumes after it).
    fn finish_instruction(&mut self) -> bool {
        let Some(mut cpu) = KvmCpu::new(&self.vcpu, self.memory.as_ref()) else {
            return false;
        };
        let Some(kind) = crate::emulate::finish(&mut cpu) else {
            return false;
        };
        if !cpu.commit() {
            return false;
        }
        self.stats.count_finished(kind);
        true
    }

    /// Stops the machine with an internal error and waits to be told to exit.
    fn fail(&mut self, text: String) {
        eprintln!("{text}");
        self.controller
            .post(MachineEvent::Exit(ExitReason::InternalError(text)));
        self.wait_for_request();
    }
}
