//! Live migration, vmkit vs QEMU on the same guest: total time and downtime as each VMM's
//! own `query-migrate` reports them, for a 256 MiB and a 2 GiB guest, idle and dirtying
//! memory.
//!
//! Both VMMs run the same 64 KiB firmware image (`-bios`): `idle` halts with interrupts
//! off; `dirtying` enters 32-bit protected mode and writes one dword per page over a 32 MiB
//! window above 1 MiB, with a delay loop between pages (its rate, which depends on this
//! host's speed at running guest kernel code, is what each VMM's `dirty-pages-rate`
//! reports). The destination is started with `-incoming unix:SOCKET`, the source gets
//! QMP `migrate {"uri": "unix:SOCKET"}` with both VMMs' default parameters
//! (downtime-limit 300 ms, max-bandwidth 128 MiB/s), and `query-migrate` is polled every
//! 5 ms until `completed`; the destination must then answer `query-status` with running.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use crate::guest::{
    firmware_image, gdt_bytes, gdtr_bytes, protected_mode_entry_code, Piece, BSP_ENTRY_OFFSET,
    DATA32_SELECTOR, FIRMWARE_LOW_BASE, GDTR_OFFSET, GDT_OFFSET, PM_ENTRY_OFFSET,
};
use crate::process::ScratchFile;
use crate::stats::Summary;
use crate::{Error, Result};

/// Guest sizes measured, in MiB.
pub const SIZES_MIB: [u64; 2] = [256, 2048];
/// The window the dirtying guest writes, from 1 MiB.
pub const DIRTY_WINDOW: u32 = 32 << 20;
/// Delay-loop turns between two page writes of the dirtying guest.
pub const DIRTY_DELAY: u32 = 500;
/// Longest one migration may take.
const MIGRATION_LIMIT: Duration = Duration::from_secs(120);

/// What the guest does while it is migrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// `cli; hlt`.
    Idle,
    /// Writes a page every [`DIRTY_DELAY`] loop turns over [`DIRTY_WINDOW`].
    Dirtying,
}

impl Activity {
    fn name(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Dirtying => "dirtying",
        }
    }
}

fn asm_error(e: IcedError) -> Error {
    Error::Assemble(e.to_string())
}

/// The firmware image of `activity`.
pub fn guest_image(activity: Activity) -> Result<Vec<u8>> {
    match activity {
        Activity::Idle => {
            let mut a = CodeAssembler::new(16).map_err(asm_error)?;
            let mut halt = a.create_label();
            a.cli().map_err(asm_error)?;
            a.set_label(&mut halt).map_err(asm_error)?;
            a.hlt().map_err(asm_error)?;
            a.jmp(halt).map_err(asm_error)?;
            let code = a.assemble(u64::from(BSP_ENTRY_OFFSET)).map_err(asm_error)?;
            firmware_image(&[Piece {
                what: "idle loop",
                offset: usize::from(BSP_ENTRY_OFFSET),
                bytes: code,
            }])
        }
        Activity::Dirtying => firmware_image(&[
            Piece {
                what: "real-mode entry",
                offset: usize::from(BSP_ENTRY_OFFSET),
                bytes: protected_mode_entry_code()?,
            },
            Piece {
                what: "dirtying loop",
                offset: usize::from(PM_ENTRY_OFFSET),
                bytes: dirtying_code()?,
            },
            Piece {
                what: "GDT",
                offset: usize::from(GDT_OFFSET),
                bytes: gdt_bytes(),
            },
            Piece {
                what: "GDT pseudo-descriptor",
                offset: usize::from(GDTR_OFFSET),
                bytes: gdtr_bytes(),
            },
        ]),
    }
}

fn dirtying_code() -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32).map_err(asm_error)?;
    let build = |a: &mut CodeAssembler| -> std::result::Result<(), IcedError> {
        let (mut outer, mut page, mut delay) =
            (a.create_label(), a.create_label(), a.create_label());
        a.mov(ax, u32::from(DATA32_SELECTOR))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.xor(eax, eax)?;
        a.set_label(&mut outer)?;
        a.mov(ebx, 0x10_0000u32)?;
        a.set_label(&mut page)?;
        a.mov(dword_ptr(ebx), eax)?;
        a.inc(eax)?;
        a.mov(ecx, DIRTY_DELAY)?;
        a.set_label(&mut delay)?;
        a.dec(ecx)?;
        a.jnz(delay)?;
        a.add(ebx, 4096)?;
        a.cmp(ebx, 0x10_0000 + DIRTY_WINDOW)?;
        a.jb(page)?;
        a.jmp(outer)
    };
    build(&mut a).map_err(asm_error)?;
    a.assemble(FIRMWARE_LOW_BASE + u64::from(PM_ENTRY_OFFSET))
        .map_err(asm_error)
}

