//! virtio-rng (virtio 1.x section 5.4): one request queue the driver fills with
//! device-writable buffers; the device fills them with host randomness.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{GuestAddressSpace, GuestMemory};

use crate::device::{ActivatedQueue, InterruptKind, VirtioDevice, VirtioInterrupt};
use crate::worker::{drain_eventfd, drain_queue, position, Worker};
use crate::QueuePosition;
use crate::{Error, Result};

/// Size of the request queue (QEMU's virtio-rng uses 8; Linux queues one buffer at a
/// time, so more only helps other drivers).
pub const RNG_QUEUE_SIZE: u16 = 256;
/// Most bytes one request gets by default (the rest of a larger buffer stays unwritten
/// and the used length says how much was filled).
pub const RNG_MAX_REQUEST: usize = 64 * 1024;

/// Where random bytes come from.
pub trait EntropySource: Send {
    /// Fills `buf` completely or fails.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

impl<F: FnMut(&mut [u8]) -> io::Result<()> + Send> EntropySource for F {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self(buf)
    }
}

/// The host's `getrandom(2)` (via the getrandom crate).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostEntropy;

impl EntropySource for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        getrandom::fill(buf).map_err(|e| io::Error::other(e.to_string()))
    }
}

type SharedSource = Arc<Mutex<Box<dyn EntropySource>>>;

/// The virtio-rng device (`virtio-rng-pci` in QEMU terms), backed by an
/// [`EntropySource`] ([`HostEntropy`] by default). Its worker thread starts at activation
/// and stops at reset or drop.
///
/// A request gets `min(writable bytes, max_request)` bytes. A chain with no writable
/// descriptor, or one that fails [`check_chain`](crate::check_chain) (outside guest
/// memory, a loop, a zero-length descriptor, ...), is not completed: the device stops and
/// the transport reports `NEEDS_RESET` with a configuration interrupt.
pub struct Rng {
    source: SharedSource,
    max_request: usize,
    acked: u64,
    worker: Option<Worker<Queue>>,
    sizes: [u16; 1],
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rng")
            .field("max_request", &self.max_request)
            .field("acked", &self.acked)
            .field("running", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// A virtio-rng fed by the host's getrandom.
    pub fn new() -> Self {
        Self::with_source(HostEntropy)
    }

    /// A virtio-rng fed by `source`.
    pub fn with_source(source: impl EntropySource + 'static) -> Self {
        Rng {
            source: Arc::new(Mutex::new(Box::new(source))),
            max_request: RNG_MAX_REQUEST,
            acked: 0,
            worker: None,
            sizes: [RNG_QUEUE_SIZE],
        }
    }

    /// Caps the bytes one request gets (at least 1).
    pub fn with_max_request(mut self, bytes: usize) -> Self {
        self.max_request = bytes.max(1);
        self
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the worker thread runs.
    pub fn is_running(&self) -> bool {
        self.worker.is_some()
    }
}

/// Fills the chain's writable part (up to `limit`); `None` when it has none (a request
/// the device cannot serve: NEEDS_RESET). A failing entropy source completes it empty.
fn fill_chain<MM: GuestMemory>(
    chain: DescriptorChain<&MM>,
    mem: &MM,
    source: &SharedSource,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Option<u32> {
    let mut writer = chain.writer(mem).ok()?;
    let n = writer.available_bytes().min(limit);
    if n == 0 {
        return None;
    }
    buf.resize(n, 0);
    let filled = source
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .fill(&mut buf[..n]);
    if filled.is_err() {
        return Some(0);
    }
    let _ = writer.write_all(&buf[..n]);
    // n <= limit, and a chain is at most 4 GiB.
    Some(u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX))
}

impl<M: GuestAddressSpace + Send + 'static> VirtioDevice<M> for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn device_features(&self) -> u64 {
        1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn ack_features(&mut self, features: u64) -> Result<()> {
        self.acked = features;
        Ok(())
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<()> {
        self.worker = None;
        let Some((0, queue, eventfd)) = queues.into_iter().next() else {
            return Err(Error::MissingQueue {
                device: "virtio-rng",
                index: 0,
            });
        };
        let source = Arc::clone(&self.source);
        let limit = self.max_request;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&eventfd);
        let mut buf = Vec::new();
        // Buffers queued before DRIVER_OK are served at once.
        let _ = eventfd.write(1);
        let mut broken = false;
        let worker = Worker::spawn("virtio-rng", &[(fd, 0)], queue, move |queue, _| {
            drain_eventfd(&eventfd);
            if broken {
                return;
            }
            let guard = memory.memory();
            let mem = &*guard;
            if drain_queue(queue, mem, &mut broken, |chain, _| {
                fill_chain(chain, mem, &source, limit, &mut buf)
            }) {
                interrupt.trigger(InterruptKind::Queue(0));
            }
            if broken {
                interrupt.needs_reset();
            }
        })?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.acked = 0;
        self.worker.take().is_none_or(|mut w| w.stop())
    }

    /// Requests are served whole inside one worker event: stopping the worker leaves
    /// nothing in flight.
    fn quiesce(&mut self) -> Result<Vec<QueuePosition>> {
        let queue = self
            .worker
            .take()
            .and_then(|mut w| w.stop_and_take())
            .ok_or(Error::Quiesce {
                device: "virtio-rng",
                reason: "its worker is not running (or panicked)".into(),
            })?;
        Ok(vec![position(0, &queue)])
    }
}
