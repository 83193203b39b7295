//! The benchmark itself: runs every runner on every workload, then writes the report.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::{Only, Options};
use crate::guest::{workload_firmware, Workload, EXIT_STATUS, EXIT_VALUE};
use crate::inprocess::{debug_exit_device, run_start_pc, GUEST_RAM};
use crate::process::{run_measured, tail, ScratchFile};
use crate::raw::run_firmware;
use crate::stats::{per_exit_ns, Summary};
use crate::{Error, Result};

pub use crate::host::{
    busy, host_description, load_average, qemu_short_version, qemu_version, utc_date,
};
use crate::scaling::scaling_runs;

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
    pub(crate) rss_kib: Option<u64>,
    pub(crate) guest_resident: Option<u64>,
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

/// Everything measured for one runner.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunnerFigures {
    pub(crate) per_exit: BTreeMap<&'static str, Vec<f64>>,
    pub(crate) user_per_exit: BTreeMap<&'static str, Vec<f64>>,
    pub(crate) system_per_exit: BTreeMap<&'static str, Vec<f64>>,
    pub(crate) startup_ns: Vec<f64>,
    pub(crate) process_ns: Vec<f64>,
    rss_kib: Vec<f64>,
    guest_resident: Vec<f64>,
    pub(crate) error: Option<String>,
}

impl RunnerFigures {
    pub(crate) fn per_exit(&self, workload: Workload) -> Option<Summary> {
        self.per_exit
            .get(workload.slug())
            .and_then(|v| Summary::of(v))
    }

    pub(crate) fn startup(&self) -> Option<Summary> {
        Summary::of(&self.startup_ns)
    }

    pub(crate) fn process_time(&self) -> Option<Summary> {
        Summary::of(&self.process_ns)
    }

