//! The virtio PCI transport (virtio 1.x section 4.1), laid out as QEMU's `virtio-pci`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ids;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmkit_hw::{IrqLine, NullLine};
use vmkit_pci::config::{COMMAND_INTX_DISABLE, STATUS, STATUS_INTERRUPT};
use vmkit_pci::{
    BarDef, BarKind, ConfigSpace, ConfigSpaceState, MsiSignal, Msix, MsixState, NullMsiSignal,
    PciDevice, RegionIndex,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{ActivatedQueue, InterruptKind, QueuePosition, VirtioDevice};
use crate::interrupt::{DeviceInterrupt, Interrupts, IrqState};
use crate::{Error, Result};

/// Red Hat / Qumranet: the vendor (and subsystem vendor) ID of every virtio PCI function.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern-only device IDs are this plus the virtio device type.
pub const VIRTIO_PCI_MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// The subsystem ID QEMU gives modern-only functions (`PCI_SUBDEVICE_ID_QEMU`).
pub const VIRTIO_PCI_SUBSYSTEM_ID_QEMU: u16 = 0x1100;
/// Most queues one device may have (QEMU's `VIRTIO_QUEUE_MAX`; the notify region holds
/// this many 4-byte doorbells).
pub const VIRTIO_QUEUE_MAX: usize = 1024;
/// Largest split-queue size (virtio 1.x 2.7).
pub const VIRTIO_QUEUE_SIZE_MAX: u16 = 32768;

/// BAR of the legacy (virtio 0.9.5) I/O register block.
pub const LEGACY_BAR: u8 = 0;
/// BAR of the MSI-X table and PBA.
pub const MSIX_BAR: u8 = 1;
/// BAR of the modern register regions (64-bit, prefetchable).
pub const MODERN_BAR: u8 = 4;
/// Size of the modern BAR (QEMU: the four 4 KiB regions, rounded to a power of two).
pub const MODERN_BAR_SIZE: u64 = 0x4000;
/// Offset of the common configuration in the modern BAR.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Offset of the ISR byte in the modern BAR.
pub const ISR_CFG_OFFSET: u64 = 0x1000;
/// Offset of the device configuration in the modern BAR.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification doorbells in the modern BAR.
pub const NOTIFY_CFG_OFFSET: u64 = 0x3000;
/// Size of each modern region.
pub const MODERN_REGION_SIZE: u64 = 0x1000;
/// `notify_off_multiplier`: queue `n` rings at `NOTIFY_CFG_OFFSET + 4 * n` (QEMU with
/// `page-per-vq=off`).
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

/// PCI capability ID of the vendor-specific capabilities virtio uses.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// `cfg_type` of the common configuration capability.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type` of the notification capability.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type` of the ISR capability.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type` of the device configuration capability.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type` of the PCI configuration access capability (a window onto the modern BAR).
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// Offsets of `struct virtio_pci_common_cfg` in the common configuration region.
pub mod common {
    /// `le32 device_feature_select` (RW).
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// `le32 device_feature` (RO).
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// `le32 driver_feature_select` (RW).
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// `le32 driver_feature` (RW).
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// `le16 msix_config` (RW).
    pub const MSIX_CONFIG: u64 = 0x10;
    /// `le16 num_queues` (RO).
    pub const NUM_QUEUES: u64 = 0x12;
    /// `u8 device_status` (RW).
    pub const DEVICE_STATUS: u64 = 0x14;
    /// `u8 config_generation` (RO).
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// `le16 queue_select` (RW).
    pub const QUEUE_SELECT: u64 = 0x16;
    /// `le16 queue_size` (RW).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// `le16 queue_msix_vector` (RW).
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    /// `le16 queue_enable` (RW).
    pub const QUEUE_ENABLE: u64 = 0x1c;
    /// `le16 queue_notify_off` (RO).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    /// `le64 queue_desc` (RW), as two dwords.
    pub const QUEUE_DESC_LO: u64 = 0x20;
    /// High dword of `queue_desc`.
    pub const QUEUE_DESC_HI: u64 = 0x24;
    /// `le64 queue_driver` (the available ring), as two dwords.
    pub const QUEUE_DRIVER_LO: u64 = 0x28;
    /// High dword of `queue_driver`.
    pub const QUEUE_DRIVER_HI: u64 = 0x2c;
    /// `le64 queue_device` (the used ring), as two dwords.
    pub const QUEUE_DEVICE_LO: u64 = 0x30;
    /// High dword of `queue_device`.
    pub const QUEUE_DEVICE_HI: u64 = 0x34;
}

/// Offsets of the legacy register block in the legacy I/O BAR (virtio 0.9.5).
pub mod legacy {
    /// `u32` host (device) features, bits 0..31 (RO).
    pub const HOST_FEATURES: u64 = 0x00;
    /// `u32` guest (driver) features (RW).
    pub const GUEST_FEATURES: u64 = 0x04;
    /// `u32` page frame number of the selected queue (RW; 0 resets the device).
    pub const QUEUE_PFN: u64 = 0x08;
    /// `u16` size of the selected queue (RO).
    pub const QUEUE_NUM: u64 = 0x0c;
    /// `u16` queue select (RW).
    pub const QUEUE_SEL: u64 = 0x0e;
    /// `u16` queue notify (write the queue index).
    pub const QUEUE_NOTIFY: u64 = 0x10;
    /// `u8` device status (RW).
    pub const STATUS: u64 = 0x12;
    /// `u8` ISR status (RO, read clears).
    pub const ISR: u64 = 0x13;
    /// `u16` MSI-X configuration vector (only while MSI-X is enabled).
    pub const MSI_CONFIG_VECTOR: u64 = 0x14;
    /// `u16` MSI-X vector of the selected queue (only while MSI-X is enabled).
    pub const MSI_QUEUE_VECTOR: u64 = 0x16;
    /// Device configuration offset without MSI-X enabled.
    pub const CONFIG: u64 = 0x14;
    /// Device configuration offset with MSI-X enabled.
    pub const CONFIG_MSIX: u64 = 0x18;
    /// Legacy ring alignment (`VIRTIO_PCI_VRING_ALIGN`).
    pub const VRING_ALIGN: u64 = 4096;
    /// Shift from a page frame number to an address.
    pub const QUEUE_ADDR_SHIFT: u32 = 12;
}

/// The transitional (legacy-capable) PCI device ID of a virtio device type, if it has one
/// (net 0x1000, block 0x1001, balloon 0x1002, console 0x1003, SCSI 0x1004, rng 0x1005,
/// 9p 0x1009).
pub fn transitional_device_id(device_type: u32) -> Option<u16> {
    let id = match device_type {
        virtio_ids::VIRTIO_ID_NET => virtio_ids::VIRTIO_TRANS_ID_NET,
        virtio_ids::VIRTIO_ID_BLOCK => virtio_ids::VIRTIO_TRANS_ID_BLOCK,
        virtio_ids::VIRTIO_ID_BALLOON => virtio_ids::VIRTIO_TRANS_ID_BALLOON,
        virtio_ids::VIRTIO_ID_CONSOLE => virtio_ids::VIRTIO_TRANS_ID_CONSOLE,
        virtio_ids::VIRTIO_ID_SCSI => virtio_ids::VIRTIO_TRANS_ID_SCSI,
        virtio_ids::VIRTIO_ID_RNG => virtio_ids::VIRTIO_TRANS_ID_RNG,
        virtio_ids::VIRTIO_ID_9P => virtio_ids::VIRTIO_TRANS_ID_9P,
        _ => return None,
    };
    u16::try_from(id).ok()
}

/// The class code (base class, sub-class, prog-if) QEMU gives a virtio device type's PCI
/// function: net 02/00 (Ethernet), block and SCSI 01/00, console and vsock 07/80
/// (communication), GPU 03/80, input 09/80, fs 01/80, everything else ff/00.
pub fn class_code(device_type: u32) -> (u8, u8, u8) {
    match device_type {
        virtio_ids::VIRTIO_ID_NET => (0x02, 0x00, 0x00),
        virtio_ids::VIRTIO_ID_BLOCK | virtio_ids::VIRTIO_ID_SCSI => (0x01, 0x00, 0x00),
        virtio_ids::VIRTIO_ID_CONSOLE | virtio_ids::VIRTIO_ID_VSOCK => (0x07, 0x80, 0x00),
        virtio_ids::VIRTIO_ID_GPU => (0x03, 0x80, 0x00),
        virtio_ids::VIRTIO_ID_INPUT => (0x09, 0x80, 0x00),
        virtio_ids::VIRTIO_ID_FS => (0x01, 0x80, 0x00),
        _ => (0xff, 0x00, 0x00),
    }
}

/// Where one queue's doorbell is, for an ioeventfd: the machine adds the region's base
/// address (from its PCI bus mapping) to `offset`.
#[derive(Debug, Clone)]
pub struct QueueNotify {
    /// The queue index.
    pub queue: u16,
    /// [`RegionIndex::Bar`]`(4)` (modern, memory) or `Bar(0)` (legacy, port I/O).
    pub region: RegionIndex,
    /// Offset of the doorbell within the BAR.
    pub offset: u64,
    /// Access length to match: 0 = any (the modern doorbell; KVM's no-length MMIO
    /// ioeventfd, as QEMU registers it), 2 for the legacy port.
    pub len: u32,
    /// Value to match: the queue index on the shared legacy port, `None` for modern.
    pub datamatch: Option<u64>,
    /// The queue's notification eventfd (the one the device waits on).
    pub eventfd: Arc<EventFd>,
}

/// Where a transport reports the doorbells that should become ioeventfds, as QEMU's
/// `virtio_bus_set_host_notifier` / `ioeventfd_assign`: the machine hangs an ioeventfd on
/// each [`QueueNotify`]'s region (vmkit-memory's `add_eventfd`, which KVM's listener turns
/// into a `KVM_IOEVENTFD`), so a guest doorbell signals the queue's eventfd without an exit.
///
/// The transport calls [`notifiers_changed`](Self::notifiers_changed) when the device
/// starts (`DRIVER_OK`, with every enabled queue's doorbells) and before it stops (a virtio
/// or machine reset, with none), holding its own lock: the hook must not call back into the
/// transport. The slow path (an exit writing the eventfd) keeps working for doorbells the
/// hook could not place.
pub trait NotifierHook: Send + Sync {
    /// The complete set of doorbells to route to ioeventfds now (empty: remove them all).
    fn notifiers_changed(&self, notifiers: &[QueueNotify]);
}

struct QueueSlot {
    queue: Queue,
    eventfd: Arc<EventFd>,
}

/// Builder of a [`VirtioPciDevice`], with QEMU's property names.
///
/// ```
/// # use vmkit_virtio::VirtioPciBuilder;
/// let b = VirtioPciBuilder::new().set("disable-legacy", "on")?.set("vectors", "4")?;
/// # let _ = b;
/// # Ok::<(), vmkit_virtio::Error>(())
/// ```
pub struct VirtioPciBuilder {
    disable_legacy: Option<bool>,
    disable_modern: bool,
    vectors: Option<u16>,
    class: Option<(u8, u8, u8)>,
    intx: Arc<dyn IrqLine>,
    msi: Arc<dyn MsiSignal>,
    ioeventfd: bool,
    notifier_hook: Option<Arc<dyn NotifierHook>>,
}

impl Default for VirtioPciBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for VirtioPciBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciBuilder")
            .field("disable_legacy", &self.disable_legacy)
            .field("disable_modern", &self.disable_modern)
            .field("vectors", &self.vectors)
            .field("class", &self.class)
            .field("ioeventfd", &self.ioeventfd)
            .field("notifier_hook", &self.notifier_hook.is_some())
            .finish_non_exhaustive()
    }
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(Error::Property {
            name: name.to_string(),
            value: value.to_string(),
            reason: "expected on/off",
        }),
    }
}

