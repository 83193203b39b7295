//! The benchmark itself: runs every runner on every workload, then writes the report.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::{Only, Options};
use crate::guest::{scaling_firmware, workload_firmware, Workload, EXIT_STATUS, EXIT_VALUE};
use crate::inprocess::{debug_exit_device, run_scaling, run_start_pc, GUEST_RAM};
use crate::process::{run_measured, tail, ScratchFile};
use crate::raw::run_firmware;
use crate::stats::{exits_per_second, per_exit_ns, ratio, Summary};
use crate::table::{mib_cell, ms_cell, rate_cell, ratio_cell, summary_cell, Table};
use crate::{Error, Result};

/// Exits in the baseline run that `T(N)` is compared with.
pub const BASELINE_EXITS: u32 = 1;
/// Exits in a memory run (long enough for the RSS sampler to see the steady state).
pub const MEMORY_RUN_EXITS: u32 = 20_000;

/// One way of running the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runner {
    /// The bare kvm-ioctls loop, as a child process (this binary with `--raw-child`).
    Raw,
    /// The `vmkit` binary.
    VmkitBinary,
    /// `vmkit_vmm::builder::start_pc` in this process.
    VmkitLibrary,
    /// `qemu-system-x86_64 -accel kvm`.
    Qemu,
}

impl Runner {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Runner::Raw => "raw (kvm-ioctls loop)",
            Runner::VmkitBinary => "vmkit (binary)",
            Runner::VmkitLibrary => "vmkit-lib (in-process)",
            Runner::Qemu => "QEMU",
        }
    }

    /// Whether it is a process of its own (start-up time and RSS are its own).
    pub fn is_process(self) -> bool {
        !matches!(self, Runner::VmkitLibrary)
    }
}

/// The line printed by `--raw-child` on success.
pub fn raw_child_report(exits: u64, guest_resident_bytes: u64) -> String {
    format!("exits={exits} guest_resident_bytes={guest_resident_bytes}")
}

/// Parses [`raw_child_report`]'s line: (exits, guest resident bytes).
pub fn parse_raw_child_report(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("exits="))?;
    let mut exits = None;
    let mut resident = None;
    for field in line.split_whitespace() {
        match field.split_once('=') {
            Some(("exits", v)) => exits = v.parse().ok(),
            Some(("guest_resident_bytes", v)) => resident = v.parse().ok(),
            _ => {}
        }
    }
    Some((exits?, resident?))
}

/// `--raw-child IMAGE`: runs the image on the raw loop, prints [`raw_child_report`] and
/// returns the exit status a VMM would give (`(value << 1) | 1`).
pub fn raw_child(image: &Path) -> Result<i32> {
    let bytes = std::fs::read(image).map_err(|source| Error::Io {
        what: format!("reading {}", image.display()),
        source,
    })?;
    let outcome = run_firmware(&bytes, 1, true)?;
    println!(
        "{}",
        raw_child_report(outcome.exits.iter().sum(), outcome.guest_resident_bytes)
    );
    Ok(match outcome.exit_value {
        Some(value) => (i32::from(value) << 1) | 1,
        None => 1,
    })
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// Start to the guest's exit marker (processes), or to the VM's end (in-process).
    guest_exit: Option<Duration>,
    rss_kib: Option<u64>,
    guest_resident: Option<u64>,
    /// User and system CPU time (processes only).
    cpu: Option<(Duration, Duration)>,
}

/// Where the external programs are.
#[derive(Debug, Clone)]
struct Programs {
    this: PathBuf,
    vmkit: Option<PathBuf>,
    qemu: Option<PathBuf>,
}

fn process_limit(exits: u32) -> Duration {
    // Generous: even 100 µs per exit finishes well inside it.
    Duration::from_secs(60) + Duration::from_micros(100) * exits
}

