//! Finishing the instructions this host's KVM hands back.
//!
//! On a nested host, KVM's instruction emulator returns a few instructions of guest kernel
//! code as `KVM_EXIT_INTERNAL_ERROR` with suberror EMULATION (1): `lock cmpxchg16b` in
//! Linux's SLUB allocator, `int3` in protected and long mode (the alternatives self-test),
//! `popcnt`. A VMM can finish such an instruction itself and resume, as Cloud Hypervisor
//! carries an x86 emulator for MSHV. This module does it where it can be done exactly:
//!
//! | instruction | what vmkit does |
//! | --- | --- |
//! | `int3` | RIP past it, #BP queued with `KVM_SET_VCPU_EVENTS`: KVM delivers it through the guest's IDT |
//! | `cmpxchg8b` / `cmpxchg16b m` | the compare-exchange done atomically on the host mapping of the guest page (the operand translated with `KVM_TRANSLATE`, writable, aligned as the SDM requires), ZF and EDX:EAX / RDX:RAX as the SDM says |
//! | `popcnt r, r/m` | the count written to the register, ZF set from the source, CF/OF/SF/AF/PF cleared |
//! | `fwait` | nothing to wait for: RIP past it; #MF queued if an unmasked x87 exception is pending (CR0.NE); left alone when CR0.TS and CR0.MP ask for #NM |
//! | `clac` / `stac` (at CPL 0) | RFLAGS.AC cleared / set (the first instruction of Linux's exception entries) |
//! | `xrstor`, `xsave`, `xsaveopt`, `xsavec` (and their 64-bit forms) | the guest's XSAVE area read or written through its page tables and the vCPU's extended state moved with `KVM_GET/SET_XSAVE`, as the SDM's chapter 13 describes (standard and compacted forms, RFBM = XCR0 & EDX:EAX, MXCSR's own rule, #GP for a misaligned area, a bad header or a reserved MXCSR bit); see [`xsave`] |
//! | `ldmxcsr` / `stmxcsr m32` (and `vldmxcsr` / `vstmxcsr`) | MXCSR moved between memory and the vCPU's XSAVE area (#GP for a bit outside MXCSR_MASK; Linux's `kernel_fpu_begin` runs `ldmxcsr` when the initramfs is unpacked) |
//!
//! Anything else (or an operand it cannot reach) is left alone: the caller stops the
//! machine with today's report. Unit tests check each instruction's results against the
//! SDM on a register-and-memory model ([`Cpu`]), the same code the vCPU path runs.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use kvm_bindings::{kvm_regs, kvm_sregs};
use vmkit_kvm::Vcpu;

use crate::dump::GuestMemoryReader;

pub mod xsave;

/// The instructions this module finishes, in the order of [`Finished::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// `int3` (#BP delivered through the guest's IDT).
    Int3,
    /// `cmpxchg8b m64`.
    Cmpxchg8b,
    /// `cmpxchg16b m128`.
    Cmpxchg16b,
    /// `popcnt r, r/m`.
    Popcnt,
    /// `clac` / `stac`.
    ClacStac,
    /// `fwait`.
    Fwait,
    /// `xrstor` / `xrstor64`.
    Xrstor,
    /// `xsave`, `xsaveopt`, `xsavec` and their 64-bit forms.
    Xsave,
    /// `ldmxcsr` / `stmxcsr` (and their VEX forms).
    Mxcsr,
}

impl Finished {
    /// Every kind, for counters.
    pub const ALL: [Finished; 9] = [
        Finished::Int3,
        Finished::Cmpxchg8b,
        Finished::Cmpxchg16b,
        Finished::Popcnt,
        Finished::ClacStac,
        Finished::Fwait,
        Finished::Xrstor,
        Finished::Xsave,
        Finished::Mxcsr,
    ];

    /// The counter's name in `query-exits` (e.g. `"finished-cmpxchg16b"`).
    pub fn counter_name(self) -> &'static str {
        match self {
            Finished::Int3 => "finished-int3",
            Finished::Cmpxchg8b => "finished-cmpxchg8b",
            Finished::Cmpxchg16b => "finished-cmpxchg16b",
            Finished::Popcnt => "finished-popcnt",
            Finished::ClacStac => "finished-clac-stac",
            Finished::Fwait => "finished-fwait",
            Finished::Xrstor => "finished-xrstor",
            Finished::Xsave => "finished-xsave",
            Finished::Mxcsr => "finished-mxcsr",
        }
    }
}

/// RFLAGS bits the finished instructions change.
const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const AC: u64 = 1 << 18;

/// What the emulation needs from a vCPU and guest memory; [`KvmCpu`] is the real one, the
/// tests use a model.
pub trait Cpu {
    /// General-purpose registers, RIP and RFLAGS.
    fn regs(&self) -> &kvm_regs;
    /// The same, to change.
    fn regs_mut(&mut self) -> &mut kvm_regs;
    /// Segment and control registers.
    fn sregs(&self) -> &kvm_sregs;
    /// The guest physical address of linear address `linear`, and whether it is writable.
    fn translate(&self, linear: u64) -> Option<(u64, bool)>;
    /// Reads guest physical memory.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// An atomic compare-exchange of `N` (8 or 16) bytes at guest physical `gpa`: if the
    /// memory equals `expected` it becomes `new` and `Ok` is returned, else `Err(current)`.
    /// `None` if `gpa` is not RAM.
    fn compare_exchange<const N: usize>(
        &mut self,
        gpa: u64,
        expected: [u8; N],
        new: [u8; N],
    ) -> Option<Result<(), [u8; N]>>;
    /// Queues exception `vector` for delivery at the next entry.
    fn queue_exception(&mut self, vector: u8) -> bool;
    /// The x87 status word (FSW), `None` if it cannot be read.
    fn fpu_status(&self) -> Option<u16>;
    /// Writes guest physical memory; false if any byte is not RAM.
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// Queues a #GP(0) for delivery at the next entry.
    fn queue_general_protection(&mut self) -> bool;
    /// XCR0, `None` if it cannot be read.
    fn xcr0(&self) -> Option<u64>;
    /// The vCPU's XSAVE area in KVM's layout (the standard, uncompacted format), to read
    /// or change; `None` if KVM cannot give it.
    fn xsave_area(&mut self) -> Option<&mut [u8]>;
    /// Offset, size and 64-byte alignment (in the compacted format) of XSAVE state
    /// component `index` (2..=62), as CPUID leaf 0xD reports them.
    fn xstate_component(&self, index: u32) -> Option<xsave::Component>;
}

