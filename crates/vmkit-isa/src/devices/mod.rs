//! ISA device types for the [`vmkit_object`] registry, as QEMU's `hw/isa` + qdev wiring.
//!
//! [`register_isa_types`] registers the abstract `isa-device` and its subtypes. Each
//! subtype's realize hook takes the [`IsaContext`] from its [`vmkit_object::Context`],
//! creates the register-level model, maps it on [`IsaContext::pio`] under the object's
//! canonical path (so bus statistics and overlap errors name `/machine/peripheral/com1`),
//! connects its interrupt output through [`IsaContext::irq`] and registers time-driven
//! models with [`IsaContext::timers`]. Unrealize (e.g. `device_del`) unmaps the ranges and
//! unregisters the timer; reset (the object's reset hook) resets the model.
//!
//! | type | ports | IRQ | properties |
//! |---|---|---|---|
//! | `isa-serial` | `iobase`..+8 | `irq` | `index` (0-3: COM1-COM4 defaults), `iobase`, `irq`, `chardev` |
//! | `i8259` | 0x20, 0xa0, 0x4d0 (2 each) | - | userspace model only |
//! | `i8254` | 0x40-0x43, 0x61 | 0 | userspace model only |
//! | `i8042` | 0x60, 0x64 | 1, 12 | reset line to [`MachineEvents::reset_requested`] |
//! | `mc146818rtc` | 0x70-0x71 | - | memory size bytes from [`IsaContext::ram`] |
//! | `port80` | 0x80 | - | POST-code sink |
//! | `isa-debug-exit` | `iobase`..+`iosize` | - | exit request to [`MachineEvents::exit_requested`] |
//! | `pc-testdev` | 0xe0-0xeb, 0x2000-0x2017 (+ 64 KiB at 0xff000000 on [`IsaContext::mmio`]) | 0-15 | QEMU's test device |
//!
//! # In-kernel model and port 0x61
//!
//! With the in-kernel irqchip the VMM creates KVM's PIT with `KVM_CREATE_PIT2` instead of an
//! `i8254`. vmkit-kvm's `Vm::create_pit2` passes `KVM_PIT_SPEAKER_DUMMY`, and despite its
//! name that flag makes KVM register its own port-0x61 handler (GATE2, speaker data, the
//! refresh toggle and OUT2 of its channel 2; accesses to 0x62-0x64 fall through to
//! userspace). So in that model nothing is mapped at 0x61 here: the port never exits.

mod chips;
mod glue;
mod pc;
mod serial;
mod testdev;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmkit_bus::{PioBus, PioDevice, PioRange};
use vmkit_hw::{Clock, HostWallClock, IrqLine, WallClock};
use vmkit_object::{Context, Object, PropertyDef, Registry, TypeInfo};
use vmkit_pcglue::CmosMemoryLayout;

use crate::irq::{lock, IrqRouter, UserspacePic};
use crate::{Error, Result};
use vmkit_hw::timers::{DeviceTimers, TimedDevice, TimerId};

pub use chips::{pit_handle, IsaPit};
pub use glue::{cmos_handle, i8042_handle, post_handle, IsaCmos, IsaI8042};
pub use pc::{add_pc_isa_devices, IsaConfig, IsaDevices};
pub use serial::{serial_handle, IsaSerial, SerialHandle};
pub use testdev::{IsaTestdev, RouterIrq, TYPE_PC_TESTDEV};

/// The abstract parent of every ISA device type.
pub const TYPE_ISA_DEVICE: &str = "isa-device";
/// A 16550A UART (COM port).
pub const TYPE_ISA_SERIAL: &str = "isa-serial";
/// The userspace 8259A pair (userspace interrupt model only).
pub const TYPE_I8259: &str = "i8259";
/// The userspace 8254 PIT with port 0x61 (userspace interrupt model only).
pub const TYPE_I8254: &str = "i8254";
/// The 8042 keyboard controller (CPU reset, A20).
pub const TYPE_I8042: &str = "i8042";
/// The CMOS RAM and real-time clock.
pub const TYPE_RTC: &str = "mc146818rtc";
/// The POST-code port 0x80.
pub const TYPE_PORT80: &str = "port80";
/// QEMU's `isa-debug-exit`.
pub const TYPE_DEBUG_EXIT: &str = "isa-debug-exit";
/// QEMU's debug console (SeaBIOS logs to port 0x402 through it).
pub const TYPE_DEBUGCON: &str = "isa-debugcon";