    pub(crate) fn rss(&self) -> Option<Summary> {
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

/// `--virtio-blk`: vmkit unless `--only qemu`, QEMU when it is installed and not excluded by
/// `--only vmkit` (or `--only raw`, which has no virtio-blk side).
fn run_virtio_blk(options: &Options) -> Result<String> {
    let vmkit = if options.includes(Only::Vmkit) {
        Some(locate_vmkit(options.vmkit.as_deref()).map_err(Error::Usage)?)
    } else {
        None
    };
    let mut note = None;
    let qemu = if options.includes(Only::Qemu) {
        match qemu_version(&options.qemu) {
            Ok(version) => Some(version),
            Err(e) => {
                note = Some(format!("QEMU skipped: {e}\n"));
                None
            }
        }
    } else {
        None
    };
    let blk = crate::blk::BlkOptions {
        requests: options.requests,
        runs: options.runs,
        cache: options.cache.clone(),
        vmkit,
        qemu: qemu.as_ref().map(|_| options.qemu.clone()),
    };
    let mut report = crate::blk::run(&blk, qemu.as_deref())?;
    if let Some(note) = note {
        report.push_str(&note);
    }
    Ok(report)
}

/// `--migration`: vmkit unless `--only qemu`, QEMU when it is installed and not excluded.
fn run_migration(options: &Options) -> Result<String> {
    let vmkit = if options.includes(Only::Vmkit) {
        Some(locate_vmkit(options.vmkit.as_deref()).map_err(Error::Usage)?)
    } else {
        None
    };
    let mut header = format!("vmkit-bench --migration\nhost: {}\n", host_description());
    let qemu = if options.includes(Only::Qemu) {
        match qemu_version(&options.qemu) {
            Ok(version) => {
                let _ = writeln!(header, "QEMU: {version}");
                Some(options.qemu.clone())
            }
            Err(e) => {
                let _ = writeln!(header, "QEMU skipped: {e}");
                None
            }
        }
    } else {
        None
    };
    let _ = writeln!(header, "load average before: {}\n", load_average());
    let report = crate::migrate::run(&crate::migrate::MigrationBench {
        vmkit,
        qemu,
        runs: options.runs,
        sizes_mib: crate::migrate::SIZES_MIB.to_vec(),
    })?;
    Ok(header + &report)
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
    if options.virtio_blk {
        return run_virtio_blk(options);
    }
    if options.migration {
        return run_migration(options);
    }
    let load_before = load_average();
    let Setup {
        runners,
        programs,
        qemu_label,
        mut notes,
    } = Setup::discover(options)?;
    let images = images(options.exits)?;
    let mut figures: Figures = runners
        .iter()
        .map(|&r| (r, RunnerFigures::default()))
        .collect();
    measure_exits(options, &runners, &programs, &images, &mut figures);
    measure_memory(options, &runners, &programs, &mut figures)?;
    let guest_loop = if options.includes(Only::Raw) {
        guest_loop_cost(options)?
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
    let medians = Medians {
        figures: &figures,
        guest_touched_kib,
    };

    let mut report =
        crate::report::header(options, qemu_label.as_deref(), &load_before, &load_after);
    report.push_str(&crate::report::main_table(
        &medians,
        qemu_label.as_deref(),
        guest_loop,
    ));
    for (&runner, fig) in &figures {
        if let Some(e) = &fig.error {
            notes.push(format!("{} failed: {e}", runner.label()));
        }
    }
    report.push_str(&crate::report::cpu_table(&figures));
    report.push_str(&crate::report::ratio_table(&medians));
    report.push_str(&crate::report::target_table(&medians));
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

/// Every runner's figures.
pub(crate) type Figures = BTreeMap<Runner, RunnerFigures>;

/// The runners this run measures and the programs they need.
struct Setup {
    runners: Vec<Runner>,
    programs: Programs,
    qemu_label: Option<String>,
    notes: Vec<String>,
}

impl Setup {
    /// Finds the vmkit binary and QEMU; a runner whose program is missing is left out with
    /// a note saying why.
    fn discover(options: &Options) -> Result<Self> {
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

        Ok(Self {
            runners,
            programs,
            qemu_label,
            notes,
        })
    }
}

/// The per-exit runs: every runner on every workload, baseline and measured, `runs` times.
fn measure_exits(
    options: &Options,
    runners: &[Runner],
    programs: &Programs,
    images: &[Images],
    figures: &mut Figures,
) {
    let exits = options.exits;
    eprint!(
        "vmkit-bench: {} runs x {} runners x {} workloads ",
        options.runs,
        runners.len(),
        images.len()
    );
    for _ in 0..options.runs {
        for &runner in runners {
            let Some(fig) = figures.get_mut(&runner) else {
                continue;
            };
            if fig.error.is_some() {
                continue;
            }
            for set in images {
                let result = run_once(
                    runner,
                    programs,
                    (&set.small.0, set.small.1.path()),
                    set.workload,
                    BASELINE_EXITS,
                    false,
                )
                .and_then(|small| {
                    run_once(
                        runner,
                        programs,
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
}

/// The memory runs: the PIO-write guest long enough for the sampler to see the steady
/// state, in every runner that is a process of its own.
fn measure_memory(
    options: &Options,
    runners: &[Runner],
    programs: &Programs,
    figures: &mut Figures,
) -> Result<()> {
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
                programs,
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

    Ok(())
}

/// Medians of the runners' figures, for the report's tables.
pub(crate) struct Medians<'a> {
    pub(crate) figures: &'a Figures,
    /// Guest memory touched (KiB), subtracted from peak RSS for the VMM's overhead.
    pub(crate) guest_touched_kib: f64,
}

impl Medians<'_> {
    /// Median ns per exit of `runner` on `workload`.
    pub(crate) fn per_exit(&self, runner: Runner, workload: Workload) -> Option<f64> {
        self.figures
            .get(&runner)
            .and_then(|f| f.per_exit(workload))
            .map(|s| s.median)
    }

    /// Median start-to-guest-exit time (ns).
    pub(crate) fn startup(&self, runner: Runner) -> Option<f64> {
        self.figures
            .get(&runner)
            .and_then(|f| f.startup())
            .map(|s| s.median)
    }

    /// Median VMM memory overhead (KiB): peak RSS less the guest memory touched.
    pub(crate) fn overhead(&self, runner: Runner) -> Option<f64> {
        self.figures
            .get(&runner)
            .and_then(|f| f.rss())
            .map(|s| (s.median - self.guest_touched_kib).max(0.0))
    }
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
        use crate::report::target_row;
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
