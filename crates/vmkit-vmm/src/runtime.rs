//! The running VM: vCPU threads plus the main loop (event-manager epoll over the controller's
//! events, the device timer, console input and its flow control).

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmkit_bus::{MmioBus, PioBus};
use vmkit_kvm::Vcpu;
use vmm_sys_util::eventfd::EventFd;

use crate::console::{ConsoleAction, SerialInput, StdinConsole};
use crate::control::{Controller, ExitReason, MachineEvent, RunState};
use crate::dump::GuestMemoryReader;
use crate::error::{Error, Result};
use crate::signals;
use crate::timer::HostTimer;
use crate::vcpu::{HaltWaiter, InterruptController, ResetCpuFn, VcpuRunner, VcpuStats};

/// A function that wakes a vCPU (kick plus halt wake-up).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Hands the boot vCPU's [`Waker`] to the machine's interrupt controller.
pub type SetWaker = Box<dyn FnOnce(Waker) + Send>;

/// A built machine, ready to run: what [`Vmm::start`] needs from a machine builder (such as
/// the `pc` machine) or from a user assembling their own.
pub struct MachineParts {
    /// The vCPUs, boot processor first, in their initial state.
    pub vcpus: Vec<Vcpu>,
    /// The port bus every vCPU dispatches to.
    pub pio: PioBus,
    /// The MMIO bus every vCPU dispatches to.
    pub mmio: MmioBus,
    /// The userspace interrupt controller feeding the boot vCPU, if the machine uses one.
    pub interrupt_controller: Option<Arc<dyn InterruptController>>,
    /// Sets a vCPU's reset state (on its own thread) after a machine reset.
    pub reset_cpu: Arc<ResetCpuFn>,
    /// Resets the devices (all vCPUs are parked while it runs).
    pub reset_devices: Box<dyn FnMut() + Send>,
    /// Services device timers whose deadline passed; returns the next deadline.
    pub service_timers: Box<dyn FnMut() -> Option<u64> + Send>,
    /// The host timer devices arm.
    pub timer: Arc<HostTimer>,
    /// Console input: the UART that takes stdin, and the eventfd it signals when it has room.
    pub console_input: Option<(Box<dyn SerialInput>, EventFd)>,
    /// Guest memory, for diagnostics.
    pub memory: Arc<dyn GuestMemoryReader>,
    /// Called once with a function that wakes the boot vCPU (kick + halt wake-up); the machine
    /// hands it to its interrupt controller's output.
    pub set_boot_cpu_waker: Option<SetWaker>,
    /// Whatever must live as long as the VM runs (the machine's memory, devices...).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send>>,
}

/// How the VM runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// A guest reset ends the VM instead (`-no-reboot`).
    pub no_reboot: bool,
    /// Stay in prelaunch until resumed (`-S`).
    pub start_paused: bool,
    /// Feed stdin to the console UART (and, on a terminal, raw mode and Ctrl-A escapes).
    pub stdin_console: bool,
    /// End on SIGINT/SIGTERM (installs the handler).
    pub handle_signals: bool,
}

/// Additions to the main loop.
#[derive(Default)]
pub struct MainLoopAdditions {
    /// Subscribers built once the VM handle exists.
    pub extensions: Vec<MainLoopExtension>,
    /// Observers of guest-caused machine events.
    pub observers: Vec<MachineEventObserver>,
}

/// A subscriber for the main loop's event manager (e.g. a control socket).
pub type MainLoopSubscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Builds main-loop subscribers once the VM's handle exists (so they can control it).
pub type MainLoopExtension = Box<dyn FnOnce(&VmmHandle) -> Vec<MainLoopSubscriber> + Send>;

/// Observes what the guest does to the machine (reset, exit), on the main-loop thread,
/// before the runtime acts on it. Must not block.
pub type MachineEventObserver = Box<dyn FnMut(&MachineEvent) + Send>;

/// A cloneable handle on a running VM: its run-state machine and its counters.
#[derive(Clone)]
pub struct VmmHandle {
    controller: Arc<Controller>,
    stats: Vec<Arc<VcpuStats>>,
    pio: PioBus,
    mmio: MmioBus,
    thread_ids: Arc<Mutex<Vec<i32>>>,
    reset_devices: ResetDevices,
    memory: Arc<dyn GuestMemoryReader>,
}

impl std::fmt::Debug for VmmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmHandle")
            .field("state", &self.controller.state())
            .finish_non_exhaustive()
    }
}

impl VmmHandle {
    /// The run-state machine.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Exit counters so far.
    pub fn exit_stats(&self) -> ExitStats {
        ExitStats {
            per_vcpu: self.stats.iter().map(|s| s.snapshot()).collect(),
            pio: self.pio.stats(),
            mmio: self.mmio.stats(),
        }
    }