impl VirtioPciBuilder {
    /// QEMU's pc defaults: transitional (legacy and modern both on) for device types that
    /// have a transitional ID, modern-only for the rest; one MSI-X vector per queue plus
    /// one for configuration; INTx and MSI wired to nothing.
    pub fn new() -> Self {
        VirtioPciBuilder {
            disable_legacy: None,
            disable_modern: false,
            vectors: None,
            class: None,
            intx: Arc::new(NullLine),
            msi: Arc::new(NullMsiSignal),
            ioeventfd: true,
            notifier_hook: None,
        }
    }

    /// `ioeventfd` (QEMU's property, default on): report the doorbells to the
    /// [`notifier_hook`](Self::notifier_hook) so the machine makes them ioeventfds. Off:
    /// every doorbell is an exit (the vCPU thread writes the queue's eventfd).
    pub fn ioeventfd(mut self, on: bool) -> Self {
        self.ioeventfd = on;
        self
    }

    /// Where the doorbells go for ioeventfds (see [`NotifierHook`]); without one (or with
    /// `ioeventfd=off`) doorbells are exits.
    pub fn notifier_hook(mut self, hook: Arc<dyn NotifierHook>) -> Self {
        self.notifier_hook = Some(hook);
        self
    }

    /// `disable-legacy`: no legacy I/O BAR (a modern-only device, ID 0x1040 + type,
    /// revision 1).
    pub fn disable_legacy(mut self, on: bool) -> Self {
        self.disable_legacy = Some(on);
        self
    }

    /// `disable-modern`: no modern BAR and capabilities (a legacy-only device).
    pub fn disable_modern(mut self, on: bool) -> Self {
        self.disable_modern = on;
        self
    }

    /// `vectors`: the MSI-X table size (0 = no MSI-X, INTx only).
    pub fn vectors(mut self, vectors: u16) -> Self {
        self.vectors = Some(vectors);
        self
    }

    /// `class`: override the class code (base class, sub-class, prog-if).
    pub fn class_code(mut self, class: (u8, u8, u8)) -> Self {
        self.class = Some(class);
        self
    }

    /// The INTx line (the function's INTA#, routed by the machine's chipset).
    pub fn intx(mut self, line: Arc<dyn IrqLine>) -> Self {
        self.intx = line;
        self
    }

    /// Where MSI-X messages go (the machine's irqfds / GSI routes).
    pub fn msi(mut self, msi: Arc<dyn MsiSignal>) -> Self {
        self.msi = msi;
        self
    }

