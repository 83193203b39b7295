//! `--virtio-blk`: vmkit and QEMU side by side on virtio-blk-pci, with the same guest
//! kernel ([`crate::blk_guest`]) and the same raw disk file.
//!
//! Both VMMs get the same devices: `-kernel GUEST -m 64 -no-reboot -serial stdio -device
//! isa-debug-exit,iobase=0x501,iosize=2 -drive file=DISK,format=raw,if=none,id=d0,cache=C
//! -device virtio-blk-pci,drive=d0,ioeventfd=on|off`; QEMU also gets `-accel kvm -display
//! none -nodefaults -no-user-config`. QEMU boots the multiboot kernel through SeaBIOS
//! (which assigns the BARs), vmkit loads it directly (the guest assigns BAR 0 itself).
//!
//! Each run is one process and one workload of N requests. The host reads the VMM's
//! stdout (the guest's COM1) line by line: at the guest's `S` line and at its `E` line it
//! takes the time and the process's CPU time (`utime + stime` of `/proc/PID/stat`, which
//! counts every thread, the finished ones too). Figures are per run between the two
//! markers, so boot and teardown are not in them: IOPS = N / wall, MB/s = IOPS x 4096 /
//! 10^6, doorbell ns = wall / N, CPU per request = CPU / N. Median (min..max) of the runs,
//! which are interleaved (vmkit, QEMU, vmkit, ...) so that drift in the host's load hits
//! both alike.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::blk_guest::{blk_kernel, disk_image, BlkWorkload, Failure, BLOCK, EXIT_STATUS};
use crate::process::{tail, ScratchFile};
use crate::stats::Summary;
use crate::table::{group_thousands, ratio_cell, Table};
use crate::{Error, Result};

/// 4 KiB blocks in the disk file (64 MiB).
pub const DISK_BLOCKS: u32 = 16384;
/// Guest RAM in MiB.
pub const GUEST_RAM_MIB: u32 = 64;

/// What a `--virtio-blk` run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOptions {
    /// Requests (or doorbells) per run.
    pub requests: u32,
    /// Runs per figure.
    pub runs: usize,
    /// The drive's `cache=` (`writeback` or `none`).
    pub cache: String,
    /// The vmkit binary (None: QEMU only).
    pub vmkit: Option<PathBuf>,
    /// The QEMU binary (None: vmkit only).
    pub qemu: Option<PathBuf>,
}

/// The VMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Vmm {
    /// The `vmkit` binary.
    Vmkit,
    /// `qemu-system-x86_64`.
    Qemu,
}

impl Vmm {
    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Vmm::Vmkit => "vmkit",
            Vmm::Qemu => "QEMU",
        }
    }
}

/// The arguments both VMMs get.
pub fn common_args(kernel: &Path, disk: &Path, cache: &str, ioeventfd: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-kernel".into(), kernel.into()];
    for arg in [
        "-m".to_string(),
        GUEST_RAM_MIB.to_string(),
        "-no-reboot".into(),
        "-serial".into(),
        "stdio".into(),
        "-device".into(),
        "isa-debug-exit,iobase=0x501,iosize=2".into(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=d0,cache={cache}",
            disk.display()
        ),
        "-device".into(),
        format!(
            "virtio-blk-pci,drive=d0,ioeventfd={}",
            if ioeventfd { "on" } else { "off" }
        ),
    ] {
        args.push(arg.into());
    }
    args
}

