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
//! })
//! .unwrap();
//! handle.join().unwrap();
//! ```

use std::io;
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

/// The body a [`Spawner`] must run on a new thread.
pub type ThreadBody = Box<dyn FnOnce() + Send + 'static>;

/// Starts `body` on a new thread named `name` for `role` and returns its handle.
pub type Spawner =
    dyn Fn(ThreadRole, &str, ThreadBody) -> io::Result<JoinHandle<()>> + Send + Sync + 'static;

static SPAWNER: OnceLock<Box<Spawner>> = OnceLock::new();

/// Installs the process's spawner (once; later calls return the spawner back).
pub fn set_spawner(spawner: Box<Spawner>) -> Result<(), Box<Spawner>> {
    SPAWNER.set(spawner)
}

/// Starts `body` on a new thread named `name` in `role`: through the installed
/// [`Spawner`], or as a plain named thread when there is none.
pub fn spawn<F>(role: ThreadRole, name: &str, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    match SPAWNER.get() {
        Some(spawner) => spawner(role, name, Box::new(body)),
        None => std::thread::Builder::new()
            .name(name.to_string())
            .spawn(body),
    }
}
