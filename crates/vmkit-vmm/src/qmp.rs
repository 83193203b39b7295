//! The QMP control socket wired to a running VM: vmkit-qmp's server with a backend that drives
//! the run-state machine, the exit counters and the object tree.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use vmkit_object::ObjectTree;
use vmkit_qmp::{
    CpuInfoFast, CpuProps, QmpBackend, QmpError, QmpEvent, QmpEventSender, QmpServer,
    RunState as QmpRunState, ShutdownCause, StatusInfo,
};

use crate::control::{ExitReason, MachineEvent, RunState};
use crate::error::{Error, Result};
use crate::runtime::{MachineEventObserver, MainLoopAdditions, MainLoopSubscriber, VmmHandle};

/// The VM as QMP commands see it. The handle is filled in when the VM starts; the server
/// serves no command before that.
struct VmmBackend {
    handle: Arc<OnceLock<VmmHandle>>,
    migration: Arc<OnceLock<Arc<crate::migration::MachineMigration>>>,
    tree: Option<ObjectTree>,
    power_button: Option<PowerButton>,
}

/// Presses the machine's ACPI power button.
pub type PowerButton = Arc<dyn Fn() + Send + Sync>;

impl VmmBackend {
    fn vm(&self) -> std::result::Result<&VmmHandle, QmpError> {
        self.handle
            .get()
            .ok_or_else(|| QmpError::generic("the VM is not started yet"))
    }
}

fn qmp_error(e: Error) -> QmpError {
    QmpError::generic(e.to_string())
}

impl QmpBackend for VmmBackend {
    fn query_status(&mut self) -> StatusInfo {
        if let Some(m) = self.migration.get() {
            if m.is_incoming() {
                return StatusInfo::new(QmpRunState::InMigrate);
            }
            if m.is_migrated() {
                return StatusInfo::new(QmpRunState::PostMigrate);
            }
        }
        let state = match self.handle.get().map(|vm| vm.controller().state()) {
            None | Some(RunState::Prelaunch) => QmpRunState::Prelaunch,
            Some(RunState::Running) => QmpRunState::Running,
            Some(RunState::Paused) => QmpRunState::Paused,
            Some(RunState::Debug) => QmpRunState::Debug,
            Some(RunState::Shutdown) => QmpRunState::Shutdown,
            Some(RunState::InternalError) => QmpRunState::InternalError,
        };
        StatusInfo::new(state)
    }

    fn stop(&mut self) -> std::result::Result<(), QmpError> {
        self.vm()?.controller().pause().map_err(qmp_error)
    }

    fn cont(&mut self) -> std::result::Result<(), QmpError> {
        let vm = self.vm()?;
        if let Some(m) = self.migration.get() {
            // Devices a migration paused go on with the guest.
            m.resume_devices();
        }
        vm.controller().resume().map_err(qmp_error)
    }

    fn system_reset(&mut self) -> std::result::Result<(), QmpError> {
        self.vm()?.system_reset().map_err(qmp_error)
    }

    fn system_powerdown(&mut self) -> std::result::Result<(), QmpError> {
        self.vm()?;
        match &self.power_button {
            // As QEMU's: the button is pressed; whether the guest powers off is its business.
            Some(press) => {
                press();
                Ok(())
            }
            None => Err(QmpError::generic(
                "system_powerdown is not supported: this machine has no ACPI power button",
            )),
        }
    }

    fn quit(&mut self) {
        if let Some(vm) = self.handle.get() {
            vm.controller()
                .shutdown(ExitReason::HostRequest("QMP quit".into()));
        }
    }

    fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast> {
        let Some(vm) = self.handle.get() else {
            return Vec::new();
        };
        vm.vcpu_thread_ids()
            .into_iter()
            .enumerate()
            .map(|(index, tid)| CpuInfoFast {
                cpu_index: index as u64,
                qom_path: format!("/machine/unattached/device[{index}]"),
                thread_id: i64::from(tid),
                props: CpuProps {
                    node_id: None,
                    socket_id: Some(0),
                    die_id: Some(0),
                    core_id: Some(index as u64),
                    thread_id: Some(0),
                },
            })
            .collect()
    }

