//! The bus machinery shared by the PIO and MMIO buses: a sorted, immutable range table that
//! writers replace copy-on-write and readers use without locking.

use std::fmt;
use std::slice;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Cache};

use crate::range::Span;
use crate::stats::{BusCounters, BusStats, RangeCounters, RangeStats, Slot, SlotPool};
use crate::{Dispatch, Error, Result, Space};

/// One range mapped to a device, stored inline in the table so a hit touches one table entry
/// for the range, the device pointer and the counters pointer. The counters live in their own
/// allocation, shared by every table version holding this range, so they survive unrelated
/// insertions and removals.
pub(crate) struct Mapping<D: ?Sized> {
    pub(crate) span: Span,
    pub(crate) device: Arc<D>,
    pub(crate) counters: Arc<RangeCounters>,
    pub(crate) name: Arc<str>,
}

impl<D: ?Sized> Clone for Mapping<D> {
    fn clone(&self) -> Self {
        Mapping {
            span: self.span,
            device: Arc::clone(&self.device),
            counters: Arc::clone(&self.counters),
            name: Arc::clone(&self.name),
        }
    }
}

/// One immutable version of a bus's range table. `spans` duplicates the mappings' spans so the
/// binary search walks a dense array (16 bytes per range).
pub(crate) struct Table<D: ?Sized> {
    spans: Box<[Span]>,
    mappings: Box<[Mapping<D>]>,
}

impl<D: ?Sized> Table<D> {
    fn empty() -> Self {
        Table {
            spans: Box::new([]),
            mappings: Box::new([]),
        }
    }

    /// `Ok(i)` if range `i` holds `addr`; otherwise `Err(i)` where `i` is the first range
    /// starting above `addr`.
    #[inline]
    fn find(&self, addr: u64) -> std::result::Result<usize, usize> {
        // The standard library's binary search is branch-free (it halves the range a fixed
        // number of times and picks each half with a conditional move), so lookups spread
        // over many devices do not pay for mispredicted compares.
        let above = self.spans.partition_point(|s| s.base <= addr);
        match above
            .checked_sub(1)
            .and_then(|i| self.spans.get(i).map(|s| (i, s)))
        {
            Some((i, span)) if addr <= span.last => Ok(i),
            _ => Err(above),
        }
    }

    #[inline]
    fn mapping(&self, index: usize) -> Option<&Mapping<D>> {
        self.mappings.get(index)
    }

    /// The mapping holding `addr`, if any.
    #[inline]
    fn mapping_at(&self, addr: u64) -> Option<&Mapping<D>> {
        self.find(addr).ok().and_then(|i| self.mapping(i))
    }
}

/// Where an access of a valid size goes.
enum Route<'t, D: ?Sized> {
    /// Wholly inside this mapping.
    Device(&'t Mapping<D>),
    /// No byte of it is mapped.
    Unassigned,
    /// It crosses a range boundary: it starts in a range and runs past its end, or starts in
    /// unassigned space and runs into a range.
    Split,
}

#[inline]
fn route<D: ?Sized>(table: &Table<D>, addr: u64, len: usize) -> Route<'_, D> {
    // len is 1..=8 here, so this is lossless.
    let tail = (len as u64) - 1;
    match table.find(addr) {
        Ok(i) => match table.mapping(i) {
            // `last >= addr` because range i holds addr.
            Some(m) if m.span.last - addr >= tail => Route::Device(m),
            Some(_) => Route::Split,
            None => Route::Unassigned,
        },
        // Every range from `next` on starts above addr, so `base - addr` cannot wrap.
        Err(next) => match table.spans.get(next) {
            Some(s) if s.base - addr <= tail => Route::Split,
            _ => Route::Unassigned,
        },
    }
}

#[inline]
fn valid_size(len: usize) -> bool {
    matches!(len, 1 | 2 | 4 | 8)
}