    /// Resets the machine from the host side (devices, then every vCPU), as QMP's
    /// `system_reset`; a paused machine stays paused.
    pub fn system_reset(&self) -> Result<()> {
        let reset_devices = Arc::clone(&self.reset_devices);
        self.controller.reset(|| {
            let mut reset = reset_devices.lock().unwrap_or_else(|e| e.into_inner());
            (*reset)();
        })
    }

    /// Reads guest-physical memory at `gpa` into `buf` (RAM and ROM as the guest sees
    /// them); false if any byte is not backed by memory.
    pub fn read_guest_memory(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.memory.read_guest(gpa, buf)
    }

    /// Writes guest-physical memory at `gpa` (for a debugger); false if any byte is not RAM
    /// or the machine's memory takes no writes.
    pub fn write_guest_memory(&self, gpa: u64, data: &[u8]) -> bool {
        self.memory.write_guest(gpa, data)
    }

    /// The debugger's view of this VM, for [`vmkit_gdb::GdbServer`].
    pub fn debug_target(&self) -> crate::debug::VmDebugTarget {
        crate::debug::VmDebugTarget::new(self.clone())
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.stats.len()
    }

    /// The host thread id of each vCPU thread (0 until it has started).
    pub fn vcpu_thread_ids(&self) -> Vec<i32> {
        self.thread_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Exit counts of the whole VM.
#[derive(Debug, Clone)]
pub struct ExitStats {
    /// Per vCPU: (exit kind name, count) for every kind seen.
    pub per_vcpu: Vec<Vec<(&'static str, u64)>>,
    /// Port bus counters, per device range.
    pub pio: vmkit_bus::BusStats,
    /// MMIO bus counters, per device range.
    pub mmio: vmkit_bus::BusStats,
}

/// A running VM: start, pause, resume, reset, stop, wait for its end.
pub struct Vmm {
    controller: Arc<Controller>,
    vcpu_threads: Vec<JoinHandle<()>>,
    main_thread: Option<JoinHandle<Result<()>>>,
    handle: VmmHandle,
    // Dropped after every thread has finished.
    keep_alive: Vec<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("state", &self.controller.state())
            .field("vcpus", &self.vcpu_threads.len())
            .finish_non_exhaustive()
    }
}

impl Vmm {
    /// Starts the vCPU threads and the main loop. The vCPUs run at once unless
    /// `options.start_paused`.
    pub fn start(
        controller: Arc<Controller>,
        parts: MachineParts,
        options: RunOptions,
    ) -> Result<Self> {
        Self::start_with(controller, parts, options, MainLoopAdditions::default())
    }

    /// [`Vmm::start`] with extra main-loop subscribers and observers (e.g. a control socket).
    pub fn start_with(
        controller: Arc<Controller>,
        parts: MachineParts,
        options: RunOptions,
        additions: MainLoopAdditions,
    ) -> Result<Self> {
        let MachineParts {
            vcpus,
            pio,
            mmio,
            interrupt_controller,
            reset_cpu,
            reset_devices,
            service_timers,
            timer,
            console_input,
            memory,
            set_boot_cpu_waker,
            keep_alive,
        } = parts;
        if vcpus.is_empty() {
            return Err(Error::Machine("a machine needs at least one vCPU".into()));
        }
        if options.handle_signals {
            signals::install_termination_handler().map_err(|source| Error::Host {
                what: "installing the SIGINT/SIGTERM/SIGHUP handlers",
                source,
            })?;
        }
        if controller.state() != RunState::Prelaunch {
            return Err(Error::InvalidState {
                action: "start",
                state: controller.state(),
            });
        }
        controller.set_vcpu_count(vcpus.len());
        let mut runners = Vec::with_capacity(vcpus.len());
        let mut stats = Vec::with_capacity(vcpus.len());
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let halt = Arc::new(HaltWaiter::default());
            let kicker = vcpu.kicker()?;
            controller.add_vcpu(kicker.clone(), Arc::clone(&halt));
            let vcpu_stats = Arc::new(VcpuStats::default());
            stats.push(Arc::clone(&vcpu_stats));
            runners.push((
                VcpuRunner {
                    vcpu,
                    index,
                    pio: pio.handle(),
                    mmio: mmio.handle(),
                    pic: if index == 0 {
                        interrupt_controller.clone()
                    } else {
                        None
                    },
                    controller: Arc::clone(&controller),
                    stats: vcpu_stats,
                    halt: Arc::clone(&halt),
                    reset_cpu: Arc::clone(&reset_cpu),
                    memory: Arc::clone(&memory),
                },
                kicker,
                halt,
            ));
        }
        if let (Some(set_waker), Some((_, kicker, halt))) = (set_boot_cpu_waker, runners.first()) {
            set_waker(boot_cpu_waker(kicker.clone(), Arc::clone(halt)));
        }

        let thread_ids = Arc::new(Mutex::new(vec![0; runners.len()]));
        let reset_devices: ResetDevices = Arc::new(Mutex::new(reset_devices));
        let handle = VmmHandle {
            reset_devices: Arc::clone(&reset_devices),
            controller: Arc::clone(&controller),
            stats: stats.clone(),
            pio: pio.clone(),
            mmio: mmio.clone(),
            thread_ids: Arc::clone(&thread_ids),
            memory: Arc::clone(&memory),
        };
        let vcpu_threads = spawn_vcpu_threads(
            runners.into_iter().map(|(runner, _, _)| runner).collect(),
            &thread_ids,
        )?;

        let extra_subscribers: Vec<MainLoopSubscriber> = additions
            .extensions
            .into_iter()
            .flat_map(|extension| extension(&handle))
            .collect();
        let main = MainLoop {
            observers: Arc::new(Mutex::new(additions.observers)),
            extra_subscribers,
            controller: Arc::clone(&controller),
            timer,
            service_timers,
            handle: handle.clone(),
            console: console_input.map(|(input, room)| {
                (
                    options.stdin_console.then(|| StdinConsole::new(input)),
                    room,
                )
            }),
            no_reboot: options.no_reboot,
            stdin_registered: false,
        };
        let main_thread = crate::seccomp::spawn(
            crate::seccomp::ThreadKind::MainLoop,
            "vmkit-main",
            move || main.run(),
        )
        .map_err(|source| Error::Thread {
            name: "vmkit-main".into(),
            source,
        })?;

        let vmm = Self {
            controller,
            vcpu_threads,
            main_thread: Some(main_thread),
            handle,
            keep_alive,
        };
        if !options.start_paused {
            vmm.controller.resume()?;
        }
        Ok(vmm)
    }

    /// The run-state machine, for pause/resume/reset from other threads.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The current run state.
    pub fn state(&self) -> RunState {
        self.controller.state()
    }

    /// Exit counters so far.
    pub fn exit_stats(&self) -> ExitStats {
        self.handle.exit_stats()
    }

    /// A cloneable handle for other threads.
    pub fn handle(&self) -> VmmHandle {
        self.handle.clone()
    }

    /// Ends the VM from the host side.
    pub fn stop(&self, why: &str) {
        self.controller
            .shutdown(ExitReason::HostRequest(why.to_string()));
    }

    /// Waits until the VM ends and every thread has finished; returns why it ended.
    pub fn wait(mut self) -> Result<ExitReason> {
        let main_result = match self.main_thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Machine("the main loop thread panicked".into()))),
            None => Ok(()),
        };
        for thread in self.vcpu_threads.drain(..) {
            let _ = thread.join();
        }
        main_result?;
        self.keep_alive.clear();
        Ok(self
            .controller
            .exit_reason()
            .unwrap_or(ExitReason::HostRequest("stopped".into())))
    }
}

