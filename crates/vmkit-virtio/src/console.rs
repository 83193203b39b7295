//! virtio-console (virtio 1.x section 5.3) with a single port and no multiport: queue 0
//! receives (host to guest), queue 1 transmits (guest to host).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemory};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{avail_overrun, check_chain, ChainShape};
use crate::device::{ActivatedQueue, InterruptKind, VirtioDevice, VirtioInterrupt};
use crate::worker::{drain_eventfd, drain_queue, position, Worker};
use crate::QueuePosition;
use crate::{Error, Result};

/// Size of each of the two queues.
pub const CONSOLE_QUEUE_SIZE: u16 = 256;
/// Default bytes of host input the device holds while the guest has no receive buffer.
pub const CONSOLE_INPUT_CAPACITY: usize = 4096;
/// Most bytes taken from one transmit chain (the rest is dropped; Linux sends at most a
/// page per buffer).
pub const CONSOLE_MAX_TX_CHAIN: usize = 1 << 20;
/// Feature bit 0: `cols`/`rows` are valid (not offered).
pub const VIRTIO_CONSOLE_F_SIZE: u32 = 0;
/// Feature bit 1: multiple ports and the control queues (not offered).
pub const VIRTIO_CONSOLE_F_MULTIPORT: u32 = 1;
/// Feature bit 2: `emerg_wr` writes a character straight out (offered).
pub const VIRTIO_CONSOLE_F_EMERG_WRITE: u32 = 2;
/// Offset of `emerg_wr` in the configuration (after `cols`, `rows`, `max_nr_ports`).
pub const CONSOLE_CONFIG_EMERG_WR: u64 = 8;
/// Length of `struct virtio_console_config`.
pub const CONSOLE_CONFIG_LEN: usize = 12;

const RX: u64 = 0;
const TX: u64 = 1;
const INPUT: u64 = 2;

struct InputBuf {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Some bytes were refused since the last room notification.
    refused: bool,
}

struct Shared {
    output: Mutex<Box<dyn Write + Send>>,
    input: Mutex<InputBuf>,
    /// Written when input arrives: wakes the worker.
    input_event: EventFd,
    /// Written (once per refusal) when input room appears again.
    room: Mutex<Option<EventFd>>,
}