fn run_process(
    program: &Path,
    args: Vec<OsString>,
    exits: u32,
    what: &str,
    sample_rss: bool,
) -> Result<Sample> {
    let run = run_measured(program, &args, process_limit(exits), sample_rss)?;
    if run.status != EXIT_STATUS {
        return Err(Error::Guest(format!(
            "{what} exited with status {} instead of {EXIT_STATUS} (the guest's debug exit); stderr: {}",
            run.status,
            tail(&run.stderr)
        )));
    }
    Ok(Sample {
        wall: run.wall,
        guest_exit: run.first_output,
        cpu: Some((run.user_time, run.system_time)),
        rss_kib: run.peak_rss_kib,
        guest_resident: None,
    })
}

fn run_once(
    runner: Runner,
    programs: &Programs,
    (image, file): (&[u8], &Path),
    workload: Workload,
    exits: u32,
    sample_rss: bool,
) -> Result<Sample> {
    let bios = file.as_os_str().to_owned();
    match runner {
        Runner::Raw => {
            let args = vec![crate::cli::RAW_CHILD_OPTION.into(), bios];
            let run = run_measured(&programs.this, &args, process_limit(exits), sample_rss)?;
            let counted = parse_raw_child_report(&run.stdout);
            if run.status != EXIT_STATUS || counted.map(|(n, _)| n) != Some(u64::from(exits)) {
                return Err(Error::Guest(format!(
                    "the raw loop exited with status {} and reported {counted:?} (expected \
                     status {EXIT_STATUS} after {exits} exits); stderr: {}",
                    run.status,
                    tail(&run.stderr)
                )));
            }
            Ok(Sample {
                wall: run.wall,
                guest_exit: run.first_output,
                cpu: Some((run.user_time, run.system_time)),
                rss_kib: run.peak_rss_kib,
                guest_resident: counted.map(|(_, resident)| resident),
            })
        }
        Runner::VmkitBinary => {
            let program = programs
                .vmkit
                .as_deref()
                .ok_or_else(|| Error::Guest("no vmkit binary".into()))?;
            let args = vmkit_args(file);
            run_process(program, args, exits, "vmkit", sample_rss)
        }
        Runner::Qemu => {
            let program = programs
                .qemu
                .as_deref()
                .ok_or_else(|| Error::Guest("no QEMU".into()))?;
            run_process(program, qemu_args(file), exits, "QEMU", sample_rss)
        }
        Runner::VmkitLibrary => Ok(Sample {
            wall: run_start_pc(image.to_vec(), workload, exits)?,
            guest_exit: None,
            cpu: None,
            rss_kib: None,
            guest_resident: None,
        }),
    }
}

/// The `vmkit` command line for a firmware file.
pub fn vmkit_args(bios: &Path) -> Vec<OsString> {
    vec![
        "-bios".into(),
        bios.as_os_str().to_owned(),
        "-device".into(),
        debug_exit_device().into(),
        "-m".into(),
        (GUEST_RAM >> 20).to_string().into(),
        "-serial".into(),
        "stdio".into(),
    ]
}

/// The QEMU command line for a firmware file.
pub fn qemu_args(bios: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-accel", "kvm", "-bios"].map(OsString::from).to_vec();
    args.push(bios.as_os_str().to_owned());
    for arg in [
        "-device".to_string(),
        debug_exit_device(),
        "-display".into(),
        "none".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-m".into(),
        (GUEST_RAM >> 20).to_string(),
        "-serial".into(),
        "stdio".into(),
    ] {
        args.push(arg.into());
    }
    args
}

