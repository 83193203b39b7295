//! The server as a client sees it: real Unix sockets, an event-manager main loop on a
//! thread, and a fake backend that records calls (no KVM).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use serde_json::{json, Value};
use vmkit_object::{ObjectTree, PropertyDef, Registry, TypeInfo};
use vmkit_qmp::{
    CpuInfoFast, CpuProps, Error, QmpBackend, QmpConfig, QmpError, QmpEvent, QmpServer, RunState,
    ShutdownCause, StatusInfo,
};
use vmm_sys_util::tempdir::TempDir;

/// What the fake VMM saw, shared with the test.
#[derive(Default)]
struct Seen {
    calls: Vec<String>,
}

struct FakeVm {
    seen: Arc<Mutex<Seen>>,
    state: RunState,
    tree: Option<ObjectTree>,
}

impl FakeVm {
    fn record(&self, call: &str) {
        self.seen.lock().unwrap().calls.push(call.to_owned());
    }
}

impl QmpBackend for FakeVm {
    fn query_status(&mut self) -> StatusInfo {
        StatusInfo::new(self.state)
    }
    fn stop(&mut self) -> Result<(), QmpError> {
        self.record("stop");
        self.state = RunState::Paused;
        Ok(())
    }
    fn cont(&mut self) -> Result<(), QmpError> {
        self.record("cont");
        self.state = RunState::Running;
        Ok(())
    }
    fn system_reset(&mut self) -> Result<(), QmpError> {
        self.record("system_reset");
        Ok(())
    }
    fn quit(&mut self) {
        self.record("quit");
    }
    fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast> {
        (0..2)
            .map(|i| CpuInfoFast {
                cpu_index: i,
                qom_path: format!("/machine/unattached/device[{i}]"),
                thread_id: 1000 + i as i64,
                props: CpuProps {
                    socket_id: Some(0),
                    core_id: Some(i),
                    thread_id: Some(0),
                    ..CpuProps::default()
                },
            })
            .collect()
    }
    fn query_exits(&mut self) -> Value {
        json!({"vcpus": [{"io": 3, "hlt": 1}], "ports": {"0x3f8": 2}})
    }
    fn object_tree(&self) -> Option<&ObjectTree> {
        self.tree.as_ref()
    }
}

/// A small QOM tree: an abstract ISA device type and a serial port with an `iobase`.
fn serial_tree() -> ObjectTree {
    let registry = Registry::new();
    registry
        .register(
            TypeInfo::new("isa-device")
                .abstract_type()
                .property(PropertyDef::uint("irq", 0..=15)),
        )
        .unwrap();
    registry
        .register(
            TypeInfo::new("isa-serial").parent("isa-device").property(
                PropertyDef::uint("iobase", 0..=0xffff)
                    .default(0x3f8)
                    .runtime_settable(),
            ),
        )
        .unwrap();
    let tree = ObjectTree::new(&registry).unwrap();
    tree.set_machine(&registry.new_object("container").unwrap())
        .unwrap();
    tree.device_add("isa-serial,id=com1,irq=4").unwrap();
    tree
}

/// A server in an event-manager loop on its own thread.
struct Harness {
    _dir: TempDir,
    path: PathBuf,
    server: Arc<Mutex<QmpServer>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    main_loop: Option<JoinHandle<()>>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(QmpConfig::default(), RunState::Running)
    }

    fn with_config(config: QmpConfig, state: RunState) -> Self {
        let dir = TempDir::new_with_prefix("/tmp/vmkit-qmp-test").unwrap();
        let path = dir.as_path().join("qmp.sock");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let vm = FakeVm {
            seen: seen.clone(),
            state,
            tree: Some(serial_tree()),
        };
        let server = Arc::new(Mutex::new(
            QmpServer::bind_with(&path, Box::new(vm), config).unwrap(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let main_loop = {
            let server = server.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut manager = EventManager::<Arc<Mutex<QmpServer>>>::new().unwrap();
                manager.add_subscriber(server);
                while !stop.load(Ordering::Relaxed) {
                    manager.run_with_timeout(10).unwrap();
                }
            })
        };
        Harness {
            _dir: dir,
            path,
            server,
            seen,
            stop,
            main_loop: Some(main_loop),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.seen.lock().unwrap().calls.clone()
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// A client past the greeting and negotiation.
    fn negotiated(&self) -> Client {
        let mut client = self.connect();
        assert!(client.recv().get("QMP").is_some());
        assert_eq!(
            client.cmd(r#"{"execute": "qmp_capabilities"}"#),
            json!({"return": {}})
        );
        client
    }

    /// Waits until the server's client count is `n`.
    fn wait_clients(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.server.lock().unwrap().client_count() != n {
            assert!(Instant::now() < deadline, "client count never reached {n}");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.main_loop.take() {
            let _ = handle.join();
        }
    }
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "incomplete line {line:?}");
        serde_json::from_str(&line).unwrap()
    }

    fn cmd(&mut self, text: &str) -> Value {
        self.send(text);
        self.recv()
    }

    fn error_desc(&mut self, text: &str) -> String {
        let reply = self.cmd(text);
        reply["error"]["desc"]
            .as_str()
            .unwrap_or("<no error>")
            .to_owned()
    }

    /// Asserts nothing arrives within `wait`.
    fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?} {byte:?}"),
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
}

#[test]
fn greeting_announces_version_and_no_capabilities() {
    let harness = Harness::new();
    let mut client = harness.connect();
    assert_eq!(
        client.recv(),
        json!({"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0},
                                   "package": concat!("vmkit ", env!("CARGO_PKG_VERSION"))},
                       "capabilities": []}})
    );
}

