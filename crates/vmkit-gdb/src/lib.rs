//! A GDB remote stub for KVM guests, on the [`gdbstub`] crate, as QEMU's `-gdb`.
//!
//! The stub knows nothing of KVM: a VMM implements [`DebugVcpus`] over its vCPU threads
//! (pause all, resume or single-step one, registers, guest memory by physical address and
//! address translation, debug registers, planted `int3`s) and hands it to
//! [`GdbServer::spawn`], which listens on `tcp:HOST:PORT` or `unix:PATH` ([`ListenAddr`]) and
//! serves one gdb client at a time.
//!
//! - One gdb thread per vCPU (vCPU `i` is thread `i + 1`); `info threads` and `thread N` work.
//! - Continue, single step (`stepi` steps only that vCPU; the others stay stopped), Ctrl-C
//!   (SIGINT), detach (the guest runs on) and kill (the VMM ends the machine).
//! - Registers ([`arch`]): gdb's x86-64 core and SSE set plus `fs_base`, `gs_base`,
//!   `k_gs_base`, `cr0`, `cr2`, `cr3`, `cr4`, `cr8` and `efer`, described to gdb by the
//!   stub's own target XML (as QEMU's `i386-64bit.xml`).
//! - Software breakpoints (`break`) are `int3` bytes planted in guest memory (any number):
//!   the original byte is kept, memory reads show it instead of the `0xcc`, and it is put
//!   back on removal and when the session ends. Where the VMM says a planted `int3` would
//!   not come back as a stop ([`DebugVcpus::int3_breakpoints`]: on nested KVM, a real-mode
//!   `int3` goes straight to the guest's IVT) or the address cannot be written, the
//!   breakpoint goes into a debug register instead.
//! - Hardware breakpoints (`hbreak`) and watchpoints (`watch`, `rwatch`, `awatch`) in the four
//!   x86 debug registers, shared with the software breakpoints that fell back to them.
//! - Memory by guest virtual address, translated page by page with the vCPU's own paging
//!   state ([`DebugVcpus::translate`]), or by walking its page tables from CR3 ([`paging`])
//!   where that translation fails or finds nothing.
//!
//! # Example
//!
//! A stub over a mock target, driven with raw remote-protocol packets:
//!
//! ```
//! use std::io::{Read, Write};
//! use vmkit_gdb::{mock::MockVcpus, GdbServer, ListenAddr};
//!
//! let server = GdbServer::spawn(ListenAddr::Tcp("127.0.0.1:0".into()), MockVcpus::new(2))?;
//! let mut gdb = std::net::TcpStream::connect(server.local_tcp_addr().unwrap()).unwrap();
//! gdb.write_all(b"$?#3f").unwrap(); // "why did you stop?"
//! let mut reply = Vec::new();
//! while !reply.contains(&b'#') {
//!     let mut byte = [0u8];
//!     gdb.read_exact(&mut byte).unwrap();
//!     reply.push(byte[0]);
//! }
//! // "+" (ack), then a stop with SIGTRAP naming the thread (vCPU 0 is thread 1).
//! assert!(String::from_utf8_lossy(&reply).starts_with("+$T05thread:01"));
//! # Ok::<(), vmkit_gdb::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::{Target, TargetError, TargetResult};
pub use gdbstub_arch::x86::reg::{X86SegmentRegs, X86_64CoreRegs, X87FpuInternalRegs};

pub mod arch;
pub mod mock;
pub mod paging;

pub use arch::{X86SystemRegs, X86_64Regs, X86_64_System};

/// Errors of the stub and of the targets it drives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `-gdb` device text is not one the stub understands.
    #[error("-gdb: '{text}': {reason} (use tcp::PORT, tcp:HOST:PORT or unix:PATH[,server])")]
    BadAddress {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding the listening socket failed.
    #[error("gdb stub: cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The stub's thread could not be started.
    #[error("gdb stub: cannot start its thread: {0}")]
    Thread(io::Error),
    /// An operation on a vCPU failed.
    #[error("gdb stub: vCPU {vcpu}: {what}")]
    Vcpu {
        /// Which vCPU.
        vcpu: usize,
        /// What failed and why.
        what: String,
    },
    /// An operation on the whole machine failed.
    #[error("gdb stub: {0}")]
    Machine(String),
    /// All four debug registers are in use.
    #[error("gdb stub: all {limit} hardware debug registers are in use")]
    NoDebugRegister {
        /// The number of debug registers (4).
        limit: usize,
    },
}

