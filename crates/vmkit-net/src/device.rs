//! virtio-net (virtio 1.x section 5.1): queue 0 receives (host to guest), queue 1
//! transmits, each buffer preceded by a `virtio_net_hdr`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemory};
use vmkit_virtio::{ActivatedQueue, InterruptKind, QueuePosition, VirtioDevice, VirtioInterrupt};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::{offload, NetBackend, VNET_HDR_LEN};

/// Size of each queue (QEMU's default `rx_queue_size`/`tx_queue_size`).
pub const NET_QUEUE_SIZE: u16 = 256;
/// Length of the configuration space: `mac` (6 bytes) and `status` (2), as QEMU sizes it
/// for `VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS`.
pub const NET_CONFIG_LEN: usize = 8;
/// Offset of `status` in the configuration.
pub const NET_CONFIG_STATUS: u64 = 6;
/// Largest Ethernet frame (without vnet header) carried: a 64 KiB GSO packet plus its
/// Ethernet and VLAN headers.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// The legacy header without `num_buffers`.
pub const LEGACY_HDR_LEN: usize = 10;

/// Frames handled per wake-up before the worker looks at its other events again.
const BUDGET: usize = 256;

const KILL: u64 = 0;
const RX: u64 = 1;
const TX: u64 = 2;
const TAP: u64 = 3;
const LINK: u64 = 4;

/// Counters of one device (monotonic, since creation).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames given to the guest.
    pub rx_frames: AtomicU64,
    /// Frames sent to the backend.
    pub tx_frames: AtomicU64,
    /// Received frames dropped: larger than the guest's buffer (without `MRG_RXBUF`), link
    /// down, or shorter than the backend's header.
    pub rx_dropped: AtomicU64,
    /// Transmit chains dropped: link down, malformed, too short or too long, or a backend
    /// error.
    pub tx_dropped: AtomicU64,
    /// Receive chains the guest built wrong: too small for the header (completed with
    /// length 0), or malformed (outside guest memory, a loop, zero-length or read-only
    /// buffers: not completed, the device then needs a reset).
    pub rx_bad_chains: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct LinkShared {
    up: AtomicBool,
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
    /// Wakes the worker when the link changes.
    wake: EventFd,
}

impl LinkShared {
    fn interrupt(&self) -> MutexGuard<'_, Option<Arc<dyn VirtioInterrupt>>> {
        self.interrupt.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The link state of a virtio-net device (QMP's `set_link`): clone it freely.
#[derive(Clone)]
pub struct NetLink(Arc<LinkShared>);

impl std::fmt::Debug for NetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetLink")
            .field("up", &self.is_up())
            .finish()
    }
}

impl NetLink {
    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::SeqCst)
    }

    /// Sets the link up or down, as QEMU's `virtio_net_set_link_status`: on a change,
    /// `status` follows and a running device raises a configuration interrupt. While the
    /// link is down, transmitted frames and frames from the backend are dropped (as QEMU
    /// drops them). Returns whether the state changed.
    pub fn set_up(&self, up: bool) -> bool {
        if self.0.up.swap(up, Ordering::SeqCst) == up {
            return false;
        }
        let _ = self.0.wake.write(1);
        // Not under our lock: the transport takes its own.
        let interrupt = self.0.interrupt().clone();
        if let Some(interrupt) = interrupt {
            interrupt.trigger(InterruptKind::Config);
        }
        true
    }
}

type SharedBackend = Arc<Mutex<Box<dyn NetBackend>>>;

fn lock_backend(backend: &SharedBackend) -> MutexGuard<'_, Box<dyn NetBackend>> {
    backend.lock().unwrap_or_else(|e| e.into_inner())
}

