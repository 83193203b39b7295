//! Guest debugging: the runtime's side of the gdb stub (`-gdb`, `-s`), as QEMU's
//! `gdbstub.c` + `kvm_arch_update_guest_debug`.
//!
//! [`VmDebugTarget`] implements [`vmkit_gdb::DebugVcpus`] over a running VM. The debugger
//! stops the guest with the run-state machine (state `debug`, as QEMU's), and what needs a
//! vCPU (registers, `KVM_TRANSLATE`) runs on that vCPU's thread while it is parked. Each vCPU
//! arms `KVM_SET_GUEST_DEBUG` (DR0-DR3/DR7, single step) when it leaves its park; a
//! `KVM_EXIT_DEBUG` stops every vCPU and is reported to the debugger.
//!
//! This host's KVM (nested): hardware breakpoints and single step exit as
//! `KVM_EXIT_DEBUG`; RFLAGS.RF does not get a vCPU past a hardware breakpoint, so a vCPU
//! resumed at one first steps one instruction with its breakpoints off, then re-arms them.
//! gdb's software breakpoints are `int3`s the stub plants in guest memory. Measured here
//! with a raw vCPU (`nop; int3; hlt`), with and without `KVM_GUESTDBG_USE_SW_BP`: in
//! protected and long mode at CPL 0 the `int3` ends in `KVM_EXIT_INTERNAL_ERROR`
//! (emulation) with RIP at the `int3`, which is taken as that breakpoint's hit when the
//! stub planted one there (the guest's own `int3` still goes to [`crate::emulate`], which
//! delivers #BP to the guest); in real mode it goes to the guest's IVT without an exit, and
//! at CPL 3 straight to the guest's IDT, so in real mode the stub falls back to a debug
//! register. A vCPU resumed at a planted `int3` steps over it: original byte, one step,
//! `int3` again. Data breakpoints
//! in DR0-DR3 never fire here (the nested host interprets kernel-mode guest code without
//! checking them; QEMU's `watch` does not fire on this host either), so while a watchpoint
//! is set, every vCPU also single-steps and compares the watched bytes after each
//! instruction: a write that changes them stops the guest as the watchpoint's hit. That is
//! slow (one exit per instruction) and sees writes only (`rwatch` is not emulated), but it
//! is exact; where the hardware does fire, its DR6 bit is reported first.

use std::time::Duration;