/// The shared state of one bus.
pub(crate) struct Core<D: ?Sized> {
    table: ArcSwap<Table<D>>,
    /// Serialises writers only; readers never touch it.
    writer: Mutex<()>,
    counters: BusCounters,
    slots: SlotPool,
    space: Space,
}

impl<D: ?Sized> Core<D> {
    pub(crate) fn new(space: Space) -> Self {
        Core {
            table: ArcSwap::from_pointee(Table::empty()),
            writer: Mutex::new(()),
            counters: BusCounters::default(),
            slots: SlotPool::default(),
            space,
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a writer that panicked left nothing half-updated, because
        // the table is swapped in one store at the end.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, span: Span, name: Arc<str>, device: Arc<D>) -> Result<()> {
        let _writer = self.lock_writer();
        let current = self.table.load_full();
        // Ranges are disjoint and sorted, so only the neighbours of the insertion point can
        // overlap the new one.
        let at = current.spans.partition_point(|s| s.base <= span.base);
        let neighbours = [at.checked_sub(1), Some(at)];
        for i in neighbours.into_iter().flatten() {
            if let Some(existing) = current.mapping(i) {
                if existing.span.overlaps(&span) {
                    return Err(Error::Overlap {
                        space: self.space,
                        name: name.to_string(),
                        base: span.base,
                        last: span.last,
                        existing_name: existing.name.to_string(),
                        existing_base: existing.span.base,
                        existing_last: existing.span.last,
                    });
                }
            }
        }
        let mapping = Mapping {
            span,
            device,
            counters: Arc::new(RangeCounters::default()),
            name,
        };
        let mut spans = current.spans.to_vec();
        let mut mappings = current.mappings.to_vec();
        spans.insert(at, span);
        mappings.insert(at, mapping);
        self.table.store(Arc::new(Table {
            spans: spans.into_boxed_slice(),
            mappings: mappings.into_boxed_slice(),
        }));
        Ok(())
    }

    /// Removes every mapping `doomed` selects; returns them in address order.
    fn remove_where(&self, doomed: impl Fn(&Mapping<D>) -> bool) -> Vec<Mapping<D>> {
        let _writer = self.lock_writer();
        let current = self.table.load_full();
        let (removed, kept): (Vec<_>, Vec<_>) =
            current.mappings.iter().cloned().partition(|m| doomed(m));
        if removed.is_empty() {
            return removed;
        }
        let spans: Box<[Span]> = kept.iter().map(|m| m.span).collect();
        self.table.store(Arc::new(Table {
            spans,
            mappings: kept.into_boxed_slice(),
        }));
        // A vCPU still dispatching through the old table may bump a removed range after this
        // point; such an access shows up in no snapshot. Removal is rare, so that is accepted.
        for m in &removed {
            self.counters.removed_reads.add(m.counters.reads());
            self.counters.removed_writes.add(m.counters.writes());
        }
        removed
    }

    pub(crate) fn remove_at(&self, addr: u64) -> Result<(Span, Arc<D>)> {
        self.remove_where(|m| m.span.base <= addr && addr <= m.span.last)
            .pop()
            .map(|m| (m.span, Arc::clone(&m.device)))
            .ok_or(Error::NotFound {
                space: self.space,
                addr,
            })
    }

    pub(crate) fn remove_named(&self, name: &str) -> Vec<(Span, Arc<D>)> {
        self.remove_where(|m| &*m.name == name)
            .into_iter()
            .map(|m| (m.span, Arc::clone(&m.device)))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.table.load().spans.len()
    }

    /// The name and range of the mapping holding `addr`.
    pub(crate) fn lookup(&self, addr: u64) -> Option<(Span, Arc<str>)> {
        let table = self.table.load();
        table
            .mapping_at(addr)
            .map(|m| (m.span, Arc::clone(&m.name)))
    }

    pub(crate) fn stats(&self) -> BusStats {
        let table = self.table.load_full();
        let c = &self.counters;
        let ranges: Vec<RangeStats> = table
            .mappings
            .iter()
            .map(|m| {
                let reads = m.counters.reads();
                let writes = m.counters.writes();
                RangeStats {
                    name: Arc::clone(&m.name),
                    base: m.span.base,
                    last: m.span.last,
                    accesses: reads.wrapping_add(writes),
                    reads,
                    writes,
                }
            })
            .collect();
        let unassigned_reads = c.unassigned_reads.get();
        let unassigned_writes = c.unassigned_writes.get();
        // Wrapping sums: u64 counters at one access per nanosecond last centuries, but a
        // statistics query must not be able to panic.
        let sum = |f: fn(&RangeStats) -> u64| ranges.iter().map(f).fold(0u64, u64::wrapping_add);
        let reads = sum(|r| r.reads)
            .wrapping_add(c.removed_reads.get())
            .wrapping_add(unassigned_reads);
        let writes = sum(|r| r.writes)
            .wrapping_add(c.removed_writes.get())
            .wrapping_add(unassigned_writes);
        BusStats {
            accesses: reads.wrapping_add(writes),
            reads,
            writes,
            unassigned: unassigned_reads.wrapping_add(unassigned_writes),
            unassigned_reads,
            unassigned_writes,
            invalid_size: c.invalid_size.get(),
            split: c.split.get(),
            ranges,
        }
    }

    /// Dispatches a read through `table`; `read` performs the device's own access.
    #[inline]
    fn read_in<F>(
        &self,
        table: &Table<D>,
        slot: Slot,
        addr: u64,
        data: &mut [u8],
        read: F,
    ) -> Dispatch
    where
        F: Fn(&D, u64, u64, &mut [u8]),
    {
        if !valid_size(data.len()) {
            self.counters.invalid_size.bump();
            self.counters.unassigned_reads.bump();
            data.fill(0xFF);
            return Dispatch::InvalidSize;
        }
        match route(table, addr, data.len()) {
            Route::Device(m) => {
                m.counters.bump_read(slot);
                read(&m.device, m.span.base, addr - m.span.base, data);
                Dispatch::Handled
            }
            Route::Unassigned => {
                self.counters.unassigned_reads.bump();
                data.fill(0xFF);
                Dispatch::Unassigned
            }
            Route::Split => {
                self.read_split(table, slot, addr, data, read);
                Dispatch::Split
            }
        }
    }

    #[cold]
    fn read_split<F>(&self, table: &Table<D>, slot: Slot, addr: u64, data: &mut [u8], read: F)
    where
        F: Fn(&D, u64, u64, &mut [u8]),
    {
        self.counters.split.bump();
        for (k, byte) in (0u64..).zip(data.iter_mut()) {
            match self.byte_mapping(table, addr, k) {
                Some((m, byte_addr)) => {
                    m.counters.bump_read(slot);
                    read(
                        &m.device,
                        m.span.base,
                        byte_addr - m.span.base,
                        slice::from_mut(byte),
                    );
                }
                None => {
                    self.counters.unassigned_reads.bump();
                    *byte = 0xFF;
                }
            }
        }
    }

    /// Dispatches a write through `table`; `write` performs the device's own access.
    #[inline]
    fn write_in<F>(
        &self,
        table: &Table<D>,
        slot: Slot,
        addr: u64,
        data: &[u8],
        write: F,
    ) -> Dispatch
    where
        F: Fn(&D, u64, u64, &[u8]),
    {
        if !valid_size(data.len()) {
            self.counters.invalid_size.bump();
            self.counters.unassigned_writes.bump();
            return Dispatch::InvalidSize;
        }
        match route(table, addr, data.len()) {
            Route::Device(m) => {
                m.counters.bump_write(slot);
                write(&m.device, m.span.base, addr - m.span.base, data);
                Dispatch::Handled
            }
            Route::Unassigned => {
                self.counters.unassigned_writes.bump();
                Dispatch::Unassigned
            }
            Route::Split => {
                self.write_split(table, slot, addr, data, write);
                Dispatch::Split
            }
        }
    }

    #[cold]
    fn write_split<F>(&self, table: &Table<D>, slot: Slot, addr: u64, data: &[u8], write: F)
    where
        F: Fn(&D, u64, u64, &[u8]),
    {
        self.counters.split.bump();
        for (k, byte) in (0u64..).zip(data.iter()) {
            match self.byte_mapping(table, addr, k) {
                Some((m, byte_addr)) => {
                    m.counters.bump_write(slot);
                    write(
                        &m.device,
                        m.span.base,
                        byte_addr - m.span.base,
                        slice::from_ref(byte),
                    );
                }
                None => self.counters.unassigned_writes.bump(),
            }
        }
    }

    /// The mapping and address of byte `k` of a split access at `addr`. Bytes past the top of
    /// the space are unassigned: port 0x10000 does not wrap to port 0, nor MMIO past `u64::MAX`
    /// to address 0.
    fn byte_mapping<'t>(
        &self,
        table: &'t Table<D>,
        addr: u64,
        k: u64,
    ) -> Option<(&'t Mapping<D>, u64)> {
        let byte_addr = addr
            .checked_add(k)
            .filter(|a| *a <= self.space.max_address())?;
        table.mapping_at(byte_addr).map(|m| (m, byte_addr))
    }

