//! vmkit's runtime: vCPU threads, exit dispatch, the run-state machine and the main loop,
//! as QEMU's `vl.c` main, `kvm_cpu_exec` and `main_loop` do; and the `vmkit` binary.
//!
//! It is a library first: a machine builder hands a [`MachineParts`] (vCPUs, buses, reset
//! functions, timers, console) to [`Vmm::start`], which returns a running-VM handle with
//! pause, resume, reset, stop, wait and exit statistics. [`builder::start_pc`] does all of
//! that for vmkit's `pc` machine from QEMU-style [`cli::Options`]; the `vmkit` binary is a
//! thin user of it.
//!
//! - One named thread per vCPU ([`vcpu`]): `run()`, decode, dispatch through a per-vCPU
//!   handle of the PIO/MMIO bus, back into `KVM_RUN`. No global lock and no allocation on
//!   that path; requests cost one relaxed atomic load per exit.
//! - The run-state machine ([`control`]): prelaunch, running, paused, shutdown,
//!   internal-error; pause/resume/reset park every vCPU with a kick; guest resets and
//!   debug-exit arrive as [`MachineEvent`]s.
//! - The main loop ([`runtime`]): event-manager epoll over those events, one timerfd for all
//!   device deadlines ([`timer`]), stdin to COM1 with flow control and Ctrl-A x ([`console`]),
//!   SIGINT/SIGTERM ([`signals`]).
//! - Failures KVM reports (internal error, failed entry, unknown exits) stop the machine with
//!   the registers and the disassembled instruction at RIP ([`dump`]), never a panic.
//!
//! # Example
//!
//! Run the built-in guest (what `vmkit` does with no arguments) with its output in a file:
//!
//! ```
//! use vmkit_vmm::builder::{builtin_options, start_pc};
//! use vmkit_vmm::cli::SerialOption;
//! use vmkit_vmm::{ExitReason, RunOptions};
//!
//! if let Err(e) = vmkit_kvm::KvmSystem::open() {
//!     eprintln!("skipping the example: {e}");
//!     return Ok(());
//! }
//! let out = std::env::temp_dir().join(format!("vmkit-doc-{}.txt", std::process::id()));
//! let (mut options, boot) = builtin_options();
//! options.serial = SerialOption::File(out.clone());
//! let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new())?;
//! // The guest greets, then resets the machine through the i8042; -no-reboot ends it.
//! assert_eq!(vmm.wait()?, ExitReason::ResetWithNoReboot);
//! assert_eq!(std::fs::read_to_string(&out).unwrap(), vmkit_vmm::builtin::BUILTIN_GREETING);
//! # std::fs::remove_file(out).ok();
//! # Ok::<(), vmkit_vmm::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod builder;
pub mod builtin;
pub mod cli;
pub mod console;
pub mod control;
pub mod debug;
pub mod dump;
pub mod emulate;
mod error;
pub mod help;
pub mod migration;
pub mod qmp;
pub mod runtime;
#[allow(unsafe_code)] // SIGSYS handler, syscall(2) for the self-test.
pub mod seccomp;
pub mod signals;
pub mod timer;
pub mod vcpu;

pub use control::{Controller, ControllerEvents, ExitReason, MachineEvent, RunState};
pub use error::{Error, Result};
pub use runtime::{
    ExitStats, MachineEventObserver, MachineParts, MainLoopAdditions, MainLoopExtension,
    MainLoopSubscriber, RunOptions, Vmm, VmmHandle,
};
pub use vcpu::{HaltWaiter, InterruptController, VcpuStats};
