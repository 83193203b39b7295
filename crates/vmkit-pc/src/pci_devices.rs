//! PCI devices from `-device`, as QEMU's pc creates them on `pci.0`: the abstract
//! `pci-device` type with QEMU's `addr` property, and virtio-pci devices on vmkit-virtio's
//! transport (QEMU's `disable-legacy`, `disable-modern` and `vectors`).
//!
//! PCI devices are realized with a [`PciContext`] (the bus, the PIIX3's INTx steering,
//! guest memory and, with the in-kernel irqchip, KVM's MSI delivery) instead of the ISA
//! context; [`needs_pci_context`] tells a machine which one an option text needs.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryAtomic;
use vmkit_hw::IrqLine;
use vmkit_isa::SerialBackend;
use vmkit_memory::GuestMemoryView;
use vmkit_object::{Context, Object, ObjectOptions, PropertyDef, Registry, TypeInfo};
use vmkit_pci::{DevFn, MsiMessage, MsiSignal, PciBus};
use vmkit_piix::PciIntx;
use vmkit_virtio::{Console, ConsoleInput, Rng, VirtioDevice, VirtioPciBuilder, VirtioPciDevice};

/// The abstract type of every PCI device on `pci.0`.
pub const TYPE_PCI_DEVICE: &str = "pci-device";
/// The abstract type of virtio-pci devices.
pub const TYPE_VIRTIO_PCI: &str = "virtio-pci";
/// virtio-rng on PCI (host getrandom).
pub const TYPE_VIRTIO_RNG_PCI: &str = "virtio-rng-pci";
/// virtio-serial on PCI: the console device whose port a `virtconsole` connects.
pub const TYPE_VIRTIO_SERIAL_PCI: &str = "virtio-serial-pci";
/// The abstract type of ports on a virtio-serial device.
pub const TYPE_VIRTIO_SERIAL_PORT: &str = "virtio-serial-port";
/// A console port on a virtio-serial device, on a chardev.
pub const TYPE_VIRTCONSOLE: &str = "virtconsole";
/// virtio-blk on PCI, on a `-drive` (`drive=ID`).
pub const TYPE_VIRTIO_BLK_PCI: &str = "virtio-blk-pci";

/// Opened `-drive` backends by drive id, for `virtio-blk-pci,drive=ID` (each used once).
pub type DriveMap = HashMap<String, Arc<dyn vmkit_block::BlockBackend>>;

#[path = "pci_net.rs"]
mod net;
pub use net::{net_link, virtio_net_pci_type, Netdevs, TYPE_VIRTIO_NET_PCI};

/// The guest memory virtio devices see.
pub type PciGuestMemory = GuestMemoryAtomic<GuestMemoryView>;

/// What PCI devices (and the ports on them) are realized with.
pub struct PciContext {
    /// Bus 0.
    pub pci: PciBus,
    /// INTx steering through the PIIX3.
    pub intx: Arc<PciIntx>,
    /// Guest memory, for device DMA.
    pub memory: PciGuestMemory,
    /// MSI delivery (the in-kernel irqchip's); `None`: devices get no MSI-X.
    pub msi: Option<Arc<dyn MsiSignal>>,
    /// `-netdev` backends by id, for `virtio-net-pci,netdev=ID` (each used once).
    pub netdevs: Netdevs,
    /// Character backends by chardev id, for `virtconsole,chardev=ID` (each used once).
    pub chardevs: HashMap<String, SerialBackend>,
    /// KVM ioeventfds and irqfds for virtio functions (`None`: doorbells are exits and MSI
    /// goes through `msi`).
    pub notifiers: Option<Arc<crate::notifiers::MachineNotifiers>>,
    /// virtio-serial devices, in creation order, waiting for their port.
    serial_buses: Vec<SerialBus>,
    /// Block backends by `-drive` id, for `virtio-blk-pci,drive=ID` (each used once).
    pub drives: DriveMap,
}

impl PciContext {
    /// A context for `pci` with the PIIX3's `intx`, guest `memory` and `msi` delivery.
    pub fn new(
        pci: PciBus,
        intx: Arc<PciIntx>,
        memory: PciGuestMemory,
        msi: Option<Arc<dyn MsiSignal>>,
    ) -> Self {
        Self {
            pci,
            intx,
            memory,
            msi,
            netdevs: Netdevs::default(),
            chardevs: HashMap::new(),
            notifiers: None,
            serial_buses: Vec::new(),
            drives: HashMap::new(),
        }
    }
}

