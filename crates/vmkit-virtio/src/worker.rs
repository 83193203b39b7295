//! The thread a device runs its queues on, and the queue-draining loop devices share.

use std::io;
use std::os::fd::RawFd;
use std::thread::JoinHandle;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{avail_overrun, check_chain, ChainShape};
use crate::{Error, Result};

const KILL: u64 = u64::MAX;

/// A device worker: one thread waiting (epoll) on a set of eventfds, calling a handler
/// with its state `S` (the device's queues) and the token of each fd that fires, until
/// [`stop`](Self::stop) (or drop) writes its kill eventfd and joins it;
/// [`stop_and_take`](Self::stop_and_take) gives the state back (for a snapshot).
#[derive(Debug)]
pub(crate) struct Worker<S> {
    kill: EventFd,
    handle: Option<JoinHandle<S>>,
}

impl<S: Send + 'static> Worker<S> {
    /// Starts thread `name` waiting on `fds` (fd, token); `on_event(&mut state, token)`
    /// runs for each one that becomes readable (it must drain the fd). The fds must stay
    /// open while the thread runs (the handler usually owns them).
    pub(crate) fn spawn<F>(
        name: &str,
        fds: &[(RawFd, u64)],
        mut state: S,
        mut on_event: F,
    ) -> Result<Self>
    where
        F: FnMut(&mut S, u64) + Send + 'static,
    {
        let io = |what: &'static str| move |source| Error::Io { what, source };
        let kill = EventFd::new(EFD_NONBLOCK).map_err(io("creating a worker's kill eventfd"))?;
        let epoll = Epoll::new().map_err(io("creating a worker's epoll"))?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(std::os::fd::AsRawFd::as_raw_fd(&kill), KILL)
            .map_err(io("adding the kill eventfd to a worker's epoll"))?;
        for &(fd, token) in fds {
            add(fd, token).map_err(io("adding a queue eventfd to a worker's epoll"))?;
        }
        let handle =
            vmkit_hw::thread::spawn(vmkit_hw::thread::ThreadRole::Worker, name, move || {
                let mut events = vec![EpollEvent::default(); 8];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return state,
                    };
                    for ev in &events[..n] {
                        if ev.data() == KILL {
                            return state;
                        }
                        on_event(&mut state, ev.data());
                    }
                }
            })
            .map_err(io("spawning a device worker thread"))?;
        Ok(Worker {
            kill,
            handle: Some(handle),
        })
    }

    /// Stops and joins the thread; false if it had panicked.
    pub(crate) fn stop(&mut self) -> bool {
        let Some(handle) = self.handle.take() else {
            return true;
        };
        // A full counter (never, at 2^64 - 2) still leaves the fd readable.
        let _ = self.kill.write(1);
        handle.join().is_ok()
    }

    /// Stops and joins the thread after the event it is handling, and returns its state;
    /// `None` if it had panicked or was stopped before.
    pub(crate) fn stop_and_take(&mut self) -> Option<S> {
        let handle = self.handle.take()?;
        let _ = self.kill.write(1);
        handle.join().ok()
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.kill.write(1);
            let _ = handle.join();
        }
    }
}

/// Reads an eventfd to clear it (nonblocking; an empty counter is fine).
pub(crate) fn drain_eventfd(fd: &EventFd) {
    let _ = fd.read();
}

/// Pops every available chain of `queue`, checks it ([`check_chain`]), hands each to
/// `handle` (which returns the number of bytes the device wrote into it) and puts it on the
/// used ring, re-checking after re-enabling notifications (`EVENT_IDX`); stops when a pass
/// makes no progress, so a corrupt avail ring cannot spin it. A chain that fails the check,
/// or that `handle` refuses (`None`: nothing the device needs is there, e.g. no writable
/// byte), is not completed: `*broken` is set and draining stops (the caller then asks the
/// transport for NEEDS_RESET and serves the queue no more until a reset). Returns whether
/// the driver wants an interrupt.
pub(crate) fn drain_queue<MM, F>(
    queue: &mut Queue,
    mem: &MM,
    broken: &mut bool,
    mut handle: F,
) -> bool
where
    MM: GuestMemory,
    F: FnMut(DescriptorChain<&MM>, ChainShape) -> Option<u32>,
{
    let mut used = false;
    while !*broken {
        let _ = queue.disable_notification(mem);
        let mut progress = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let Some(len) = check_chain(&chain, mem)
                .ok()
                .and_then(|shape| handle(chain, shape))
            else {
                *broken = true;
                break;
            };
            used |= queue.add_used(mem, head, len).is_ok();
            progress = true;
        }
        if avail_overrun(queue, mem) {
            *broken = true;
        }
        if *broken {
            break;
        }
        match queue.enable_notification(mem) {
            Ok(true) if progress => continue,
            _ => break,
        }
    }
    used && queue.needs_notification(mem).unwrap_or(true)
}

/// Where `queue` (index `index`) stands: the positions a snapshot keeps.
pub(crate) fn position(index: usize, queue: &Queue) -> crate::QueuePosition {
    crate::QueuePosition {
        index,
        next_avail: queue.next_avail(),
        next_used: queue.next_used(),
    }
}