/// What a debug register watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugRegisterKind {
    /// Instruction execution at the address (length must be 1).
    Execute,
    /// Data writes.
    Write,
    /// Data reads or writes.
    ReadWrite,
}

/// One armed hardware debug register (DR0-DR3 with its DR7 fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugRegister {
    /// Linear (guest virtual) address.
    pub addr: u64,
    /// Length: 1, 2, 4 or 8 (1 for [`DebugRegisterKind::Execute`]).
    pub len: u8,
    /// What triggers it.
    pub kind: DebugRegisterKind,
}

impl DebugRegister {
    /// The DR7 bits for this register in slot `slot` (global enable, R/W and LEN fields), as
    /// QEMU's `kvm_arch_update_guest_debug` encodes them.
    pub fn dr7_bits(&self, slot: usize) -> u64 {
        let rw: u64 = match self.kind {
            DebugRegisterKind::Execute => 0,
            DebugRegisterKind::Write => 1,
            DebugRegisterKind::ReadWrite => 3,
        };
        let len: u64 = match (self.kind, self.len) {
            (DebugRegisterKind::Execute, _) | (_, 1) => 0,
            (_, 2) => 1,
            (_, 8) => 2,
            _ => 3,
        };
        let slot = slot as u64;
        (2 << (slot * 2)) | (rw << (16 + slot * 4)) | (len << (18 + slot * 4))
    }
}

/// The four debug registers as the target wants them armed (`None`: free).
pub type DebugRegisters = [Option<DebugRegister>; MAX_DEBUG_REGISTERS];

/// Number of x86 hardware debug registers.
pub const MAX_DEBUG_REGISTERS: usize = 4;

/// How the guest goes on after a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every vCPU runs.
    Continue,
    /// Only this vCPU runs, for one instruction (the others stay stopped).
    Step(usize),
}

/// Why the guest stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEvent {
    /// A vCPU triggered the debug register in `slot` (DR6 bit `slot`).
    DebugRegister {
        /// Which vCPU.
        vcpu: usize,
        /// Which of DR0-DR3.
        slot: usize,
    },
    /// A vCPU reached an `int3` the stub planted ([`DebugVcpus::set_software_breakpoints`]);
    /// its RIP is still at the `int3`.
    SoftwareBreakpoint {
        /// Which vCPU.
        vcpu: usize,
    },
    /// A vCPU finished a single step.
    Stepped {
        /// Which vCPU.
        vcpu: usize,
    },
    /// The machine ended with this exit status.
    Exited(u8),
}

/// The `int3` opcode the stub plants.
pub const INT3: u8 = 0xcc;

/// An `int3` planted in guest memory for a gdb software breakpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftwareBreakpoint {
    /// The linear (guest virtual) address gdb asked for.
    pub addr: u64,
    /// The guest physical address of that byte when it was planted.
    pub gpa: u64,
    /// The byte the [`INT3`] replaced.
    pub original: u8,
}

