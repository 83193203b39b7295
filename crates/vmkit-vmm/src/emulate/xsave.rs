//! The XSAVE family (SDM volume 1, chapter 13) on the vCPU's extended state.
//!
//! The vCPU's state comes from `KVM_GET_XSAVE` in KVM's layout, the standard format with
//! every component at the offset CPUID leaf 0xD gives; the guest's area is read and
//! written through its page tables. A component XRSTOR puts in its initial configuration
//! is written into KVM's area as its explicit initial values with its XSTATE_BV bit set:
//! the registers end up the same, and XINUSE may then say "in use" for a component in its
//! initial configuration, which the SDM allows. A fault this module cannot raise exactly
//! (#PF on an unmapped or read-only page, #UD, #NM) leaves the instruction to the report.

use iced_x86::{Instruction, OpKind};

use super::{linear, register_value, Cpu};

/// Where XSAVE state component `index` lives (CPUID.(EAX=0xD, ECX=index)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Offset in the standard format (EBX).
    pub offset: u32,
    /// Size in bytes (EAX).
    pub size: u32,
    /// Aligned to 64 bytes in the compacted format (ECX bit 1).
    pub align64: bool,
}

/// The legacy region (x87 and SSE) and the header: 512 + 64 bytes.
const LEGACY_AND_HEADER: usize = 576;
const MXCSR: usize = 24;
const MXCSR_MASK: usize = 28;
const XMM: std::ops::Range<usize> = 160..416;
const X87_CONTROL: std::ops::Range<usize> = 0..24;
const X87_REGISTERS: std::ops::Range<usize> = 32..160;
const XSTATE_BV: usize = 512;
const XCOMP_BV: usize = 520;
const COMPACTED: u64 = 1 << 63;
/// MXCSR's value after a compacted XRSTOR initializes SSE state.
const MXCSR_INIT: u32 = 0x1f80;
/// The MXCSR_MASK a CPU reports as 0 means this (SDM 11.6.6).
const MXCSR_DEFAULT_MASK: u32 = 0xffbf;
/// x87 FCW's initial value.
const FCW_INIT: u16 = 0x037f;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXSAVE: u64 = 1 << 18;
/// XSTATE_BV's SSE bit: MXCSR is part of the SSE component.
const XSTATE_SSE: u64 = 1 << 1;

/// How an instruction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: RIP moves past it.
    Done,
    /// #GP(0) queued: a fault, so RIP stays on the instruction.
    Faulted,
}

/// The standard or compacted format of the extended region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// XSAVE and XSAVEOPT (which may always save as XSAVE does).
    Standard,
    /// XSAVEC.
    Compacted,
}

/// LDMXCSR / VLDMXCSR m32 (SDM vol. 2): MXCSR from memory; #GP(0) for a reserved bit
/// (one outside MXCSR_MASK). #UD (CR0.EM or no CR4.OSFXSR) and #NM (CR0.TS) are left to
/// the report. MXCSR is part of the SSE component, so its XSTATE_BV bit is set (KVM loads
/// MXCSR only then); the XMM registers KVM's area holds go back unchanged.
pub fn ldmxcsr(cpu: &mut impl Cpu, instruction: &Instruction, bitness: u32) -> Option<Outcome> {
    sse_usable(cpu)?;
    let (gpa, _) = super::memory_operand(cpu, instruction, 0, bitness, 4)?;
    let mut value = [0u8; 4];
    if !cpu.read(gpa, &mut value) {
        return None;
    }
    let value = u32::from_le_bytes(value);
    let area = cpu.xsave_area()?;
    let mask = match u32_at(area, MXCSR_MASK) {
        0 => MXCSR_DEFAULT_MASK,
        mask => mask,
    };
    if value & !mask != 0 {
        return cpu.queue_general_protection().then_some(Outcome::Faulted);
    }
    area[MXCSR..MXCSR + 4].copy_from_slice(&value.to_le_bytes());
    let xstate_bv = u64_at(area, XSTATE_BV) | XSTATE_SSE;
    area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&xstate_bv.to_le_bytes());
    Some(Outcome::Done)
}

