//! The running-VM handle as a library user drives it: pause, resume, reset, stop, exit
//! statistics; and SMP start-up.

mod common;

use std::time::Duration;

use common::*;
use vmkit_vmm::builder::start_pc;
use vmkit_vmm::cli::{FlatMode as CliFlatMode, FlatOption, Options, SerialOption};
use vmkit_vmm::{ExitReason, RunOptions, RunState};

/// Prints '.' on COM1 forever.
fn chatty_guest() -> Vec<u8> {
    real_mode_guest(|a| {
        let mut again = a.create_label();
        a.set_label(&mut again)?;
        a.mov(al, b'.' as u32)?;
        emit_putc(a)?;
        a.jmp(again)
    })
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    require_kvm!();
    let guest = guest_file("chatty", &chatty_guest());
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chatty-{}.out", std::process::id()));
    let options = Options {
        ram_size: 16 << 20,
        serial: SerialOption::File(out.clone()),
        flat: Some(FlatOption {
            path: guest.clone(),
            addr: ENTRY,
            entry: ENTRY,
            mode: CliFlatMode::Real,
        }),
        ..Options::default()
    };
    let boot = vmkit_vmm::builder::boot_source(&options).unwrap();
    let vmm = start_pc(&options, boot, RunOptions::default(), Vec::new()).unwrap();
    assert_eq!(vmm.state(), RunState::Running);
    std::thread::sleep(Duration::from_millis(200));
    assert!(file_len(&out) > 0, "the guest prints while running");

    vmm.controller().pause().unwrap();
    assert_eq!(vmm.state(), RunState::Paused);
    let paused_at = file_len(&out);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(file_len(&out), paused_at, "no output while paused");

    vmm.controller().resume().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(file_len(&out) > paused_at, "output resumes");

    // A host-side reset keeps it running (the guest starts over).
    vmm.controller().reset(|| {}).unwrap();
    assert_eq!(vmm.state(), RunState::Running);

    let stats = vmm.exit_stats();
    let io_out = stats.per_vcpu[0]
        .iter()
        .find(|(kind, _)| *kind == "io-out")
        .map_or(0, |(_, n)| *n);
    assert!(io_out > 0);
    let com1 = stats
        .pio
        .ranges
        .iter()
        .find(|r| r.base == 0x3f8)
        .expect("COM1 range in the stats");
    assert!(com1.writes > 0 && com1.reads > 0);

    vmm.stop("test over");
    let reason = vmm.wait().unwrap();
    assert_eq!(reason, ExitReason::HostRequest("test over".into()));
    let _ = std::fs::remove_file(out);
}

#[test]
fn two_vcpus_boot_and_the_machine_ends_cleanly() {
    require_kvm!();
    // The boot processor prints and exits; the application processor waits for a SIPI that
    // never comes (as on a PC), and its thread must still end with the machine.
    let guest = real_mode_guest(|a| {
        a.mov(al, b'2' as u32)?;
        emit_putc(a)?;
        a.mov(al, 5)?;
        emit_debug_exit(a)
    });
    let guest = guest_file("smp", &guest);
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(&guest)
        .args(["-smp", "2", "-device", "isa-debug-exit"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(stdout(&output), "2");
    assert_eq!(output.status.code(), Some(11), "{}", stderr(&output));

    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(&guest)
        .args(["-smp", "2", "-irqchip", "user"]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("-irqchip kernel"),
        "{}",
        stderr(&output)
    );
}