/// What the stub needs from a VMM: its vCPUs, stopped and resumed together.
///
/// vCPU indexes run from 0 to `vcpu_count() - 1`. Register, translation and debug register
/// calls are made only while the guest is stopped (after [`DebugVcpus::pause_all`] or a
/// [`StopEvent`]).
pub trait DebugVcpus: Send + 'static {
    /// How many vCPUs the machine has.
    fn vcpu_count(&self) -> usize;
    /// Stops every vCPU; returns once none runs guest code.
    fn pause_all(&mut self) -> Result<(), Error>;
    /// Lets the guest go on with the debug registers given to
    /// [`DebugVcpus::set_debug_registers`]. A vCPU resumed at an execute breakpoint must get
    /// past it (one instruction) instead of hitting it again.
    fn resume(&mut self, how: Resume) -> Result<(), Error>;
    /// Waits up to `timeout` for the guest to stop on its own (or the machine to end).
    /// When it returns a stop, every vCPU has stopped.
    fn wait_for_stop(&mut self, timeout: Duration) -> Option<StopEvent>;
    /// The vCPU's registers (core, SSE, segment bases, control registers).
    fn read_registers(&mut self, vcpu: usize) -> Result<X86_64Regs, Error>;
    /// Sets the vCPU's registers. The VMM may refuse values the CPU would not take (a
    /// control register combination KVM rejects): gdb then reports the write as failed.
    fn write_registers(&mut self, vcpu: usize, regs: &X86_64Regs) -> Result<(), Error>;
    /// Translates a guest virtual address with the vCPU's paging state; `None` if unmapped.
    fn translate(&mut self, vcpu: usize, gva: u64) -> Result<Option<u64>, Error>;
    /// Reads guest physical memory; false if any byte is not RAM/ROM.
    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes guest physical memory; false if any byte is not RAM.
    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// Arms the debug registers on every vCPU (applied at the next resume).
    fn set_debug_registers(&mut self, registers: &DebugRegisters) -> Result<(), Error>;
    /// Whether an `int3` planted in guest memory stops this vCPU in its present mode (as a
    /// [`StopEvent::SoftwareBreakpoint`]). If not, the stub puts gdb's software breakpoints
    /// into the debug registers.
    fn int3_breakpoints(&mut self, vcpu: usize) -> Result<bool, Error>;
    /// Where the stub has planted `int3`s now (all of them; empty once none is left). The
    /// VMM reports a vCPU that reaches one as [`StopEvent::SoftwareBreakpoint`], and a vCPU
    /// resumed at one steps over it (original byte back, one step, `int3` again).
    fn set_software_breakpoints(&mut self, planted: &[SoftwareBreakpoint]) -> Result<(), Error>;
    /// The debugger went away: disarm everything and let the guest run.
    fn detach(&mut self);
    /// The debugger asked to kill the target: end the machine.
    fn kill(&mut self);
}

/// Where the stub listens: QEMU's `-gdb` device forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `tcp:HOST:PORT` (`tcp::PORT` listens on every address).
    Tcp(String),
    /// `unix:PATH[,server]`.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadAddress {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = text.split(',');
        let main = parts.next().unwrap_or_default();
        for option in parts {
            match option {
                "server" | "server=on" | "nowait" | "wait=off" | "ipv4" | "ipv4=on" => {}
                other => return Err(bad(&format!("unknown option '{other}'"))),
            }
        }
        if let Some(rest) = main.strip_prefix("tcp:") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            return Ok(ListenAddr::Tcp(format!("{host}:{port}")));
        }
        if let Some(path) = main.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        // QEMU also takes a bare port number.
        if let Ok(port) = main.parse::<u16>() {
            return Ok(ListenAddr::Tcp(format!("0.0.0.0:{port}")));
        }
        Err(bad("not a tcp: or unix: address"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp:{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One client connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }
}

impl Connection for Conn {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => Connection::write_all(s, buf),
            Conn::Unix(s) => Connection::write_all(s, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => Connection::flush(s),
            Conn::Unix(s) => Connection::flush(s),
        }
    }

    fn on_session_start(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nodelay(true),
            Conn::Unix(_) => Ok(()),
        }
    }
}

impl ConnectionExt for Conn {
    fn read(&mut self) -> io::Result<u8> {
        match self {
            Conn::Tcp(s) => ConnectionExt::read(s),
            Conn::Unix(s) => ConnectionExt::read(s),
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        // A closed peer peeks as a byte; the read that follows fails and ends the session.
        match self {
            Conn::Tcp(s) => ConnectionExt::peek(s),
            Conn::Unix(s) => ConnectionExt::peek(s),
        }
    }
}

/// Who set a debug register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotUse {
    /// `Z0` (gdb's `break`) where no `int3` could be planted.
    Software,
    /// `Z1` (`hbreak`).
    Hardware,
    /// `Z2`-`Z4` (`watch`, `rwatch`, `awatch`).
    Watch(WatchKind),
}

/// `EFAULT`: gdb's "Cannot access memory".
const EFAULT: u8 = 14;
/// `EINVAL`: a register value the VMM refused.
const EINVAL: u8 = 22;