/// STMXCSR / VSTMXCSR m32: MXCSR to memory (a writable page, else left to the report).
pub fn stmxcsr(cpu: &mut impl Cpu, instruction: &Instruction, bitness: u32) -> Option<Outcome> {
    sse_usable(cpu)?;
    let (gpa, writable) = super::memory_operand(cpu, instruction, 0, bitness, 4)?;
    if !writable {
        return None;
    }
    let value = u32_at(cpu.xsave_area()?, MXCSR);
    cpu.write(gpa, &value.to_le_bytes())
        .then_some(Outcome::Done)
}

/// `Some` if SSE instructions run: CR0.EM clear, CR4.OSFXSR set, CR0.TS clear.
fn sse_usable(cpu: &impl Cpu) -> Option<()> {
    let sregs = cpu.sregs();
    (sregs.cr0 & (CR0_EM | CR0_TS) == 0 && sregs.cr4 & CR4_OSFXSR != 0).then_some(())
}

/// This host's CPUID for component `index`, `None` for an unsupported one.
pub fn host_component(index: u32) -> Option<Component> {
    if !(2..63).contains(&index) {
        return None;
    }
    let leaf = core::arch::x86_64::__cpuid_count(0xd, index);
    (leaf.eax != 0).then_some(Component {
        offset: leaf.ebx,
        size: leaf.eax,
        align64: leaf.ecx & 2 != 0,
    })
}

/// Whether this host has XSAVEC (CPUID.(EAX=0xD, ECX=1).EAX bit 1), which the compacted
/// forms need.
fn has_compaction() -> bool {
    core::arch::x86_64::__cpuid_count(0xd, 1).eax & 2 != 0
}

/// What the instruction works on: the linear address of its area and the RFBM.
struct Operand {
    base: u64,
    rfbm: u64,
}

/// The checks every form makes before touching memory: `None` for a fault left to the
/// report, `Some(Err(()))` when #GP was queued (the instruction is done), else the operand.
fn operand(
    cpu: &mut impl Cpu,
    instruction: &Instruction,
    bitness: u32,
) -> Option<Result<Operand, ()>> {
    let sregs = cpu.sregs();
    if sregs.cr4 & CR4_OSXSAVE == 0 || sregs.cr0 & CR0_TS != 0 {
        return None;
    }
    if instruction.op0_kind() != OpKind::Memory {
        return None;
    }
    let (regs, sregs) = (cpu.regs(), cpu.sregs());
    let address = instruction
        .virtual_address(0, 0, |register, _, _| register_value(regs, sregs, register))?;
    let base = linear(bitness, 0, address);
    let mask = (cpu.regs().rdx & 0xffff_ffff) << 32 | (cpu.regs().rax & 0xffff_ffff);
    let rfbm = cpu.xcr0()? & mask;
    if base % 64 != 0 {
        return cpu.queue_general_protection().then_some(Err(()));
    }
    Some(Ok(Operand { base, rfbm }))
}

/// Reads `buf.len()` bytes at guest linear `address`, page by page.
fn read_linear(cpu: &impl Cpu, address: u64, buf: &mut [u8]) -> Option<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = address.wrapping_add(done as u64);
        let take = (0x1000 - (at & 0xfff) as usize).min(buf.len() - done);
        let (gpa, _) = cpu.translate(at)?;
        if !cpu.read(gpa, &mut buf[done..done + take]) {
            return None;
        }
        done += take;
    }
    Some(())
}

/// Whether every page of `len` bytes at `address` is mapped writable.
fn writable(cpu: &impl Cpu, address: u64, len: usize) -> bool {
    let mut page = address & !0xfff;
    let end = address.wrapping_add(len as u64);
    while page < end {
        match cpu.translate(page.max(address)) {
            Some((_, true)) => page += 0x1000,
            _ => return false,
        }
    }
    true
}

