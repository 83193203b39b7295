//! The benchmark's report: the header and the tables rendered from the measured figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::bench::{
    busy, host_description, qemu_short_version, utc_date, Figures, Medians, Runner, BASELINE_EXITS,
};
use crate::cli::Options;
use crate::guest::Workload;
use crate::stats::{ratio, Summary};
use crate::table::{mib_cell, ms_cell, ratio_cell, summary_cell, Table};

fn pair_ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => None,
    }
}

/// When and where: date, host, load, QEMU's version, N and the runs.
pub(crate) fn header(
    options: &Options,
    qemu_label: Option<&str>,
    load_before: &str,
    load_after: &str,
) -> String {
    let mut report = String::new();
    let exits = options.exits;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(report, "vmkit-bench, {} (UTC)", utc_date(now));
    let _ = writeln!(report, "host: {}", host_description());
    let _ = writeln!(
        report,
        "load average (1/5/15 min): {load_before} before, {load_after} after"
    );
    let _ = writeln!(report, "QEMU: {}", qemu_label.unwrap_or("not measured"));
    let _ = writeln!(
        report,
        "N = {exits} exits per measured run, baseline {BASELINE_EXITS}; {} runs; ns/exit = (T(N) - T(1)) / (N - 1), median (min..max)",
        options.runs
    );
    if options.quick {
        let _ = writeln!(
            report,
            "--quick: a smoke test; N is too small for the figures to mean much"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if busy(load_before, cpus) || busy(load_after, cpus) {
        let _ = writeln!(
            report,
            "warning: the 1-minute load average was at or above half the CPUs: other work was \
             running, so the figures are noisier (and 2 vCPUs may not get 2 CPUs)"
        );
    }
    report.push('\n');

    report
}

/// Per-exit cost, start-up, RSS and memory overhead per runner.
pub(crate) fn main_table(
    medians: &Medians<'_>,
    qemu_label: Option<&str>,
    guest_loop: Option<Summary>,
) -> String {
    let mut report = String::new();
    let figures = medians.figures;
    let guest_touched_kib = medians.guest_touched_kib;
    let mut main = Table::new([
        "runner",
        "PIO write ns/exit",
        "MMIO write ns/exit",
        "PIO read ns/exit",
        "start to guest exit (N=1)",
        "start to process end",
        "peak RSS",
        "VMM memory overhead",
    ]);
    for (&runner, fig) in figures {
        let label = match (runner, qemu_label) {
            (Runner::Qemu, Some(v)) => format!("QEMU {}", qemu_short_version(v)),
            _ => runner.label().to_string(),
        };
        let process = runner.is_process();
        main.row([
            label,
            summary_cell(fig.per_exit(Workload::PioWrite)),
            summary_cell(fig.per_exit(Workload::MmioWrite)),
            summary_cell(fig.per_exit(Workload::PioRead)),
            if process {
                ms_cell(fig.startup().map(|s| s.median))
            } else {
                "(in-process)".into()
            },
            if process {
                ms_cell(fig.process_time().map(|s| s.median))
            } else {
                "-".into()
            },
            if process {
                mib_cell(fig.rss().map(|s| s.median))
            } else {
                "-".into()
            },
            if process {
                mib_cell(fig.rss().map(|s| (s.median - guest_touched_kib).max(0.0)))
            } else {
                "-".into()
            },
        ]);
    }
    report.push_str(&main.render());
    let _ = writeln!(
        report,
        "\nVMM memory overhead = peak RSS - guest memory touched ({guest_touched_kib:.0} KiB: the \
         raw loop's guest RAM and ROM pages resident at the guest's exit, by mincore; the same \
         guest touches the same pages under every VMM)."
    );
    let _ = writeln!(
        report,
        "Start to guest exit = spawn to the guest's exit marker (a newline it writes to COM1 just \
         before its debug exit) arriving on the VMM's stdout; start to process end adds the \
         teardown (KVM destroys the VM when its fd is closed)."
    );
    if let Some(cost) = guest_loop {
        let _ = writeln!(
            report,
            "Guest code alone: the same loop with a RAM write instead of the exit costs {} ns per \
             iteration on the raw loop; every ns/exit figure above includes it.",
            summary_cell(Some(cost))
        );
    }
    report
}

/// User and system CPU time per exit of the process runners.
pub(crate) fn cpu_table(figures: &Figures) -> String {
    let mut report = String::new();
    let mut cpu = Table::new([
        "CPU time per exit (user / system ns)",
        "PIO write",
        "MMIO write",
        "PIO read",
    ]);
    for (&runner, fig) in figures.iter().filter(|(r, _)| r.is_process()) {
        let cell = |workload: Workload| {
            let get = |map: &BTreeMap<&'static str, Vec<f64>>| {
                map.get(workload.slug())
                    .and_then(|v| Summary::of(v))
                    .map(|s| s.median)
            };
            match (get(&fig.user_per_exit), get(&fig.system_per_exit)) {
                (Some(u), Some(s)) => format!("{u:.0} / {s:.0}"),
                _ => "-".into(),
            }
        };
        cpu.row([
            runner.label().to_string(),
            cell(Workload::PioWrite),
            cell(Workload::MmioWrite),
            cell(Workload::PioRead),
        ]);
    }
    if !cpu.rows().is_empty() {
        report.push('\n');
        report.push_str(&cpu.render());
        let _ = writeln!(
            report,
            "\nFrom the processes' rusage, (CPU(N) - CPU(1)) / (N - 1), median: user time is the \
             VMM's own code (dispatch, devices), system time is KVM (and any other syscalls)."
        );
    }

    report
}

/// vmkit, QEMU and raw against each other.
pub(crate) fn ratio_table(medians: &Medians<'_>) -> String {
    let mut report = String::new();
    let figures = medians.figures;
    let mut ratios = Table::new([
        "ratio",
        "PIO write",
        "MMIO write",
        "PIO read",
        "start to exit",
        "memory overhead",
    ]);
    for (name, a, b) in [
        ("vmkit / raw", Runner::VmkitBinary, Runner::Raw),
        ("vmkit-lib / raw", Runner::VmkitLibrary, Runner::Raw),
        ("QEMU / raw", Runner::Qemu, Runner::Raw),
        ("QEMU / vmkit", Runner::Qemu, Runner::VmkitBinary),
    ] {
        if !(figures.contains_key(&a) && figures.contains_key(&b)) {
            continue;
        }
        let process = a.is_process() && b.is_process();
        ratios.row([
            name.to_string(),
            ratio_cell(pair_ratio(
                medians.per_exit(a, Workload::PioWrite),
                medians.per_exit(b, Workload::PioWrite),
            )),
            ratio_cell(pair_ratio(
                medians.per_exit(a, Workload::MmioWrite),
                medians.per_exit(b, Workload::MmioWrite),
            )),
            ratio_cell(pair_ratio(
                medians.per_exit(a, Workload::PioRead),
                medians.per_exit(b, Workload::PioRead),
            )),
            if process {
                ratio_cell(pair_ratio(medians.startup(a), medians.startup(b)))
            } else {
                "-".into()
            },
            if process {
                ratio_cell(pair_ratio(medians.overhead(a), medians.overhead(b)))
            } else {
                "-".into()
            },
        ]);
    }
    if !ratios.rows().is_empty() {
        report.push('\n');
        report.push_str(&ratios.render());
    }

    report
}

/// The project's targets, met or not.
pub(crate) fn target_table(medians: &Medians<'_>) -> String {
    let mut report = String::new();
    let figures = medians.figures;
    // Targets, judged on the full stack (the binary), else on the library.
    let vmkit = if figures.contains_key(&Runner::VmkitBinary) {
        Runner::VmkitBinary
    } else {
        Runner::VmkitLibrary
    };
    let mut targets = Table::new(["target", "measured", "met"]);
    for workload in [Workload::PioWrite, Workload::MmioWrite] {
        let (v, r) = (
            medians.per_exit(vmkit, workload),
            medians.per_exit(Runner::Raw, workload),
        );
        targets.row(target_row(
            format!("vmkit within 3% of raw per exit, {}", workload.name()),
            match (v, r) {
                (Some(v), Some(r)) => Some(format!(
                    "{v:.0} vs {r:.0} ns: {:+.1}%",
                    (v / r - 1.0) * 100.0
                )),
                _ => None,
            },
            pair_ratio(v, r).map(|x| x <= 1.03),
        ));
    }
    for workload in Workload::ALL {
        let (v, q) = (
            medians.per_exit(vmkit, workload),
            medians.per_exit(Runner::Qemu, workload),
        );
        targets.row(target_row(
            format!("vmkit faster than QEMU per exit, {}", workload.name()),
            match (v, q) {
                (Some(v), Some(q)) => Some(format!("{v:.0} vs {q:.0} ns")),
                _ => None,
            },
            match (v, q) {
                (Some(v), Some(q)) => Some(v < q),
                _ => None,
            },
        ));
    }
    let (sv, sq) = (
        medians.startup(Runner::VmkitBinary),
        medians.startup(Runner::Qemu),
    );
    let startup_ratio = pair_ratio(sq, sv);
    targets.row(target_row(
        "start to guest exit at least 5x faster than QEMU".into(),
        match (sv, sq, startup_ratio) {
            (Some(v), Some(q), Some(x)) => {
                Some(format!("{:.1} vs {:.1} ms: {x:.1}x", v / 1e6, q / 1e6))
            }
            _ => None,
        },
        startup_ratio.map(|x| x >= 5.0),
    ));
    let (ov, oq) = (
        medians.overhead(Runner::VmkitBinary),
        medians.overhead(Runner::Qemu),
    );
    let overhead_ratio = pair_ratio(ov, oq);
    targets.row(target_row(
        "VMM memory overhead at most 1/4 of QEMU's".into(),
        match (ov, oq, overhead_ratio) {
            (Some(v), Some(q), Some(x)) => Some(format!(
                "{:.1} vs {:.1} MiB: {x:.2}",
                v / 1024.0,
                q / 1024.0
            )),
            _ => None,
        },
        overhead_ratio.map(|x| x <= 0.25),
    ));
    report.push('\n');
    report.push_str(&targets.render());

    report
}

pub(crate) fn target_row(name: String, measured: Option<String>, met: Option<bool>) -> [String; 3] {
    [
        name,
        measured.unwrap_or_else(|| "not measured".into()),
        match met {
            Some(true) => "yes".into(),
            Some(false) => "NO".into(),
            None => "-".into(),
        },
    ]
}
