//! Running a VMM process and measuring it: wall time from spawn to its exit, exit status,
//! and its peak RSS.
//!
//! Peak RSS is read from `/proc/PID/status` (`VmHWM`, the high-water mark of the process's
//! own address space since its `exec`), polled while it runs. `wait4`'s `ru_maxrss` is kept
//! for reference but is not the VMM's own figure: the kernel carries the parent's
//! high-water mark into it when the child is spawned with `vfork`/`posix_spawn` (as Rust's
//! `Command` does) and then `exec`s, so every child looks at least as big as its parent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How one process run went.
#[derive(Debug, Clone)]
pub struct ProcessRun {
    /// From just before `spawn` to the process's exit (start, guest, teardown).
    pub wall: Duration,
    /// From just before `spawn` to the first byte on its stdout.
    pub first_output: Option<Duration>,
    /// The exit status, or minus the signal number that killed it.
    pub status: i32,
    /// CPU time in user mode (`ru_utime`): the VMM's own code.
    pub user_time: Duration,
    /// CPU time in the kernel (`ru_stime`): KVM_RUN and the other system calls.
    pub system_time: Duration,
    /// `ru_maxrss` in KiB (includes the parent's high-water mark; see the module docs).
    pub ru_maxrss_kib: u64,
    /// The largest `VmHWM` seen while polling (KiB), when asked for.
    pub peak_rss_kib: Option<u64>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn scratch_file(tag: &str) -> PathBuf {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vmkit-bench-{}-{n}-{tag}", std::process::id()))
}

/// A file under the temp directory removed on drop.
#[derive(Debug)]
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// Writes `bytes` to a fresh file named after `tag`.
    pub fn with_contents(tag: &str, bytes: &[u8]) -> Result<Self> {
        let path = scratch_file(tag);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        Ok(Self(path))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `VmHWM` of process `pid` in KiB, if it is alive and has an address space.
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` value (KiB) in the text of a `/proc/PID/status` file.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// How often the peak-RSS sampler reads `/proc/PID/status`.
pub const RSS_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Runs `program args` with stdin closed and stdout/stderr captured, killing it after
/// `limit`. With `sample_rss`, a thread polls its `VmHWM` every [`RSS_POLL_INTERVAL`] (this
/// costs CPU: use it for memory runs, not for timing runs).
pub fn run_measured(
    program: &Path,
    args: &[OsString],
    limit: Duration,
    sample_rss: bool,
) -> Result<ProcessRun> {
    let err = ScratchFile::with_contents("stderr", b"")?;
    let open = |f: &ScratchFile| {
        std::fs::File::create(f.path()).map_err(|source| Error::Io {
            what: format!("creating {}", f.path().display()),
            source,
        })
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(open(&err)?);

    let start = Instant::now();
    let mut child = command.spawn().map_err(|source| Error::Io {
        what: format!("starting {}", program.display()),
        source,
    })?;
    let output_rx = child.stdout.take().map(read_stamped);
    let child_id = child.id();
    let pid = i32::try_from(child_id).map_err(|_| Error::Io {
        what: format!("pid of {}", program.display()),
        source: std::io::Error::other("pid out of range"),
    })?;

    let (done, watchdog) = watchdog(pid, limit);
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss.then(|| rss_sampler(pid, std::sync::Arc::clone(&stop_sampling)));

    // Wait for the exit without reaping, so that the pid stays ours while the sampler stops.
    if let Err(e) = wait_exited(child_id) {
        let _ = done.send(());
        stop_sampling.store(true, Ordering::Relaxed);
        return Err(Error::Io {
            what: format!("waiting for {}", program.display()),
            source: e,
        });
    }
    let wall = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let peak_rss_kib = sampler.and_then(|s| s.join().ok()).flatten();

    let reaped = reap(pid);
    let _ = done.send(());
    let (status, usage) = reaped.map_err(|source| Error::Io {
        what: format!("waiting for {}", program.display()),
        source,
    })?;
    let timed_out = watchdog.join().unwrap_or(false);
    // The child is reaped; dropping the handle does not wait again.
    drop(child);

    let status = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        -1
    };
    // A grandchild may still hold the pipe open: do not wait for it long.
    let (stdout, first) = output_rx
        .and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
        .unwrap_or_default();
    let first_output = first.map(|t| t.saturating_duration_since(start));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    if timed_out {
        return Err(Error::Guest(format!(
            "{} did not finish within {limit:?}; stderr: {}",
            program.display(),
            tail(&stderr)
        )));
    }
    Ok(ProcessRun {
        wall,
        first_output,
        status,
        user_time: timeval(usage.ru_utime),
        system_time: timeval(usage.ru_stime),
        ru_maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        peak_rss_kib,
        stdout,
        stderr,
    })
}

/// Reads `pipe` to its end on a thread; sends the bytes and when the first one came (the
/// guest's exit marker reaches the pipe at once).
fn read_stamped(mut pipe: std::process::ChildStdout) -> mpsc::Receiver<(Vec<u8>, Option<Instant>)> {
    let (output_tx, output_rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    first = first.or_else(|| Some(Instant::now()));
                    bytes.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = output_tx.send((bytes, first));
    });
    output_rx
}

/// A thread that kills child `pid` if nothing is sent within `limit`; it returns whether
/// it did. The child is not reaped before the caller sends, so the pid cannot have been
/// reused when the watchdog fires.
fn watchdog(pid: i32, limit: Duration) -> (mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (done, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on our own unreaped child; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    (done, watchdog)
}

/// A thread that polls `pid`'s `VmHWM` every [`RSS_POLL_INTERVAL`] until `stop`, then returns
/// the peak it saw.
fn rss_sampler(
    pid: i32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let mut peak = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = vm_hwm_kib(pid) {
                peak = peak.max(Some(kib));
            }
            std::thread::sleep(RSS_POLL_INTERVAL);
        }
        peak
    })
}

/// Waits until child `id` has exited, without reaping it.
fn wait_exited(id: u32) -> std::io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes for the duration of the call.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reaps child `pid`: its wait status and resource usage.
fn reap(pid: i32) -> std::io::Result<(i32, libc::rusage)> {
    let mut status = 0i32;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for writes for the duration of the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

/// The last few lines of `text`, for error messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(6);
    lines.get(start..).unwrap_or(&[]).join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_a_status_file() {
        let status = "Name:\tvmkit\nVmPeak:\t  100 kB\nVmHWM:\t    3456 kB\nVmRSS:\t 3000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(3456));
        assert_eq!(parse_vm_hwm("Name:\tzombie\n"), None);
        // This process has one.
        assert!(vm_hwm_kib(std::process::id() as i32).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn a_child_is_timed_and_its_status_and_output_kept() {
        let args: Vec<OsString> = ["-c", "echo out; echo err >&2; sleep 0.05; exit 33"]
            .iter()
            .map(OsString::from)
            .collect();
        let run = run_measured(Path::new("/bin/sh"), &args, Duration::from_secs(20), true).unwrap();
        assert_eq!(run.status, 33);
        assert_eq!(run.stdout, "out\n");
        assert_eq!(run.stderr, "err\n");
        assert!(run.wall >= Duration::from_millis(50));
        // "out" came before the sleep.
        assert!(run.first_output.is_some_and(|t| t < run.wall));
        assert!(run.peak_rss_kib.is_some_and(|kib| kib > 0));
    }

    #[test]
    fn a_hung_child_is_killed() {
        let args: Vec<OsString> = ["-c", "exec sleep 30"].iter().map(OsString::from).collect();
        let e = run_measured(
            Path::new("/bin/sh"),
            &args,
            Duration::from_millis(200),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb"), "a / b");
        let many: String = (0..10).map(|i| format!("{i}\n")).collect();
        assert_eq!(tail(&many), "4 / 5 / 6 / 7 / 8 / 9");
    }
}