/// The virtio-net device (`virtio-net-pci` in QEMU terms) on a [`NetBackend`].
///
/// Offers `MAC`, `STATUS`, `MRG_RXBUF` (unless turned off), `EVENT_IDX`, `INDIRECT_DESC`
/// and, when the backend has a vnet header and takes them, the checksum and TSO offloads
/// (`CSUM`, `HOST_TSO4/6`, `HOST_ECN` always with a vnet header; `GUEST_CSUM`,
/// `GUEST_TSO4/6`, `GUEST_ECN` as the backend's `TUNSETOFFLOAD` allows, switched on as
/// the guest accepts them). The guest's header is 12 bytes (`virtio_net_hdr_v1`) with
/// `VERSION_1` or `MRG_RXBUF`, else the legacy 10.
///
/// Receive has back-pressure: when the guest has no buffer for a frame, the frame waits
/// in the device and the backend is not read again until the guest adds buffers, so no
/// frame is lost to a slow guest. Without `MRG_RXBUF` a frame larger than the guest's
/// buffer is dropped, as QEMU does (the buffer is kept). A receive chain too small for the
/// header completes with length 0; a malformed chain ([`vmkit_virtio::check_chain`], or
/// a receive chain with nothing writable, a transmit chain with nothing readable) is not
/// completed, both queues stop and the transport reports `NEEDS_RESET` with a
/// configuration interrupt until the driver resets the device; nothing a guest writes in
/// its rings panics the device.
pub struct VirtioNet {
    backend: SharedBackend,
    mac: [u8; 6],
    features: u64,
    acked: u64,
    link: Arc<LinkShared>,
    stats: Arc<NetStats>,
    worker: Option<NetWorker>,
    sizes: [u16; 2],
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("mac", &crate::format_mac(&self.mac))
            .field("features", &format_args!("{:#x}", self.features))
            .field("acked", &format_args!("{:#x}", self.acked))
            .field("link_up", &self.link.up.load(Ordering::SeqCst))
            .field("running", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioNet {
    /// A device with MAC `mac` on `backend`, link up.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> crate::Result<Self> {
        let wake = EventFd::new(EFD_NONBLOCK).map_err(|source| crate::Error::Io {
            what: "creating the virtio-net link eventfd",
            source,
        })?;
        let mut features = 1 << VIRTIO_NET_F_MAC
            | 1 << VIRTIO_NET_F_STATUS
            | 1 << VIRTIO_NET_F_MRG_RXBUF
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC;
        if backend.vnet_hdr_len() == VNET_HDR_LEN {
            features |= 1 << VIRTIO_NET_F_CSUM
                | 1 << VIRTIO_NET_F_HOST_TSO4
                | 1 << VIRTIO_NET_F_HOST_TSO6
                | 1 << VIRTIO_NET_F_HOST_ECN;
            let offloads = backend.supported_offloads();
            for (flag, bit) in [
                (offload::CSUM, VIRTIO_NET_F_GUEST_CSUM),
                (offload::TSO4, VIRTIO_NET_F_GUEST_TSO4),
                (offload::TSO6, VIRTIO_NET_F_GUEST_TSO6),
                (offload::TSO_ECN, VIRTIO_NET_F_GUEST_ECN),
            ] {
                if offloads & flag != 0 {
                    features |= 1 << bit;
                }
            }
        }
        Ok(VirtioNet {
            backend: Arc::new(Mutex::new(backend)),
            mac,
            features,
            acked: 0,
            link: Arc::new(LinkShared {
                up: AtomicBool::new(true),
                interrupt: Mutex::new(None),
                wake,
            }),
            stats: Arc::new(NetStats::default()),
            worker: None,
            sizes: [NET_QUEUE_SIZE; 2],
        })
    }

    /// Offers `VIRTIO_NET_F_MRG_RXBUF` or not (QEMU's `mrg_rxbuf`, default on).
    pub fn with_mrg_rxbuf(mut self, on: bool) -> Self {
        let bit = 1u64 << VIRTIO_NET_F_MRG_RXBUF;
        if on {
            self.features |= bit;
        } else {
            self.features &= !bit;
        }
        self
    }

    /// The link handle (QMP's `set_link`).
    pub fn link(&self) -> NetLink {
        NetLink(Arc::clone(&self.link))
    }

    /// The counters.
    pub fn stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.stats)
    }

    /// The MAC address the configuration shows.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the worker thread runs.
    pub fn is_running(&self) -> bool {
        self.worker.is_some()
    }

    fn config(&self) -> [u8; NET_CONFIG_LEN] {
        let mut config = [0u8; NET_CONFIG_LEN];
        config[..6].copy_from_slice(&self.mac);
        let status = if self.link.up.load(Ordering::SeqCst) {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config
    }
}