/// What happens to the machine as a whole, reported by devices.
///
/// Called on vCPU threads with a device locked: implementations must only record the
/// request and wake the main loop (an atomic, an eventfd), never block or join threads.
pub trait MachineEvents: Send + Sync {
    /// The guest asked for a system reset (i8042 command 0xFE pulses the CPU reset line).
    fn reset_requested(&self);
    /// The guest asked the VMM to exit with `status` (isa-debug-exit: `(value << 1) | 1`).
    fn exit_requested(&self, status: u32);
    /// The guest powered the machine off (ACPI S5: SLP_EN with the S5 sleep type). The
    /// default does nothing, for users whose machine has no ACPI power management.
    fn poweroff_requested(&self) {}
}

/// [`MachineEvents`] that only counts: for tests, or a VMM that polls after each exit.
#[derive(Debug, Default)]
pub struct RecordingEvents {
    resets: AtomicU64,
    exits: AtomicU64,
    /// `status + 1` of the last exit request, 0 for none.
    last_exit: AtomicU64,
}

impl RecordingEvents {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many resets were requested.
    pub fn reset_count(&self) -> u64 {
        self.resets.load(Ordering::Acquire)
    }

    /// How many exits were requested.
    pub fn exit_count(&self) -> u64 {
        self.exits.load(Ordering::Acquire)
    }

    /// The status of the last exit request.
    pub fn last_exit_status(&self) -> Option<u32> {
        let value = self.last_exit.load(Ordering::Acquire);
        value
            .checked_sub(1)
            .and_then(|status| u32::try_from(status).ok())
    }
}

impl MachineEvents for RecordingEvents {
    fn reset_requested(&self) {
        self.resets.fetch_add(1, Ordering::AcqRel);
    }

    fn exit_requested(&self, status: u32) {
        self.last_exit
            .store(u64::from(status) + 1, Ordering::Release);
        self.exits.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where a serial port's bytes go and how the VMM learns the guest made room for input.
pub struct SerialBackend {
    /// Receives every byte the guest transmits (stdout, a file, a socket, a sink).
    pub output: Box<dyn Write + Send>,
    /// Driven high while the UART can take more input
    /// ([`SerialHandle::input_room`] > 0); its rising edge means "read your input source
    /// again". Typically an eventfd written on rising edges, polled by the main loop.
    pub rx_room: Option<Arc<dyn IrqLine>>,
}

impl SerialBackend {
    /// A backend writing to `output`, with no input-room line.
    pub fn new(output: impl Write + Send + 'static) -> Self {
        Self {
            output: Box::new(output),
            rx_room: None,
        }
    }

    /// A backend that discards output (a COM port with nothing attached).
    pub fn sink() -> Self {
        Self::new(std::io::sink())
    }

    /// Adds the input-room line.
    #[must_use]
    pub fn with_rx_room(mut self, line: Arc<dyn IrqLine>) -> Self {
        self.rx_room = Some(line);
        self
    }
}

impl fmt::Debug for SerialBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialBackend")
            .field("rx_room", &self.rx_room.is_some())
            .finish_non_exhaustive()
    }
}

/// An in-memory [`Write`] whose clones share one buffer: capture serial output in tests or
/// for a control-socket log.
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }

    /// Everything written so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which interrupt controllers the machine has.
#[derive(Clone)]
pub enum InterruptModel {
    /// KVM's in-kernel PIC, IOAPIC and PIT (`KVM_CREATE_IRQCHIP` + `KVM_CREATE_PIT2`).
    Kernel,
    /// The 8259A pair and 8254 run in the VMM; the PIC is this one.
    Userspace(Arc<UserspacePic>),
}

impl InterruptModel {
    /// Whether this is the in-kernel model.
    pub fn is_kernel(&self) -> bool {
        matches!(self, Self::Kernel)
    }
}

impl fmt::Debug for InterruptModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kernel => f.write_str("Kernel"),
            Self::Userspace(_) => f.write_str("Userspace"),
        }
    }
}

