//! The seccomp sandbox (on by default): every thread of a running machine with two vCPUs,
//! QMP, the gdb stub, virtio-rng, virtio-console, virtio-blk and (in a network namespace
//! the test makes, when it can) virtio-net is under a filter (`Seccomp: 2` in
//! /proc/PID/task/TID/status), each thread but the two that hold only the process-wide one
//! under its own kind's filter too; and a forbidden syscall on each kind of thread is
//! reported by name in trap mode.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The devices the guest drives: (slot, PCI device id, legacy I/O BAR, queues).
const DEVICES: &[(u32, u32, u32, &[u32])] = &[
    (2, 0x1005, 0xc000, &[0]),    // virtio-rng
    (3, 0x1003, 0xc100, &[0, 1]), // virtio-serial (virtconsole on port 0)
    (4, 0x1001, 0xc200, &[0]),    // virtio-blk
    (5, 0x1000, 0xc300, &[0, 1]), // virtio-net
];

/// A real-mode guest that starts every device of [`DEVICES`] present (each probe prints
/// 'V' when the function is there; its rings are empty, DRIVER_OK starts its threads),
/// prints 'R', and idles in `cli; hlt`.
fn driver(with_net: bool) -> Vec<u8> {
    real_mode_guest(|a| {
        a.cli()?;
        let mut ring = 0x1_0000u32;
        for &(slot, device, io_base, queues) in DEVICES {
            if device == 0x1000 && !with_net {
                continue;
            }
            emit_legacy_virtio_probe(a, slot, device, io_base)?;
            a.mov(dx, io_base + 0x04)?; // no features
            a.xor(eax, eax)?;
            a.out(dx, eax)?;
            for &queue in queues {
                a.mov(dx, io_base + 0x0e)?;
                a.mov(ax, queue)?;
                a.out(dx, ax)?;
                a.mov(dx, io_base + 0x08)?;
                a.mov(eax, ring >> 12)?;
                a.out(dx, eax)?;
                ring += 0x4000;
            }
            a.mov(dx, io_base + 0x12)?;
            a.mov(al, 7u32)?; // ACKNOWLEDGE | DRIVER | DRIVER_OK
            a.out(dx, al)?;
        }
        a.mov(al, b'R' as u32)?;
        emit_putc(a)?;
        let mut idle = a.create_label();
        a.set_label(&mut idle)?;
        a.hlt()?;
        a.jmp(idle)
    })
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sandbox-{name}-{}", std::process::id()))
}