    /// Sets a property by QEMU's name: `disable-legacy` (on/off/auto), `disable-modern`
    /// (on/off), `ioeventfd` (on/off), `vectors` (a number).
    pub fn set(mut self, name: &str, value: &str) -> Result<Self> {
        match name {
            "disable-legacy" => {
                self.disable_legacy = match value {
                    "auto" => None,
                    v => Some(parse_bool("disable-legacy", v)?),
                }
            }
            "disable-modern" => self.disable_modern = parse_bool("disable-modern", value)?,
            "ioeventfd" => self.ioeventfd = parse_bool("ioeventfd", value)?,
            "vectors" => {
                self.vectors = Some(value.parse().map_err(|_| Error::Property {
                    name: name.to_string(),
                    value: value.to_string(),
                    reason: "expected a number 0..=2048",
                })?)
            }
            _ => {
                return Err(Error::Property {
                    name: name.to_string(),
                    value: value.to_string(),
                    reason: "unknown property (known: disable-legacy, disable-modern, \
                             ioeventfd, vectors)",
                })
            }
        }
        Ok(self)
    }

    /// Builds the transport around `device`, which will see `memory` at activation.
    pub fn build<M>(self, device: Box<dyn VirtioDevice<M>>, memory: M) -> Result<VirtioPciDevice<M>>
    where
        M: GuestAddressSpace + Send + 'static,
    {
        VirtioPciDevice::from_builder(self, device, memory)
    }
}

/// A virtio device on PCI: configuration space, the legacy I/O BAR (BAR0), MSI-X (BAR1),
/// the modern memory BAR (BAR4), and the virtio status machine, as QEMU's `virtio-pci`.
///
/// Register accesses arrive through [`PciDevice`] (the bus holds the device's mutex);
/// queue doorbells write the queue's eventfd and return — the device's own thread does the
/// work. See the crate docs for the register behaviour and the machine's wiring.
pub struct VirtioPciDevice<M: GuestAddressSpace> {
    config: ConfigSpace,
    device: Box<dyn VirtioDevice<M>>,
    memory: M,
    legacy: bool,
    modern: bool,
    device_type: u32,
    offered: u64,
    config_len: usize,
    status: u8,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    /// The features accepted at FEATURES_OK (or at a legacy DRIVER_OK).
    acked: Option<u64>,
    queue_select: u16,
    queues: Vec<QueueSlot>,
    active: bool,
    irq: Arc<Interrupts>,
    pci_cfg_cap: Option<u16>,
    legacy_bar_size: u64,
    generation: Arc<AtomicU64>,
    /// Where doorbells go for ioeventfds (`None`: `ioeventfd=off` or no hook).
    notifier_hook: Option<Arc<dyn NotifierHook>>,
    /// Active, but the device is stopped for a snapshot ([`VirtioPciDevice::pause`]) or
    /// restored and not started yet; [`VirtioPciDevice::resume`] starts it.
    paused: bool,
    /// Restored active: the doorbells still have to be told to the hook at resume.
    notifiers_pending: bool,
}

impl<M: GuestAddressSpace> std::fmt::Debug for VirtioPciDevice<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("device_type", &self.device_type)
            .field("legacy", &self.legacy)
            .field("modern", &self.modern)
            .field("status", &self.status)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

fn put_le(data: &mut [u8], value: u64) {
    let b = value.to_le_bytes();
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = b.get(i).copied().unwrap_or(0);
    }
}