/// QEMU's extra arguments.
pub fn qemu_extra_args() -> Vec<OsString> {
    [
        "-accel",
        "kvm",
        "-display",
        "none",
        "-nodefaults",
        "-no-user-config",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// One run between the guest's markers.
#[derive(Debug, Clone, Copy)]
pub struct Marked {
    /// Wall time from the `S` line to the `E` line.
    pub wall: Duration,
    /// CPU time of the whole process (user + system) over the same span.
    pub cpu: Duration,
    /// Of which user time.
    pub user: Duration,
}

/// (user, system) CPU time of process `pid` from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a system constant; no memory is involved.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` text, in `ticks` per second.
pub fn parse_stat_cpu(stat: &str, ticks: u64) -> Option<(Duration, Duration)> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<Duration> {
        let t: u64 = fields.get(n - 3)?.parse().ok()?;
        Some(Duration::from_nanos(t * 1_000_000_000 / ticks))
    };
    Some((field(14)?, field(15)?))
}

/// Runs `program args`, times the span between the guest's `S` and `E` lines and checks
/// that the process ends with the guest's debug exit.
pub fn run_marked(program: &Path, args: &[OsString], limit: Duration) -> Result<Marked> {
    let start = Instant::now();
    let err = ScratchFile::with_contents("blk-stderr", b"")?;
    let stderr = std::fs::File::create(err.path()).map_err(|source| Error::Io {
        what: format!("creating {}", err.path().display()),
        source,
    })?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| Error::Io {
            what: format!("starting {}", program.display()),
            source,
        })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<(String, Instant, Option<(Duration, Duration)>)>();
    if let Some(pipe) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n') {
                let Ok(line) = line else { break };
                let (now, cpu) = (Instant::now(), process_cpu(pid));
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if tx.send((text, now, cpu)).is_err() {
                    break;
                }
            }
        });
    }
    let mut started = None;
    let mut ended = None;
    let mut failure = None;
    let mut output = String::new();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((line, at, cpu)) => {
                match line.as_bytes() {
                    b"S" => started = Some((at, cpu)),
                    b"E" => ended = Some((at, cpu)),
                    [b'F', digit] => failure = Failure::from_digit(*digit),
                    _ => {}
                }
                let _ = writeln!(output, "{line}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Guest(format!(
                    "{} did not finish within {limit:?}; guest output: {}; stderr: {}",
                    program.display(),
                    tail(&output),
                    tail(&std::fs::read_to_string(err.path()).unwrap_or_default())
                )));
            }
        }
    }
    let status = child.wait().map_err(|source| Error::Io {
        what: format!("waiting for {}", program.display()),
        source,
    })?;
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    if let Some(failure) = failure {
        return Err(Error::Guest(format!(
            "{}: the guest failed: {} ({status}); stderr: {}",
            program.display(),
            failure.describe(),
            tail(&stderr)
        )));
    }
    if status.code() != Some(EXIT_STATUS) {
        return Err(Error::Guest(format!(
            "{} ended with {status} instead of status {EXIT_STATUS} (the guest's debug exit); \
             guest output: {}; stderr: {}",
            program.display(),
            tail(&output),
            tail(&stderr)
        )));
    }
    match (started, ended) {
        (Some((t0, Some((u0, s0)))), Some((t1, Some((u1, s1))))) => Ok(Marked {
            wall: t1.saturating_duration_since(t0),
            cpu: (u1 + s1).saturating_sub(u0 + s0),
            user: u1.saturating_sub(u0),
        }),
        _ => Err(Error::Guest(format!(
            "{}: the guest's start and end markers (or the process's CPU time at them) are \
             missing; guest output: {}",
            program.display(),
            tail(&output)
        ))),
    }
}

/// One configuration: VMM, ioeventfd, workload.
type Key = (Vmm, bool, BlkWorkload);

/// The samples of each configuration.
#[derive(Debug, Default)]
pub struct BlkFigures {
    /// Wall ns per request.
    wall_ns: BTreeMap<Key, Vec<f64>>,
    /// CPU ns per request.
    cpu_ns: BTreeMap<Key, Vec<f64>>,
    /// User-time ns per request.
    user_ns: BTreeMap<Key, Vec<f64>>,
    /// Failures, by configuration.
    errors: BTreeMap<Key, String>,
}

impl BlkFigures {
    fn record(&mut self, key: Key, requests: u32, run: Marked) {
        let n = f64::from(requests);
        let per = |d: Duration| d.as_nanos() as f64 / n;
        self.wall_ns.entry(key).or_default().push(per(run.wall));
        self.cpu_ns.entry(key).or_default().push(per(run.cpu));
        self.user_ns.entry(key).or_default().push(per(run.user));
    }

    fn wall(&self, key: Key) -> Option<Summary> {
        self.wall_ns.get(&key).and_then(|v| Summary::of(v))
    }

    fn cpu(&self, key: Key) -> Option<Summary> {
        self.cpu_ns.get(&key).and_then(|v| Summary::of(v))
    }

    fn user(&self, key: Key) -> Option<Summary> {
        self.user_ns.get(&key).and_then(|v| Summary::of(v))
    }
}

/// IOPS from ns per request, as `median (min..max)` (the fastest run is the max).
fn iops_cell(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.min > 0.0 => format!(
            "{} ({}..{})",
            group_thousands((1e9 / s.median).round() as u64),
            group_thousands((1e9 / s.max).round() as u64),
            group_thousands((1e9 / s.min).round() as u64)
        ),
        _ => "-".into(),
    }
}

fn mbps_cell(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.median > 0.0 => format!("{:.1}", 1e9 / s.median * f64::from(BLOCK) / 1e6),
        _ => "-".into(),
    }
}

fn ns_cell(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:.0} ({:.0}..{:.0})", s.median, s.min, s.max),
        None => "-".into(),
    }
}

