//! The ISA layer of vmkit's PC, as QEMU's `hw/isa` plus qdev wiring.
//!
//! The register-level models (`vmkit-serial`, `vmkit-i8259`, `vmkit-i8254`, `vmkit-pcglue`)
//! know nothing of buses, KVM or threads. This crate puts them into a machine:
//!
//! - [`irq`]: where ISA IRQs 0-15 go. An [`IrqRouter`] is either the in-kernel irqchip
//!   (vmkit-pc's `KernelIrqRouter`, `KVM_IRQ_LINE`) or the userspace 8259A pair ([`UserspacePic`],
//!   whose INT output the vCPU loop polls lock-free and which wakes the vCPU on a rising
//!   edge). Devices get an [`IsaIrqLine`].
//! - [`timers`]: every timed model (PIT, UART character timeout) shares the VMM's single
//!   host timer through [`DeviceTimers`]; the [`Timed`] bus adapter reports deadlines after
//!   guest accesses without a syscall unless the deadline moved earlier.
//! - [`devices`]: QOM-style types (`isa-serial`, `i8259`, `i8254`, `i8042`,
//!   `mc146818rtc`, `port80`, `isa-debug-exit`) registered with [`register_isa_types`]
//!   whose realize hooks map the models on the port bus from an [`IsaContext`], and
//!   [`add_pc_isa_devices`], the standard set at the standard ports.
//!
//! # Example
//!
//! The userspace interrupt model: the standard devices, a guest-like `out` to COM1, and a
//! serial interrupt delivered through the PIC.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_bus::PioBus;
//! use vmkit_hw::ManualClock;
//! use vmkit_isa::{
//!     add_pc_isa_devices, register_isa_types, IsaConfig, IsaContext, RecordingEvents,
//!     SerialBackend, SharedBuffer, UserspacePic,
//! };
//! use vmkit_object::{ObjectTree, Registry};
//!
//! let registry = Registry::new();
//! register_isa_types(&registry)?;
//! let tree = ObjectTree::new(&registry)?;
//! tree.set_machine(&registry.new_object("container")?)?;
//!
//! let bus = PioBus::new();
//! let pic = Arc::new(UserspacePic::new());
//! let events = Arc::new(RecordingEvents::new());
//! let console = SharedBuffer::new();
//! let mut ctx = IsaContext::userspace(bus.clone(), pic.clone(),
//!                                     Arc::new(ManualClock::new(0)), events.clone())
//!     .with_serial_backend("serial0", SerialBackend::new(console.clone()));
//! let config = IsaConfig { debug_exit: Some((0x501, 2)), ..IsaConfig::default() };
//! let devices = add_pc_isa_devices(&tree, &mut ctx, &config)?;
//!
//! // What a vCPU thread does on `out 0x3f8, al`.
//! bus.write(0x3f8, b"A");
//! assert_eq!(console.contents(), b"A");
//! assert_eq!(bus.lookup(0x2fd).unwrap().1.as_ref(), "/machine/peripheral/com2");
//!
//! // The guest programs the PIC (vectors 0x20/0x28) and COM1's THR-empty interrupt.
//! for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1),
//!                       (0xa0, 0x11), (0xa1, 0x28), (0xa1, 2), (0xa1, 1)] {
//!     bus.write(port, &[value]);
//! }
//! bus.write(0x3fc, &[0x08]); // MCR.OUT2 gates the UART's IRQ onto the bus
//! bus.write(0x3f9, &[0x02]); // IER.ETBEI: THR is empty, so IRQ 4 rises at once
//! assert!(pic.intr_pending());
//! assert_eq!(pic.acknowledge(), Some(0x24));
//!
//! // Input from the VMM's side.
//! let com1 = devices.serial_handle(0)?;
//! assert_eq!(com1.enqueue_input(b"hi"), 1); // 16450 mode: RBR holds one byte
//!
//! // isa-debug-exit: the guest asks to stop with (0x31 << 1) | 1.
//! bus.write(0x501, &[0x31]);
//! assert_eq!(events.last_exit_status(), Some(0x63));
//! # Ok::<(), vmkit_isa::Error>(())
//! ```
//!
//! # Wiring into a VMM
//!
//! 1. Pick the model. In-kernel: `vm.create_irqchip()`, `vm.create_pit2()`, then
//!    `IsaContext::kernel(bus, Arc::new(vmkit_pc::KernelIrqRouter::new(vm)), clock, events)`
//!    (any [`IrqRouter`]: the router lives next to KVM so this crate needs none).
//!    Userspace: `IsaContext::userspace(bus, pic, clock, events)` with an
//!    `Arc<UserspacePic>` the vCPU loop also holds; call [`UserspacePic::set_waker`] with a
//!    function that kicks the boot vCPU.
//! 2. Give the context its serial backends (`chardev` ids), the RAM layout for the CMOS
//!    and a wall clock; set the [`DeviceTimers`] notifier to arm the host timerfd.
//! 3. [`add_pc_isa_devices`], then any `-device` with `tree.device_add_with(text,
//!    &mut Context::new(&mut ctx))`.
//! 4. On timerfd expiry: mark the timer unarmed, call [`DeviceTimers::service`], arm the
//!    returned deadline (see [`timers`] for why that order loses nothing).
//! 5. Serial input: [`SerialHandle::enqueue_input`] takes what fits; wait for the
//!    backend's rx-room line to rise before offering the rest.
//! 6. Machine reset: `tree.root().reset_tree()` resets every realized device model.
#![forbid(unsafe_code)]

