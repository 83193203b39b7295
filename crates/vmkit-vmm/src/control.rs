//! The run-state machine shared by the vCPU threads and whoever controls them.
//!
//! States follow QEMU's `RunState`: [`RunState::Prelaunch`] until the first start,
//! [`RunState::Running`], [`RunState::Paused`], and the final [`RunState::Shutdown`] or
//! [`RunState::InternalError`]. Requests go from the controller to the vCPUs through one
//! atomic word that the vCPU loop tests before every `KVM_RUN` (a relaxed load: nothing else
//! on the hot path), backed by a kick so a vCPU inside the guest comes out promptly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use vmkit_kvm::VcpuKicker;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};

/// Where the machine is in its life, as QEMU's `query-status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Built, vCPUs not started yet (QEMU's `prelaunch`, e.g. under `-S`).
    Prelaunch,
    /// vCPUs are running guest code.
    Running,
    /// vCPUs are stopped by request and can be resumed.
    Paused,
    /// vCPUs are stopped by the debugger (a breakpoint, a step, Ctrl-C); QEMU's `debug`.
    Debug,
    /// The machine has ended (power-off, quit, signal, or reset under `-no-reboot`).
    Shutdown,
    /// A vCPU hit an exit KVM could not handle; the machine is stopped for good.
    InternalError,
}

impl RunState {
    /// QEMU's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Prelaunch => "prelaunch",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Debug => "debug",
            RunState::Shutdown => "shutdown",
            RunState::InternalError => "internal-error",
        }
    }
}

/// Why the machine ended, and the process exit status QEMU would give for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote `value` to the debug-exit port: status `(value << 1) | 1`.
    DebugExit {
        /// The status derived from the written value.
        status: u32,
    },
    /// The guest powered off.
    PowerOff,
    /// The guest reset the machine and `-no-reboot` was given.
    ResetWithNoReboot,
    /// The host asked to stop (quit, Ctrl-A x, SIGINT/SIGTERM).
    HostRequest(String),
    /// A vCPU failed in a way the VMM cannot continue from; the text says why.
    InternalError(String),
}

impl ExitReason {
    /// The exit status of the `vmkit` process for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::DebugExit { status } => i32::try_from(*status & 0xff).unwrap_or(1),
            ExitReason::PowerOff | ExitReason::ResetWithNoReboot | ExitReason::HostRequest(_) => 0,
            ExitReason::InternalError(_) => 1,
        }
    }
}

/// Something a vCPU thread or a device reports to the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineEvent {
    /// The guest asked for a reset (i8042 0xFE, triple fault, KVM system event).
    Reset,
    /// The machine should end for this reason.
    Exit(ExitReason),
}

const REQUEST_NONE: u32 = 0;
const REQUEST_PAUSE: u32 = 1;
const REQUEST_STOP: u32 = 2;
/// Only the vCPU in `Shared::run_only` runs (a debugger's single step); the others park.
const REQUEST_PARTIAL: u32 = 3;

/// Work a parked vCPU runs on its own thread for the debugger (QEMU's `run_on_cpu`).
pub(crate) type VcpuJob = Box<dyn FnOnce(&mut vmkit_kvm::Vcpu) + Send>;

/// What the debugger asked the vCPUs to arm (see [`crate::debug`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GuestDebugConfig {
    /// A debugger is attached.
    pub attached: bool,
    /// DR0-DR3.
    pub registers: [Option<vmkit_gdb::DebugRegister>; vmkit_gdb::MAX_DEBUG_REGISTERS],
    /// The int3s the debugger has planted in guest memory.
    pub software: std::sync::Arc<[vmkit_gdb::SoftwareBreakpoint]>,
    /// The vCPU to single-step on the next resume.
    pub step: Option<usize>,
}

/// What a vCPU thread should do after checking its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuAction {
    /// Enter the guest.
    Run,
    /// Enter the guest, after putting the vCPU in its reset state (a reset happened while it
    /// was parked).
    ResetThenRun,
    /// Leave the thread.
    Exit,
}