/// The machine: `-smp 2`, QMP and gdb sockets, the four devices, COM1 into `serial`.
fn machine(name: &str, with_net: bool) -> (Command, PathBuf, PathBuf) {
    let serial = tmp(&format!("{name}-serial"));
    let qmp = tmp(&format!("{name}-qmp"));
    let disk = tmp(&format!("{name}-disk"));
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("write the disk image");
    let _ = std::fs::remove_file(&serial);
    let _ = std::fs::remove_file(&qmp);
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file(&format!("sandbox-{name}"), &driver(with_net)))
        .args(["-smp", "2", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-gdb")
        .arg(format!(
            "unix:{},server",
            tmp(&format!("{name}-gdb")).display()
        ))
        .args(["-device", "virtio-rng-pci,addr=02.0"])
        .args(["-chardev", "null,id=con0"])
        .args(["-device", "virtio-serial-pci,id=vser0,addr=03.0"])
        .args(["-device", "virtconsole,chardev=con0,bus=vser0.0"])
        .arg("-drive")
        .arg(format!("file={},if=none,id=d0,format=raw", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=d0,addr=04.0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if with_net {
        command
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,netdev=n0,addr=05.0"]);
    }
    (command, serial, qmp)
}

/// Removes what [`machine`] made for `name`.
fn cleanup(name: &str) {
    for part in ["serial", "qmp", "disk", "gdb"] {
        let _ = std::fs::remove_file(tmp(&format!("{name}-{part}")));
    }
}

/// Waits until `file` holds `count` bytes ending in 'R'; fails (with vmkit's stderr if it
/// ended) after 30 s.
fn wait_ready(child: &mut Child, file: &Path, count: usize) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let bytes = std::fs::read(file).unwrap_or_default();
        if bytes.len() >= count && bytes.last() == Some(&b'R') {
            return bytes;
        }
        if let Some(status) = child.try_wait().expect("wait for vmkit") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("vmkit ended ({status}) before the guest was ready: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the guest printed only {bytes:?} in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One thread of a process: (tid, comm, Seccomp, Seccomp_filters).
#[derive(Debug)]
struct Task {
    tid: u32,
    comm: String,
    seccomp: String,
    filters: u32,
}

fn tasks(pid: u32) -> Vec<Task> {
    let mut tasks = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task") {
        let entry = entry.expect("a task entry");
        let tid: u32 = entry.file_name().to_string_lossy().parse().expect("a tid");
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        tasks.push(Task {
            tid,
            comm: field("Name:"),
            seccomp: field("Seccomp:"),
            filters: field("Seccomp_filters:").parse().unwrap_or(0),
        });
    }
    tasks.sort_by_key(|t| t.tid);
    tasks
}

fn listing(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "  {:>7} {:<16} Seccomp: {} Seccomp_filters: {}",
                t.tid, t.comm, t.seccomp, t.filters
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A QMP client: greeting, capabilities, then one command; returns its reply line.
fn qmp_command(path: &Path, command: &str) -> String {
    let stream = UnixStream::connect(path).expect("connect to QMP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("QMP read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the QMP stream"));
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).expect("QMP greeting");
    assert!(line.contains("QMP"), "greeting: {line}");
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .expect("send qmp_capabilities");
    line.clear();
    reader.read_line(&mut line).expect("qmp_capabilities reply");
    writer
        .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
        .expect("send the command");
    // Skip events until the reply.
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || !line.contains("\"event\"") {
            return line;
        }
    }
}

/// Runs `body` on a thread in a fresh network namespace holding `tap0` (up); `Err` says
/// why the namespace could not be made.
fn in_netns<T: Send>(body: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes a flag word; CLONE_NEWNET moves only this thread (and
                // the processes it spawns) into a new network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "unshare(CLONE_NEWNET) failed: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let setup = "ip tuntap add dev tap0 mode tap && ip link set tap0 up";
                let out = Command::new("sh")
                    .args(["-c", setup])
                    .output()
                    .map_err(|e| format!("running sh for `ip tuntap add`: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "`{setup}` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(body())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Starts the machine, lists its threads once the guest is ready, and ends it with QMP
/// `quit`. Returns the threads and vmkit's exit code and stderr.
fn run_and_list(name: &str, with_net: bool, extra: &[&str]) -> (Vec<Task>, Option<i32>, String) {
    let (mut command, serial, qmp) = machine(name, with_net);
    command.args(extra);
    let mut child = command.spawn().expect("start vmkit");
    let expected = DEVICES.len() - usize::from(!with_net) + 1;
    let out = wait_ready(&mut child, &serial, expected);
    assert_eq!(
        out.iter().filter(|&&b| b == b'V').count(),
        expected - 1,
        "a device is missing: {out:?}"
    );
    // A QMP session first, so that the listing is taken after the main loop served one.
    let reply = qmp_command(&qmp, "query-status");
    assert!(reply.contains("running"), "query-status: {reply}");
    let tasks = tasks(child.id());
    let reply = qmp_command(&qmp, "quit");
    assert!(reply.contains("return"), "quit: {reply}");
    let output = wait_child(child, Duration::from_secs(20));
    cleanup(name);
    (tasks, output.status.code(), stderr(&output))
}

fn check_all_filtered(name: &str, with_net: bool) {
    let (tasks, code, err) = run_and_list(name, with_net, &[]);
    let list = listing(&tasks);
    eprintln!("threads of the running machine:\n{list}");
    assert_eq!(code, Some(0), "vmkit's exit after quit: {err}\n{list}");
    assert!(!err.contains("seccomp"), "{err}\n{list}");
    // comm holds at most 15 bytes of a thread's name.
    let mut wanted = vec![
        "vmkit",
        "vmkit-spawner",
        "vmkit-vcpu0",
        "vmkit-vcpu1",
        "vmkit-main",
        "vmkit-gdb",
        "vmkit-gdb-accep",
        "virtio-rng",
        "virtio-console",
        "virtio-blk",
        "virtio-blk-work",
    ];
    if with_net {
        wanted.push("virtio-net");
    }
    for comm in wanted {
        assert!(
            tasks.iter().any(|t| t.comm == comm),
            "no thread named {comm}:\n{list}"
        );
    }
    for task in &tasks {
        assert_eq!(
            task.seccomp, "2",
            "thread {} is not filtered:\n{list}",
            task.comm
        );
        // KVM's own worker (kvm-nx-lpage-recovery) inherits its creator's filters.
        if task.comm.starts_with("kvm-") {
            continue;
        }
        // Every thread but the first and the spawner stacks its own kind's filter.
        let own = !matches!(task.comm.as_str(), "vmkit" | "vmkit-spawner");
        assert_eq!(
            task.filters,
            if own { 2 } else { 1 },
            "thread {}'s filters:\n{list}",
            task.comm
        );
    }
}

#[test]
fn every_thread_of_a_running_machine_is_under_its_seccomp_filter() {
    require_kvm!();
    match in_netns(|| check_all_filtered("all", true)) {
        Ok(()) => {}
        Err(why) => {
            eprintln!("sandbox: no network namespace with a tap here ({why}): without virtio-net");
            check_all_filtered("all-no-net", false);
        }
    }
}

#[test]
fn sandbox_off_leaves_every_thread_unfiltered() {
    require_kvm!();
    let (tasks, code, err) = run_and_list("off", false, &["-sandbox", "off"]);
    let list = listing(&tasks);
    assert_eq!(code, Some(0), "{err}");
    assert!(tasks.len() >= 8, "{list}");
    assert!(tasks.iter().all(|t| t.seccomp == "0"), "{list}");
}

#[test]
fn a_forbidden_syscall_is_reported_by_name_on_each_kind_of_thread() {
    require_kvm!();
    // VMKIT_SECCOMP_SELFTEST=KIND: the first thread of that kind calls personality(2).
    for (kind, thread) in [
        ("process", "vmkit-spawner"),
        ("vcpu", "vmkit-vcpu0"),
        ("main-loop", "vmkit-main"),
        ("worker", "virtio-rng"),
        ("block", "virtio-blk"), // the pool's or the queue thread, whichever starts first
        ("gdb", "vmkit-gdb"),
        ("migration", "vmkit-incoming"),
    ] {
        let (mut command, _, _) = machine(&format!("selftest-{kind}"), false);
        if kind == "migration" {
            // Starts the incoming thread before the guest runs.
            command
                .arg("-incoming")
                .arg(format!("file:{}", tmp("no-stream").display()));
        }
        command
            .args(["-sandbox", "on,action=trap"])
            .env("VMKIT_SECCOMP_SELFTEST", kind);
        let (output, _) = run(command, Duration::from_secs(30));
        cleanup(&format!("selftest-{kind}"));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(159), "{kind}: {err}");
        let expected = format!("vmkit: seccomp: thread {thread}");
        let line = err
            .lines()
            .find(|l| l.starts_with("vmkit: seccomp:"))
            .unwrap_or_default();
        assert!(
            line.starts_with(&expected)
                && line.ends_with("made forbidden syscall 135 (personality)"),
            "{kind}: {err}"
        );
    }
}
