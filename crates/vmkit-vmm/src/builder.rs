//! From options to a running `pc` machine: the library form of what the `vmkit` binary does.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vmkit_bus::PioRange;
use vmkit_chardev::{Chardev, ChardevInput};
use vmkit_hw::IrqLine;
use vmkit_isa::{SerialBackend, SerialHandle, UserspacePic};
use vmkit_kvm::KvmSystem;
use vmkit_pc::{
    BootSource, CpuModel, FirmwareLinux, FlatMode, LinuxBoot, MemoryLayout, PcConfig, PcMachine,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::builtin::{builtin_message, BUILTIN_CODE, BUILTIN_ENTRY, BUILTIN_MESSAGE_ADDR};
use crate::cli::{IrqchipOption, Options, SerialOption};
use crate::console::SerialInput;
use crate::control::{Controller, ControllerEvents};
use crate::error::{Error, Result};
use crate::runtime::{MachineParts, MainLoopAdditions, RunOptions, SetWaker, Vmm};
use crate::timer::HostTimer;
use crate::vcpu::InterruptController;

/// RAM of the built-in guest's machine.
pub const BUILTIN_RAM: u64 = 16 << 20;

/// The options `vmkit` uses with no arguments: the built-in guest on COM1, ended by its
/// i8042 reset under `-no-reboot`.
pub fn builtin_options() -> (Options, BootSource) {
    let mut image = BUILTIN_CODE.to_vec();
    image.resize((BUILTIN_MESSAGE_ADDR - BUILTIN_ENTRY) as usize, 0);
    image.extend_from_slice(&builtin_message());
    let options = Options {
        ram_size: BUILTIN_RAM,
        no_reboot: true,
        ..Options::default()
    };
    let boot = BootSource::Flat {
        image,
        addr: BUILTIN_ENTRY,
        entry: BUILTIN_ENTRY,
        mode: FlatMode::Real,
    };
    (options, boot)
}

/// Where the boot source comes from when options name one (`-kernel`, `-bios`, `-flat`).
///
/// A Linux kernel is read and checked here, before any KVM setup: a missing or corrupt
/// file, a command line over the kernel's limit, or a kernel or initrd that does not fit in
/// `-m` RAM is reported with the file and the limit.
pub fn boot_source(options: &Options) -> Result<BootSource> {
    if let Some(kernel) = options.kernel.as_ref().filter(|_| options.bios.is_none()) {
        let decompress = options.kernel_decompress;
        let fail = |e: vmkit_pc::Error| Error::Machine(format!("vmkit: {e}"));
        let linux = LinuxBoot::from_files_within(
            kernel,
            options.initrd.as_deref(),
            options.append.as_deref().unwrap_or_default(),
            decompress,
            options.ram_size,
        )
        .map_err(fail)?;
        linux
            .plan(&MemoryLayout::new(options.ram_size).map_err(fail)?)
            .map_err(fail)?;
        return Ok(BootSource::Linux(Box::new(linux)));
    }
    if let Some(path) = &options.bios {
        return Ok(BootSource::FirmwareFile(path.clone()));
    }
    if let Some(flat) = &options.flat {
        return BootSource::flat_file(
            &flat.path,
            flat.addr,
            flat.entry,
            flat.mode,
            options.ram_size,
        )
        .map_err(|e| Error::Machine(format!("vmkit: -flat: {e}")));
    }
    Err(Error::Machine(
        "vmkit: nothing to run: give -kernel FILE, -bios FILE or -flat FILE (or no options for \
         the built-in guest)"
            .into(),
    ))
}

/// An interrupt line that writes an eventfd on each rising edge (for epoll).
struct EventFdLine {
    fd: EventFd,
    level: AtomicBool,
}

impl IrqLine for EventFdLine {
    fn set_level(&self, high: bool) {
        let was_high = self.level.swap(high, Ordering::AcqRel);
        if high && !was_high {
            let _ = self.fd.write(1);
        }
    }
}

struct SerialConsoleInput(SerialHandle);

impl SerialInput for SerialConsoleInput {
    fn enqueue(&mut self, bytes: &[u8]) -> usize {
        self.0.enqueue_input(bytes)
    }
}

struct PicInput(Arc<UserspacePic>);

impl InterruptController for PicInput {
    fn interrupt_pending(&self) -> bool {
        self.0.intr_pending()
    }

    fn acknowledge(&self) -> Option<u8> {
        self.0.acknowledge()
    }
}

/// Extra devices a library user puts on the port bus before the machine starts.
pub type ExtraPioDevice = (PioRange, String, Arc<vmkit_bus::PioDevice>);

/// Builds the `pc` machine for `options` running `boot`, and starts it.
pub fn start_pc(
    options: &Options,
    boot: BootSource,
    run: RunOptions,
    extra_pio: Vec<ExtraPioDevice>,
) -> Result<Vmm> {
    let kvm = KvmSystem::open()?;
    let controller = Arc::new(Controller::new()?);
    // Before anything waits for a client: a signal then ends vmkit cleanly too.
    if run.handle_signals {
        crate::signals::install_termination_handler().map_err(|source| Error::Host {
            what: "installing the SIGINT/SIGTERM/SIGHUP handlers",
            source,
        })?;
    }

    let room_fd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    let chardevs = open_chardevs(options)?;
    let SerialWiring {
        backends,
        inputs,
        com1,
    } = wire_serial_backends(options, &chardevs, &room_fd)?;
    let stdio_console = options.serial == SerialOption::Stdio;
    let config = pc_config(options, boot, backends, com1)?;
    let mut machine = PcMachine::build(
        &kvm,
        config,
        Arc::new(ControllerEvents(Arc::clone(&controller))),
    )
    .map_err(|e| Error::Machine(format!("vmkit: {e}")))?;
    for (range, name, device) in extra_pio {
        machine
            .pio
            .insert(range, name, device)
            .map_err(|e| Error::Machine(format!("vmkit: {e}")))?;
    }

    let migration = crate::migration::MachineMigration::for_pc(
        &kvm,
        Arc::clone(&controller),
        &machine,
        options.smp,
        options.irqchip == IrqchipOption::Kernel,
    )?;
    if options.incoming.is_some() {
        // `inmigrate` from the first QMP command on (QMP is served before the incoming
        // thread starts).
        migration.set_deferred();
    }

    let timer = Arc::new(HostTimer::new(machine.clock)?);
    let notify_timer = Arc::clone(&timer);
    machine
        .timers
        .set_notifier(Arc::new(move |deadline| notify_timer.arm_at(deadline)));
    let timers = machine.timers.clone();

    let console_input = if stdio_console {
        let handle = machine
            .isa
            .serial_handle(0)
            .map_err(|e| Error::Machine(format!("vmkit: COM1: {e}")))?;
        Some((
            Box::new(SerialConsoleInput(handle)) as Box<dyn SerialInput>,
            room_fd,
        ))
    } else {
        None
    };

    let memory = machine.guest_memory().clone();
    let machine_tree = machine.tree.clone();
    let drives = vmkit_pc::pci_devices::block_shutdown_handles(&machine.tree);
    let reset_cpu = machine.reset_cpu_fn();
    let pic = machine.pic.clone();
    // QMP: bind before the guest starts; with wait=on, hold it until a client connects.
    let qmp = bind_qmp(options, &machine, &migration)?;
    // -gdb: bind before the guest starts, as QEMU; serve once the VM exists.
    let gdb = match &options.gdb {
        Some(addr) => {
            let listener = vmkit_gdb::GdbListener::bind(addr.clone())
                .map_err(|e| Error::Machine(format!("vmkit: {e}")))?;
            Some(listener)
        }
        None => None,
    };
    let mut parts = MachineParts {
        vcpus: std::mem::take(&mut machine.vcpus),
        pio: machine.pio.clone(),
        mmio: machine.mmio.clone(),
        interrupt_controller: pic
            .clone()
            .map(|pic| Arc::new(PicInput(pic)) as Arc<dyn InterruptController>),
        reset_cpu: Arc::new(move |vcpu, index| reset_cpu(vcpu, index).map_err(|e| e.to_string())),
        reset_devices: Box::new(machine.reset_devices_fn()),
        service_timers: Box::new(move || timers.service()),
        timer,
        console_input,
        memory: Arc::new(GuestRam(memory)),
        set_boot_cpu_waker: pic.map(|pic| {
            Box::new(move |waker: crate::runtime::Waker| pic.set_waker(waker)) as SetWaker
        }),
        // Dropped after the vCPUs stop: requests in flight finish and the drives are
        // flushed before vmkit exits (QEMU's bdrv_drain_all + bdrv_close_all).
        keep_alive: vec![Box::new(machine), Box::new(DrainDrives(drives))],
    };
    let mut additions = MainLoopAdditions::default();
    attach_chardev_inputs(&machine_tree, &options.serial, inputs, &mut additions)?;
    if let Some(qmp) = qmp {
        qmp.attach(&mut additions);
    }
    if let Some(listener) = gdb {
        crate::debug::attach_gdb(listener, &mut parts, &mut additions);
    }
    // -incoming: `inmigrate` from the first QMP reply on (the main loop serves QMP as soon
    // as the machine starts).
    let incoming_uri = match &options.incoming {
        Some(uri) => {
            let uri = crate::migration::MigrationUri::parse(uri)?;
            migration.set_stay_paused(options.start_paused);
            migration.set_deferred();
            Some(uri)
        }
        None => None,
    };
    let vmm = Vmm::start_with(
        controller,
        parts,
        RunOptions {
            no_reboot: options.no_reboot,
            start_paused: options.start_paused || options.incoming.is_some(),
            stdin_console: run.stdin_console && stdio_console,
            handle_signals: run.handle_signals,
        },
        additions,
    )?;
    if let Some(uri) = incoming_uri {
        start_incoming(uri, &migration)?;
    }
    Ok(vmm)
}

/// The serial backends of the `-chardev`s (each with a room line for flow control), the
/// chardevs with input for the main loop, and COM1's backend as `-serial` says.
struct SerialWiring {
    backends: Vec<(String, SerialBackend)>,
    inputs: Vec<(String, Arc<Chardev>, EventFd)>,
    com1: Option<SerialBackend>,
}

fn wire_serial_backends(
    options: &Options,
    chardevs: &[(String, Arc<Chardev>)],
    room_fd: &EventFd,
) -> Result<SerialWiring> {
    let mut backends = Vec::new();
    let mut inputs = Vec::new();
    for (id, chardev) in chardevs {
        let room = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        let line = EventFdLine {
            fd: room.try_clone().map_err(Error::EventFd)?,
            level: AtomicBool::new(false),
        };
        let backend = SerialBackend::new(chardev.writer()).with_rx_room(Arc::new(line));
        backends.push((id.clone(), backend));
        if chardev.has_input() {
            inputs.push((id.clone(), Arc::clone(chardev), room));
        }
    }
    let com1 = match &options.serial {
        SerialOption::Chardev(id) => {
            let index = backends.iter().position(|(b, _)| b == id).ok_or_else(|| {
                Error::Machine(format!("vmkit: -serial chardev:{id}: no such -chardev"))
            })?;
            Some(backends.remove(index).1)
        }
        SerialOption::Stdio => {
            let line = EventFdLine {
                fd: room_fd.try_clone().map_err(Error::EventFd)?,
                level: AtomicBool::new(false),
            };
            Some(SerialBackend {
                output: Box::new(std::io::stdout()) as Box<dyn Write + Send>,
                rx_room: Some(Arc::new(line)),
            })
        }
        SerialOption::File(path) => {
            let file = std::fs::File::create(path).map_err(|source| {
                Error::Machine(format!("vmkit: -serial file:{}: {source}", path.display()))
            })?;
            Some(SerialBackend::new(file))
        }
        SerialOption::None => None,
    };
    Ok(SerialWiring {
        backends,
        inputs,
        com1,
    })
}

/// The machine's configuration from the options: CPU model, netdevs and drives opened, a
/// kernel for the firmware, and the device list (debugcon, `-device`, `-drive if=virtio`).
fn pc_config(
    options: &Options,
    boot: BootSource,
    chardevs: Vec<(String, SerialBackend)>,
    com1: Option<SerialBackend>,
) -> Result<PcConfig> {
    let mut netdevs = Vec::new();
    for spec in &options.netdevs {
        let backend = spec
            .open()
            .map_err(|e| Error::Machine(format!("vmkit: -netdev id={}: {e}", spec.id)))?;
        netdevs.push((spec.id.clone(), backend));
    }
    let cpu = CpuModel::parse(&options.cpu.to_text())
        .map_err(|e| Error::Machine(format!("vmkit: -cpu: {e}")))?;
    let firmware_linux = match (&options.kernel, &options.bios) {
        (Some(kernel), Some(_)) => Some(Box::new(
            FirmwareLinux::from_files(
                kernel,
                options.initrd.as_deref(),
                options.append.as_deref().unwrap_or_default(),
                options.ram_size,
            )
            .map_err(|e| Error::Machine(format!("vmkit: {e}")))?,
        )),
        _ => None,
    };
    Ok(PcConfig {
        drives: open_drives(options)?,
        firmware_linux,
        hpet: options.hpet,
        ram_size: options.ram_size,
        smp: options.smp,
        cpu,
        irqchip: options.irqchip,
        boot,
        com1,
        devices: debugcon_device(options)
            .into_iter()
            .chain(options.devices.iter().cloned())
            .chain(virtio_drive_devices(options))
            .collect(),
        chardevs,
        netdevs,
    })
}

/// Binds `-qmp` (and with `wait=on` waits for its client), wired to the machine's tree,
/// power button and migration.
fn bind_qmp(
    options: &Options,
    machine: &PcMachine,
    migration: &Arc<crate::migration::MachineMigration>,
) -> Result<Option<crate::qmp::QmpAttachment>> {
    let Some(qmp) = &options.qmp else {
        return Ok(None);
    };
    let attachment = crate::qmp::QmpAttachment::bind(
        &qmp.path,
        Some(machine.tree.clone()),
        options.no_reboot,
        Some({
            let chipset = Arc::clone(&machine.chipset);
            Arc::new(move || chipset.power_button()) as crate::qmp::PowerButton
        }),
    )?;
    attachment.set_migration(Arc::clone(migration));
    migration.set_event_sender(attachment.event_sender());
    if qmp.wait {
        attachment.wait_for_client()?;
    }
    Ok(Some(attachment))
}

/// `-incoming URI` (not `defer`): receives the machine's state on its own thread.
fn start_incoming(
    uri: crate::migration::MigrationUri,
    migration: &Arc<crate::migration::MachineMigration>,
) -> Result<()> {
    if let crate::migration::MigrationUri::Defer = uri {
        return Ok(());
    }
    let incoming = Arc::clone(migration);
    crate::seccomp::spawn(
        crate::seccomp::ThreadKind::Migration,
        "vmkit-incoming",
        move || {
            let _ = incoming.run_incoming(&uri);
        },
    )
    .map_err(|source| Error::Thread {
        name: "vmkit-incoming".into(),
        source,
    })?;
    Ok(())
}

/// Opens every `-chardev` (and the chardevs `-serial`/`-debugcon` short forms describe)
/// before the guest starts; a server with `wait=on` waits here for its client, as QEMU.
fn open_chardevs(options: &Options) -> Result<Vec<(String, Arc<Chardev>)>> {
    let mut opened = Vec::new();
    for spec in &options.chardevs {
        let chardev =
            Chardev::open_shared(spec).map_err(|e| Error::Machine(format!("vmkit: {e}")))?;
        if chardev.wants_wait() {
            eprintln!(
                "vmkit: waiting for connection on: disconnected:{}",
                chardev.describe()
            );
            wait_for_chardev_client(&chardev)?;
        }
        opened.push((spec.id.clone(), chardev));
    }
    Ok(opened)
}

/// Waits for a `wait=on` chardev's client, or a termination signal ([`Error::Terminated`]).
fn wait_for_chardev_client(chardev: &Chardev) -> Result<()> {
    loop {
        if let Some(signal) = crate::signals::termination_requested() {
            return Err(Error::Terminated(signal));
        }
        match chardev.wait_for_client(Some(crate::signals::POLL_INTERVAL)) {
            Ok(()) => return Ok(()),
            Err(vmkit_chardev::Error::WaitTimeout { .. }) => {}
            Err(e) => return Err(Error::Machine(format!("vmkit: {e}"))),
        }
    }
}

/// Drains and flushes the block devices when dropped (the machine is quitting).
struct DrainDrives(Vec<vmkit_block::BlkShutdown>);

impl Drop for DrainDrives {
    fn drop(&mut self) {
        for drive in &self.0 {
            if let Err(e) = drive.drain_and_flush() {
                eprintln!("vmkit: flushing a drive at exit: {e}");
            }
        }
    }
}

/// Opens every `-drive` before the guest starts (a missing file, or a qcow2 image given
/// without `format=`, ends vmkit here naming the file).
fn open_drives(options: &Options) -> Result<Vec<(String, Arc<dyn vmkit_block::BlockBackend>)>> {
    let mut drives = Vec::new();
    for spec in &options.drives {
        let raw = spec.open().map_err(|e| {
            Error::Machine(format!("vmkit: -drive file={}: {e}", spec.file.display()))
        })?;
        let id = spec.id.clone().unwrap_or_default();
        drives.push((id, Arc::new(raw) as Arc<dyn vmkit_block::BlockBackend>));
    }
    Ok(drives)
}

/// `-drive ...,if=virtio`: a `virtio-blk-pci` for each, after the `-device`s, as QEMU
/// creates them.
fn virtio_drive_devices(options: &Options) -> Vec<String> {
    options
        .drives
        .iter()
        .filter(|d| d.interface == vmkit_block::DriveInterface::Virtio)
        .filter_map(|d| d.id.as_ref())
        .map(|id| format!("virtio-blk-pci,drive={id}"))
        .collect()
}

/// `-debugcon ID`: QEMU's `isa-debugcon` at its default port 0xE9 on that chardev.
fn debugcon_device(options: &Options) -> Option<String> {
    options
        .debugcon
        .as_ref()
        .map(|id| format!("isa-debugcon,chardev={id}"))
}

/// Feeds each input-capable chardev to the UART that uses it (COM1 for `-serial`, or an
/// `isa-serial` with `chardev=ID`), through the main loop, with the UART's flow control.
fn attach_chardev_inputs(
    tree: &vmkit_object::ObjectTree,
    serial: &SerialOption,
    inputs: Vec<(String, Arc<Chardev>, EventFd)>,
    additions: &mut MainLoopAdditions,
) -> Result<()> {
    let mut subscribers: Vec<crate::runtime::MainLoopSubscriber> = Vec::new();
    for (id, chardev, room) in inputs {
        let subscriber: crate::runtime::MainLoopSubscriber = match input_of(tree, serial, &id)? {
            Some(InputTarget::Uart(handle)) => Arc::new(std::sync::Mutex::new(ChardevInput::new(
                chardev,
                move |bytes: &[u8]| handle.enqueue_input(bytes),
                room,
            ))),
            Some(InputTarget::Console(input)) => {
                // The console writes the room eventfd itself when it takes bytes again.
                input.set_room_notifier(room.try_clone().map_err(Error::EventFd)?);
                Arc::new(std::sync::Mutex::new(ChardevInput::new(
                    chardev,
                    move |bytes: &[u8]| input.enqueue(bytes),
                    room,
                )))
            }
            None => continue, // an output-only user (isa-debugcon) or none
        };
        subscribers.push(subscriber);
    }
    if !subscribers.is_empty() {
        additions
            .extensions
            .push(Box::new(move |_vm: &crate::runtime::VmmHandle| subscribers));
    }
    Ok(())
}

/// What takes a chardev's input.
enum InputTarget {
    /// A 16550 (COM1 or an `isa-serial`).
    Uart(SerialHandle),
    /// A `virtconsole` port.
    Console(vmkit_virtio::ConsoleInput),
}

/// The UART or console port whose backend is chardev `id`, if any.
fn input_of(
    tree: &vmkit_object::ObjectTree,
    serial: &SerialOption,
    id: &str,
) -> Result<Option<InputTarget>> {
    let fail = |e: &dyn std::fmt::Display| Error::Machine(format!("vmkit: chardev {id}: {e}"));
    if *serial == SerialOption::Chardev(id.to_owned()) {
        let com1 = tree
            .resolve("/machine/peripheral/com1")
            .map_err(|e| fail(&e))?;
        return vmkit_isa::serial_handle(&com1)
            .map(|h| Some(InputTarget::Uart(h)))
            .map_err(|e| fail(&e));
    }
    for container in ["/machine/peripheral", "/machine/peripheral-anon"] {
        let Ok(children) = tree.list(container) else {
            continue;
        };
        for child in children
            .iter()
            .filter(|c| c.type_name.starts_with("child<"))
        {
            let path = format!("{container}/{}", child.name);
            let Ok(object) = tree.resolve(&path) else {
                continue;
            };
            let uses_it = matches!(
                object.get_property("chardev"),
                Ok(vmkit_object::Value::String(ref c)) if c == id
            );
            if uses_it {
                if let Ok(handle) = vmkit_isa::serial_handle(&object) {
                    return Ok(Some(InputTarget::Uart(handle)));
                }
                if let Some(input) = vmkit_pc::pci_devices::console_input(&object) {
                    return Ok(Some(InputTarget::Console(input)));
                }
            }
        }
    }
    Ok(None)
}

/// Guest RAM as diagnostics and the debugger read and write it.
struct GuestRam<M>(M);

impl<M: GuestAddressSpace + Send + Sync> crate::dump::GuestMemoryReader for GuestRam<M> {
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.0.memory().read_slice(buf, GuestAddress(gpa)).is_ok()
    }

    fn write_guest(&self, gpa: u64, data: &[u8]) -> bool {
        // KVM's dirty log does not see the VMM's own writes: pre-copy is told.
        crate::migration::note_vmm_write(gpa, data.len());
        self.0.memory().write_slice(data, GuestAddress(gpa)).is_ok()
    }

    fn compare_exchange(
        &self,
        gpa: u64,
        expected: &[u8],
        new: &[u8],
        current: &mut [u8],
    ) -> Option<bool> {
        fn exchange<const N: usize>(
            memory: &(impl vm_memory::GuestMemory + ?Sized),
            gpa: u64,
            expected: &[u8],
            new: &[u8],
            current: &mut [u8],
        ) -> Option<bool> {
            let result = vmkit_memory::atomic::compare_exchange::<_, N>(
                memory,
                gpa,
                expected.try_into().ok()?,
                new.try_into().ok()?,
            )?;
            match result {
                Ok(()) => Some(true),
                Err(found) => {
                    current.get_mut(..N)?.copy_from_slice(&found[..]);
                    Some(false)
                }
            }
        }
        crate::migration::note_vmm_write(gpa, new.len());
        let memory = self.0.memory();
        match expected.len() {
            8 => exchange::<8>(&*memory, gpa, expected, new, current),
            16 => exchange::<16>(&*memory, gpa, expected, new, current),
            _ => None,
        }
    }
}