/// Writes `data` at guest linear `address`, page by page (already checked writable).
fn write_linear(cpu: &mut impl Cpu, address: u64, data: &[u8]) -> Option<()> {
    let mut done = 0;
    while done < data.len() {
        let at = address.wrapping_add(done as u64);
        let take = (0x1000 - (at & 0xfff) as usize).min(data.len() - done);
        let (gpa, _) = cpu.translate(at)?;
        if !cpu.write(gpa, &data[done..done + take]) {
            return None;
        }
        done += take;
    }
    Some(())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// The extended components (2 and up) set in `bitmap`, with where each is in the guest's
/// area: its standard offset, or packed from byte 576 in `bitmap`'s order when compacted.
fn extended_components(
    cpu: &impl Cpu,
    bitmap: u64,
    form: Form,
) -> Option<Vec<(u32, Component, usize)>> {
    let mut placed = Vec::new();
    let mut next = LEGACY_AND_HEADER;
    for index in 2..63u32 {
        if bitmap & (1 << index) == 0 {
            continue;
        }
        let component = cpu.xstate_component(index)?;
        let at = match form {
            Form::Standard => component.offset as usize,
            Form::Compacted => {
                if component.align64 {
                    next = next.next_multiple_of(64);
                }
                let at = next;
                next += component.size as usize;
                at
            }
        };
        placed.push((index, component, at));
    }
    Some(placed)
}

/// The end of the guest's area the instruction touches.
fn area_end(placed: &[(u32, Component, usize)]) -> usize {
    placed
        .iter()
        .map(|&(_, component, at)| at + component.size as usize)
        .fold(LEGACY_AND_HEADER, usize::max)
}

/// XRSTOR / XRSTOR64, standard and compacted forms.
pub(super) fn xrstor(
    cpu: &mut impl Cpu,
    instruction: &Instruction,
    bitness: u32,
) -> Option<Outcome> {
    let Operand { base, rfbm } = match operand(cpu, instruction, bitness)? {
        Ok(operand) => operand,
        Err(()) => return Some(Outcome::Faulted),
    };
    let xcr0 = cpu.xcr0()?;
    let mut head = [0u8; LEGACY_AND_HEADER];
    read_linear(cpu, base, &mut head)?;
    let xstate_bv = u64_at(&head, XSTATE_BV);
    let xcomp_bv = u64_at(&head, XCOMP_BV);
    let form = if xcomp_bv & COMPACTED != 0 {
        Form::Compacted
    } else {
        Form::Standard
    };
    let header_ok = match form {
        Form::Standard => xstate_bv & !xcr0 == 0 && head[XCOMP_BV..XCOMP_BV + 16] == [0; 16],
        Form::Compacted => {
            has_compaction()
                && xcomp_bv & !COMPACTED & !xcr0 == 0
                && xstate_bv & !xcomp_bv == 0
                && head[XCOMP_BV + 8..] == [0; 48]
        }
    };
    let mask = match u32_at(cpu.xsave_area()?, MXCSR_MASK) {
        0 => MXCSR_DEFAULT_MASK,
        mask => mask,
    };
    // Standard form loads MXCSR whenever SSE or AVX state is asked for; the compacted form
    // treats it as part of SSE state.
    let mxcsr = match form {
        Form::Standard if rfbm & 0b110 != 0 => Some(u32_at(&head, MXCSR)),
        Form::Compacted if rfbm & 0b10 != 0 && xstate_bv & 0b10 != 0 => Some(u32_at(&head, MXCSR)),
        Form::Compacted if rfbm & 0b10 != 0 => Some(MXCSR_INIT),
        _ => None,
    };
    if !header_ok || mxcsr.is_some_and(|value| value & !mask != 0) {
        cpu.queue_general_protection().then_some(())?;
        return Some(Outcome::Faulted);
    }
    // Read every component before changing anything, so a fault leaves the state whole.
    let layout = match form {
        Form::Standard => extended_components(cpu, rfbm & !0b11, Form::Standard)?,
        Form::Compacted => extended_components(cpu, xcomp_bv & !COMPACTED & !0b11, form)?,
    };
    let mut loads = Vec::new();
    for &(index, component, at) in &layout {
        if rfbm & (1 << index) == 0 {
            continue;
        }
        let standard = cpu.xstate_component(index)?;
        let mut bytes = vec![0u8; component.size as usize];
        if xstate_bv & (1 << index) != 0 {
            read_linear(cpu, base.wrapping_add(at as u64), &mut bytes)?;
        }
        loads.push((standard, bytes));
    }
    let area = cpu.xsave_area()?;
    if loads
        .iter()
        .any(|(standard, _)| standard.offset as usize + standard.size as usize > area.len())
    {
        return None;
    }
    if rfbm & 1 != 0 {
        if xstate_bv & 1 != 0 {
            area[X87_CONTROL].copy_from_slice(&head[X87_CONTROL]);
            area[X87_REGISTERS].copy_from_slice(&head[X87_REGISTERS]);
        } else {
            area[X87_CONTROL].fill(0);
            area[..2].copy_from_slice(&FCW_INIT.to_le_bytes());
            area[X87_REGISTERS].fill(0);
        }
    }
    if rfbm & 2 != 0 {
        if xstate_bv & 2 != 0 {
            area[XMM].copy_from_slice(&head[XMM]);
        } else {
            area[XMM].fill(0);
        }
    }
    if let Some(value) = mxcsr {
        area[MXCSR..MXCSR + 4].copy_from_slice(&value.to_le_bytes());
    }
    for (standard, bytes) in loads {
        let at = standard.offset as usize;
        area[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let in_use = u64_at(area, XSTATE_BV) | rfbm;
    area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&in_use.to_le_bytes());
    Some(Outcome::Done)
}

/// XSAVE / XSAVEOPT (standard form) and XSAVEC (compacted form), with their 64-bit forms.
pub(super) fn xsave(
    cpu: &mut impl Cpu,
    instruction: &Instruction,
    bitness: u32,
    form: Form,
) -> Option<Outcome> {
    if form == Form::Compacted && !has_compaction() {
        return None;
    }
    let Operand { base, rfbm } = match operand(cpu, instruction, bitness)? {
        Ok(operand) => operand,
        Err(()) => return Some(Outcome::Faulted),
    };
    let layout = extended_components(cpu, rfbm & !0b11, form)?;
    let end = area_end(&layout);
    if !writable(cpu, base, end) {
        return None;
    }
    let state = cpu.xsave_area()?.to_vec();
    let in_use = u64_at(&state, XSTATE_BV);
    // XSAVEC's init optimization: components in their initial configuration are not saved.
    let saved = match form {
        Form::Standard => rfbm,
        Form::Compacted => rfbm & in_use,
    };
    let mut header = [0u8; 16];
    read_linear(cpu, base.wrapping_add(XSTATE_BV as u64), &mut header)?;
    let mut writes: Vec<(usize, Vec<u8>)> = Vec::new();
    if saved & 1 != 0 {
        writes.push((X87_CONTROL.start, state[X87_CONTROL].to_vec()));
        writes.push((X87_REGISTERS.start, state[X87_REGISTERS].to_vec()));
    }
    if saved & 2 != 0 {
        writes.push((XMM.start, state[XMM].to_vec()));
    }
    if rfbm & 0b110 != 0 {
        writes.push((MXCSR, state[MXCSR..MXCSR + 8].to_vec()));
    }
    for &(index, component, at) in &layout {
        if saved & (1 << index) == 0 {
            continue;
        }
        let standard = cpu.xstate_component(index)?;
        let from = standard.offset as usize;
        let bytes = state.get(from..from + component.size as usize)?;
        writes.push((at, bytes.to_vec()));
    }
    match form {
        Form::Standard => {
            let old = u64_at(&header, 0);
            let bv = (old & !rfbm) | (in_use & rfbm);
            writes.push((XSTATE_BV, bv.to_le_bytes().to_vec()));
        }
        Form::Compacted => {
            header[..8].copy_from_slice(&(rfbm & in_use).to_le_bytes());
            header[8..].copy_from_slice(&(rfbm | COMPACTED).to_le_bytes());
            writes.push((XSTATE_BV, header.to_vec()));
        }
    }
    for (at, bytes) in writes {
        write_linear(cpu, base.wrapping_add(at as u64), &bytes)?;
    }
    Some(Outcome::Done)
}
