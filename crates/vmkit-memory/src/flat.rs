//! The flat view: what the guest sees at each address, and the diff between two views.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::eventfd::IoEventFd;
use crate::region::{RegionId, PAGE_SIZE};

/// What a flat range maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// Host memory, readable and writable by the guest.
    Ram,
    /// Host memory, read-only to the guest (a ROM region, or RAM made read-only directly or
    /// through a read-only container/alias). KVM maps it with `KVM_MEM_READONLY`.
    Rom,
    /// MMIO: no host memory; accesses exit to the VMM's MMIO bus.
    Io,
}

/// One flat range of the address space, as listeners receive it.
///
/// The flat view is an ordered list of non-overlapping sections; holes between them are
/// unassigned. For [`SectionKind::Ram`] and [`SectionKind::Rom`], `host_addr` is the host
/// virtual address of the byte at `guest_addr` (what `KVM_SET_USER_MEMORY_REGION` wants); the
/// memory stays mapped at least as long as the region exists, and a mapped region cannot be
/// destroyed, so it outlives every `region_add`/`region_del` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes (at least 1).
    pub size: u64,
    /// What is mapped.
    pub kind: SectionKind,
    /// Host virtual address of the first byte for RAM/ROM; 0 for I/O.
    pub host_addr: u64,
    /// Whether dirty logging is on for the backing RAM region (always false for I/O).
    pub dirty_log: bool,
    /// The terminal region (the RAM/ROM region owning the memory, or the I/O region), never an
    /// alias or container.
    pub region: RegionId,
    /// Offset of `guest_addr` inside `region` (inside the backing memory for RAM/ROM, inside
    /// the device's range for I/O).
    pub offset_in_region: u64,
    /// Name of `region` (for I/O: the owner the MMIO bus should dispatch to).
    pub name: Arc<str>,
}

/// The entries of the flat view are the same values listeners receive.
pub type FlatRange = Section;

impl Section {
    /// One past the last guest address, as u128 so a range ending at 2^64 is representable.
    pub fn end(&self) -> u128 {
        u128::from(self.guest_addr) + u128::from(self.size)
    }

    /// Whether guest `addr` falls inside this section.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.guest_addr && u128::from(addr) < self.end()
    }

    /// Whether the guest sees host memory here (RAM or ROM).
    pub fn is_memory(&self) -> bool {
        self.kind != SectionKind::Io
    }

    /// The largest part of this section made of whole 4 KiB guest pages, or `None` if it holds
    /// no whole page (or is I/O). This is what a KVM memory slot can map: sub-page RAM pieces
    /// only occur where an I/O region overlays part of a page, and are left to the VMM.
    pub fn page_aligned(&self) -> Option<Section> {
        if !self.is_memory() {
            return None;
        }
        let start = self.guest_addr.checked_next_multiple_of(PAGE_SIZE)?;
        let end = u64::try_from(self.end() / u128::from(PAGE_SIZE) * u128::from(PAGE_SIZE))
            .unwrap_or(u64::MAX / PAGE_SIZE * PAGE_SIZE);
        if start >= end {
            return None;
        }
        let skip = start - self.guest_addr;
        Some(Section {
            guest_addr: start,
            size: end - start,
            host_addr: self.host_addr.wrapping_add(skip),
            offset_in_region: self.offset_in_region.wrapping_add(skip),
            ..self.clone()
        })
    }

    /// Same guest range and same contents; only `dirty_log` may differ. Two such sections are
    /// reported as `region_nop` (plus `log_start`/`log_stop`), not as del + add.
    pub fn same_mapping(&self, other: &Section) -> bool {
        self.guest_addr == other.guest_addr
            && self.size == other.size
            && self.kind == other.kind
            && self.region == other.region
            && self.offset_in_region == other.offset_in_region
            && self.host_addr == other.host_addr
    }

    /// Whether `next` continues this section seamlessly (same region, contiguous in guest
    /// address and in region offset), so that the two merge into one flat range.
    fn continues_with(&self, next: &Section) -> bool {
        self.end() == u128::from(next.guest_addr)
            && self.kind == next.kind
            && self.region == next.region
            && self.dirty_log == next.dirty_log
            && u128::from(self.offset_in_region) + u128::from(self.size)
                == u128::from(next.offset_in_region)
    }
}

/// Paints terminal regions into the view in render order; the first painter of an address
/// wins (render order is highest priority first, newest first among equals).
#[derive(Default)]
pub(crate) struct Painter {
    ranges: BTreeMap<u64, Section>,
}