/// The gdbstub target over a [`DebugVcpus`].
pub struct DebugTarget<D: DebugVcpus> {
    vcpus: D,
    slots: [Option<(DebugRegister, SlotUse)>; MAX_DEBUG_REGISTERS],
    planted: Vec<SoftwareBreakpoint>,
    resume: Resume,
    /// The vCPU of the last stop (whose mode decides how a software breakpoint is placed).
    current_vcpu: usize,
}

/// A stretch of a guest-virtual access that lies in one page: its guest physical address
/// and the bytes of the access it covers.
type Piece = (u64, std::ops::Range<usize>);

impl<D: DebugVcpus> DebugTarget<D> {
    /// A target over `vcpus`, with no debug register armed and no `int3` planted.
    pub fn new(vcpus: D) -> Self {
        Self {
            vcpus,
            slots: [None; MAX_DEBUG_REGISTERS],
            planted: Vec::new(),
            resume: Resume::Continue,
            current_vcpu: 0,
        }
    }

    /// The vCPUs.
    pub fn vcpus(&mut self) -> &mut D {
        &mut self.vcpus
    }

    /// The `int3`s planted now.
    pub fn planted(&self) -> &[SoftwareBreakpoint] {
        &self.planted
    }

    fn vcpu_of(&self, tid: Tid) -> Option<usize> {
        let index = tid.get() - 1;
        (index < self.vcpus.vcpu_count()).then_some(index)
    }

    fn push_slots(&mut self) -> Result<(), Error> {
        let registers: DebugRegisters = self.slots.map(|s| s.map(|(r, _)| r));
        self.vcpus.set_debug_registers(&registers)
    }