pub mod devices;
pub mod irq;

pub use devices::{
    add_pc_isa_devices, cmos_handle, i8042_handle, pit_handle, post_handle, register_isa_types,
    serial_handle, InterruptModel, IsaCmos, IsaConfig, IsaContext, IsaDevices, IsaI8042, IsaPit,
    IsaSerial, MachineEvents, RecordingEvents, SerialBackend, SerialHandle, SharedBuffer,
    TYPE_DEBUGCON, TYPE_DEBUG_EXIT, TYPE_I8042, TYPE_I8254, TYPE_I8259, TYPE_ISA_DEVICE,
    TYPE_ISA_SERIAL, TYPE_PORT80, TYPE_RTC,
};
pub use devices::{IsaTestdev, TYPE_PC_TESTDEV};
pub use irq::{IrqRouter, IsaIrqLine, PicIntr, RecordingRouter, UserspacePic, Waker};
/// The device-timer protocol, which lives in vmkit-hw so device crates implement it
/// themselves; re-exported here for the machine code that wires timers.
pub use vmkit_hw::timers::{
    self as timers, DeviceTimers, Locked, Timed, TimedDevice, TimerId, TimerNotifier,
};

/// Errors of building the ISA layer. Realize hooks report them through
/// [`vmkit_object::Error`] (wrapped in `RealizeFailed`, with the message kept).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the object model: unknown type, bad property, a failed realize...
    #[error(transparent)]
    Object(#[from] vmkit_object::Error),
    /// From the port bus: an overlap (naming both devices) or a range past port 0xffff.
    #[error(transparent)]
    Bus(#[from] vmkit_bus::Error),
    /// A CMOS or debug-exit configuration the device model refused.
    #[error(transparent)]
    Device(#[from] vmkit_pcglue::Error),
    /// An IRQ number outside ISA's 0-15.
    #[error("ISA IRQ {0} does not exist: ISA has IRQ lines 0-15")]
    InvalidIrq(u32),
    /// A userspace-only device in the in-kernel interrupt model.
    #[error(
        "'{device}' needs the userspace interrupt model: {reason}; drop the device or use \
         the userspace model (kernel-irqchip=off)"
    )]
    NeedsUserspaceModel {
        /// The device type.
        device: &'static str,
        /// What owns its ports instead.
        reason: &'static str,
    },
    /// `chardev=` names a serial backend the context does not have (or that another
    /// device already took).
    #[error(
        "no serial backend '{id}' (available: {available}); each backend can serve only \
         one serial device"
    )]
    UnknownChardev {
        /// The requested id.
        id: String,
        /// The ids still available.
        available: String,
    },
    /// `isa-serial` without `iobase` when COM1-COM4 are all taken, or with an `index`
    /// outside 0-3 and no `iobase`.
    #[error(
        "no free COM port for isa-serial: COM1-COM4 (0x3f8, 0x2f8, 0x3e8, 0x2e8) are taken; \
         give iobase= and irq="
    )]
    NoFreeComPort,
    /// A device handle was asked of an object that is not realized.
    #[error("{0} is not realized")]
    NotRealized(String),
    /// [`IsaDevices::serial_handle`] with an index past the created ports.
    #[error("there is no serial port with index {0} (COM1-COM4 are 0-3)")]
    NoSuchSerial(usize),
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
