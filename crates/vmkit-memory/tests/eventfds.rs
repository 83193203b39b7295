//! ioeventfds on I/O regions: the exact `eventfd_add` / `eventfd_del` calls listeners get
//! when a region carrying them is mapped, moved (a BAR reprogrammed), covered, aliased or
//! unmapped, when ioeventfds are added or removed, and on listener (un)registration; the
//! rules an ioeventfd must follow; a listener refusing one.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vmkit_memory::{
    AddressSpace, Error, IoEventFd, ListenerError, ListenerEvent, ListenerResult, MemoryListener,
    RecordingListener, Result,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

type Summary = (&'static str, u64, u64, String);

fn ev(op: &'static str, addr: u64, size: u64, name: &str) -> Summary {
    (op, addr, size, name.to_owned())
}

fn begin() -> Summary {
    ev("begin", 0, 0, "")
}

fn commit() -> Summary {
    ev("commit", 0, 0, "")
}

fn eventfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

fn setup() -> Result<(AddressSpace, RecordingListener)> {
    let mut space = AddressSpace::new("io");
    let recorder = RecordingListener::new();
    space.register_listener(Box::new(recorder.clone()))?;
    recorder.take();
    Ok((space, recorder))
}

#[test]
fn ioeventfds_follow_their_region_in_and_out_of_the_view_and_when_it_moves() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let bar = space.new_io("bar0", 0x40)?;
    let fd = eventfd();
    // Not mapped: nothing to tell.
    space.add_eventfd(bar, 0x10, 2, Some(0), Arc::clone(&fd))?;
    assert_eq!(rec.take_summary(), vec![]);
    assert_eq!(space.region_eventfd_count(bar)?, 1);
    assert!(space.ioeventfds().is_empty());

    space.add_subregion(root, 0xc000, bar)?;
    let events = rec.take();
    assert_eq!(
        events
            .iter()
            .map(ListenerEvent::summary)
            .collect::<Vec<_>>(),
        vec![
            begin(),
            ev("add", 0xc000, 0x40, "bar0"),
            ev("eventfd_add", 0xc010, 2, "bar0"),
            commit()
        ]
    );
    let ListenerEvent::EventfdAdd(added) = &events[2] else {
        panic!("{events:?}")
    };
    assert_eq!(added.datamatch, Some(0));
    assert_eq!(added.region, bar);
    assert_eq!(added.offset_in_region, 0x10);
    assert_eq!(added.eventfd.as_raw_fd(), fd.as_raw_fd());
    assert_eq!(space.ioeventfds(), std::slice::from_ref(added));

    // The guest reprograms the BAR: the ioeventfd goes before its section, comes back after.
    space.set_address(bar, 0xd000)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xc010, 2, "bar0"),
            ev("del", 0xc000, 0x40, "bar0"),
            ev("add", 0xd000, 0x40, "bar0"),
            ev("eventfd_add", 0xd010, 2, "bar0"),
            commit()
        ]
    );

    // Disabled (I/O decode off) and back.
    space.set_enabled(bar, false)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xd010, 2, "bar0"),
            ev("del", 0xd000, 0x40, "bar0"),
            commit()
        ]
    );
    space.set_enabled(bar, true)?;
    rec.take();

    space.remove_subregion(root, bar)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xd010, 2, "bar0"),
            ev("del", 0xd000, 0x40, "bar0"),
            commit()
        ]
    );
    assert!(space.ioeventfds().is_empty());
    // It stays on the region for the next mapping.
    assert_eq!(space.region_eventfd_count(bar)?, 1);
    Ok(())
}

#[test]
fn adding_and_deleting_on_a_mapped_region_sends_only_eventfd_calls() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let bar = space.new_io("bar4", 0x4000)?;
    space.add_subregion(root, 0xfebf_0000, bar)?;
    rec.take();
    let q0 = eventfd();
    let q1 = eventfd();
    // The modern doorbells: no length, no datamatch.
    space.add_eventfd(bar, 0x3000, 0, None, Arc::clone(&q0))?;
    space.add_eventfd(bar, 0x3004, 0, None, Arc::clone(&q1))?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_add", 0xfebf_3000, 0, "bar4"),
            commit(),
            begin(),
            ev("eventfd_add", 0xfebf_3004, 0, "bar4"),
            commit()
        ]
    );
    // Transactions batch them.
    space.transaction(|t| {
        t.del_eventfd(bar, 0x3000, 0, None, &q0)?;
        t.del_eventfd(bar, 0x3004, 0, None, &q1)
    })?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xfebf_3000, 0, "bar4"),
            ev("eventfd_del", 0xfebf_3004, 0, "bar4"),
            commit()
        ]
    );
    assert_eq!(space.region_eventfd_count(bar)?, 0);
    Ok(())
}