/// The vmkit binary: `explicit`, or `vmkit` next to this executable (brought up to date
/// with `cargo build` first when this executable lives in a cargo target directory of the
/// workspace it was built from).
pub fn locate_vmkit(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--vmkit {}: no such file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| "this executable has no directory".to_string())?;
    let candidate = dir.join("vmkit");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = dir.parent();
    if let (true, Some(target_dir)) = (
        matches!(profile, "release" | "debug") && workspace.join("Cargo.toml").is_file(),
        target_dir,
    ) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(&workspace)
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["build", "--quiet", "-p", "vmkit-vmm", "--bin", "vmkit"]);
        if profile == "release" {
            command.arg("--release");
        }
        eprintln!(
            "vmkit-bench: bringing the vmkit binary up to date (cargo build{} -p vmkit-vmm --bin vmkit)",
            if profile == "release" { " --release" } else { "" }
        );
        match command.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "vmkit-bench: building vmkit failed: {}",
                tail(&String::from_utf8_lossy(&out.stderr))
            ),
            Err(e) => eprintln!("vmkit-bench: cannot run cargo: {e}"),
        }
    }
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "no vmkit binary at {} (build it: cargo build --release -p vmkit-vmm, or pass --vmkit PATH)",
            candidate.display()
        ))
    }
}

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

/// Everything measured for one runner.
#[derive(Debug, Default, Clone)]
struct RunnerFigures {
    per_exit: BTreeMap<&'static str, Vec<f64>>,
    user_per_exit: BTreeMap<&'static str, Vec<f64>>,
    system_per_exit: BTreeMap<&'static str, Vec<f64>>,
    startup_ns: Vec<f64>,
    process_ns: Vec<f64>,
    rss_kib: Vec<f64>,
    guest_resident: Vec<f64>,
    error: Option<String>,
}

impl RunnerFigures {
    fn per_exit(&self, workload: Workload) -> Option<Summary> {
        self.per_exit
            .get(workload.slug())
            .and_then(|v| Summary::of(v))
    }

    fn startup(&self) -> Option<Summary> {
        Summary::of(&self.startup_ns)
    }

    fn process_time(&self) -> Option<Summary> {
        Summary::of(&self.process_ns)
    }

    fn rss(&self) -> Option<Summary> {
        Summary::of(&self.rss_kib)
    }
}

/// The guest images of one workload: baseline and measured, in memory and on disk.
struct Images {
    workload: Workload,
    small: (Vec<u8>, ScratchFile),
    large: (Vec<u8>, ScratchFile),
}

fn images(exits: u32) -> Result<Vec<Images>> {
    Workload::ALL
        .iter()
        .map(|&workload| {
            let make = |n: u32| -> Result<(Vec<u8>, ScratchFile)> {
                let bytes = workload_firmware(workload, n)?;
                let file =
                    ScratchFile::with_contents(&format!("{}-{n}.bin", workload.slug()), &bytes)?;
                Ok((bytes, file))
            };
            Ok(Images {
                workload,
                small: make(BASELINE_EXITS)?,
                large: make(exits)?,
            })
        })
        .collect()
}

