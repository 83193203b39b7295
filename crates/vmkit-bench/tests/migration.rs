//! `vmkit-bench --migration` against real KVM, vmkit side only, one run per row: every
//! guest reaches `completed` and runs on the destination. Timings are not asserted.

use std::process::Command;

#[test]
fn migration_rows_for_both_guests_and_sizes_complete_on_vmkit() {
    vmkit_testutil::require_kvm!();
    let out = Command::new(env!("CARGO_BIN_EXE_vmkit-bench"))
        .args(["--migration", "--runs", "1", "--only", "vmkit"])
        .output()
        .expect("run vmkit-bench");
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vmkit-bench failed:\n{report}\n{stderr}"
    );
    println!("{report}");
    for size in ["256 MiB", "2048 MiB"] {
        for activity in ["idle", "dirtying"] {
            let row = report
                .lines()
                .find(|line| line.starts_with(&format!("| vmkit | {size} | {activity} |")))
                .unwrap_or_else(|| panic!("no {size} {activity} row:\n{report}"));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let figure =
                |cell: &str| -> f64 { cell.split_whitespace().next().unwrap().parse().unwrap() };
            assert!(
                figure(cells[4]) <= figure(cells[3]),
                "downtime above total: {row}"
            );
        }
    }
    assert!(!report.contains("| QEMU |"), "--only vmkit: {report}");
}