    #[inline]
    pub(crate) fn read<F>(&self, addr: u64, data: &mut [u8], read: F) -> Dispatch
    where
        F: Fn(&D, u64, u64, &mut [u8]),
    {
        let table = self.table.load();
        self.read_in(&table, Slot::Shared, addr, data, read)
    }

    #[inline]
    pub(crate) fn write<F>(&self, addr: u64, data: &[u8], write: F) -> Dispatch
    where
        F: Fn(&D, u64, u64, &[u8]),
    {
        let table = self.table.load();
        self.write_in(&table, Slot::Shared, addr, data, write)
    }

    pub(crate) fn fmt_ranges(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.load();
        let mut list = f.debug_map();
        for m in table.mappings.iter() {
            list.entry(
                &format_args!("{:#x}..={:#x}", m.span.base, m.span.last),
                &m.name,
            );
        }
        list.finish()
    }
}

/// Lets an `arc_swap::Cache` hold a bus by `Arc` and still reach its table.
pub(crate) struct TableOf<D: ?Sized>(pub(crate) Arc<Core<D>>);

impl<D: ?Sized> std::ops::Deref for TableOf<D> {
    type Target = ArcSwap<Table<D>>;

    fn deref(&self) -> &Self::Target {
        &self.0.table
    }
}

