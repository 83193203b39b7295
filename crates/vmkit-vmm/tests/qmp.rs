//! The QMP control socket of the `vmkit` binary, driven as a QMP client would on real KVM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Prints '.' on COM1 forever.
fn chatty_guest() -> PathBuf {
    let guest = real_mode_guest(|a| {
        let mut again = a.create_label();
        a.set_label(&mut again)?;
        a.mov(al, b'.' as u32)?;
        emit_putc(a)?;
        a.jmp(again)
    });
    guest_file("qmp-chatty", &guest)
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Client {
    fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot connect to {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            events: Vec::new(),
        }
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line from the server");
        assert!(!line.is_empty(), "the server closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends a command and returns its reply, keeping events that arrive meanwhile.
    fn execute(&mut self, command: Value) -> Value {
        self.send_raw(format!("{command}\n").as_bytes());
        self.reply()
    }

    fn reply(&mut self) -> Value {
        loop {
            let message = self.read();
            if message.get("event").is_some() {
                self.events.push(message);
            } else {
                return message;
            }
        }
    }

    /// Sends `bytes`, then a marker command, and returns the error classes the server sent
    /// before the marker's reply (a bad input may produce several errors, or none if it is
    /// dropped with the connection kept).
    fn errors_for(&mut self, bytes: &[u8]) -> Vec<String> {
        self.send_raw(bytes);
        self.send_raw(b"\n{\"execute\": \"query-status\", \"id\": \"sync\"}\n");
        let mut classes = Vec::new();
        loop {
            let reply = self.reply();
            if reply["id"] == "sync" {
                assert_eq!(reply["return"]["status"], "running", "{reply}");
                return classes;
            }
            classes.push(reply["error"]["class"].as_str().unwrap_or("?").to_string());
        }
    }

    /// Waits for the event `name` (already received or yet to come).
    fn event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let message = self.read();
            if message["event"] == name {
                return message;
            }
            self.events.push(message);
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The vmkit child, killed if the test fails before it ends (no orphan keeps a core busy).
struct VmkitProcess(Child);

impl Drop for VmkitProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_vmkit(socket: &Path, out: &Path, wait: &str) -> VmkitProcess {
    start_guest(&chatty_guest(), socket, out, wait)
}

fn start_guest(guest: &Path, socket: &Path, out: &Path, wait: &str) -> VmkitProcess {
    let child = vmkit()
        .arg("-flat")
        .arg(guest)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait={wait}", socket.display()))
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    VmkitProcess(child)
}

#[test]
fn a_qmp_session_controls_the_vm() {
    require_kvm!();
    let socket = scratch("qmp.sock");
    let out = scratch("qmp.out");
    let mut child = start_vmkit(&socket, &out, "off");
    let mut client = Client::connect(&socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only socket");

    let greeting = client.read();
    assert!(greeting["QMP"]["version"]["qemu"].is_object(), "{greeting}");
    let early = client.execute(json!({"execute": "query-status"}));
    assert_eq!(early["error"]["class"], "CommandNotFound", "{early}");
    assert_eq!(
        client.execute(json!({"execute": "qmp_capabilities"})),
        json!({"return": {}})
    );

    let status = client.execute(json!({"execute": "query-status", "id": 7}));
    assert_eq!(status["id"], 7);
    assert_eq!(status["return"]["status"], "running", "{status}");

    // stop: STOP event, output pauses.
    let reply = client.execute(json!({"execute": "stop"}));
    assert_eq!(reply, json!({"return": {}}));
    client.event("STOP");
    let paused_at = file_len(&out);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        file_len(&out),
        paused_at,
        "serial output pauses while stopped"
    );
    let status = client.execute(json!({"execute": "query-status"}));
    assert_eq!(status["return"]["status"], "paused");

    // cont: RESUME event, output continues.
    assert_eq!(
        client.execute(json!({"execute": "cont"})),
        json!({"return": {}})
    );
    client.event("RESUME");
    std::thread::sleep(Duration::from_millis(300));
    assert!(file_len(&out) > paused_at, "serial output resumes");

    // system_reset: RESET event; the guest keeps running.
    assert_eq!(
        client.execute(json!({"execute": "system_reset"})),
        json!({"return": {}})
    );
    let reset = client.event("RESET");
    assert_eq!(reset["data"]["guest"], false, "{reset}");

    // QOM: COM1's iobase, then a type listing.
    let iobase = client.execute(json!({"execute": "qom-get",
        "arguments": {"path": "/machine/peripheral/com1", "property": "iobase"}}));
    assert_eq!(iobase["return"], 0x3f8, "{iobase}");
    let types = client.execute(json!({"execute": "qom-list-types",
        "arguments": {"implements": "isa-device"}}));
    let names: Vec<&str> = types["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"isa-serial") && names.contains(&"i8042"),
        "{types}"
    );

    // query-cpus-fast and query-exits.
    let cpus = client.execute(json!({"execute": "query-cpus-fast"}));
    assert_eq!(cpus["return"][0]["cpu-index"], 0, "{cpus}");
    assert!(
        cpus["return"][0]["thread-id"].as_i64().unwrap() > 0,
        "{cpus}"
    );
    let exits = client.execute(json!({"execute": "query-exits"}));
    assert!(
        exits["return"]["vcpus"][0]["exits"]["io-out"]
            .as_u64()
            .unwrap()
            > 0,
        "{exits}"
    );
    let com1 = exits["return"]["pio"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["base"] == 0x3f8)
        .cloned()
        .expect("COM1 in query-exits");
    assert!(com1["writes"].as_u64().unwrap() > 0);

    // Bad input never kills the VMM or the connection: each gets QEMU's error class.
    assert_eq!(client.errors_for(b"{\"execute\": }"), ["GenericError"]);
    assert_eq!(client.errors_for(b"[1, 2]"), ["GenericError"]);
    assert_eq!(client.errors_for(b"{\"arguments\": {}}"), ["GenericError"]);
    assert_eq!(
        client.errors_for(b"{\"execute\": \"frobnicate\"}"),
        ["CommandNotFound"]
    );
    assert_eq!(
        client.errors_for(b"{\"execute\": \"qom-get\", \"arguments\": {\"path\": \"/machine\"}}"),
        ["GenericError"]
    );
    assert_eq!(
        client.errors_for(b"{\"execute\": \"stop\", \"arguments\": {\"now\": true}}"),
        ["GenericError"]
    );
    let mut big = vec![b' '; 10 << 20];
    big[0] = b'"';
    big.push(b'"');
    let errors = client.errors_for(&big);
    assert!(
        !errors.is_empty() && errors.iter().all(|c| c == "GenericError"),
        "{errors:?}"
    );
    // A second client that disconnects mid-command does not disturb anything.
    {
        let mut other = Client::connect(&socket);
        other.read();
        other.send_raw(b"{\"execute\": \"qmp_capab");
    }
    let before = file_len(&out);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        file_len(&out) > before,
        "the guest kept running through the bad input"
    );
    let status = client.execute(json!({"execute": "query-status"}));
    assert_eq!(status["return"]["status"], "running");

    // quit: reply, SHUTDOWN, exit 0, socket removed.
    assert_eq!(
        client.execute(json!({"execute": "quit"})),
        json!({"return": {}})
    );
    let shutdown = client.event("SHUTDOWN");
    assert_eq!(shutdown["data"]["reason"], "host-qmp-quit", "{shutdown}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "vmkit did not quit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_file(out);
}

#[test]
fn wait_on_holds_the_guest_until_a_client_connects() {
    require_kvm!();
    let socket = scratch("qmp-wait.sock");
    let out = scratch("qmp-wait.out");
    let mut child = start_vmkit(&socket, &out, "on");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        file_len(&out),
        0,
        "no guest output before a client connects"
    );
    let mut client = Client::connect(&socket);
    client.read();
    client.execute(json!({"execute": "qmp_capabilities"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while file_len(&out) == 0 {
        assert!(Instant::now() < deadline, "the guest never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.execute(json!({"execute": "quit"}));
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(out);
}

/// A guest that enables the ACPI power button, waits for it, and powers off through S5.
fn power_button_guest() -> PathBuf {
    let guest = real_mode_guest(|a| {
        let mut wait = a.create_label();
        let mut halt = a.create_label();
        // vmkit programmed the PIIX4 PM block at 0x600, as firmware would.
        a.mov(dx, 0x602u32)?; // PM1a_EN
        a.mov(ax, 0x0100u32)?; // PWRBTN_EN
        a.out(dx, ax)?;
        a.mov(al, b'R' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut wait)?;
        a.mov(dx, 0x600u32)?; // PM1a_STS
        a.in_(ax, dx)?;
        a.test(ax, 0x0100)?;
        a.jz(wait)?;
        a.out(dx, ax)?; // write 1 to clear PWRBTN_STS
        a.mov(al, b'P' as u32)?;
        emit_putc(a)?;
        a.mov(dx, 0x604u32)?; // PM1a_CNT: SLP_TYP 0 (S5) | SLP_EN
        a.mov(ax, 0x2000u32)?;
        a.out(dx, ax)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    });
    guest_file("qmp-power-button", &guest)
}

#[test]
fn system_powerdown_presses_the_acpi_button_and_s5_ends_vmkit() {
    require_kvm!();
    let socket = scratch("qmp-power.sock");
    let out = scratch("qmp-power.out");
    let mut child = start_guest(&power_button_guest(), &socket, &out, "off");
    let mut client = Client::connect(&socket);
    client.read();
    client.execute(json!({"execute": "qmp_capabilities"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while file_len(&out) < 1 {
        assert!(
            Instant::now() < deadline,
            "the guest never armed the power button"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The chipset's objects, where QEMU's pc has them.
    let iobase = client.execute(json!({"execute": "qom-get",
        "arguments": {"path": "/machine/fw_cfg", "property": "iobase"}}));
    assert_eq!(iobase, json!({"return": 0x510}));
    let dma = client.execute(json!({"execute": "qom-get",
        "arguments": {"path": "/machine/fw_cfg", "property": "dma_enabled"}}));
    assert_eq!(dma, json!({"return": true}));
    let functions = client.execute(json!({"execute": "qom-list",
        "arguments": {"path": "/machine/i440fx/pci.0"}}));
    for name in ["i440fx", "piix3", "piix3-ide", "piix4-pm"] {
        assert!(
            functions.to_string().contains(&format!("\"{name}\"")),
            "{functions}"
        );
    }
    let reply = client.execute(json!({"execute": "system_powerdown"}));
    assert_eq!(reply, json!({"return": {}}));
    client.event("POWERDOWN");
    let shutdown = client.event("SHUTDOWN");
    assert_eq!(
        shutdown["data"],
        json!({"guest": true, "reason": "guest-shutdown"})
    );
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a guest power-off ends vmkit with 0"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "RP");
}

fn send_signal(child: &Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the child to end (at most 5 s) and returns its exit code and stderr.
fn end_of(mut child: VmkitProcess) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vmkit did not end within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn termination_signals_send_shutdown_and_remove_the_socket() {
    require_kvm!();
    for signal in ["TERM", "INT", "HUP"] {
        let socket = scratch(&format!("qmp-sig-{signal}.sock"));
        let out = scratch(&format!("qmp-sig-{signal}.out"));
        let child = start_vmkit(&socket, &out, "off");
        let mut client = Client::connect(&socket);
        client.read();
        client.execute(json!({"execute": "qmp_capabilities"}));
        send_signal(&child.0, signal);
        // QEMU's event for a host signal.
        let event = client.event("SHUTDOWN");
        assert_eq!(
            event["data"],
            json!({"guest": false, "reason": "host-signal"}),
            "{signal}: {event}"
        );
        let (code, err) = end_of(child);
        assert_eq!(code, Some(0), "{signal}: {err}");
        assert!(err.contains("terminated by signal"), "{signal}: {err}");
        assert!(!socket.exists(), "{signal}: the socket was left behind");
        let _ = std::fs::remove_file(out);
    }
}

#[test]
fn termination_signals_while_waiting_for_a_client_end_cleanly() {
    require_kvm!();
    for signal in ["TERM", "INT", "HUP"] {
        let socket = scratch(&format!("qmp-sigwait-{signal}.sock"));
        let out = scratch(&format!("qmp-sigwait-{signal}.out"));
        let child = start_vmkit(&socket, &out, "on");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        send_signal(&child.0, signal);
        let (code, err) = end_of(child);
        assert_eq!(code, Some(0), "{signal}: {err}");
        assert!(err.contains("terminated by signal"), "{signal}: {err}");
        assert!(!socket.exists(), "{signal}: the socket was left behind");
        assert_eq!(file_len(&out), 0, "{signal}: the guest ran");
        let _ = std::fs::remove_file(out);
    }
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends at the last ')'): utime is the 12th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_pauses_accepting_instead_of_spinning() {
    require_kvm!();
    // Halts with interrupts off: the guest itself uses no CPU.
    let guest = guest_file(
        "qmp-idle",
        &real_mode_guest(|a| {
            a.cli()?;
            a.hlt()
        }),
    );
    let socket = scratch("qmp-nofile.sock");
    let child = std::process::Command::new("prlimit")
        .arg("--nofile=40")
        .arg(env!("CARGO_BIN_EXE_vmkit"))
        .arg("-flat")
        .arg(&guest)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .arg("-serial")
        .arg("none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit under prlimit");
    let child = VmkitProcess(child);
    let mut first = Client::connect(&socket);
    first.read();
    // More connections than the process has descriptors for.
    let crowd: Vec<UnixStream> = (0..60)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let ticks_per_second = 100; // USER_HZ on Linux
    let before = cpu_ticks(child.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.0.id()) - before;
    // Idle is 0 ticks; the old busy loop took every tick the scheduler gave it (25-97).
    assert!(
        used * 20 < 2 * ticks_per_second,
        "vmkit used {used} of {} CPU ticks in 2 s with its descriptors exhausted",
        2 * ticks_per_second
    );
    // Closing the crowd frees descriptors: a new client is served again, and the first
    // one kept working throughout.
    drop(crowd);
    first.execute(json!({"execute": "qmp_capabilities"}));
    let reply = first.execute(json!({"execute": "query-status"}));
    assert_eq!(reply["return"]["status"], "running", "{reply}");
    let mut late = Client::connect(&socket);
    assert!(late.read()["QMP"].is_object());
    late.execute(json!({"execute": "qmp_capabilities"}));
    late.execute(json!({"execute": "quit"}));
    let (code, err) = end_of(child);
    assert_eq!(code, Some(0), "{err}");
}