struct Shared {
    state: RunState,
    vcpus: usize,
    parked: usize,
    reset_generation: u64,
    exit: Option<ExitReason>,
    run_only: Option<usize>,
    jobs: Vec<VecDeque<VcpuJob>>,
    debug_stops: VecDeque<vmkit_gdb::StopEvent>,
    debug: GuestDebugConfig,
}

impl std::fmt::Debug for VcpuJobs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} queued",
            self.0.iter().map(VecDeque::len).sum::<usize>()
        )
    }
}

struct VcpuJobs<'a>(&'a [VecDeque<VcpuJob>]);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .field("vcpus", &self.vcpus)
            .field("parked", &self.parked)
            .field("jobs", &VcpuJobs(&self.jobs))
            .field("debug", &self.debug)
            .finish_non_exhaustive()
    }
}

/// The pc machine's [`MachineEvents`](vmkit_isa::MachineEvents) for a [`Controller`]:
/// guest reset, debug-exit and power-off requests from devices become machine events.
pub struct ControllerEvents(pub std::sync::Arc<Controller>);

impl vmkit_isa::MachineEvents for ControllerEvents {
    fn reset_requested(&self) {
        self.0.post(MachineEvent::Reset);
    }

    fn exit_requested(&self, status: u32) {
        self.0
            .post(MachineEvent::Exit(ExitReason::DebugExit { status }));
    }

    fn poweroff_requested(&self) {
        self.0.post(MachineEvent::Exit(ExitReason::PowerOff));
    }
}

/// The run-state machine: requests to vCPUs, their acknowledgements, and events back.
#[derive(Debug)]
pub struct Controller {
    request: AtomicU32,
    shared: Mutex<Shared>,
    changed: Condvar,
    kickers: Mutex<Vec<VcpuKicker>>,
    wakers: Mutex<Vec<std::sync::Arc<crate::vcpu::HaltWaiter>>>,
    events: Mutex<VecDeque<MachineEvent>>,
    event_fd: EventFd,
    debug_generation: std::sync::atomic::AtomicU64,
}

impl Controller {
    /// A controller in [`RunState::Prelaunch`]; the runtime sets the vCPU count when it starts.
    pub fn new() -> Result<Self> {
        Ok(Self {
            // vCPUs start parked until `start`.
            request: AtomicU32::new(REQUEST_PAUSE),
            shared: Mutex::new(Shared {
                state: RunState::Prelaunch,
                vcpus: 0,
                parked: 0,
                reset_generation: 0,
                exit: None,
                run_only: None,
                jobs: Vec::new(),
                debug_stops: VecDeque::new(),
                debug: GuestDebugConfig::default(),
            }),
            changed: Condvar::new(),
            kickers: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
            events: Mutex::new(VecDeque::new()),
            event_fd: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
            debug_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_vcpu_count(&self, vcpus: usize) {
        let mut shared = self.lock();
        shared.vcpus = vcpus;
        shared.jobs = (0..vcpus).map(|_| VecDeque::new()).collect();
    }

    pub(crate) fn add_vcpu(
        &self,
        kicker: VcpuKicker,
        waiter: std::sync::Arc<crate::vcpu::HaltWaiter>,
    ) {
        self.kickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(kicker);
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waiter);
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// Why the machine ended, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().exit.clone()
    }

    fn kick_all(&self) {
        for kicker in self
            .kickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = kicker.kick();
        }
        for waiter in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = waiter.wake();
        }
    }

    /// Asks every vCPU to park and waits until all have (or have exited).
    fn park_all(&self) -> MutexGuard<'_, Shared> {
        self.request.store(REQUEST_PAUSE, Ordering::SeqCst);
        self.kick_all();
        let mut shared = self.lock();
        while shared.parked < shared.vcpus {
            let (guard, _) = self
                .changed
                .wait_timeout(shared, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            shared = guard;
            if shared.parked < shared.vcpus {
                // A kick can race with a vCPU that was about to park on its own; repeat it.
                drop(shared);
                self.kick_all();
                shared = self.lock();
            }
        }
        shared
    }