    fn add_slot(&mut self, register: DebugRegister, used: SlotUse) -> TargetResult<bool, Self> {
        if self
            .slots
            .iter()
            .flatten()
            .any(|(r, u)| *r == register && *u == used)
        {
            return Ok(true);
        }
        let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) else {
            // gdb then says "Could not insert hardware breakpoint".
            return Ok(false);
        };
        *free = Some((register, used));
        self.push_slots().map_err(TargetError::Fatal)?;
        Ok(true)
    }

    fn remove_slot(&mut self, register: DebugRegister, used: SlotUse) -> TargetResult<bool, Self> {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Some((r, u)) if *r == register && *u == used))
        else {
            return Ok(false);
        };
        *slot = None;
        self.push_slots().map_err(TargetError::Fatal)?;
        Ok(true)
    }

    fn stop_reason(&mut self, event: StopEvent) -> MultiThreadStopReason<u64> {
        let tid = |vcpu: usize| Tid::new(vcpu + 1).unwrap_or(Tid::MIN);
        match event {
            StopEvent::Exited(code) => MultiThreadStopReason::Exited(code),
            StopEvent::Stepped { vcpu } => {
                self.current_vcpu = vcpu;
                MultiThreadStopReason::SignalWithThread {
                    tid: tid(vcpu),
                    signal: Signal::SIGTRAP,
                }
            }
            StopEvent::SoftwareBreakpoint { vcpu } => {
                self.current_vcpu = vcpu;
                MultiThreadStopReason::SwBreak(tid(vcpu))
            }
            StopEvent::DebugRegister { vcpu, slot } => {
                self.current_vcpu = vcpu;
                match self.slots.get(slot).copied().flatten() {
                    Some((_, SlotUse::Software)) => MultiThreadStopReason::SwBreak(tid(vcpu)),
                    Some((_, SlotUse::Hardware)) => MultiThreadStopReason::HwBreak(tid(vcpu)),
                    Some((register, SlotUse::Watch(kind))) => MultiThreadStopReason::Watch {
                        tid: tid(vcpu),
                        kind,
                        addr: register.addr,
                    },
                    // A slot gdb no longer knows: report a plain trap.
                    None => MultiThreadStopReason::SignalWithThread {
                        tid: tid(vcpu),
                        signal: Signal::SIGTRAP,
                    },
                }
            }
        }
    }

    /// Guest virtual to guest physical: the VMM's translation, else a walk of the vCPU's
    /// page tables (its paging registers are read once per access, in `paging`).
    fn translate(
        &mut self,
        vcpu: usize,
        gva: u64,
        paging: &mut Option<paging::PagingState>,
    ) -> Result<Option<u64>, Error> {
        if let Ok(Some(gpa)) = self.vcpus.translate(vcpu, gva) {
            return Ok(Some(gpa));
        }
        let state = match *paging {
            Some(state) => state,
            None => {
                let state = paging::PagingState::from(&self.vcpus.read_registers(vcpu)?.system);
                *paging = Some(state);
                state
            }
        };
        let vcpus = &mut self.vcpus;
        Ok(paging::translate(&state, gva, &mut |gpa, buf| {
            vcpus.read_physical(gpa, buf)
        }))
    }

    /// Splits an access of `len` bytes at guest virtual `start` into pages, translated; stops
    /// at the first page that is not mapped.
    fn pieces(&mut self, vcpu: usize, start: u64, len: usize) -> Result<Vec<Piece>, Error> {
        let mut pieces = Vec::new();
        let mut paging = None;
        let mut done = 0usize;
        while done < len {
            let gva = start.wrapping_add(done as u64);
            let in_page = (0x1000 - (gva & 0xfff)) as usize;
            let chunk = in_page.min(len - done);
            let Some(gpa) = self.translate(vcpu, gva, &mut paging)? else {
                break;
            };
            pieces.push((gpa, done..done + chunk));
            done += chunk;
        }
        Ok(pieces)
    }

    /// The planted `int3`s inside `piece`, with their offset in the access.
    fn planted_in(&self, piece: &Piece) -> Vec<(usize, usize)> {
        let (gpa, range) = piece;
        self.planted
            .iter()
            .enumerate()
            .filter(|(_, p)| p.gpa >= *gpa && p.gpa < gpa + range.len() as u64)
            .map(|(index, p)| (index, range.start + (p.gpa - gpa) as usize))
            .collect()
    }

    fn push_planted(&mut self) -> Result<(), Error> {
        self.vcpus.set_software_breakpoints(&self.planted)
    }

    /// Plants an `int3` at guest virtual `addr`; `None` if the byte cannot be read, written
    /// or translated (the caller then tries a debug register).
    fn plant(&mut self, addr: u64) -> Result<Option<SoftwareBreakpoint>, Error> {
        let Some(gpa) = self.translate(self.current_vcpu, addr, &mut None)? else {
            return Ok(None);
        };
        // An alias of a byte already planted keeps the byte from before the first.
        let original = match self.planted.iter().find(|p| p.gpa == gpa) {
            Some(other) => other.original,
            None => {
                let mut byte = [0u8];
                if !self.vcpus.read_physical(gpa, &mut byte) {
                    return Ok(None);
                }
                byte[0]
            }
        };
        let mut check = [0u8];
        if !self.vcpus.write_physical(gpa, &[INT3])
            || !self.vcpus.read_physical(gpa, &mut check)
            || check[0] != INT3
        {
            return Ok(None); // ROM, or memory that ignores writes
        }
        Ok(Some(SoftwareBreakpoint {
            addr,
            gpa,
            original,
        }))
    }

    /// Takes out the planted `int3` at `index`, putting the original byte back unless another
    /// breakpoint still uses it or the guest has overwritten it since.
    fn unplant(&mut self, index: usize) {
        let removed = self.planted.remove(index);
        if self.planted.iter().any(|p| p.gpa == removed.gpa) {
            return;
        }
        let mut byte = [0u8];
        if self.vcpus.read_physical(removed.gpa, &mut byte) && byte[0] == INT3 {
            self.vcpus.write_physical(removed.gpa, &[removed.original]);
        }
    }

    /// Puts every planted byte back (the session is over).
    fn unplant_all(&mut self) {
        while !self.planted.is_empty() {
            self.unplant(self.planted.len() - 1);
        }
        if let Err(e) = self.push_planted() {
            eprintln!("vmkit: gdb: {e}");
        }
    }
}