/// A minimal QMP client: one command at a time, events skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `path` (retrying until the VMM has bound it) and leaves capabilities
    /// negotiation.
    fn connect(path: &Path, vmm: &mut Child) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) => {
                    let exited = vmm.try_wait().ok().flatten();
                    if exited.is_some() || start.elapsed() > Duration::from_secs(20) {
                        return Err(Error::Guest(format!(
                            "QMP socket {}: {e} (VMM status {exited:?})",
                            path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|source| io("QMP socket timeout", source))?;
        let writer = stream
            .try_clone()
            .map_err(|source| io("QMP socket", source))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.line()?;
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(Error::Guest("QMP connection closed".into())),
            Ok(_) => Ok(line),
            Err(source) => Err(io("reading QMP", source)),
        }
    }

    /// Sends `command` and returns its reply (spaces removed, for matching).
    fn execute(&mut self, command: &str) -> Result<String> {
        writeln!(self.writer, "{command}").map_err(|source| io("writing QMP", source))?;
        loop {
            let line = self.line()?;
            if line.contains("\"event\"") {
                continue;
            }
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.contains("\"error\"") {
                return Err(Error::Guest(format!("QMP {command}: {}", line.trim())));
            }
            return Ok(compact);
        }
    }
}

fn io(what: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: what.to_string(),
        source,
    }
}

/// The number after `"key":` in compact JSON text.
fn number(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One VMM's command line for the guest in `image` with `mib` of RAM.
fn vmm_args(
    qemu: bool,
    image: &Path,
    mib: u64,
    qmp: &Path,
    incoming: Option<&Path>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if qemu {
        for arg in [
            "-accel", "kvm", "-display", "none", "-vga", "none", "-nic", "none",
        ] {
            args.push(arg.into());
        }
    }
    args.extend([
        "-bios".into(),
        image.into(),
        "-m".into(),
        format!("{mib}M").into(),
        "-serial".into(),
        "none".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()).into(),
    ]);
    if let Some(socket) = incoming {
        args.push("-incoming".into());
        args.push(format!("unix:{}", socket.display()).into());
    }
    args
}

/// What one migration reported.
#[derive(Debug, Clone, Copy)]
struct Migration {
    total_ms: u64,
    downtime_ms: u64,
    dirty_pages_rate: Option<u64>,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[OsString]) -> Result<Killed> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .map_err(|source| io(&format!("starting {}", program.display()), source))
}

