//! The port I/O bus (16-bit port space).

use std::fmt;
use std::sync::Arc;

use vm_device::bus::PioAddress;
use vm_device::DevicePio;

use crate::core::{CachedCore, Core};
use crate::{BusStats, Dispatch, PioRange, Result, Space};

/// A device on the PIO bus: any vm-device [`DevicePio`] that can be shared between vCPU
/// threads, e.g. `Arc<Mutex<T>>` for `T: MutDevicePio`.
pub type PioDevice = dyn DevicePio + Send + Sync;

// Ports are checked against 0xFFFF when a range is built, and offsets are smaller than ports,
// so these narrowing casts never lose bits.
#[inline]
fn pio_read(device: &PioDevice, base: u64, offset: u64, data: &mut [u8]) {
    device.pio_read(PioAddress(base as u16), offset as u16, data);
}

#[inline]
fn pio_write(device: &PioDevice, base: u64, offset: u64, data: &[u8]) {
    device.pio_write(PioAddress(base as u16), offset as u16, data);
}

/// The port I/O bus: devices mapped on disjoint port ranges, looked up without a lock.
///
/// Cloning a `PioBus` is cheap and gives another handle to the same bus, so the VMM can hand
/// one to each vCPU thread and keep one for hot-plug and statistics.
#[derive(Clone)]
pub struct PioBus {
    core: Arc<Core<PioDevice>>,
}

impl PioBus {
    /// Creates an empty bus: every port is unassigned.
    pub fn new() -> Self {
        PioBus {
            core: Arc::new(Core::new(Space::Pio)),
        }
    }

    /// Maps `device` on `range` under `name` (used in errors and statistics; several ranges
    /// may share one name, e.g. a device with two register blocks).
    ///
    /// Fails with [`Error::Overlap`](crate::Error::Overlap) if any port of `range` is already
    /// mapped. vCPUs dispatching concurrently see either the old or the new table, never a
    /// half-updated one, and are never blocked.
    pub fn insert(
        &self,
        range: PioRange,
        name: impl Into<Arc<str>>,
        device: Arc<PioDevice>,
    ) -> Result<()> {
        self.core.insert(range.0, name.into(), device)
    }

    /// Unmaps the range holding `port`; returns that range and its device.
    ///
    /// Fails with [`Error::NotFound`](crate::Error::NotFound) if `port` is unassigned.
    pub fn remove(&self, port: u16) -> Result<(PioRange, Arc<PioDevice>)> {
        self.core
            .remove_at(u64::from(port))
            .map(|(span, device)| (PioRange(span), device))
    }

    /// Unmaps every range inserted under `name`; returns them in port order (empty if none).
    pub fn remove_named(&self, name: &str) -> Vec<(PioRange, Arc<PioDevice>)> {
        self.core
            .remove_named(name)
            .into_iter()
            .map(|(span, device)| (PioRange(span), device))
            .collect()
    }

    /// The range holding `port` and the name it was inserted under.
    pub fn lookup(&self, port: u16) -> Option<(PioRange, Arc<str>)> {
        self.core
            .lookup(u64::from(port))
            .map(|(span, name)| (PioRange(span), name))
    }

    /// Number of mapped ranges.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no range is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `data.len()` bytes from `port` (an `IN`). See the crate docs for unassigned
    /// ports, accesses that straddle a range boundary and sizes other than 1, 2, 4 and 8.
    #[inline]
    pub fn read(&self, port: u16, data: &mut [u8]) -> Dispatch {
        self.core.read(u64::from(port), data, pio_read)
    }

    /// Writes `data` to `port` (an `OUT`), with the same rules as [`read`](Self::read).
    #[inline]
    pub fn write(&self, port: u16, data: &[u8]) -> Dispatch {
        self.core.write(u64::from(port), data, pio_write)
    }

    /// A handle for one vCPU thread: the same dispatch at about half the cost (see
    /// [`PioHandle`]). Create one per thread that dispatches often.
    pub fn handle(&self) -> PioHandle {
        PioHandle {
            cached: CachedCore::new(Arc::clone(&self.core)),
        }
    }

    /// A snapshot of the bus and per-range counters.
    pub fn stats(&self) -> BusStats {
        self.core.stats()
    }
}

impl Default for PioBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt_ranges(f)
    }
}

/// A vCPU thread's handle to a [`PioBus`].
///
/// It keeps the range table it last used and, per access, only checks with one atomic load
/// whether a writer has published a new one, where [`PioBus::read`] has to announce its use of
/// the table to arc-swap on every access. It also owns one of the bus's 15 private counter
/// shards while one is free (given back on drop), so it counts without a locked instruction;
/// further handles share a counter with the bus's own `&self` path. Dispatch rules and
/// counts are the same either way. Insertions and removals made after the handle was created
/// take effect on its next access.
pub struct PioHandle {
    cached: CachedCore<PioDevice>,
}

impl PioHandle {
    /// Like [`PioBus::read`].
    #[inline]
    pub fn read(&mut self, port: u16, data: &mut [u8]) -> Dispatch {
        self.cached.read(u64::from(port), data, pio_read)
    }

    /// Like [`PioBus::write`].
    #[inline]
    pub fn write(&mut self, port: u16, data: &[u8]) -> Dispatch {
        self.cached.write(u64::from(port), data, pio_write)
    }

    /// The bus this handle dispatches on.
    pub fn bus(&self) -> PioBus {
        PioBus {
            core: Arc::clone(self.cached.core()),
        }
    }
}

impl fmt::Debug for PioHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cached.core().fmt_ranges(f)
    }
}
