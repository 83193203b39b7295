//! The examples run against real KVM and print what they should.

use std::path::PathBuf;
use std::process::Command;

use vmkit_testutil::require_kvm;

/// `cargo test` builds the examples next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

#[test]
fn hello_prints_the_greeting_exactly() {
    require_kvm!();
    let output = Command::new(example("hello"))
        .output()
        .expect("run the hello example");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello from a vmkit guest!\n"
    );
}

#[test]
fn userspace_pic_counts_1000_ticks_and_reports_exits() {
    require_kvm!();
    let output = Command::new(example("userspace_pic"))
        .output()
        .expect("run the userspace_pic example");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("..........\n"), "{text}");
    assert!(text.contains("DebugExit { status: 1 }"), "{text}");
    // The guest slept between the interrupts: nearly every tick woke it from `hlt` (a tick
    // that falls while it prints a dot, or late ticks delivered back to back under load, are
    // taken without a halt in between).
    let hlt = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("hlt"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("an hlt count");
    assert!(hlt >= 900, "{text}");
}