/// The guest header length for `features`.
fn guest_hdr_len(features: u64) -> usize {
    if features & (1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF) != 0 {
        VNET_HDR_LEN
    } else {
        LEGACY_HDR_LEN
    }
}

/// The `TUN_F_*` flags matching the guest's receive offloads.
fn guest_offloads(features: u64) -> u32 {
    let mut flags = 0;
    for (bit, flag) in [
        (VIRTIO_NET_F_GUEST_CSUM, offload::CSUM),
        (VIRTIO_NET_F_GUEST_TSO4, offload::TSO4),
        (VIRTIO_NET_F_GUEST_TSO6, offload::TSO6),
        (VIRTIO_NET_F_GUEST_ECN, offload::TSO_ECN),
    ] {
        if features & (1 << bit) != 0 {
            flags |= flag;
        }
    }
    flags
}

enum Delivery {
    /// The frame is in the guest's buffers.
    Done,
    /// No (or not enough) buffers: the frame waits.
    NoBuffers,
    /// The frame cannot be delivered (too large for the buffer, or bogus).
    Dropped,
}

enum TxOutcome {
    Done,
    Blocked,
}

/// The two queues and what the worker keeps between wake-ups. Public to the crate so tests
/// can drive it without a thread.
pub(crate) struct NetQueues {
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    hdr_len: usize,
    mrg: bool,
    link: Arc<LinkShared>,
    stats: Arc<NetStats>,
    rx_buf: Vec<u8>,
    scratch: Vec<u8>,
    tx_buf: Vec<u8>,
    /// A frame read from the backend and not yet delivered (its length in `rx_buf`).
    pending: Option<usize>,
    /// The backend is polled for input (false while the guest has no receive buffer).
    pub(crate) rx_polling: bool,
    /// The backend refused a frame: wait for it to become writable.
    pub(crate) tx_blocked: bool,
    /// The transmit budget ran out with chains left.
    pub(crate) tx_more: bool,
    /// A malformed chain ([`vmkit_virtio::check_chain`], or no buffer in the direction the
    /// queue needs) stopped both queues until the driver resets the device (NEEDS_RESET).
    pub(crate) broken: bool,
}

impl NetQueues {
    fn new(
        rx: Queue,
        tx: Queue,
        features: u64,
        link: Arc<LinkShared>,
        stats: Arc<NetStats>,
    ) -> Self {
        NetQueues {
            rx,
            tx,
            hdr_len: guest_hdr_len(features),
            mrg: features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            link,
            stats,
            rx_buf: vec![0; VNET_HDR_LEN + MAX_FRAME],
            scratch: Vec::new(),
            tx_buf: Vec::new(),
            pending: None,
            rx_polling: true,
            tx_blocked: false,
            tx_more: false,
            broken: false,
        }
    }

    fn link_up(&self) -> bool {
        self.link.up.load(Ordering::SeqCst)
    }