    fn query_exits(&mut self) -> Value {
        let Some(vm) = self.handle.get() else {
            return json!({});
        };
        let stats = vm.exit_stats();
        let vcpus: Vec<Value> = stats
            .per_vcpu
            .iter()
            .enumerate()
            .map(|(index, counts)| {
                let exits: serde_json::Map<String, Value> = counts
                    .iter()
                    .map(|(kind, n)| ((*kind).to_string(), json!(n)))
                    .collect();
                json!({"cpu-index": index, "exits": exits})
            })
            .collect();
        let bus = |bus: &vmkit_bus::BusStats| {
            json!({
                "accesses": bus.accesses,
                "unassigned-reads": bus.unassigned_reads,
                "unassigned-writes": bus.unassigned_writes,
                "split": bus.split,
                "ranges": bus.ranges.iter().map(|r| json!({
                    "name": r.name.to_string(),
                    "base": r.base,
                    "last": r.last,
                    "reads": r.reads,
                    "writes": r.writes,
                })).collect::<Vec<_>>(),
            })
        };
        json!({"vcpus": vcpus, "pio": bus(&stats.pio), "mmio": bus(&stats.mmio)})
    }

    fn migrate(&mut self, uri: &str) -> std::result::Result<(), QmpError> {
        self.vm()?;
        let m = self
            .migration
            .get()
            .ok_or_else(|| QmpError::generic("this machine cannot be migrated"))?;
        m.start_outgoing(uri).map_err(qmp_error)
    }

    fn query_migrate(&mut self) -> Value {
        self.migration
            .get()
            .map_or_else(|| json!({}), |m| m.info().to_json())
    }

    fn migrate_incoming(&mut self, uri: &str) -> std::result::Result<(), QmpError> {
        let m = self
            .migration
            .get()
            .ok_or_else(|| QmpError::generic("this machine cannot be migrated"))?;
        m.start_incoming(uri).map_err(qmp_error)
    }

    fn migrate_cancel(&mut self) -> std::result::Result<(), QmpError> {
        if let Some(m) = self.migration.get() {
            m.cancel();
        }
        Ok(())
    }

    fn migrate_set_parameters(
        &mut self,
        params: &vmkit_qmp::MigrationParameters,
    ) -> std::result::Result<(), QmpError> {
        let m = self
            .migration
            .get()
            .ok_or_else(|| QmpError::generic("this machine cannot be migrated"))?;
        m.set_parameters(params.downtime_limit, params.max_bandwidth)
            .map_err(QmpError::generic)
    }

    fn query_migrate_parameters(&mut self) -> Value {
        self.migration
            .get()
            .map_or_else(|| serde_json::json!({}), |m| m.parameters())
    }

    fn object_tree(&self) -> Option<&ObjectTree> {
        self.tree.as_ref()
    }

    fn set_link(&mut self, name: &str, up: bool) -> std::result::Result<(), QmpError> {
        let links = self.tree.as_ref().map(nic_links).unwrap_or_default();
        // As QEMU: a NIC's id or its netdev's id; every NIC on that netdev follows.
        let matching: Vec<_> = links
            .into_iter()
            .filter(|(id, netdev, _)| id == name || netdev == name)
            .collect();
        if matching.is_empty() {
            return Err(QmpError::device_not_found(format!(
                "Device '{name}' not found"
            )));
        }
        for (_, _, link) in matching {
            link.set_up(up);
        }
        Ok(())
    }
}

/// Every NIC in the tree: (its id, its netdev id, its link).
fn nic_links(tree: &ObjectTree) -> Vec<(String, String, vmkit_net::NetLink)> {
    let mut links = Vec::new();
    for container in ["/machine/peripheral", "/machine/peripheral-anon"] {
        let Ok(children) = tree.list(container) else {
            continue;
        };
        for child in children
            .iter()
            .filter(|c| c.type_name.starts_with("child<"))
        {
            let Ok(object) = tree.resolve(&format!("{container}/{}", child.name)) else {
                continue;
            };
            if let Some((link, netdev)) = vmkit_pc::pci_devices::net_link(&object) {
                let id = if container == "/machine/peripheral" {
                    child.name.clone()
                } else {
                    String::new()
                };
                links.push((id, netdev, link));
            }
        }
    }
    links
}

