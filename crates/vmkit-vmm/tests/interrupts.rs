//! Timer interrupts in both interrupt models: a guest programs the PIT and PIC, counts IRQ0
//! with `hlt` between them, and reports the count through debug-exit. The VMM must not spin
//! while the guest waits.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Programs PIC (vector base 0x08, IRQ0 only) and PIT channel 0 (mode 2, count 1193: 1 kHz),
/// counts `target` interrupts with `hlt`, then exits through debug-exit with the count's low
/// byte.
fn pit_guest(target: u16) -> Vec<u8> {
    let handler = ENTRY + 0x200;
    let main = real_mode_guest(|a| {
        let mut wait = a.create_label();
        a.cli()?;
        a.mov(word_ptr(0x600), 0)?; // interrupt count
                                    // IVT[8] -> handler
        a.mov(word_ptr(8 * 4), handler as u32)?;
        a.mov(word_ptr(8 * 4 + 2), 0)?;
        // 8259A initialisation, as a BIOS does (ICW1..ICW4), then mask all but IRQ0.
        emit_pic_init(a, 0xfe)?;
        // 8254 channel 0: LSB then MSB, mode 2, count 1193 (1 kHz).
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(al, (1193 & 0xff) as u32)?;
        a.out(0x40, al)?;
        a.mov(al, (1193 >> 8) as u32)?;
        a.out(0x40, al)?;
        a.sti()?;
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(word_ptr(0x600), target as u32)?;
        a.jb(wait)?;
        a.cli()?;
        a.mov(ax, word_ptr(0x600))?;
        emit_debug_exit(a)
    });
    let isr = assemble(16, handler, |a| {
        a.inc(word_ptr(0x600))?;
        a.push(ax)?;
        a.mov(al, 0x20)?; // non-specific EOI
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()
    });
    let mut image = main;
    assert!(image.len() <= 0x200);
    image.resize(0x200, 0x90);
    image.extend_from_slice(&isr);
    image
}

/// Runs vmkit on `guest` and returns (exit status, wall time, CPU time of the vmkit process).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also yields the rusage
fn run_measured(guest: &std::path::Path, irqchip: &str) -> (i32, Duration, Duration, String) {
    let start = Instant::now();
    let child = vmkit()
        .arg("-flat")
        .arg(guest)
        .args([
            "-device",
            "isa-debug-exit",
            "-irqchip",
            irqchip,
            "-serial",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for the call. std's Child is
    // not waited on afterwards (it is dropped without wait), so the pid is reaped once.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let wall = start.elapsed();
    let cpu = Duration::from_micros(
        (usage.ru_utime.tv_sec * 1_000_000 + usage.ru_utime.tv_usec) as u64
            + (usage.ru_stime.tv_sec * 1_000_000 + usage.ru_stime.tv_usec) as u64,
    );
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
    }
    assert!(
        libc::WIFEXITED(status),
        "vmkit did not exit normally: {err}"
    );
    (libc::WEXITSTATUS(status), wall, cpu, err)
}

#[test]
fn pit_at_1_khz_delivers_20_interrupts_in_both_models() {
    require_kvm!();
    let guest = guest_file("pit20", &pit_guest(20));
    for irqchip in ["kernel", "user"] {
        let (status, wall, cpu, err) = run_measured(&guest, irqchip);
        assert_eq!(status, (20 << 1) | 1, "{irqchip}: {err}");
        // 20 periods of 1 ms, at least 19 ms after the first.
        assert!(wall >= Duration::from_millis(19), "{irqchip}: {wall:?}");
        eprintln!("{irqchip}: 20 timer interrupts, wall {wall:?}, vmkit CPU {cpu:?}");
    }
}

#[test]
fn waiting_for_timer_interrupts_does_not_burn_a_core() {
    require_kvm!();
    // 500 ms of `hlt` between 1 kHz ticks.
    let guest = guest_file("pit500", &pit_guest(500));
    for irqchip in ["kernel", "user"] {
        let (status, wall, cpu, err) = run_measured(&guest, irqchip);
        // The guest writes the count's low byte; the process status keeps 8 bits of (v << 1) | 1.
        assert_eq!(status, (((500 & 0xff) << 1) | 1) & 0xff, "{irqchip}: {err}");
        assert!(wall >= Duration::from_millis(499), "{irqchip}: {wall:?}");
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "{irqchip}: 500 ticks, wall {wall:?}, vmkit CPU {cpu:?} ({:.1}%)",
            share * 100.0
        );
        assert!(
            share < 0.5,
            "{irqchip}: vmkit used {cpu:?} of CPU in {wall:?}"
        );
    }
}
