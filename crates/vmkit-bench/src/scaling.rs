//! The scaling part of the report: exits per second with 1 and 2 vCPUs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::BASELINE_EXITS;
use crate::cli::{Only, Options};
use crate::guest::{scaling_firmware, EXIT_VALUE};
use crate::inprocess::run_scaling;
use crate::raw::run_firmware;
use crate::stats::{exits_per_second, ratio, Summary};
use crate::table::{rate_cell, ratio_cell, Table};
use crate::{Error, Result};

/// The scaling part: exits per second with 1 and 2 vCPUs, raw loop and vmkit in-process.
pub(crate) fn scaling_runs(options: &Options) -> Result<String> {
    let exits = options.exits;
    let mut rows: Vec<(&'static str, [Vec<f64>; 2])> = Vec::new();
    let mut errors = Vec::new();
    let mut images = Vec::new();
    for vcpus in [1usize, 2] {
        images.push((
            vcpus,
            scaling_firmware(BASELINE_EXITS, vcpus)?,
            scaling_firmware(exits, vcpus)?,
        ));
    }
    let mut runners: Vec<&'static str> = Vec::new();
    if options.includes(Only::Raw) {
        runners.push("raw (kvm-ioctls loop)");
    }
    if options.includes(Only::Vmkit) {
        runners.push("vmkit-lib (in-process)");
    }
    for name in &runners {
        rows.push((name, [Vec::new(), Vec::new()]));
    }
    eprint!("vmkit-bench: scaling ");
    for _ in 0..options.runs {
        for (row, name) in rows.iter_mut().zip(&runners) {
            for (slot, (vcpus, small, large)) in images.iter().enumerate() {
                let time = |image: &[u8], n: u32| -> Result<Duration> {
                    if name.starts_with("raw") {
                        let start = std::time::Instant::now();
                        let outcome = run_firmware(image, *vcpus, false)?;
                        let elapsed = start.elapsed();
                        check_scaling_counts(name, &outcome.exits, n)?;
                        if outcome.exit_value != Some(EXIT_VALUE) {
                            return Err(Error::Guest(format!(
                                "{name}: the scaling guest did not reach its debug exit"
                            )));
                        }
                        Ok(elapsed)
                    } else {
                        let run = run_scaling(image.to_vec(), *vcpus)?;
                        check_scaling_counts(name, &run.device_writes, n)?;
                        Ok(run.elapsed)
                    }
                };
                match time(small, BASELINE_EXITS).and_then(|t1| Ok((t1, time(large, exits)?))) {
                    Ok((t1, tn)) => {
                        let dt = tn.as_nanos() as f64 - t1.as_nanos() as f64;
                        let total = (u64::from(exits) - u64::from(BASELINE_EXITS)) * *vcpus as u64;
                        if let (Some(rate), Some(samples)) =
                            (exits_per_second(total, dt), row.1.get_mut(slot))
                        {
                            samples.push(rate);
                        }
                        eprint!(".");
                    }
                    Err(e) => {
                        eprint!("!");
                        errors.push(e.to_string());
                    }
                }
            }
        }
    }
    eprintln!();
    let mut table = Table::new([
        "scaling: runner",
        "1 vCPU exits/s",
        "2 vCPUs exits/s (total)",
        "2 vCPUs / 1 vCPU",
    ]);
    for (name, [one, two]) in &rows {
        let one = Summary::of(one).map(|s| s.median);
        let two = Summary::of(two).map(|s| s.median);
        table.row([
            name.to_string(),
            rate_cell(one),
            rate_cell(two),
            ratio_cell(match (two, one) {
                (Some(t), Some(o)) => ratio(t, o),
                _ => None,
            }),
        ]);
    }
    let mut out = table.render();
    let _ = writeln!(
        out,
        "\nEach vCPU writes its own port ({:#x}, {:#x}) {exits} times; rate = vCPUs x (N - 1) / \
         (T(N) - T(1)), median of {} runs. vmkit: two separate devices, each behind its own Mutex, \
         on one PioBus; the second vCPU starts at its own entry (no INIT/SIPI).",
        crate::guest::SCALING_PORTS[0],
        crate::guest::SCALING_PORTS[1],
        options.runs
    );
    errors.dedup();
    for e in errors {
        let _ = writeln!(out, "note: scaling run failed: {e}");
    }
    Ok(out)
}

fn check_scaling_counts(name: &str, counts: &[u64], expected: u32) -> Result<()> {
    if counts.iter().all(|&c| c == u64::from(expected)) {
        Ok(())
    } else {
        Err(Error::Guest(format!(
            "{name}: the vCPUs' devices saw {counts:?} writes, expected {expected} each"
        )))
    }
}
