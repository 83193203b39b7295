//! One client's protocol state (negotiation, framing) and the command layer.
//!
//! [`QmpSession`] knows nothing about sockets: feed it bytes, and it returns what to
//! send. [`QmpServer`](crate::QmpServer) uses it for each socket client; a VMM can also
//! use it for another transport (a serial line, stdio).

use serde_json::{json, Map, Value};
use vmkit_object::ObjectTree;

use crate::backend::QmpBackend;
use crate::protocol::{greeting_json, version_json, QmpError, QmpEvent, ShutdownCause};
use crate::splitter::{Frame, JsonSplitter};

/// What a session asks its transport to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this message (a command reply or an error) to this client.
    Reply(Value),
    /// Send this event to every client in command mode, this one included.
    Event(QmpEvent),
    /// `quit` was executed: once the outputs before this one are sent, call
    /// [`QmpBackend::quit`]. The session ignores its remaining input.
    Quit,
}

/// The type of a command parameter, named as QEMU names it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Str,
    Bool,
    Array,
    Any,
}

impl ParamKind {
    fn accepts(self, value: &Value) -> bool {
        match self {
            ParamKind::Str => value.is_string(),
            ParamKind::Bool => value.is_boolean(),
            ParamKind::Array => value.is_array(),
            ParamKind::Any => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ParamKind::Str => "string",
            ParamKind::Bool => "boolean",
            ParamKind::Array => "array",
            ParamKind::Any => "any",
        }
    }
}

struct Param {
    name: &'static str,
    kind: ParamKind,
    required: bool,
}

const fn required(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        required: true,
    }
}

const fn optional(name: &'static str, kind: ParamKind) -> Param {
    Param {
        name,
        kind,
        required: false,
    }
}

/// Every command and its parameters, in `query-commands` order.
const COMMANDS: &[(&str, &[Param])] = &[
    ("qmp_capabilities", &[optional("enable", ParamKind::Array)]),
    ("query-version", &[]),
    ("query-commands", &[]),
    ("query-status", &[]),
    ("stop", &[]),
    ("cont", &[]),
    ("system_reset", &[]),
    ("system_powerdown", &[]),
    ("quit", &[]),
    ("query-cpus-fast", &[]),
    ("query-exits", &[]),
    (
        "qom-list-types",
        &[
            optional("implements", ParamKind::Str),
            optional("abstract", ParamKind::Bool),
        ],
    ),
    ("qom-list", &[required("path", ParamKind::Str)]),
    (
        "qom-get",
        &[
            required("path", ParamKind::Str),
            required("property", ParamKind::Str),
        ],
    ),
    (
        "qom-set",
        &[
            required("path", ParamKind::Str),
            required("property", ParamKind::Str),
            required("value", ParamKind::Any),
        ],
    ),
    (
        "migrate",
        &[
            required("uri", ParamKind::Str),
            optional("detach", ParamKind::Bool),
            optional("blk", ParamKind::Bool),
            optional("inc", ParamKind::Bool),
            optional("resume", ParamKind::Bool),
        ],
    ),
    ("query-migrate", &[]),
    ("migrate-incoming", &[required("uri", ParamKind::Str)]),
    ("migrate_cancel", &[]),
    (
        "migrate-set-parameters",
        &[
            optional("downtime-limit", ParamKind::Any),
            optional("max-bandwidth", ParamKind::Any),
        ],
    ),
    ("query-migrate-parameters", &[]),
    (
        "set_link",
        &[
            required("name", ParamKind::Str),
            required("up", ParamKind::Bool),
        ],
    ),
];

/// The names of the commands this crate implements.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(name, _)| *name)
}

