//! Virtio for KVM VMMs, shaped after QEMU's `hw/virtio/virtio-pci.c`: the virtio 1.x PCI
//! transport with the transitional legacy I/O BAR, a device trait over rust-vmm's
//! [`virtio_queue`], and two devices.
//!
//! - [`VirtioDevice`]: what a device implements (type, queue sizes, features,
//!   configuration space, `activate` with its queues and their notification
//!   [`EventFd`](vmm_sys_util::eventfd::EventFd)s, `reset`), generic over vm-memory's
//!   [`GuestAddressSpace`](vm_memory::GuestAddressSpace).
//! - [`VirtioInterrupt`] / [`InterruptKind`]: how a device signals the driver; the
//!   transport maps it to an MSI-X vector ([`vmkit_pci::Msix`] with the machine's
//!   [`MsiSignal`](vmkit_pci::MsiSignal)) or to the ISR byte and INTx
//!   ([`IrqLine`](vmkit_hw::IrqLine)).
//! - [`VirtioPciDevice`] (built by [`VirtioPciBuilder`]): a [`vmkit_pci::PciDevice`] with
//!   QEMU's layout: BAR0 the legacy I/O block, BAR1 MSI-X table and PBA, BAR4 the 16 KiB
//!   modern BAR (common cfg at 0x0, ISR at 0x1000, device cfg at 0x2000, doorbells at
//!   0x3000 with `notify_off_multiplier` 4), vendor capabilities of `cfg_type` 1..=5.
//!   [`notify_addresses`](VirtioPciDevice::notify_addresses) lists the doorbells for
//!   ioeventfds, and a [`NotifierHook`] (QEMU's `ioeventfd=on`, the default) is told them
//!   at `DRIVER_OK` and at reset, so the machine hangs ioeventfds on the BAR regions.
//! - Devices: [`Rng`] (virtio-rng on the host's getrandom) and [`Console`]
//!   (virtio-console, one port, input with flow control through [`ConsoleInput`]).
//!
//! No KVM here: the machine registers ioeventfds and irqfds.
//!
//! # Threads
//!
//! A doorbell write (an MMIO/PIO exit, when the machine has no ioeventfd on it) only
//! writes the queue's eventfd; with an ioeventfd KVM writes it without an exit. Each device
//! here runs one worker thread, started in `activate`, that waits on its queues' eventfds
//! (epoll), pops descriptor chains with virtio-queue's [`Reader`](virtio_queue::Reader) /
//! [`Writer`](virtio_queue::Writer), fills the used ring and triggers the interrupt. Reset
//! and drop stop and join it.
//!
//! # Register behaviour (after QEMU 7.2 `virtio-pci`)
//!
//! - Identity: vendor 0x1af4; transitional devices use the legacy device ID (0x1000 +
//!   type-specific: net 0x1000, blk 0x1001, console 0x1003, rng 0x1005), revision 0 and
//!   subsystem ID = the virtio type; modern-only devices (`disable-legacy=on`, and types
//!   without a legacy ID) use 0x1040 + type, revision 1 and subsystem 0x1100; the subsystem
//!   vendor is 0x1af4; class codes as QEMU ([`class_code`]); INTA#.
//! - Status: writing 0 resets (the device stops, queues and vectors return to defaults);
//!   `FEATURES_OK` stays clear if the driver's features are not a subset of the offer or
//!   the device refuses them; `DRIVER_OK` activates; a failed activation sets
//!   `NEEDS_RESET` and raises a configuration interrupt, as does a device that met a
//!   malformed descriptor chain ([`check_chain`], [`VirtioInterrupt::needs_reset`]): the
//!   chain is not completed and the device serves its queues no more until the reset. Status bits only accumulate
//!   until a reset (a driver cannot clear them, as the spec requires). Feature writes after
//!   `FEATURES_OK` and queue writes while running are ignored.
//! - Legacy: host features are bits 0..31 (no `VERSION_1`); a legacy driver's features
//!   take effect at `DRIVER_OK`; `QUEUE_PFN` places the ring with 4096-byte alignment and
//!   writing 0 resets the device; the MSI-X vector registers exist (and the device config
//!   moves from 0x14 to 0x18) only while MSI-X is enabled.
//! - Interrupts: with MSI-X enabled, `msix_config` / `queue_msix_vector` pick the vector
//!   (values past the table read back 0xffff); masked vectors go pending. Without MSI-X,
//!   ISR bit 0 (queue) or 1 (config) is set and INTx is raised (unless the command
//!   register's INTx-disable bit is set); reading ISR clears it and lowers INTx.
//! - `VIRTIO_PCI_CAP_PCI_CFG`: a 1/2/4-byte window onto the modern BAR through
//!   configuration space.
//!
//! # Example: a guest driver completing one virtio-rng request
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use virtio_queue::desc::{split::Descriptor, RawDescriptor};
//! use virtio_queue::mock::MockSplitQueue;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vmkit_pci::{PciDevice, RegionIndex};
//! use vmkit_virtio::{common, Rng, VirtioPciBuilder};
//!
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?);
//! let mut dev = VirtioPciBuilder::new()
//!     .disable_legacy(true)
//!     .vectors(0)
//!     .build(Box::new(Rng::new()), mem.clone())?;
//!
//! // The driver's side of queue 0, and one 16-byte device-writable buffer at 0x8000.
//! let vq = MockSplitQueue::create(&*mem, GuestAddress(0x1000), 16);
//! vq.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x8000, 16, 2 /* WRITE */, 0))], 0)?;
//!
//! let bar4 = RegionIndex::Bar(4);
//! let mut w = |off: u64, v: u64, len: usize| dev.region_write(bar4, off, &v.to_le_bytes()[..len]);
//! w(common::DEVICE_STATUS, 1 | 2, 1);              // ACKNOWLEDGE | DRIVER
//! w(common::DRIVER_FEATURE_SELECT, 1, 4);
//! w(common::DRIVER_FEATURE, 1, 4);                 // VIRTIO_F_VERSION_1 (bit 32)
//! w(common::DEVICE_STATUS, 1 | 2 | 8, 1);          // FEATURES_OK
//! w(common::QUEUE_SELECT, 0, 2);
//! w(common::QUEUE_SIZE, 16, 2);
//! w(common::QUEUE_DESC_LO, vq.desc_table_addr().0, 4);
//! w(common::QUEUE_DRIVER_LO, vq.avail_addr().0, 4);
//! w(common::QUEUE_DEVICE_LO, vq.used_addr().0, 4);
//! w(common::QUEUE_ENABLE, 1, 2);
//! w(common::DEVICE_STATUS, 1 | 2 | 8 | 4, 1);      // DRIVER_OK: the worker starts
//! w(0x3000, 0, 2);                                 // queue 0's doorbell
//!
//! // The worker thread fills the buffer and publishes a used element of 16 bytes.
//! let used_len = GuestAddress(vq.used_addr().0 + 8);
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while mem.read_obj::<u32>(used_len)? != 16 {
//!     assert!(Instant::now() < deadline, "no completion");
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! while dev.isr() == 0 { std::thread::sleep(Duration::from_millis(1)); }
//! let mut isr = [0u8];
//! dev.region_read(bar4, 0x1000, &mut isr);         // reading ISR clears it
//! assert_eq!(isr, [1]);
//! assert!(!dev.intx_level());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod chain;
mod console;
mod device;
mod interrupt;
mod pci;
mod rng;
mod worker;

pub use chain::{avail_overrun, check_chain, ChainError, ChainShape};
pub use console::{
    Console, ConsoleInput, CONSOLE_CONFIG_EMERG_WR, CONSOLE_CONFIG_LEN, CONSOLE_INPUT_CAPACITY,
    CONSOLE_MAX_TX_CHAIN, CONSOLE_QUEUE_SIZE, VIRTIO_CONSOLE_F_EMERG_WRITE,
    VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_F_SIZE,
};
pub use device::{ActivatedQueue, InterruptKind, QueuePosition, VirtioDevice, VirtioInterrupt};
pub use interrupt::{VIRTIO_ISR_CONFIG, VIRTIO_ISR_QUEUE, VIRTIO_NO_VECTOR};
pub use pci::{
    class_code, common, legacy, transitional_device_id, NotifierHook, QueueNotify,
    VirtioPciBuilder, VirtioPciDevice, VirtioPciState, VirtioQueueState, COMMON_CFG_OFFSET,
    DEVICE_CFG_OFFSET, ISR_CFG_OFFSET, LEGACY_BAR, MODERN_BAR, MODERN_BAR_SIZE, MODERN_REGION_SIZE,
    MSIX_BAR, NOTIFY_CFG_OFFSET, NOTIFY_OFF_MULTIPLIER, PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_COMMON_CFG,
    VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
    VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_MODERN_DEVICE_ID_BASE, VIRTIO_PCI_STATE_VERSION,
    VIRTIO_PCI_SUBSYSTEM_ID_QEMU, VIRTIO_PCI_VENDOR_ID, VIRTIO_QUEUE_MAX, VIRTIO_QUEUE_SIZE_MAX,
};
pub use rng::{EntropySource, HostEntropy, Rng, RNG_MAX_REQUEST, RNG_QUEUE_SIZE};

/// Errors of building a transport and of device activation (guest accesses never fail:
/// they end in a defined register value or device status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `disable-legacy=on` and `disable-modern=on` together.
    #[error("virtio-pci: neither interface is enabled: disable-legacy and disable-modern cannot both be on")]
    NoInterface,
    /// Legacy was requested for a device type without a transitional PCI ID.
    #[error("virtio device type {device_type} is modern-only (no transitional PCI ID): use disable-legacy=on")]
    LegacyNotAllowed {
        /// The virtio device type.
        device_type: u32,
    },
    /// The device has no queues or more than the transport's limit.
    #[error("device declares {count} queues: the PCI transport supports 1..={max}")]
    QueueCount {
        /// Declared queues.
        count: usize,
        /// The limit (1024).
        max: usize,
    },
    /// A queue maximum size is not a power of two in 1..=32768.
    #[error("queue {index}: maximum size {size} must be a power of two in 1..=32768")]
    QueueMaxSize {
        /// The queue.
        index: usize,
        /// Its declared maximum.
        size: u16,
    },
    /// The device configuration does not fit the legacy I/O BAR.
    #[error("device configuration of {len} bytes does not fit the 256-byte legacy I/O BAR after its {header}-byte header: use disable-legacy=on")]
    LegacyConfigTooLarge {
        /// Device configuration length.
        len: usize,
        /// Legacy header length (20, or 24 with MSI-X).
        header: usize,
    },
    /// A builder property name or value is not valid.
    #[error("property {name}={value}: {reason}")]
    Property {
        /// Property name.
        name: String,
        /// Given value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The MSI-X capability could not be declared.
    #[error(transparent)]
    Msix(#[from] vmkit_pci::MsixError),
    /// A BAR or capability could not be declared.
    #[error(transparent)]
    Pci(#[from] vmkit_pci::Error),
    /// An OS resource (eventfd, epoll, thread) could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The driver accepted features the device did not offer.
    #[error("driver features {requested:#x} include {unsupported:#x}, which the device does not offer (offered {offered:#x})")]
    FeaturesNotOffered {
        /// The driver's features.
        requested: u64,
        /// The offer.
        offered: u64,
        /// The bits outside the offer.
        unsupported: u64,
    },
    /// The device refused a feature combination.
    #[error("features {features:#x} refused by the device: {reason}")]
    FeaturesRefused {
        /// The driver's features.
        features: u64,
        /// Why.
        reason: String,
    },
    /// An enabled queue's rings are not inside guest memory (or misaligned).
    #[error("queue {index} is not usable: its descriptor table, available or used ring is outside guest memory")]
    QueueNotUsable {
        /// The queue.
        index: usize,
    },
    /// A device needs a queue the driver did not enable.
    #[error("{device}: queue {index} was not enabled by the driver")]
    MissingQueue {
        /// The device.
        device: &'static str,
        /// The missing queue.
        index: usize,
    },
    /// A device could not be paused for a snapshot.
    #[error("{device}: cannot be paused for a snapshot: {reason}")]
    Quiesce {
        /// The device.
        device: &'static str,
        /// Why.
        reason: String,
    },
    /// A saved transport state this device cannot take.
    #[error("virtio-pci state: {0}")]
    InvalidState(String),
    /// A device-specific activation failure.
    #[error("{device}: activation failed: {reason}")]
    Activate {
        /// The device.
        device: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
