//! The memory listener trait and a recording listener for tests.

use std::sync::{Arc, Mutex, PoisonError};

use crate::dirty::DirtyBitmap;
use crate::error::ListenerResult;
use crate::eventfd::IoEventFd;
use crate::flat::Section;

/// Observer of an [`AddressSpace`](crate::AddressSpace)'s flat view, as QEMU's
/// `MemoryListener`: the KVM listener turns these calls into memory slots.
///
/// Every topology change is delivered as `begin`, then `region_del` for each section that
/// vanished or changed, then in address order `region_nop` for each unchanged section
/// (followed by `log_start`/`log_stop` when only its dirty logging changed) or `region_add`
/// for each new one, then `commit`. A section handed to `region_add` carries its current
/// `dirty_log` flag, so a listener enables logging there directly (no separate `log_start`).
///
/// # Failure contract
/// A callback that returns an error must leave the listener as it was before that call. The
/// address space then undoes the change everywhere: this listener, still inside the bracket,
/// gets the inverse of the calls it already accepted (adds of what it deleted, dels of what it
/// added, in reverse order) followed by `commit` (also when it was `commit` that failed; if
/// `begin` failed it gets nothing more); listeners that already committed the change get the inverse
/// diff in a fresh `begin`..`commit`; the tree and flat view return to their previous state;
/// the operation returns [`Error::Listener`](crate::Error::Listener). If an undo call fails too,
/// the operation returns [`Error::ListenerRollback`](crate::Error::ListenerRollback).
pub trait MemoryListener {
    /// A name for error messages.
    fn name(&self) -> &str {
        "memory listener"
    }

    /// Start of one topology update.
    fn begin(&mut self) -> ListenerResult {
        Ok(())
    }

    /// `section` is new in the flat view.
    fn region_add(&mut self, section: &Section) -> ListenerResult {
        let _ = section;
        Ok(())
    }

    /// `section` left the flat view (or changed and is re-added).
    fn region_del(&mut self, section: &Section) -> ListenerResult {
        let _ = section;
        Ok(())
    }

    /// `section` is unchanged by this update.
    fn region_nop(&mut self, section: &Section) -> ListenerResult {
        let _ = section;
        Ok(())
    }

    /// End of one topology update: the new flat view is complete.
    fn commit(&mut self) -> ListenerResult {
        Ok(())
    }

    /// Dirty logging was switched on for an unchanged section.
    fn log_start(&mut self, section: &Section) -> ListenerResult {
        let _ = section;
        Ok(())
    }

    /// Dirty logging was switched off for an unchanged section.
    fn log_stop(&mut self, section: &Section) -> ListenerResult {
        let _ = section;
        Ok(())
    }

    /// OR the pages of `section` dirtied since the last sync into `bitmap` (which covers
    /// exactly the pages of `section`, page 0 holding `section.guest_addr`) and reset the
    /// listener's own log.
    fn log_sync(&mut self, section: &Section, bitmap: &mut DirtyBitmap) -> ListenerResult {
        let _ = (section, bitmap);
        Ok(())
    }

    /// An ioeventfd became reachable at `eventfd.guest_addr` (its region entered the view,
    /// moved, or got it), as QEMU's `eventfd_add`. Default: ignored.
    fn eventfd_add(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        let _ = eventfd;
        Ok(())
    }

    /// An ioeventfd is no longer reachable at `eventfd.guest_addr` (its region left the
    /// view, moved or was covered, or the ioeventfd was deleted), as QEMU's `eventfd_del`.
    /// Default: ignored.
    fn eventfd_del(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        let _ = eventfd;
        Ok(())
    }
}

impl<T: MemoryListener + ?Sized> MemoryListener for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn begin(&mut self) -> ListenerResult {
        (**self).begin()
    }
    fn region_add(&mut self, section: &Section) -> ListenerResult {
        (**self).region_add(section)
    }
    fn region_del(&mut self, section: &Section) -> ListenerResult {
        (**self).region_del(section)
    }
    fn region_nop(&mut self, section: &Section) -> ListenerResult {
        (**self).region_nop(section)
    }
    fn commit(&mut self) -> ListenerResult {
        (**self).commit()
    }
    fn log_start(&mut self, section: &Section) -> ListenerResult {
        (**self).log_start(section)
    }
    fn log_stop(&mut self, section: &Section) -> ListenerResult {
        (**self).log_stop(section)
    }
    fn log_sync(&mut self, section: &Section, bitmap: &mut DirtyBitmap) -> ListenerResult {
        (**self).log_sync(section, bitmap)
    }
    fn eventfd_add(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        (**self).eventfd_add(eventfd)
    }
    fn eventfd_del(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        (**self).eventfd_del(eventfd)
    }
}