/// Checks `args` against `params` in QEMU's order: each declared parameter (missing,
/// then wrong type), then anything undeclared.
fn check_args(args: &Map<String, Value>, params: &[Param]) -> Result<(), QmpError> {
    for param in params {
        match args.get(param.name) {
            None if param.required => {
                return Err(QmpError::generic(format!(
                    "Parameter '{}' is missing",
                    param.name
                )))
            }
            Some(value) if !param.kind.accepts(value) => {
                return Err(QmpError::generic(format!(
                    "Invalid parameter type for '{}', expected: {}",
                    param.name,
                    param.kind.name()
                )))
            }
            _ => {}
        }
    }
    if let Some(extra) = args.keys().find(|k| !params.iter().any(|p| p.name == *k)) {
        return Err(QmpError::generic(format!(
            "Parameter '{extra}' is unexpected"
        )));
    }
    Ok(())
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Events around a command's reply: QEMU sends `STOP` / `RESUME` before the reply (the
/// state changes synchronously) and `RESET` / `POWERDOWN` / `SHUTDOWN` after it (the
/// main loop acts on the request later).
#[derive(Default)]
struct Effects {
    before: Vec<QmpEvent>,
    after: Vec<QmpEvent>,
    quit: bool,
}

/// Per-client QMP state: the input splitter and whether capabilities are negotiated.
#[derive(Debug, Clone)]
pub struct QmpSession {
    splitter: JsonSplitter,
    negotiated: bool,
    quit: bool,
}

impl Default for QmpSession {
    fn default() -> Self {
        Self::new(crate::splitter::DEFAULT_MAX_MESSAGE)
    }
}

impl QmpSession {
    /// A session in capabilities-negotiation mode accepting messages of up to
    /// `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        QmpSession {
            splitter: JsonSplitter::new(max_message),
            negotiated: false,
            quit: false,
        }
    }

    /// The greeting to send when the client connects.
    pub fn greeting(&self) -> Value {
        greeting_json()
    }

    /// Whether `qmp_capabilities` succeeded (command mode: commands run, events arrive).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// Bytes of an incomplete message held.
    pub fn pending_input(&self) -> usize {
        self.splitter.pending_bytes()
    }

    /// Feeds received bytes and runs every complete message against `backend`,
    /// appending what to send to `out`. After [`Output::Quit`] the rest is ignored.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        backend: &mut dyn QmpBackend,
        out: &mut Vec<Output>,
    ) {
        if self.quit {
            return;
        }
        self.splitter.feed(bytes);
        while let Some(frame) = self.splitter.next_frame() {
            self.handle_frame(frame, backend, out);
            if self.quit {
                self.splitter.reset();
                while self.splitter.next_frame().is_some() {}
                return;
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame, backend: &mut dyn QmpBackend, out: &mut Vec<Output>) {
        match frame {
            // QEMU's message for its own (64 MiB) limit.
            Frame::Oversized => out.push(Output::Reply(error_response(
                &QmpError::generic("JSON token size limit exceeded"),
                None,
            ))),
            Frame::Message(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(request) => self.handle_request(request, backend, out),
                Err(err) => out.push(Output::Reply(error_response(
                    &QmpError::generic(format!("JSON parse error, {err}")),
                    None,
                ))),
            },
        }
    }

    /// Runs one parsed request (already split and parsed by the caller).
    pub fn handle_request(
        &mut self,
        request: Value,
        backend: &mut dyn QmpBackend,
        out: &mut Vec<Output>,
    ) {
        if self.quit {
            return;
        }
        let Value::Object(request) = request else {
            out.push(Output::Reply(error_response(
                &QmpError::generic("QMP input must be a JSON object"),
                None,
            )));
            return;
        };
        let id = request.get("id").cloned();
        let mut effects = Effects::default();
        let result = self.dispatch(&request, backend, &mut effects);
        out.extend(effects.before.into_iter().map(Output::Event));
        out.push(Output::Reply(match result {
            Ok(value) => {
                let mut map = Map::new();
                map.insert("return".into(), value);
                if let Some(id) = id {
                    map.insert("id".into(), id);
                }
                Value::Object(map)
            }
            Err(err) => error_response(&err, id),
        }));
        out.extend(effects.after.into_iter().map(Output::Event));
        if effects.quit {
            self.quit = true;
            out.push(Output::Quit);
        }
    }

    fn dispatch(
        &mut self,
        request: &Map<String, Value>,
        backend: &mut dyn QmpBackend,
        effects: &mut Effects,
    ) -> Result<Value, QmpError> {
        let mut command = None;
        for (key, value) in request {
            match key.as_str() {
                "execute" => {
                    command = Some(value.as_str().ok_or_else(|| {
                        QmpError::generic("QMP input member 'execute' must be a string")
                    })?);
                }
                "arguments" if !value.is_object() => {
                    return Err(QmpError::generic(
                        "QMP input member 'arguments' must be an object",
                    ))
                }
                "arguments" | "id" => {}
                // `exec-oob` lands here too: OOB is never offered, as in QEMU without
                // a monitor I/O thread.
                other => {
                    return Err(QmpError::generic(format!(
                        "QMP input member '{other}' is unexpected"
                    )))
                }
            }
        }
        let command =
            command.ok_or_else(|| QmpError::generic("QMP input lacks member 'execute'"))?;
        let empty = Map::new();
        let args = request
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&empty);

        if !self.negotiated && command != "qmp_capabilities" {
            return Err(QmpError::command_not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        let Some((_, params)) = COMMANDS.iter().find(|(name, _)| *name == command) else {
            return Err(QmpError::command_not_found(format!(
                "The command {command} has not been found"
            )));
        };
        check_args(args, params)?;
        self.run(command, args, backend, effects)
    }

    fn run(
        &mut self,
        command: &str,
        args: &Map<String, Value>,
        backend: &mut dyn QmpBackend,
        effects: &mut Effects,
    ) -> Result<Value, QmpError> {
        let ok = || Ok(json!({}));
        match command {
            "qmp_capabilities" => {
                if self.negotiated {
                    return Err(QmpError::command_not_found(
                        "Capabilities negotiation is already complete, command ignored",
                    ));
                }
                check_capabilities(args)?;
                self.negotiated = true;
                ok()
            }
            "query-version" => Ok(version_json()),
            "query-commands" => Ok(Value::Array(
                command_names()
                    .map(|name| json!({ "name": name }))
                    .collect(),
            )),
            "query-status" => Ok(backend.query_status().to_json()),
            "stop" => {
                let was_running = backend.query_status().running();
                backend.stop()?;
                if was_running && !backend.query_status().running() {
                    effects.before.push(QmpEvent::Stop);
                }
                ok()
            }
            "cont" => {
                let was_running = backend.query_status().running();
                backend.cont()?;
                if !was_running && backend.query_status().running() {
                    effects.before.push(QmpEvent::Resume);
                }
                ok()
            }
            "system_reset" => {
                backend.system_reset()?;
                effects
                    .after
                    .push(QmpEvent::Reset(ShutdownCause::HostQmpSystemReset));
                ok()
            }
            "system_powerdown" => {
                backend.system_powerdown()?;
                effects.after.push(QmpEvent::Powerdown);
                ok()
            }
            "quit" => {
                effects
                    .after
                    .push(QmpEvent::Shutdown(ShutdownCause::HostQmpQuit));
                effects.quit = true;
                ok()
            }
            "query-cpus-fast" => Ok(Value::Array(
                backend
                    .query_cpus_fast()
                    .iter()
                    .map(|cpu| cpu.to_json())
                    .collect(),
            )),
            "query-exits" => Ok(backend.query_exits()),
            "migrate" => {
                backend.migrate(str_arg(args, "uri"))?;
                ok()
            }
            "query-migrate" => Ok(backend.query_migrate()),
            "migrate-incoming" => {
                backend.migrate_incoming(str_arg(args, "uri"))?;
                ok()
            }
            "migrate_cancel" => {
                backend.migrate_cancel()?;
                ok()
            }
            "migrate-set-parameters" => {
                let params = crate::protocol::MigrationParameters::from_args(args)?;
                backend.migrate_set_parameters(&params)?;
                ok()
            }
            "query-migrate-parameters" => Ok(backend.query_migrate_parameters()),
            "set_link" => {
                let up = args.get("up").and_then(Value::as_bool).unwrap_or(false);
                backend.set_link(str_arg(args, "name"), up)?;
                ok()
            }
            _ => run_qom(command, args, qom_tree(backend)?),
        }
    }
}

/// `qmp_capabilities`'s `enable`: no capability is offered, so any valid one is refused.
fn check_capabilities(args: &Map<String, Value>) -> Result<(), QmpError> {
    let Some(Value::Array(enable)) = args.get("enable") else {
        return Ok(());
    };
    // Every valid capability is refused, so the first element decides the error.
    let Some(first) = enable.first() else {
        return Ok(());
    };
    let Some(name) = first.as_str() else {
        return Err(QmpError::generic(
            "Invalid parameter type for 'enable[0]', expected: string",
        ));
    };
    Err(QmpError::generic(if name == "oob" {
        format!("Capability '{name}' not available")
    } else {
        format!("Parameter 'enable[0]' does not accept value '{name}'")
    }))
}

fn qom_tree(backend: &dyn QmpBackend) -> Result<&ObjectTree, QmpError> {
    backend.object_tree().ok_or_else(|| {
        QmpError::generic("QOM introspection is not available: this VMM has no object tree")
    })
}

fn run_qom(command: &str, args: &Map<String, Value>, tree: &ObjectTree) -> Result<Value, QmpError> {
    let path = str_arg(args, "path");
    let property = str_arg(args, "property");
    let to_qmp = |err| qom_error(err, path);
    match command {
        "qom-list-types" => {
            let implements = args.get("implements").and_then(Value::as_str);
            let include_abstract = args
                .get("abstract")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(Value::Array(
                tree.registry()
                    .list_types(implements, include_abstract)
                    .iter()
                    .map(|t| t.to_json())
                    .collect(),
            ))
        }
        "qom-list" => Ok(Value::Array(
            tree.list(path)
                .map_err(to_qmp)?
                .iter()
                .map(|p| p.to_json())
                .collect(),
        )),
        "qom-get" => tree.get(path, property).map_err(to_qmp),
        "qom-set" => {
            let value = args.get("value").cloned().unwrap_or(Value::Null);
            tree.set(path, property, value).map_err(to_qmp)?;
            Ok(json!({}))
        }
        other => Err(QmpError::command_not_found(format!(
            "The command {other} has not been found"
        ))),
    }
}

/// Maps object-model errors to QEMU's classes and texts where QEMU has them.
fn qom_error(err: vmkit_object::Error, path: &str) -> QmpError {
    match err {
        vmkit_object::Error::PathNotFound(_) => {
            QmpError::device_not_found(format!("Device '{path}' not found"))
        }
        vmkit_object::Error::AmbiguousPath(_) => {
            QmpError::generic(format!("Path '{path}' is ambiguous"))
        }
        vmkit_object::Error::UnknownProperty {
            object_type,
            property,
        } => QmpError::generic(format!("Property '{object_type}.{property}' not found")),
        other => QmpError::generic(other.to_string()),
    }
}

/// `{"error": {"class", "desc"}, "id"?}`.
pub fn error_response(err: &QmpError, id: Option<Value>) -> Value {
    let mut map = Map::new();
    map.insert("error".into(), err.to_json());
    if let Some(id) = id {
        map.insert("id".into(), id);
    }
    Value::Object(map)
}

/// Serialises one message as QEMU does (`{"a": 1, "b": [2, 3]}`: a space after `:` and
/// `,`) followed by a newline.
pub fn encode_message(message: &Value) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128);
    encode_value(message, &mut bytes);
    bytes.push(b'\n');
    bytes
}

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                encode_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                encode_scalar(&Value::String(key.clone()), out);
                out.extend_from_slice(b": ");
                encode_value(item, out);
            }
            out.push(b'}');
        }
        scalar => encode_scalar(scalar, out),
    }
}