use kvm_bindings::{kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use vmkit_gdb::{
    DebugRegisterKind, DebugRegisters, DebugVcpus, Error as GdbError, Resume, SoftwareBreakpoint,
    StopEvent, X86SystemRegs, X86_64CoreRegs, X86_64Regs,
};
use vmkit_kvm::Vcpu;

use crate::control::{ExitReason, GuestDebugConfig};
use crate::dump::GuestMemoryReader;
use crate::runtime::VmmHandle;

/// `KVM_GUESTDBG_USE_HW_BP` (x86).
const KVM_GUESTDBG_USE_HW_BP: u32 = 0x0002_0000;
/// How long the debugger waits for a parked vCPU to do its work.
const VCPU_JOB_LIMIT: Duration = Duration::from_secs(2);

/// One vCPU thread's debug state.
#[derive(Debug, Default)]
pub(crate) struct VcpuDebug {
    generation: u64,
    config: GuestDebugConfig,
    /// Stepping one instruction with breakpoints off, to get past the one at RIP.
    stepping_over: bool,
    /// The planted int3 whose original byte is back for that step.
    stepping_over_int3: Option<SoftwareBreakpoint>,
    /// Watched bytes as last seen: (slot, guest physical address, bytes).
    watched: Vec<(usize, u64, Vec<u8>)>,
}

/// Whether any data watchpoint is set (then the vCPUs single-step to emulate it).
fn watching(config: &GuestDebugConfig) -> bool {
    config.attached
        && config
            .registers
            .iter()
            .flatten()
            .any(|r| r.kind != DebugRegisterKind::Execute)
}

fn guest_debug(config: &GuestDebugConfig, step: bool, breakpoints: bool) -> kvm_guest_debug {
    let mut dbg = kvm_guest_debug::default();
    if !config.attached {
        return dbg;
    }
    let armed = breakpoints && config.registers.iter().any(Option::is_some);
    if !armed && !step {
        return dbg;
    }
    dbg.control = KVM_GUESTDBG_ENABLE;
    if step {
        dbg.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    if armed {
        dbg.control |= KVM_GUESTDBG_USE_HW_BP;
        let mut dr7 = 0x400u64; // bit 10 reads as 1
        for (slot, register) in config.registers.iter().enumerate() {
            if let Some(register) = register {
                dbg.arch.debugreg[slot] = register.addr;
                dr7 |= register.dr7_bits(slot);
            }
        }
        dbg.arch.debugreg[7] = dr7;
    }
    dbg
}

fn set_guest_debug(vcpu: &Vcpu, index: usize, dbg: &kvm_guest_debug) {
    if let Err(e) = vcpu.as_raw().set_guest_debug(dbg) {
        eprintln!("vmkit: vCPU {index}: KVM_SET_GUEST_DEBUG failed: {e}");
    }
}

/// The int3 the debugger planted at linear `pc`, if it is still in memory there.
fn planted_at(
    config: &GuestDebugConfig,
    pc: u64,
    memory: &dyn GuestMemoryReader,
) -> Option<SoftwareBreakpoint> {
    if !config.attached {
        return None;
    }
    let planted = config.software.iter().find(|p| p.addr == pc)?;
    let mut byte = [0u8];
    (memory.read_guest(planted.gpa, &mut byte) && byte[0] == vmkit_gdb::INT3).then_some(*planted)
}

/// Puts back the int3 stepped over (taken from `stepping`), if the debugger still has it
/// planted.
fn replant(
    stepping: &mut Option<SoftwareBreakpoint>,
    config: &GuestDebugConfig,
    memory: &dyn GuestMemoryReader,
) {
    if let Some(planted) = stepping.take() {
        if config.attached && config.software.iter().any(|p| p.gpa == planted.gpa) {
            memory.write_guest(planted.gpa, &[vmkit_gdb::INT3]);
        }
    }
}

/// Guest virtual to physical with `KVM_TRANSLATE`, or by walking the guest's page tables
/// where that fails.
fn translate(vcpu: &Vcpu, gva: u64, memory: &dyn GuestMemoryReader) -> Option<u64> {
    if let Ok(Some(gpa)) = vcpu.translate_gva(gva) {
        return Some(gpa);
    }
    let sregs = vcpu.sregs().ok()?;
    let state = vmkit_gdb::paging::PagingState {
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
    };
    vmkit_gdb::paging::translate(&state, gva, &mut |gpa, buf| memory.read_guest(gpa, buf))
}

/// The linear address of the next instruction (CS base + RIP).
fn linear_pc(vcpu: &Vcpu) -> Option<u64> {
    let regs = vcpu.regs().ok()?;
    let sregs = vcpu.sregs().ok()?;
    Some(sregs.cs.base.wrapping_add(regs.rip))
}

impl VcpuDebug {
    /// Called when the vCPU leaves its park: arms what the debugger asked for.
    pub(crate) fn on_resume(
        &mut self,
        controller: &crate::Controller,
        vcpu: &Vcpu,
        index: usize,
        memory: &dyn GuestMemoryReader,
    ) {
        let Some(config) = controller.debug_config(&mut self.generation) else {
            return;
        };
        // A step over a planted int3 that a park interrupted: the int3 goes back first.
        replant(&mut self.stepping_over_int3, &config, memory);
        self.config = config;
        self.stepping_over = false;
        self.snapshot_watched(vcpu, memory);
        let config = &self.config;
        let step = config.step == Some(index) || watching(config);
        let pc = linear_pc(vcpu);
        let at_breakpoint = config.attached
            && config
                .registers
                .iter()
                .flatten()
                .any(|r| r.kind == DebugRegisterKind::Execute && Some(r.addr) == pc);
        let at_int3 = pc.and_then(|pc| planted_at(config, pc, memory));
        if let Some(planted) = at_int3 {
            // Resumed at a planted int3 (QMP cont, or a client that does not step over it):
            // the original byte for one step, then the int3 again.
            memory.write_guest(planted.gpa, &[planted.original]);
            self.stepping_over_int3 = Some(planted);
        }
        if at_breakpoint || at_int3.is_some() {
            self.stepping_over = true;
            set_guest_debug(vcpu, index, &guest_debug(config, true, false));
        } else {
            set_guest_debug(vcpu, index, &guest_debug(config, step, true));
        }
    }

    /// KVM could not emulate an instruction: if it is an int3 the debugger planted, that is
    /// its breakpoint's hit (this host's KVM ends a protected-mode int3 this way instead of
    /// with `KVM_EXIT_DEBUG`). The vCPU stays at the int3. False if it is not one (the guest's
    /// own int3 then goes on to the guest).
    pub(crate) fn on_emulation_failure(
        &mut self,
        controller: &crate::Controller,
        vcpu: &Vcpu,
        index: usize,
        memory: &dyn GuestMemoryReader,
    ) -> bool {
        if self.config.software.is_empty() {
            return false;
        }
        let Some(pc) = linear_pc(vcpu) else {
            return false;
        };
        if planted_at(&self.config, pc, memory).is_none() {
            return false;
        }
        // With the debugger gone (its stub puts the bytes back while the guest is stopped),
        // running the instruction again finds the original byte.
        let _ = controller.debug_stop(StopEvent::SoftwareBreakpoint { vcpu: index });
        true
    }

    fn snapshot_watched(&mut self, vcpu: &Vcpu, memory: &dyn GuestMemoryReader) {
        self.watched.clear();
        if !watching(&self.config) {
            return;
        }
        for (slot, register) in self.config.registers.iter().enumerate() {
            let Some(register) = register.filter(|r| r.kind != DebugRegisterKind::Execute) else {
                continue;
            };
            let Some(gpa) = translate(vcpu, register.addr, memory) else {
                continue;
            };
            let mut bytes = vec![0u8; usize::from(register.len)];
            if memory.read_guest(gpa, &mut bytes) {
                self.watched.push((slot, gpa, bytes));
            }
        }
    }

    /// The first watched slot whose bytes changed (and remembers the new bytes).
    fn watched_change(&mut self, memory: &dyn GuestMemoryReader) -> Option<usize> {
        let mut hit = None;
        for (slot, gpa, old) in &mut self.watched {
            let mut now = vec![0u8; old.len()];
            if memory.read_guest(*gpa, &mut now) && now != *old {
                *old = now;
                hit = hit.or(Some(*slot));
            }
        }
        hit
    }

    /// A `KVM_EXIT_DEBUG` with this DR6.
    pub(crate) fn on_debug_exit(
        &mut self,
        controller: &crate::Controller,
        vcpu: &Vcpu,
        index: usize,
        dr6: u64,
        memory: &dyn GuestMemoryReader,
    ) {
        let user_step = self.config.step == Some(index);
        if self.stepping_over {
            // Past the breakpoint: re-arm (and re-plant an int3 stepped over).
            self.stepping_over = false;
            replant(&mut self.stepping_over_int3, &self.config, memory);
            let step = user_step || watching(&self.config);
            set_guest_debug(vcpu, index, &guest_debug(&self.config, step, true));
        }
        let slot_hit = (0..vmkit_gdb::MAX_DEBUG_REGISTERS)
            .find(|slot| dr6 & (1 << slot) != 0 && self.config.registers[*slot].is_some());
        let event = if let Some(slot) = self.watched_change(memory).or(slot_hit) {
            StopEvent::DebugRegister { vcpu: index, slot }
        } else if user_step || dr6 & (1 << 14) == 0 {
            StopEvent::Stepped { vcpu: index }
        } else {
            // A step of the watchpoint emulation (or past a breakpoint) with nothing to
            // report: run on.
            return;
        };
        if !controller.debug_stop(event) {
            // Nobody is listening any more: stop trapping.
            set_guest_debug(vcpu, index, &kvm_guest_debug::default());
        }
    }
}

/// The debugger's view of a running VM: what the gdb stub drives.
#[derive(Debug, Clone)]
pub struct VmDebugTarget {
    vm: VmmHandle,
}

impl VmDebugTarget {
    /// A debug target over `vm`.
    pub fn new(vm: VmmHandle) -> Self {
        Self { vm }
    }

    fn on_vcpu<R: Send + 'static>(
        &self,
        vcpu: usize,
        what: &str,
        job: impl FnOnce(&mut Vcpu) -> Result<R, vmkit_kvm::Error> + Send + 'static,
    ) -> Result<R, GdbError> {
        match self.vm.controller().run_on_vcpu(vcpu, VCPU_JOB_LIMIT, job) {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(GdbError::Vcpu {
                vcpu,
                what: format!("{what}: {e}"),
            }),
            None => Err(GdbError::Vcpu {
                vcpu,
                what: format!("{what}: the vCPU did not answer (has the machine ended?)"),
            }),
        }
    }
}

/// `MSR_KERNEL_GS_BASE`.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

fn read_kernel_gs_base(vcpu: &Vcpu) -> Result<u64, vmkit_kvm::Error> {
    let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: MSR_KERNEL_GS_BASE,
        ..Default::default()
    }])
    .map_err(|_| vmkit_kvm::Error::InvalidState("one MSR does not fit KVM_GET_MSRS".into()))?;
    let read = vcpu.get_msrs(&mut msrs)?;
    Ok(if read == 1 {
        msrs.as_slice()[0].data
    } else {
        0
    })
}