/// One call a [`RecordingListener`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerEvent {
    /// `begin()`.
    Begin,
    /// `region_add(section)`.
    Add(Section),
    /// `region_del(section)`.
    Del(Section),
    /// `region_nop(section)`.
    Nop(Section),
    /// `commit()`.
    Commit,
    /// `log_start(section)`.
    LogStart(Section),
    /// `log_stop(section)`.
    LogStop(Section),
    /// `log_sync(section, _)`.
    LogSync(Section),
    /// `eventfd_add(eventfd)`.
    EventfdAdd(IoEventFd),
    /// `eventfd_del(eventfd)`.
    EventfdDel(IoEventFd),
}

impl ListenerEvent {
    /// A compact form for assertions: `("add", guest_addr, size, region name)`, with `"begin"`
    /// and `"commit"` carrying `(0, 0, "")`; ioeventfds are `("eventfd_add" /
    /// "eventfd_del", guest_addr, size, region name)`.
    pub fn summary(&self) -> (&'static str, u64, u64, String) {
        let (op, section) = match self {
            ListenerEvent::Begin => return ("begin", 0, 0, String::new()),
            ListenerEvent::Commit => return ("commit", 0, 0, String::new()),
            ListenerEvent::EventfdAdd(e) => {
                return ("eventfd_add", e.guest_addr, e.size, e.name.to_string())
            }
            ListenerEvent::EventfdDel(e) => {
                return ("eventfd_del", e.guest_addr, e.size, e.name.to_string())
            }
            ListenerEvent::Add(s) => ("add", s),
            ListenerEvent::Del(s) => ("del", s),
            ListenerEvent::Nop(s) => ("nop", s),
            ListenerEvent::LogStart(s) => ("log_start", s),
            ListenerEvent::LogStop(s) => ("log_stop", s),
            ListenerEvent::LogSync(s) => ("log_sync", s),
        };
        (
            op,
            section.guest_addr,
            section.size,
            section.name.to_string(),
        )
    }
}

/// A listener that records every call; clones share the record, so register one clone and
/// read the other.
#[derive(Clone, Debug, Default)]
pub struct RecordingListener {
    events: Arc<Mutex<Vec<ListenerEvent>>>,
}

impl RecordingListener {
    /// A listener with an empty record.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, event: ListenerEvent) -> ListenerResult {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        Ok(())
    }

    /// Takes and clears the recorded calls.
    pub fn take(&self) -> Vec<ListenerEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes and clears the recorded calls in [`ListenerEvent::summary`] form.
    pub fn take_summary(&self) -> Vec<(&'static str, u64, u64, String)> {
        self.take().iter().map(ListenerEvent::summary).collect()
    }
}

impl MemoryListener for RecordingListener {
    fn name(&self) -> &str {
        "recording listener"
    }
    fn begin(&mut self) -> ListenerResult {
        self.push(ListenerEvent::Begin)
    }
    fn region_add(&mut self, section: &Section) -> ListenerResult {
        self.push(ListenerEvent::Add(section.clone()))
    }
    fn region_del(&mut self, section: &Section) -> ListenerResult {
        self.push(ListenerEvent::Del(section.clone()))
    }
    fn region_nop(&mut self, section: &Section) -> ListenerResult {
        self.push(ListenerEvent::Nop(section.clone()))
    }
    fn commit(&mut self) -> ListenerResult {
        self.push(ListenerEvent::Commit)
    }
    fn log_start(&mut self, section: &Section) -> ListenerResult {
        self.push(ListenerEvent::LogStart(section.clone()))
    }
    fn log_stop(&mut self, section: &Section) -> ListenerResult {
        self.push(ListenerEvent::LogStop(section.clone()))
    }
    fn log_sync(&mut self, section: &Section, _bitmap: &mut DirtyBitmap) -> ListenerResult {
        self.push(ListenerEvent::LogSync(section.clone()))
    }
    fn eventfd_add(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        self.push(ListenerEvent::EventfdAdd(eventfd.clone()))
    }
    fn eventfd_del(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        self.push(ListenerEvent::EventfdDel(eventfd.clone()))
    }
}
