//! virtio-blk (virtio 1.x section 5.2, device ID 2) after QEMU's `hw/block/virtio-blk.c`,
//! on vmkit-virtio's [`VirtioDevice`] trait.
//!
//! One request queue. At `DRIVER_OK` the device starts its I/O thread (QEMU's AioContext
//! for the device), which waits on the queue's eventfd (an ioeventfd under KVM), pops
//! descriptor chains with virtio-queue, parses and checks each request, and hands the
//! backend call to a [`ThreadPool`] (QEMU's thread pool, `aio=threads`). Workers post
//! results to a [`Completions`] queue whose eventfd wakes the I/O thread, which copies
//! read data into the guest's buffers, writes the status byte, fills the used ring and
//! interrupts. Only the I/O thread touches guest memory and the ring; no device work
//! happens on a vCPU thread.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemory};
use vmkit_virtio::{ActivatedQueue, InterruptKind, QueuePosition, VirtioDevice, VirtioInterrupt};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::aio::{Completions, ThreadPool, DEFAULT_POOL_THREADS};
use crate::backend::{BlockBackend, SECTOR_SIZE};

/// Default (and QEMU's) request queue size.
pub const BLK_QUEUE_SIZE: u16 = 256;
/// Largest queue size the `queue-size` property takes (QEMU's `VIRTQUEUE_MAX_SIZE`).
pub const BLK_QUEUE_SIZE_MAX: u16 = 1024;
/// Length of the device configuration this device exposes (`struct virtio_blk_config`
/// up to `write_zeroes_may_unmap` and its padding).
pub const BLK_CONFIG_LEN: usize = 60;
/// Largest data transfer of one request; longer requests complete with `IOERR` (Linux
/// sends at most `max_sectors_kb`, 1280 KiB by default).
pub const BLK_MAX_REQUEST_BYTES: usize = 32 << 20;
/// `max_discard_sectors` and `max_write_zeroes_sectors` (QEMU's
/// `BDRV_REQUEST_MAX_SECTORS`).
pub const BLK_MAX_DISCARD_SECTORS: u32 = (i32::MAX as u32) >> 9;
/// Length of the `VIRTIO_BLK_T_GET_ID` answer.
pub const BLK_ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// Offsets in the device configuration.
pub mod config {
    /// `le64 capacity` in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// `le32 size_max` (not offered).
    pub const SIZE_MAX: usize = 8;
    /// `le32 seg_max`.
    pub const SEG_MAX: usize = 12;
    /// `le16 cylinders`, `u8 heads`, `u8 sectors`.
    pub const GEOMETRY: usize = 16;
    /// `le32 blk_size`.
    pub const BLK_SIZE: usize = 20;
    /// `u8 writeback` (the write cache; writable with `VIRTIO_BLK_F_CONFIG_WCE`).
    pub const WRITEBACK: usize = 32;
    /// `le16 num_queues`.
    pub const NUM_QUEUES: usize = 34;
    /// `le32 max_discard_sectors`.
    pub const MAX_DISCARD_SECTORS: usize = 36;
    /// `le32 max_discard_seg`.
    pub const MAX_DISCARD_SEG: usize = 40;
    /// `le32 discard_sector_alignment`.
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// `le32 max_write_zeroes_sectors`.
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    /// `le32 max_write_zeroes_seg`.
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    /// `u8 write_zeroes_may_unmap`.
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// Device properties (QEMU's `virtio-blk-pci` names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOptions {
    /// `serial`: what `GET_ID` returns (at most 20 bytes are sent).
    pub serial: String,
    /// `queue-size`: a power of two in 2..=1024 (default 256).
    pub queue_size: u16,
    /// `discard`: offer `VIRTIO_BLK_F_DISCARD` (default on; what a discard does is the
    /// drive's `discard=`).
    pub discard: bool,
    /// `write-zeroes`: offer `VIRTIO_BLK_F_WRITE_ZEROES` (default on).
    pub write_zeroes: bool,
    /// `config-wce`: offer `VIRTIO_BLK_F_CONFIG_WCE` (default on).
    pub config_wce: bool,
    /// Worker threads of the request pool (default 4).
    pub pool_threads: usize,
}