fn encode_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serialising a scalar into a Vec cannot fail; `null` is a harmless fallback.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CpuInfoFast, RunState, StatusInfo};
    use proptest::prelude::*;

    /// Records calls; `stop`/`cont` move the run state.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
        paused: bool,
        params: Vec<crate::protocol::MigrationParameters>,
    }

    impl QmpBackend for Recorder {
        fn query_status(&mut self) -> StatusInfo {
            StatusInfo::new(if self.paused {
                RunState::Paused
            } else {
                RunState::Running
            })
        }
        fn stop(&mut self) -> Result<(), QmpError> {
            self.calls.push("stop");
            self.paused = true;
            Ok(())
        }
        fn cont(&mut self) -> Result<(), QmpError> {
            self.calls.push("cont");
            self.paused = false;
            Ok(())
        }
        fn system_reset(&mut self) -> Result<(), QmpError> {
            self.calls.push("system_reset");
            Ok(())
        }
        fn quit(&mut self) {
            self.calls.push("quit");
        }
        fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast> {
            Vec::new()
        }
        fn migrate_set_parameters(
            &mut self,
            params: &crate::protocol::MigrationParameters,
        ) -> Result<(), QmpError> {
            self.params.push(*params);
            Ok(())
        }
    }

    #[test]
    fn migrate_set_parameters_takes_uint64s_as_qemus_visitor_does() {
        let mut session = QmpSession::default();
        let mut backend = Recorder::default();
        run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities"}"#,
        );
        let cases = [
            (
                r#"{"downtime-limit": "x"}"#,
                "Parameter 'downtime-limit' expects uint64",
            ),
            (
                r#"{"max-bandwidth": 1.5}"#,
                "Parameter 'max-bandwidth' expects uint64",
            ),
            (r#"{"bogus": 1}"#, "Parameter 'bogus' is unexpected"),
        ];
        for (args, desc) in cases {
            let out = run(
                &mut session,
                &mut backend,
                &format!(r#"{{"execute": "migrate-set-parameters", "arguments": {args}}}"#),
            );
            assert_eq!(reply(&out)["error"]["desc"], desc, "{args}");
        }
        assert!(backend.params.is_empty(), "nothing reached the backend");
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 100, "max-bandwidth": -1}}"#,
        );
        assert_eq!(reply(&out), json!({"return": {}}));
        assert_eq!(
            backend.params,
            vec![crate::protocol::MigrationParameters {
                downtime_limit: Some(100),
                max_bandwidth: Some(u64::MAX),
            }]
        );
    }

    #[test]
    fn set_link_needs_a_backend_with_nics() {
        let mut session = QmpSession::default();
        let mut backend = Recorder::default();
        run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities"}"#,
        );
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "set_link", "arguments": {"name": "n0", "up": false}}"#,
        );
        assert_eq!(
            reply(&out),
            json!({"error": {"class": "DeviceNotFound", "desc": "Device 'n0' not found"}})
        );
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "set_link", "arguments": {"name": "n0"}}"#,
        );
        assert_eq!(reply(&out)["error"]["desc"], "Parameter 'up' is missing");
    }

    fn run(session: &mut QmpSession, backend: &mut Recorder, input: &str) -> Vec<Output> {
        let mut out = Vec::new();
        session.handle_input(input.as_bytes(), backend, &mut out);
        out
    }

    fn reply(outputs: &[Output]) -> Value {
        outputs
            .iter()
            .find_map(|o| match o {
                Output::Reply(v) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or(Value::Null)
    }

    fn negotiated() -> (QmpSession, Recorder) {
        let mut session = QmpSession::default();
        let mut backend = Recorder::default();
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities"}"#,
        );
        assert_eq!(out, [Output::Reply(json!({"return": {}}))]);
        (session, backend)
    }

    #[test]
    fn negotiation_mode_only_accepts_qmp_capabilities() {
        let mut session = QmpSession::default();
        let mut backend = Recorder::default();
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "stop", "id": 1}"#,
        );
        assert_eq!(
            reply(&out),
            json!({"error": {"class": "CommandNotFound",
                   "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 1})
        );
        assert!(backend.calls.is_empty() && !session.is_negotiated());
        // A GenericError is not rewritten.
        let out = run(&mut session, &mut backend, r#"{"id": 2}"#);
        assert_eq!(
            reply(&out)["error"]["desc"],
            "QMP input lacks member 'execute'"
        );
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#,
        );
        assert_eq!(
            reply(&out)["error"]["desc"],
            "Capability 'oob' not available"
        );
        assert!(!session.is_negotiated());
        run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": []}}"#,
        );
        assert!(session.is_negotiated());
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "qmp_capabilities"}"#,
        );
        assert_eq!(
            reply(&out)["error"],
            json!({"class": "CommandNotFound",
                   "desc": "Capabilities negotiation is already complete, command ignored"})
        );
    }

    #[test]
    fn events_are_ordered_as_qemu_orders_them() {
        let (mut session, mut backend) = negotiated();
        let out = run(&mut session, &mut backend, r#"{"execute": "stop"}"#);
        assert_eq!(
            out,
            [
                Output::Event(QmpEvent::Stop),
                Output::Reply(json!({"return": {}}))
            ]
        );
        // Already paused: no second STOP.
        let out = run(&mut session, &mut backend, r#"{"execute": "stop"}"#);
        assert_eq!(out, [Output::Reply(json!({"return": {}}))]);
        let out = run(&mut session, &mut backend, r#"{"execute": "cont"}"#);
        assert_eq!(out[0], Output::Event(QmpEvent::Resume));
        let out = run(&mut session, &mut backend, r#"{"execute": "system_reset"}"#);
        assert_eq!(
            out,
            [
                Output::Reply(json!({"return": {}})),
                Output::Event(QmpEvent::Reset(ShutdownCause::HostQmpSystemReset))
            ]
        );
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "system_powerdown"}"#,
        );
        assert_eq!(reply(&out)["error"]["class"], "GenericError");
        assert_eq!(out.len(), 1);
        // quit ends the session: the rest of the input is ignored.
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "quit"} {"execute": "stop"}"#,
        );
        assert_eq!(
            out,
            [
                Output::Reply(json!({"return": {}})),
                Output::Event(QmpEvent::Shutdown(ShutdownCause::HostQmpQuit)),
                Output::Quit
            ]
        );
        // The server, not the session, calls quit (after sending the reply).
        assert_eq!(backend.calls, ["stop", "stop", "cont", "system_reset"]);
    }

    #[test]
    fn argument_errors_use_qemu_texts() {
        let (mut session, mut backend) = negotiated();
        let cases = [
            (
                r#"{"execute": "qom-get", "arguments": {"property": "x"}}"#,
                "Parameter 'path' is missing",
            ),
            (
                r#"{"execute": "qom-get", "arguments": {"path": 1, "property": "x"}}"#,
                "Invalid parameter type for 'path', expected: string",
            ),
            (
                r#"{"execute": "qom-list-types", "arguments": {"abstract": "yes"}}"#,
                "Invalid parameter type for 'abstract', expected: boolean",
            ),
            (
                r#"{"execute": "stop", "arguments": {"now": true}}"#,
                "Parameter 'now' is unexpected",
            ),
            (
                r#"{"execute": "stop", "arguments": []}"#,
                "QMP input member 'arguments' must be an object",
            ),
            (
                r#"{"execute": 5}"#,
                "QMP input member 'execute' must be a string",
            ),
            (
                r#"{"exec-oob": "stop"}"#,
                "QMP input member 'exec-oob' is unexpected",
            ),
            (
                r#"{"execute": "qom-list", "arguments": {"path": "/"}}"#,
                "QOM introspection is not available: this VMM has no object tree",
            ),
            ("[1, 2]", "QMP input must be a JSON object"),
        ];
        for (input, desc) in cases {
            let out = run(&mut session, &mut backend, input);
            assert_eq!(reply(&out)["error"]["desc"], desc, "input {input}");
        }
        let out = run(
            &mut session,
            &mut backend,
            r#"{"execute": "nope", "id": "a"}"#,
        );
        assert_eq!(
            reply(&out),
            json!({"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "a"})
        );
        let out = run(&mut session, &mut backend, "{\"execute\": }");
        let desc = reply(&out)["error"]["desc"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(desc.starts_with("JSON parse error, "), "{desc}");
        assert!(backend.calls.is_empty());
    }

    #[test]
    fn oversized_input_gets_qemu_limit_error_then_recovers() {
        let mut session = QmpSession::new(64);
        let mut backend = Recorder::default();
        let big = format!(
            "{{\"execute\": \"{}\"}}\n{{\"execute\": \"qmp_capabilities\"}}",
            "a".repeat(500)
        );
        let out = run(&mut session, &mut backend, &big);
        assert_eq!(
            out,
            [
                Output::Reply(
                    json!({"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}})
                ),
                Output::Reply(json!({"return": {}}))
            ]
        );
    }

    #[test]
    fn encoding_matches_qemu_spacing() {
        let message = json!({"return": {"a": [1, 2], "b": "x\"y"}, "id": null});
        assert_eq!(
            encode_message(&message),
            b"{\"id\": null, \"return\": {\"a\": [1, 2], \"b\": \"x\\\"y\"}}\n"
        );
    }

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::sample::select(vec![
                r#"{"execute": "qmp_capabilities"}"#,
                r#"{"execute": "stop", "id": [1, {"x": "}"}]}"#,
                r#"{"execute": "cont"}"#,
                r#"{"execute": "query-status", "arguments": {"x": 1}}"#,
                r#"{"execute": "system_reset"}"#,
                r#"{"execute": "qom-get", "arguments": {"path": "/", "property": "type"}}"#,
                "{\"execute\": \"quer",
                "\"\\\"",
                "}]{[,:",
                "\n",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any input in any chunking never panics, and every reply is one object with
        /// exactly one of `return` / `error` (plus an optional `id`).
        #[test]
        fn arbitrary_input_yields_well_formed_replies(
            fragments in prop::collection::vec(fragment(), 0..24),
            limit in 16usize..256,
        ) {
            let mut session = QmpSession::new(limit);
            let mut backend = Recorder::default();
            let mut out = Vec::new();
            for fragment in &fragments {
                session.handle_input(fragment, &mut backend, &mut out);
                prop_assert!(session.pending_input() <= limit);
            }
            for output in &out {
                if let Output::Reply(Value::Object(map)) = output {
                    let kinds = usize::from(map.contains_key("return")) + usize::from(map.contains_key("error"));
                    prop_assert_eq!(kinds, 1);
                    prop_assert!(map.keys().all(|k| k == "return" || k == "error" || k == "id"));
                    let line = encode_message(&Value::Object(map.clone()));
                    prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
                } else if let Output::Reply(other) = output {
                    prop_assert!(false, "reply is not an object: {}", other);
                }
            }
        }
    }
}