impl<D: DebugVcpus> Target for DebugTarget<D> {
    type Arch = X86_64_System;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

impl<D: DebugVcpus> MultiThreadBase for DebugTarget<D> {
    fn read_registers(&mut self, regs: &mut X86_64Regs, tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu_of(tid).ok_or(TargetError::NonFatal)?;
        *regs = self
            .vcpus
            .read_registers(vcpu)
            .map_err(TargetError::Fatal)?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64Regs, tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu_of(tid).ok_or(TargetError::NonFatal)?;
        self.vcpus.write_registers(vcpu, regs).map_err(|e| {
            // A refused value is gdb's error to show, not the end of the session.
            eprintln!("vmkit: gdb: {e}");
            TargetError::Errno(EINVAL)
        })
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let vcpu = self.vcpu_of(tid).ok_or(TargetError::NonFatal)?;
        let len = data.len();
        let mut done = 0;
        for piece in self.pieces(vcpu, start, len).map_err(TargetError::Fatal)? {
            if !self
                .vcpus
                .read_physical(piece.0, &mut data[piece.1.clone()])
            {
                break;
            }
            // gdb sees the guest's bytes, not the int3s planted over them.
            for (index, at) in self.planted_in(&piece) {
                data[at] = self.planted[index].original;
            }
            done = piece.1.end;
        }
        if done == 0 && len > 0 {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu_of(tid).ok_or(TargetError::NonFatal)?;
        let pieces = self
            .pieces(vcpu, start, data.len())
            .map_err(TargetError::Fatal)?;
        let mut bytes = data.to_vec();
        let mut planted_changed = false;
        let mut done = 0;
        for piece in pieces {
            // A write over a planted int3 changes the byte restored later; the int3 stays.
            for (index, at) in self.planted_in(&piece) {
                self.planted[index].original = bytes[at];
                bytes[at] = INT3;
                planted_changed = true;
            }
            if !self.vcpus.write_physical(piece.0, &bytes[piece.1.clone()]) {
                break;
            }
            done = piece.1.end;
        }
        if planted_changed {
            self.push_planted().map_err(TargetError::Fatal)?;
        }
        if done < data.len() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(())
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for index in 0..self.vcpus.vcpu_count() {
            if let Some(tid) = Tid::new(index + 1) {
                thread_is_active(tid);
            }
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<D: DebugVcpus> MultiThreadResume for DebugTarget<D> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        let how = std::mem::replace(&mut self.resume, Resume::Continue);
        self.vcpus.resume(how)
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.resume = Resume::Continue;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // Signals cannot be delivered to a CPU; continuing is what there is.
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<D: DebugVcpus> MultiThreadSchedulerLocking for DebugTarget<D> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // Only the stepped vCPU runs anyway; a continue of one thread runs them all
        // (vCPUs of one machine cannot run alone for long without starving each other).
        Ok(())
    }
}

impl<D: DebugVcpus> MultiThreadSingleStep for DebugTarget<D> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        let vcpu = self.vcpu_of(tid).ok_or(Error::Vcpu {
            vcpu: tid.get() - 1,
            what: "no such vCPU to step".into(),
        })?;
        self.resume = Resume::Step(vcpu);
        Ok(())
    }
}

impl<D: DebugVcpus> Breakpoints for DebugTarget<D> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

fn execute_at(addr: u64) -> DebugRegister {
    DebugRegister {
        addr,
        len: 1,
        kind: DebugRegisterKind::Execute,
    }
}

impl<D: DebugVcpus> SwBreakpoint for DebugTarget<D> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let in_slot = self
            .slots
            .iter()
            .flatten()
            .any(|(r, u)| *r == execute_at(addr) && *u == SlotUse::Software);
        if in_slot || self.planted.iter().any(|p| p.addr == addr) {
            return Ok(true);
        }
        let vcpu = self.current_vcpu;
        if self
            .vcpus
            .int3_breakpoints(vcpu)
            .map_err(TargetError::Fatal)?
        {
            if let Some(planted) = self.plant(addr).map_err(TargetError::Fatal)? {
                self.planted.push(planted);
                self.push_planted().map_err(TargetError::Fatal)?;
                return Ok(true);
            }
        }
        // No int3 here (real mode, ROM, not mapped yet): a debug register, while one is free.
        self.add_slot(execute_at(addr), SlotUse::Software)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if let Some(index) = self.planted.iter().position(|p| p.addr == addr) {
            self.unplant(index);
            self.push_planted().map_err(TargetError::Fatal)?;
            return Ok(true);
        }
        self.remove_slot(execute_at(addr), SlotUse::Software)
    }
}

