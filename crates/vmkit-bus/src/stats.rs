//! Lock-free access counters and their snapshots.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// One counter bumped with a relaxed `fetch_add`: the hot path never takes a lock for it, and
/// a snapshot may be a few accesses behind a dispatch that is in flight, which is all a
/// statistics query needs.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many counter shards each range has. Shard 0 is shared and bumped with `fetch_add`;
/// shards 1.. are each owned by at most one [`PioHandle`](crate::PioHandle) or
/// [`MmioHandle`](crate::MmioHandle) at a time, so that handle can bump them with a plain load
/// and store (no locked read-modify-write instruction) without losing counts.
pub(crate) const SHARDS: usize = 16;

/// Which counter shard a dispatcher bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Shard 0, shared by every `&self` dispatcher and by handles that found no free shard.
    Shared,
    /// A shard this dispatcher alone writes to (1..SHARDS).
    Owned(usize),
}

#[derive(Debug, Default)]
struct Shard {
    reads: AtomicU64,
    writes: AtomicU64,
}

#[inline]
fn bump_owned(counter: &AtomicU64) {
    // Single writer: a relaxed load and store cannot lose an increment, and readers of a
    // snapshot only need each value to be one that was stored.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Counters of one mapped range. Aligned to 128 bytes (two cache lines, the unit the adjacent
/// line prefetcher pulls on x86) so two vCPUs hitting two different devices never bounce a
/// line between them. vCPUs hitting the same device share these lines, as they share the
/// device's own lock.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct RangeCounters {
    shards: [Shard; SHARDS],
}

impl RangeCounters {
    #[inline]
    fn bump(&self, slot: Slot, pick: fn(&Shard) -> &AtomicU64) {
        match slot {
            Slot::Shared => {
                if let Some(shard) = self.shards.first() {
                    pick(shard).fetch_add(1, Ordering::Relaxed);
                }
            }
            Slot::Owned(index) => {
                if let Some(shard) = self.shards.get(index) {
                    bump_owned(pick(shard));
                }
            }
        }
    }

    #[inline]
    pub(crate) fn bump_read(&self, slot: Slot) {
        self.bump(slot, |s| &s.reads);
    }

    #[inline]
    pub(crate) fn bump_write(&self, slot: Slot) {
        self.bump(slot, |s| &s.writes);
    }

    fn sum(&self, pick: fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| pick(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn reads(&self) -> u64 {
        self.sum(|s| &s.reads)
    }

    pub(crate) fn writes(&self) -> u64 {
        self.sum(|s| &s.writes)
    }
}

/// Hands out the owned shards 1..SHARDS of every range of one bus.
#[derive(Debug, Default)]
pub(crate) struct SlotPool {
    /// Bit i set: shard i is owned by a live handle.
    taken: AtomicU32,
}

impl SlotPool {
    const OWNABLE: u32 = ((1u64 << SHARDS) - 2) as u32;

    pub(crate) fn claim(&self) -> Slot {
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            let free = !taken & Self::OWNABLE;
            if free == 0 {
                return Slot::Shared;
            }
            let bit = free.trailing_zeros();
            // Acquire pairs with the Release in `release`: the new owner sees every count the
            // previous owner stored, so its first load-and-store does not go back in time.
            match self.taken.compare_exchange_weak(
                taken,
                taken | (1 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Slot::Owned(bit as usize),
                Err(now) => taken = now,
            }
        }
    }

    pub(crate) fn release(&self, slot: Slot) {
        if let Slot::Owned(index) = slot {
            if index < SHARDS {
                self.taken.fetch_and(!(1u32 << index), Ordering::Release);
            }
        }
    }
}

/// Bus-wide counters for accesses no device saw, padded for the same reason.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct BusCounters {
    pub(crate) unassigned_reads: Counter,
    pub(crate) unassigned_writes: Counter,
    pub(crate) invalid_size: Counter,
    pub(crate) split: Counter,
    /// Device reads and writes of ranges that have been removed, folded in at removal so the
    /// bus totals do not go down when a device is unplugged.
    pub(crate) removed_reads: Counter,
    pub(crate) removed_writes: Counter,
}

/// Counts of one mapped range at the time of a [`stats`](crate::PioBus::stats) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeStats {
    /// The name given when the range was inserted.
    pub name: Arc<str>,
    /// First address (port or MMIO address) of the range.
    pub base: u64,
    /// Last address of the range (inclusive).
    pub last: u64,
    /// Reads plus writes delivered to the device through this range.
    pub accesses: u64,
    /// Reads delivered to the device through this range.
    pub reads: u64,
    /// Writes delivered to the device through this range.
    pub writes: u64,
}

/// Counts of a whole bus at the time of a [`stats`](crate::PioBus::stats) call.
///
/// Every access that reaches [`read`](crate::PioBus::read) or [`write`](crate::PioBus::write)
/// is counted once, except an access that straddles a range boundary: it is split into byte
/// accesses (see the crate docs) and each byte is counted where it went, while
/// [`split`](Self::split) counts the original access.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BusStats {
    /// All reads and writes, delivered or not.
    pub accesses: u64,
    /// All reads, delivered or not.
    pub reads: u64,
    /// All writes, delivered or not.
    pub writes: u64,
    /// Reads and writes no device saw (unassigned space or an invalid size).
    pub unassigned: u64,
    /// Reads no device saw; they returned all ones.
    pub unassigned_reads: u64,
    /// Writes no device saw; they were dropped.
    pub unassigned_writes: u64,
    /// Accesses refused because their size was not 1, 2, 4 or 8 bytes (also counted as
    /// unassigned).
    pub invalid_size: u64,
    /// Accesses that straddled a range boundary and were split into byte accesses.
    pub split: u64,
    /// One entry per mapped range, in address order. Ranges removed earlier are not listed,
    /// but their counts stay in the bus totals.
    pub ranges: Vec<RangeStats>,
}

impl BusStats {
    /// The entries of every range inserted under `name`.
    pub fn ranges_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a RangeStats> {
        self.ranges.iter().filter(move |r| &*r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_pool_hands_out_each_owned_shard_once() {
        let pool = SlotPool::default();
        let owned: Vec<Slot> = (1..SHARDS).map(|_| pool.claim()).collect();
        let expected: Vec<Slot> = (1..SHARDS).map(Slot::Owned).collect();
        assert_eq!(owned, expected);
        assert_eq!(pool.claim(), Slot::Shared);
        pool.release(Slot::Owned(5));
        pool.release(Slot::Shared);
        assert_eq!(pool.claim(), Slot::Owned(5));
        assert_eq!(pool.claim(), Slot::Shared);
    }

    #[test]
    fn shards_sum_into_one_count() {
        let counters = RangeCounters::default();
        counters.bump_read(Slot::Shared);
        counters.bump_read(Slot::Owned(3));
        counters.bump_read(Slot::Owned(SHARDS - 1));
        counters.bump_write(Slot::Owned(3));
        // An out-of-range slot cannot be produced by the pool; it is ignored, not a panic.
        counters.bump_write(Slot::Owned(SHARDS));
        assert_eq!((counters.reads(), counters.writes()), (3, 1));
        assert_eq!(std::mem::align_of::<RangeCounters>(), 128);
    }
}