/// What the ISA devices' realize hooks are given (through
/// [`vmkit_object::Context::new`]): the buses, lines, clocks and sinks of the machine.
pub struct IsaContext {
    /// The port bus devices are mapped on.
    pub pio: PioBus,
    /// Where ISA IRQs 0-15 go (a vmkit-pc's `KernelIrqRouter` or the [`UserspacePic`]).
    pub irq: Arc<dyn IrqRouter>,
    /// Which interrupt model the machine uses.
    pub model: InterruptModel,
    /// Monotonic time for the PIT, the UARTs and the RTC's update cycle (the VMM's
    /// `MonotonicClock`; a `ManualClock` in tests).
    pub clock: Arc<dyn Clock>,
    /// Calendar time for the RTC.
    pub wall_clock: Arc<dyn WallClock>,
    /// The timed-device registry serviced by the VMM's host timer.
    pub timers: DeviceTimers,
    /// Reset and exit requests from the guest.
    pub events: Arc<dyn MachineEvents>,
    /// Serial backends by id, for `isa-serial`'s `chardev` property. A realized serial port
    /// takes its backend out of the map.
    pub serial_backends: HashMap<String, SerialBackend>,
    /// The RAM layout written to the CMOS memory-size bytes.
    pub ram: CmosMemoryLayout,
    /// The memory bus, for ISA devices with memory windows (`pc-testdev`); `None`: such
    /// windows are not mapped.
    pub mmio: Option<vmkit_bus::MmioBus>,
}

impl IsaContext {
    /// A context for the userspace interrupt model: ISA IRQs go to `pic`. The wall clock is
    /// the host's, no serial backend is registered and the RAM layout is empty (set
    /// [`ram`](Self::ram) before realizing the RTC).
    pub fn userspace(
        pio: PioBus,
        pic: Arc<UserspacePic>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn MachineEvents>,
    ) -> Self {
        let irq: Arc<dyn IrqRouter> = pic.clone();
        Self::build(pio, irq, InterruptModel::Userspace(pic), clock, events)
    }

    /// A context for the in-kernel model: ISA IRQs go to `router` (a
    /// vmkit-pc's `KernelIrqRouter`), otherwise as [`userspace`](Self::userspace).
    pub fn kernel(
        pio: PioBus,
        router: Arc<dyn IrqRouter>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn MachineEvents>,
    ) -> Self {
        Self::build(pio, router, InterruptModel::Kernel, clock, events)
    }

    fn build(
        pio: PioBus,
        irq: Arc<dyn IrqRouter>,
        model: InterruptModel,
        clock: Arc<dyn Clock>,
        events: Arc<dyn MachineEvents>,
    ) -> Self {
        Self {
            pio,
            irq,
            model,
            timers: DeviceTimers::new(Arc::clone(&clock)),
            clock,
            wall_clock: Arc::new(HostWallClock),
            events,
            serial_backends: HashMap::new(),
            ram: CmosMemoryLayout::default(),
            mmio: None,
        }
    }

    /// Registers serial backend `id` (replacing one of the same id).
    #[must_use]
    pub fn with_serial_backend(mut self, id: impl Into<String>, backend: SerialBackend) -> Self {
        self.serial_backends.insert(id.into(), backend);
        self
    }

    /// Sets the RAM layout for the CMOS.
    #[must_use]
    pub fn with_ram(mut self, ram: CmosMemoryLayout) -> Self {
        self.ram = ram;
        self
    }

    /// Sets the RTC's calendar clock.
    #[must_use]
    pub fn with_wall_clock(mut self, wall_clock: Arc<dyn WallClock>) -> Self {
        self.wall_clock = wall_clock;
        self
    }
}

impl fmt::Debug for IsaContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut backends: Vec<_> = self.serial_backends.keys().collect();
        backends.sort();
        f.debug_struct("IsaContext")
            .field("pio", &self.pio)
            .field("model", &self.model)
            .field("timers", &self.timers)
            .field("serial_backends", &backends)
            .field("ram", &self.ram)
            .finish_non_exhaustive()
    }
}

/// What every realized ISA device keeps so unrealize can undo its wiring without a context.
#[derive(Default)]
struct IsaDeviceState {
    /// The name its ranges are mapped under, and the bus.
    mapping: Option<(Arc<str>, PioBus)>,
    timer: Option<(DeviceTimers, TimerId)>,
}

/// The name a device's ranges are mapped under: its canonical path, or a unique name for
/// an object outside a tree.
fn range_name(object: &Object) -> Arc<str> {
    static DETACHED: AtomicU64 = AtomicU64::new(0);
    match object.path() {
        Some(path) => path.into(),
        None => format!(
            "{}#{}",
            object.type_name(),
            DETACHED.fetch_add(1, Ordering::Relaxed)
        )
        .into(),
    }
}

