//! Where device crates start their threads, so that a VMM can confine each one.
//!
//! A device model that needs a thread of its own (a virtio queue worker, a block
//! request pool, a network backend loop) starts it with [`spawn`], naming its
//! [`ThreadRole`]. By default that is a plain named [`std::thread`]. A VMM that sandboxes
//! its threads (vmkit's seccomp filters) installs a [`Spawner`] once with [`set_spawner`]:
//! it then starts the thread itself, from a thread of its choosing, and confines it for
//! its role before the device's code runs. The device crate needs no knowledge of how.
//!
//! ```
//! let handle = vmkit_hw::thread::spawn(vmkit_hw::thread::ThreadRole::Worker, "demo", || {
//!     assert_eq!(std::thread::current().name(), Some("demo"));
//!     42
//! })
//! .unwrap();
//! assert_eq!(handle.join().unwrap(), 42);
//! ```

use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// What a device thread does, so that a VMM can give each kind its own confinement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadRole {
    /// A virtio device's queue worker: waits on eventfds, moves descriptor chains,
    /// signals interrupts (virtio-rng, virtio-console, and the generic worker).
    Worker,
    /// A block device's I/O: its queue thread and its request pool (file reads, writes,
    /// flushes, discards).
    Block,
    /// A network device's loop: queues and the tap (or other) backend fd.
    Net,
}

/// Work a [`Spawner`] runs on the thread it creates threads from.
pub type SpawnJob = Box<dyn FnOnce() + Send + 'static>;

/// How a VMM starts and confines device threads.
pub trait Spawner: Send + Sync + 'static {
    /// Runs `job` (which creates the thread) on the thread that creates threads, and
    /// returns once it ran.
    fn run_spawn(&self, job: SpawnJob);
    /// Called first on each new thread, before the device's code, with its role.
    fn thread_start(&self, role: ThreadRole);
}

static SPAWNER: OnceLock<Box<dyn Spawner>> = OnceLock::new();

/// Installs the process's spawner (once; later calls return the spawner back).
pub fn set_spawner(spawner: Box<dyn Spawner>) -> Result<(), Box<dyn Spawner>> {
    SPAWNER.set(spawner)
}

/// Starts `body` on a new thread named `name` in `role`: through the installed
/// [`Spawner`] (the thread is created by [`Spawner::run_spawn`]'s thread, and this returns
/// once [`Spawner::thread_start`] has run on it), or as a plain named thread when there is
/// none.
pub fn spawn<T, F>(role: ThreadRole, name: &str, body: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let builder = std::thread::Builder::new().name(name.to_string());
    let Some(spawner) = SPAWNER.get() else {
        return builder.spawn(body);
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let (started, has_started) = mpsc::sync_channel::<()>(1);
    spawner.run_spawn(Box::new(move || {
        let _ = reply.send(builder.spawn(move || {
            if let Some(spawner) = SPAWNER.get() {
                spawner.thread_start(role);
            }
            let _ = started.send(());
            body()
        }));
    }));
    let handle = answer
        .recv()
        .map_err(|_| io::Error::other("the spawner dropped a thread's start"))??;
    let _ = has_started.recv();
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static STARTS: Mutex<Vec<(ThreadRole, Option<String>)>> = Mutex::new(Vec::new());

    struct Recording;

    impl Spawner for Recording {
        fn run_spawn(&self, job: SpawnJob) {
            // The job runs on a thread of the spawner's own, not the caller's.
            std::thread::spawn(job).join().unwrap();
        }
        fn thread_start(&self, role: ThreadRole) {
            let name = std::thread::current().name().map(str::to_string);
            STARTS.lock().unwrap().push((role, name));
        }
    }

    #[test]
    fn an_installed_spawner_starts_and_confines_each_thread_first() {
        assert!(set_spawner(Box::new(Recording)).is_ok());
        assert!(
            set_spawner(Box::new(Recording)).is_err(),
            "installed once only"
        );
        let handle = spawn(ThreadRole::Block, "blk-test", || {
            // thread_start already ran on this thread.
            STARTS.lock().unwrap().len()
        })
        .unwrap();
        assert_eq!(handle.join().unwrap(), 1);
        assert_eq!(
            *STARTS.lock().unwrap(),
            vec![(ThreadRole::Block, Some("blk-test".to_string()))]
        );
    }
}