/// Migrates a running `image` guest of `mib` MiB from one `program` process to another.
fn migrate_once(
    program: &Path,
    qemu: bool,
    image: &Path,
    mib: u64,
    tag: &str,
) -> Result<Migration> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let socket = dir.join(format!("vmkit-bench-{pid}-{tag}.mig"));
    let (source_qmp, dest_qmp) = (
        dir.join(format!("vmkit-bench-{pid}-{tag}-src.qmp")),
        dir.join(format!("vmkit-bench-{pid}-{tag}-dst.qmp")),
    );
    for path in [&socket, &source_qmp, &dest_qmp] {
        let _ = std::fs::remove_file(path);
    }
    let mut dest = spawn(
        program,
        &vmm_args(qemu, image, mib, &dest_qmp, Some(&socket)),
    )?;
    let mut dest_qmp_client = Qmp::connect(&dest_qmp, &mut dest.0)?;
    let mut source = spawn(program, &vmm_args(qemu, image, mib, &source_qmp, None))?;
    let mut source_qmp_client = Qmp::connect(&source_qmp, &mut source.0)?;
    // Let the guest run (and dirty its window) before the migration starts.
    std::thread::sleep(Duration::from_millis(500));
    source_qmp_client.execute(&format!(
        r#"{{"execute":"migrate","arguments":{{"uri":"unix:{}"}}}}"#,
        socket.display()
    ))?;
    let start = Instant::now();
    let mut dirty_pages_rate = None;
    let reply = loop {
        let reply = source_qmp_client.execute(r#"{"execute":"query-migrate"}"#)?;
        if let Some(rate) = number(&reply, "dirty-pages-rate").filter(|&r| r > 0) {
            dirty_pages_rate = Some(rate);
        }
        if reply.contains("\"status\":\"completed\"") {
            break reply;
        }
        if reply.contains("\"status\":\"failed\"") || start.elapsed() > MIGRATION_LIMIT {
            return Err(Error::Guest(format!(
                "{}: migration did not complete: {reply}",
                program.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The destination runs the guest once it has it.
    let running = Instant::now();
    loop {
        let status = dest_qmp_client.execute(r#"{"execute":"query-status"}"#)?;
        if status.contains("\"running\":true") {
            break;
        }
        if running.elapsed() > Duration::from_secs(10) {
            return Err(Error::Guest(format!(
                "{}: destination not running: {status}",
                program.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for path in [&socket, &source_qmp, &dest_qmp] {
        let _ = std::fs::remove_file(path);
    }
    let missing = |key: &str| Error::Guest(format!("query-migrate has no {key}: {reply}"));
    Ok(Migration {
        total_ms: number(&reply, "total-time").ok_or_else(|| missing("total-time"))?,
        downtime_ms: number(&reply, "downtime").ok_or_else(|| missing("downtime"))?,
        dirty_pages_rate,
    })
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct MigrationBench {
    /// The vmkit binary, if measured.
    pub vmkit: Option<PathBuf>,
    /// QEMU, if measured.
    pub qemu: Option<PathBuf>,
    /// Migrations per figure.
    pub runs: usize,
    /// Guest sizes in MiB.
    pub sizes_mib: Vec<u64>,
}

/// Runs every VMM, size and activity `runs` times and returns the report.
pub fn run(bench: &MigrationBench) -> Result<String> {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Live migration over a unix socket, source and destination processes on this host, \
         default parameters; {} runs per row, median (min..max) of each VMM's own query-migrate \
         figures. dirtying = one page written every {DIRTY_DELAY} delay-loop turns over {} MiB \
         (guest code at CPL 0, interpreted here), rate as the VMM measured it.\n",
        bench.runs,
        DIRTY_WINDOW >> 20
    );
    let _ = writeln!(
        report,
        "| VMM | guest | activity | total time ms | downtime ms | dirty pages/s |"
    );
    let _ = writeln!(report, "| --- | ---: | --- | ---: | ---: | ---: |");
    let mut vmms: Vec<(&str, &Path, bool)> = Vec::new();
    if let Some(vmkit) = &bench.vmkit {
        vmms.push(("vmkit", vmkit, false));
    }
    if let Some(qemu) = &bench.qemu {
        vmms.push(("QEMU", qemu, true));
    }
    for activity in [Activity::Idle, Activity::Dirtying] {
        let image = ScratchFile::with_contents("migration-guest.bin", &guest_image(activity)?)?;
        for &mib in &bench.sizes_mib {
            for (name, program, qemu) in &vmms {
                let mut totals = Vec::new();
                let mut downtimes = Vec::new();
                let mut rates = Vec::new();
                for run in 0..bench.runs {
                    let tag = format!("{name}-{mib}-{}-{run}", activity.name());
                    let m = migrate_once(program, *qemu, image.path(), mib, &tag)?;
                    totals.push(m.total_ms as f64);
                    downtimes.push(m.downtime_ms as f64);
                    rates.extend(m.dirty_pages_rate.map(|r| r as f64));
                }
                let rate =
                    Summary::of(&rates).map_or("-".to_string(), |s| format!("{:.0}", s.median));
                let _ = writeln!(
                    report,
                    "| {name} | {mib} MiB | {} | {} | {} | {rate} |",
                    activity.name(),
                    summary_cell(&totals),
                    summary_cell(&downtimes)
                );
            }
        }
    }
    Ok(report)
}

fn summary_cell(samples: &[f64]) -> String {
    Summary::of(samples).map_or("-".to_string(), |s| {
        format!("{:.0} ({:.0}..{:.0})", s.median, s.min, s.max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_compact_json() {
        let reply = r#"{"return":{"status":"completed","total-time":12,"downtime":3,"ram":{"dirty-pages-rate":1600}}}"#;
        assert_eq!(number(reply, "total-time"), Some(12));
        assert_eq!(number(reply, "downtime"), Some(3));
        assert_eq!(number(reply, "dirty-pages-rate"), Some(1600));
        assert_eq!(number(reply, "setup-time"), None);
    }

    #[test]
    fn both_guests_assemble_into_firmware_images() {
        for activity in [Activity::Idle, Activity::Dirtying] {
            let image = guest_image(activity).unwrap();
            assert_eq!(image.len(), crate::guest::FIRMWARE_SIZE);
        }
    }
}
