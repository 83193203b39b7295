//! The values QMP puts on the wire: errors, events, and the records the query commands
//! return, each with the JSON shape QEMU gives it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// The QEMU version triple vmkit reports in the greeting and in `query-version`.
///
/// QMP clients (libvirt, the `qemu.qmp` Python package, `qmp-shell`) look at this triple
/// to decide which commands they may use; some refuse a QEMU older than a few releases.
/// vmkit claims 9.0.0, a release whose QMP wire protocol (greeting, negotiation, errors,
/// event shapes, `query-status` with `singlestep`) matches what this crate speaks. The
/// command set is a subset; clients should discover it with `query-commands`.
pub const QEMU_VERSION: (u64, u64, u64) = (9, 0, 0);

/// The `package` string of the greeting and `query-version`: `vmkit <crate version>`.
pub const PACKAGE: &str = concat!("vmkit ", env!("CARGO_PKG_VERSION"));

/// The error classes QMP defines (`QapiErrorClass`). Almost every error is
/// [`GenericError`](ErrorClass::GenericError); the others exist for old clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Everything not listed below.
    GenericError,
    /// The command does not exist (or is not allowed in this negotiation state).
    CommandNotFound,
    /// A device is not active.
    DeviceNotActive,
    /// A device or an object path was not found.
    DeviceNotFound,
    /// KVM lacks a capability the command needs.
    KvmMissingCap,
}

impl ErrorClass {
    /// The class name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KvmMissingCap => "KVMMissingCap",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command failure as QMP reports it: `{"error": {"class": ..., "desc": ...}}`.
///
/// This is protocol data that a [`QmpBackend`](crate::QmpBackend) returns and a client
/// reads, not a failure of this crate's own operations (those are [`Error`](crate::Error)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    /// The error class.
    pub class: ErrorClass,
    /// A human-readable description (QEMU's text where QEMU has one).
    pub desc: String,
}

impl QmpError {
    /// A `GenericError` with `desc`.
    pub fn generic(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// A `CommandNotFound` error with `desc`.
    pub fn command_not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::CommandNotFound,
            desc: desc.into(),
        }
    }

    /// A `DeviceNotFound` error with `desc`.
    pub fn device_not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::DeviceNotFound,
            desc: desc.into(),
        }
    }

    /// The `{"class", "desc"}` object that goes under `"error"`.
    pub fn to_json(&self) -> Value {
        json!({ "class": self.class.as_str(), "desc": self.desc })
    }
}

/// The run states `query-status` reports (QEMU's `RunState`, the ones a KVM VMM reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// vCPUs are running.
    Running,
    /// Paused by `stop` (or a debugger).
    Paused,
    /// Created but not started yet (`-S`, or waiting for a QMP client).
    Prelaunch,
    /// The guest shut down and the VMM keeps it stopped.
    Shutdown,
    /// A vCPU hit an error KVM could not handle (emulation failure and the like).
    InternalError,
    /// The guest reported a panic.
    GuestPanicked,
    /// Stopped by the gdb stub (a breakpoint, a step, Ctrl-C).
    Debug,
    /// Waiting for an incoming migration (`-incoming`).
    InMigrate,
    /// Migrated away: the source stays stopped.
    PostMigrate,
}

impl RunState {
    /// The state name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Prelaunch => "prelaunch",
            RunState::Shutdown => "shutdown",
            RunState::InternalError => "internal-error",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Debug => "debug",
            RunState::InMigrate => "inmigrate",
            RunState::PostMigrate => "postmigrate",
        }
    }
}

/// What `query-status` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusInfo {
    /// The run state; `running` on the wire is `state == Running`.
    pub state: RunState,
}

impl StatusInfo {
    /// A status in `state`.
    pub fn new(state: RunState) -> Self {
        StatusInfo { state }
    }

    /// Whether the vCPUs run.
    pub fn running(&self) -> bool {
        self.state == RunState::Running
    }

    /// `{"running": bool, "singlestep": false, "status": "<state>"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "running": self.running(),
            "singlestep": false,
            "status": self.state.as_str(),
        })
    }
}

/// The topology properties of one vCPU (QEMU's `CpuInstanceProperties`); absent ones are
/// left out of the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuProps {
    /// NUMA node.
    pub node_id: Option<u64>,
    /// Socket.
    pub socket_id: Option<u64>,
    /// Die within the socket.
    pub die_id: Option<u64>,
    /// Core within the die.
    pub core_id: Option<u64>,
    /// Thread within the core.
    pub thread_id: Option<u64>,
}

