//! The device side of a virtio transport: what a device implements and how it interrupts.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use crate::Result;

/// What a device signals to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterruptKind {
    /// The device configuration changed (ISR bit 1, or the `msix_config` vector).
    Config,
    /// Used buffers on queue `n` (ISR bit 0, or that queue's `queue_msix_vector`).
    Queue(u16),
}

/// How a device interrupts the driver; the transport implements it.
///
/// Devices call [`trigger`](Self::trigger) from their own threads after writing the used
/// ring (when `needs_notification` says so). The PCI transport maps the kind to the
/// MSI-X vector the driver chose, or sets the ISR bit and raises INTx.
pub trait VirtioInterrupt: Send + Sync {
    /// Signals `kind` to the driver.
    fn trigger(&self, kind: InterruptKind);

    /// The device met something it cannot go on from (a malformed descriptor chain,
    /// [`check_chain`](crate::check_chain)) and has stopped serving its queues: the
    /// transport sets `NEEDS_RESET` in the device status and raises a configuration
    /// interrupt (QEMU's `virtio_error`), until the driver resets the device. The default,
    /// for transports without that status bit, only raises the configuration interrupt.
    fn needs_reset(&self) {
        self.trigger(InterruptKind::Config)
    }
}

impl<T: VirtioInterrupt + ?Sized> VirtioInterrupt for Arc<T> {
    fn trigger(&self, kind: InterruptKind) {
        (**self).trigger(kind)
    }
    fn needs_reset(&self) {
        (**self).needs_reset()
    }
}

/// One queue handed to a device at activation: its index, the queue as the driver
/// configured it (size, ring addresses, `EVENT_IDX` already applied), and the `EventFd`
/// that fires when the driver notifies it.
pub type ActivatedQueue = (usize, Queue, EventFd);

/// A virtio device as a transport sees it: identity, queues, features, configuration
/// space, and start/stop.
///
/// `M` is the guest's address space (vm-memory's [`GuestAddressSpace`]:
/// `GuestMemoryAtomic<GuestMemoryMmap>`, `Arc<GuestMemoryMmap>`, ...), so a VMM can bring
/// its own memory type.
///
/// # Threads and notifications
///
/// Each queue's notification is an [`EventFd`]. Under KVM the machine registers it as an
/// ioeventfd on the queue's notify address, so a guest doorbell never leaves the kernel;
/// on the slow path (a PIO/MMIO exit) the transport writes it itself. Either way the vCPU
/// does no device work: the device waits on the eventfds in its own thread (this crate's
/// devices start one in [`activate`](Self::activate) and join it in
/// [`reset`](Self::reset) and on drop).
pub trait VirtioDevice<M: GuestAddressSpace>: Send {
    /// The virtio device ID (`VIRTIO_ID_*` of virtio-bindings' `virtio_ids`).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue (a power of two, at most 32768); the slice's length is
    /// the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Features the device offers (device-specific bits and ring features such as
    /// `VIRTIO_RING_F_EVENT_IDX`). The transport adds `VIRTIO_F_VERSION_1` when its modern
    /// interface is enabled and hides it otherwise.
    fn device_features(&self) -> u64;

    /// The features the driver accepted (a subset of what was offered), when it sets
    /// `FEATURES_OK` (or, for a legacy driver, at `DRIVER_OK`). An error refuses them: the
    /// transport leaves `FEATURES_OK` clear. Default: accept.
    fn ack_features(&mut self, features: u64) -> Result<()> {
        let _ = features;
        Ok(())
    }

    /// Length of the device-specific configuration space in bytes (what the legacy I/O
    /// BAR must hold after its header). Default: 0.
    fn config_len(&self) -> usize {
        0
    }

    /// A driver read of the device configuration at `offset`. The transport only calls it
    /// for ranges within [`config_len`](Self::config_len).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write of the device configuration at `offset` (within
    /// [`config_len`](Self::config_len)). Default: ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Starts the device: the driver set `DRIVER_OK`. `queues` holds every queue the
    /// driver enabled, in index order. An error puts the transport in `NEEDS_RESET`.
    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<()>;

    /// Stops the device (the driver wrote 0 to `device_status`, or the machine reset):
    /// stop processing, drop the queues and interrupt handle. Returns whether the device
    /// is now stopped (false: it could not confirm, e.g. its worker panicked). Called on
    /// every virtio reset, active or not.
    fn reset(&mut self) -> bool;

    /// Pauses an active device for a snapshot (QEMU's drain before `vm_stop` saves
    /// state): every request in flight completes and is on its used ring, the device's
    /// thread stops, and the device says where each of its queues stands. Chains still in
    /// an available ring stay there for whoever activates the queue next (this transport
    /// on a resume, or the destination). The transport activates the device again (with
    /// queues at these positions) to go on. Default: the device cannot be paused
    /// ([`Error::Quiesce`](crate::Error::Quiesce)).
    fn quiesce(&mut self) -> Result<Vec<QueuePosition>> {
        Err(crate::Error::Quiesce {
            device: "this virtio device",
            reason: "it does not implement quiesce (it cannot be saved while active)".into(),
        })
    }

    /// After a restore, before activation: the device configuration bytes the saved
    /// device read back ([`read_config`](Self::read_config) over its whole
    /// [`config_len`](Self::config_len)), for the fields a driver can write (virtio-blk's
    /// `writeback`, a legacy virtio-net MAC). Default: nothing (the configuration follows
    /// from the device's options, which the destination was started with).
    fn restore_config(&mut self, config: &[u8]) {
        let _ = config;
    }
}

/// Where one queue of a paused device stands: the next available-ring entry the device
/// reads and the next used-ring entry it writes (the ring addresses and size are the
/// transport's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuePosition {
    /// The queue's index.
    pub index: usize,
    /// `next_avail`.
    pub next_avail: u16,
    /// `next_used`.
    pub next_used: u16,
}

impl<M: GuestAddressSpace, D: VirtioDevice<M> + ?Sized> VirtioDevice<M> for Box<D> {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn device_features(&self) -> u64 {
        (**self).device_features()
    }
    fn ack_features(&mut self, features: u64) -> Result<()> {
        (**self).ack_features(features)
    }
    fn config_len(&self) -> usize {
        (**self).config_len()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data)
    }
    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<()> {
        (**self).activate(memory, interrupt, queues)
    }
    fn reset(&mut self) -> bool {
        (**self).reset()
    }
    fn quiesce(&mut self) -> Result<Vec<QueuePosition>> {
        (**self).quiesce()
    }
    fn restore_config(&mut self, config: &[u8]) {
        (**self).restore_config(config)
    }
}
