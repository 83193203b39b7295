//! The memory-mapped I/O bus (64-bit guest-physical address space).

use std::fmt;
use std::sync::Arc;

use vm_device::bus::MmioAddress;
use vm_device::DeviceMmio;

use crate::core::{CachedCore, Core};
use crate::{BusStats, Dispatch, MmioRange, Result, Space};

/// A device on the PIO bus: any vm-device [`DeviceMmio`] that can be shared between vCPU
/// threads, e.g. `Arc<Mutex<T>>` for `T: MutDeviceMmio`.
pub type MmioDevice = dyn DeviceMmio + Send + Sync;

#[inline]
fn mmio_read(device: &MmioDevice, base: u64, offset: u64, data: &mut [u8]) {
    device.mmio_read(MmioAddress(base), offset, data);
}

#[inline]
fn mmio_write(device: &MmioDevice, base: u64, offset: u64, data: &[u8]) {
    device.mmio_write(MmioAddress(base), offset, data);
}

/// The MMIO bus: devices mapped on disjoint guest-physical ranges, looked up without a lock.
///
/// Cloning a `MmioBus` is cheap and gives another handle to the same bus, so the VMM can hand
/// one to each vCPU thread and keep one for hot-plug and statistics.
#[derive(Clone)]
pub struct MmioBus {
    core: Arc<Core<MmioDevice>>,
}

impl MmioBus {
    /// Creates an empty bus: every address is unassigned.
    pub fn new() -> Self {
        MmioBus {
            core: Arc::new(Core::new(Space::Mmio)),
        }
    }

    /// Maps `device` on `range` under `name` (used in errors and statistics; several ranges
    /// may share one name, e.g. a device with two register blocks).
    ///
    /// Fails with [`Error::Overlap`](crate::Error::Overlap) if any address of `range` is already
    /// mapped. vCPUs dispatching concurrently see either the old or the new table, never a
    /// half-updated one, and are never blocked.
    pub fn insert(
        &self,
        range: MmioRange,
        name: impl Into<Arc<str>>,
        device: Arc<MmioDevice>,
    ) -> Result<()> {
        self.core.insert(range.0, name.into(), device)
    }

    /// Unmaps the range holding `addr`; returns that range and its device.
    ///
    /// Fails with [`Error::NotFound`](crate::Error::NotFound) if `addr` is unassigned.
    pub fn remove(&self, addr: u64) -> Result<(MmioRange, Arc<MmioDevice>)> {
        self.core
            .remove_at(addr)
            .map(|(span, device)| (MmioRange(span), device))
    }

    /// Unmaps every range inserted under `name`; returns them in address order (empty if none).
    pub fn remove_named(&self, name: &str) -> Vec<(MmioRange, Arc<MmioDevice>)> {
        self.core
            .remove_named(name)
            .into_iter()
            .map(|(span, device)| (MmioRange(span), device))
            .collect()
    }

    /// The range holding `addr` and the name it was inserted under.
    pub fn lookup(&self, addr: u64) -> Option<(MmioRange, Arc<str>)> {
        self.core
            .lookup(addr)
            .map(|(span, name)| (MmioRange(span), name))
    }

    /// Number of mapped ranges.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no range is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `data.len()` bytes at `addr` (a guest load). See the crate docs for unassigned
    /// addresses, accesses that straddle a range boundary and sizes other than 1, 2, 4 and 8.
    #[inline]
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Dispatch {
        self.core.read(addr, data, mmio_read)
    }

    /// Writes `data` at `addr` (a guest store), with the same rules as [`read`](Self::read).
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> Dispatch {
        self.core.write(addr, data, mmio_write)
    }

    /// A handle for one vCPU thread: the same dispatch at about half the cost (see
    /// [`MmioHandle`]). Create one per thread that dispatches often.
    pub fn handle(&self) -> MmioHandle {
        MmioHandle {
            cached: CachedCore::new(Arc::clone(&self.core)),
        }
    }

    /// A snapshot of the bus and per-range counters.
    pub fn stats(&self) -> BusStats {
        self.core.stats()
    }
}

impl Default for MmioBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt_ranges(f)
    }
}

/// A vCPU thread's handle to a [`MmioBus`].
///
/// It keeps the range table it last used and, per access, only checks with one atomic load
/// whether a writer has published a new one, where [`MmioBus::read`] has to announce its use of
/// the table to arc-swap on every access. It also owns one of the bus's 15 private counter
/// shards while one is free (given back on drop), so it counts without a locked instruction;
/// further handles share a counter with the bus's own `&self` path. Dispatch rules and
/// counts are the same either way. Insertions and removals made after the handle was created
/// take effect on its next access.
pub struct MmioHandle {
    cached: CachedCore<MmioDevice>,
}

impl MmioHandle {
    /// Like [`MmioBus::read`].
    #[inline]
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> Dispatch {
        self.cached.read(addr, data, mmio_read)
    }

    /// Like [`MmioBus::write`].
    #[inline]
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Dispatch {
        self.cached.write(addr, data, mmio_write)
    }

    /// The bus this handle dispatches on.
    pub fn bus(&self) -> MmioBus {
        MmioBus {
            core: Arc::clone(self.cached.core()),
        }
    }
}

impl fmt::Debug for MmioHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cached.core().fmt_ranges(f)
    }
}