impl Shared {
    fn input(&self) -> MutexGuard<'_, InputBuf> {
        self.input.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn output(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The host side of the console's input: a chardev's reader hands bytes to
/// [`enqueue`](Self::enqueue), which takes what fits in the device's buffer; the rest
/// must be offered again after the room eventfd fires (vmkit-chardev's `ChardevSink`
/// protocol: wrap it as `move |b: &[u8]| input.enqueue(b)`). No byte is dropped.
#[derive(Clone)]
pub struct ConsoleInput(Arc<Shared>);

impl std::fmt::Debug for ConsoleInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleInput")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl ConsoleInput {
    /// Takes as many of `bytes` as fit; returns how many. Bytes wait in the device until
    /// the guest posts receive buffers.
    pub fn enqueue(&self, bytes: &[u8]) -> usize {
        let n = {
            let mut input = self.0.input();
            let n = bytes.len().min(input.capacity - input.bytes.len());
            input.bytes.extend(&bytes[..n]);
            if n < bytes.len() {
                input.refused = true;
            }
            n
        };
        if n > 0 {
            let _ = self.0.input_event.write(1);
        }
        n
    }

    /// Bytes waiting for the guest.
    pub fn pending(&self) -> usize {
        self.0.input().bytes.len()
    }

    /// Free room in the input buffer.
    pub fn room(&self) -> usize {
        let input = self.0.input();
        input.capacity - input.bytes.len()
    }

    /// The eventfd written when room appears after [`enqueue`](Self::enqueue) refused
    /// bytes (the chardev's "rx room" line).
    pub fn set_room_notifier(&self, room: EventFd) {
        *self.0.room.lock().unwrap_or_else(|e| e.into_inner()) = Some(room);
    }
}

/// The virtio-console device: one port on queues 0 (receive) and 1 (transmit), output to
/// any [`Write`] (a chardev's writer), input through a [`ConsoleInput`] handle.
///
/// Offers `VIRTIO_CONSOLE_F_EMERG_WRITE` (a driver's early `emerg_wr` writes go straight
/// to the output), `EVENT_IDX` and `INDIRECT_DESC`; not `SIZE` or `MULTIPORT`. Its
/// worker thread starts at activation and stops at reset or drop; buffered input
/// survives a reset.
pub struct Console {
    shared: Arc<Shared>,
    acked: u64,
    worker: Option<Worker<(Queue, Queue)>>,
    sizes: [u16; 2],
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("acked", &self.acked)
            .field("running", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console writing guest output to `output`, holding up to
    /// [`CONSOLE_INPUT_CAPACITY`] bytes of input.
    pub fn new(output: impl Write + Send + 'static) -> Result<Self> {
        Self::with_input_capacity(output, CONSOLE_INPUT_CAPACITY)
    }

    /// A console with an input buffer of `capacity` bytes (at least 1).
    pub fn with_input_capacity(
        output: impl Write + Send + 'static,
        capacity: usize,
    ) -> Result<Self> {
        let input_event = EventFd::new(EFD_NONBLOCK).map_err(|source| Error::Io {
            what: "creating the console input eventfd",
            source,
        })?;
        Ok(Console {
            shared: Arc::new(Shared {
                output: Mutex::new(Box::new(output)),
                input: Mutex::new(InputBuf {
                    bytes: VecDeque::new(),
                    capacity: capacity.max(1),
                    refused: false,
                }),
                input_event,
                room: Mutex::new(None),
            }),
            acked: 0,
            worker: None,
            sizes: [CONSOLE_QUEUE_SIZE; 2],
        })
    }

    /// The input handle (clone it freely).
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput(Arc::clone(&self.shared))
    }

    /// Whether the worker thread runs.
    pub fn is_running(&self) -> bool {
        self.worker.is_some()
    }
}

/// Moves buffered input into receive chains; returns whether the driver wants an
/// interrupt. A malformed chain ([`check_chain`]) or one with no writable byte sets
/// `*broken` and is not completed.
fn fill_rx<MM: GuestMemory>(
    queue: &mut Queue,
    mem: &MM,
    shared: &Shared,
    broken: &mut bool,
) -> bool {
    let mut used = false;
    let mut rechecked = false;
    while !*broken {
        let mut input = shared.input();
        if input.bytes.is_empty() {
            break;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            drop(input);
            if avail_overrun(queue, mem) {
                *broken = true;
                break;
            }
            // Out of buffers: ask for a notification, and look once more in case the
            // driver added some meanwhile.
            match queue.enable_notification(mem) {
                Ok(true) if !rechecked => {
                    rechecked = true;
                    continue;
                }
                _ => break,
            }
        };
        rechecked = false;
        let head = chain.head_index();
        if !check_chain(&chain, mem).is_ok_and(|shape| shape.writable > 0) {
            *broken = true;
            break;
        }
        let written = match chain.writer(mem) {
            Ok(mut writer) => {
                let n = writer.available_bytes().min(input.bytes.len());
                let (front, _) = input.bytes.make_contiguous().split_at(n);
                let _ = writer.write_all(front);
                let w = writer.bytes_written();
                input.bytes.drain(..w);
                w
            }
            Err(_) => 0,
        };
        drop(input);
        // written <= the chain's writable length, below 4 GiB.
        used |= queue
            .add_used(mem, head, u32::try_from(written).unwrap_or(u32::MAX))
            .is_ok();
    }
    let mut input = shared.input();
    if input.refused && input.bytes.len() < input.capacity {
        input.refused = false;
        drop(input);
        if let Some(room) = &*shared.room.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = room.write(1);
        }
    }
    used && queue.needs_notification(mem).unwrap_or(true)
}