/// Runs the benchmark and returns the report.
pub fn run(options: &Options) -> Result<String> {
    if let Some(bios) = &options.seabios {
        let vmkit = locate_vmkit(options.vmkit.as_deref()).map_err(Error::Usage)?;
        let qemu = qemu_version(&options.qemu)
            .ok()
            .map(|_| options.qemu.as_path());
        return crate::firmware::run(&vmkit, qemu, bios, options.runs);
    }
    let mut report = String::new();
    let load_before = load_average();
    let exits = options.exits;

    let mut notes = Vec::new();
    let mut runners = Vec::new();
    let this = std::env::current_exe().map_err(|source| Error::Io {
        what: "locating this executable".into(),
        source,
    })?;
    let mut programs = Programs {
        this,
        vmkit: None,
        qemu: None,
    };
    if options.includes(Only::Raw) {
        runners.push(Runner::Raw);
    }
    if options.includes(Only::Vmkit) {
        match locate_vmkit(options.vmkit.as_deref()) {
            Ok(path) => {
                programs.vmkit = Some(path);
                runners.push(Runner::VmkitBinary);
            }
            Err(why) => notes.push(format!("vmkit (binary) skipped: {why}")),
        }
        runners.push(Runner::VmkitLibrary);
    }
    let mut qemu_label = None;
    if options.includes(Only::Qemu) {
        match qemu_version(&options.qemu) {
            Ok(version) => {
                programs.qemu = Some(options.qemu.clone());
                runners.push(Runner::Qemu);
                qemu_label = Some(version);
            }
            Err(why) => notes.push(format!(
                "QEMU skipped: not usable ({why}); install it (Debian: apt-get install qemu-system-x86) to compare"
            )),
        }
    }

    let images = images(exits)?;
    let mut figures: BTreeMap<Runner, RunnerFigures> = runners
        .iter()
        .map(|&r| (r, RunnerFigures::default()))
        .collect();
    eprint!(
        "vmkit-bench: {} runs x {} runners x {} workloads ",
        options.runs,
        runners.len(),
        images.len()
    );
    for _ in 0..options.runs {
        for &runner in &runners {
            let Some(fig) = figures.get_mut(&runner) else {
                continue;
            };
            if fig.error.is_some() {
                continue;
            }
            for set in &images {
                let result = run_once(
                    runner,
                    &programs,
                    (&set.small.0, set.small.1.path()),
                    set.workload,
                    BASELINE_EXITS,
                    false,
                )
                .and_then(|small| {
                    run_once(
                        runner,
                        &programs,
                        (&set.large.0, set.large.1.path()),
                        set.workload,
                        exits,
                        false,
                    )
                    .map(|large| (small, large))
                });
                match result {
                    Ok((small, large)) => {
                        if let Some(ns) = per_exit_ns(
                            u64::from(BASELINE_EXITS),
                            small.wall,
                            u64::from(exits),
                            large.wall,
                        ) {
                            fig.per_exit
                                .entry(set.workload.slug())
                                .or_default()
                                .push(ns);
                        }
                        if let (Some((u1, s1)), Some((un, sn))) = (small.cpu, large.cpu) {
                            let n = (u64::from(BASELINE_EXITS), u64::from(exits));
                            if let Some(ns) = per_exit_ns(n.0, u1, n.1, un) {
                                let slot = fig.user_per_exit.entry(set.workload.slug());
                                slot.or_default().push(ns);
                            }
                            if let Some(ns) = per_exit_ns(n.0, s1, n.1, sn) {
                                let slot = fig.system_per_exit.entry(set.workload.slug());
                                slot.or_default().push(ns);
                            }
                        }
                        if set.workload == Workload::PioWrite {
                            if let Some(t) = small.guest_exit {
                                fig.startup_ns.push(t.as_nanos() as f64);
                            }
                            fig.process_ns.push(small.wall.as_nanos() as f64);
                        }
                        eprint!(".");
                    }
                    Err(e) => {
                        eprint!("!");
                        fig.error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
    }
    eprintln!();

    // Memory runs: the PIO-write guest long enough for the sampler to see the steady state.
    let memory_image = workload_firmware(Workload::PioWrite, MEMORY_RUN_EXITS)?;
    let memory_file = ScratchFile::with_contents("memory.bin", &memory_image)?;
    eprint!("vmkit-bench: memory ");
    for _ in 0..options.runs {
        for &runner in runners.iter().filter(|r| r.is_process()) {
            let Some(fig) = figures.get_mut(&runner) else {
                continue;
            };
            if fig.error.is_some() {
                continue;
            }
            match run_once(
                runner,
                &programs,
                (&memory_image, memory_file.path()),
                Workload::PioWrite,
                MEMORY_RUN_EXITS,
                true,
            ) {
                Ok(sample) => {
                    if let Some(rss) = sample.rss_kib {
                        fig.rss_kib.push(rss as f64);
                    }
                    if let Some(bytes) = sample.guest_resident {
                        fig.guest_resident.push(bytes as f64);
                    }
                    eprint!(".");
                }
                Err(e) => {
                    eprint!("!");
                    fig.error = Some(e.to_string());
                }
            }
        }
    }
    eprintln!();

    let guest_loop = if options.includes(Only::Raw) {
        Some(guest_loop_cost(options)?)
    } else {
        None
    };

    let scaling = if options.scaling && options.only != Some(Only::Qemu) {
        Some(scaling_runs(options)?)
    } else {
        None
    };
    let load_after = load_average();

    // Guest memory touched: measured on the raw loop (the same guest touches the same
    // pages under any VMM); without the raw row, the 64 KiB image is the estimate.
    let guest_touched_kib = figures
        .get(&Runner::Raw)
        .and_then(|f| Summary::of(&f.guest_resident))
        .map(|s| s.median / 1024.0)
        .unwrap_or((crate::guest::FIRMWARE_SIZE / 1024) as f64);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(report, "vmkit-bench, {} (UTC)", utc_date(now));
    let _ = writeln!(report, "host: {}", host_description());
    let _ = writeln!(
        report,
        "load average (1/5/15 min): {load_before} before, {load_after} after"
    );
    let _ = writeln!(
        report,
        "QEMU: {}",
        qemu_label.as_deref().unwrap_or("not measured")
    );
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
    if busy(&load_before, cpus) || busy(&load_after, cpus) {
        let _ = writeln!(
            report,
            "warning: the 1-minute load average was at or above half the CPUs: other work was \
             running, so the figures are noisier (and 2 vCPUs may not get 2 CPUs)"
        );
    }
    report.push('\n');

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
    for (&runner, fig) in &figures {
        let label = match (runner, &qemu_label) {
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
    if let Some(Some(cost)) = guest_loop {
        let _ = writeln!(
            report,
            "Guest code alone: the same loop with a RAM write instead of the exit costs {} ns per \
             iteration on the raw loop; every ns/exit figure above includes it.",
            summary_cell(Some(cost))
        );
    }
    for (&runner, fig) in &figures {
        if let Some(e) = &fig.error {
            notes.push(format!("{} failed: {e}", runner.label()));
        }
    }

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

    let median = |runner: Runner, workload: Workload| {
        figures
            .get(&runner)
            .and_then(|f| f.per_exit(workload))
            .map(|s| s.median)
    };
    let startup = |runner: Runner| {
        figures
            .get(&runner)
            .and_then(|f| f.startup())
            .map(|s| s.median)
    };
    let overhead = |runner: Runner| {
        figures
            .get(&runner)
            .and_then(|f| f.rss())
            .map(|s| (s.median - guest_touched_kib).max(0.0))
    };
    let pair_ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => None,
    };

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
                median(a, Workload::PioWrite),
                median(b, Workload::PioWrite),
            )),
            ratio_cell(pair_ratio(
                median(a, Workload::MmioWrite),
                median(b, Workload::MmioWrite),
            )),
            ratio_cell(pair_ratio(
                median(a, Workload::PioRead),
                median(b, Workload::PioRead),
            )),
            if process {
                ratio_cell(pair_ratio(startup(a), startup(b)))
            } else {
                "-".into()
            },
            if process {
                ratio_cell(pair_ratio(overhead(a), overhead(b)))
            } else {
                "-".into()
            },
        ]);
    }
    if !ratios.rows().is_empty() {
        report.push('\n');
        report.push_str(&ratios.render());
    }

    // Targets, judged on the full stack (the binary), else on the library.
    let vmkit = if figures.contains_key(&Runner::VmkitBinary) {
        Runner::VmkitBinary
    } else {
        Runner::VmkitLibrary
    };
    let mut targets = Table::new(["target", "measured", "met"]);
    for workload in [Workload::PioWrite, Workload::MmioWrite] {
        let (v, r) = (median(vmkit, workload), median(Runner::Raw, workload));
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
        let (v, q) = (median(vmkit, workload), median(Runner::Qemu, workload));
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
    let (sv, sq) = (startup(Runner::VmkitBinary), startup(Runner::Qemu));
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
    let (ov, oq) = (overhead(Runner::VmkitBinary), overhead(Runner::Qemu));
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

    if let Some(scaling) = scaling {
        report.push('\n');
        report.push_str(&scaling);
    }
    if !notes.is_empty() {
        report.push('\n');
        for note in notes {
            let _ = writeln!(report, "note: {note}");
        }
    }
    Ok(report)
}

/// Per-iteration cost of the guest's loop with a RAM write instead of the exit, on the raw
/// loop in this process: what every per-exit figure spends in guest code.
fn guest_loop_cost(options: &Options) -> Result<Option<Summary>> {
    let small = workload_firmware(Workload::RamWrite, BASELINE_EXITS)?;
    let large = workload_firmware(Workload::RamWrite, options.exits)?;
    let time = |image: &[u8]| -> Result<Duration> {
        let start = std::time::Instant::now();
        let outcome = run_firmware(image, 1, false)?;
        if outcome.exit_value != Some(EXIT_VALUE) {
            return Err(Error::Guest(
                "the RAM-write reference guest did not reach its debug exit".into(),
            ));
        }
        Ok(start.elapsed())
    };
    let mut samples = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let t1 = time(&small)?;
        let tn = time(&large)?;
        if let Some(ns) = per_exit_ns(u64::from(BASELINE_EXITS), t1, u64::from(options.exits), tn) {
            samples.push(ns);
        }
    }
    Ok(Summary::of(&samples))
}