/// A per-thread view of a bus: it keeps the table it last saw and only checks (one atomic
/// load, no read-modify-write) whether a writer has published a newer one.
pub(crate) struct CachedCore<D: ?Sized> {
    core: Arc<Core<D>>,
    slot: Slot,
    cache: Cache<TableOf<D>, Arc<Table<D>>>,
}

impl<D: ?Sized> CachedCore<D> {
    pub(crate) fn new(core: Arc<Core<D>>) -> Self {
        CachedCore {
            cache: Cache::new(TableOf(Arc::clone(&core))),
            slot: core.slots.claim(),
            core,
        }
    }

    #[inline]
    pub(crate) fn read<F>(&mut self, addr: u64, data: &mut [u8], read: F) -> Dispatch
    where
        F: Fn(&D, u64, u64, &mut [u8]),
    {
        self.core
            .read_in(self.cache.load(), self.slot, addr, data, read)
    }

    #[inline]
    pub(crate) fn write<F>(&mut self, addr: u64, data: &[u8], write: F) -> Dispatch
    where
        F: Fn(&D, u64, u64, &[u8]),
    {
        self.core
            .write_in(self.cache.load(), self.slot, addr, data, write)
    }

    pub(crate) fn core(&self) -> &Arc<Core<D>> {
        &self.core
    }
}

impl<D: ?Sized> Drop for CachedCore<D> {
    fn drop(&mut self) {
        self.core.slots.release(self.slot);
    }
}