fn us_pair_cell(cpu: Option<Summary>, user: Option<Summary>) -> String {
    match (cpu, user) {
        (Some(c), Some(u)) => format!(
            "{:.1} ({:.1} / {:.1})",
            c.median / 1e3,
            u.median / 1e3,
            (c.median - u.median) / 1e3
        ),
        _ => "-".into(),
    }
}

/// Runs every configuration and returns the report.
pub fn run(options: &BlkOptions, qemu_label: Option<&str>) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("vmkit-bench-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let result = run_in(options, qemu_label, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(options: &BlkOptions, qemu_label: Option<&str>, dir: &Path) -> Result<String> {
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        Ok(path)
    };
    let disk = write("disk.raw", &disk_image(DISK_BLOCKS))?;
    let mut kernels = BTreeMap::new();
    for workload in BlkWorkload::ALL {
        let elf = blk_kernel(workload, options.requests, DISK_BLOCKS)?;
        kernels.insert(workload, write(&format!("{}.elf", workload.slug()), &elf)?);
    }
    let mut vmms: Vec<(Vmm, PathBuf)> = Vec::new();
    if let Some(vmkit) = &options.vmkit {
        vmms.push((Vmm::Vmkit, vmkit.clone()));
    }
    if let Some(qemu) = &options.qemu {
        vmms.push((Vmm::Qemu, qemu.clone()));
    }
    let load_before = crate::bench::load_average();
    let limit = Duration::from_secs(120) + Duration::from_micros(500) * options.requests;
    let mut figures = BlkFigures::default();
    for _ in 0..options.runs {
        for workload in BlkWorkload::ALL {
            for ioeventfd in [true, false] {
                for (vmm, program) in &vmms {
                    let key = (*vmm, ioeventfd, workload);
                    if figures.errors.contains_key(&key) {
                        continue;
                    }
                    let mut args =
                        common_args(&kernels[&workload], &disk, &options.cache, ioeventfd);
                    if *vmm == Vmm::Qemu {
                        args.extend(qemu_extra_args());
                    }
                    match run_marked(program, &args, limit) {
                        Ok(run) => figures.record(key, options.requests, run),
                        Err(e) => {
                            figures.errors.insert(key, e.to_string());
                        }
                    }
                }
            }
        }
    }
    let load_after = crate::bench::load_average();
    Ok(report(
        options,
        &vmms.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        qemu_label,
        &figures,
        (&load_before, &load_after),
    ))
}