impl<M: GuestAddressSpace + Send + 'static> VirtioPciDevice<M> {
    /// A builder with QEMU's defaults.
    pub fn builder() -> VirtioPciBuilder {
        VirtioPciBuilder::new()
    }

    fn from_builder(
        b: VirtioPciBuilder,
        device: Box<dyn VirtioDevice<M>>,
        memory: M,
    ) -> Result<Self> {
        let device_type = device.device_type();
        let trans_id = transitional_device_id(device_type);
        let legacy = !b.disable_legacy.unwrap_or(trans_id.is_none());
        let modern = !b.disable_modern;
        if !legacy && !modern {
            return Err(Error::NoInterface);
        }
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() > VIRTIO_QUEUE_MAX {
            return Err(Error::QueueCount {
                count: sizes.len(),
                max: VIRTIO_QUEUE_MAX,
            });
        }
        let mut queues = Vec::with_capacity(sizes.len());
        for (index, &size) in sizes.iter().enumerate() {
            let queue = Queue::new(size).map_err(|_| Error::QueueMaxSize { index, size })?;
            let eventfd = EventFd::new(EFD_NONBLOCK).map_err(|source| Error::Io {
                what: "creating a queue notification eventfd",
                source,
            })?;
            queues.push(QueueSlot {
                queue,
                eventfd: Arc::new(eventfd),
            });
        }
        let vectors = b.vectors.unwrap_or((sizes.len() + 1).min(2048) as u16);
        let config_len = device.config_len();
        let header = if vectors > 0 {
            legacy::CONFIG_MSIX
        } else {
            legacy::CONFIG
        };
        let legacy_bar_size = (header + config_len as u64).next_power_of_two();
        if legacy && legacy_bar_size > 256 {
            return Err(Error::LegacyConfigTooLarge {
                len: config_len,
                header: header as usize,
            });
        }
        let device_id = match (legacy, trans_id) {
            (true, Some(id)) => id,
            (true, None) => return Err(Error::LegacyNotAllowed { device_type }),
            (false, _) => VIRTIO_PCI_MODERN_DEVICE_ID_BASE.wrapping_add(device_type as u16),
        };
        let (class, subclass, prog_if) = b.class.unwrap_or_else(|| class_code(device_type));
        let revision = if legacy { 0 } else { 1 };
        let mut config = ConfigSpace::new(
            VIRTIO_PCI_VENDOR_ID,
            device_id,
            class,
            subclass,
            prog_if,
            revision,
        );
        let subsystem = if legacy {
            device_type as u16
        } else {
            VIRTIO_PCI_SUBSYSTEM_ID_QEMU
        };
        config.set_subsystem(VIRTIO_PCI_VENDOR_ID, subsystem);
        config.set_interrupt_pin(1);

        if legacy {
            config.add_bar(
                LEGACY_BAR,
                BarDef {
                    kind: BarKind::Io,
                    size: legacy_bar_size,
                    prefetchable: false,
                },
            )?;
        }
        let mut pci_cfg_cap = None;
        if modern {
            let caps = [
                (VIRTIO_PCI_CAP_COMMON_CFG, COMMON_CFG_OFFSET),
                (VIRTIO_PCI_CAP_ISR_CFG, ISR_CFG_OFFSET),
                (VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_CFG_OFFSET),
                (VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_CFG_OFFSET),
            ];
            for (cfg_type, offset) in caps {
                let mut body = vec![0u8; 14];
                body[0] = if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
                    20
                } else {
                    16
                };
                body[1] = cfg_type;
                body[2] = MODERN_BAR;
                body[6..10].copy_from_slice(&(offset as u32).to_le_bytes());
                body[10..14].copy_from_slice(&(MODERN_REGION_SIZE as u32).to_le_bytes());
                if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
                    body.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
                }
                config.add_capability(PCI_CAP_ID_VNDR, &body)?;
            }
            config.add_bar(
                MODERN_BAR,
                BarDef {
                    kind: BarKind::Mem64,
                    size: MODERN_BAR_SIZE,
                    prefetchable: true,
                },
            )?;
            // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and the data window are
            // guest-writable.
            let mut body = vec![0u8; 18];
            body[0] = 20;
            body[1] = VIRTIO_PCI_CAP_PCI_CFG;
            let cap = config.add_capability(PCI_CAP_ID_VNDR, &body)?;
            config.set_write_mask_byte(cap + 4, 0xff);
            config.set_write_mask_dword(cap + 8, u32::MAX);
            config.set_write_mask_dword(cap + 12, u32::MAX);
            config.set_write_mask_dword(cap + 16, u32::MAX);
            pci_cfg_cap = Some(cap);
        }
        let msix = if vectors > 0 {
            let (size, pba) = Msix::exclusive_bar_layout(vectors);
            let mut msix = Msix::new(vectors, MSIX_BAR, 0, MSIX_BAR, pba, b.msi)?;
            msix.add_capability(&mut config)?;
            config.add_bar(
                MSIX_BAR,
                BarDef {
                    kind: BarKind::Mem32,
                    size,
                    prefetchable: false,
                },
            )?;
            Some(msix)
        } else {
            None
        };
        let mut offered = device.device_features();
        if modern {
            offered |= 1 << VIRTIO_F_VERSION_1;
        } else {
            offered &= !(1 << VIRTIO_F_VERSION_1);
        }
        let irq = Interrupts::new(IrqState::new(msix, sizes.len(), b.intx));
        Ok(VirtioPciDevice {
            config,
            device,
            memory,
            legacy,
            modern,
            device_type,
            offered,
            config_len,
            status: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            acked: None,
            queue_select: 0,
            queues,
            active: false,
            irq,
            pci_cfg_cap,
            legacy_bar_size,
            generation: Arc::new(AtomicU64::new(0)),
            notifier_hook: b.notifier_hook.filter(|_| b.ioeventfd),
            paused: false,
            notifiers_pending: false,
        })
    }

    /// The virtio device type (`VIRTIO_ID_*`).
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Whether the legacy I/O BAR is present.
    pub fn has_legacy(&self) -> bool {
        self.legacy
    }

    /// Whether the modern BAR and capabilities are present.
    pub fn has_modern(&self) -> bool {
        self.modern
    }

    /// Size of the legacy I/O BAR.
    pub fn legacy_bar_size(&self) -> u64 {
        self.legacy_bar_size
    }

    /// Features offered to the driver (the device's plus `VIRTIO_F_VERSION_1` when modern).
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// The features in force: accepted at `FEATURES_OK` or a legacy `DRIVER_OK`.
    pub fn acked_features(&self) -> Option<u64> {
        self.acked
    }

    /// The device status byte (with `NEEDS_RESET` once the device asked for a reset).
    pub fn status(&self) -> u8 {
        with_needs_reset(self.status, self.irq.lock().needs_reset)
    }

    /// Whether the device is running (activated at `DRIVER_OK`, not reset since).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The ISR byte (without clearing it).
    pub fn isr(&self) -> u8 {
        self.irq.lock().isr
    }

    /// The INTx level the transport drives.
    pub fn intx_level(&self) -> bool {
        self.irq.lock().level()
    }

    /// Whether doorbells are reported for ioeventfds (`ioeventfd=on` and a hook).
    pub fn ioeventfd_enabled(&self) -> bool {
        self.notifier_hook.is_some()
    }

    /// Whether MSI-X is enabled.
    pub fn msix_enabled(&self) -> bool {
        self.irq.lock().msix_enabled()
    }

    /// The wrapped device.
    pub fn device(&self) -> &dyn VirtioDevice<M> {
        &*self.device
    }

    /// The queue's notification eventfd (stable for the transport's lifetime).
    pub fn queue_eventfd(&self, queue: u16) -> Option<Arc<EventFd>> {
        self.queues
            .get(usize::from(queue))
            .map(|q| Arc::clone(&q.eventfd))
    }

    /// Every doorbell to register as an ioeventfd now: while the device is active, each
    /// enabled queue's modern doorbell (BAR4, if modern) and legacy port (BAR0 +
    /// `QUEUE_NOTIFY` with the queue index as datamatch, if legacy); empty otherwise.
    /// Re-read it whenever [`notify_generation`](Self::notify_generation) changes (and
    /// when a BAR moves): the set changes at `DRIVER_OK` and at reset.
    pub fn notify_addresses(&self) -> Vec<QueueNotify> {
        let mut out = Vec::new();
        if !self.active {
            return out;
        }
        for (i, slot) in self.queues.iter().enumerate() {
            if !slot.queue.ready() {
                continue;
            }
            // i < VIRTIO_QUEUE_MAX.
            let queue = i as u16;
            if self.modern {
                out.push(QueueNotify {
                    queue,
                    region: RegionIndex::Bar(MODERN_BAR),
                    offset: NOTIFY_CFG_OFFSET + u64::from(NOTIFY_OFF_MULTIPLIER) * i as u64,
                    len: 0,
                    datamatch: None,
                    eventfd: Arc::clone(&slot.eventfd),
                });
            }
            if self.legacy {
                out.push(QueueNotify {
                    queue,
                    region: RegionIndex::Bar(LEGACY_BAR),
                    offset: legacy::QUEUE_NOTIFY,
                    len: 2,
                    datamatch: Some(u64::from(queue)),
                    eventfd: Arc::clone(&slot.eventfd),
                });
            }
        }
        out
    }

    /// Bumped whenever [`notify_addresses`](Self::notify_addresses) changes (activation,
    /// reset). A machine compares it after each region or configuration write.
    pub fn notify_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The same counter, readable without the device's lock.
    pub fn notify_generation_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.generation)
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn selected(&self) -> Option<&QueueSlot> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The selected queue, for configuration: `None` while the device runs (the driver
    /// must not change a live queue) or if the selector is out of range.
    fn selected_for_config(&mut self) -> Option<&mut Queue> {
        if self.active {
            return None;
        }
        self.queues
            .get_mut(usize::from(self.queue_select))
            .map(|s| &mut s.queue)
    }

    // ---- the virtio status machine ----

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.virtio_reset();
            return;
        }
        let old = self.status;
        let needs_reset = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        let features_ok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        let driver_ok = VIRTIO_CONFIG_S_DRIVER_OK as u8;
        // Bits only accumulate until a reset: the driver must not clear any (virtio 1.x
        // 2.1.2), so a write without DRIVER_OK does not stop a running device. NEEDS_RESET
        // belongs to the device: the driver cannot set it.
        let mut new = (value & !needs_reset) | old;
        if new & features_ok != 0 && old & features_ok == 0 && self.accept_features().is_err() {
            new &= !features_ok;
        }
        self.status = new;
        if new & driver_ok != 0 && old & driver_ok == 0 {
            self.irq.lock().driver_ok = true;
            if new & needs_reset == 0 {
                if let Err(_e) = self.activate() {
                    self.fail();
                }
            }
        }
    }

    /// Validates the driver's features at FEATURES_OK.
    fn accept_features(&mut self) -> Result<()> {
        let requested = self.driver_features;
        let unsupported = requested & !self.offered;
        if unsupported != 0 {
            return Err(Error::FeaturesNotOffered {
                requested,
                offered: self.offered,
                unsupported,
            });
        }
        self.device.ack_features(requested)?;
        self.acked = Some(requested);
        Ok(())
    }

    fn activate(&mut self) -> Result<()> {
        if self.acked.is_none() {
            // A legacy driver: features take effect at DRIVER_OK, masked to the offer.
            let f = self.driver_features & self.offered;
            self.device.ack_features(f)?;
            self.acked = Some(f);
        }
        self.start_device()?;
        self.active = true;
        self.bump_generation();
        if let Some(hook) = &self.notifier_hook {
            hook.notifiers_changed(&self.notify_addresses());
        }
        Ok(())
    }

    /// Hands the enabled queues (at their current positions) to the device.
    fn start_device(&mut self) -> Result<()> {
        let features = self.acked.unwrap_or(0);
        let event_idx = features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mem = self.memory.memory();
        let mut queues: Vec<ActivatedQueue> = Vec::new();
        for (index, slot) in self.queues.iter().enumerate() {
            if !slot.queue.ready() {
                continue;
            }
            if !slot.queue.is_valid(&*mem) {
                return Err(Error::QueueNotUsable { index });
            }
            let mut q =
                Queue::try_from(slot.queue.state()).map_err(|_| Error::QueueNotUsable { index })?;
            q.set_event_idx(event_idx);
            let fd = slot.eventfd.try_clone().map_err(|source| Error::Io {
                what: "duplicating a queue notification eventfd",
                source,
            })?;
            queues.push((index, q, fd));
        }
        drop(mem);
        let epoch = self.irq.lock().epoch;
        let interrupt = Arc::new(DeviceInterrupt {
            shared: Arc::clone(&self.irq),
            epoch,
        });
        self.device.activate(self.memory.clone(), interrupt, queues)
    }

    /// Activation failed: NEEDS_RESET and a configuration interrupt (QEMU's
    /// `virtio_error`).
    fn fail(&mut self) {
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        self.irq.lock().raise(InterruptKind::Config);
    }

    /// The virtio reset: stop the device, everything back to its reset value. MSI-X
    /// table contents survive (they are PCI state); pending bits are dropped.
    fn virtio_reset(&mut self) {
        {
            let mut irq = self.irq.lock();
            irq.epoch = irq.epoch.wrapping_add(1);
            irq.driver_ok = false;
            irq.needs_reset = false;
        }
        // The ioeventfds go first (QEMU's virtio_pci_stop_ioeventfd): doorbells from here
        // on exit and find the device inactive.
        if let (true, Some(hook)) = (self.active, &self.notifier_hook) {
            hook.notifiers_changed(&[]);
        }
        let _stopped = self.device.reset();
        self.paused = false;
        self.notifiers_pending = false;
        if self.active {
            self.active = false;
            self.bump_generation();
        }
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.acked = None;
        self.queue_select = 0;
        for slot in &mut self.queues {
            slot.queue.reset();
            let _ = slot.eventfd.read();
        }
        let mut irq = self.irq.lock();
        irq.config_vector = crate::VIRTIO_NO_VECTOR;
        irq.queue_vectors.fill(crate::VIRTIO_NO_VECTOR);
        if let Some(m) = &mut irq.msix {
            m.clear_all_pending();
        }
        irq.isr = 0;
        irq.update_line();
    }

    fn notify_queue(&self, queue: u64) {
        if !self.active {
            return;
        }
        if let Some(slot) = usize::try_from(queue).ok().and_then(|q| self.queues.get(q)) {
            if slot.queue.ready() {
                // The vCPU's whole share of a doorbell: one eventfd write.
                let _ = slot.eventfd.write(1);
            }
        }
    }

    // ---- modern BAR ----

    fn common_read(&self, offset: u64) -> u64 {
        use common::*;
        let q = self.selected();
        let irq = self.irq.lock();
        match offset {
            DEVICE_FEATURE_SELECT => u64::from(self.device_feature_select),
            DEVICE_FEATURE => match self.device_feature_select {
                0 => self.offered & 0xffff_ffff,
                1 => self.offered >> 32,
                _ => 0,
            },
            DRIVER_FEATURE_SELECT => u64::from(self.driver_feature_select),
            DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            MSIX_CONFIG => u64::from(irq.config_vector),
            NUM_QUEUES => self.queues.len() as u64,
            DEVICE_STATUS => u64::from(with_needs_reset(self.status, irq.needs_reset)),
            CONFIG_GENERATION => u64::from(irq.config_generation),
            QUEUE_SELECT => u64::from(self.queue_select),
            QUEUE_SIZE => q.map_or(0, |s| u64::from(s.queue.size())),
            QUEUE_MSIX_VECTOR => irq
                .queue_vectors
                .get(usize::from(self.queue_select))
                .map_or(0, |&v| u64::from(v)),
            QUEUE_ENABLE => q.map_or(0, |s| u64::from(s.queue.ready())),
            QUEUE_NOTIFY_OFF => q.map_or(0, |_| u64::from(self.queue_select)),
            QUEUE_DESC_LO => q.map_or(0, |s| s.queue.desc_table() & 0xffff_ffff),
            QUEUE_DESC_HI => q.map_or(0, |s| s.queue.desc_table() >> 32),
            QUEUE_DRIVER_LO => q.map_or(0, |s| s.queue.avail_ring() & 0xffff_ffff),
            QUEUE_DRIVER_HI => q.map_or(0, |s| s.queue.avail_ring() >> 32),
            QUEUE_DEVICE_LO => q.map_or(0, |s| s.queue.used_ring() & 0xffff_ffff),
            QUEUE_DEVICE_HI => q.map_or(0, |s| s.queue.used_ring() >> 32),
            _ => 0,
        }
    }

    fn common_write(&mut self, offset: u64, value: u64) {
        use common::*;
        let v32 = value as u32;
        match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select = v32,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = v32,
            DRIVER_FEATURE => {
                if self.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 != 0 || self.active {
                    return;
                }
                let f = u64::from(v32);
                self.driver_features = match self.driver_feature_select {
                    0 => (self.driver_features & !0xffff_ffff) | f,
                    1 => (self.driver_features & 0xffff_ffff) | f << 32,
                    _ => self.driver_features,
                };
            }
            MSIX_CONFIG => {
                let mut irq = self.irq.lock();
                irq.config_vector = irq.checked_vector(value as u16);
            }
            DEVICE_STATUS => self.write_status(value as u8),
            QUEUE_SELECT => self.queue_select = value as u16,
            QUEUE_SIZE => {
                if let Some(q) = self.selected_for_config() {
                    q.set_size(value as u16);
                }
            }
            QUEUE_MSIX_VECTOR => {
                let sel = usize::from(self.queue_select);
                let mut irq = self.irq.lock();
                let v = irq.checked_vector(value as u16);
                if let Some(slot) = irq.queue_vectors.get_mut(sel) {
                    *slot = v;
                }
            }
            // Only 1 is valid (the driver must not write 0); addresses and size were
            // checked as they were written.
            QUEUE_ENABLE if value as u16 == 1 => {
                if let Some(q) = self.selected_for_config() {
                    q.set_ready(true);
                }
            }
            QUEUE_DESC_LO | QUEUE_DESC_HI | QUEUE_DRIVER_LO | QUEUE_DRIVER_HI | QUEUE_DEVICE_LO
            | QUEUE_DEVICE_HI => {
                let Some(q) = self.selected_for_config() else {
                    return;
                };
                let (lo, hi) = if offset % 8 == 0 {
                    (Some(v32), None)
                } else {
                    (None, Some(v32))
                };
                match offset {
                    QUEUE_DESC_LO | QUEUE_DESC_HI => q.set_desc_table_address(lo, hi),
                    QUEUE_DRIVER_LO | QUEUE_DRIVER_HI => q.set_avail_ring_address(lo, hi),
                    _ => q.set_used_ring_address(lo, hi),
                }
            }
            _ => {}
        }
    }

    fn device_config_read(&self, offset: u64, data: &mut [u8]) {
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= self.config_len as u64 => self.device.read_config(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn device_config_write(&mut self, offset: u64, data: &[u8]) {
        if let Some(end) = offset.checked_add(data.len() as u64) {
            if end <= self.config_len as u64 {
                self.device.write_config(offset, data);
            }
        }
    }

    fn modern_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset / MODERN_REGION_SIZE {
            0 => {
                if data.len() == 8 && offset % 8 == 0 {
                    let lo = self.common_read(offset);
                    let hi = self.common_read(offset + 4);
                    put_le(data, lo & 0xffff_ffff | hi << 32);
                } else if data.len() <= 4 {
                    put_le(data, self.common_read(offset));
                } else {
                    data.fill(0);
                }
            }
            1 => {
                let isr = self.irq.lock().take_isr();
                put_le(data, u64::from(isr));
            }
            2 => self.device_config_read(offset - DEVICE_CFG_OFFSET, data),
            _ => data.fill(0),
        }
    }

    fn modern_write(&mut self, offset: u64, data: &[u8]) {
        match offset / MODERN_REGION_SIZE {
            0 => {
                if data.len() == 8 && offset % 8 == 0 {
                    let v = le_value(data);
                    self.common_write(offset, v & 0xffff_ffff);
                    self.common_write(offset + 4, v >> 32);
                } else if data.len() <= 4 {
                    self.common_write(offset, le_value(data));
                }
            }
            2 => self.device_config_write(offset - DEVICE_CFG_OFFSET, data),
            3 => self.notify_queue((offset - NOTIFY_CFG_OFFSET) / u64::from(NOTIFY_OFF_MULTIPLIER)),
            _ => {}
        }
    }

    // ---- legacy BAR ----

    fn legacy_config_offset(&self) -> u64 {
        if self.irq.lock().msix_enabled() {
            legacy::CONFIG_MSIX
        } else {
            legacy::CONFIG
        }
    }

    fn legacy_read(&mut self, offset: u64, data: &mut [u8]) {
        let config = self.legacy_config_offset();
        if offset >= config {
            self.device_config_read(offset - config, data);
            return;
        }
        let q = self.selected();
        let value = match offset {
            legacy::HOST_FEATURES => self.offered & 0xffff_ffff,
            legacy::GUEST_FEATURES => self.driver_features & 0xffff_ffff,
            legacy::QUEUE_PFN => q.map_or(0, |s| s.queue.desc_table() >> legacy::QUEUE_ADDR_SHIFT),
            legacy::QUEUE_NUM => q.map_or(0, |s| u64::from(s.queue.size())),
            legacy::QUEUE_SEL => u64::from(self.queue_select),
            legacy::STATUS => u64::from(self.status()),
            legacy::ISR => u64::from(self.irq.lock().take_isr()),
            legacy::MSI_CONFIG_VECTOR => u64::from(self.irq.lock().config_vector),
            legacy::MSI_QUEUE_VECTOR => {
                let irq = self.irq.lock();
                irq.queue_vectors
                    .get(usize::from(self.queue_select))
                    .map_or(u64::from(crate::VIRTIO_NO_VECTOR), |&v| u64::from(v))
            }
            _ => 0,
        };
        put_le(data, value);
    }

    fn legacy_write(&mut self, offset: u64, data: &[u8]) {
        let config = self.legacy_config_offset();
        if offset >= config {
            self.device_config_write(offset - config, data);
            return;
        }
        let value = le_value(data);
        match offset {
            legacy::GUEST_FEATURES
                if !self.active && self.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 == 0 =>
            {
                self.driver_features = value & 0xffff_ffff;
            }
            legacy::QUEUE_PFN => {
                let pfn = value & 0xffff_ffff;
                if pfn == 0 {
                    // QEMU: writing 0 to the PFN resets the device.
                    self.virtio_reset();
                    return;
                }
                let Some(q) = self.selected_for_config() else {
                    return;
                };
                let size = u64::from(q.size());
                let desc = pfn << legacy::QUEUE_ADDR_SHIFT;
                let avail = desc + 16 * size;
                // desc table + avail ring (flags, idx, ring, used_event), aligned.
                let used = (avail + 2 * (3 + size)).next_multiple_of(legacy::VRING_ALIGN);
                let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
                let (lo, hi) = split(desc);
                q.set_desc_table_address(lo, hi);
                let (lo, hi) = split(avail);
                q.set_avail_ring_address(lo, hi);
                let (lo, hi) = split(used);
                q.set_used_ring_address(lo, hi);
                q.set_ready(true);
            }
            legacy::QUEUE_SEL => self.queue_select = value as u16,
            legacy::QUEUE_NOTIFY => self.notify_queue(value & 0xffff),
            legacy::STATUS => self.write_status(value as u8),
            legacy::MSI_CONFIG_VECTOR => {
                let mut irq = self.irq.lock();
                irq.config_vector = irq.checked_vector(value as u16);
            }
            legacy::MSI_QUEUE_VECTOR => {
                let sel = usize::from(self.queue_select);
                let mut irq = self.irq.lock();
                let v = irq.checked_vector(value as u16);
                if let Some(slot) = irq.queue_vectors.get_mut(sel) {
                    *slot = v;
                }
            }
            _ => {}
        }
    }

    // ---- VIRTIO_PCI_CAP_PCI_CFG window ----

    /// The window's (offset in the modern BAR, length) if its bar is the modern BAR and
    /// its length is 1, 2 or 4 (as QEMU).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap?;
        let bar = self.config.byte(cap + 4);
        let len = self.config.dword(cap + 12) as usize;
        if bar != MODERN_BAR || !matches!(len, 1 | 2 | 4) {
            return None;
        }
        let off = u64::from(self.config.dword(cap + 8)) & !(len as u64 - 1);
        Some((off, len))
    }

    fn touches_pci_cfg_data(&self, offset: u16, len: usize) -> bool {
        self.pci_cfg_cap.is_some_and(|cap| {
            let (s, e) = (usize::from(offset), usize::from(offset) + len);
            s < usize::from(cap) + 20 && usize::from(cap) + 16 < e
        })
    }
}

