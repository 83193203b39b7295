//! The trait a VMM implements so QMP commands can act on it.

use serde_json::Value;
use vmkit_object::ObjectTree;

use crate::protocol::{CpuInfoFast, MigrationParameters, QmpError, StatusInfo};

/// What QMP commands do to the VMM. The VMM implements it; the server calls it from the
/// main-loop thread, one command at a time. Object-safe: the server holds a
/// `Box<dyn QmpBackend>`.
///
/// Events: the server itself announces the effect of successful state-changing commands
/// (`STOP`, `RESUME`, `RESET`, `POWERDOWN`, `SHUTDOWN`), so implementations must not
/// broadcast those again; guest-caused events go through
/// [`QmpServer::broadcast_event`](crate::QmpServer::broadcast_event) or a
/// [`QmpEventSender`](crate::QmpEventSender).
pub trait QmpBackend: Send {
    /// `query-status`: the current run state.
    fn query_status(&mut self) -> StatusInfo;

    /// `stop`: pause every vCPU, returning once they are paused. Stopping a paused VM
    /// succeeds and changes nothing.
    fn stop(&mut self) -> Result<(), QmpError>;

    /// `cont`: resume the vCPUs, or start them from `prelaunch`. Continuing a running VM
    /// succeeds and changes nothing.
    fn cont(&mut self) -> Result<(), QmpError>;

    /// `system_reset`: reset the machine as the reset button does (the run state is
    /// kept: a paused VM stays paused).
    fn system_reset(&mut self) -> Result<(), QmpError>;

    /// `system_powerdown`: press the power button. The default refuses with the reason a
    /// machine without ACPI has: nothing in the guest would see the press.
    fn system_powerdown(&mut self) -> Result<(), QmpError> {
        Err(QmpError::generic(
            "system_powerdown is not supported: this machine has no ACPI power button; \
             use 'quit' to stop the VMM or 'system_reset' to reset the guest",
        ))
    }

    /// `quit`: end the VMM. Called after the reply and the `SHUTDOWN` event have been
    /// queued (and written, if the client's socket accepted them): the VMM should leave
    /// its main loop soon, not exit the process from inside this call.
    fn quit(&mut self);

    /// `query-cpus-fast`: one record per vCPU.
    fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast>;

    /// `query-exits` (vmkit's own command): VM-exit counts, e.g. per reason and per vCPU
    /// and per port / MMIO range since start. Any JSON value; the default is `{}`.
    fn query_exits(&mut self) -> Value {
        Value::Object(serde_json::Map::new())
    }

    /// `set_link`: sets the link of the NIC or network backend `name` (a `-netdev` id or a
    /// NIC's id) up or down, as QEMU's: the NIC's link status changes and the guest gets
    /// a configuration interrupt. The default knows no NIC: QEMU's `DeviceNotFound`.
    fn set_link(&mut self, name: &str, up: bool) -> Result<(), QmpError> {
        let _ = up;
        Err(QmpError::device_not_found(format!(
            "Device '{name}' not found"
        )))
    }

    /// The QOM composition tree behind `qom-list`, `qom-get`, `qom-set` and (through
    /// [`ObjectTree::registry`]) `qom-list-types`; `None` (the default) makes those
    /// commands fail with a clear error.
    fn object_tree(&self) -> Option<&ObjectTree> {
        None
    }

    /// `migrate`: sends the machine's state to `uri` (`file:PATH`, `unix:PATH`...). Returns
    /// once the migration has started; progress is in [`QmpBackend::query_migrate`].
    fn migrate(&mut self, uri: &str) -> Result<(), QmpError> {
        let _ = uri;
        Err(QmpError::generic("migration is not supported by this VMM"))
    }

    /// `query-migrate`: QEMU's `MigrationInfo` (`{}` before any migration).
    fn query_migrate(&mut self) -> Value {
        serde_json::json!({})
    }

    /// `migrate-incoming`: receives the machine's state from `uri` (after `-incoming defer`).
    fn migrate_incoming(&mut self, uri: &str) -> Result<(), QmpError> {
        let _ = uri;
        Err(QmpError::generic("migration is not supported by this VMM"))
    }

    /// `migrate_cancel`: stops an outgoing migration; the source keeps running.
    fn migrate_cancel(&mut self) -> Result<(), QmpError> {
        Ok(())
    }

    /// `migrate-set-parameters`: takes the given parameters (the rest keep their values);
    /// a value out of range is refused with QEMU's message and nothing changes.
    fn migrate_set_parameters(&mut self, params: &MigrationParameters) -> Result<(), QmpError> {
        let _ = params;
        Err(QmpError::generic("migration is not supported by this VMM"))
    }

    /// `query-migrate-parameters`: QEMU's `MigrationParameters` (the ones the VMM has).
    fn query_migrate_parameters(&mut self) -> Value {
        serde_json::json!({})
    }
}
