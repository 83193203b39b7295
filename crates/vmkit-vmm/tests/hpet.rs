//! The HPET of QEMU's pc at 0xFED00000, seen from a 64-bit guest: its capabilities, and
//! timer 0 in legacy replacement mode interrupting on IRQ 0 through the PIC. `-no-hpet`
//! removes it.

mod common;

use std::time::Duration;

use common::*;

const HPET: u64 = 0xfed0_0000;
const IDT: u64 = 0x4000;
const IDTR: u64 = 0x3ff0;
/// The PIC's master vector base in this guest (IRQ 0 = vector 0x20).
const IRQ0_VECTOR: u64 = 0x20;

/// A long-mode guest: prints the HPET's capabilities dword on COM1 (4 bytes), then starts
/// timer 0 (one-shot, 1 ms) in legacy mode with the PIC's IRQ 0 unmasked; the interrupt
/// handler prints 'I' and powers off through S5. Without `start_timer` it powers off after
/// the capabilities.
fn hpet_guest(start_timer: bool) -> Vec<u8> {
    assemble(64, ENTRY, |a| {
        let mut handler = a.create_label();
        let mut idle = a.create_label();
        a.cli()?;
        // COM1: the low capabilities dword, byte by byte.
        a.mov(rbx, HPET)?;
        a.mov(ecx, dword_ptr(rbx))?;
        for _ in 0..4 {
            a.mov(al, cl)?;
            emit_putc(a)?;
            a.shr(ecx, 8)?;
        }
        if !start_timer {
            a.jmp(handler)?;
        }
        // PIC: vectors 0x20/0x28, only IRQ 0 unmasked.
        for (port, value) in [
            (0x20u32, 0x11u32),
            (0x21, IRQ0_VECTOR as u32),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x28),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xfe),
            (0xa1, 0xff),
        ] {
            a.mov(al, value)?;
            a.out(port, al)?;
        }
        // IDT gate for IRQ 0: a 64-bit interrupt gate to `handler` with the current CS.
        a.lea(rax, ptr(handler))?;
        a.mov(rdi, IDT + IRQ0_VECTOR * 16)?;
        a.mov(word_ptr(rdi), ax)?;
        a.mov(cx, cs)?;
        a.mov(word_ptr(rdi + 2), cx)?;
        a.mov(word_ptr(rdi + 4), 0x8e00u32)?;
        a.shr(rax, 16)?;
        a.mov(word_ptr(rdi + 6), ax)?;
        a.shr(rax, 16)?;
        a.mov(dword_ptr(rdi + 8), eax)?;
        a.mov(dword_ptr(rdi + 12), 0u32)?;
        a.mov(rdi, IDTR)?;
        a.mov(word_ptr(rdi), 0xfffu32)?;
        a.mov(rax, IDT)?;
        a.mov(qword_ptr(rdi + 2), rax)?;
        a.lidt(ptr(rdi))?;
        // HPET timer 0: interrupt enabled, edge, one-shot, 100000 ticks (1 ms); then
        // ENABLE_CNF | LEG_RT_CNF.
        a.mov(dword_ptr(rbx + 0x100), 0x4u32)?;
        a.mov(eax, 100_000u32)?;
        a.mov(dword_ptr(rbx + 0x108), eax)?;
        a.mov(dword_ptr(rbx + 0x10c), 0u32)?;
        a.mov(dword_ptr(rbx + 0x10), 0x3u32)?;
        a.sti()?;
        a.set_label(&mut idle)?;
        a.hlt()?;
        a.jmp(idle)?;

        a.set_label(&mut handler)?;
        if start_timer {
            a.mov(al, b'I' as u32)?;
            emit_putc(a)?;
        }
        // S5 through the PIIX4 PM block vmkit programs at 0x600 for firmware-less boots.
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0x604u32)?;
        a.out(dx, ax)?;
        a.hlt()?;
        a.jmp(idle)
    })
}

#[test]
fn a_guest_reads_the_hpet_and_gets_timer0_on_irq0_in_legacy_mode() {
    require_kvm!();
    let file = guest_file("hpet", &hpet_guest(true));
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(format!("{},mode=long", file.display()));
    let (output, _) = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    // 0x8086A201: vendor 8086, LEG_RT_CAP, 64-bit counter, 3 timers, revision 1.
    assert_eq!(
        output.stdout,
        [0x01, 0xa2, 0x86, 0x80, b'I'],
        "{:?}",
        stdout(&output)
    );
}

#[test]
fn no_hpet_removes_it() {
    require_kvm!();
    let file = guest_file("no-hpet", &hpet_guest(false));
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(format!("{},mode=long", file.display()))
        .arg("-no-hpet");
    let (output, _) = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(output.stdout.len(), 4, "{:?}", stdout(&output));
    assert_ne!(
        output.stdout,
        [0x01, 0xa2, 0x86, 0x80],
        "nothing answers at 0xFED00000"
    );
}
