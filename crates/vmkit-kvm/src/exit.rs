//! The exit enum: why `KVM_RUN` returned, decoded without allocation.

use kvm_bindings::{
    KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_SIMUL_EX,
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, KVM_SYSTEM_EVENT_WAKEUP,
};

/// Why a vCPU left `KVM_RUN`.
///
/// The data slices of [`VcpuExit::IoIn`] and [`VcpuExit::MmioRead`] point into the vCPU's
/// `kvm_run` page: fill them before the next [`crate::Vcpu::run`], which is when KVM copies
/// them into the guest's register.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// `out`/`outs`: `count` transfers of `size` bytes to `port`; `data` holds all of them.
    IoOut {
        /// The port.
        port: u16,
        /// Bytes per transfer: 1, 2 or 4.
        size: u8,
        /// Transfers (more than one for `rep outs`).
        count: u32,
        /// `size * count` bytes, transfer after transfer.
        data: &'a [u8],
    },
    /// `in`/`ins`: fill `data` (`count` transfers of `size` bytes from `port`).
    IoIn {
        /// The port.
        port: u16,
        /// Bytes per transfer: 1, 2 or 4.
        size: u8,
        /// Transfers (more than one for `rep ins`).
        count: u32,
        /// `size * count` bytes to fill.
        data: &'a mut [u8],
    },
    /// A guest read of `data.len()` bytes at a guest physical address with no memory slot.
    MmioRead {
        /// Guest physical address.
        addr: u64,
        /// The bytes to fill.
        data: &'a mut [u8],
    },
    /// A guest write of `data` at a guest physical address with no (or a read-only) slot.
    MmioWrite {
        /// Guest physical address.
        addr: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// The guest executed `hlt` (only without the in-kernel irqchip, which halts in-kernel).
    Hlt,
    /// A triple fault or an equivalent: the guest must be reset.
    Shutdown,
    /// The guest can take an interrupt now (asked for with
    /// [`crate::Vcpu::set_request_interrupt_window`]).
    IrqWindowOpen,
    /// KVM could not continue (e.g. an instruction its emulator does not know).
    InternalError(InternalError),
    /// VM entry failed; `hardware_reason` is VMX/SVM specific.
    FailEntry {
        /// The hardware's entry-failure reason.
        hardware_reason: u64,
        /// The host CPU the entry was attempted on.
        cpu: u32,
    },
    /// A system-level event (PSCI-style shutdown/reset/crash on some hosts).
    SystemEvent(SystemEvent),
    /// A debug exception (single step, breakpoint) with guest debugging enabled.
    Debug {
        /// The exception vector (1 for #DB, 3 for #BP).
        exception: u32,
        /// The guest RIP.
        pc: u64,
        /// DR6 at the exit.
        dr6: u64,
        /// DR7 at the exit.
        dr7: u64,
    },
    /// `KVM_RUN` was interrupted by a signal or by `immediate_exit`: a [`crate::VcpuKicker`]
    /// asked this vCPU to come out. Check what was requested, then run again.
    Interrupted,
    /// A guest access KVM could not resolve to host memory.
    MemoryFault {
        /// KVM_MEMORY_EXIT_FLAG_* bits.
        flags: u64,
        /// Guest physical address.
        gpa: u64,
        /// Size of the access.
        size: u64,
    },
    /// KVM_EXIT_UNKNOWN with the hardware's exit reason.
    Unknown {
        /// Hardware exit reason.
        hardware_exit_reason: u64,
    },
    /// Any other exit reason, by its KVM_EXIT_* number.
    Other(u32),
}

/// A compact, copyable name of an exit's kind, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitKind {
    /// [`VcpuExit::IoOut`]
    IoOut,
    /// [`VcpuExit::IoIn`]
    IoIn,
    /// [`VcpuExit::MmioRead`]
    MmioRead,
    /// [`VcpuExit::MmioWrite`]
    MmioWrite,
    /// [`VcpuExit::Hlt`]
    Hlt,
    /// [`VcpuExit::Shutdown`]
    Shutdown,
    /// [`VcpuExit::IrqWindowOpen`]
    IrqWindowOpen,
    /// [`VcpuExit::InternalError`]
    InternalError,
    /// [`VcpuExit::FailEntry`]
    FailEntry,
    /// [`VcpuExit::SystemEvent`]
    SystemEvent,
    /// [`VcpuExit::Debug`]
    Debug,
    /// [`VcpuExit::Interrupted`]
    Interrupted,
    /// [`VcpuExit::MemoryFault`]
    MemoryFault,
    /// [`VcpuExit::Unknown`]
    Unknown,
    /// [`VcpuExit::Other`]
    Other,
}