/// Where a console port's output goes: nowhere until a `virtconsole` connects a chardev.
#[derive(Clone, Default)]
struct PortOutput(Arc<Mutex<Option<Box<dyn Write + Send>>>>);

impl Write for PortOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *vmkit_hw::lock(&self.0) {
            Some(out) => out.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut *vmkit_hw::lock(&self.0) {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// A virtio-serial device's single port.
struct SerialBus {
    device: String,
    output: PortOutput,
    input: ConsoleInput,
    taken: bool,
}

impl std::fmt::Debug for PciContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciContext")
            .field("devfns", &self.pci.devfns())
            .field("msi", &self.msi.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether `options` (a `-device` text) creates a device realized with a [`PciContext`]:
/// a PCI function or a port on one.
pub fn needs_pci_context(registry: &Registry, options: &str) -> bool {
    ObjectOptions::parse(options)
        .ok()
        .and_then(|o| registry.class(&o.type_name).ok())
        .is_some_and(|class| class.is_a(TYPE_PCI_DEVICE) || class.is_a(TYPE_VIRTIO_SERIAL_PORT))
}

/// The input side of a `virtconsole` object (for the chardev's reader).
pub fn console_input(object: &Object) -> Option<ConsoleInput> {
    object
        .with_state::<ConsolePortState, _>(|s| s.input.clone())
        .ok()
        .flatten()
}

#[derive(Default)]
struct ConsolePortState {
    input: Option<ConsoleInput>,
}

fn realize_virtio_serial(object: &Object, ctx: &mut PciContext) -> vmkit_object::Result<()> {
    let output = PortOutput::default();
    let console =
        Console::new(output.clone()).map_err(|e| vmkit_object::Error::failed(e.to_string()))?;
    let input = console.input();
    realize_virtio(object, ctx, Box::new(console))?;
    ctx.serial_buses.push(SerialBus {
        device: object.name().unwrap_or_default(),
        output,
        input,
        taken: false,
    });
    Ok(())
}

fn realize_virtconsole(object: &Object, ctx: &mut PciContext) -> vmkit_object::Result<()> {
    let fail = |text: String| vmkit_object::Error::failed(text);
    let chardev = object.get_string("chardev")?;
    if chardev.is_empty() {
        return Err(fail("virtconsole needs chardev=ID (a -chardev)".into()));
    }
    let bus = object.get_string("bus")?;
    // QEMU's default: a free port on any virtio-serial bus; `bus=ID` or `bus=ID.0` names
    // the device.
    let wanted = bus.strip_suffix(".0").unwrap_or(&bus).to_string();
    let Some(port) = ctx
        .serial_buses
        .iter_mut()
        .find(|b| !b.taken && (wanted.is_empty() || b.device == wanted))
    else {
        return Err(fail(if wanted.is_empty() {
            "virtconsole needs a -device virtio-serial-pci with a free port before it (each \
             has one)"
                .into()
        } else {
            format!("virtconsole: bus '{bus}' is not a virtio-serial-pci with a free port")
        }));
    };
    let backend = ctx.chardevs.remove(&chardev).ok_or_else(|| {
        fail(format!(
            "virtconsole: chardev '{chardev}' is not a -chardev, or another device uses it"
        ))
    })?;
    port.taken = true;
    *vmkit_hw::lock(&port.output.0) = Some(backend.output);
    let input = port.input.clone();
    object.with_state::<ConsolePortState, _>(|s| s.input = Some(input))?;
    Ok(())
}

/// Parses QEMU's `addr`: `SLOT` or `SLOT.FN` in hex (`0x3`, `03.0`, `4.1`).
pub fn parse_pci_addr(text: &str) -> Result<DevFn, String> {
    let hex = |part: &str| {
        let digits = part
            .strip_prefix("0x")
            .or_else(|| part.strip_prefix("0X"))
            .unwrap_or(part);
        u8::from_str_radix(digits, 16).ok()
    };
    let (slot, func) = match text.split_once('.') {
        Some((slot, func)) => (hex(slot), hex(func)),
        None => (hex(text), Some(0)),
    };
    match (slot, func) {
        (Some(slot), Some(func)) if slot < 32 && func < 8 => Ok(DevFn::new(slot, func)),
        _ => Err(format!(
            "addr '{text}': expected SLOT[.FUNCTION] in hex, slot 0-1f, function 0-7"
        )),
    }
}

/// A virtio function of the machine, typed (for its state).
pub type SharedVirtioPci = Arc<Mutex<VirtioPciDevice<PciGuestMemory>>>;

/// Per-object state: where the device sits, for unrealize; the transport of a virtio
/// function.
#[derive(Default)]
struct PciDeviceState {
    placed: Option<(PciBus, DevFn)>,
    virtio: Option<SharedVirtioPci>,
}

/// Every virtio-pci function in `tree` (under `/machine/peripheral` and
/// `/machine/peripheral-anon`) with its object path, in path order: what a migration saves
/// and restores.
pub fn virtio_transports(tree: &vmkit_object::ObjectTree) -> Vec<(String, SharedVirtioPci)> {
    let mut out = Vec::new();
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
            if let Ok(Some(virtio)) = object.with_state::<PciDeviceState, _>(|s| s.virtio.clone()) {
                out.push((path, virtio));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn pci_context<'c>(ctx: &'c mut Context<'_>) -> vmkit_object::Result<&'c mut PciContext> {
    ctx.try_get::<PciContext>().ok_or_else(|| {
        vmkit_object::Error::failed(
            "PCI devices are created with the machine (-device); hot-plug is not supported",
        )
    })
}

/// The devfn `addr` asks for, or QEMU's choice: function 0 of the first free slot.
fn choose_devfn(object: &Object, pci: &PciBus) -> vmkit_object::Result<DevFn> {
    let text = object.get_string("addr")?;
    let taken = pci.devfns();
    if !text.is_empty() {
        let devfn = parse_pci_addr(&text).map_err(vmkit_object::Error::failed)?;
        if taken.contains(&devfn) {
            return Err(vmkit_object::Error::failed(format!(
                "addr {devfn}: the slot is taken (by another function)"
            )));
        }
        return Ok(devfn);
    }
    (0..32u8)
        .map(|slot| DevFn::new(slot, 0))
        .find(|d| !taken.iter().any(|t| t.device() == d.device()))
        .ok_or_else(|| vmkit_object::Error::failed("pci.0 has no free slot (32 used)"))
}

/// The function's INTA#, steered by the PIIX3.
struct IntxPin {
    intx: Arc<PciIntx>,
    devfn: DevFn,
}

impl IrqLine for IntxPin {
    fn set_level(&self, high: bool) {
        self.intx.set_level(self.devfn, 1, high);
    }
}

/// MSI messages through `KVM_SIGNAL_MSI` (the in-kernel irqchip's local APICs).
pub struct KvmMsi {
    vm: Arc<vmkit_kvm::Vm>,
}

impl KvmMsi {
    /// Delivers through `vm` (which has an in-kernel irqchip).
    pub fn new(vm: Arc<vmkit_kvm::Vm>) -> Self {
        Self { vm }
    }
}

impl MsiSignal for KvmMsi {
    fn signal(&self, vector: u16, message: MsiMessage) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: message.address as u32,
            address_hi: (message.address >> 32) as u32,
            data: message.data,
            ..Default::default()
        };
        if let Err(e) = self.vm.as_raw().signal_msi(msi) {
            eprintln!("vmkit: MSI-X vector {vector} ({message}): KVM_SIGNAL_MSI failed: {e}");
        }
    }
}

/// Builds the transport for `device` from the object's virtio-pci properties and places it.
fn realize_virtio(
    object: &Object,
    ctx: &mut PciContext,
    device: Box<dyn VirtioDevice<PciGuestMemory>>,
) -> vmkit_object::Result<()> {
    let fail = |e: vmkit_virtio::Error| vmkit_object::Error::failed(e.to_string());
    let devfn = choose_devfn(object, &ctx.pci)?;
    let mut builder = VirtioPciBuilder::new()
        .set("disable-legacy", &object.get_string("disable-legacy")?)
        .map_err(fail)?
        .disable_modern(object.get_bool("disable-modern")?)
        .intx(Arc::new(IntxPin {
            intx: Arc::clone(&ctx.intx),
            devfn,
        }));
    let vectors = object.get_u64("vectors")?;
    match &ctx.msi {
        Some(msi) => {
            builder = builder.msi(Arc::clone(msi));
            if vectors != u64::from(u32::MAX) {
                builder = builder.set("vectors", &vectors.to_string()).map_err(fail)?;
            }
        }
        // No local APIC to take messages (the userspace irqchip): INTx only.
        None => builder = builder.vectors(0),
    }
    builder = builder.ioeventfd(object.get_bool("ioeventfd")?);
    if let Some(notifiers) = &ctx.notifiers {
        builder = notifiers.configure(builder, devfn);
    }
    let transport = Arc::new(Mutex::new(
        builder.build(device, ctx.memory.clone()).map_err(fail)?,
    ));
    ctx.pci
        .add(devfn, transport.clone())
        .map_err(|e| vmkit_object::Error::failed(e.to_string()))?;
    object.with_state::<PciDeviceState, _>(|s| {
        s.placed = Some((ctx.pci.clone(), devfn));
        s.virtio = Some(transport);
    })?;
    Ok(())
}

/// `virtio-blk-pci`: the drive's backend (taken from the context, so a drive serves one
/// device), the device properties, then the virtio-pci transport.
fn realize_virtio_blk(object: &Object, ctx: &mut PciContext) -> vmkit_object::Result<()> {
    let fail = |text: String| vmkit_object::Error::failed(text);
    let drive = object.get_string("drive")?;
    if drive.is_empty() {
        return Err(fail(
            "virtio-blk-pci: drive property not set (give drive=ID of a -drive if=none,id=ID)"
                .into(),
        ));
    }
    let Some(backend) = ctx.drives.remove(&drive) else {
        return Err(fail(format!(
            "Property 'virtio-blk-pci.drive' can't find value '{drive}': no -drive with \
             id={drive}, or another device already uses it"
        )));
    };
    let queue_size = u16::try_from(object.get_u64("queue-size")?).unwrap_or(0);
    let options = vmkit_block::BlkOptions {
        serial: object.get_string("serial")?,
        queue_size,
        discard: object.get_bool("discard")?,
        write_zeroes: object.get_bool("write-zeroes")?,
        config_wce: object.get_bool("config-wce")?,
        ..vmkit_block::BlkOptions::default()
    };
    let blk = vmkit_block::VirtioBlk::with_options(backend, options)
        .map_err(|e| fail(format!("virtio-blk-pci: {e}")))?;
    let shutdown = blk.shutdown_handle();
    realize_virtio(object, ctx, Box::new(blk))?;
    object.with_state::<BlkDeviceState, _>(|s| s.shutdown = Some(shutdown))?;
    Ok(())
}

#[derive(Default)]
struct BlkDeviceState {
    shutdown: Option<vmkit_block::BlkShutdown>,
}

/// The shutdown handles of every `virtio-blk-pci` in `tree` (under `/machine/peripheral`
/// and `/machine/peripheral-anon`): a runtime drains and flushes them when the machine
/// quits, as QEMU drains and closes its drives.
pub fn block_shutdown_handles(tree: &vmkit_object::ObjectTree) -> Vec<vmkit_block::BlkShutdown> {
    let mut handles = Vec::new();
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
            if let Ok(Some(handle)) = object.with_state::<BlkDeviceState, _>(|s| s.shutdown.clone())
            {
                handles.push(handle);
            }
        }
    }
    handles
}

/// The PCI device types: `pci-device`, `virtio-pci` and the virtio devices.
pub fn pci_device_types() -> Vec<TypeInfo> {
    vec![
        TypeInfo::new(TYPE_PCI_DEVICE)
            .parent("container")
            .abstract_type()
            .description("a function on pci.0")
            .state(PciDeviceState::default)
            .property(
                PropertyDef::string("addr")
                    .default("")
                    .description("slot[.function] in hex (default: the first free slot)"),
            )
            .unrealize(|object, _ctx, _parent| {
                if let Some((bus, devfn)) =
                    object.with_state::<PciDeviceState, _>(|s| s.placed.take())?
                {
                    bus.remove(devfn);
                }
                Ok(())
            }),
        TypeInfo::new(TYPE_VIRTIO_PCI)
            .parent(TYPE_PCI_DEVICE)
            .abstract_type()
            .description("a virtio device on the virtio 1.x PCI transport")
            .property(
                PropertyDef::enumeration("disable-legacy", &["auto", "on", "off"])
                    .default("auto")
                    .description(
                        "no legacy I/O BAR (auto: transitional if the type has a legacy id)",
                    ),
            )
            .property(
                PropertyDef::bool("disable-modern")
                    .default(false)
                    .description("no modern BAR and capabilities (a legacy-only device)"),
            )
            .property(
                PropertyDef::bool("ioeventfd")
                    .default(true)
                    .description("doorbells signal the queue's eventfd in KVM (no exit)"),
            )
            .property(
                PropertyDef::uint("vectors", 0..=u64::from(u32::MAX))
                    .default(u64::from(u32::MAX))
                    .description("MSI-X vectors (default: one per queue plus one)"),
            ),
        TypeInfo::new(TYPE_VIRTIO_RNG_PCI)
            .parent(TYPE_VIRTIO_PCI)
            .description("virtio-rng: entropy from the host's getrandom")
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_virtio(object, pci_context(ctx)?, Box::new(Rng::new()))
            }),
        TypeInfo::new(TYPE_VIRTIO_SERIAL_PCI)
            .parent(TYPE_VIRTIO_PCI)
            .description("virtio-serial with one console port (connect it with virtconsole)")
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_virtio_serial(object, pci_context(ctx)?)
            }),
        TypeInfo::new(TYPE_VIRTIO_BLK_PCI)
            .parent(TYPE_VIRTIO_PCI)
            .description("virtio-blk: a block device on a -drive")
            .state(BlkDeviceState::default)
            .property(
                PropertyDef::string("drive")
                    .default("")
                    .description("the -drive (if=none,id=ID) it serves"),
            )
            .property(
                PropertyDef::string("serial")
                    .default("")
                    .description("disk serial number (GET_ID, at most 20 bytes)"),
            )
            .property(
                PropertyDef::uint("queue-size", 2..=1024)
                    .default(u64::from(vmkit_block::BLK_QUEUE_SIZE))
                    .description("request queue size (a power of two)"),
            )
            .property(
                PropertyDef::bool("discard")
                    .default(true)
                    .description("offer DISCARD (what it does is the drive's discard=)"),
            )
            .property(
                PropertyDef::bool("write-zeroes")
                    .default(true)
                    .description("offer WRITE_ZEROES"),
            )
            .property(
                PropertyDef::bool("config-wce")
                    .default(true)
                    .description("offer CONFIG_WCE (the driver may switch the write cache)"),
            )
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_virtio_blk(object, pci_context(ctx)?)
            }),
        TypeInfo::new(TYPE_VIRTIO_SERIAL_PORT)
            .parent("container")
            .abstract_type()
            .description("a port on a virtio-serial device")
            .property(
                PropertyDef::string("chardev")
                    .default("")
                    .description("the -chardev the port is connected to"),
            )
            .property(
                PropertyDef::string("bus").default("").description(
                    "the virtio-serial-pci's id (default: the first with a free port)",
                ),
            )
            .property(
                PropertyDef::string("name")
                    .default("")
                    .description("port name (informational: the port is the console)"),
            ),
        TypeInfo::new(TYPE_VIRTCONSOLE)
            .parent(TYPE_VIRTIO_SERIAL_PORT)
            .description("the console port of a virtio-serial device, on a chardev")
            .state(ConsolePortState::default)
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_virtconsole(object, pci_context(ctx)?)
            }),
        virtio_net_pci_type(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_parses_as_qemu_reads_it() {
        assert_eq!(parse_pci_addr("3"), Ok(DevFn::new(3, 0)));
        assert_eq!(parse_pci_addr("0x1f"), Ok(DevFn::new(31, 0)));
        assert_eq!(parse_pci_addr("04.2"), Ok(DevFn::new(4, 2)));
        for bad in ["", "20", "3.8", "x", "3.", ".1"] {
            let err = parse_pci_addr(bad).unwrap_err();
            assert!(err.contains("SLOT[.FUNCTION]"), "{bad}: {err}");
        }
    }
}