fn read_all_registers(vcpu: &Vcpu) -> Result<X86_64Regs, vmkit_kvm::Error> {
    let sregs = vcpu.sregs()?;
    Ok(X86_64Regs {
        core: registers_from(&vcpu.regs()?, &sregs, &vcpu.fpu()?),
        system: X86SystemRegs {
            fs_base: sregs.fs.base,
            gs_base: sregs.gs.base,
            k_gs_base: read_kernel_gs_base(vcpu)?,
            cr0: sregs.cr0,
            cr2: sregs.cr2,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            cr8: sregs.cr8,
            efer: sregs.efer,
        },
    })
}

/// Applies the system registers gdb changed: segment bases and control registers through
/// `KVM_SET_SREGS` (KVM refuses combinations the CPU would not take: CR0.PG without PE,
/// long mode without PAE, ...), `k_gs_base` through its MSR. EFER.LMA is the CPU's to set:
/// it follows LME and CR0.PG and is not taken from gdb.
fn apply_system_registers(vcpu: &Vcpu, new: &X86SystemRegs) -> Result<(), vmkit_kvm::Error> {
    const EFER_LMA: u64 = 1 << 10;
    let mut sregs = vcpu.sregs()?;
    let before = sregs;
    sregs.fs.base = new.fs_base;
    sregs.gs.base = new.gs_base;
    sregs.cr0 = new.cr0;
    sregs.cr2 = new.cr2;
    sregs.cr3 = new.cr3;
    sregs.cr4 = new.cr4;
    sregs.cr8 = new.cr8;
    sregs.efer = (new.efer & !EFER_LMA) | (before.efer & EFER_LMA);
    let changed = (sregs.fs.base, sregs.gs.base, sregs.cr0, sregs.cr2)
        != (before.fs.base, before.gs.base, before.cr0, before.cr2)
        || (sregs.cr3, sregs.cr4, sregs.cr8, sregs.efer)
            != (before.cr3, before.cr4, before.cr8, before.efer);
    if changed {
        vcpu.set_sregs(&sregs)?;
    }
    if new.k_gs_base != read_kernel_gs_base(vcpu)? {
        let msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index: MSR_KERNEL_GS_BASE,
            data: new.k_gs_base,
            ..Default::default()
        }])
        .map_err(|_| vmkit_kvm::Error::InvalidState("one MSR does not fit KVM_SET_MSRS".into()))?;
        vcpu.set_msrs(&msrs)?;
    }
    Ok(())
}