#[test]
fn negotiation_rules() {
    let harness = Harness::new();
    let mut client = harness.connect();
    client.recv();
    for command in [
        r#"{"execute": "query-status"}"#,
        r#"{"execute": "no-such"}"#,
    ] {
        assert_eq!(
            client.cmd(command),
            json!({"error": {"class": "CommandNotFound",
                   "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}})
        );
    }
    assert_eq!(
        client.error_desc(r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#),
        "Capability 'oob' not available"
    );
    assert_eq!(
        client.cmd(r#"{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": "n"}"#),
        json!({"return": {}, "id": "n"})
    );
    assert_eq!(
        client.cmd(r#"{"execute": "qmp_capabilities"}"#),
        json!({"error": {"class": "CommandNotFound",
               "desc": "Capabilities negotiation is already complete, command ignored"}})
    );
    assert!(harness.calls().is_empty());
}

#[test]
fn query_commands_reply_shapes() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    assert_eq!(
        client.cmd(r#"{"execute": "query-version", "id": {"seq": 1}}"#),
        json!({"return": {"qemu": {"major": 9, "minor": 0, "micro": 0},
                          "package": concat!("vmkit ", env!("CARGO_PKG_VERSION"))},
               "id": {"seq": 1}})
    );
    assert_eq!(
        client.cmd(r#"{"execute": "query-status"}"#),
        json!({"return": {"running": true, "singlestep": false, "status": "running"}})
    );
    let commands = client.cmd(r#"{"execute": "query-commands"}"#);
    let names: Vec<&str> = commands["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for expected in [
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "query-status",
        "stop",
        "cont",
        "system_reset",
        "system_powerdown",
        "quit",
        "query-cpus-fast",
        "query-exits",
        "qom-list-types",
        "qom-list",
        "qom-get",
        "qom-set",
        "set_link",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        client.cmd(r#"{"execute": "query-cpus-fast"}"#)["return"][1],
        json!({"cpu-index": 1, "qom-path": "/machine/unattached/device[1]", "thread-id": 1001,
               "props": {"socket-id": 0, "core-id": 1, "thread-id": 0}, "target": "x86_64"})
    );
    assert_eq!(
        client.cmd(r#"{"execute": "query-exits"}"#)["return"]["ports"]["0x3f8"],
        2
    );
}

#[test]
fn state_commands_call_backend_and_emit_events() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    client.send(r#"{"execute": "stop", "id": 1}"#);
    let stop = client.recv();
    assert_eq!(stop["event"], "STOP");
    assert!(stop["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
    assert!(stop["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
    assert_eq!(client.recv(), json!({"return": {}, "id": 1}));
    assert_eq!(
        client.cmd(r#"{"execute": "query-status"}"#)["return"]["status"],
        "paused"
    );
    client.send(r#"{"execute": "cont"}"#);
    assert_eq!(client.recv()["event"], "RESUME");
    assert_eq!(client.recv(), json!({"return": {}}));
    assert_eq!(
        client.cmd(r#"{"execute": "system_reset"}"#),
        json!({"return": {}})
    );
    let reset = client.recv();
    assert_eq!(reset["event"], "RESET");
    assert_eq!(
        reset["data"],
        json!({"guest": false, "reason": "host-qmp-system-reset"})
    );
    let powerdown = client.cmd(r#"{"execute": "system_powerdown"}"#);
    assert_eq!(powerdown["error"]["class"], "GenericError");
    assert!(powerdown["error"]["desc"]
        .as_str()
        .unwrap()
        .contains("no ACPI"));
    assert_eq!(harness.calls(), ["stop", "cont", "system_reset"]);
}

#[test]
fn events_reach_negotiated_clients_only() {
    let harness = Harness::new();
    let mut actor = harness.negotiated();
    let mut watcher = harness.negotiated();
    let mut newcomer = harness.connect();
    newcomer.recv();

    actor.send(r#"{"execute": "stop"}"#);
    assert_eq!(actor.recv()["event"], "STOP");
    assert_eq!(actor.recv(), json!({"return": {}}));
    assert_eq!(watcher.recv()["event"], "STOP");

    // From the VMM's main-loop side and from another thread.
    harness
        .server
        .lock()
        .unwrap()
        .broadcast_event(&QmpEvent::Shutdown(ShutdownCause::GuestShutdown));
    let sender = harness.server.lock().unwrap().event_sender();
    thread::spawn(move || {
        sender
            .send(QmpEvent::Reset(ShutdownCause::GuestReset))
            .unwrap()
    })
    .join()
    .unwrap();
    for client in [&mut actor, &mut watcher] {
        let shutdown = client.recv();
        assert_eq!(shutdown["event"], "SHUTDOWN");
        assert_eq!(
            shutdown["data"],
            json!({"guest": true, "reason": "guest-shutdown"})
        );
        let reset = client.recv();
        assert_eq!(
            reset["data"],
            json!({"guest": true, "reason": "guest-reset"})
        );
    }
    // The client still negotiating saw none of it.
    newcomer.expect_silence(Duration::from_millis(100));
    assert_eq!(
        newcomer.cmd(r#"{"execute": "qmp_capabilities"}"#),
        json!({"return": {}})
    );
    assert_eq!(harness.server.lock().unwrap().negotiated_client_count(), 3);
}

#[test]
fn bad_input_gets_qemu_errors_and_the_connection_survives() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    let cases: &[(&str, Value)] = &[
        ("{\"execute\" \"stop\"}", Value::Null),
        (
            "[1, 2]",
            json!({"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}),
        ),
        (
            "42 ",
            json!({"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}),
        ),
        (
            r#"{"id": 5}"#,
            json!({"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}, "id": 5}),
        ),
        (
            r#"{"execute": "foo"}"#,
            json!({"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}),
        ),
        (
            r#"{"exec-oob": "stop"}"#,
            json!({"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}),
        ),
        (
            r#"{"execute": "qom-get", "arguments": {"property": "iobase"}}"#,
            json!({"error": {"class": "GenericError", "desc": "Parameter 'path' is missing"}}),
        ),
        (
            r#"{"execute": "qom-get", "arguments": {"path": 7, "property": "iobase"}}"#,
            json!({"error": {"class": "GenericError", "desc": "Invalid parameter type for 'path', expected: string"}}),
        ),
        (
            r#"{"execute": "query-status", "arguments": {"y": 1}}"#,
            json!({"error": {"class": "GenericError", "desc": "Parameter 'y' is unexpected"}}),
        ),
    ];
    for (input, expected) in cases {
        let reply = client.cmd(input);
        if expected.is_null() {
            let desc = reply["error"]["desc"].as_str().unwrap();
            assert!(desc.starts_with("JSON parse error, "), "{input}: {desc}");
            assert_eq!(reply["error"]["class"], "GenericError");
        } else {
            assert_eq!(&reply, expected, "input {input}");
        }
    }
    // Garbage bytes (invalid UTF-8, control characters) also just produce errors.
    // Two bare tokens: two errors.
    client.stream.write_all(b"\xff\xfe\x00 \x01\n").unwrap();
    for _ in 0..2 {
        let desc = client.recv()["error"]["desc"].as_str().unwrap().to_owned();
        assert!(desc.starts_with("JSON parse error"), "{desc}");
    }
    assert!(harness.calls().is_empty());
    assert_eq!(
        client.cmd(r#"{"execute": "query-status"}"#)["return"]["running"],
        true
    );
}

#[test]
fn messages_may_span_lines_and_share_them() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    client
        .stream
        .write_all(b"{\"execute\":\n  \"query-status\",\n \"id\": 1}{\"execute\": \"query-version\", \"id\": 2}\n")
        .unwrap();
    assert_eq!(client.recv()["id"], 1);
    assert_eq!(client.recv()["id"], 2);
}

#[test]
fn ten_mib_line_is_refused_without_dropping_anyone() {
    let harness = Harness::new();
    let mut big_sender = harness.negotiated();
    let mut bystander = harness.negotiated();
    let payload = "a".repeat(10 << 20);
    // A well-formed but oversized object, then unterminated oversized garbage.
    let line =
        format!("{{\"execute\": \"qom-set\", \"arguments\": {{\"value\": \"{payload}\"}}}}\n");
    big_sender.stream.write_all(line.as_bytes()).unwrap();
    assert_eq!(
        big_sender.recv(),
        json!({"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}})
    );
    let garbage = "{".repeat(10 << 20) + "\n";
    big_sender.stream.write_all(garbage.as_bytes()).unwrap();
    assert_eq!(
        big_sender.recv()["error"]["desc"],
        "JSON token size limit exceeded"
    );
    assert_eq!(
        big_sender.cmd(r#"{"execute": "query-status", "id": "after"}"#)["id"],
        "after"
    );
    assert_eq!(
        bystander.cmd(r#"{"execute": "query-status"}"#)["return"]["status"],
        "running"
    );
    assert_eq!(harness.server.lock().unwrap().client_count(), 2);
}

#[test]
fn disconnects_mid_message_and_mid_command_leave_others_unharmed() {
    let harness = Harness::new();
    let mut survivor = harness.negotiated();
    {
        let mut partial = harness.negotiated();
        partial
            .stream
            .write_all(br#"{"execute": "stop", "argu"#)
            .unwrap();
    }
    {
        // Sends a command and closes before reading the reply.
        let mut hasty = harness.negotiated();
        hasty.send(r#"{"execute": "system_reset"}"#);
    }
    harness.wait_clients(1);
    // The complete command ran; the partial one did not.
    assert_eq!(harness.calls(), ["system_reset"]);
    assert_eq!(survivor.recv()["event"], "RESET");
    assert_eq!(
        survivor.cmd(r#"{"execute": "query-status"}"#)["return"]["status"],
        "running"
    );
}

#[test]
fn half_closed_client_still_gets_its_replies() {
    let harness = Harness::new();
    let mut client = harness.connect();
    client
        .stream
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-status\"}\n")
        .unwrap();
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    client.reader.read_to_string(&mut all).unwrap();
    let lines: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert_eq!(lines[2]["return"]["status"], "running");
    harness.wait_clients(0);
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_output_cap() {
    let config = QmpConfig {
        max_output_bytes: 4096,
        ..QmpConfig::default()
    };
    let harness = Harness::with_config(config, RunState::Running);
    let mut reader = harness.negotiated();
    let _stalled = harness.negotiated();
    let big = QmpEvent::Custom {
        name: "VMKIT_TEST".into(),
        data: Some(json!({"pad": "x".repeat(1000)})),
    };
    // Far more than the socket buffer plus the cap; broadcasting never blocks.
    let started = Instant::now();
    for _ in 0..2000 {
        harness.server.lock().unwrap().broadcast_event(&big);
        // The reader keeps up.
        assert_eq!(reader.recv()["event"], "VMKIT_TEST");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    harness.wait_clients(1);
    assert_eq!(
        reader.cmd(r#"{"execute": "query-status"}"#)["return"]["running"],
        true
    );
}

#[test]
fn quit_replies_then_announces_shutdown_then_calls_backend() {
    let harness = Harness::new();
    let mut quitter = harness.negotiated();
    let mut watcher = harness.negotiated();
    assert_eq!(
        quitter.cmd(r#"{"execute": "quit", "id": 9}"#),
        json!({"return": {}, "id": 9})
    );
    for client in [&mut quitter, &mut watcher] {
        let event = client.recv();
        assert_eq!(event["event"], "SHUTDOWN");
        assert_eq!(
            event["data"],
            json!({"guest": false, "reason": "host-qmp-quit"})
        );
    }
    // The backend hears about it once the reply and the event are on their way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness.calls().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(harness.calls(), ["quit"]);
    assert!(harness.server.lock().unwrap().quit_requested());
}

#[test]
fn qom_commands_against_an_object_tree() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    let path = "/machine/peripheral/com1";
    let list = client.cmd(&format!(
        r#"{{"execute": "qom-list", "arguments": {{"path": "{path}"}}}}"#
    ));
    let props = list["return"].as_array().unwrap();
    assert!(props.contains(&json!({"name": "iobase", "type": "uint16", "default-value": 1016})));
    assert!(props
        .iter()
        .any(|p| p["name"] == "irq" && p["type"] == "uint8"));

    let get = |client: &mut Client, property: &str| {
        client.cmd(&format!(
            r#"{{"execute": "qom-get", "arguments": {{"path": "{path}", "property": "{property}"}}}}"#
        ))
    };
    assert_eq!(get(&mut client, "iobase"), json!({"return": 1016}));
    assert_eq!(get(&mut client, "irq"), json!({"return": 4}));
    assert_eq!(
        client.cmd(&format!(
            r#"{{"execute": "qom-set", "arguments": {{"path": "{path}", "property": "iobase", "value": 760}}}}"#
        )),
        json!({"return": {}})
    );
    assert_eq!(get(&mut client, "iobase"), json!({"return": 760}));
    // Partial paths resolve as in QEMU.
    assert_eq!(
        client
            .cmd(r#"{"execute": "qom-get", "arguments": {"path": "com1", "property": "iobase"}}"#),
        json!({"return": 760})
    );

    // Errors: out of range, wrong type, read-only after realize, unknown property, bad path.
    let set_err = |client: &mut Client, property: &str, value: &str| {
        client.cmd(&format!(
            r#"{{"execute": "qom-set", "arguments": {{"path": "{path}", "property": "{property}", "value": {value}}}}}"#
        ))["error"]
            .clone()
    };
    let range = set_err(&mut client, "iobase", "65536");
    assert_eq!(range["class"], "GenericError");
    assert!(
        range["desc"].as_str().unwrap().contains("out of range"),
        "{range}"
    );
    let wrong = set_err(&mut client, "iobase", "\"0x2f8\"");
    assert!(
        wrong["desc"].as_str().unwrap().contains("iobase"),
        "{wrong}"
    );
    let realized = set_err(&mut client, "irq", "3");
    assert_eq!(realized["class"], "GenericError");
    assert_eq!(
        get(&mut client, "nope"),
        json!({"error": {"class": "GenericError", "desc": "Property 'isa-serial.nope' not found"}})
    );
    assert_eq!(
        client.cmd(r#"{"execute": "qom-list", "arguments": {"path": "/machine/nowhere"}}"#),
        json!({"error": {"class": "DeviceNotFound", "desc": "Device '/machine/nowhere' not found"}})
    );
    assert_eq!(get(&mut client, "iobase"), json!({"return": 760}));
}

#[test]
fn qom_list_types_filters() {
    let harness = Harness::new();
    let mut client = harness.negotiated();
    let names = |reply: Value| -> Vec<String> {
        reply["return"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let concrete = names(
        client.cmd(r#"{"execute": "qom-list-types", "arguments": {"implements": "isa-device"}}"#),
    );
    assert_eq!(concrete, ["isa-serial"]);
    let with_abstract = client.cmd(
        r#"{"execute": "qom-list-types", "arguments": {"implements": "isa-device", "abstract": true}}"#,
    );
    assert_eq!(
        with_abstract["return"],
        json!([{"name": "isa-device", "parent": "object", "abstract": true},
               {"name": "isa-serial", "parent": "isa-device"}])
    );
    let all = names(client.cmd(r#"{"execute": "qom-list-types"}"#));
    assert!(all.contains(&"container".to_owned()) && all.contains(&"isa-serial".to_owned()));
    assert!(!all.contains(&"isa-device".to_owned()));
}

#[test]
fn socket_is_owner_only_and_removed_on_drop() {
    let dir = TempDir::new_with_prefix("/tmp/vmkit-qmp-perm").unwrap();
    let path = dir.as_path().join("qmp.sock");
    let backend = || -> Box<dyn QmpBackend> {
        Box::new(FakeVm {
            seen: Arc::default(),
            state: RunState::Prelaunch,
            tree: None,
        })
    };
    // A stale socket from a crashed VMM is replaced.
    drop(UnixListener::bind(&path).unwrap());
    let server = QmpServer::bind(&path, backend()).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No staging directory left behind.
    assert_eq!(std::fs::read_dir(dir.as_path()).unwrap().count(), 1);
    // A second server on a live socket is refused.
    assert!(matches!(
        QmpServer::bind(&path, backend()),
        Err(Error::SocketInUse { .. })
    ));
    drop(server);
    assert!(!path.exists());

    // A regular file is never replaced.
    std::fs::write(&path, b"keep me").unwrap();
    let err = QmpServer::bind(&path, backend()).unwrap_err();
    assert!(matches!(err, Error::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn wait_for_client_holds_until_someone_connects() {
    let dir = TempDir::new_with_prefix("/tmp/vmkit-qmp-wait").unwrap();
    let path = dir.as_path().join("qmp.sock");
    let mut server = QmpServer::bind(
        &path,
        Box::new(FakeVm {
            seen: Arc::default(),
            state: RunState::Prelaunch,
            tree: None,
        }),
    )
    .unwrap();
    assert!(!server
        .wait_for_client(Some(Duration::from_millis(50)))
        .unwrap());
    let connector = {
        let path = path.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let stream = UnixStream::connect(path).unwrap();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).unwrap();
            line
        })
    };
    assert!(server
        .wait_for_client(Some(Duration::from_secs(10)))
        .unwrap());
    assert_eq!(server.client_count(), 1);
    let greeting: Value = serde_json::from_str(&connector.join().unwrap()).unwrap();
    assert!(greeting["QMP"]["capabilities"]
        .as_array()
        .unwrap()
        .is_empty());
    // Already connected: returns at once.
    assert!(server.wait_for_client(Some(Duration::ZERO)).unwrap());
}

mod random_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random chunks (raw bytes and pieces of real commands) on one connection never
        /// take the server down: afterwards a second client is served normally.
        #[test]
        fn random_chunks_never_break_the_server(
            chunks in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..512),
                    prop::sample::select(vec![
                        "{\"execute\": \"qmp_capabilities\"}",
                        "{\"execute\": \"stop\"}",
                        "{\"execute\": \"cont\"",
                        "}\n",
                        "{\"execute\": \"qom-get\", \"arguments\": {\"path\": \"com1\", \"property\": \"iobase\"}}",
                        "\"\\",
                    ]).prop_map(|s| s.as_bytes().to_vec()),
                ],
                0..16,
            ),
            close_early in any::<bool>(),
        ) {
            let harness = Harness::new();
            let mut fuzz = harness.connect();
            for chunk in &chunks {
                // The server may already have dropped us; that is fine.
                if fuzz.stream.write_all(chunk).is_err() {
                    break;
                }
            }
            if close_early {
                drop(fuzz);
            } else {
                let _ = fuzz.stream.write_all(b"\n");
            }
            let mut probe = harness.negotiated();
            let status = probe.cmd(r#"{"execute": "query-status"}"#);
            prop_assert!(status["return"]["status"].is_string());
        }
    }
}

#[test]
fn socket_paths_up_to_the_unix_limit_work_and_longer_ones_are_refused() {
    let backend = || -> Box<dyn QmpBackend> {
        Box::new(FakeVm {
            seen: Arc::default(),
            state: RunState::Prelaunch,
            tree: None,
        })
    };
    let dir = TempDir::new_with_prefix("/tmp/vmkit-qmp-len").unwrap();
    // Final paths of 95 to 107 bytes, in a directory with room for the private staging
    // directory and in one without (bound in place): each is bound and reachable.
    let base = dir.as_path().to_str().unwrap().len();
    let mut deep = dir.as_path().to_path_buf();
    for (dir_len, lens) in [(80usize, &[95usize, 100, 107][..]), (97, &[100, 107][..])] {
        deep = dir.as_path().join("d".repeat(dir_len - base - 1));
        std::fs::create_dir(&deep).unwrap();
        assert_eq!(deep.to_str().unwrap().len(), dir_len);
        for &len in lens {
            let name = "q".repeat(len - dir_len - 1);
            let path = deep.join(name);
            assert_eq!(path.to_str().unwrap().len(), len);
            // A stale socket is replaced on these paths too.
            drop(UnixListener::bind(&path).unwrap());
            let server = QmpServer::bind(&path, backend()).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{len}");
            UnixStream::connect(&path).unwrap();
            drop(server);
            assert!(!path.exists(), "{len}");
        }
    }
    // 108 bytes and more: refused up front, naming the limit, nothing created.
    for len in [108usize, 144] {
        let path = deep.join("q".repeat(len - deep.to_str().unwrap().len() - 1));
        let err = QmpServer::bind(&path, backend()).unwrap_err();
        assert!(matches!(err, Error::PathTooLong { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{len} bytes")) && text.contains("107"),
            "{text}"
        );
        assert!(!path.exists());
    }
    assert_eq!(std::fs::read_dir(&deep).unwrap().count(), 0);
}
