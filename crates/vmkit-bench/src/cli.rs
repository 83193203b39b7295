//! Command-line options of the `vmkit-bench` binary.

use std::path::PathBuf;

use crate::{Error, Result};

/// Exits per run by default.
pub const DEFAULT_EXITS: u32 = 200_000;
/// Runs per figure by default.
pub const DEFAULT_RUNS: usize = 5;
/// Exits per run with `--quick`.
pub const QUICK_EXITS: u32 = 2_000;
/// Runs per figure with `--quick`.
pub const QUICK_RUNS: usize = 2;
/// Requests per `--virtio-blk` run by default.
pub const DEFAULT_REQUESTS: u32 = 20_000;
/// Requests per `--virtio-blk` run with `--quick`.
pub const QUICK_REQUESTS: u32 = 300;

/// The help text.
pub const USAGE: &str = "\
vmkit-bench: the same firmware guest on a bare kvm-ioctls loop, on vmkit and on QEMU

usage: cargo run --release -p vmkit-bench -- [options]

options:
  --exits N         exits per measured run (default 200000; the baseline run has 1)
  --runs R          runs per figure; the report shows median (min..max) (default 5)
  --only WHICH      only one of: raw, vmkit, qemu
  --quick           small N and 2 runs: a smoke test, not a measurement
  --seabios         instead: time Debian's SeaBIOS from process start to its boot step,
                    vmkit vs QEMU on the same command line (--runs runs each)
  --bios PATH       the same with another SeaBIOS image
  --virtio-blk      instead: virtio-blk-pci 4 KiB sequential and random reads and doorbells,
                    ioeventfd=on and off, vmkit vs QEMU with the same guest kernel and disk
                    file (--runs runs each; --only vmkit or qemu for one side)
  --requests N      requests (or doorbells) per --virtio-blk run (default 20000; 300 with --quick)
  --cache MODE      the --virtio-blk drive's cache= (writeback or none; default writeback)
  --migration       instead: live migration, vmkit vs QEMU on the same guest (256 MiB and
                    2 GiB, idle and dirtying): total time and downtime (--runs runs each)
  --no-scaling      skip the 1-vCPU / 2-vCPU scaling runs
  --vmkit PATH      the vmkit binary (default: `vmkit` next to this binary, built with
                    cargo first when this binary runs from a cargo target directory)
  --qemu PATH       the QEMU binary (default: qemu-system-x86_64 on PATH; skipped if absent)
  -h, --help        this text

Rows: raw = a kvm-ioctls loop with no vmkit code (this binary, in a child process);
vmkit = the `vmkit` binary; vmkit-lib = vmkit_vmm::builder::start_pc in this process;
QEMU = qemu-system-x86_64 -accel kvm. ns/exit = (T(N) - T(1)) / (N - 1).
";

/// Which runners to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// The raw kvm-ioctls loop.
    Raw,
    /// vmkit (binary and library).
    Vmkit,
    /// QEMU.
    Qemu,
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Exits in a measured run.
    pub exits: u32,
    /// Runs per figure.
    pub runs: usize,
    /// Restrict to one runner.
    pub only: Option<Only>,
    /// Smoke-test mode.
    pub quick: bool,
    /// Run the scaling part.
    pub scaling: bool,
    /// Explicit vmkit binary.
    pub vmkit: Option<PathBuf>,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// `--seabios [BIOS]`: time SeaBIOS's boot instead of exit dispatch.
    pub seabios: Option<PathBuf>,
    /// `--virtio-blk`: the virtio-blk comparison instead of exit dispatch.
    pub virtio_blk: bool,
    /// Requests per `--virtio-blk` run.
    pub requests: u32,
    /// The `--virtio-blk` drive's `cache=`.
    pub cache: String,
    /// `--migration`: live migration instead of exit dispatch.
    pub migration: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            exits: DEFAULT_EXITS,
            runs: DEFAULT_RUNS,
            only: None,
            quick: false,
            scaling: true,
            vmkit: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            seabios: None,
            virtio_blk: false,
            requests: DEFAULT_REQUESTS,
            cache: "writeback".into(),
            migration: false,
        }
    }
}