    /// Starts (from prelaunch) or resumes (from paused) every vCPU.
    pub fn resume(&self) -> Result<()> {
        let mut shared = self.lock();
        match shared.state {
            RunState::Prelaunch | RunState::Paused | RunState::Debug => {}
            RunState::Running => return Ok(()),
            other => {
                return Err(Error::InvalidState {
                    action: "resume",
                    state: other,
                })
            }
        }
        shared.state = RunState::Running;
        // A vCPU a debugger stopped at a breakpoint must get past it, not re-hit it.
        shared.debug.step = None;
        self.debug_generation.fetch_add(1, Ordering::SeqCst);
        self.request.store(REQUEST_NONE, Ordering::SeqCst);
        self.changed.notify_all();
        Ok(())
    }

    /// Pauses every vCPU and returns once none runs guest code.
    pub fn pause(&self) -> Result<()> {
        {
            let shared = self.lock();
            match shared.state {
                RunState::Running => {}
                RunState::Paused | RunState::Prelaunch | RunState::Debug => return Ok(()),
                other => {
                    return Err(Error::InvalidState {
                        action: "pause",
                        state: other,
                    })
                }
            }
        }
        let mut shared = self.park_all();
        shared.state = RunState::Paused;
        Ok(())
    }

    /// Parks every vCPU, runs `reset_devices`, and lets the vCPUs continue from their reset
    /// state (each vCPU resets its own registers when it unparks). A paused machine stays
    /// paused.
    pub fn reset(&self, reset_devices: impl FnOnce()) -> Result<()> {
        let previous = self.state();
        if matches!(previous, RunState::Shutdown | RunState::InternalError) {
            return Err(Error::InvalidState {
                action: "reset",
                state: previous,
            });
        }
        let mut shared = self.park_all();
        reset_devices();
        shared.reset_generation += 1;
        if previous == RunState::Running {
            self.request.store(REQUEST_NONE, Ordering::SeqCst);
        }
        self.changed.notify_all();
        Ok(())
    }

    /// Ends the machine: every vCPU thread leaves its loop. The first reason given wins.
    pub fn shutdown(&self, reason: ExitReason) {
        let mut shared = self.lock();
        if shared.exit.is_none() {
            shared.state = match reason {
                ExitReason::InternalError(_) => RunState::InternalError,
                _ => RunState::Shutdown,
            };
            shared.exit = Some(reason);
        }
        self.request.store(REQUEST_STOP, Ordering::SeqCst);
        self.changed.notify_all();
        drop(shared);
        self.kick_all();
    }

    /// Queues an event for the main loop and wakes it. Called on vCPU threads; never blocks
    /// for long.
    pub fn post(&self, event: MachineEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(event);
        let _ = self.event_fd.write(1);
    }