impl Painter {
    /// Fills the still-unpainted parts of `clip` (absolute, within [0, 2^64)) with sections of
    /// a region placed at `base`. `make(addr, offset_in_region, size)` builds each section.
    pub(crate) fn paint(
        &mut self,
        clip: (u128, u128),
        base: i128,
        make: impl Fn(u64, u64, u64) -> Section,
    ) {
        let (Ok(start), Ok(end)) = (u64::try_from(clip.0), u64::try_from(clip.1)) else {
            return;
        };
        let mut gaps = Vec::new();
        let mut cursor = start;
        if let Some((_, before)) = self.ranges.range(..=start).next_back() {
            if before.end() > u128::from(cursor) {
                cursor = u64::try_from(before.end()).unwrap_or(u64::MAX);
            }
        }
        for (&addr, existing) in self.ranges.range(start..end) {
            if addr > cursor {
                gaps.push((cursor, addr));
            }
            let existing_end = u64::try_from(existing.end()).unwrap_or(u64::MAX);
            cursor = cursor.max(existing_end);
        }
        if cursor < end {
            gaps.push((cursor, end));
        }
        for (gap_start, gap_end) in gaps {
            // gap_start >= clip start >= base, and the offset is below the region's size.
            let Ok(offset) = u64::try_from(i128::from(gap_start) - base) else {
                continue;
            };
            self.ranges
                .insert(gap_start, make(gap_start, offset, gap_end - gap_start));
        }
    }

    /// The painted sections in address order, adjacent continuations merged.
    pub(crate) fn finish(self) -> Vec<Section> {
        let mut out: Vec<Section> = Vec::with_capacity(self.ranges.len());
        for section in self.ranges.into_values() {
            match out.last_mut() {
                Some(last) if last.continues_with(&section) => last.size += section.size,
                _ => out.push(section),
            }
        }
        out
    }
}

/// One listener callback of a topology update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Del(Section),
    Add(Section),
    Nop(Section),
    LogStart(Section),
    LogStop(Section),
    EventfdAdd(IoEventFd),
    EventfdDel(IoEventFd),
}

impl Op {
    /// The callback that undoes this one (`None` for nop, which changes nothing).
    pub(crate) fn inverse(&self) -> Option<Op> {
        match self {
            Op::Del(s) => Some(Op::Add(s.clone())),
            Op::Add(s) => Some(Op::Del(s.clone())),
            Op::Nop(_) => None,
            Op::LogStart(s) => Some(Op::LogStop(Section {
                dirty_log: false,
                ..s.clone()
            })),
            Op::LogStop(s) => Some(Op::LogStart(Section {
                dirty_log: true,
                ..s.clone()
            })),
            Op::EventfdAdd(e) => Some(Op::EventfdDel(e.clone())),
            Op::EventfdDel(e) => Some(Op::EventfdAdd(e.clone())),
        }
    }
}

/// The callbacks that take a listener from `old` to `new`, in QEMU's order: every `region_del`
/// first (so slots are free before new ones are added), then in address order `region_nop`
/// (followed by `log_start`/`log_stop` if only dirty logging changed) or `region_add`.
pub(crate) fn diff(old: &[Section], new: &[Section]) -> Vec<Op> {
    let mut dels = Vec::new();
    let mut rest = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(o), Some(n)) if o.same_mapping(n) => {
                rest.push(Op::Nop(n.clone()));
                if !o.dirty_log && n.dirty_log {
                    rest.push(Op::LogStart(n.clone()));
                } else if o.dirty_log && !n.dirty_log {
                    rest.push(Op::LogStop(n.clone()));
                }
                i += 1;
                j += 1;
            }
            (Some(o), n) if n.is_none_or(|n| o.guest_addr <= n.guest_addr) => {
                dels.push(Op::Del(o.clone()));
                i += 1;
            }
            (_, Some(n)) => {
                rest.push(Op::Add(n.clone()));
                j += 1;
            }
            (Some(o), None) => {
                // Unreachable by the arm above; kept total for the compiler.
                dels.push(Op::Del(o.clone()));
                i += 1;
            }
        }
    }
    dels.extend(rest);
    dels
}

/// The ioeventfd callbacks that take a listener from `old` to `new` (both sorted): the
/// deletions and the additions, to be sent around the section diff (deletions first, as
/// QEMU's `address_space_update_ioeventfds`).
pub(crate) fn diff_eventfds(old: &[IoEventFd], new: &[IoEventFd]) -> (Vec<Op>, Vec<Op>) {
    let dels = old
        .iter()
        .filter(|e| new.binary_search(e).is_err())
        .cloned()
        .map(Op::EventfdDel)
        .collect();
    let adds = new
        .iter()
        .filter(|e| old.binary_search(e).is_err())
        .cloned()
        .map(Op::EventfdAdd)
        .collect();
    (dels, adds)
}