#[test]
fn a_shared_port_with_datamatch_holds_one_ioeventfd_per_queue() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let bar = space.new_io("legacy", 0x20)?;
    let fds: Vec<_> = (0..3).map(|_| eventfd()).collect();
    for (queue, fd) in fds.iter().enumerate() {
        space.add_eventfd(bar, 0x10, 2, Some(queue as u64), Arc::clone(fd))?;
    }
    space.add_subregion(root, 0xc040, bar)?;
    let matches: Vec<Option<u64>> = rec
        .take()
        .iter()
        .filter_map(|e| match e {
            ListenerEvent::EventfdAdd(e) => Some(e.datamatch),
            _ => None,
        })
        .collect();
    assert_eq!(matches, vec![Some(0), Some(1), Some(2)]);
    // Deleting needs the same datamatch.
    let err = space
        .del_eventfd(bar, 0x10, 2, Some(7), &fds[0])
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchEventfd { .. }), "{err}");
    space.del_eventfd(bar, 0x10, 2, Some(0), &fds[0])?;
    assert_eq!(space.ioeventfds().len(), 2);
    Ok(())
}

#[test]
fn a_covering_region_hides_an_ioeventfd_and_an_alias_shows_it_elsewhere() -> Result<()> {
    let (mut space, rec) = setup()?;
    let root = space.root();
    let bar = space.new_io("bar", 0x100)?;
    space.add_eventfd(bar, 0x80, 4, None, eventfd())?;
    space.add_subregion(root, 0x1000, bar)?;
    rec.take();

    let cover = space.new_io("cover", 0x10)?;
    space.add_subregion_overlap(root, 0x1080, cover, 1)?;
    let summary = rec.take_summary();
    assert_eq!(summary.first(), Some(&begin()));
    assert_eq!(summary.get(1), Some(&ev("eventfd_del", 0x1080, 4, "bar")));
    assert!(!summary.iter().any(|e| e.0 == "eventfd_add"), "{summary:?}");
    assert!(space.ioeventfds().is_empty());
    space.remove_subregion(root, cover)?;
    assert_eq!(space.ioeventfds().len(), 1);
    rec.take();

    let alias = space.new_alias("bar-alias", bar, 0x80, 0x10)?;
    space.add_subregion(root, 0x9000, alias)?;
    let adds: Vec<u64> = rec
        .take()
        .iter()
        .filter_map(|e| match e {
            ListenerEvent::EventfdAdd(e) => Some(e.guest_addr),
            _ => None,
        })
        .collect();
    assert_eq!(adds, vec![0x9000]);
    let addrs: Vec<u64> = space.ioeventfds().iter().map(|e| e.guest_addr).collect();
    assert_eq!(addrs, vec![0x1080, 0x9000]);
    Ok(())
}

#[test]
fn registration_replays_ioeventfds_and_unregistration_removes_them_first() -> Result<()> {
    let mut space = AddressSpace::new("io");
    let root = space.root();
    let bar = space.new_io("bar0", 0x20)?;
    space.add_eventfd(bar, 0x10, 2, Some(1), eventfd())?;
    space.add_subregion(root, 0xc000, bar)?;
    let rec = RecordingListener::new();
    let id = space.register_listener(Box::new(rec.clone()))?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("add", 0xc000, 0x20, "bar0"),
            ev("eventfd_add", 0xc010, 2, "bar0"),
            commit()
        ]
    );
    space.unregister_listener(id)?;
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xc010, 2, "bar0"),
            ev("del", 0xc000, 0x20, "bar0"),
            commit()
        ]
    );
    // Dropping the space tears down the same way.
    let rec = RecordingListener::new();
    space.register_listener(Box::new(rec.clone()))?;
    rec.take();
    drop(space);
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("eventfd_del", 0xc010, 2, "bar0"),
            ev("del", 0xc000, 0x20, "bar0"),
            commit()
        ]
    );
    Ok(())
}

