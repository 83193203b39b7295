//! Requests off the calling thread, as QEMU's `util/thread-pool.c`: a pool of worker
//! threads runs blocking backend calls; each result lands in a [`Completions`] queue
//! whose eventfd wakes the thread that submitted it (QEMU's AioContext bottom half).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{Error, Result};

/// Default number of worker threads of a device's pool.
pub const DEFAULT_POOL_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads running submitted jobs in submission order of pickup
/// (several at once: completion order is not submission order).
///
/// Dropping the pool lets queued jobs run to the end and joins every worker.
pub struct ThreadPool {
    sender: Mutex<Option<Sender<Job>>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// Starts `threads` workers (at least one) named `name`.
    pub fn new(name: &str, threads: usize) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let receiver: Arc<Mutex<Receiver<Job>>> = Arc::clone(&receiver);
            let handle = vmkit_hw::thread::spawn(
                vmkit_hw::thread::ThreadRole::Block,
                &format!("{name}-{i}"),
                move || loop {
                    let job = {
                        let rx = receiver.lock().unwrap_or_else(|e| e.into_inner());
                        rx.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                },
            )
            .map_err(|source| Error::Thread {
                what: "spawning a block worker thread",
                source,
            })?;
            workers.push(handle);
        }
        Ok(ThreadPool {
            sender: Mutex::new(Some(sender)),
            workers,
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Queues `job` for a worker. Fails only after shutdown.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<()> {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        match &*sender {
            Some(s) => s.send(Box::new(job)).map_err(|_| Error::PoolStopped),
            None => Err(Error::PoolStopped),
        }
    }

    /// Lets queued jobs finish and joins the workers.
    pub fn shutdown(&mut self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where workers put results for the submitting thread: a list plus an eventfd that is
/// written when the list stops being empty (wait on it with epoll, then
/// [`take`](Self::take)); a burst of completions costs one wake-up.
pub struct Completions<T> {
    items: Mutex<Vec<T>>,
    event: EventFd,
}

impl<T> std::fmt::Debug for Completions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions").finish_non_exhaustive()
    }
}

impl<T: Send> Completions<T> {
    /// An empty queue.
    pub fn new() -> Result<Arc<Self>> {
        let event = EventFd::new(EFD_NONBLOCK).map_err(|source| Error::Thread {
            what: "creating a completion eventfd",
            source,
        })?;
        Ok(Arc::new(Completions {
            items: Mutex::new(Vec::new()),
            event,
        }))
    }

    /// Posts one result and wakes the waiter (if it has not been woken for earlier ones
    /// it has yet to take).
    pub fn complete(&self, item: T) {
        let was_empty = {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = items.is_empty();
            items.push(item);
            was_empty
        };
        if was_empty {
            let _ = self.event.write(1);
        }
    }

    /// Takes every posted result (and clears the eventfd).
    pub fn take(&self) -> Vec<T> {
        let _ = self.event.read();
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The eventfd to wait on.
    pub fn eventfd(&self) -> &EventFd {
        &self.event
    }
}
