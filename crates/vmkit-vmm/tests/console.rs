//! The console on a real terminal: `vmkit` runs under a pseudo-terminal (util-linux
//! `script`), Ctrl-A x quits it, and the terminal is back in canonical mode afterwards.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn ctrl_a_x_quits_and_the_terminal_is_restored() {
    require_kvm!();
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED ctrl_a_x_quits_and_the_terminal_is_restored: util-linux `script` is not installed");
        return;
    }
    let guest = real_mode_guest(|a| {
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    let guest = guest_file("console-spin", &guest);
    // Inside the pty: run vmkit, then print the terminal's modes.
    let inner = format!(
        "{} -flat {}; echo vmkit-exit=$?; stty -a",
        env!("CARGO_BIN_EXE_vmkit"),
        guest.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start script");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"\x01x").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
        drop(stdin);
    });
    let output = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("Ctrl-A x did not end vmkit")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("vmkit-exit=0"), "{text}");
    // `stty -a` lists "icanon" and "echo" when set, "-icanon"/"-echo" when cleared.
    let modes: Vec<&str> = text.split_whitespace().collect();
    assert!(modes.contains(&"icanon"), "canonical mode restored: {text}");
    assert!(modes.contains(&"echo"), "echo restored: {text}");
}