/// A bound QMP socket, ready to join a VM's main loop.
pub struct QmpAttachment {
    server: Arc<Mutex<QmpServer>>,
    migration: Arc<OnceLock<Arc<crate::migration::MachineMigration>>>,
    handle: Arc<OnceLock<VmmHandle>>,
    events: QmpEventSender,
    no_reboot: bool,
}

impl std::fmt::Debug for QmpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpAttachment").finish_non_exhaustive()
    }
}

impl QmpAttachment {
    /// Binds the socket at `path` (owner-only permissions; removed when the VM ends).
    pub fn bind(
        path: &Path,
        tree: Option<ObjectTree>,
        no_reboot: bool,
        power_button: Option<PowerButton>,
    ) -> Result<Self> {
        let handle = Arc::new(OnceLock::new());
        let migration = Arc::new(OnceLock::new());
        let backend = VmmBackend {
            handle: Arc::clone(&handle),
            migration: Arc::clone(&migration),
            tree,
            power_button,
        };
        let server = QmpServer::bind(path, Box::new(backend))
            .map_err(|e| Error::Machine(format!("vmkit: -qmp unix:{}: {e}", path.display())))?;
        let events = server.event_sender();
        Ok(Self {
            server: Arc::new(Mutex::new(server)),
            migration,
            handle,
            events,
            no_reboot,
        })
    }

    /// Gives `migrate`, `query-migrate` and `migrate-incoming` their machine.
    pub fn set_migration(&self, migration: Arc<crate::migration::MachineMigration>) {
        let _ = self.migration.set(migration);
    }

    /// Sends events to the clients (e.g. MIGRATION).
    pub fn event_sender(&self) -> QmpEventSender {
        self.events.clone()
    }

    /// Blocks until a client connects (`wait=on`), or a termination signal arrives
    /// ([`Error::Terminated`]).
    pub fn wait_for_client(&self) -> Result<()> {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(signal) = crate::signals::termination_requested() {
                return Err(Error::Terminated(signal));
            }
            let connected = server
                .wait_for_client(Some(crate::signals::POLL_INTERVAL))
                .map_err(|e| {
                    Error::Machine(format!("vmkit: -qmp: waiting for a client failed: {e}"))
                })?;
            if connected {
                return Ok(());
            }
        }
    }

    /// Adds the server to `additions`: it joins the main loop, and guest resets and exits
    /// become QMP events.
    pub fn attach(self, additions: &mut MainLoopAdditions) {
        let Self {
            server,
            migration: _,
            handle,
            events,
            no_reboot,
        } = self;
        additions.extensions.push(Box::new(move |vm: &VmmHandle| {
            let _ = handle.set(vm.clone());
            vec![server as MainLoopSubscriber]
        }));
        let observer: MachineEventObserver = Box::new(move |event: &MachineEvent| {
            let qmp_event = match event {
                MachineEvent::Reset if no_reboot => QmpEvent::Shutdown(ShutdownCause::GuestReset),
                MachineEvent::Reset => QmpEvent::Reset(ShutdownCause::GuestReset),
                MachineEvent::Exit(ExitReason::DebugExit { .. } | ExitReason::PowerOff) => {
                    QmpEvent::Shutdown(ShutdownCause::GuestShutdown)
                }
                MachineEvent::Exit(ExitReason::ResetWithNoReboot) => {
                    QmpEvent::Shutdown(ShutdownCause::GuestReset)
                }
                MachineEvent::Exit(ExitReason::InternalError(_)) => {
                    QmpEvent::Shutdown(ShutdownCause::HostError)
                }
                MachineEvent::Exit(ExitReason::HostRequest(why)) if why.contains("signal") => {
                    QmpEvent::Shutdown(ShutdownCause::HostSignal)
                }
                MachineEvent::Exit(ExitReason::HostRequest(_)) => return,
            };
            // After the VM ended the server may be gone: nothing left to tell.
            let _ = events.send(qmp_event);
        });
        additions.observers.push(observer);
    }
}
