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

#[derive(Debug)]
struct Shared {
    state: RunState,
    vcpus: usize,
    parked: usize,
    reset_generation: u64,
    exit: Option<ExitReason>,
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
    /// Work for parked vCPUs (state save/restore), by vCPU index.
    vcpu_jobs: Mutex<JobQueue>,
}

/// Work a parked vCPU thread runs on its own vCPU (QEMU's `run_on_cpu`).
pub type VcpuJob = Box<dyn FnOnce(&mut vmkit_kvm::Vcpu) + Send>;

/// Queued [`VcpuJob`]s by vCPU index.
#[derive(Default)]
struct JobQueue(Vec<(usize, VcpuJob)>);

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} vCPU job(s)", self.0.len())
    }
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
            }),
            changed: Condvar::new(),
            kickers: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
            events: Mutex::new(VecDeque::new()),
            event_fd: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
            vcpu_jobs: Mutex::new(JobQueue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_vcpu_count(&self, vcpus: usize) {
        self.lock().vcpus = vcpus;
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
            RunState::Prelaunch | RunState::Paused => {}
            RunState::Running => return Ok(()),
            other => {
                return Err(Error::InvalidState {
                    action: "resume",
                    state: other,
                })
            }
        }
        shared.state = RunState::Running;
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
                RunState::Paused | RunState::Prelaunch => return Ok(()),
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
    #[allow(dead_code)] // for vCPU loops that queue no jobs
    pub(crate) fn vcpu_check(&self, seen_generation: &mut u64) -> VcpuAction {
        self.vcpu_check_with(seen_generation, 0, None)
    }

    /// [`Controller::vcpu_check`] that also runs the jobs queued for vCPU `index` while
    /// it is parked.
    pub(crate) fn vcpu_check_with(
        &self,
        seen_generation: &mut u64,
        index: usize,
        mut vcpu: Option<&mut vmkit_kvm::Vcpu>,
    ) -> VcpuAction {
        let mut shared = self.lock();
        let mut parked = false;
        loop {
            match self.request.load(Ordering::SeqCst) {
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
                    if let (Some(vcpu), Some(job)) = (vcpu.as_deref_mut(), self.take_job(index)) {
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

    fn take_job(&self, index: usize) -> Option<VcpuJob> {
        let mut jobs = self.vcpu_jobs.lock().unwrap_or_else(|e| e.into_inner());
        let at = jobs.0.iter().position(|(i, _)| *i == index)?;
        Some(jobs.0.remove(at).1)
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
            let mut jobs = self.vcpu_jobs.lock().unwrap_or_else(|e| e.into_inner());
            for index in 0..count {
                let f = std::sync::Arc::clone(&f);
                let tx = tx.clone();
                jobs.0.push((
                    index,
                    Box::new(move |vcpu: &mut vmkit_kvm::Vcpu| {
                        let _ = tx.send((index, f(index, vcpu)));
                    }),
                ));
            }
        }
        drop(tx);
        {
            let _shared = self.lock();
            self.changed.notify_all();
        }
        let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
        for _ in 0..count {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((index, r)) => results[index] = Some(r),
                Err(_) => {
                    self.vcpu_jobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                        .clear();
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