/// Tries to finish the instruction at RIP. `Some(kind)`: done, registers (and memory, and
/// any queued exception) updated for the vCPU to resume; `None`: not handled, nothing
/// changed.
pub fn finish(cpu: &mut impl Cpu) -> Option<Finished> {
    let bitness = bitness(cpu.sregs());
    let linear_rip = linear(bitness, cpu.sregs().cs.base, cpu.regs().rip);
    let (bytes, len) = fetch(cpu, linear_rip)?;
    let mut decoder =
        Decoder::with_ip(bitness, &bytes[..len], cpu.regs().rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let finished = match instruction.mnemonic() {
        Mnemonic::Int3 => {
            if !cpu.queue_exception(3) {
                return None;
            }
            Finished::Int3
        }
        Mnemonic::Cmpxchg8b => cmpxchg::<8>(cpu, &instruction, bitness)?,
        Mnemonic::Cmpxchg16b => cmpxchg::<16>(cpu, &instruction, bitness)?,
        Mnemonic::Popcnt => popcnt(cpu, &instruction, bitness)?,
        Mnemonic::Xrstor | Mnemonic::Xrstor64 => {
            let outcome = xsave::xrstor(cpu, &instruction, bitness)?;
            return xsave_finished(cpu, &instruction, outcome, Finished::Xrstor);
        }
        Mnemonic::Xsave | Mnemonic::Xsave64 | Mnemonic::Xsaveopt | Mnemonic::Xsaveopt64 => {
            let outcome = xsave::xsave(cpu, &instruction, bitness, xsave::Form::Standard)?;
            return xsave_finished(cpu, &instruction, outcome, Finished::Xsave);
        }
        Mnemonic::Xsavec | Mnemonic::Xsavec64 => {
            let outcome = xsave::xsave(cpu, &instruction, bitness, xsave::Form::Compacted)?;
            return xsave_finished(cpu, &instruction, outcome, Finished::Xsave);
        }
        Mnemonic::Ldmxcsr | Mnemonic::Vldmxcsr => {
            let outcome = xsave::ldmxcsr(cpu, &instruction, bitness)?;
            return xsave_finished(cpu, &instruction, outcome, Finished::Mxcsr);
        }
        Mnemonic::Stmxcsr | Mnemonic::Vstmxcsr => {
            let outcome = xsave::stmxcsr(cpu, &instruction, bitness)?;
            return xsave_finished(cpu, &instruction, outcome, Finished::Mxcsr);
        }
        Mnemonic::Wait => {
            const CR0_MP: u64 = 1 << 1;
            const CR0_TS: u64 = 1 << 3;
            const CR0_NE: u64 = 1 << 5;
            const FSW_ES: u16 = 1 << 7;
            let cr0 = cpu.sregs().cr0;
            if cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
                return None;
            }
            if cpu.fpu_status()? & FSW_ES != 0 {
                // A pending unmasked x87 exception: #MF with CR0.NE, else the legacy
                // FERR# path, which vmkit does not model.
                if cr0 & CR0_NE == 0 || !cpu.queue_exception(16) {
                    return None;
                }
            }
            Finished::Fwait
        }
        // Privileged: #UD outside CPL 0, left to the report.
        Mnemonic::Clac | Mnemonic::Stac if cpu.sregs().cs.selector & 3 == 0 => {
            let regs = cpu.regs_mut();
            if instruction.mnemonic() == Mnemonic::Clac {
                regs.rflags &= !AC;
            } else {
                regs.rflags |= AC;
            }
            Finished::ClacStac
        }
        _ => return None,
    };
    cpu.regs_mut().rip = instruction.next_ip();
    Some(finished)
}

/// RIP past a finished XSAVE-family instruction; left on it when it faulted.
fn xsave_finished(
    cpu: &mut impl Cpu,
    instruction: &Instruction,
    outcome: xsave::Outcome,
    kind: Finished,
) -> Option<Finished> {
    if outcome == xsave::Outcome::Done {
        cpu.regs_mut().rip = instruction.next_ip();
    }
    Some(kind)
}

/// 16, 32 or 64: the code size of CS.
fn bitness(sregs: &kvm_sregs) -> u32 {
    const EFER_LMA: u64 = 1 << 10;
    if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 {
        64
    } else if sregs.cr0 & 1 != 0 && sregs.cs.db != 0 {
        32
    } else {
        16
    }
}

/// Segment base plus offset, truncated outside 64-bit mode.
fn linear(bitness: u32, base: u64, offset: u64) -> u64 {
    let address = base.wrapping_add(offset);
    if bitness == 64 {
        address
    } else {
        address & 0xffff_ffff
    }
}

/// The 15 bytes at `linear` (or fewer at the end of a mapped range), page by page, with
/// how many were read; no allocation.
fn fetch(cpu: &impl Cpu, linear: u64) -> Option<([u8; 15], usize)> {
    let mut bytes = [0u8; 15];
    let mut len = 0;
    let mut address = linear;
    while len < bytes.len() {
        let in_page = 0x1000 - (address & 0xfff) as usize;
        let take = in_page.min(bytes.len() - len);
        let Some((gpa, _)) = cpu.translate(address) else {
            break;
        };
        if !cpu.read(gpa, &mut bytes[len..len + take]) {
            break;
        }
        len += take;
        address = address.wrapping_add(take as u64);
    }
    (len > 0).then_some((bytes, len))
}

