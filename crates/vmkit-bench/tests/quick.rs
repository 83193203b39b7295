//! `vmkit-bench --quick` against real KVM: the report has sane raw and vmkit rows. Timings
//! are not asserted (this machine is shared and the build is a debug one).

use std::process::Command;

/// The cells of the table row starting with `label`.
fn row<'a>(report: &'a str, label: &str) -> Option<Vec<&'a str>> {
    report
        .lines()
        .find(|line| line.starts_with(&format!("| {label}")))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
}

/// The median in a `median (min..max)` cell.
fn median(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("not a figure: {cell:?}"))
}

#[test]
fn quick_run_reports_raw_and_vmkit_rows() {
    vmkit_testutil::require_kvm!();
    let out = Command::new(env!("CARGO_BIN_EXE_vmkit-bench"))
        .args(["--quick", "--exits", "3000"])
        .output()
        .expect("run vmkit-bench");
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vmkit-bench failed:\n{report}\n{stderr}"
    );
    assert!(!report.contains("failed:"), "a runner failed:\n{report}");

    let raw = row(&report, "raw (kvm-ioctls loop)").expect("raw row");
    let lib = row(&report, "vmkit-lib (in-process)").expect("vmkit-lib row");
    let bin = row(&report, "vmkit (binary)");
    for cells in [Some(&raw), Some(&lib), bin.as_ref()].into_iter().flatten() {
        // PIO write, MMIO write, PIO read: figures (noise may make a quick one small).
        for cell in &cells[1..4] {
            assert!(median(cell).is_finite(), "{cells:?}");
        }
    }
    for cells in [Some(&raw), bin.as_ref()].into_iter().flatten() {
        let start_ms = median(cells[4]);
        assert!(start_ms > 0.0 && start_ms < 10_000.0, "{cells:?}");
        let rss_mib = median(cells[5]);
        assert!(rss_mib > 0.1 && rss_mib < 1024.0, "{cells:?}");
    }
    // A vmkit binary row unless it could not be built, which the report then says.
    assert!(
        bin.is_some() || report.contains("vmkit (binary) skipped"),
        "{report}"
    );

    // The scaling table: one row each, with rates for 1 and 2 vCPUs.
    let rates: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("/s |") && !l.contains("exits/s"))
        .collect();
    assert_eq!(rates.len(), 2, "{report}");
    assert!(
        rates[0].starts_with("| raw") && rates[1].starts_with("| vmkit-lib"),
        "{report}"
    );
    for line in rates {
        assert_eq!(line.matches("/s").count(), 2, "{line}");
    }
    assert!(report.contains("Guest code alone"), "{report}");
}
