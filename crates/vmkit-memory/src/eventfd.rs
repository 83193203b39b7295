//! ioeventfds hung on I/O regions, and where the flat view puts them (QEMU's
//! `memory_region_add_eventfd` and `address_space_update_ioeventfds`).

use std::cmp::Ordering;
use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::flat::{Section, SectionKind};
use crate::region::RegionId;

/// One ioeventfd as a region holds it: guest writes at `offset` in the region (of `size`
/// bytes, 0 = any size, and of value `datamatch` when given) signal `eventfd`.
#[derive(Clone, Debug)]
pub(crate) struct RegionEventFd {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) datamatch: Option<u64>,
    pub(crate) eventfd: Arc<EventFd>,
}

impl RegionEventFd {
    /// Checks an ioeventfd request against the rules KVM applies (`KVM_IOEVENTFD`): size 0,
    /// 1, 2, 4 or 8; a datamatch needs a size and must fit in it; the address inside the
    /// region.
    pub(crate) fn new(
        region_name: &str,
        region_size: u64,
        offset: u64,
        size: u64,
        datamatch: Option<u64>,
        eventfd: Arc<EventFd>,
    ) -> Result<Self> {
        let refuse = |reason: String| Error::InvalidEventfd {
            name: region_name.to_owned(),
            offset,
            reason,
        };
        if !matches!(size, 0 | 1 | 2 | 4 | 8) {
            return Err(refuse(format!(
                "size {size} is not 0 (any access size), 1, 2, 4 or 8"
            )));
        }
        if let Some(value) = datamatch {
            if size == 0 {
                return Err(refuse(
                    "a datamatch needs the access size (size 0 matches any size)".into(),
                ));
            }
            if size < 8 && value >> (8 * size) != 0 {
                return Err(refuse(format!(
                    "datamatch {value:#x} does not fit in {size} bytes"
                )));
            }
        }
        let end = offset.checked_add(size.max(1));
        if end.is_none_or(|end| end > region_size) {
            return Err(refuse(format!(
                "[{offset:#x}, +{:#x}) is outside the region (size {region_size:#x})",
                size.max(1)
            )));
        }
        Ok(Self {
            offset,
            size,
            datamatch,
            eventfd,
        })
    }

    /// Same trigger (offset, size, datamatch) and the same file.
    pub(crate) fn matches(
        &self,
        offset: u64,
        size: u64,
        datamatch: Option<u64>,
        eventfd: &EventFd,
    ) -> bool {
        self.offset == offset
            && self.size == size
            && self.datamatch == datamatch
            && self.eventfd.as_raw_fd() == eventfd.as_raw_fd()
    }
}

/// An ioeventfd as listeners receive it: where the guest sees it in the address space.
///
/// A listener for KVM registers it with `KVM_IOEVENTFD` (`KVM_IOEVENTFD_FLAG_PIO` for a port
/// address space, `KVM_IOEVENTFD_FLAG_DATAMATCH` when `datamatch` is given, length `size`,
/// where 0 is KVM's "any length"), so that a matching guest write signals `eventfd` without
/// leaving the kernel.
#[derive(Clone)]
pub struct IoEventFd {
    /// Address of the trigger in the address space.
    pub guest_addr: u64,
    /// Access size to match: 1, 2, 4 or 8, or 0 for any size.
    pub size: u64,
    /// Value to match, if any (only with a non-zero `size`).
    pub datamatch: Option<u64>,
    /// The eventfd that a matching write signals.
    pub eventfd: Arc<EventFd>,
    /// The I/O region the ioeventfd was added to (its terminal region, never an alias).
    pub region: RegionId,
    /// Offset of the trigger in `region`.
    pub offset_in_region: u64,
    /// Name of `region`.
    pub name: Arc<str>,
}

impl IoEventFd {
    fn key(&self) -> (u64, u64, Option<u64>, i32, RegionId, u64) {
        (
            self.guest_addr,
            self.size,
            self.datamatch,
            self.eventfd.as_raw_fd(),
            self.region,
            self.offset_in_region,
        )
    }
}

impl fmt::Debug for IoEventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoEventFd")
            .field("guest_addr", &format_args!("{:#x}", self.guest_addr))
            .field("size", &self.size)
            .field("datamatch", &self.datamatch)
            .field("fd", &self.eventfd.as_raw_fd())
            .field("region", &self.region)
            .field("offset_in_region", &self.offset_in_region)
            .field("name", &self.name)
            .finish()
    }
}

/// Two entries are equal when they trigger at the same place on the same file.
impl PartialEq for IoEventFd {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for IoEventFd {}

impl PartialOrd for IoEventFd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IoEventFd {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The ioeventfds the guest can reach through `view`: each region ioeventfd whose address
/// falls in a visible I/O section of its region, at that section's guest address (an
/// ioeventfd hidden by an overlapping region, or of an unmapped region, is not there).
/// Sorted.
pub(crate) fn place<'a>(
    view: &[Section],
    eventfds_of: impl Fn(RegionId) -> Option<&'a [RegionEventFd]>,
) -> Vec<IoEventFd> {
    let mut out = Vec::new();
    for section in view.iter().filter(|s| s.kind == SectionKind::Io) {
        let Some(eventfds) = eventfds_of(section.region) else {
            continue;
        };
        for ev in eventfds {
            let Some(delta) = ev.offset.checked_sub(section.offset_in_region) else {
                continue;
            };
            if delta >= section.size {
                continue;
            }
            out.push(IoEventFd {
                guest_addr: section.guest_addr.wrapping_add(delta),
                size: ev.size,
                datamatch: ev.datamatch,
                eventfd: Arc::clone(&ev.eventfd),
                region: section.region,
                offset_in_region: ev.offset,
                name: Arc::clone(&section.name),
            });
        }
    }
    out.sort();
    out
}