/// The report for `figures`.
pub fn report(
    options: &BlkOptions,
    vmms: &[Vmm],
    qemu_label: Option<&str>,
    figures: &BlkFigures,
    (load_before, load_after): (&str, &str),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vmkit-bench --virtio-blk: virtio-blk-pci, 4 KiB requests, queue depth 1, {} requests \
         per run, {} runs, cache={}",
        options.requests, options.runs, options.cache
    );
    let _ = writeln!(out, "host: {}", crate::bench::host_description());
    let _ = writeln!(
        out,
        "load average (1/5/15 min): {load_before} before, {load_after} after"
    );
    match qemu_label {
        Some(label) => {
            let _ = writeln!(out, "QEMU: {label}");
        }
        None => {
            let _ = writeln!(out, "QEMU: not measured (vmkit's side only)");
        }
    }
    let _ = writeln!(
        out,
        "guest: multiboot ELF32 (-kernel), legacy virtio-pci driver; hot loop at CPL3 (IOPL 3, \
         flat DPL3 segments, paging off, interrupts off, polling the used ring with VRING_AVAIL_F_NO_INTERRUPT); \
         disk: {} MiB raw file, every block checked\n",
        (u64::from(DISK_BLOCKS) * u64::from(BLOCK)) >> 20
    );
    let mut table = Table::new([
        "VMM",
        "ioeventfd",
        "seq read IOPS",
        "seq MB/s",
        "rand read IOPS",
        "rand MB/s",
        "doorbell ns",
        "CPU us/seq req (user / sys)",
        "CPU us/rand req (user / sys)",
        "CPU us/doorbell",
    ]);
    use BlkWorkload::*;
    for &vmm in vmms {
        for ioeventfd in [true, false] {
            let k = |w| (vmm, ioeventfd, w);
            table.row([
                vmm.label().to_string(),
                if ioeventfd { "on" } else { "off" }.to_string(),
                iops_cell(figures.wall(k(SequentialRead))),
                mbps_cell(figures.wall(k(SequentialRead))),
                iops_cell(figures.wall(k(RandomRead))),
                mbps_cell(figures.wall(k(RandomRead))),
                ns_cell(figures.wall(k(Doorbell))),
                us_pair_cell(
                    figures.cpu(k(SequentialRead)),
                    figures.user(k(SequentialRead)),
                ),
                us_pair_cell(figures.cpu(k(RandomRead)), figures.user(k(RandomRead))),
                figures
                    .cpu(k(Doorbell))
                    .map_or("-".into(), |s| format!("{:.1}", s.median / 1e3)),
            ]);
        }
    }
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "\nIOPS = requests / wall time between the guest's start and end markers, median \
         (min..max); MB/s = IOPS x 4096 / 10^6; doorbell = wall / notifies of an empty queue; \
         CPU = utime + stime of the whole VMM process (/proc/PID/stat, 10 ms ticks) over the \
         same span / requests."
    );

    let median = |key: Key| figures.wall(key).map(|s| s.median);
    let mut ratios = Table::new([
        "ratio (median wall per request)",
        "seq read",
        "rand read",
        "doorbell",
    ]);
    if vmms.contains(&Vmm::Qemu) {
        for ioeventfd in [true, false] {
            let cells: Vec<String> = BlkWorkload::ALL
                .iter()
                .map(|&w| {
                    ratio_cell(
                        median((Vmm::Qemu, ioeventfd, w))
                            .zip(median((Vmm::Vmkit, ioeventfd, w)))
                            .map(|(q, v)| q / v),
                    )
                })
                .collect();
            let mut row = vec![format!(
                "QEMU / vmkit, ioeventfd={}",
                if ioeventfd { "on" } else { "off" }
            )];
            row.extend(cells);
            ratios.row(row);
        }
    }
    for &vmm in vmms {
        let cells: Vec<String> = BlkWorkload::ALL
            .iter()
            .map(|&w| {
                ratio_cell(
                    median((vmm, false, w))
                        .zip(median((vmm, true, w)))
                        .map(|(off, on)| off / on),
                )
            })
            .collect();
        let mut row = vec![format!("{}: ioeventfd off / on", vmm.label())];
        row.extend(cells);
        ratios.row(row);
    }
    out.push('\n');
    out.push_str(&ratios.render());
    let _ = writeln!(
        out,
        "\nQEMU / vmkit above 1 means vmkit takes less time per request; off / on above 1 is \
         ioeventfd's gain."
    );
    for ((vmm, ioeventfd, workload), e) in &figures.errors {
        let _ = writeln!(
            out,
            "{} ioeventfd={} {} failed: {e}",
            vmm.label(),
            if *ioeventfd { "on" } else { "off" },
            workload.slug()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_are_found_after_the_command_name() {
        let stat = "1234 (qemu system (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(
            parse_stat_cpu(stat, 100),
            Some((Duration::from_millis(2500), Duration::from_millis(500)))
        );
        assert_eq!(parse_stat_cpu("garbage", 100), None);
        assert!(process_cpu(std::process::id()).is_some());
    }

    #[test]
    fn both_vmms_get_the_same_drive_and_device() {
        let args: Vec<String> = common_args(Path::new("/k"), Path::new("/d"), "none", false)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"file=/d,format=raw,if=none,id=d0,cache=none".to_string()));
        assert!(args.contains(&"virtio-blk-pci,drive=d0,ioeventfd=off".to_string()));
        assert_eq!(args[..2], ["-kernel", "/k"]);
    }

    #[test]
    fn the_report_shows_iops_ratios_and_failures() {
        let mut f = BlkFigures::default();
        let run = |ms: u64| Marked {
            wall: Duration::from_millis(ms),
            cpu: Duration::from_millis(ms / 2),
            user: Duration::from_millis(ms / 10),
        };
        // 1000 requests in 100 ms: 10,000 IOPS, 41.0 MB/s.
        for vmm in [Vmm::Vmkit, Vmm::Qemu] {
            for io in [true, false] {
                for w in BlkWorkload::ALL {
                    let ms = if vmm == Vmm::Qemu { 200 } else { 100 } * if io { 1 } else { 2 };
                    f.record((vmm, io, w), 1000, run(ms));
                }
            }
        }
        f.errors
            .insert((Vmm::Qemu, false, BlkWorkload::Doorbell), "boom".into());
        let options = BlkOptions {
            requests: 1000,
            runs: 1,
            cache: "writeback".into(),
            vmkit: None,
            qemu: None,
        };
        let text = report(
            &options,
            &[Vmm::Vmkit, Vmm::Qemu],
            Some("QEMU 7.2"),
            &f,
            ("0", "0"),
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("| vmkit ") && l.contains(" on |")),
            "{text}"
        );
        assert!(text.contains("10,000 (10,000..10,000)"), "{text}");
        assert!(text.contains("41.0"), "{text}");
        assert!(text.contains("CPL3"), "{text}");
        assert!(text.contains("2.00x"), "{text}");
        assert!(
            text.contains("QEMU ioeventfd=off doorbell failed: boom"),
            "{text}"
        );
    }
}