impl Options {
    /// Whether `which` is to be measured.
    pub fn includes(&self, which: Only) -> bool {
        self.only.is_none_or(|only| only == which)
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run the benchmark.
    Run(Options),
    /// Internal: run `image` on the raw loop in this process and report (used by the
    /// benchmark itself to time the raw loop as a process, like the VMMs).
    RawChild(PathBuf),
}

/// Internal option that runs the raw loop on one image.
pub const RAW_CHILD_OPTION: &str = "--raw-child";

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut options = Options::default();
    let mut exits = None;
    let mut runs = None;
    let mut requests = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| Error::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--exits" => exits = Some(parse_number::<u32>("--exits", &value("--exits")?)?),
            "--runs" => runs = Some(parse_number::<usize>("--runs", &value("--runs")?)?),
            "--only" => {
                options.only = Some(match value("--only")?.as_str() {
                    "raw" => Only::Raw,
                    "vmkit" => Only::Vmkit,
                    "qemu" => Only::Qemu,
                    other => {
                        return Err(Error::Usage(format!(
                            "--only {other}: expected raw, vmkit or qemu"
                        )))
                    }
                })
            }
            "--quick" => options.quick = true,
            "--seabios" => {
                options.seabios = Some(PathBuf::from(crate::firmware::DEFAULT_BIOS));
            }
            "--bios" => options.seabios = Some(PathBuf::from(value("--bios")?)),
            "--no-scaling" => options.scaling = false,
            "--virtio-blk" => options.virtio_blk = true,
            "--requests" => {
                requests = Some(parse_number::<u32>("--requests", &value("--requests")?)?)
            }
            "--cache" => {
                options.cache = match value("--cache")?.as_str() {
                    mode @ ("writeback" | "none") => mode.to_string(),
                    other => {
                        return Err(Error::Usage(format!(
                            "--cache {other}: expected writeback or none"
                        )))
                    }
                }
            }
            "--migration" => options.migration = true,
            "--vmkit" => options.vmkit = Some(PathBuf::from(value("--vmkit")?)),
            "--qemu" => options.qemu = PathBuf::from(value("--qemu")?),
            RAW_CHILD_OPTION => {
                return Ok(Command::RawChild(PathBuf::from(value(RAW_CHILD_OPTION)?)))
            }
            other => {
                return Err(Error::Usage(format!(
                    "unknown option {other} (--help lists the options)"
                )))
            }
        }
    }
    if options.quick {
        options.exits = QUICK_EXITS;
        options.runs = QUICK_RUNS;
        options.requests = QUICK_REQUESTS;
    }
    if let Some(requests) = requests {
        options.requests = requests;
    }
    if options.requests == 0 {
        return Err(Error::Usage("--requests must be at least 1".into()));
    }
    if let Some(exits) = exits {
        options.exits = exits;
    }
    if let Some(runs) = runs {
        options.runs = runs;
    }
    if options.exits < 2 {
        return Err(Error::Usage(
            "--exits must be at least 2 (the baseline run has 1)".into(),
        ));
    }
    if options.runs == 0 {
        return Err(Error::Usage("--runs must be at least 1".into()));
    }
    Ok(Command::Run(options))
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T> {
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    cleaned
        .parse()
        .map_err(|_| Error::Usage(format!("{name} {text}: not a valid number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()).unwrap() {
            Command::Run(options) => options,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_options() {
        assert_eq!(run(&[]), Options::default());
        let o = run(&[
            "--exits",
            "1_000",
            "--runs",
            "3",
            "--only",
            "qemu",
            "--no-scaling",
        ]);
        assert_eq!(
            (o.exits, o.runs, o.only, o.scaling),
            (1000, 3, Some(Only::Qemu), false)
        );
        assert!(o.includes(Only::Qemu) && !o.includes(Only::Raw));
        assert!(Options::default().includes(Only::Raw));
        let o = run(&["--vmkit", "/x/vmkit", "--qemu", "/y/qemu"]);
        assert_eq!(o.vmkit.as_deref(), Some(std::path::Path::new("/x/vmkit")));
        assert_eq!(o.qemu, PathBuf::from("/y/qemu"));
    }

    #[test]
    fn quick_sets_small_figures_that_explicit_ones_override() {
        let o = run(&["--quick"]);
        assert_eq!((o.exits, o.runs, o.quick), (QUICK_EXITS, QUICK_RUNS, true));
        let o = run(&["--exits", "500", "--quick"]);
        assert_eq!((o.exits, o.runs), (500, QUICK_RUNS));
        let o = run(&["--virtio-blk", "--quick", "--cache", "none"]);
        assert!(o.virtio_blk);
        assert_eq!((o.requests, o.cache.as_str()), (QUICK_REQUESTS, "none"));
        let o = run(&["--virtio-blk", "--requests", "1_000"]);
        assert_eq!((o.requests, o.runs), (1000, DEFAULT_RUNS));
    }

    #[test]
    fn help_and_the_internal_child_mode() {
        assert_eq!(parse(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(["-h", "--bogus"]).unwrap(), Command::Help);
        assert_eq!(
            parse([RAW_CHILD_OPTION, "/tmp/image.bin"]).unwrap(),
            Command::RawChild(PathBuf::from("/tmp/image.bin"))
        );
    }

    #[test]
    fn mistakes_are_explained() {
        for (args, needle) in [
            (&["--bogus"][..], "unknown option --bogus"),
            (&["--exits"][..], "--exits needs a value"),
            (&["--exits", "lots"][..], "not a valid number"),
            (&["--exits", "1"][..], "at least 2"),
            (&["--runs", "0"][..], "at least 1"),
            (&["--only", "kvmtool"][..], "expected raw, vmkit or qemu"),
            (&["--cache", "unsafe"][..], "expected writeback or none"),
            (&["--requests", "0"][..], "at least 1"),
        ] {
            let e = parse(args.iter().copied()).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