impl Default for BlkOptions {
    fn default() -> Self {
        BlkOptions {
            serial: String::new(),
            queue_size: BLK_QUEUE_SIZE,
            discard: true,
            write_zeroes: true,
            config_wce: true,
            pool_threads: DEFAULT_POOL_THREADS,
        }
    }
}

/// The virtio-blk device on any [`BlockBackend`].
///
/// Features offered: `SEG_MAX` (queue size - 2, as QEMU), `GEOMETRY` (QEMU's 16 heads /
/// 63 sectors guess), `BLK_SIZE` (512), `TOPOLOGY`, `FLUSH`, `CONFIG_WCE`, `DISCARD`
/// and `WRITE_ZEROES` (one segment each), `RO` for a read-only backend, `EVENT_IDX` and
/// `INDIRECT_DESC`.
///
/// Requests: `IN`, `OUT`, `FLUSH`, `GET_ID`, `DISCARD`, `WRITE_ZEROES` (the last two only
/// once negotiated); anything else is `UNSUPP`. A transfer that is not whole sectors, runs
/// past the capacity, exceeds [`BLK_MAX_REQUEST_BYTES`] or fails in the backend (including
/// a write to a read-only drive) completes with `IOERR`, as does a header shorter than 16
/// bytes. A chain without a writable status byte, or one that fails
/// [`vmkit_virtio::check_chain`] (a loop or more descriptors than the queue holds, a
/// zero-length descriptor, a buffer outside guest memory, a readable descriptor after a
/// writable one) has nowhere to put a status: it is not completed, the queue is served no
/// more and the transport reports `NEEDS_RESET` with a configuration interrupt (QEMU's
/// `virtio_error`) until the driver resets the device. Nothing a driver builds makes the
/// device panic.
///
/// The write cache (the config's `writeback`) starts as the drive's `cache=` says; a
/// driver that negotiates neither `FLUSH` nor `CONFIG_WCE` gets writethrough, one that
/// negotiates `FLUSH` but not `CONFIG_WCE` gets writeback, as in QEMU; reset restores the
/// drive's mode. Reset and drop wait for requests in flight to complete.
pub struct VirtioBlk {
    backend: Arc<dyn BlockBackend>,
    options: BlkOptions,
    sizes: [u16; 1],
    offered: u64,
    acked: u64,
    original_wce: bool,
    pool: Option<Arc<ThreadPool>>,
    io: Arc<Mutex<Option<IoThread>>>,
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("size", &self.backend.size())
            .field("options", &self.options)
            .field("acked", &self.acked)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl VirtioBlk {
    /// A virtio-blk on `backend` with QEMU's default properties.
    pub fn new(backend: Arc<dyn BlockBackend>) -> Self {
        Self::with_options(backend, BlkOptions::default())
            .unwrap_or_else(|_| unreachable!("the default options are valid"))
    }

    /// A virtio-blk with `options`; a queue size that is not a power of two in 2..=1024
    /// is an error.
    pub fn with_options(
        backend: Arc<dyn BlockBackend>,
        options: BlkOptions,
    ) -> crate::Result<Self> {
        let qs = options.queue_size;
        if !(2..=BLK_QUEUE_SIZE_MAX).contains(&qs) || !qs.is_power_of_two() {
            return Err(crate::Error::option(
                "queue-size",
                &qs.to_string(),
                "must be a power of two in 2..=1024",
            ));
        }
        let mut offered = 1u64 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_GEOMETRY
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_TOPOLOGY
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC;
        if options.config_wce {
            offered |= 1 << VIRTIO_BLK_F_CONFIG_WCE;
        }
        if options.discard {
            offered |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if options.write_zeroes {
            offered |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        if backend.is_read_only() {
            offered |= 1 << VIRTIO_BLK_F_RO;
        }
        let original_wce = backend.write_cache();
        Ok(VirtioBlk {
            backend,
            sizes: [qs],
            options,
            offered,
            acked: 0,
            original_wce,
            pool: None,
            io: Arc::new(Mutex::new(None)),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn BlockBackend> {
        &self.backend
    }

    /// Capacity in 512-byte sectors (the size rounded down).
    pub fn capacity(&self) -> u64 {
        self.backend.size() / SECTOR_SIZE
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the I/O thread runs.
    pub fn is_running(&self) -> bool {
        lock(&self.io).is_some()
    }

    /// A handle that drains and flushes this device when the machine quits, from any
    /// thread, even while the transport still owns the device.
    pub fn shutdown_handle(&self) -> BlkShutdown {
        BlkShutdown {
            io: Arc::clone(&self.io),
            backend: Arc::clone(&self.backend),
        }
    }

    fn config_bytes(&self) -> [u8; BLK_CONFIG_LEN] {
        let mut c = [0u8; BLK_CONFIG_LEN];
        let capacity = self.capacity();
        c[config::CAPACITY..][..8].copy_from_slice(&capacity.to_le_bytes());
        let seg_max = u32::from(self.sizes[0]).saturating_sub(2).max(1);
        c[config::SEG_MAX..][..4].copy_from_slice(&seg_max.to_le_bytes());
        // QEMU's guess_chs_for_size: 16 heads, 63 sectors, cylinders to fit (2..=16383).
        let cylinders = (capacity / (16 * 63)).clamp(2, 16383) as u16;
        c[config::GEOMETRY..][..2].copy_from_slice(&cylinders.to_le_bytes());
        c[config::GEOMETRY + 2] = 16;
        c[config::GEOMETRY + 3] = 63;
        c[config::BLK_SIZE..][..4].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[config::WRITEBACK] = u8::from(self.backend.write_cache());
        c[config::NUM_QUEUES..][..2].copy_from_slice(&1u16.to_le_bytes());
        if self.options.discard {
            c[config::MAX_DISCARD_SECTORS..][..4]
                .copy_from_slice(&BLK_MAX_DISCARD_SECTORS.to_le_bytes());
            c[config::MAX_DISCARD_SEG..][..4].copy_from_slice(&1u32.to_le_bytes());
            c[config::DISCARD_SECTOR_ALIGNMENT..][..4].copy_from_slice(&1u32.to_le_bytes());
        }
        if self.options.write_zeroes {
            c[config::MAX_WRITE_ZEROES_SECTORS..][..4]
                .copy_from_slice(&BLK_MAX_DISCARD_SECTORS.to_le_bytes());
            c[config::MAX_WRITE_ZEROES_SEG..][..4].copy_from_slice(&1u32.to_le_bytes());
            c[config::WRITE_ZEROES_MAY_UNMAP] = 1;
        }
        c
    }

    fn stop(&mut self) -> bool {
        stop_io(&self.io)
    }
}

impl Drop for VirtioBlk {
    fn drop(&mut self) {
        // Requests in flight complete first (QEMU drains every drive before it quits).
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops the I/O thread (after its requests in flight complete); false if it panicked.
fn stop_io(io: &Mutex<Option<IoThread>>) -> bool {
    // Taken out first: the thread is joined without holding the lock.
    let thread = lock(io).take();
    thread.is_none_or(|mut t| t.stop())
}

/// What a machine keeps to quiesce a [`VirtioBlk`] when it quits (QEMU's
/// `bdrv_drain_all` then `bdrv_close_all`): [`drain_and_flush`](Self::drain_and_flush)
/// stops the device's I/O thread once every request in flight has completed, then
/// flushes the backend. A machine whose device objects are not dropped before the process
/// exits calls it after its vCPUs have stopped.
#[derive(Clone)]
pub struct BlkShutdown {
    io: Arc<Mutex<Option<IoThread>>>,
    backend: Arc<dyn BlockBackend>,
}

impl std::fmt::Debug for BlkShutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkShutdown")
            .field("running", &lock(&self.io).is_some())
            .finish_non_exhaustive()
    }
}

impl BlkShutdown {
    /// Waits for requests in flight, stops the I/O thread and flushes the backend.
    /// The device does no more work afterwards (until a driver activates it again).
    pub fn drain_and_flush(&self) -> crate::Result<()> {
        stop_io(&self.io);
        self.backend.flush()
    }
}

/// What the I/O thread knows of the drive and the negotiated features.
#[derive(Clone)]
struct RequestContext {
    capacity: u64,
    read_only: bool,
    serial: Vec<u8>,
    discard: bool,
    write_zeroes: bool,
}

/// A backend operation for a worker.
enum Op {
    Read { offset: u64, buf: Vec<u8> },
    Write { offset: u64, data: Vec<u8> },
    Flush,
    Discard { offset: u64, len: u64 },
    WriteZeroes { offset: u64, len: u64, unmap: bool },
}

/// A worker's result for request slot `slot`.
struct Done {
    slot: usize,
    status: u8,
    /// The buffer (read data to copy out when `read` and the status is OK).
    buf: Vec<u8>,
    read: bool,
}

/// How a request goes on after parsing.
enum Start {
    /// Complete now with this status and data for the writable part.
    Now(u8, Vec<u8>),
    /// Run on the pool.
    Submit(Op),
    /// No status byte to write: the device needs a reset.
    Drop,
}

const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Parses one request; only reads guest memory.
fn begin<MM: GuestMemory, C>(
    chain: &DescriptorChain<C>,
    mem: &MM,
    ctx: &RequestContext,
    spare: &mut Vec<Vec<u8>>,
) -> Start
where
    C: std::ops::Deref<Target = MM> + Clone,
{
    // The writable part ends with the status byte.
    let writable = match chain.clone().writer(mem) {
        Ok(w) if w.available_bytes() > 0 => w.available_bytes(),
        _ => return Start::Drop,
    };
    let data_in = writable - 1;
    let Ok(mut reader) = chain.clone().reader(mem) else {
        return Start::Now(S_IOERR, Vec::new());
    };
    let Ok(header) = reader.read_obj::<[u8; 16]>() else {
        return Start::Now(S_IOERR, Vec::new());
    };
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(s);
    let data_out = reader.available_bytes();
    let in_range = |len: usize| {
        len % SECTOR_SIZE as usize == 0
            && len <= BLK_MAX_REQUEST_BYTES
            && sector
                .checked_add(len as u64 / SECTOR_SIZE)
                .is_some_and(|end| end <= ctx.capacity)
    };
    match kind {
        VIRTIO_BLK_T_IN => {
            if !in_range(data_in) {
                return Start::Now(S_IOERR, Vec::new());
            }
            let mut buf = spare.pop().unwrap_or_default();
            buf.resize(data_in, 0);
            Start::Submit(Op::Read {
                offset: sector * SECTOR_SIZE,
                buf,
            })
        }
        VIRTIO_BLK_T_OUT => {
            if ctx.read_only || !in_range(data_out) {
                return Start::Now(S_IOERR, Vec::new());
            }
            let mut data = spare.pop().unwrap_or_default();
            data.resize(data_out, 0);
            if reader.read_exact(&mut data).is_err() {
                spare.push(data);
                return Start::Now(S_IOERR, Vec::new());
            }
            Start::Submit(Op::Write {
                offset: sector * SECTOR_SIZE,
                data,
            })
        }
        VIRTIO_BLK_T_FLUSH => Start::Submit(Op::Flush),
        VIRTIO_BLK_T_GET_ID => {
            // QEMU: the serial and its NUL, cut to the buffer and to 20 bytes.
            let mut id = ctx.serial.clone();
            id.push(0);
            id.truncate(data_in.min(BLK_ID_BYTES));
            Start::Now(S_OK, id)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let discard = kind == VIRTIO_BLK_T_DISCARD;
            if (discard && !ctx.discard) || (!discard && !ctx.write_zeroes) {
                return Start::Now(S_UNSUPP, Vec::new());
            }
            // One segment (max_discard_seg = max_write_zeroes_seg = 1).
            if data_out != 16 {
                return Start::Now(S_UNSUPP, Vec::new());
            }
            let Ok(seg) = reader.read_obj::<[u8; 16]>() else {
                return Start::Now(S_IOERR, Vec::new());
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(&seg[0..8]);
            let start = u64::from_le_bytes(b);
            let count = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
            let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
            let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
            if (discard && flags != 0) || flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
                return Start::Now(S_UNSUPP, Vec::new());
            }
            let fits = start
                .checked_add(u64::from(count))
                .is_some_and(|end| end <= ctx.capacity);
            if ctx.read_only || count > BLK_MAX_DISCARD_SECTORS || !fits {
                return Start::Now(S_IOERR, Vec::new());
            }
            let (offset, len) = (start * SECTOR_SIZE, u64::from(count) * SECTOR_SIZE);
            Start::Submit(if discard {
                Op::Discard { offset, len }
            } else {
                Op::WriteZeroes { offset, len, unmap }
            })
        }
        _ => Start::Now(S_UNSUPP, Vec::new()),
    }
}

/// Writes `data` at the start of the chain's writable part and `status` into its last
/// byte; returns the used length (bytes written).
fn finish<MM: GuestMemory, C>(chain: DescriptorChain<C>, mem: &MM, status: u8, data: &[u8]) -> u32
where
    C: std::ops::Deref<Target = MM> + Clone,
{
    let Ok(mut writer) = chain.writer(mem) else {
        return 0;
    };
    let avail = writer.available_bytes();
    if avail == 0 {
        return 0;
    }
    let Ok(mut status_writer) = writer.split_at(avail - 1) else {
        return 0;
    };
    let n = data.len().min(avail - 1);
    let mut status = status;
    if writer.write_all(&data[..n]).is_err() {
        status = S_IOERR;
    }
    if status_writer.write_all(&[status]).is_err() {
        return 0;
    }
    // n < avail <= the chain's writable length, which fits the queue's u32 lengths... of
    // at most queue-size descriptors; saturate anyway.
    u32::try_from(writer.bytes_written() + 1).unwrap_or(u32::MAX)
}

fn run_op(backend: &dyn BlockBackend, op: Op, slot: usize) -> Done {
    let (result, buf, read) = match op {
        Op::Read { offset, mut buf } => (backend.read_at(&mut buf, offset), buf, true),
        Op::Write { offset, data } => (backend.write_at(&data, offset), data, false),
        Op::Flush => (backend.flush(), Vec::new(), false),
        Op::Discard { offset, len } => (backend.discard(offset, len), Vec::new(), false),
        Op::WriteZeroes { offset, len, unmap } => {
            (backend.write_zeroes(offset, len, unmap), Vec::new(), false)
        }
    };
    Done {
        slot,
        status: if result.is_ok() { S_OK } else { S_IOERR },
        buf,
        read,
    }
}

const TOKEN_QUEUE: u64 = 0;
const TOKEN_DONE: u64 = 1;
const TOKEN_KILL: u64 = 2;

/// The device's I/O thread.
struct IoThread {
    kill: EventFd,
    handle: Option<JoinHandle<Queue>>,
}

impl IoThread {
    fn stop(&mut self) -> bool {
        self.stop_and_take().is_some()
    }

    /// Stops the thread once its requests in flight completed; its queue as it ends.
    fn stop_and_take(&mut self) -> Option<Queue> {
        let handle = self.handle.take()?;
        let _ = self.kill.write(1);
        handle.join().ok()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop();
    }
}

struct IoParts<M> {
    kill: EventFd,
    memory: M,
    queue: Queue,
    queue_fd: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    backend: Arc<dyn BlockBackend>,
    pool: Arc<ThreadPool>,
    ctx: RequestContext,
}

/// The I/O thread's loop; returns (with its queue, for a snapshot) when killed and every
/// request in flight completed.
fn io_loop<M: GuestAddressSpace>(
    parts: IoParts<M>,
    epoll: Epoll,
    done: Arc<Completions<Done>>,
) -> Queue {
    let IoParts {
        kill,
        memory,
        mut queue,
        queue_fd,
        interrupt,
        backend,
        pool,
        ctx,
    } = parts;
    // Requests on the pool, by slot: the chain waits here for its completion.
    let mut slots: Vec<Option<DescriptorChain<M::T>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut inflight = 0usize;
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut stopping = false;
    // A malformed chain stops the queue until the driver resets the device.
    let mut broken = false;
    let mut reported = false;
    let mut events = vec![EpollEvent::default(); 4];
    loop {
        if stopping && inflight == 0 {
            return queue;
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return queue,
        };
        for ev in &events[..n] {
            let guard = memory.memory();
            let mem = &*guard;
            let mut notify = false;
            match ev.data() {
                TOKEN_KILL => {
                    // Read it, or the level-triggered epoll would spin while requests in
                    // flight finish.
                    let _ = kill.read();
                    stopping = true;
                }
                TOKEN_QUEUE if !stopping && !broken => {
                    let _ = queue_fd.read();
                    while !broken {
                        let _ = queue.disable_notification(mem);
                        let mut progress = false;
                        while let Some(chain) = queue.pop_descriptor_chain(guard.clone()) {
                            progress = true;
                            let head = chain.head_index();
                            if vmkit_virtio::check_chain(&chain, mem).is_err() {
                                broken = true;
                                break;
                            }
                            let (status, data) = match begin(&chain, mem, &ctx, &mut spare) {
                                Start::Drop => {
                                    broken = true;
                                    break;
                                }
                                Start::Now(status, data) => (status, data),
                                Start::Submit(op) => {
                                    let slot = free.pop().unwrap_or_else(|| {
                                        slots.push(None);
                                        slots.len() - 1
                                    });
                                    let backend = Arc::clone(&backend);
                                    let done = Arc::clone(&done);
                                    let job = move || done.complete(run_op(&*backend, op, slot));
                                    if pool.submit(job).is_ok() {
                                        slots[slot] = Some(chain);
                                        inflight += 1;
                                        continue;
                                    }
                                    free.push(slot);
                                    (S_IOERR, Vec::new())
                                }
                            };
                            let len = finish(chain, mem, status, &data);
                            notify |= queue.add_used(mem, head, len).is_ok();
                        }
                        if vmkit_virtio::avail_overrun(&queue, mem) {
                            broken = true;
                        }
                        if broken {
                            break;
                        }
                        match queue.enable_notification(mem) {
                            Ok(true) if progress => continue,
                            _ => break,
                        }
                    }
                }
                TOKEN_QUEUE => {
                    let _ = queue_fd.read();
                }
                _ => {
                    for d in done.take() {
                        let Some(chain) = slots.get_mut(d.slot).and_then(Option::take) else {
                            continue;
                        };
                        free.push(d.slot);
                        inflight -= 1;
                        let head = chain.head_index();
                        let data: &[u8] = if d.read && d.status == S_OK {
                            &d.buf
                        } else {
                            &[]
                        };
                        let len = finish(chain, mem, d.status, data);
                        notify |= queue.add_used(mem, head, len).is_ok();
                        // Buffers are reused (up to a queue's worth of small ones).
                        if spare.len() < 64 && (1..=1 << 20).contains(&d.buf.capacity()) {
                            spare.push(d.buf);
                        }
                    }
                }
            }
            if notify && queue.needs_notification(mem).unwrap_or(true) {
                interrupt.trigger(InterruptKind::Queue(0));
            }
            if broken && !reported {
                reported = true;
                interrupt.needs_reset();
            }
        }
    }
}

fn io_error(what: &'static str) -> impl FnOnce(std::io::Error) -> vmkit_virtio::Error {
    move |source| vmkit_virtio::Error::Io { what, source }
}

impl<M> VirtioDevice<M> for VirtioBlk
where
    M: GuestAddressSpace + Send + 'static,
{
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn device_features(&self) -> u64 {
        self.offered
    }

    fn ack_features(&mut self, features: u64) -> vmkit_virtio::Result<()> {
        self.acked = features;
        Ok(())
    }

    fn config_len(&self) -> usize {
        BLK_CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `writeback` is writable (QEMU's virtio_blk_set_config).
        let Ok(offset) = usize::try_from(offset) else {
            return;
        };
        if let Some(i) = config::WRITEBACK.checked_sub(offset) {
            if let Some(&wce) = data.get(i) {
                self.backend.set_write_cache(wce != 0);
            }
        }
    }

    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> vmkit_virtio::Result<()> {
        self.stop();
        let Some((0, queue, queue_fd)) = queues.into_iter().next() else {
            return Err(vmkit_virtio::Error::MissingQueue {
                device: "virtio-blk",
                index: 0,
            });
        };
        // QEMU's virtio_blk_set_status: without CONFIG_WCE the write cache follows FLUSH.
        if self.acked & (1 << VIRTIO_BLK_F_CONFIG_WCE) == 0 {
            self.backend
                .set_write_cache(self.acked & (1 << VIRTIO_BLK_F_FLUSH) != 0);
        }
        let pool = match &self.pool {
            Some(pool) => Arc::clone(pool),
            None => {
                let pool = ThreadPool::new("virtio-blk-worker", self.options.pool_threads)
                    .map_err(|e| vmkit_virtio::Error::Activate {
                        device: "virtio-blk",
                        reason: e.to_string(),
                    })?;
                let pool = Arc::new(pool);
                self.pool = Some(Arc::clone(&pool));
                pool
            }
        };
        let done = Completions::<Done>::new().map_err(|e| vmkit_virtio::Error::Activate {
            device: "virtio-blk",
            reason: e.to_string(),
        })?;
        let kill = EventFd::new(EFD_NONBLOCK).map_err(io_error("creating the kill eventfd"))?;
        let epoll = Epoll::new().map_err(io_error("creating the virtio-blk epoll"))?;
        for (fd, token) in [
            (queue_fd.as_raw_fd(), TOKEN_QUEUE),
            (done.eventfd().as_raw_fd(), TOKEN_DONE),
            (kill.as_raw_fd(), TOKEN_KILL),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(io_error("adding an eventfd to the virtio-blk epoll"))?;
        }
        let acked = self.acked;
        let mut serial = self.options.serial.as_bytes().to_vec();
        serial.truncate(BLK_ID_BYTES);
        let parts = IoParts {
            kill: kill
                .try_clone()
                .map_err(io_error("duplicating the kill eventfd"))?,
            memory,
            queue,
            queue_fd,
            interrupt,
            backend: Arc::clone(&self.backend),
            pool,
            ctx: RequestContext {
                capacity: self.capacity(),
                read_only: self.backend.is_read_only(),
                serial,
                discard: acked & (1 << VIRTIO_BLK_F_DISCARD) != 0,
                write_zeroes: acked & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0,
            },
        };
        // Requests queued before DRIVER_OK are served at once.
        let _ = parts.queue_fd.write(1);
        let handle = vmkit_hw::thread::spawn(
            vmkit_hw::thread::ThreadRole::Block,
            "virtio-blk",
            move || io_loop(parts, epoll, done),
        )
        .map_err(io_error("spawning the virtio-blk I/O thread"))?;
        *lock(&self.io) = Some(IoThread {
            kill,
            handle: Some(handle),
        });
        Ok(())
    }

    fn reset(&mut self) -> bool {
        let stopped = self.stop();
        self.acked = 0;
        self.backend.set_write_cache(self.original_wce);
        stopped
    }

    /// Stops taking new requests, waits for every request in flight to complete (its
    /// status and data in guest memory, its chain on the used ring, the interrupt sent),
    /// then stops the I/O thread: none is lost, none runs twice. Requests the driver made
    /// available but the thread had not taken yet stay in the available ring.
    fn quiesce(&mut self) -> vmkit_virtio::Result<Vec<QueuePosition>> {
        let thread = lock(&self.io).take();
        let queue =
            thread
                .and_then(|mut t| t.stop_and_take())
                .ok_or(vmkit_virtio::Error::Quiesce {
                    device: "virtio-blk",
                    reason: "its I/O thread is not running (or panicked)".into(),
                })?;
        Ok(vec![QueuePosition {
            index: 0,
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
        }])
    }

    /// `writeback` is the one field a driver writes (with `CONFIG_WCE`).
    fn restore_config(&mut self, config: &[u8]) {
        if self.acked & (1 << VIRTIO_BLK_F_CONFIG_WCE) != 0 {
            if let Some(&wce) = config.get(config::WRITEBACK) {
                self.backend.set_write_cache(wce != 0);
            }
        }
    }
}
