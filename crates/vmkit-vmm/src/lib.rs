//! vmkit's runtime: vCPU threads, exit dispatch, the run-state machine and the main loop.
#![forbid(unsafe_code)]

pub mod builder;
pub mod builtin;
pub mod cli;
pub mod console;
pub mod control;
pub mod dump;
mod error;
pub mod runtime;
pub mod signals;
pub mod timer;
pub mod vcpu;

pub use control::{Controller, ExitReason, MachineEvent, RunState};
pub use error::{Error, Result};
pub use runtime::{ExitStats, MachineParts, RunOptions, Vmm};
pub use vcpu::{HaltWaiter, InterruptController, VcpuStats};
