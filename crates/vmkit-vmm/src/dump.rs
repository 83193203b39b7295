//! What the user sees when a vCPU stops on something the VMM cannot handle: the exit, the
//! registers, and the instruction at RIP (bytes and disassembly), as QEMU prints for
//! KVM_EXIT_INTERNAL_ERROR.

use std::fmt::Write as _;

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use vmkit_kvm::Vcpu;

/// Reads guest physical memory for diagnostics.
pub trait GuestMemoryReader: Send + Sync {
    /// Fills `buf` from guest physical `gpa`; false if any byte is not RAM/ROM.
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> bool;

    /// Writes `data` to guest physical `gpa` (a debugger's memory writes); false if any byte
    /// is not RAM, or the machine offers no writes (the default).
    fn write_guest(&self, _gpa: u64, _data: &[u8]) -> bool {
        false
    }
}

impl<F: Fn(u64, &mut [u8]) -> bool + Send + Sync> GuestMemoryReader for F {
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self(gpa, buf)
    }
}

const INSTRUCTION_WINDOW: usize = 16;

/// A multi-line report of a failed exit on vCPU `index`: `what` happened, then registers and
/// the instruction at RIP. Never panics; parts that cannot be read say so.
pub fn describe_exit_failure(
    vcpu: &Vcpu,
    index: usize,
    what: &str,
    memory: &dyn GuestMemoryReader,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "vmkit: vCPU {index} stopped: {what}");
    let regs = match vcpu.regs() {
        Ok(regs) => regs,
        Err(e) => {
            let _ = writeln!(out, "  (registers unavailable: {e})");
            return out;
        }
    };
    let sregs = vcpu.sregs().ok();
    let _ = writeln!(
        out,
        "  RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}",
        regs.rax, regs.rbx, regs.rcx, regs.rdx
    );
    let _ = writeln!(
        out,
        "  RSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}",
        regs.rsi, regs.rdi, regs.rbp, regs.rsp
    );
    let _ = writeln!(
        out,
        "  R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}",
        regs.r8, regs.r9, regs.r10, regs.r11
    );
    let _ = writeln!(
        out,
        "  R12={:016x} R13={:016x} R14={:016x} R15={:016x}",
        regs.r12, regs.r13, regs.r14, regs.r15
    );
    let _ = writeln!(out, "  RIP={:016x} RFL={:08x}", regs.rip, regs.rflags);
    let Some(sregs) = sregs else {
        let _ = writeln!(out, "  (segment registers unavailable)");
        return out;
    };
    for (name, seg) in [
        ("CS", &sregs.cs),
        ("DS", &sregs.ds),
        ("SS", &sregs.ss),
        ("ES", &sregs.es),
    ] {
        let _ = writeln!(
            out,
            "  {name} ={:04x} base={:016x} limit={:08x} l={} db={}",
            seg.selector, seg.base, seg.limit, seg.l, seg.db
        );
    }
    let _ = writeln!(
        out,
        "  CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x} EFER={:x}",
        sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer
    );

    let bitness = if sregs.cs.l != 0 {
        64
    } else if sregs.cs.db != 0 {
        32
    } else {
        16
    };
    let linear = sregs.cs.base.wrapping_add(regs.rip);
    let paging = sregs.cr0 & (1 << 31) != 0;
    let physical = if paging {
        vcpu.translate_gva(linear).ok().flatten()
    } else {
        Some(linear & 0xffff_ffff)
    };
    let mut bytes = [0u8; INSTRUCTION_WINDOW];
    match physical {
        Some(gpa) if memory.read_guest(gpa, &mut bytes) => {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(
                out,
                "  code at {linear:#x} (phys {gpa:#x}): {}",
                hex.join(" ")
            );
            let mut decoder = Decoder::with_ip(bitness, &bytes, regs.rip, DecoderOptions::NONE);
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                let _ = writeln!(
                    out,
                    "  instruction: (not a valid {bitness}-bit instruction)"
                );
            } else {
                let mut text = String::new();
                IntelFormatter::new().format(&instruction, &mut text);
                let _ = writeln!(out, "  instruction ({bitness}-bit): {text}");
            }
        }
        Some(gpa) => {
            let _ = writeln!(
                out,
                "  code at {linear:#x} (phys {gpa:#x}) is not in guest RAM"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  code at {linear:#x} is not mapped by the guest's page tables"
            );
        }
    }
    out
}