impl CpuProps {
    /// The `props` object.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        let fields = [
            ("node-id", self.node_id),
            ("socket-id", self.socket_id),
            ("die-id", self.die_id),
            ("core-id", self.core_id),
            ("thread-id", self.thread_id),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                map.insert(name.into(), value.into());
            }
        }
        Value::Object(map)
    }
}

/// One element of `query-cpus-fast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfoFast {
    /// The vCPU index (`-smp` order).
    pub cpu_index: u64,
    /// The vCPU's QOM path (`/machine/unattached/device[0]`).
    pub qom_path: String,
    /// The host thread id (`gettid()`) of the vCPU thread.
    pub thread_id: i64,
    /// Topology.
    pub props: CpuProps,
}

impl CpuInfoFast {
    /// `{"cpu-index", "qom-path", "thread-id", "props", "target": "x86_64"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "cpu-index": self.cpu_index,
            "qom-path": self.qom_path,
            "thread-id": self.thread_id,
            "props": self.props.to_json(),
            "target": "x86_64",
        })
    }
}

/// Why the guest stopped or reset (QEMU's `ShutdownCause`), carried by
/// [`QmpEvent::Shutdown`] and [`QmpEvent::Reset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownCause {
    /// The VMM hit an error.
    HostError,
    /// The QMP `quit` command.
    HostQmpQuit,
    /// The QMP `system_reset` command.
    HostQmpSystemReset,
    /// A signal (SIGTERM, SIGINT...) to the VMM.
    HostSignal,
    /// The user interface (a window closed).
    HostUi,
    /// The guest powered itself off (ACPI, port write).
    GuestShutdown,
    /// The guest reset itself (triple fault, port 0xCF9, keyboard controller).
    GuestReset,
    /// The guest panicked.
    GuestPanic,
    /// A subsystem asked for a reset.
    SubsystemReset,
}

impl ShutdownCause {
    /// The `reason` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownCause::HostError => "host-error",
            ShutdownCause::HostQmpQuit => "host-qmp-quit",
            ShutdownCause::HostQmpSystemReset => "host-qmp-system-reset",
            ShutdownCause::HostSignal => "host-signal",
            ShutdownCause::HostUi => "host-ui",
            ShutdownCause::GuestShutdown => "guest-shutdown",
            ShutdownCause::GuestReset => "guest-reset",
            ShutdownCause::GuestPanic => "guest-panic",
            ShutdownCause::SubsystemReset => "subsystem-reset",
        }
    }

    /// Whether the guest caused it (the event's `guest` member).
    pub fn is_guest(self) -> bool {
        matches!(
            self,
            ShutdownCause::GuestShutdown | ShutdownCause::GuestReset | ShutdownCause::GuestPanic
        )
    }
}

/// An asynchronous event sent to every client in command mode.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpEvent {
    /// The vCPUs stopped.
    Stop,
    /// The vCPUs resumed.
    Resume,
    /// The machine was reset.
    Reset(ShutdownCause),
    /// The machine shut down (the VMM may exit or, with `-no-shutdown`, stay stopped).
    Shutdown(ShutdownCause),
    /// A power-button press was sent to the guest.
    Powerdown,
    /// Any other event, for VMM-specific extensions.
    Custom {
        /// The event name (QEMU style: upper case with underscores).
        name: String,
        /// The `data` member, if any.
        data: Option<Value>,
    },
}

impl QmpEvent {
    /// The event name on the wire.
    pub fn name(&self) -> &str {
        match self {
            QmpEvent::Stop => "STOP",
            QmpEvent::Resume => "RESUME",
            QmpEvent::Reset(_) => "RESET",
            QmpEvent::Shutdown(_) => "SHUTDOWN",
            QmpEvent::Powerdown => "POWERDOWN",
            QmpEvent::Custom { name, .. } => name,
        }
    }

    /// The `data` member, if the event has one.
    pub fn data(&self) -> Option<Value> {
        match self {
            QmpEvent::Reset(cause) | QmpEvent::Shutdown(cause) => {
                Some(json!({ "guest": cause.is_guest(), "reason": cause.as_str() }))
            }
            QmpEvent::Custom { data, .. } => data.clone(),
            QmpEvent::Stop | QmpEvent::Resume | QmpEvent::Powerdown => None,
        }
    }

    /// The full event message stamped with the current wall-clock time.
    pub fn to_json(&self) -> Value {
        self.to_json_at(SystemTime::now())
    }