impl<M: GuestAddressSpace + Send + 'static> PciDevice for VirtioPciDevice<M> {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        if self.touches_pci_cfg_data(offset, data.len()) {
            if let (Some((off, len)), Some(cap)) = (self.pci_cfg_window(), self.pci_cfg_cap) {
                let mut buf = [0u8; 4];
                self.modern_read(off, &mut buf[..len]);
                for (i, b) in buf[..len].iter().enumerate() {
                    self.config.set_byte(cap + 16 + i as u16, *b);
                }
            }
        }
        self.config.read(offset, data);
        // Status bit 3 reflects the function's INTx state (ISR non-zero).
        let status = usize::from(STATUS);
        let start = usize::from(offset);
        if (start..start + data.len()).contains(&status) && self.irq.lock().isr != 0 {
            data[status - start] |= STATUS_INTERRUPT as u8;
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        {
            let command = self.config.command();
            let mut irq = self.irq.lock();
            irq.intx_disabled = command & COMMAND_INTX_DISABLE != 0;
            let cfg = &self.config;
            if let Some(m) = &mut irq.msix {
                if m.touches_control(offset, data.len()) {
                    m.config_written(cfg);
                }
            }
            irq.update_line();
        }
        if self.touches_pci_cfg_data(offset, data.len()) {
            if let (Some((off, len)), Some(cap)) = (self.pci_cfg_window(), self.pci_cfg_cap) {
                let mut buf = [0u8; 4];
                self.config.read(cap + 16, &mut buf);
                self.modern_write(off, &buf[..len]);
            }
        }
    }

    fn region_read(&mut self, region: RegionIndex, offset: u64, data: &mut [u8]) {
        match region {
            RegionIndex::Bar(LEGACY_BAR) if self.legacy => self.legacy_read(offset, data),
            RegionIndex::Bar(MSIX_BAR) => {
                let irq = self.irq.lock();
                match &irq.msix {
                    Some(m) => {
                        let pba = u64::from(m.pba_location().1);
                        if offset < m.table_len() {
                            m.table_read(offset, data)
                        } else if offset >= pba {
                            m.pba_read(offset - pba, data)
                        } else {
                            data.fill(0)
                        }
                    }
                    None => data.fill(0xff),
                }
            }
            RegionIndex::Bar(MODERN_BAR) if self.modern => self.modern_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn region_write(&mut self, region: RegionIndex, offset: u64, data: &[u8]) {
        match region {
            RegionIndex::Bar(LEGACY_BAR) if self.legacy => self.legacy_write(offset, data),
            RegionIndex::Bar(MSIX_BAR) => {
                let mut irq = self.irq.lock();
                if let Some(m) = &mut irq.msix {
                    if offset < m.table_len() {
                        m.table_write(offset, data);
                    }
                }
            }
            RegionIndex::Bar(MODERN_BAR) if self.modern => self.modern_write(offset, data),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.virtio_reset();
        self.config.reset();
        let mut irq = self.irq.lock();
        if let Some(m) = &mut irq.msix {
            m.reset();
        }
        irq.intx_disabled = false;
        irq.update_line();
    }
}

/// The layout version of [`VirtioPciState`].
pub const VIRTIO_PCI_STATE_VERSION: u32 = 1;

/// One queue as the transport holds it: the driver's configuration and, for an active
/// device, where the device stands in its rings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioQueueState {
    /// `queue_size`.
    pub size: u16,
    /// `queue_enable`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available (driver) ring address.
    pub avail_ring: u64,
    /// Used (device) ring address.
    pub used_ring: u64,
    /// The next available-ring entry the device reads.
    pub next_avail: u16,
    /// The next used-ring entry the device writes.
    pub next_used: u16,
}

/// A virtio PCI function as plain data (QEMU's `virtio_save` with `virtio_pci_save_config`
/// and `virtio_pci_save_queue`): PCI configuration space, MSI-X table and PBA, the device
/// status and features, every queue's configuration and position, the vectors, ISR and
/// the device configuration bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioPciState {
    /// Layout version, [`VIRTIO_PCI_STATE_VERSION`].
    pub version: u32,
    /// The virtio device type (checked against the destination's).
    pub device_type: u32,
    /// Whether the legacy interface is present (checked).
    pub legacy: bool,
    /// Whether the modern interface is present (checked).
    pub modern: bool,
    /// PCI configuration space.
    pub config: ConfigSpaceState,
    /// MSI-X, if the function has it.
    pub msix: Option<MsixState>,
    /// `device_status`.
    pub status: u8,
    /// `device_feature_select`.
    pub device_feature_select: u32,
    /// `driver_feature_select`.
    pub driver_feature_select: u32,
    /// The driver's feature bits as written.
    pub driver_features: u64,
    /// The features accepted (at `FEATURES_OK` or a legacy `DRIVER_OK`).
    pub acked: Option<u64>,
    /// `queue_select`.
    pub queue_select: u16,
    /// Every queue, in index order.
    pub queues: Vec<VirtioQueueState>,
    /// The device was running (it is started again on the destination).
    pub active: bool,
    /// The ISR byte.
    pub isr: u8,
    /// `msix_config`.
    pub config_vector: u16,
    /// `queue_msix_vector` of every queue.
    pub queue_vectors: Vec<u16>,
    /// `DRIVER_OK` was seen (configuration interrupts are delivered).
    pub driver_ok: bool,
    /// `config_generation`.
    pub config_generation: u8,
    /// The device configuration as the driver reads it.
    pub device_config: Vec<u8>,
}

