//! The bus itself, once for both address spaces: [`Bus`] and its per-thread [`BusHandle`],
//! specialised by a [`BusKind`] ([`Pio`](crate::Pio) or [`Mmio`](crate::Mmio)).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::core::{CachedCore, Core};
use crate::range::Span;
use crate::{BusStats, Dispatch, Result, Space};

mod sealed {
    pub trait Sealed {}
}

/// What tells the two buses apart: their address and range types, the device trait they
/// dispatch to, and how an access reaches it. Implemented by [`Pio`](crate::Pio) and
/// [`Mmio`](crate::Mmio) only (sealed).
pub trait BusKind: sealed::Sealed + 'static {
    /// A port (`u16`) or a guest-physical address (`u64`).
    type Addr: Copy + Into<u64>;
    /// The range type of the space.
    type Range: Copy;
    /// The device trait object of the space.
    type Device: ?Sized + Send + Sync;
    /// The space, for errors and statistics.
    const SPACE: Space;
    /// The range's span.
    #[doc(hidden)]
    fn span(range: Self::Range) -> Span;
    /// A range from a span of this space.
    #[doc(hidden)]
    fn range(span: Span) -> Self::Range;
    /// Delivers a read of `data.len()` bytes at `offset` into the range at `base`.
    #[doc(hidden)]
    fn read(device: &Self::Device, base: u64, offset: u64, data: &mut [u8]);
    /// Delivers a write at `offset` into the range at `base`.
    #[doc(hidden)]
    fn write(device: &Self::Device, base: u64, offset: u64, data: &[u8]);
}

impl sealed::Sealed for crate::Pio {}
impl sealed::Sealed for crate::Mmio {}

/// A bus: devices mapped on disjoint ranges of one address space, looked up without a
/// lock. Used as [`PioBus`](crate::PioBus) and [`MmioBus`](crate::MmioBus).
///
/// Cloning a bus is cheap and gives another handle to the same bus, so the VMM can hand one
/// to each vCPU thread and keep one for hot-plug and statistics.
pub struct Bus<K: BusKind> {
    core: Arc<Core<K::Device>>,
}

impl<K: BusKind> Bus<K> {
    /// Creates an empty bus: every address is unassigned.
    pub fn new() -> Self {
        Bus {
            core: Arc::new(Core::new(K::SPACE)),
        }
    }

    /// Maps `device` on `range` under `name` (used in errors and statistics; several ranges
    /// may share one name, e.g. a device with two register blocks).
    ///
    /// Fails with [`Error::Overlap`](crate::Error::Overlap) if any address of `range` is
    /// already mapped. vCPUs dispatching concurrently see either the old or the new table,
    /// never a half-updated one, and are never blocked.
    pub fn insert(
        &self,
        range: K::Range,
        name: impl Into<Arc<str>>,
        device: Arc<K::Device>,
    ) -> Result<()> {
        self.core.insert(K::span(range), name.into(), device)
    }

    /// Unmaps the range holding `addr`; returns that range and its device.
    ///
    /// Fails with [`Error::NotFound`](crate::Error::NotFound) if `addr` is unassigned.
    pub fn remove(&self, addr: K::Addr) -> Result<(K::Range, Arc<K::Device>)> {
        self.core
            .remove_at(addr.into())
            .map(|(span, device)| (K::range(span), device))
    }

    /// Unmaps every range inserted under `name`; returns them in address order (empty if
    /// none).
    pub fn remove_named(&self, name: &str) -> Vec<(K::Range, Arc<K::Device>)> {
        self.core
            .remove_named(name)
            .into_iter()
            .map(|(span, device)| (K::range(span), device))
            .collect()
    }

    /// The range holding `addr` and the name it was inserted under.
    pub fn lookup(&self, addr: K::Addr) -> Option<(K::Range, Arc<str>)> {
        self.core
            .lookup(addr.into())
            .map(|(span, name)| (K::range(span), name))
    }

    /// Number of mapped ranges.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no range is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `data.len()` bytes at `addr` (an `IN`, or a guest load). See the crate docs for
    /// unassigned addresses, accesses that straddle a range boundary and sizes other than
    /// 1, 2, 4 and 8.
    #[inline]
    pub fn read(&self, addr: K::Addr, data: &mut [u8]) -> Dispatch {
        self.core.read(addr.into(), data, K::read)
    }

    /// Writes `data` at `addr` (an `OUT`, or a guest store), with the same rules as
    /// [`read`](Self::read).
    #[inline]
    pub fn write(&self, addr: K::Addr, data: &[u8]) -> Dispatch {
        self.core.write(addr.into(), data, K::write)
    }

    /// A handle for one vCPU thread: the same dispatch at about half the cost (see
    /// [`BusHandle`]). Create one per thread that dispatches often.
    pub fn handle(&self) -> BusHandle<K> {
        BusHandle {
            cached: CachedCore::new(Arc::clone(&self.core)),
            kind: PhantomData,
        }
    }

    /// A snapshot of the bus and per-range counters.
    pub fn stats(&self) -> BusStats {
        self.core.stats()
    }
}

impl<K: BusKind> Clone for Bus<K> {
    fn clone(&self) -> Self {
        Bus {
            core: Arc::clone(&self.core),
        }
    }
}

impl<K: BusKind> Default for Bus<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: BusKind> fmt::Debug for Bus<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt_ranges(f)
    }
}

/// A vCPU thread's handle to a [`Bus`]: [`PioHandle`](crate::PioHandle) and
/// [`MmioHandle`](crate::MmioHandle).
///
/// It keeps the range table it last used and, per access, only checks with one atomic load
/// whether a writer has published a new one, where [`Bus::read`] has to announce its use of
/// the table to arc-swap on every access. It also owns one of the bus's 15 private counter
/// shards while one is free (given back on drop), so it counts without a locked instruction;
/// further handles share a counter with the bus's own `&self` path. Dispatch rules and
/// counts are the same either way. Insertions and removals made after the handle was created
/// take effect on its next access.
pub struct BusHandle<K: BusKind> {
    cached: CachedCore<K::Device>,
    kind: PhantomData<fn() -> K>,
}

impl<K: BusKind> BusHandle<K> {
    /// Like [`Bus::read`].
    #[inline]
    pub fn read(&mut self, addr: K::Addr, data: &mut [u8]) -> Dispatch {
        self.cached.read(addr.into(), data, K::read)
    }

    /// Like [`Bus::write`].
    #[inline]
    pub fn write(&mut self, addr: K::Addr, data: &[u8]) -> Dispatch {
        self.cached.write(addr.into(), data, K::write)
    }

    /// The bus this handle dispatches on.
    pub fn bus(&self) -> Bus<K> {
        Bus {
            core: Arc::clone(self.cached.core()),
        }
    }
}

impl<K: BusKind> fmt::Debug for BusHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cached.core().fmt_ranges(f)
    }
}
