//! The memory-mapped I/O bus (64-bit guest-physical address space).

use vm_device::bus::MmioAddress;
use vm_device::DeviceMmio;

use crate::bus::{Bus, BusHandle, BusKind};
use crate::range::Span;
use crate::{MmioRange, Space};

/// A device on the MMIO bus: any vm-device [`DeviceMmio`] that can be shared between vCPU
/// threads, e.g. `Arc<Mutex<T>>` for `T: MutDeviceMmio`.
pub type MmioDevice = dyn DeviceMmio + Send + Sync;

/// The MMIO space as a [`BusKind`]: 64-bit guest-physical addresses, [`MmioRange`]s,
/// [`MmioDevice`]s.
#[derive(Debug, Clone, Copy)]
pub enum Mmio {}

impl BusKind for Mmio {
    type Addr = u64;
    type Range = MmioRange;
    type Device = MmioDevice;
    const SPACE: Space = Space::Mmio;

    fn span(range: MmioRange) -> Span {
        range.0
    }

    fn range(span: Span) -> MmioRange {
        MmioRange(span)
    }

    #[inline]
    fn read(device: &MmioDevice, base: u64, offset: u64, data: &mut [u8]) {
        device.mmio_read(MmioAddress(base), offset, data);
    }

    #[inline]
    fn write(device: &MmioDevice, base: u64, offset: u64, data: &[u8]) {
        device.mmio_write(MmioAddress(base), offset, data);
    }
}

/// The MMIO bus: devices mapped on disjoint guest-physical ranges, looked up without a lock.
pub type MmioBus = Bus<Mmio>;

/// A vCPU thread's handle to an [`MmioBus`] (see [`BusHandle`]).
pub type MmioHandle = BusHandle<Mmio>;