const DATA_CONTROL: u32 = 1;
const DATA_TIMER: u32 = 2;
const DATA_STDIN: u32 = 3;
const DATA_ROOM: u32 = 4;

type ResetDevices = Arc<Mutex<Box<dyn FnMut() + Send>>>;

struct MainLoop {
    /// Shared with the loop in [`MainLoop::run`], which reports termination by signal.
    observers: Arc<Mutex<Vec<MachineEventObserver>>>,
    extra_subscribers: Vec<MainLoopSubscriber>,
    controller: Arc<Controller>,
    timer: Arc<HostTimer>,
    service_timers: Box<dyn FnMut() -> Option<u64> + Send>,
    handle: VmmHandle,
    console: Option<(Option<StdinConsole>, EventFd)>,
    no_reboot: bool,
    stdin_registered: bool,
}

impl MainLoop {
    fn run(mut self) -> Result<()> {
        let controller = Arc::clone(&self.controller);
        let extra = std::mem::take(&mut self.extra_subscribers);
        let observers = Arc::clone(&self.observers);
        let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().map_err(|e| Error::Host {
                what: "creating the main loop's epoll",
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        manager.add_subscriber(Arc::new(Mutex::new(self)));
        for subscriber in extra {
            manager.add_subscriber(subscriber);
        }
        loop {
            // Signals interrupt the wait; the timeout bounds how late one is noticed.
            let _ = manager.run_with_timeout(100);
            if let Some(signal) = signals::termination_requested() {
                if controller.exit_reason().is_none() {
                    let reason = ExitReason::HostRequest(format!("terminated by signal {signal}"));
                    let event = MachineEvent::Exit(reason.clone());
                    for observer in observers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter_mut()
                    {
                        observer(&event);
                    }
                    controller.shutdown(reason);
                }
            }
            if matches!(
                controller.state(),
                RunState::Shutdown | RunState::InternalError
            ) {
                controller.wait_vcpus_exited();
                // Let subscribers deliver what the ending queued (QMP's SHUTDOWN event for
                // a guest power-off or reset) before the loop and its sockets go away.
                for _ in 0..3 {
                    if manager.run_with_timeout(10).unwrap_or(0) == 0 {
                        break;
                    }
                }
                return Ok(());
            }
        }
    }

    fn handle_events(&mut self) {
        for event in self.controller.take_events() {
            for observer in self
                .observers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
            {
                observer(&event);
            }
            match event {
                MachineEvent::Reset if self.no_reboot => {
                    self.controller.shutdown(ExitReason::ResetWithNoReboot)
                }
                MachineEvent::Reset => {
                    let _ = self.handle.system_reset();
                    // Device deadlines restart after a reset.
                    if let Some(next) = (self.service_timers)() {
                        self.timer.arm_at(next);
                    }
                }
                MachineEvent::Exit(reason) => self.controller.shutdown(reason),
            }
        }
    }

    fn console_mut(&mut self) -> Option<&mut StdinConsole> {
        self.console
            .as_mut()
            .and_then(|(console, _)| console.as_mut())
    }

    fn update_stdin_interest(&mut self, ops: &mut EventOps) {
        let wants = self.console_mut().is_some_and(|c| c.wants_input());
        let stdin = std::io::stdin();
        if wants && !self.stdin_registered {
            if ops
                .add(Events::with_data(&stdin, DATA_STDIN, EventSet::IN))
                .is_ok()
            {
                self.stdin_registered = true;
            }
        } else if !wants && self.stdin_registered {
            let _ = ops.remove(Events::with_data(&stdin, DATA_STDIN, EventSet::IN));
            self.stdin_registered = false;
        }
    }
}

struct RawFdRef(i32);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

impl MutEventSubscriber for MainLoop {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(
            self.controller.event_fd(),
            DATA_CONTROL,
            EventSet::IN,
        ));
        let _ = ops.add(Events::with_data(
            &RawFdRef(self.timer.raw_fd()),
            DATA_TIMER,
            EventSet::IN,
        ));
        if let Some((_, room)) = &self.console {
            let _ = ops.add(Events::with_data(room, DATA_ROOM, EventSet::IN));
        }
        self.update_stdin_interest(ops);
        // Devices may have deadlines from before the loop existed.
        if let Some(next) = (self.service_timers)() {
            self.timer.arm_at(next);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            DATA_CONTROL => self.handle_events(),
            DATA_TIMER => {
                self.timer.expired();
                if let Some(next) = (self.service_timers)() {
                    self.timer.arm_at(next);
                }
            }
            DATA_STDIN => {
                if events.event_set().contains(EventSet::HANG_UP)
                    && !events.event_set().contains(EventSet::IN)
                {
                    let _ = ops.remove(events);
                    self.stdin_registered = false;
                    return;
                }
                let action = self
                    .console_mut()
                    .map_or(ConsoleAction::None, |c| c.on_stdin_readable());
                if action == ConsoleAction::Quit {
                    self.controller
                        .shutdown(ExitReason::HostRequest("Ctrl-A x".into()));
                }
                self.update_stdin_interest(ops);
            }
            DATA_ROOM => {
                if let Some((_, room)) = &self.console {
                    let _ = room.read();
                }
                if let Some(console) = self.console_mut() {
                    console.flush();
                }
                self.update_stdin_interest(ops);
            }
            _ => {}
        }
    }
}