    /// Takes the queued events (main loop side).
    pub fn take_events(&self) -> Vec<MachineEvent> {
        let _ = self.event_fd.read();
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// The eventfd that becomes readable when events are queued.
    pub fn event_fd(&self) -> &EventFd {
        &self.event_fd
    }

    /// vCPU side: whether anything was requested (one relaxed load).
    #[inline]
    pub(crate) fn has_request(&self) -> bool {
        self.request.load(Ordering::Relaxed) != REQUEST_NONE
    }

    /// vCPU side: honours a request, parking as long as asked. `seen_generation` is the reset
    /// generation this vCPU last applied.
    pub(crate) fn vcpu_check(
        &self,
        index: usize,
        seen_generation: &mut u64,
        vcpu: &mut vmkit_kvm::Vcpu,
    ) -> VcpuAction {
        let mut shared = self.lock();
        let mut parked = false;
        loop {
            let mut request = self.request.load(Ordering::SeqCst);
            if request == REQUEST_PARTIAL && shared.run_only != Some(index) {
                request = REQUEST_PAUSE;
            }
            match request {
                REQUEST_STOP => {
                    if parked {
                        shared.parked -= 1;
                    }
                    shared.vcpus -= 1;
                    self.changed.notify_all();
                    return VcpuAction::Exit;
                }
                REQUEST_PAUSE => {
                    if !parked {
                        parked = true;
                        shared.parked += 1;
                        self.changed.notify_all();
                    }
                    // A parked vCPU does the debugger's work on its own thread.
                    let job = shared.jobs.get_mut(index).and_then(VecDeque::pop_front);
                    if let Some(job) = job {
                        drop(shared);
                        job(vcpu);
                        shared = self.lock();
                        continue;
                    }
                    shared = self.changed.wait(shared).unwrap_or_else(|e| e.into_inner());
                }
                _ => {
                    if parked {
                        shared.parked -= 1;
                        self.changed.notify_all();
                    }
                    if *seen_generation != shared.reset_generation {
                        *seen_generation = shared.reset_generation;
                        return VcpuAction::ResetThenRun;
                    }
                    return VcpuAction::Run;
                }
            }
        }
    }

    /// Runs `f` on every vCPU's own thread while the machine is stopped (prelaunch or
    /// paused) and returns the results in vCPU order (QEMU's `run_on_cpu`). Fails if the
    /// machine is running or has ended, or a vCPU thread is gone.
    pub fn run_on_vcpus<R: Send + 'static>(
        &self,
        f: impl Fn(usize, &mut vmkit_kvm::Vcpu) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>> {
        let count = {
            let shared = self.lock();
            if !matches!(shared.state, RunState::Prelaunch | RunState::Paused) {
                return Err(Error::InvalidState {
                    action: "run on the vCPUs",
                    state: shared.state,
                });
            }
            shared.vcpus
        };
        let f = std::sync::Arc::new(f);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut shared = self.lock();
            for index in 0..count {
                let f = std::sync::Arc::clone(&f);
                let tx = tx.clone();
                if let Some(queue) = shared.jobs.get_mut(index) {
                    queue.push_back(Box::new(move |vcpu: &mut vmkit_kvm::Vcpu| {
                        let _ = tx.send((index, f(index, vcpu)));
                    }));
                }
            }
            self.changed.notify_all();
        }
        drop(tx);
        let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
        for _ in 0..count {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((index, r)) => results[index] = Some(r),
                Err(_) => {
                    for queue in self.lock().jobs.iter_mut() {
                        queue.clear();
                    }
                    return Err(Error::Machine(
                        "a vCPU thread did not run its state job within 10 s".into(),
                    ));
                }
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Blocks until the machine has ended, and says why.
    pub fn wait_until_ended(&self) -> ExitReason {
        let mut shared = self.lock();
        loop {
            if let Some(reason) = shared.exit.clone() {
                return reason;
            }
            shared = self.changed.wait(shared).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until every vCPU thread has left its loop.
    pub fn wait_vcpus_exited(&self) {
        let mut shared = self.lock();
        while shared.vcpus > 0 {
            shared = self.changed.wait(shared).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The debugger's side of the run-state machine (used by [`crate::debug`]).
impl Controller {
    /// Runs `job` on vCPU `index`'s thread once it is parked, and returns its result; `None`
    /// if the vCPU did not run it within `limit` (its thread has ended, or it never parks).
    pub(crate) fn run_on_vcpu<R: Send + 'static>(
        &self,
        index: usize,
        limit: Duration,
        job: impl FnOnce(&mut vmkit_kvm::Vcpu) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut shared = self.lock();
            if shared.exit.is_some() {
                return None;
            }
            let queue = shared.jobs.get_mut(index)?;
            queue.push_back(Box::new(move |vcpu| {
                let _ = tx.send(job(vcpu));
            }));
            self.changed.notify_all();
        }
        rx.recv_timeout(limit).ok()
    }

    /// Stops every vCPU for the debugger (state `debug`), and marks a debugger attached.
    /// A machine that is already stopped stays in its state (`prelaunch` under `-S`).
    pub(crate) fn debug_pause(&self) -> Result<()> {
        {
            let mut shared = self.lock();
            shared.debug.attached = true;
            match shared.state {
                RunState::Running => {}
                RunState::Paused | RunState::Prelaunch | RunState::Debug => return Ok(()),
                other => {
                    return Err(Error::InvalidState {
                        action: "stop for the debugger",
                        state: other,
                    })
                }
            }
        }
        let mut shared = self.park_all();
        shared.state = RunState::Debug;
        Ok(())
    }

    /// Resumes the guest for the debugger: every vCPU, or only `step` for one instruction.
    pub(crate) fn debug_resume(&self, step: Option<usize>) -> Result<()> {
        let mut shared = self.lock();
        match shared.state {
            RunState::Prelaunch | RunState::Paused | RunState::Debug => {}
            RunState::Running => return Ok(()),
            other => {
                return Err(Error::InvalidState {
                    action: "resume for the debugger",
                    state: other,
                })
            }
        }
        shared.debug.step = step;
        shared.debug_stops.clear();
        shared.run_only = step;
        shared.state = RunState::Running;
        self.debug_generation.fetch_add(1, Ordering::SeqCst);
        self.request.store(
            if step.is_some() {
                REQUEST_PARTIAL
            } else {
                REQUEST_NONE
            },
            Ordering::SeqCst,
        );
        self.changed.notify_all();
        Ok(())
    }

    /// Sets the debug registers every vCPU arms when it next enters the guest.
    pub(crate) fn set_debug_registers(&self, registers: &vmkit_gdb::DebugRegisters) {
        self.lock().debug.registers = *registers;
        self.debug_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Where the debugger has planted int3s (the vCPUs learn it when they next resume).
    pub(crate) fn set_software_breakpoints(&self, planted: &[vmkit_gdb::SoftwareBreakpoint]) {
        self.lock().debug.software = planted.into();
        self.debug_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The debugger has gone: nothing stays armed; a guest it held runs on.
    pub(crate) fn debug_detach(&self) {
        let held = {
            let mut shared = self.lock();
            shared.debug = GuestDebugConfig::default();
            shared.debug_stops.clear();
            self.debug_generation.fetch_add(1, Ordering::SeqCst);
            matches!(shared.state, RunState::Debug | RunState::Prelaunch)
        };
        if held {
            let _ = self.debug_resume(None);
        }
    }

    /// vCPU side: the debug configuration, if it changed since `seen`.
    pub(crate) fn debug_config(&self, seen: &mut u64) -> Option<GuestDebugConfig> {
        let now = self.debug_generation.load(Ordering::SeqCst);
        if now == *seen {
            return None;
        }
        *seen = now;
        Some(self.lock().debug.clone())
    }

    /// vCPU side: a debug exit the debugger wants to hear about. Stops every vCPU (without
    /// waiting: the caller parks on its next request check). False if no debugger is
    /// attached.
    pub(crate) fn debug_stop(&self, event: vmkit_gdb::StopEvent) -> bool {
        {
            let mut shared = self.lock();
            if !shared.debug.attached || shared.exit.is_some() {
                return false;
            }
            shared.debug_stops.push_back(event);
            shared.state = RunState::Debug;
            self.request.store(REQUEST_PAUSE, Ordering::SeqCst);
            self.changed.notify_all();
        }
        self.kick_all();
        true
    }

    /// Debugger side: waits up to `timeout` for a debug stop with every vCPU parked, or for
    /// the machine's end.
    pub(crate) fn wait_debug_stop(&self, timeout: Duration) -> Option<vmkit_gdb::StopEvent> {
        let deadline = std::time::Instant::now() + timeout;
        let mut shared = self.lock();
        loop {
            if let Some(reason) = &shared.exit {
                let code = u8::try_from(reason.exit_code() & 0xff).unwrap_or(1);
                return Some(vmkit_gdb::StopEvent::Exited(code));
            }
            if !shared.debug_stops.is_empty() && shared.parked >= shared.vcpus {
                return shared.debug_stops.pop_front();
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let (guard, _) = self
                .changed
                .wait_timeout(shared, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
            shared = guard;
        }
    }
}
