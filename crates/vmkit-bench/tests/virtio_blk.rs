//! `vmkit-bench --virtio-blk` against real KVM, briefly (300 requests per run, one run), so
//! the mode cannot rot: the guest kernel boots under the vmkit binary, finds the
//! virtio-blk function, reads and checks its blocks and rings the doorbell, with
//! ioeventfd on and off, and the report has figures for all of it. Timings are not
//! asserted (shared machine, debug build).
//!
//! vmkit's side only: test-all.sh does not install QEMU, and where QEMU is installed each
//! of its six runs boots SeaBIOS first (about 9 s each on this host), which would cost CI a
//! minute. `cargo run --release -p vmkit-bench -- --virtio-blk` runs both.

use std::process::Command;

fn cells(line: &str) -> Vec<&str> {
    line.trim_matches('|').split('|').map(str::trim).collect()
}

/// The first number of a cell (`12,345 (..)` -> 12345).
fn leading_number(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a figure: {cell:?}"))
}

#[test]
fn a_short_virtio_blk_run_reports_every_vmkit_figure() {
    vmkit_testutil::require_kvm!();
    let out = Command::new(env!("CARGO_BIN_EXE_vmkit-bench"))
        .args([
            "--virtio-blk",
            "--requests",
            "300",
            "--runs",
            "1",
            "--only",
            "vmkit",
        ])
        .output()
        .expect("run vmkit-bench");
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vmkit-bench failed:\n{report}\n{stderr}"
    );
    assert!(!report.contains("failed:"), "a run failed:\n{report}");
    assert!(report.contains("hot loop at CPL3"), "{report}");
    assert!(report.contains("QEMU: not measured"), "{report}");
    let rows: Vec<Vec<&str>> = report
        .lines()
        .filter(|l| l.starts_with("| vmkit "))
        .map(cells)
        .collect();
    assert_eq!(rows.len(), 2, "{report}");
    for (row, ioeventfd) in rows.iter().zip(["on", "off"]) {
        assert_eq!(row[1], ioeventfd, "{row:?}");
        // seq IOPS, seq MB/s, rand IOPS, rand MB/s, doorbell ns: all measured.
        for &column in &[2, 3, 4, 5, 6] {
            assert!(leading_number(row[column]) > 0.0, "{row:?}");
        }
        // CPU per request: a figure (10 ms ticks over ~300 requests may round to 0).
        for &column in &[7, 8, 9] {
            assert!(leading_number(row[column]) >= 0.0, "{row:?}");
        }
    }
    assert!(report.contains("vmkit: ioeventfd off / on"), "{report}");
}
