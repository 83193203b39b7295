//! What the report says about the machine it ran on: CPU, kernel, load, date, QEMU.

use std::path::Path;
use std::process::Command;

use crate::process::tail;

/// QEMU's `--version` first line, or why it cannot be used.
pub fn qemu_version(qemu: &Path) -> std::result::Result<String, String> {
    match Command::new(qemu).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Ok(out) => Err(format!(
            "{} --version failed: {}",
            qemu.display(),
            tail(&String::from_utf8_lossy(&out.stderr))
        )),
        Err(e) => Err(format!("{}: {e}", qemu.display())),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The host's CPU model, CPU count and kernel, for the report header.
pub fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    format!("{cpu}, {cpus} CPUs, Linux {kernel}")
}

/// The 1/5/15-minute load averages.
pub fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Whether a load-average text (`"1.20 0.80 0.50"`) shows a 1-minute load of at least
/// half of `cpus`.
pub fn busy(load: &str, cpus: usize) -> bool {
    load.split_whitespace()
        .next()
        .and_then(|one| one.parse::<f64>().ok())
        .is_some_and(|one| one >= cpus as f64 / 2.0)
}

/// The UTC date of `unix_seconds` as `YYYY-MM-DD`.
pub fn utc_date(unix_seconds: u64) -> String {
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), eras of 400 years.
    let days = (unix_seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `QEMU emulator version 7.2.22 (Debian ...)` as `7.2.22`.
pub fn qemu_short_version(line: &str) -> String {
    line.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or(line)
        .to_string()
}