/// The value of `register` (any width) or, for a segment register, its base.
fn register_value(regs: &kvm_regs, sregs: &kvm_sregs, register: Register) -> Option<u64> {
    let segment = match register {
        Register::ES => Some(sregs.es.base),
        Register::CS => Some(sregs.cs.base),
        Register::SS => Some(sregs.ss.base),
        Register::DS => Some(sregs.ds.base),
        Register::FS => Some(sregs.fs.base),
        Register::GS => Some(sregs.gs.base),
        _ => None,
    };
    if segment.is_some() {
        return segment;
    }
    let full = gpr(regs, register.full_register())?;
    let value = if register.is_gpr8()
        && matches!(
            register,
            Register::AH | Register::CH | Register::DH | Register::BH
        ) {
        (full >> 8) & 0xff
    } else {
        match register.size() {
            1 => full & 0xff,
            2 => full & 0xffff,
            4 => full & 0xffff_ffff,
            _ => full,
        }
    };
    Some(value)
}

fn gpr(regs: &kvm_regs, full: Register) -> Option<u64> {
    Some(match full {
        Register::RAX => regs.rax,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RBX => regs.rbx,
        Register::RSP => regs.rsp,
        Register::RBP => regs.rbp,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        Register::RIP => regs.rip,
        _ => return None,
    })
}

fn gpr_mut(regs: &mut kvm_regs, full: Register) -> Option<&mut u64> {
    Some(match full {
        Register::RAX => &mut regs.rax,
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RBX => &mut regs.rbx,
        Register::RSP => &mut regs.rsp,
        Register::RBP => &mut regs.rbp,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        _ => return None,
    })
}

/// Writes a 16-, 32- or 64-bit result to `register` as the CPU does: 32-bit writes clear
/// the upper half, 16-bit writes keep it.
fn write_register(regs: &mut kvm_regs, register: Register, value: u64) -> Option<()> {
    let slot = gpr_mut(regs, register.full_register())?;
    *slot = match register.size() {
        2 => (*slot & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        8 => value,
        _ => return None,
    };
    Some(())
}

/// The guest physical address of memory operand 0 (which must be `size` bytes long, within
/// one page) and whether the page is writable.
fn memory_operand(
    cpu: &impl Cpu,
    instruction: &Instruction,
    operand: u32,
    bitness: u32,
    size: u64,
) -> Option<(u64, bool)> {
    let (regs, sregs) = (cpu.regs(), cpu.sregs());
    let address = instruction.virtual_address(operand, 0, |register, _, _| {
        register_value(regs, sregs, register)
    })?;
    let address = linear(bitness, 0, address);
    if (address & 0xfff) + size > 0x1000 {
        return None;
    }
    cpu.translate(address)
}

/// CMPXCHG8B / CMPXCHG16B: compare EDX:EAX (RDX:RAX) with the operand; equal: store
/// ECX:EBX (RCX:RBX), ZF=1; else load the operand into EDX:EAX (RDX:RAX), ZF=0.
fn cmpxchg<const N: usize>(
    cpu: &mut impl Cpu,
    instruction: &Instruction,
    bitness: u32,
) -> Option<Finished> {
    if instruction.op0_kind() != OpKind::Memory {
        return None;
    }
    let (gpa, writable) = memory_operand(cpu, instruction, 0, bitness, N as u64)?;
    // CMPXCHG16B raises #GP on a misaligned operand, and a misaligned CMPXCHG8B cannot be
    // done atomically here: both left to the report, not emulated.
    if !writable || gpa % N as u64 != 0 {
        return None;
    }
    let half = N / 2;
    let mask = if half == 8 { u64::MAX } else { 0xffff_ffff };
    let regs = cpu.regs();
    let (rax, rdx, rbx, rcx) = (
        regs.rax & mask,
        regs.rdx & mask,
        regs.rbx & mask,
        regs.rcx & mask,
    );
    let mut expected = [0u8; N];
    let mut new = [0u8; N];
    expected[..half].copy_from_slice(&rax.to_le_bytes()[..half]);
    expected[half..].copy_from_slice(&rdx.to_le_bytes()[..half]);
    new[..half].copy_from_slice(&rbx.to_le_bytes()[..half]);
    new[half..].copy_from_slice(&rcx.to_le_bytes()[..half]);
    let outcome = cpu.compare_exchange::<N>(gpa, expected, new)?;
    let regs = cpu.regs_mut();
    match outcome {
        Ok(()) => regs.rflags |= ZF,
        Err(current) => {
            regs.rflags &= !ZF;
            let mut low = [0u8; 8];
            let mut high = [0u8; 8];
            low[..half].copy_from_slice(&current[..half]);
            high[..half].copy_from_slice(&current[half..]);
            // In 32-bit form the loads write EAX/EDX, which clears their upper halves.
            regs.rax = u64::from_le_bytes(low);
            regs.rdx = u64::from_le_bytes(high);
        }
    }
    Some(if N == 16 {
        Finished::Cmpxchg16b
    } else {
        Finished::Cmpxchg8b
    })
}

/// POPCNT r, r/m: the number of set bits; ZF if the source is 0; CF, OF, SF, AF, PF cleared.
fn popcnt(cpu: &mut impl Cpu, instruction: &Instruction, bitness: u32) -> Option<Finished> {
    let destination = instruction.op0_register();
    let size = u64::from(destination.size() as u32);
    let source = match instruction.op1_kind() {
        OpKind::Register => register_value(cpu.regs(), cpu.sregs(), instruction.op1_register())?,
        OpKind::Memory => {
            let (gpa, _) = memory_operand(cpu, instruction, 1, bitness, size)?;
            let mut bytes = [0u8; 8];
            if !cpu.read(gpa, &mut bytes[..size as usize]) {
                return None;
            }
            u64::from_le_bytes(bytes)
        }
        _ => return None,
    };
    let regs = cpu.regs_mut();
    write_register(regs, destination, u64::from(source.count_ones()))?;
    regs.rflags &= !(CF | PF | AF | ZF | SF | OF);
    if source == 0 {
        regs.rflags |= ZF;
    }
    Some(Finished::Popcnt)
}

/// The real [`Cpu`]: a stopped vCPU and its guest memory.
pub struct KvmCpu<'a> {
    vcpu: &'a Vcpu,
    memory: &'a dyn GuestMemoryReader,
    regs: kvm_regs,
    sregs: kvm_sregs,
    exception: Option<(u8, Option<u32>)>,
    /// The XSAVE area, read on first use and written back by [`KvmCpu::commit`].
    xsave: Option<Vec<u8>>,
}