impl ExitKind {
    /// Every kind, in declaration order (for tables of counters).
    pub const ALL: [ExitKind; 15] = [
        ExitKind::IoOut,
        ExitKind::IoIn,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::IrqWindowOpen,
        ExitKind::InternalError,
        ExitKind::FailEntry,
        ExitKind::SystemEvent,
        ExitKind::Debug,
        ExitKind::Interrupted,
        ExitKind::MemoryFault,
        ExitKind::Unknown,
        ExitKind::Other,
    ];

    /// A stable lower-case name, e.g. `"io-out"`.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoOut => "io-out",
            ExitKind::IoIn => "io-in",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::IrqWindowOpen => "irq-window-open",
            ExitKind::InternalError => "internal-error",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::SystemEvent => "system-event",
            ExitKind::Debug => "debug",
            ExitKind::Interrupted => "interrupted",
            ExitKind::MemoryFault => "memory-fault",
            ExitKind::Unknown => "unknown",
            ExitKind::Other => "other",
        }
    }
}

impl VcpuExit<'_> {
    /// The exit's kind.
    pub fn kind(&self) -> ExitKind {
        match self {
            VcpuExit::IoOut { .. } => ExitKind::IoOut,
            VcpuExit::IoIn { .. } => ExitKind::IoIn,
            VcpuExit::MmioRead { .. } => ExitKind::MmioRead,
            VcpuExit::MmioWrite { .. } => ExitKind::MmioWrite,
            VcpuExit::Hlt => ExitKind::Hlt,
            VcpuExit::Shutdown => ExitKind::Shutdown,
            VcpuExit::IrqWindowOpen => ExitKind::IrqWindowOpen,
            VcpuExit::InternalError(_) => ExitKind::InternalError,
            VcpuExit::FailEntry { .. } => ExitKind::FailEntry,
            VcpuExit::SystemEvent(_) => ExitKind::SystemEvent,
            VcpuExit::Debug { .. } => ExitKind::Debug,
            VcpuExit::Interrupted => ExitKind::Interrupted,
            VcpuExit::MemoryFault { .. } => ExitKind::MemoryFault,
            VcpuExit::Unknown { .. } => ExitKind::Unknown,
            VcpuExit::Other(_) => ExitKind::Other,
        }
    }
}

/// The details of KVM_EXIT_INTERNAL_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalError {
    /// KVM_INTERNAL_ERROR_* code.
    pub suberror: u32,
    ndata: u32,
    data: [u64; 16],
}

impl InternalError {
    pub(crate) fn new(suberror: u32, ndata: u32, data: [u64; 16]) -> Self {
        Self {
            suberror,
            ndata: ndata.min(16),
            data,
        }
    }

    /// The extra words KVM reported (for emulation failures on recent kernels: flags,
    /// instruction length and the instruction bytes).
    pub fn data(&self) -> &[u64] {
        &self.data[..self.ndata as usize]
    }

    /// A readable name of the suberror.
    pub fn suberror_name(&self) -> &'static str {
        match self.suberror {
            KVM_INTERNAL_ERROR_EMULATION => "emulation failure (instruction not handled)",
            KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected hardware exit reason",
            _ => "unknown suberror",
        }
    }
}

/// KVM_EXIT_SYSTEM_EVENT types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemEventKind {
    /// The guest asked to power off.
    Shutdown,
    /// The guest asked to reset.
    Reset,
    /// The guest crashed.
    Crash,
    /// A halted vCPU should be woken.
    Wakeup,
    /// Another type number.
    Other(u32),
}

/// The details of KVM_EXIT_SYSTEM_EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemEvent {
    /// What happened.
    pub kind: SystemEventKind,
    ndata: u32,
    data: [u64; 16],
}

impl SystemEvent {
    pub(crate) fn new(kind: u32, ndata: u32, data: [u64; 16]) -> Self {
        let kind = match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => SystemEventKind::Shutdown,
            KVM_SYSTEM_EVENT_RESET => SystemEventKind::Reset,
            KVM_SYSTEM_EVENT_CRASH => SystemEventKind::Crash,
            KVM_SYSTEM_EVENT_WAKEUP => SystemEventKind::Wakeup,
            other => SystemEventKind::Other(other),
        };
        Self {
            kind,
            ndata: ndata.min(16),
            data,
        }
    }

    /// Architecture-specific words that came with the event.
    pub fn data(&self) -> &[u64] {
        &self.data[..self.ndata as usize]
    }
}
