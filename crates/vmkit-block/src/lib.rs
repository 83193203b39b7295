//! vmkit's block layer, shaped after QEMU's: storage backends, the `-drive` option, a
//! worker-thread pool for requests, and the virtio-blk device.
//!
//! | item | QEMU counterpart |
//! |---|---|
//! | [`BlockBackend`] | a `BlockBackend` / `BlockDriverState` (read, write, flush, discard, write-zeroes, size, read-only) |
//! | [`RawFile`] | `block/file-posix.c` with `format=raw`: `cache=none\|writeback\|writethrough\|directsync\|unsafe` (`O_DIRECT` with aligned bounce buffers, `fdatasync`), `discard=ignore\|unmap` (hole punching), `readonly=on` |
//! | [`DriveSpec`] | `-drive file=,format=raw,if=none\|virtio,id=,readonly=,cache=,discard=,aio=threads` |
//! | [`ThreadPool`], [`Completions`] | `util/thread-pool.c` and the AioContext completion bottom half (`aio=threads`) |
//! | [`VirtioBlk`] | `hw/block/virtio-blk.c` (the device; `virtio-blk-pci` is it on vmkit-virtio's PCI transport) |
//! | [`MemoryBackend`] | a RAM disk for tests and benchmarks (QEMU's `null-co` with data) |
//!
//! # Dependency direction
//!
//! This crate depends on vmkit-virtio (for its [`VirtioDevice`](vmkit_virtio::VirtioDevice)
//! trait), not the other way round: vmkit-virtio stays a transport plus devices without
//! host file I/O, so a VMM that only wants the transport (or brings its own block layer)
//! does not pull in files, `O_DIRECT` or a thread pool; and a VMM with its own virtio
//! transport can still take [`VirtioBlk`] through the trait. The backend is a trait
//! object, so the device runs on any storage a VMM provides.
//!
//! # Threads and data safety
//!
//! A doorbell only writes the queue's eventfd (or KVM does, through an ioeventfd). The
//! device's I/O thread pops and checks requests and passes the backend calls to the pool;
//! completions come back through an eventfd. A write the guest sees completed has reached
//! the file (the host page cache, or the disk under `O_DIRECT`); a completed `FLUSH` means
//! `fdatasync` returned (except `cache=unsafe`, as in QEMU). A virtio reset and dropping
//! the device wait for requests in flight, and dropping a [`RawFile`] flushes it, so
//! nothing the guest wrote is lost when the machine quits.
//!
//! # Example: a read request through the device
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use virtio_queue::desc::{split::Descriptor, RawDescriptor};
//! use virtio_queue::mock::MockSplitQueue;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vmkit_block::{BlockBackend, MemoryBackend, VirtioBlk};
//! use vmkit_virtio::{InterruptKind, VirtioDevice, VirtioInterrupt};
//! use vmm_sys_util::eventfd::EventFd;
//!
//! struct NoIrq;
//! impl VirtioInterrupt for NoIrq {
//!     fn trigger(&self, _: InterruptKind) {}
//! }
//!
//! let mut disk = vec![0u8; 4096];
//! disk[512..516].copy_from_slice(b"vmkt");
//! let backend = Arc::new(MemoryBackend::from_bytes(disk));
//! let mut blk = VirtioBlk::new(backend);
//!
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?);
//! let vq = MockSplitQueue::create(&*mem, GuestAddress(0x1000), 16);
//! // Header (IN, sector 1), a 512-byte data buffer, the status byte.
//! mem.write_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], GuestAddress(0x8000))?;
//! vq.add_desc_chains(
//!     &[
//!         RawDescriptor::from(Descriptor::new(0x8000, 16, 1 /* NEXT */, 1)),
//!         RawDescriptor::from(Descriptor::new(0x9000, 512, 1 | 2 /* NEXT | WRITE */, 2)),
//!         RawDescriptor::from(Descriptor::new(0xa000, 1, 2 /* WRITE */, 0)),
//!     ],
//!     0,
//! )?;
//! mem.write_obj(0xffu8, GuestAddress(0xa000))?;
//! let queue = vq.create_queue()?;
//! let notify = EventFd::new(0)?;
//! VirtioDevice::<Arc<GuestMemoryMmap>>::activate(
//!     &mut blk,
//!     mem.clone(),
//!     Arc::new(NoIrq),
//!     vec![(0, queue, notify.try_clone()?)],
//! )?;
//! notify.write(1)?;
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while mem.read_obj::<u8>(GuestAddress(0xa000))? != 0 {
//!     assert!(Instant::now() < deadline, "no completion");
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! let mut data = [0u8; 4];
//! mem.read_slice(&mut data, GuestAddress(0x9000))?;
//! assert_eq!(&data, b"vmkt");
//! assert!(VirtioDevice::<Arc<GuestMemoryMmap>>::reset(&mut blk));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod aio;
mod backend;
mod drive;
mod virtio_blk;

use std::path::PathBuf;

pub use aio::{Completions, ThreadPool, DEFAULT_POOL_THREADS};
pub use backend::{
    check_range, BlockBackend, MemoryBackend, RawFile, RawOptions, DIRECT_MEMORY_ALIGN, SECTOR_SIZE,
};
pub use drive::{valid_id, CacheMode, DiscardMode, DriveInterface, DriveSpec};
pub use virtio_blk::{
    config, BlkOptions, VirtioBlk, BLK_CONFIG_LEN, BLK_ID_BYTES, BLK_MAX_DISCARD_SECTORS,
    BLK_MAX_REQUEST_BYTES, BLK_QUEUE_SIZE, BLK_QUEUE_SIZE_MAX,
};

/// Errors of the block layer; each names the option, file, operation or limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option has a value it cannot take (or is unknown).
    #[error("{option}={value}: {reason}")]
    Option {
        /// The option (`cache`, `if`, ...; `-drive` for the whole text).
        option: String,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// An image format other than raw.
    #[error("format={format}{}: raw only (format=raw): vmkit's block layer has no image format driver besides raw; convert the image with 'qemu-img convert -O raw'", path.as_ref().map(|p| format!(" ('{}')", p.display())).unwrap_or_default())]
    Format {
        /// The format asked for (or found, when `format=` was not given).
        format: String,
        /// The image, when the format was found in it.
        path: Option<PathBuf>,
    },
    /// The image cannot be opened.
    #[error("Could not open '{}': {source}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `O_DIRECT` (cache=none or directsync) is not supported where the image lives.
    #[error("cache={cache}: '{}' cannot be opened with O_DIRECT ({source}); its filesystem does not support it: use cache=writeback or cache=writethrough", path.display())]
    DirectUnsupported {
        /// The image.
        path: PathBuf,
        /// The cache mode asked for.
        cache: CacheMode,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image's size does not fit the `O_DIRECT` alignment.
    #[error("cache={cache}: '{}' is {size} bytes, not a multiple of the {align}-byte O_DIRECT alignment", path.display())]
    Unaligned {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The request alignment.
        align: u64,
        /// The cache mode asked for.
        cache: CacheMode,
    },
    /// An access past the end.
    #[error("{op} of {len} bytes at offset {offset} is outside the {size}-byte image")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// The backend's size.
        size: u64,
    },
    /// A write to a read-only drive.
    #[error("{op} refused: the drive{} is read-only (readonly=on)", path.as_ref().map(|p| format!(" '{}'", p.display())).unwrap_or_default())]
    ReadOnly {
        /// The operation.
        op: &'static str,
        /// The image, if a file.
        path: Option<PathBuf>,
    },
    /// An I/O error on the image.
    #[error("cannot {op} '{}': {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The image.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread or eventfd could not be created.
    #[error("{what}: {source}")]
    Thread {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A request was submitted to a pool that has shut down.
    #[error("the block worker pool has shut down")]
    PoolStopped,
}

impl Error {
    pub(crate) fn option(option: &str, value: &str, reason: &str) -> Self {
        Error::Option {
            option: option.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