fn tx_chain<MM: GuestMemory>(
    chain: virtio_queue::DescriptorChain<&MM>,
    mem: &MM,
    shared: &Shared,
    buf: &mut Vec<u8>,
    shape: ChainShape,
) -> Option<u32> {
    // A transmit buffer the device cannot read is the driver's error.
    if shape.readable == 0 {
        return None;
    }
    let reader = chain.reader(mem).ok()?;
    buf.clear();
    let _ = reader.take(CONSOLE_MAX_TX_CHAIN as u64).read_to_end(buf);
    if !buf.is_empty() {
        let mut out = shared.output();
        let _ = out.write_all(buf);
        let _ = out.flush();
    }
    Some(0)
}

impl<M: GuestAddressSpace + Send + 'static> VirtioDevice<M> for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn device_features(&self) -> u64 {
        1 << VIRTIO_CONSOLE_F_EMERG_WRITE
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn ack_features(&mut self, features: u64) -> Result<()> {
        self.acked = features;
        Ok(())
    }

    fn config_len(&self) -> usize {
        CONSOLE_CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols = rows = 0, max_nr_ports = 1, emerg_wr reads 0.
        let mut config = [0u8; CONSOLE_CONFIG_LEN];
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
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
        if offset == CONSOLE_CONFIG_EMERG_WR && !data.is_empty() {
            let mut out = self.shared.output();
            let _ = out.write_all(&data[..1]);
            let _ = out.flush();
        }
    }

    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<()> {
        self.worker = None;
        let mut rx = None;
        let mut tx = None;
        for (index, queue, fd) in queues {
            match index {
                0 => rx = Some((queue, fd)),
                1 => tx = Some((queue, fd)),
                _ => {}
            }
        }
        let missing = |index| Error::MissingQueue {
            device: "virtio-console",
            index,
        };
        let (rxq, rx_fd) = rx.ok_or_else(|| missing(0))?;
        let (txq, tx_fd) = tx.ok_or_else(|| missing(1))?;
        let shared = Arc::clone(&self.shared);
        let input_fd = shared.input_event.try_clone().map_err(|source| Error::Io {
            what: "duplicating the console input eventfd",
            source,
        })?;
        use std::os::fd::AsRawFd;
        let fds = [
            (rx_fd.as_raw_fd(), RX),
            (tx_fd.as_raw_fd(), TX),
            (input_fd.as_raw_fd(), INPUT),
        ];
        // Work queued before DRIVER_OK (and input that waited over a reset) goes at once.
        let _ = tx_fd.write(1);
        let _ = input_fd.write(1);
        let mut buf = Vec::new();
        let mut broken = false;
        let worker = Worker::spawn("virtio-console", &fds, (rxq, txq), move |q, token| {
            let (rxq, txq) = (&mut q.0, &mut q.1);
            let guard = memory.memory();
            let mem = &*guard;
            match token {
                TX => {
                    drain_eventfd(&tx_fd);
                    if !broken
                        && drain_queue(txq, mem, &mut broken, |c, shape| {
                            tx_chain(c, mem, &shared, &mut buf, shape)
                        })
                    {
                        interrupt.trigger(InterruptKind::Queue(1));
                    }
                }
                _ => {
                    drain_eventfd(if token == RX { &rx_fd } else { &input_fd });
                    if !broken && fill_rx(rxq, mem, &shared, &mut broken) {
                        interrupt.trigger(InterruptKind::Queue(0));
                    }
                }
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

    /// Output and input are handled whole inside one worker event: stopping the worker
    /// leaves nothing in flight (input not yet given to the guest stays buffered).
    fn quiesce(&mut self) -> Result<Vec<QueuePosition>> {
        let (rxq, txq) = self
            .worker
            .take()
            .and_then(|mut w| w.stop_and_take())
            .ok_or(Error::Quiesce {
                device: "virtio-console",
                reason: "its worker is not running (or panicked)".into(),
            })?;
        Ok(vec![position(0, &rxq), position(1, &txq)])
    }
}
