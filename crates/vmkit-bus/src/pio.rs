//! The port I/O bus (16-bit port space).

use vm_device::bus::PioAddress;
use vm_device::DevicePio;

use crate::bus::{Bus, BusHandle, BusKind};
use crate::range::Span;
use crate::{PioRange, Space};

/// A device on the PIO bus: any vm-device [`DevicePio`] that can be shared between vCPU
/// threads, e.g. `Arc<Mutex<T>>` for `T: MutDevicePio`.
pub type PioDevice = dyn DevicePio + Send + Sync;

/// The port I/O space as a [`BusKind`]: 16-bit ports, [`PioRange`]s, [`PioDevice`]s.
#[derive(Debug, Clone, Copy)]
pub enum Pio {}

impl BusKind for Pio {
    type Addr = u16;
    type Range = PioRange;
    type Device = PioDevice;
    const SPACE: Space = Space::Pio;

    fn span(range: PioRange) -> Span {
        range.0
    }

    fn range(span: Span) -> PioRange {
        PioRange(span)
    }

    // Ports are checked against 0xFFFF when a range is built, and offsets are smaller than
    // ports, so these narrowing casts never lose bits.
    #[inline]
    fn read(device: &PioDevice, base: u64, offset: u64, data: &mut [u8]) {
        device.pio_read(PioAddress(base as u16), offset as u16, data);
    }

    #[inline]
    fn write(device: &PioDevice, base: u64, offset: u64, data: &[u8]) {
        device.pio_write(PioAddress(base as u16), offset as u16, data);
    }
}

/// The port I/O bus: devices mapped on disjoint port ranges, looked up without a lock.
pub type PioBus = Bus<Pio>;

/// A vCPU thread's handle to a [`PioBus`] (see [`BusHandle`]).
pub type PioHandle = BusHandle<Pio>;
