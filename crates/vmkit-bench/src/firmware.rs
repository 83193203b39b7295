//! Firmware boot time: Debian's SeaBIOS on vmkit and on QEMU with the same command line,
//! timed from process start to the moment SeaBIOS logs its boot step ("Booting from ")
//! through isa-debugcon at 0x402.
//!
//! Both VMMs get `-bios BIOS -m 128 -chardev file,id=d,path=LOG -device
//! isa-debugcon,iobase=0x402,chardev=d -serial none`; QEMU also gets `-accel kvm
//! -display none -vga none -nic none` so its machine has the same four PCI functions as
//! vmkit's (no VGA, no NIC: SeaBIOS would otherwise spend time on their option ROMs). The
//! log file is polled every millisecond; the process is killed once the line appears.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats::Summary;
use crate::{Error, Result};

/// The line SeaBIOS prints when it starts to boot.
pub const BOOT_STEP: &str = "Booting from ";
/// Debian's SeaBIOS.
pub const DEFAULT_BIOS: &str = "/usr/share/seabios/bios.bin";
/// Longest a run may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The arguments both VMMs get.
pub fn common_args(bios: &Path, log: &Path) -> Vec<OsString> {
    vec![
        "-bios".into(),
        bios.into(),
        "-m".into(),
        "128".into(),
        "-chardev".into(),
        format!("file,id=d,path={}", log.display()).into(),
        "-device".into(),
        "isa-debugcon,iobase=0x402,chardev=d".into(),
        "-serial".into(),
        "none".into(),
    ]
}

/// QEMU's extra arguments (see the [module docs](self)).
pub fn qemu_extra_args() -> Vec<OsString> {
    [
        "-accel", "kvm", "-display", "none", "-vga", "none", "-nic", "none",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Starts `program args` and returns the time until `log` contains [`BOOT_STEP`], and the
/// log.
pub fn time_to_boot_step(
    program: &Path,
    args: &[OsString],
    log: &Path,
) -> Result<(Duration, String)> {
    let _ = std::fs::remove_file(log);
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Io {
            what: format!("starting {}", program.display()),
            source,
        })?;
    let outcome = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(BOOT_STEP) {
            break Ok((start.elapsed(), text));
        }
        if start.elapsed() > RUN_LIMIT {
            break Err(Error::Guest(format!(
                "{}: SeaBIOS did not reach its boot step in {RUN_LIMIT:?}; log:\n{text}",
                program.display()
            )));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(Error::Guest(format!(
                "{} ended ({status}) before SeaBIOS reached its boot step; log:\n{text}",
                program.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Runs the comparison `runs` times per VMM and returns the report table.
pub fn run(vmkit: &Path, qemu: Option<&Path>, bios: &Path, runs: usize) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("vmkit-bench-seabios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let log = dir.join("debugcon.log");
    let mut rows: Vec<(String, Summary, usize)> = Vec::new();
    let mut runners: Vec<(String, PathBuf, Vec<OsString>)> =
        vec![("vmkit".into(), vmkit.to_path_buf(), common_args(bios, &log))];
    if let Some(qemu) = qemu {
        let mut args = common_args(bios, &log);
        args.extend(qemu_extra_args());
        runners.push(("QEMU".into(), qemu.to_path_buf(), args));
    }
    // Interleaved, so slow drift of the host's load hits both runners alike.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); runners.len()];
    let mut lines = vec![0usize; runners.len()];
    for _ in 0..runs {
        for (i, (_, program, args)) in runners.iter().enumerate() {
            let (elapsed, text) = time_to_boot_step(program, args, &log)?;
            samples[i].push(elapsed.as_secs_f64() * 1000.0);
            lines[i] = text.lines().count();
        }
    }
    for (i, (name, _, _)) in runners.iter().enumerate() {
        if let Some(summary) = Summary::of(&samples[i]) {
            rows.push((name.clone(), summary, lines[i]));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = format!(
        "SeaBIOS ({}) from process start to \"{BOOT_STEP}\", median (min..max) of {runs} runs:\n\n",
        bios.display()
    );
    out.push_str("| VMM | start to boot step | debugcon log lines |\n|---|---:|---:|\n");
    for (name, s, lines) in &rows {
        let _ = writeln!(
            out,
            "| {name} | {:.0} ms ({:.0}..{:.0}) | {lines} |",
            s.median, s.min, s.max
        );
    }
    if let [(_, vmkit, _), (_, qemu, _)] = rows.as_slice() {
        let _ = writeln!(out, "\nQEMU / vmkit: {:.2}x", qemu.median / vmkit.median);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_vmms_get_the_same_devices() {
        let args = common_args(Path::new("/b.bin"), Path::new("/l"));
        let text: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(text[..2], ["-bios", "/b.bin"]);
        assert!(text.contains(&"file,id=d,path=/l".to_string()));
        assert!(text.contains(&"isa-debugcon,iobase=0x402,chardev=d".to_string()));
        let extra: Vec<_> = qemu_extra_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(extra.contains(&"-nic".to_string()) && extra.contains(&"-vga".to_string()));
    }
}