impl<'a> KvmCpu<'a> {
    /// Reads the vCPU's registers; `None` if KVM cannot give them.
    pub fn new(vcpu: &'a Vcpu, memory: &'a dyn GuestMemoryReader) -> Option<Self> {
        Some(Self {
            regs: vcpu.regs().ok()?,
            sregs: vcpu.sregs().ok()?,
            vcpu,
            memory,
            exception: None,
            xsave: None,
        })
    }

    /// Writes the registers (and the queued exception) back to the vCPU.
    pub fn commit(self) -> bool {
        if let Some(area) = &self.xsave {
            if self.vcpu.set_xsave_bytes(area).is_err() {
                return false;
            }
        }
        if self.vcpu.set_regs(&self.regs).is_err() {
            return false;
        }
        if let Some((vector, error_code)) = self.exception {
            let Ok(mut events) = self.vcpu.vcpu_events() else {
                return false;
            };
            events.exception.injected = 1;
            events.exception.nr = vector;
            events.exception.has_error_code = u8::from(error_code.is_some());
            events.exception.error_code = error_code.unwrap_or(0);
            if self.vcpu.set_vcpu_events(&events).is_err() {
                return false;
            }
        }
        true
    }
}

impl Cpu for KvmCpu<'_> {
    fn regs(&self) -> &kvm_regs {
        &self.regs
    }

    fn regs_mut(&mut self) -> &mut kvm_regs {
        &mut self.regs
    }

    fn sregs(&self) -> &kvm_sregs {
        &self.sregs
    }

    fn translate(&self, linear: u64) -> Option<(u64, bool)> {
        let t = self.vcpu.as_raw().translate_gva(linear).ok()?;
        (t.valid != 0).then_some((t.physical_address, t.writeable != 0))
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.memory.read_guest(gpa, buf)
    }

    fn compare_exchange<const N: usize>(
        &mut self,
        gpa: u64,
        expected: [u8; N],
        new: [u8; N],
    ) -> Option<Result<(), [u8; N]>> {
        let mut current = [0u8; N];
        match self
            .memory
            .compare_exchange(gpa, &expected, &new, &mut current)?
        {
            true => Some(Ok(())),
            false => Some(Err(current)),
        }
    }

    fn queue_exception(&mut self, vector: u8) -> bool {
        self.exception = Some((vector, None));
        true
    }

    fn fpu_status(&self) -> Option<u16> {
        self.vcpu.fpu().ok().map(|fpu| fpu.fsw)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.memory.write_guest(gpa, data)
    }

    fn queue_general_protection(&mut self) -> bool {
        self.exception = Some((13, Some(0)));
        true
    }

    fn xcr0(&self) -> Option<u64> {
        let xcrs = self.vcpu.as_raw().get_xcrs().ok()?;
        let count = usize::try_from(xcrs.nr_xcrs).ok()?;
        xcrs.xcrs
            .iter()
            .take(count)
            .find(|xcr| xcr.xcr == 0)
            .map(|xcr| xcr.value)
    }

    fn xsave_area(&mut self) -> Option<&mut [u8]> {
        if self.xsave.is_none() {
            self.xsave = Some(self.vcpu.xsave_bytes().ok()??);
        }
        self.xsave.as_deref_mut()
    }

    fn xstate_component(&self, index: u32) -> Option<xsave::Component> {
        xsave::host_component(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU in 64-bit (or 32-bit) mode over 64 KiB of identity-mapped RAM.
    struct Model {
        regs: kvm_regs,
        sregs: kvm_sregs,
        ram: Vec<u8>,
        writable: bool,
        exception: Option<u8>,
        fsw: u16,
        xcr0: u64,
        xsave: Vec<u8>,
    }

    const CODE: u64 = 0x1000;

    impl Model {
        fn long_mode(code: &[u8]) -> Self {
            let mut sregs = kvm_sregs {
                efer: 1 << 10 | 1 << 8,
                cr0: 0x8000_0001,
                ..Default::default()
            };
            sregs.cs.l = 1;
            Self::with(sregs, code)
        }

        fn protected_mode(code: &[u8]) -> Self {
            let mut sregs = kvm_sregs {
                cr0: 1,
                ..Default::default()
            };
            sregs.cs.db = 1;
            Self::with(sregs, code)
        }

        fn with(sregs: kvm_sregs, code: &[u8]) -> Self {
            let mut ram = vec![0u8; 0x10000];
            ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
            let regs = kvm_regs {
                rip: CODE,
                rflags: 2,
                ..Default::default()
            };
            Self {
                regs,
                sregs,
                ram,
                writable: true,
                exception: None,
                fsw: 0,
                xcr0: 0b10_0111,
                xsave: vec![0; 4096],
            }
        }
    }

    impl Cpu for Model {
        fn regs(&self) -> &kvm_regs {
            &self.regs
        }
        fn regs_mut(&mut self) -> &mut kvm_regs {
            &mut self.regs
        }
        fn sregs(&self) -> &kvm_sregs {
            &self.sregs
        }
        fn translate(&self, linear: u64) -> Option<(u64, bool)> {
            (linear < self.ram.len() as u64).then_some((linear, self.writable))
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let start = gpa as usize;
            match self.ram.get(start..start + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
        fn compare_exchange<const N: usize>(
            &mut self,
            gpa: u64,
            expected: [u8; N],
            new: [u8; N],
        ) -> Option<Result<(), [u8; N]>> {
            let bytes = self.ram.get_mut(gpa as usize..gpa as usize + N)?;
            if bytes == expected {
                bytes.copy_from_slice(&new);
                Some(Ok(()))
            } else {
                Some(Err(bytes.try_into().unwrap()))
            }
        }
        fn queue_exception(&mut self, vector: u8) -> bool {
            self.exception = Some(vector);
            true
        }
        fn fpu_status(&self) -> Option<u16> {
            Some(self.fsw)
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
            let start = gpa as usize;
            match self.ram.get_mut(start..start + data.len()) {
                Some(bytes) => {
                    bytes.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
        fn queue_general_protection(&mut self) -> bool {
            self.exception = Some(13);
            true
        }
        fn xcr0(&self) -> Option<u64> {
            Some(self.xcr0)
        }
        fn xsave_area(&mut self) -> Option<&mut [u8]> {
            Some(&mut self.xsave)
        }
        fn xstate_component(&self, index: u32) -> Option<xsave::Component> {
            // A model table: AVX as on real CPUs, component 5 64-byte aligned when compacted.
            match index {
                2 => Some(xsave::Component {
                    offset: 576,
                    size: 250,
                    align64: false,
                }),
                5 => Some(xsave::Component {
                    offset: 1088,
                    size: 64,
                    align64: true,
                }),
                _ => None,
            }
        }
    }

    fn u64_at(ram: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(ram[at..at + 8].try_into().unwrap())
    }

    // lock cmpxchg16b [rdi]
    const LOCK_CMPXCHG16B_RDI: [u8; 5] = [0xf0, 0x48, 0x0f, 0xc7, 0x0f];

    #[test]
    fn cmpxchg16b_equal_stores_rcx_rbx_and_sets_zf() {
        let mut cpu = Model::long_mode(&LOCK_CMPXCHG16B_RDI);
        cpu.ram[0x2000..0x2008].copy_from_slice(&1u64.to_le_bytes());
        cpu.ram[0x2008..0x2010].copy_from_slice(&2u64.to_le_bytes());
        cpu.regs.rdi = 0x2000;
        (cpu.regs.rax, cpu.regs.rdx) = (1, 2);
        (cpu.regs.rbx, cpu.regs.rcx) = (0x1111, 0x2222);
        assert_eq!(finish(&mut cpu), Some(Finished::Cmpxchg16b));
        assert_eq!(u64_at(&cpu.ram, 0x2000), 0x1111);
        assert_eq!(u64_at(&cpu.ram, 0x2008), 0x2222);
        assert_ne!(cpu.regs.rflags & ZF, 0);
        assert_eq!((cpu.regs.rax, cpu.regs.rdx), (1, 2));
        assert_eq!(cpu.regs.rip, CODE + 5);
    }

    #[test]
    fn cmpxchg16b_unequal_loads_rdx_rax_and_clears_zf() {
        let mut cpu = Model::long_mode(&LOCK_CMPXCHG16B_RDI);
        cpu.ram[0x2000..0x2008].copy_from_slice(&7u64.to_le_bytes());
        cpu.ram[0x2008..0x2010].copy_from_slice(&8u64.to_le_bytes());
        cpu.regs.rdi = 0x2000;
        cpu.regs.rflags |= ZF;
        (cpu.regs.rax, cpu.regs.rdx) = (1, 2);
        assert_eq!(finish(&mut cpu), Some(Finished::Cmpxchg16b));
        assert_eq!((cpu.regs.rax, cpu.regs.rdx), (7, 8));
        assert_eq!(cpu.regs.rflags & ZF, 0);
        assert_eq!(u64_at(&cpu.ram, 0x2000), 7, "memory unchanged");
    }

    #[test]
    fn misaligned_read_only_or_unmapped_operands_are_left_alone() {
        for (rdi, writable) in [(0x2008u64, true), (0x2000, false), (0x10_0000, true)] {
            let mut cpu = Model::long_mode(&LOCK_CMPXCHG16B_RDI);
            cpu.regs.rdi = rdi;
            cpu.writable = writable;
            let before = cpu.regs;
            assert_eq!(finish(&mut cpu), None, "rdi {rdi:#x}");
            assert_eq!(cpu.regs.rip, before.rip);
            assert_eq!(cpu.regs.rflags, before.rflags);
        }
    }

    #[test]
    fn cmpxchg8b_in_32_bit_mode_uses_edx_eax_and_ecx_ebx() {
        // lock cmpxchg8b [esi + 8]
        let mut cpu = Model::protected_mode(&[0xf0, 0x0f, 0xc7, 0x4e, 0x08]);
        cpu.ram[0x3008..0x300c].copy_from_slice(&5u32.to_le_bytes());
        cpu.ram[0x300c..0x3010].copy_from_slice(&6u32.to_le_bytes());
        cpu.regs.rsi = 0x3000;
        // Upper halves are ignored in the compare.
        (cpu.regs.rax, cpu.regs.rdx) = (0xdead_0000_0000_0005, 6);
        (cpu.regs.rbx, cpu.regs.rcx) = (0xa, 0xb);
        assert_eq!(finish(&mut cpu), Some(Finished::Cmpxchg8b));
        assert_eq!(u64_at(&cpu.ram, 0x3008), 0xb_0000_000a);
        assert_ne!(cpu.regs.rflags & ZF, 0);
        assert_eq!(cpu.regs.rip, CODE + 5);
        // Now unequal: EDX:EAX loaded (zero-extended).
        cpu.regs.rip = CODE;
        assert_eq!(finish(&mut cpu), Some(Finished::Cmpxchg8b));
        assert_eq!((cpu.regs.rax, cpu.regs.rdx), (0xa, 0xb));
        assert_eq!(cpu.regs.rflags & ZF, 0);
    }

    #[test]
    fn popcnt_counts_sets_zf_and_clears_the_other_flags() {
        // popcnt rax, rdi: the instruction Linux hit on this host.
        let mut cpu = Model::long_mode(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7]);
        cpu.regs.rdi = 0xf0f0_0000_0000_0001;
        cpu.regs.rflags = 2 | CF | OF | SF | AF | PF | ZF;
        assert_eq!(finish(&mut cpu), Some(Finished::Popcnt));
        assert_eq!(cpu.regs.rax, 9);
        assert_eq!(cpu.regs.rflags, 2);
        assert_eq!(cpu.regs.rip, CODE + 5);

        // popcnt eax, ecx with ECX = 0: ZF, and the 32-bit write clears RAX's upper half.
        let mut cpu = Model::long_mode(&[0xf3, 0x0f, 0xb8, 0xc1]);
        cpu.regs.rax = u64::MAX;
        cpu.regs.rcx = 0xffff_ffff_0000_0000;
        assert_eq!(finish(&mut cpu), Some(Finished::Popcnt));
        assert_eq!(cpu.regs.rax, 0);
        assert_eq!(cpu.regs.rflags, 2 | ZF);

        // popcnt ax, word [rbx]: a 16-bit write keeps the rest of RAX.
        let mut cpu = Model::long_mode(&[0x66, 0xf3, 0x0f, 0xb8, 0x03]);
        cpu.regs.rax = 0x1234_5678_9abc_def0;
        cpu.regs.rbx = 0x4000;
        cpu.ram[0x4000..0x4002].copy_from_slice(&0x0707u16.to_le_bytes());
        assert_eq!(finish(&mut cpu), Some(Finished::Popcnt));
        assert_eq!(cpu.regs.rax, 0x1234_5678_9abc_0006);
    }

    #[test]
    fn int3_queues_breakpoint_after_the_instruction() {
        let mut cpu = Model::protected_mode(&[0xcc]);
        assert_eq!(finish(&mut cpu), Some(Finished::Int3));
        assert_eq!(cpu.exception, Some(3));
        assert_eq!(cpu.regs.rip, CODE + 1);
    }

    #[test]
    fn clac_and_stac_change_ac_at_cpl_0_only() {
        let mut cpu = Model::long_mode(&[0x0f, 0x01, 0xca]);
        cpu.regs.rflags |= AC;
        assert_eq!(finish(&mut cpu), Some(Finished::ClacStac));
        assert_eq!(cpu.regs.rflags & AC, 0);
        assert_eq!(cpu.regs.rip, CODE + 3);
        let mut cpu = Model::long_mode(&[0x0f, 0x01, 0xcb]);
        assert_eq!(finish(&mut cpu), Some(Finished::ClacStac));
        assert_ne!(cpu.regs.rflags & AC, 0);
        let mut cpu = Model::long_mode(&[0x0f, 0x01, 0xcb]);
        cpu.sregs.cs.selector = 0x33;
        assert_eq!(finish(&mut cpu), None);
    }

    #[test]
    fn fwait_passes_raises_mf_or_is_left_for_nm() {
        let mut cpu = Model::long_mode(&[0x9b]);
        cpu.sregs.cr0 |= 1 << 5;
        assert_eq!(finish(&mut cpu), Some(Finished::Fwait));
        assert_eq!((cpu.regs.rip, cpu.exception), (CODE + 1, None));
        // An unmasked exception pending (FSW.ES): #MF.
        let mut cpu = Model::long_mode(&[0x9b]);
        cpu.sregs.cr0 |= 1 << 5;
        cpu.fsw = 0x80;
        assert_eq!(finish(&mut cpu), Some(Finished::Fwait));
        assert_eq!(cpu.exception, Some(16));
        // CR0.TS and CR0.MP: #NM, not emulated.
        let mut cpu = Model::long_mode(&[0x9b]);
        cpu.sregs.cr0 |= 0b1010;
        assert_eq!(finish(&mut cpu), None);
        assert_eq!(cpu.regs.rip, CODE);
    }

    #[test]
    fn other_instructions_are_not_touched() {
        for code in [&[0x90u8][..], &[0x0f, 0x0b], &[0xf4]] {
            let mut cpu = Model::long_mode(code);
            assert_eq!(finish(&mut cpu), None, "{code:x?}");
            assert_eq!(cpu.regs.rip, CODE);
            assert_eq!(cpu.exception, None);
        }
        // No code mapped at RIP.
        let mut cpu = Model::long_mode(&[]);
        cpu.regs.rip = 0x10_0000;
        assert_eq!(finish(&mut cpu), None);
    }

    const AREA: usize = 0x3000;
    // xrstor64 [rdi], xsave64 [rdi], xsavec64 [rdi]
    const XRSTOR64_RDI: [u8; 4] = [0x48, 0x0f, 0xae, 0x2f];
    const XSAVE64_RDI: [u8; 4] = [0x48, 0x0f, 0xae, 0x27];
    const XSAVEC64_RDI: [u8; 4] = [0x48, 0x0f, 0xc7, 0x27];

    fn xsave_cpu(code: &[u8], rfbm: u64) -> Model {
        let mut cpu = Model::long_mode(code);
        cpu.sregs.cr4 |= 1 << 18;
        cpu.regs.rdi = AREA as u64;
        (cpu.regs.rax, cpu.regs.rdx) = (rfbm & 0xffff_ffff, rfbm >> 32);
        cpu
    }

    // ldmxcsr [rsp+4], stmxcsr [rdi]
    const LDMXCSR_RSP4: [u8; 5] = [0x0f, 0xae, 0x54, 0x24, 0x04];
    const STMXCSR_RDI: [u8; 3] = [0x0f, 0xae, 0x1f];

    fn sse_cpu(code: &[u8]) -> Model {
        let mut cpu = Model::long_mode(code);
        cpu.sregs.cr4 |= 1 << 9;
        cpu
    }

    #[test]
    fn ldmxcsr_loads_mxcsr_and_marks_sse_state_in_use() {
        let mut cpu = sse_cpu(&LDMXCSR_RSP4);
        cpu.regs.rsp = 0x4000;
        cpu.ram[0x4004..0x4008].copy_from_slice(&0x1fa0u32.to_le_bytes());
        cpu.xsave[160..176].fill(0x77);
        assert_eq!(finish(&mut cpu), Some(Finished::Mxcsr));
        assert_eq!(cpu.exception, None);
        assert_eq!(cpu.regs.rip, CODE + 5);
        assert_eq!(
            u32::from_le_bytes(cpu.xsave[24..28].try_into().unwrap()),
            0x1fa0
        );
        assert_eq!(u64_at(&cpu.xsave, 512) & 0b10, 0b10);
        assert!(cpu.xsave[160..176].iter().all(|&b| b == 0x77), "XMM kept");
    }

    #[test]
    fn ldmxcsr_with_a_reserved_bit_raises_gp_and_keeps_mxcsr() {
        for (mask, value) in [(0u32, 0x40u32), (0xffbf, 0x1_0000), (0xffff, 0x1_0000)] {
            let mut cpu = sse_cpu(&LDMXCSR_RSP4);
            cpu.regs.rsp = 0x4000;
            cpu.ram[0x4004..0x4008].copy_from_slice(&value.to_le_bytes());
            cpu.xsave[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
            cpu.xsave[28..32].copy_from_slice(&mask.to_le_bytes());
            let before = cpu.xsave.clone();
            assert_eq!(finish(&mut cpu), Some(Finished::Mxcsr), "{value:#x}");
            assert_eq!(cpu.exception, Some(13), "{value:#x} under mask {mask:#x}");
            assert_eq!(cpu.regs.rip, CODE, "#GP is a fault: RIP stays");
            assert_eq!(cpu.xsave, before);
        }
        // With MXCSR_MASK 0xffff, DAZ (bit 6) is allowed.
        let mut cpu = sse_cpu(&LDMXCSR_RSP4);
        cpu.regs.rsp = 0x4000;
        cpu.ram[0x4004..0x4008].copy_from_slice(&0x40u32.to_le_bytes());
        cpu.xsave[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        assert_eq!(finish(&mut cpu), Some(Finished::Mxcsr));
        assert_eq!(cpu.exception, None);
    }

    #[test]
    fn stmxcsr_stores_mxcsr() {
        let mut cpu = sse_cpu(&STMXCSR_RDI);
        cpu.regs.rdi = 0x5000;
        cpu.xsave[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        assert_eq!(finish(&mut cpu), Some(Finished::Mxcsr));
        assert_eq!(cpu.regs.rip, CODE + 3);
        assert_eq!(&cpu.ram[0x5000..0x5004], &0x1f80u32.to_le_bytes());
        let mut read_only = sse_cpu(&STMXCSR_RDI);
        read_only.writable = false;
        assert_eq!(finish(&mut read_only), None, "no #PF modelled: left alone");
    }

    #[test]
    fn mxcsr_instructions_without_sse_enabled_are_left_to_the_report() {
        for setup in [
            |cpu: &mut Model| cpu.sregs.cr4 &= !(1 << 9),
            |cpu: &mut Model| cpu.sregs.cr0 |= 1 << 3,
            |cpu: &mut Model| cpu.sregs.cr0 |= 1 << 2,
        ] {
            let mut cpu = sse_cpu(&STMXCSR_RDI);
            setup(&mut cpu);
            assert_eq!(finish(&mut cpu), None);
            assert_eq!(cpu.regs.rip, CODE);
        }
    }

    #[test]
    fn xrstor_loads_asked_components_initializes_the_rest_and_leaves_others() {
        let mut cpu = xsave_cpu(&XRSTOR64_RDI, 0b10_0111);
        let ram = &mut cpu.ram[AREA..];
        ram[0..2].copy_from_slice(&0x1234u16.to_le_bytes());
        ram[24..28].copy_from_slice(&0x1f81u32.to_le_bytes());
        ram[160..176].fill(0xaa);
        ram[576..826].fill(0xbb);
        ram[1088..1152].fill(0xcc);
        ram[512..520].copy_from_slice(&0b0111u64.to_le_bytes());
        cpu.xsave[1088..1152].fill(0xee);
        cpu.xsave[400..416].fill(0x11);
        assert_eq!(finish(&mut cpu), Some(Finished::Xrstor));
        assert_eq!(cpu.exception, None);
        assert_eq!(cpu.regs.rip, CODE + 4);
        assert_eq!(&cpu.xsave[0..2], &0x1234u16.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(cpu.xsave[24..28].try_into().unwrap()),
            0x1f81
        );
        assert!(cpu.xsave[160..176].iter().all(|&b| b == 0xaa));
        // XMM15 came from memory too (zeros there), AVX from memory, component 5 (its
        // XSTATE_BV bit clear) initialized, though memory holds 0xcc.
        assert!(cpu.xsave[400..416].iter().all(|&b| b == 0));
        assert!(cpu.xsave[576..826].iter().all(|&b| b == 0xbb));
        assert!(cpu.xsave[1088..1152].iter().all(|&b| b == 0));
        assert_eq!(u64_at(&cpu.xsave, 512) & 0b10_0111, 0b10_0111);
    }

    #[test]
    fn xrstor_standard_form_loads_mxcsr_for_avx_alone() {
        let mut cpu = xsave_cpu(&XRSTOR64_RDI, 0b100);
        cpu.ram[AREA + 24..AREA + 28].copy_from_slice(&0x1f82u32.to_le_bytes());
        cpu.ram[AREA + 160..AREA + 176].fill(0xaa);
        cpu.xsave[160..176].fill(0x55);
        assert_eq!(finish(&mut cpu), Some(Finished::Xrstor));
        assert_eq!(
            u32::from_le_bytes(cpu.xsave[24..28].try_into().unwrap()),
            0x1f82
        );
        assert!(
            cpu.xsave[160..176].iter().all(|&b| b == 0x55),
            "XMM not asked for"
        );
    }

    #[test]
    fn xrstor_faults_raise_gp_and_change_nothing() {
        type Setup = fn(&mut Model);
        let cases: [(&str, Setup); 4] = [
            ("misaligned area", |cpu| cpu.regs.rdi += 8),
            ("XSTATE_BV bit outside XCR0", |cpu| {
                cpu.ram[AREA + 512..AREA + 520].copy_from_slice(&0b1000u64.to_le_bytes())
            }),
            ("reserved header bytes", |cpu| cpu.ram[AREA + 530] = 1),
            ("reserved MXCSR bit", |cpu| {
                cpu.ram[AREA + 24..AREA + 28].copy_from_slice(&0x40u32.to_le_bytes())
            }),
        ];
        for (case, setup) in cases {
            let mut cpu = xsave_cpu(&XRSTOR64_RDI, 0b111);
            cpu.xsave[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
            setup(&mut cpu);
            let before = cpu.xsave.clone();
            assert_eq!(finish(&mut cpu), Some(Finished::Xrstor), "{case}");
            assert_eq!(cpu.exception, Some(13), "{case}");
            assert_eq!(cpu.regs.rip, CODE, "{case}: #GP is a fault, RIP stays");
            assert_eq!(cpu.xsave, before, "{case}");
        }
    }

    #[test]
    fn xsave_writes_asked_components_and_merges_xstate_bv() {
        let mut cpu = xsave_cpu(&XSAVE64_RDI, 0b111);
        cpu.xsave[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        cpu.xsave[24..32].copy_from_slice(&[0x80, 0x1f, 0, 0, 0xff, 0xff, 0, 0]);
        cpu.xsave[160..416].fill(0x42);
        cpu.xsave[576..826].fill(0x43);
        cpu.xsave[1088..1152].fill(0x44);
        cpu.xsave[512..520].copy_from_slice(&0b10_0101u64.to_le_bytes());
        cpu.ram[AREA + 512..AREA + 520].copy_from_slice(&0x20u64.to_le_bytes());
        assert_eq!(finish(&mut cpu), Some(Finished::Xsave));
        let ram = &cpu.ram[AREA..];
        assert_eq!(&ram[0..2], &0x037fu16.to_le_bytes());
        assert_eq!(&ram[24..32], &cpu.xsave[24..32]);
        assert!(ram[160..416].iter().all(|&b| b == 0x42));
        assert!(ram[576..826].iter().all(|&b| b == 0x43));
        assert!(
            ram[1088..1152].iter().all(|&b| b == 0),
            "component 5 not asked for"
        );
        // Bits 0-2 from XINUSE (SSE not in use), bit 5 left as it was.
        assert_eq!(u64_at(ram, 512), 0b10_0101);
    }

    #[test]
    fn xsavec_compacts_and_xrstor_reads_it_back() {
        let rfbm = 0b10_0111;
        let mut cpu = xsave_cpu(&XSAVEC64_RDI, rfbm);
        cpu.xsave[0..2].copy_from_slice(&0x0370u16.to_le_bytes());
        cpu.xsave[160..416].fill(0x42);
        cpu.xsave[576..826].fill(0x43);
        cpu.xsave[1088..1152].fill(0x44);
        cpu.xsave[512..520].copy_from_slice(&rfbm.to_le_bytes());
        let finished = finish(&mut cpu);
        if core::arch::x86_64::__cpuid_count(0xd, 1).eax & 2 == 0 {
            assert_eq!(finished, None, "XSAVEC without the host's support");
            return;
        }
        assert_eq!(finished, Some(Finished::Xsave));
        let ram = &cpu.ram[AREA..];
        assert_eq!(u64_at(ram, 512), rfbm);
        assert_eq!(u64_at(ram, 520), rfbm | 1 << 63);
        assert!(ram[576..826].iter().all(|&b| b == 0x43));
        // Component 5 is 64-byte aligned: 826 rounds up to 832.
        assert!(ram[826..832].iter().all(|&b| b == 0));
        assert!(ram[832..896].iter().all(|&b| b == 0x44));

        let saved = cpu.xsave.clone();
        cpu.xsave[..1152].fill(0);
        cpu.regs.rip = CODE;
        cpu.ram[CODE as usize..CODE as usize + 4].copy_from_slice(&XRSTOR64_RDI);
        assert_eq!(finish(&mut cpu), Some(Finished::Xrstor));
        assert_eq!(cpu.exception, None);
        assert_eq!(&cpu.xsave[..512], &saved[..512]);
        assert_eq!(&cpu.xsave[576..1152], &saved[576..1152]);
    }

    #[test]
    fn xsave_to_a_read_only_page_is_left_to_the_report() {
        let mut cpu = xsave_cpu(&XSAVE64_RDI, 0b111);
        cpu.writable = false;
        assert_eq!(finish(&mut cpu), None);
        assert_eq!(cpu.regs.rip, CODE);
    }
}