impl<D: DebugVcpus> HwBreakpoint for DebugTarget<D> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_slot(execute_at(addr), SlotUse::Hardware)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_slot(execute_at(addr), SlotUse::Hardware)
    }
}

fn watch_register(addr: u64, len: u64, kind: WatchKind) -> Option<DebugRegister> {
    // x86 debug registers watch 1, 2, 4 or 8 aligned bytes.
    let len = u8::try_from(len)
        .ok()
        .filter(|l| matches!(l, 1 | 2 | 4 | 8))?;
    if addr % u64::from(len) != 0 {
        return None;
    }
    Some(DebugRegister {
        addr,
        len,
        kind: match kind {
            WatchKind::Write => DebugRegisterKind::Write,
            // x86 has no read-only data breakpoint: reads and writes both trigger it.
            WatchKind::Read | WatchKind::ReadWrite => DebugRegisterKind::ReadWrite,
        },
    })
}

impl<D: DebugVcpus> HwWatchpoint for DebugTarget<D> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        match watch_register(addr, len, kind) {
            Some(register) => self.add_slot(register, SlotUse::Watch(kind)),
            None => Ok(false),
        }
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        match watch_register(addr, len, kind) {
            Some(register) => self.remove_slot(register, SlotUse::Watch(kind)),
            None => Ok(false),
        }
    }
}

/// How often the stub looks for a stop while the guest runs.
const POLL: Duration = Duration::from_millis(10);

enum EventLoop<D> {
    _Never(std::marker::PhantomData<D>),
}

impl<D: DebugVcpus> BlockingEventLoop for EventLoop<D> {
    type Target = DebugTarget<D>;
    type Connection = Conn;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut DebugTarget<D>,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<Error, io::Error>> {
        loop {
            if let Some(event) = target.vcpus.wait_for_stop(POLL) {
                return Ok(Event::TargetStopped(target.stop_reason(event)));
            }
            if conn
                .peek()
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut DebugTarget<D>) -> Result<Option<Self::StopReason>, Error> {
        target.vcpus.pause_all()?;
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: Tid::MIN,
            signal: Signal::SIGINT,
        }))
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached (`detach`, `quit`): the guest runs on.
    Detached,
    /// gdb killed the target: the machine was told to end.
    Killed,
    /// The machine ended and gdb was told its exit status.
    TargetExited(u8),
    /// The connection failed (client vanished, protocol error); the guest runs on.
    Failed(String),
}

/// Runs one gdb session on `conn` to its end. The guest is stopped first, as gdb expects on
/// attach; unless gdb killed it, the guest runs on afterwards.
fn run_session<D: DebugVcpus>(target: &mut DebugTarget<D>, conn: Conn) -> SessionEnd {
    if let Err(e) = target.vcpus.pause_all() {
        return SessionEnd::Failed(e.to_string());
    }
    let end = match GdbStub::new(conn).run_blocking::<EventLoop<D>>(target) {
        Ok(DisconnectReason::Disconnect) => SessionEnd::Detached,
        Ok(DisconnectReason::Kill) => SessionEnd::Killed,
        Ok(DisconnectReason::TargetExited(code)) => SessionEnd::TargetExited(code),
        Ok(DisconnectReason::TargetTerminated(sig)) => {
            SessionEnd::TargetExited(128u8.wrapping_add(sig.0))
        }
        Err(e) => SessionEnd::Failed(e.to_string()),
    };
    // Whatever gdb had armed goes away with it; planted bytes are put back while the guest
    // is stopped (a client that vanished may have left it running).
    if !matches!(end, SessionEnd::Killed | SessionEnd::TargetExited(_)) {
        if let Err(e) = target.vcpus.pause_all() {
            eprintln!("vmkit: gdb: {e}");
        }
    }
    target.unplant_all();
    target.slots = [None; MAX_DEBUG_REGISTERS];
    match end {
        SessionEnd::Killed => target.vcpus.kill(),
        SessionEnd::TargetExited(_) => {}
        _ => target.vcpus.detach(),
    }
    end
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
        }
    }
}