fn target_row(name: String, measured: Option<String>, met: Option<bool>) -> [String; 3] {
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

/// `QEMU emulator version 7.2.22 (Debian ...)` as `7.2.22`.
pub fn qemu_short_version(line: &str) -> String {
    line.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or(line)
        .to_string()
}

/// The scaling part: exits per second with 1 and 2 vCPUs, raw loop and vmkit in-process.
fn scaling_runs(options: &Options) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_child_report_round_trips() {
        let line = raw_child_report(200_000, 65_536);
        assert_eq!(line, "exits=200000 guest_resident_bytes=65536");
        assert_eq!(
            parse_raw_child_report(&format!("noise\n{line}\n")),
            Some((200_000, 65_536))
        );
        assert_eq!(parse_raw_child_report("exits=5"), None);
        assert_eq!(parse_raw_child_report(""), None);
    }

    #[test]
    fn command_lines_match_qemus_conventions() {
        let bios = Path::new("/tmp/guest.bin");
        let join = |args: Vec<OsString>| {
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            join(vmkit_args(bios)),
            "-bios /tmp/guest.bin -device isa-debug-exit,iobase=0x501,iosize=2 -m 16 -serial stdio"
        );
        assert_eq!(
            join(qemu_args(bios)),
            "-accel kvm -bios /tmp/guest.bin -device isa-debug-exit,iobase=0x501,iosize=2 \
             -display none -nodefaults -no-user-config -m 16 -serial stdio"
        );
    }

    #[test]
    fn qemu_version_and_dates() {
        assert_eq!(
            qemu_short_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)"),
            "7.2.22"
        );
        assert_eq!(qemu_short_version("odd"), "odd");
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_392_000 + 86_399), "2026-11-23");
    }

    #[test]
    fn a_busy_machine_is_noticed() {
        assert!(busy("1.00 0.50 0.20", 2));
        assert!(!busy("0.40 1.50 2.00", 2));
        assert!(!busy("?", 2));
    }

    #[test]
    fn only_processes_have_their_own_start_up_and_memory() {
        assert!(Runner::Raw.is_process());
        assert!(Runner::VmkitBinary.is_process());
        assert!(Runner::Qemu.is_process());
        assert!(!Runner::VmkitLibrary.is_process());
    }

    #[test]
    fn target_rows_say_yes_no_or_not_measured() {
        assert_eq!(
            target_row("t".into(), Some("1".into()), Some(true))[2],
            "yes"
        );
        assert_eq!(
            target_row("t".into(), Some("1".into()), Some(false))[2],
            "NO"
        );
        let row = target_row("t".into(), None, None);
        assert_eq!((row[1].as_str(), row[2].as_str()), ("not measured", "-"));
    }
}