    /// Moves frames from the backend to the guest until the backend is empty, the guest
    /// has no buffer (then `rx_polling` goes false) or the budget is spent. Returns
    /// whether the driver wants an interrupt.
    pub(crate) fn process_rx<MM: GuestMemory>(
        &mut self,
        mem: &MM,
        backend: &mut dyn NetBackend,
    ) -> bool {
        if self.broken {
            return false;
        }
        let bh = backend.vnet_hdr_len();
        let mut used = false;
        for _ in 0..BUDGET {
            if !self.link_up() {
                // QEMU drops what reaches a NIC whose link is down.
                if self.pending.take().is_some() {
                    bump(&self.stats.rx_dropped);
                }
                match backend.recv(&mut self.rx_buf) {
                    Ok(_) => {
                        bump(&self.stats.rx_dropped);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let len = match self.pending {
                Some(len) => len,
                None => match backend.recv(&mut self.rx_buf) {
                    Ok(len) => {
                        self.pending = Some(len);
                        len
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // WouldBlock: drained; any other error: try again on the next wake-up.
                    Err(_) => break,
                },
            };
            let (outcome, any_used) = self.deliver(mem, len, bh);
            used |= any_used;
            match outcome {
                Delivery::Done => {
                    self.pending = None;
                    bump(&self.stats.rx_frames);
                }
                Delivery::Dropped => {
                    self.pending = None;
                    bump(&self.stats.rx_dropped);
                }
                Delivery::NoBuffers => {
                    self.rx_polling = false;
                    break;
                }
            }
        }
        used && self.rx.needs_notification(mem).unwrap_or(true)
    }

    /// Puts the frame in `rx_buf[..len]` (after a backend header of `bh` bytes) into the
    /// guest's receive buffers. Returns the outcome and whether used entries were added.
    fn deliver<MM: GuestMemory>(&mut self, mem: &MM, len: usize, bh: usize) -> (Delivery, bool) {
        if len < bh || len > self.rx_buf.len() {
            return (Delivery::Dropped, false);
        }
        let hdr_len = self.hdr_len;
        let mut header = [0u8; VNET_HDR_LEN];
        if bh == VNET_HDR_LEN {
            header[..LEGACY_HDR_LEN].copy_from_slice(&self.rx_buf[..LEGACY_HDR_LEN]);
        }
        let payload_len = len - bh;
        let total = hdr_len + payload_len;
        let mut used = false;

        // Collect chains until the frame fits (one chain without MRG_RXBUF).
        let mut chains: Vec<(u16, Option<virtio_queue::Writer<'_, _>>)> = Vec::new();
        let mut capacity = 0usize;
        let mut rechecked = false;
        while capacity < total {
            if !self.mrg && !chains.is_empty() {
                // The single chain is too small: QEMU drops the frame and keeps the buffer.
                self.rx.go_to_previous_position();
                return (Delivery::Dropped, used);
            }
            let Some(chain) = self.rx.pop_descriptor_chain(mem) else {
                if vmkit_virtio::avail_overrun(&self.rx, mem) {
                    bump(&self.stats.rx_bad_chains);
                    self.broken = true;
                    return (Delivery::NoBuffers, used);
                }
                if !rechecked && matches!(self.rx.enable_notification(mem), Ok(true)) {
                    rechecked = true;
                    continue;
                }
                for _ in 0..chains.len() {
                    self.rx.go_to_previous_position();
                }
                return (Delivery::NoBuffers, used);
            };
            rechecked = false;
            let head = chain.head_index();
            if !vmkit_virtio::check_chain(&chain, mem).is_ok_and(|shape| shape.writable > 0) {
                bump(&self.stats.rx_bad_chains);
                self.broken = true;
                return (Delivery::NoBuffers, used);
            }
            let writer = chain.writer(mem).ok();
            let room = writer.as_ref().map_or(0, |w| w.available_bytes());
            if chains.is_empty() && room < hdr_len {
                // The first buffer must hold the header: the chain is unusable.
                used |= self.rx.add_used(mem, head, 0).is_ok();
                bump(&self.stats.rx_bad_chains);
                continue;
            }
            if writer.is_none() {
                bump(&self.stats.rx_bad_chains);
            }
            capacity = capacity.saturating_add(room);
            chains.push((head, writer));
        }

        // num_buffers: the chains used (at most the queue size).
        let buffers = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        header[10..12].copy_from_slice(&buffers.to_le_bytes());
        let data: &[u8] = if bh == hdr_len {
            self.rx_buf[..hdr_len].copy_from_slice(&header[..hdr_len]);
            &self.rx_buf[..len]
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(&header[..hdr_len]);
            self.scratch.extend_from_slice(&self.rx_buf[bh..len]);
            &self.scratch
        };
        let mut offset = 0;
        let mut lengths = Vec::with_capacity(chains.len());
        for (head, writer) in chains.iter_mut() {
            let written = match writer {
                Some(w) => {
                    let n = w.available_bytes().min(data.len() - offset);
                    let _ = w.write_all(&data[offset..offset + n]);
                    w.bytes_written()
                }
                None => 0,
            };
            offset += written;
            lengths.push((*head, written));
        }
        drop(chains);
        for (head, written) in lengths {
            // written <= the frame's length, below 4 GiB.
            let written = u32::try_from(written).unwrap_or(u32::MAX);
            used |= self.rx.add_used(mem, head, written).is_ok();
        }
        (Delivery::Done, used)
    }

    /// Sends every transmit chain (up to the budget; `tx_more` says chains are left).
    /// Returns whether the driver wants an interrupt.
    pub(crate) fn process_tx<MM: GuestMemory>(
        &mut self,
        mem: &MM,
        backend: &mut dyn NetBackend,
    ) -> bool {
        self.tx_more = false;
        if self.tx_blocked || self.broken {
            return false;
        }
        let mut used = false;
        let mut budget = BUDGET;
        'passes: loop {
            let _ = self.tx.disable_notification(mem);
            let mut progress = false;
            while let Some(chain) = self.tx.pop_descriptor_chain(mem) {
                if budget == 0 {
                    self.tx.go_to_previous_position();
                    self.tx_more = true;
                    break 'passes;
                }
                budget -= 1;
                let head = chain.head_index();
                if !vmkit_virtio::check_chain(&chain, mem).is_ok_and(|shape| shape.readable > 0) {
                    bump(&self.stats.tx_dropped);
                    self.broken = true;
                    break 'passes;
                }
                match self.tx_chain(chain, mem, backend) {
                    TxOutcome::Done => {
                        used |= self.tx.add_used(mem, head, 0).is_ok();
                        progress = true;
                    }
                    TxOutcome::Blocked => {
                        self.tx.go_to_previous_position();
                        self.tx_blocked = true;
                        break 'passes;
                    }
                }
            }
            if vmkit_virtio::avail_overrun(&self.tx, mem) {
                self.broken = true;
                break;
            }
            match self.tx.enable_notification(mem) {
                Ok(true) if progress => continue,
                _ => break,
            }
        }
        used && self.tx.needs_notification(mem).unwrap_or(true)
    }

    fn tx_chain<MM: GuestMemory>(
        &mut self,
        chain: DescriptorChain<&MM>,
        mem: &MM,
        backend: &mut dyn NetBackend,
    ) -> TxOutcome {
        let drop_it = |stats: &NetStats| {
            bump(&stats.tx_dropped);
            TxOutcome::Done
        };
        if !self.link_up() {
            return drop_it(&self.stats);
        }
        let Ok(mut reader) = chain.reader(mem) else {
            return drop_it(&self.stats);
        };
        let len = reader.available_bytes();
        let hdr_len = self.hdr_len;
        if len < hdr_len || len - hdr_len > MAX_FRAME {
            return drop_it(&self.stats);
        }
        let payload = len - hdr_len;
        let bh = backend.vnet_hdr_len();
        self.tx_buf.clear();
        self.tx_buf.resize(bh + payload, 0);
        let mut header = [0u8; VNET_HDR_LEN];
        if reader.read_exact(&mut header[..hdr_len]).is_err()
            || reader.read_exact(&mut self.tx_buf[bh..]).is_err()
        {
            return drop_it(&self.stats);
        }
        if bh == VNET_HDR_LEN {
            // num_buffers means nothing on transmit.
            header[10..12].fill(0);
            self.tx_buf[..VNET_HDR_LEN].copy_from_slice(&header);
        }
        match backend.send(&self.tx_buf) {
            Ok(()) => {
                bump(&self.stats.tx_frames);
                TxOutcome::Done
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => TxOutcome::Blocked,
            Err(_) => drop_it(&self.stats),
        }
    }

    /// What to poll the backend fd for.
    fn backend_interest(&self) -> Option<EventSet> {
        let mut set = EventSet::empty();
        if self.rx_polling {
            set |= EventSet::IN;
        }
        if self.tx_blocked {
            set |= EventSet::OUT;
        }
        (!set.is_empty()).then_some(set)
    }
}

/// The device's thread: epoll over the queue eventfds, the link eventfd and (when wanted)
/// the backend fd.
struct NetWorker {
    kill: EventFd,
    /// The thread ends with where its two queues stand.
    handle: Option<JoinHandle<[QueuePosition; 2]>>,
}

impl NetWorker {
    fn stop(&mut self) -> bool {
        self.stop_and_take().is_some()
    }

    fn stop_and_take(&mut self) -> Option<[QueuePosition; 2]> {
        let handle = self.handle.take()?;
        let _ = self.kill.write(1);
        handle.join().ok()
    }
}

fn positions(queues: &NetQueues) -> [QueuePosition; 2] {
    let at = |index, q: &Queue| QueuePosition {
        index,
        next_avail: q.next_avail(),
        next_used: q.next_used(),
    };
    [at(0, &queues.rx), at(1, &queues.tx)]
}

impl Drop for NetWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> vmkit_virtio::Error {
    move |source| vmkit_virtio::Error::Io { what, source }
}

impl<M: GuestAddressSpace + Send + 'static> VirtioDevice<M> for VirtioNet {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) -> vmkit_virtio::Result<()> {
        self.acked = features;
        // The backend keeps its old flags if it refuses: it then sends nothing the guest
        // cannot take.
        let _ = lock_backend(&self.backend).set_offloads(guest_offloads(features));
        Ok(())
    }

    fn config_len(&self) -> usize {
        NET_CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
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
        // A legacy driver may set the MAC through the configuration (QEMU allows it
        // without VERSION_1 and CTRL_MAC_ADDR); status is read-only.
        if self.acked & (1 << VIRTIO_F_VERSION_1) != 0 {
            return;
        }
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.mac.get_mut(o))
            {
                *slot = *b;
            }
        }
    }

    fn activate(
        &mut self,
        memory: M,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> vmkit_virtio::Result<()> {
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
        let missing = |index| vmkit_virtio::Error::MissingQueue {
            device: "virtio-net",
            index,
        };
        let (rxq, rx_fd) = rx.ok_or_else(|| missing(0))?;
        let (txq, tx_fd) = tx.ok_or_else(|| missing(1))?;
        let mut queues = NetQueues::new(
            rxq,
            txq,
            self.acked,
            Arc::clone(&self.link),
            Arc::clone(&self.stats),
        );
        let kill =
            EventFd::new(EFD_NONBLOCK).map_err(io_error("creating the virtio-net kill eventfd"))?;
        let kill_fd = kill
            .try_clone()
            .map_err(io_error("duplicating an eventfd"))?;
        let link_fd = self
            .link
            .wake
            .try_clone()
            .map_err(io_error("duplicating the link eventfd"))?;
        let epoll = Epoll::new().map_err(io_error("creating the virtio-net epoll"))?;
        for (fd, token) in [
            (kill_fd.as_raw_fd(), KILL),
            (rx_fd.as_raw_fd(), RX),
            (tx_fd.as_raw_fd(), TX),
            (link_fd.as_raw_fd(), LINK),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(io_error("adding an eventfd to the virtio-net epoll"))?;
        }
        *self.link.interrupt() = Some(Arc::clone(&interrupt));
        let backend = Arc::clone(&self.backend);
        // Work queued before DRIVER_OK is served at once.
        let _ = tx_fd.write(1);
        let _ = rx_fd.write(1);
        let handle =
            vmkit_hw::thread::spawn(vmkit_hw::thread::ThreadRole::Net, "virtio-net", move || {
                let _keep = kill_fd;
                let mut registered: Option<EventSet> = None;
                let mut reported = false;
                let mut events = vec![EpollEvent::default(); 8];
                loop {
                    // Poll the backend fd only for what the queues can take now.
                    let wanted = queues.backend_interest();
                    if wanted != registered {
                        let fd = lock_backend(&backend).as_raw_fd();
                        let op = match (registered, wanted) {
                            (None, Some(_)) => ControlOperation::Add,
                            (Some(_), None) => ControlOperation::Delete,
                            _ => ControlOperation::Modify,
                        };
                        let set = wanted.unwrap_or(EventSet::IN);
                        if epoll.ctl(op, fd, EpollEvent::new(set, TAP)).is_ok() {
                            registered = wanted;
                        }
                    }
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return positions(&queues),
                    };
                    let (mut do_rx, mut do_tx) = (false, false);
                    for ev in &events[..n] {
                        match ev.data() {
                            KILL => return positions(&queues),
                            RX => {
                                let _ = rx_fd.read();
                                queues.rx_polling = true;
                                do_rx = true;
                            }
                            TX => {
                                let _ = tx_fd.read();
                                do_tx = true;
                            }
                            TAP => {
                                let set = ev.event_set();
                                if set
                                    .intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP)
                                {
                                    queues.tx_blocked = false;
                                    do_tx = true;
                                }
                                do_rx |= set
                                    .intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP);
                            }
                            _ => {
                                let _ = link_fd.read();
                                queues.rx_polling = true;
                                do_rx = true;
                                do_tx = true;
                            }
                        }
                    }
                    let guard = memory.memory();
                    let mem = &*guard;
                    let mut backend = lock_backend(&backend);
                    if do_tx && queues.process_tx(mem, &mut **backend) {
                        interrupt.trigger(InterruptKind::Queue(1));
                    }
                    if queues.tx_more {
                        let _ = tx_fd.write(1);
                    }
                    if do_rx && queues.process_rx(mem, &mut **backend) {
                        interrupt.trigger(InterruptKind::Queue(0));
                    }
                    if queues.broken && !reported {
                        reported = true;
                        interrupt.needs_reset();
                    }
                }
            })
            .map_err(io_error("spawning the virtio-net worker thread"))?;
        self.worker = Some(NetWorker {
            kill,
            handle: Some(handle),
        });
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.acked = 0;
        *self.link.interrupt() = None;
        let stopped = self.worker.take().is_none_or(|mut w| w.stop());
        let _ = lock_backend(&self.backend).set_offloads(0);
        stopped
    }

    /// Packets are moved whole within one worker pass (a frame is read from or written to
    /// the backend and its chains are used in the same pass): stopping the worker leaves
    /// nothing in flight.
    fn quiesce(&mut self) -> vmkit_virtio::Result<Vec<QueuePosition>> {
        let positions = self
            .worker
            .take()
            .and_then(|mut w| w.stop_and_take())
            .ok_or(vmkit_virtio::Error::Quiesce {
                device: "virtio-net",
                reason: "its worker is not running (or panicked)".into(),
            })?;
        *self.link.interrupt() = None;
        Ok(positions.to_vec())
    }

    /// A legacy driver may have written the MAC.
    fn restore_config(&mut self, config: &[u8]) {
        if let Some(mac) = config.get(..self.mac.len()) {
            self.mac.copy_from_slice(mac);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives [`NetQueues`] without a thread.
    use super::*;

    pub(crate) fn queues(rx: Queue, tx: Queue, features: u64, up: bool) -> NetQueues {
        let link = Arc::new(LinkShared {
            up: AtomicBool::new(up),
            interrupt: Mutex::new(None),
            wake: EventFd::new(EFD_NONBLOCK).unwrap(),
        });
        NetQueues::new(rx, tx, features, link, Arc::new(NetStats::default()))
    }

    pub(crate) fn stats(q: &NetQueues) -> &NetStats {
        &q.stats
    }

    pub(crate) fn pending(q: &NetQueues) -> bool {
        q.pending.is_some()
    }

    pub(crate) fn broken(q: &NetQueues) -> bool {
        q.broken
    }
}