fn registers_from(
    regs: &kvm_bindings::kvm_regs,
    sregs: &kvm_bindings::kvm_sregs,
    fpu: &kvm_bindings::kvm_fpu,
) -> X86_64CoreRegs {
    let mut out = X86_64CoreRegs {
        regs: [
            regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        eflags: regs.rflags as u32,
        rip: regs.rip,
        ..Default::default()
    };
    out.segments.cs = u32::from(sregs.cs.selector);
    out.segments.ss = u32::from(sregs.ss.selector);
    out.segments.ds = u32::from(sregs.ds.selector);
    out.segments.es = u32::from(sregs.es.selector);
    out.segments.fs = u32::from(sregs.fs.selector);
    out.segments.gs = u32::from(sregs.gs.selector);
    for (st, fpr) in out.st.iter_mut().zip(fpu.fpr.iter()) {
        st.copy_from_slice(&fpr[..10]);
    }
    out.fpu.fctrl = u32::from(fpu.fcw);
    out.fpu.fstat = u32::from(fpu.fsw);
    // KVM keeps the abridged (FXSAVE) tag byte: bit set = valid (tag 00), clear = empty (11).
    out.fpu.ftag = (0..8).fold(0u32, |tag, i| {
        tag | if fpu.ftwx & (1 << i) != 0 {
            0
        } else {
            3 << (2 * i)
        }
    });
    out.fpu.fop = u32::from(fpu.last_opcode);
    out.fpu.fioff = fpu.last_ip as u32;
    out.fpu.fiseg = (fpu.last_ip >> 32) as u32 & 0xffff;
    out.fpu.fooff = fpu.last_dp as u32;
    out.fpu.foseg = (fpu.last_dp >> 32) as u32 & 0xffff;
    for (xmm, bytes) in out.xmm.iter_mut().zip(fpu.xmm.iter()) {
        *xmm = u128::from_le_bytes(*bytes);
    }
    out.mxcsr = fpu.mxcsr;
    out
}

fn apply_registers(vcpu: &Vcpu, new: &X86_64CoreRegs) -> Result<(), vmkit_kvm::Error> {
    let mut regs = vcpu.regs()?;
    let r = &new.regs;
    (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (r[0], r[1], r[2], r[3]);
    (regs.rsi, regs.rdi, regs.rbp, regs.rsp) = (r[4], r[5], r[6], r[7]);
    (regs.r8, regs.r9, regs.r10, regs.r11) = (r[8], r[9], r[10], r[11]);
    (regs.r12, regs.r13, regs.r14, regs.r15) = (r[12], r[13], r[14], r[15]);
    regs.rip = new.rip;
    regs.rflags = (regs.rflags & !0xffff_ffff) | u64::from(new.eflags) | 0x2;
    vcpu.set_regs(&regs)?;
    // Segment selectors: only a real-mode guest's can be set from the selector alone.
    let mut sregs = vcpu.sregs()?;
    if sregs.cr0 & 1 == 0 {
        let mut changed = false;
        for (segment, selector) in [
            (&mut sregs.cs, new.segments.cs),
            (&mut sregs.ss, new.segments.ss),
            (&mut sregs.ds, new.segments.ds),
            (&mut sregs.es, new.segments.es),
            (&mut sregs.fs, new.segments.fs),
            (&mut sregs.gs, new.segments.gs),
        ] {
            let selector = selector as u16;
            if segment.selector != selector {
                segment.selector = selector;
                segment.base = u64::from(selector) << 4;
                changed = true;
            }
        }
        if changed {
            vcpu.set_sregs(&sregs)?;
        }
    }
    let mut fpu = vcpu.fpu()?;
    for (fpr, st) in fpu.fpr.iter_mut().zip(new.st.iter()) {
        fpr[..10].copy_from_slice(st);
    }
    fpu.fcw = new.fpu.fctrl as u16;
    fpu.fsw = new.fpu.fstat as u16;
    fpu.ftwx = (0..8).fold(0u8, |tag, i| {
        tag | if (new.fpu.ftag >> (2 * i)) & 3 != 3 {
            1 << i
        } else {
            0
        }
    });
    for (bytes, xmm) in fpu.xmm.iter_mut().zip(new.xmm.iter()) {
        *bytes = xmm.to_le_bytes();
    }
    fpu.mxcsr = new.mxcsr;
    vcpu.set_fpu(&fpu)
}

impl DebugVcpus for VmDebugTarget {
    fn vcpu_count(&self) -> usize {
        self.vm.vcpu_count()
    }

    fn pause_all(&mut self) -> Result<(), GdbError> {
        self.vm
            .controller()
            .debug_pause()
            .map_err(|e| GdbError::Machine(e.to_string()))
    }

    fn resume(&mut self, how: Resume) -> Result<(), GdbError> {
        let step = match how {
            Resume::Continue => None,
            Resume::Step(vcpu) => Some(vcpu),
        };
        self.vm
            .controller()
            .debug_resume(step)
            .map_err(|e| GdbError::Machine(e.to_string()))
    }

    fn wait_for_stop(&mut self, timeout: Duration) -> Option<StopEvent> {
        self.vm.controller().wait_debug_stop(timeout)
    }

    fn read_registers(&mut self, vcpu: usize) -> Result<X86_64Regs, GdbError> {
        self.on_vcpu(vcpu, "reading registers", |v| read_all_registers(v))
    }

    fn write_registers(&mut self, vcpu: usize, regs: &X86_64Regs) -> Result<(), GdbError> {
        let regs = regs.clone();
        self.on_vcpu(vcpu, "writing registers", move |v| {
            apply_registers(v, &regs.core)?;
            apply_system_registers(v, &regs.system)
        })
    }

    fn translate(&mut self, vcpu: usize, gva: u64) -> Result<Option<u64>, GdbError> {
        self.on_vcpu(vcpu, "KVM_TRANSLATE", move |v| v.translate_gva(gva))
    }

    fn read_physical(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        self.vm.read_guest_memory(gpa, buf)
    }

    fn write_physical(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.vm.write_guest_memory(gpa, data)
    }

    fn set_debug_registers(&mut self, registers: &DebugRegisters) -> Result<(), GdbError> {
        self.vm.controller().set_debug_registers(registers);
        Ok(())
    }

    fn int3_breakpoints(&mut self, vcpu: usize) -> Result<bool, GdbError> {
        // Measured on this host's (nested) KVM: in real mode an int3 goes to the guest's IVT
        // without any exit, even with KVM_GUESTDBG_USE_SW_BP, and at CPL 3 to the guest's
        // IDT; in protected and long mode at CPL 0 it ends in KVM_EXIT_INTERNAL_ERROR
        // (emulation) at the int3, which is recognised as the hit.
        // A vCPU stopped in user mode gets debug registers too (its int3 would reach the
        // guest's own #BP handler).
        self.on_vcpu(vcpu, "reading the CPU mode", |v| {
            let sregs = v.sregs()?;
            let protected = sregs.cr0 & 1 != 0;
            let vm86 = v.regs()?.rflags & (1 << 17) != 0;
            Ok(protected && !vm86 && sregs.ss.dpl != 3)
        })
    }

    fn set_software_breakpoints(&mut self, planted: &[SoftwareBreakpoint]) -> Result<(), GdbError> {
        self.vm.controller().set_software_breakpoints(planted);
        Ok(())
    }

    fn detach(&mut self) {
        self.vm.controller().debug_detach();
    }

    fn kill(&mut self) {
        self.vm
            .controller()
            .shutdown(ExitReason::HostRequest("killed by the debugger".into()));
    }
}

/// Serves gdb on `listener` once the VM runs (a main-loop extension), and keeps the process
/// alive at the end until a connected client has been told the exit status.
pub fn attach_gdb(
    listener: vmkit_gdb::GdbListener,
    parts: &mut crate::MachineParts,
    additions: &mut crate::MainLoopAdditions,
) {
    let slot: std::sync::Arc<std::sync::Mutex<Option<vmkit_gdb::GdbServer>>> =
        std::sync::Arc::default();
    let server_slot = std::sync::Arc::clone(&slot);
    additions.extensions.push(Box::new(move |vm: &VmmHandle| {
        let confine: std::sync::Arc<dyn Fn(&str) + Send + Sync> = std::sync::Arc::new(|_: &str| {
            crate::seccomp::thread_start(crate::seccomp::ThreadKind::Gdb)
        });
        match listener.serve_with(vm.debug_target(), confine) {
            Ok(server) => {
                *server_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
            }
            Err(e) => eprintln!("vmkit: {e}"),
        }
        Vec::new()
    }));
    parts.keep_alive.push(Box::new(LingerForClient(slot)));
}

/// Dropped after the VM's threads end: gives a connected gdb up to a second to read the
/// machine's exit (`W` packet) before the process goes.
struct LingerForClient(std::sync::Arc<std::sync::Mutex<Option<vmkit_gdb::GdbServer>>>);

impl Drop for LingerForClient {
    fn drop(&mut self) {
        if let Some(server) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            server.wait_for_client_to_leave(Duration::from_secs(1));
        }
    }
}