/// Starts one thread per vCPU (each under the vCPU seccomp filter), recording its thread id
/// in `thread_ids` for kicks and `query-cpus-fast`.
fn spawn_vcpu_threads(
    runners: Vec<VcpuRunner>,
    thread_ids: &Arc<Mutex<Vec<i32>>>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut vcpu_threads = Vec::with_capacity(runners.len());
    for runner in runners {
        let name = format!("vmkit-vcpu{}", runner.index);
        let ids = Arc::clone(thread_ids);
        let thread = crate::seccomp::spawn(crate::seccomp::ThreadKind::Vcpu, &name, move || {
            let tid = vmkit_kvm::kick::current_thread_id();
            if let Some(slot) = ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(runner.index)
            {
                *slot = tid;
            }
            runner.run()
        })
        .map_err(|source| Error::Thread { name, source })?;
        vcpu_threads.push(thread);
    }
    Ok(vcpu_threads)
}

/// What the userspace PIC calls when INTR rises: a vCPU asleep in `hlt` only needs waking;
/// one in the guest needs a kick.
fn boot_cpu_waker(kicker: vmkit_kvm::VcpuKicker, halt: Arc<HaltWaiter>) -> Waker {
    Arc::new(move || {
        if !halt.wake() {
            let _ = kicker.kick();
        }
    })
}