#[test]
fn ioeventfds_that_break_the_rules_are_refused_by_name() -> Result<()> {
    let mut space = AddressSpace::new("system");
    let ram = space.new_ram("ram", 0x1000)?;
    let bar = space.new_io("bar", 0x20)?;
    let fd = eventfd();
    let err = space
        .add_eventfd(ram, 0, 4, None, Arc::clone(&fd))
        .unwrap_err();
    assert!(
        matches!(err, Error::NotIoRegion(ref n) if n == "ram"),
        "{err}"
    );
    for (offset, size, datamatch, needle) in [
        (0, 3, None, "size 3"),
        (0, 0, Some(1), "needs the access size"),
        (0, 1, Some(0x100), "does not fit in 1 bytes"),
        (0x1f, 2, None, "outside the region"),
        (0x20, 0, None, "outside the region"),
        (u64::MAX, 8, None, "outside the region"),
    ] {
        let err = space
            .add_eventfd(bar, offset, size, datamatch, Arc::clone(&fd))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidEventfd { .. }) && text.contains(needle),
            "({offset:#x}, {size}, {datamatch:?}): {text}"
        );
        assert!(text.contains("`bar`"), "{text}");
    }
    space.add_eventfd(bar, 0x1e, 2, Some(0xffff), Arc::clone(&fd))?;
    let err = space
        .add_eventfd(bar, 0x1e, 2, Some(0xffff), Arc::clone(&fd))
        .unwrap_err();
    assert!(err.to_string().contains("already there"), "{err}");
    // The same trigger on another eventfd is the listener's business (KVM refuses it).
    space.add_eventfd(bar, 0x1e, 2, Some(0xffff), eventfd())?;
    assert_eq!(space.region_eventfd_count(bar)?, 2);
    let err = space.del_eventfd(bar, 0, 0, None, &fd).unwrap_err();
    assert!(matches!(err, Error::NoSuchEventfd { .. }), "{err}");
    Ok(())
}

/// Refuses every `eventfd_add`.
struct RefuseEventfds;

impl MemoryListener for RefuseEventfds {
    fn name(&self) -> &str {
        "refuse-eventfds"
    }
    fn eventfd_add(&mut self, eventfd: &IoEventFd) -> ListenerResult {
        Err(ListenerError::new(format!(
            "no ioeventfd at {:#x}",
            eventfd.guest_addr
        )))
    }
}

#[test]
fn a_refused_ioeventfd_undoes_the_whole_change() -> Result<()> {
    let (mut space, rec) = setup()?;
    space.register_listener(Box::new(RefuseEventfds))?;
    let root = space.root();
    let bar = space.new_io("bar0", 0x20)?;
    space.add_eventfd(bar, 0x10, 2, Some(0), eventfd())?;
    let err = space.add_subregion(root, 0xc000, bar).unwrap_err();
    assert!(
        matches!(err, Error::Listener { ref listener, .. } if listener == "refuse-eventfds"),
        "{err}"
    );
    assert!(err.to_string().contains("refused"), "{err}");
    // The region is not mapped, and the recorder (which accepted) got the inverse.
    assert!(space.flat_view().is_empty());
    assert_eq!(space.region_parent(bar)?, None);
    assert_eq!(
        rec.take_summary(),
        vec![
            begin(),
            ev("add", 0xc000, 0x20, "bar0"),
            ev("eventfd_add", 0xc010, 2, "bar0"),
            commit(),
            begin(),
            ev("eventfd_del", 0xc010, 2, "bar0"),
            ev("del", 0xc000, 0x20, "bar0"),
            commit()
        ]
    );
    // Without ioeventfds the region maps.
    space.remove_subregion(root, bar).unwrap_err();
    let bar2 = space.new_io("bar1", 0x20)?;
    space.add_subregion(root, 0xc000, bar2)?;
    assert_eq!(space.flat_view().len(), 1);
    Ok(())
}