    /// The full event message stamped with `time`:
    /// `{"event", "data"?, "timestamp": {"seconds", "microseconds"}}`.
    pub fn to_json_at(&self, time: SystemTime) -> Value {
        // A clock before 1970 is reported as the epoch rather than failing.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut map = Map::new();
        map.insert("event".into(), Value::String(self.name().to_owned()));
        if let Some(data) = self.data() {
            map.insert("data".into(), data);
        }
        map.insert(
            "timestamp".into(),
            json!({
                "seconds": since_epoch.as_secs(),
                "microseconds": since_epoch.subsec_micros(),
            }),
        );
        Value::Object(map)
    }
}

/// The `query-version` record: `{"qemu": {"major", "minor", "micro"}, "package"}`.
pub fn version_json() -> Value {
    let (major, minor, micro) = QEMU_VERSION;
    json!({
        "qemu": { "major": major, "minor": minor, "micro": micro },
        "package": PACKAGE,
    })
}

/// The greeting sent on connect: `{"QMP": {"version": ..., "capabilities": []}}`.
///
/// No capability is offered: out-of-band execution (`oob`) needs a monitor I/O thread,
/// which this server does not have.
pub fn greeting_json() -> Value {
    json!({ "QMP": { "version": version_json(), "capabilities": [] } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn event_shapes_follow_qemu() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(
            QmpEvent::Stop.to_json_at(at),
            json!({"event": "STOP", "timestamp": {"seconds": 1_700_000_000u64, "microseconds": 123_456}})
        );
        let reset = QmpEvent::Reset(ShutdownCause::GuestReset).to_json_at(at);
        assert_eq!(
            reset["data"],
            json!({"guest": true, "reason": "guest-reset"})
        );
        let quit = QmpEvent::Shutdown(ShutdownCause::HostQmpQuit).to_json_at(at);
        assert_eq!(
            quit["data"],
            json!({"guest": false, "reason": "host-qmp-quit"})
        );
        assert_eq!(quit["event"], "SHUTDOWN");
        // Before the epoch: clamped, not a panic.
        let early = QmpEvent::Powerdown.to_json_at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(early["timestamp"]["seconds"], 0);
    }

    #[test]
    fn records_have_qemu_member_names() {
        let cpu = CpuInfoFast {
            cpu_index: 1,
            qom_path: "/machine/unattached/device[1]".into(),
            thread_id: 4242,
            props: CpuProps {
                socket_id: Some(0),
                core_id: Some(1),
                thread_id: Some(0),
                ..CpuProps::default()
            },
        };
        assert_eq!(
            cpu.to_json(),
            json!({"cpu-index": 1, "qom-path": "/machine/unattached/device[1]", "thread-id": 4242,
                   "props": {"socket-id": 0, "core-id": 1, "thread-id": 0}, "target": "x86_64"})
        );
        assert_eq!(
            StatusInfo::new(RunState::Prelaunch).to_json(),
            json!({"running": false, "singlestep": false, "status": "prelaunch"})
        );
        assert_eq!(
            greeting_json()["QMP"]["version"]["qemu"],
            json!({"major": 9, "minor": 0, "micro": 0})
        );
        assert_eq!(
            QmpError::command_not_found("x").to_json(),
            json!({"class": "CommandNotFound", "desc": "x"})
        );
    }
}

/// `migrate-set-parameters`' arguments this crate knows, as QEMU names them; a parameter
/// the command did not give is `None`. Values are checked as QEMU's QAPI visitor checks a
/// `uint64` (any JSON integer, a negative one taken modulo 2^64); ranges are the
/// backend's to check (QEMU's `migrate_params_check`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationParameters {
    /// `downtime-limit`: the longest the guest may be stopped at the end, in ms.
    pub downtime_limit: Option<u64>,
    /// `max-bandwidth`: the migration stream's rate limit, in bytes per second.
    pub max_bandwidth: Option<u64>,
}

impl MigrationParameters {
    /// Reads the parameters from a command's arguments (QEMU's messages for a value that
    /// is not an unsigned 64-bit integer).
    pub fn from_args(args: &serde_json::Map<String, serde_json::Value>) -> Result<Self, QmpError> {
        let uint64 = |name: &str| -> Result<Option<u64>, QmpError> {
            match args.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_i64().map(|i| i as u64))
                    .map(Some)
                    .ok_or_else(|| QmpError::generic(format!("Parameter '{name}' expects uint64"))),
            }
        };
        Ok(Self {
            downtime_limit: uint64("downtime-limit")?,
            max_bandwidth: uint64("max-bandwidth")?,
        })
    }
}