/// A listening gdb stub: one client at a time, served on its own thread; a second client
/// is refused while one is connected.
pub struct GdbServer {
    addr: ListenAddr,
    local_tcp: Option<SocketAddr>,
    sessions: Arc<Mutex<Vec<SessionEnd>>>,
    active: Arc<AtomicBool>,
    _threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for GdbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdbServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A bound gdb socket that serves nobody yet: bind before the guest starts (so `-S` can wait
/// for the client), serve once the VM exists.
pub struct GdbListener {
    addr: ListenAddr,
    listener: Listener,
    local_tcp: Option<SocketAddr>,
}

impl std::fmt::Debug for GdbListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdbListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GdbListener {
    /// Binds `addr` (a stale unix socket file there is replaced).
    pub fn bind(addr: ListenAddr) -> Result<Self, Error> {
        let listen_error = |source| Error::Listen {
            addr: addr.to_string(),
            source,
        };
        let (listener, local_tcp) = match &addr {
            ListenAddr::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(listen_error)?;
                let local = l.local_addr().ok();
                (Listener::Tcp(l), local)
            }
            ListenAddr::Unix(path) => {
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                let l = UnixListener::bind(path).map_err(listen_error)?;
                (Listener::Unix(l), None)
            }
        };
        Ok(Self {
            addr,
            listener,
            local_tcp,
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp
    }

    /// Serves gdb clients on `vcpus` from new threads.
    pub fn serve<D: DebugVcpus>(self, vcpus: D) -> Result<GdbServer, Error> {
        self.serve_with(vcpus, Arc::new(|_: &str| {}))
    }

    /// As [`serve`](Self::serve); each new thread first calls `on_thread_start` with its
    /// name, before it accepts a connection or reads a packet (a VMM installs the thread's
    /// seccomp filter there).
    pub fn serve_with<D: DebugVcpus>(
        self,
        vcpus: D,
        on_thread_start: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<GdbServer, Error> {
        let GdbListener {
            addr,
            listener,
            local_tcp,
        } = self;
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Conn>();
        let accept_active = Arc::clone(&active);
        let accept_start = Arc::clone(&on_thread_start);
        let acceptor = std::thread::Builder::new()
            .name("vmkit-gdb-accept".into())
            .spawn(move || {
                accept_start("vmkit-gdb-accept");
                loop {
                    let Ok(conn) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    if accept_active.swap(true, Ordering::SeqCst) {
                        eprintln!("vmkit: gdb: refusing a second client while one is connected");
                        drop(conn);
                        continue;
                    }
                    if tx.send(conn).is_err() {
                        return;
                    }
                }
            })
            .map_err(Error::Thread)?;
        let session_log = Arc::clone(&sessions);
        let session_active = Arc::clone(&active);
        let server = std::thread::Builder::new()
            .name("vmkit-gdb".into())
            .spawn(move || {
                on_thread_start("vmkit-gdb");
                let mut target = DebugTarget::new(vcpus);
                while let Ok(conn) = rx.recv() {
                    // Hold the socket open until the session is marked over, so a client
                    // that reconnects as soon as it sees the close is not refused.
                    let hold = conn.try_clone();
                    let end = run_session(&mut target, conn);
                    if let SessionEnd::Failed(why) = &end {
                        eprintln!("vmkit: gdb: session ended: {why}; the guest runs on");
                    }
                    session_log
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(end);
                    session_active.store(false, Ordering::SeqCst);
                    drop(hold);
                }
            })
            .map_err(Error::Thread)?;
        Ok(GdbServer {
            addr,
            local_tcp,
            sessions,
            active,
            _threads: vec![acceptor, server],
        })
    }
}

impl GdbServer {
    /// Binds `addr` and serves gdb clients on `vcpus` from a new thread.
    pub fn spawn<D: DebugVcpus>(addr: ListenAddr, vcpus: D) -> Result<Self, Error> {
        GdbListener::bind(addr)?.serve(vcpus)
    }

    /// Where it listens.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// The bound TCP address (useful with port 0).
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp
    }

    /// Whether a client is connected now.
    pub fn client_connected(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// How the sessions so far have ended.
    pub fn sessions(&self) -> Vec<SessionEnd> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `limit` for a connected client's session to end (so that a client told
    /// the machine's exit status gets to read it before the process goes).
    pub fn wait_for_client_to_leave(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.client_connected() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