/// Maps `device` on every `(base, size)` range, all or nothing, and records the mapping for
/// unrealize. Call it as the last fallible step of a realize hook.
fn map_ranges(
    object: &Object,
    ctx: &IsaContext,
    ranges: &[(u16, u16)],
    device: Arc<PioDevice>,
) -> Result<()> {
    let name = range_name(object);
    let ranges = ranges
        .iter()
        .map(|&(base, size)| PioRange::new(base, size))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for range in ranges {
        if let Err(e) = ctx
            .pio
            .insert(range, Arc::clone(&name), Arc::clone(&device))
        {
            ctx.pio.remove_named(&name);
            return Err(e.into());
        }
    }
    object.with_state::<IsaDeviceState, _>(|s| s.mapping = Some((name, ctx.pio.clone())))?;
    Ok(())
}

/// Registers a timed model with the context's timers, recorded for unrealize.
fn register_timer(
    object: &Object,
    ctx: &IsaContext,
    device: Arc<Mutex<dyn TimedDevice>>,
) -> Result<()> {
    let id = ctx.timers.register(range_name(object).to_string(), device);
    object.with_state::<IsaDeviceState, _>(|s| s.timer = Some((ctx.timers.clone(), id)))?;
    Ok(())
}

/// The base type's unrealize: unmaps the ranges and unregisters the timer.
fn unwire(object: &Object) -> vmkit_object::Result<()> {
    let (mapping, timer) =
        object.with_state::<IsaDeviceState, _>(|s| (s.mapping.take(), s.timer.take()))?;
    if let Some((name, bus)) = mapping {
        bus.remove_named(&name);
    }
    if let Some((timers, id)) = timer {
        timers.unregister(id);
    }
    Ok(())
}

/// The context of a realize hook, or a clear error if the caller passed something else.
impl IsaContext {
    /// Takes the backend a device's `chardev=ID` names (each backend serves one device);
    /// no id gives a sink that discards output.
    pub(crate) fn take_backend(&mut self, chardev: Option<&str>) -> Result<SerialBackend> {
        let Some(id) = chardev else {
            return Ok(SerialBackend::sink());
        };
        self.serial_backends
            .remove(id)
            .ok_or_else(|| Error::UnknownChardev {
                id: id.to_owned(),
                available: {
                    let mut ids: Vec<_> = self.serial_backends.keys().cloned().collect();
                    ids.sort();
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(", ")
                    }
                },
            })
    }
}

fn isa_context<'c>(ctx: &'c mut Context<'_>) -> vmkit_object::Result<&'c mut IsaContext> {
    ctx.try_get::<IsaContext>().ok_or_else(|| {
        vmkit_object::Error::failed(
            "ISA devices are realized with an IsaContext: use \
             device_add_with(.., &mut Context::new(&mut isa_context))",
        )
    })
}

/// Turns this crate's error into the object model's, for hooks.
fn hook_error(error: Error) -> vmkit_object::Error {
    match error {
        Error::Object(e) => e,
        other => vmkit_object::Error::failed(other.to_string()),
    }
}

/// A read-only property showing a fixed port or IRQ of a device.
fn fixed(name: &str, value: u64, description: &str) -> PropertyDef {
    PropertyDef::uint(name, 0..=0xffff)
        .default(value)
        .read_only()
        .description(description)
}

/// Registers `isa-device` and every ISA device type of this crate into `registry`.
///
/// # Errors
/// [`Error::Object`] if a type of the same name is already registered.
pub fn register_isa_types(registry: &Registry) -> Result<()> {
    let base = TypeInfo::new(TYPE_ISA_DEVICE)
        .abstract_type()
        .description("a device on the ISA bus: ports on the PIO bus, ISA IRQ lines 0-15")
        .state(IsaDeviceState::default)
        .unrealize(|object, _ctx, _parent| unwire(object));
    let mut types = vec![base, serial::type_info()];
    types.extend(chips::type_infos());
    types.extend(glue::type_infos());
    types.push(testdev::type_info());
    registry.register_all(types)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_events_keep_the_last_status() {
        let events = RecordingEvents::new();
        assert_eq!(events.last_exit_status(), None);
        events.exit_requested(0);
        assert_eq!(events.last_exit_status(), Some(0));
        events.exit_requested(u32::MAX);
        events.reset_requested();
        assert_eq!(events.last_exit_status(), Some(u32::MAX));
        assert_eq!((events.exit_count(), events.reset_count()), (2, 1));
    }

    #[test]
    fn shared_buffer_clones_share_bytes() {
        let buffer = SharedBuffer::new();
        let mut writer = buffer.clone();
        writer.write_all(b"ok").unwrap();
        assert_eq!(buffer.contents(), b"ok");
        assert_eq!(buffer.text(), "ok");
    }
}