impl<M: GuestAddressSpace + Send + 'static> VirtioPciDevice<M> {
    /// Stops an active device for a snapshot: its requests in flight complete and reach
    /// the used rings ([`VirtioDevice::quiesce`]), and the queue positions it reports are
    /// kept here. Doorbells rung meanwhile wait in their eventfds. Nothing to do for an
    /// inactive or already paused device. On error the device is as it was.
    pub fn pause(&mut self) -> Result<()> {
        if !self.active || self.paused {
            return Ok(());
        }
        let positions = self.device.quiesce()?;
        self.paused = true;
        for QueuePosition {
            index,
            next_avail,
            next_used,
        } in positions
        {
            if let Some(slot) = self.queues.get_mut(index) {
                slot.queue.set_next_avail(next_avail);
                slot.queue.set_next_used(next_used);
            }
        }
        Ok(())
    }

    /// Whether the device is active but not running (paused, or restored and not resumed).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts a paused (or restored) device again with its queues where they stood; a
    /// restored device also gets its doorbells' ioeventfds (the [`NotifierHook`]), so
    /// call it after the machine mapped the function's BARs. A device that fails to start
    /// goes to `NEEDS_RESET` (as at `DRIVER_OK`) and the error is returned.
    pub fn resume(&mut self) -> Result<()> {
        if !self.paused {
            return Ok(());
        }
        self.paused = false;
        if let Err(e) = self.start_device() {
            self.fail();
            return Err(e);
        }
        if std::mem::take(&mut self.notifiers_pending) {
            self.bump_generation();
            if let Some(hook) = &self.notifier_hook {
                hook.notifiers_changed(&self.notify_addresses());
            }
        }
        Ok(())
    }

    /// The function's state. An active device is paused first ([`pause`](Self::pause))
    /// and stays paused: [`resume`](Self::resume) it to go on.
    pub fn state(&mut self) -> Result<VirtioPciState> {
        self.pause()?;
        let mut device_config = vec![0u8; self.config_len];
        self.device.read_config(0, &mut device_config);
        let irq = self.irq.lock();
        Ok(VirtioPciState {
            version: VIRTIO_PCI_STATE_VERSION,
            device_type: self.device_type,
            legacy: self.legacy,
            modern: self.modern,
            config: self.config.state(),
            msix: irq.msix.as_ref().map(Msix::state),
            status: with_needs_reset(self.status, irq.needs_reset),
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            acked: self.acked,
            queue_select: self.queue_select,
            queues: self
                .queues
                .iter()
                .map(|s| VirtioQueueState {
                    size: s.queue.size(),
                    ready: s.queue.ready(),
                    desc_table: s.queue.desc_table(),
                    avail_ring: s.queue.avail_ring(),
                    used_ring: s.queue.used_ring(),
                    next_avail: s.queue.next_avail(),
                    next_used: s.queue.next_used(),
                })
                .collect(),
            active: self.active,
            isr: irq.isr,
            config_vector: irq.config_vector,
            queue_vectors: irq.queue_vectors.clone(),
            driver_ok: irq.driver_ok,
            config_generation: irq.config_generation,
            device_config,
        })
    }

    /// Puts the function into `state` (a device built with the same options). The PCI
    /// configuration, MSI-X (whose routes are reported to the machine's
    /// [`MsiSignal`](vmkit_pci::MsiSignal)), status, features, queues and vectors are
    /// taken; the INTx level is driven to the restored ISR. A device that was active is
    /// left paused: once the machine has mapped the BARs
    /// ([`PciBus::update_mappings`](vmkit_pci::PciBus::update_mappings)), call
    /// [`resume`](Self::resume) to start it and place its ioeventfds.
    ///
    /// A state of another version, device type, interface set, queue count or MSI-X size
    /// is refused before anything changes.
    pub fn restore(&mut self, state: &VirtioPciState) -> Result<()> {
        let bad = |text: String| Err(Error::InvalidState(text));
        if state.version != VIRTIO_PCI_STATE_VERSION {
            return bad(format!(
                "version {} is not supported (this build reads version \
                 {VIRTIO_PCI_STATE_VERSION})",
                state.version
            ));
        }
        if (state.device_type, state.legacy, state.modern)
            != (self.device_type, self.legacy, self.modern)
        {
            return bad(format!(
                "saved device type {} (legacy {}, modern {}), this function is type {} \
                 (legacy {}, modern {})",
                state.device_type,
                state.legacy,
                state.modern,
                self.device_type,
                self.legacy,
                self.modern
            ));
        }
        if state.queues.len() != self.queues.len() || state.queue_vectors.len() != self.queues.len()
        {
            return bad(format!(
                "{} queues ({} vectors) saved, this device has {}",
                state.queues.len(),
                state.queue_vectors.len(),
                self.queues.len()
            ));
        }
        let vectors = self.irq.lock().msix.as_ref().map(Msix::vectors);
        let saved_vectors = state.msix.as_ref().map(|m| m.table.len());
        if vectors.map(usize::from) != saved_vectors {
            return bad(format!(
                "MSI-X with {saved_vectors:?} vectors saved, this function has {vectors:?}"
            ));
        }
        if let Some(m) = &state.msix {
            if m.pba.len() != m.table.len().div_ceil(64) {
                return bad(format!(
                    "MSI-X PBA of {} words for {} vectors",
                    m.pba.len(),
                    m.table.len()
                ));
            }
            if m.version != vmkit_pci::PCI_STATE_VERSION {
                return bad(format!(
                    "MSI-X state version {} is not supported (this build reads version {})",
                    m.version,
                    vmkit_pci::PCI_STATE_VERSION
                ));
            }
        }
        if let Some(acked) = state.acked {
            if acked & !self.offered != 0 {
                return bad(format!(
                    "saved features {acked:#x} are not all offered here ({:#x})",
                    self.offered
                ));
            }
        }
        // Checked first: nothing changes on a bad configuration space.
        let mut config = self.config.clone();
        config.restore(&state.config)?;
        let mut queues = Vec::with_capacity(state.queues.len());
        for (index, (slot, q)) in self.queues.iter().zip(&state.queues).enumerate() {
            let mut queue = Queue::new(slot.queue.max_size()).map_err(|_| Error::QueueMaxSize {
                index,
                size: q.size,
            })?;
            queue.set_size(q.size);
            let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
            let (lo, hi) = split(q.desc_table);
            queue.set_desc_table_address(lo, hi);
            let (lo, hi) = split(q.avail_ring);
            queue.set_avail_ring_address(lo, hi);
            let (lo, hi) = split(q.used_ring);
            queue.set_used_ring_address(lo, hi);
            queue.set_next_avail(q.next_avail);
            queue.set_next_used(q.next_used);
            queue.set_ready(q.ready);
            if (
                queue.size(),
                queue.desc_table(),
                queue.avail_ring(),
                queue.used_ring(),
            ) != (q.size, q.desc_table, q.avail_ring, q.used_ring)
            {
                return bad(format!(
                    "queue {index}: size {} or ring addresses {:#x}/{:#x}/{:#x} are not valid \
                     for this queue (maximum size {})",
                    q.size,
                    q.desc_table,
                    q.avail_ring,
                    q.used_ring,
                    slot.queue.max_size()
                ));
            }
            queues.push(queue);
        }
        if self.active {
            self.virtio_reset();
        }
        if let Some(acked) = state.acked {
            self.device.ack_features(acked)?;
        }
        self.device.restore_config(&state.device_config);
        self.config = config;
        for (slot, queue) in self.queues.iter_mut().zip(queues) {
            slot.queue = queue;
            let _ = slot.eventfd.read();
        }
        self.status = state.status;
        self.device_feature_select = state.device_feature_select;
        self.driver_feature_select = state.driver_feature_select;
        self.driver_features = state.driver_features;
        self.acked = state.acked;
        self.queue_select = state.queue_select;
        self.active = state.active;
        self.paused = state.active;
        self.notifiers_pending = state.active;
        let command = self.config.command();
        let mut irq = self.irq.lock();
        if let (Some(m), Some(saved)) = (&mut irq.msix, &state.msix) {
            m.restore(saved)?;
        }
        irq.isr = state.isr;
        irq.config_vector = irq.checked_vector(state.config_vector);
        let checked: Vec<u16> = state
            .queue_vectors
            .iter()
            .map(|&v| irq.checked_vector(v))
            .collect();
        irq.queue_vectors = checked;
        irq.driver_ok = state.driver_ok;
        irq.config_generation = state.config_generation;
        irq.intx_disabled = command & COMMAND_INTX_DISABLE != 0;
        irq.update_line();
        Ok(())
    }
}

/// `status` with NEEDS_RESET when the device asked for a reset.
fn with_needs_reset(status: u8, needs_reset: bool) -> u8 {
    if needs_reset {
        status | VIRTIO_CONFIG_S_NEEDS_RESET as u8
    } else {
        status
    }
}
