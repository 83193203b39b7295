//! A guest-driver side for the device tests: a split ring in a `GuestMemoryMmap` with
//! wrapping avail/used indices, requests built from descriptors, and an interrupt counter.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_block::{BlockBackend, VirtioBlk};
use vmkit_virtio::{InterruptKind, VirtioDevice, VirtioInterrupt};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub type Mem = Arc<GuestMemoryMmap>;

pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;
pub const INDIRECT: u16 = 4;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_CONFIG_WCE: u64 = 1 << 11;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Where requests' headers, data and status bytes go.
pub const HEADER: u64 = 0x10_0000;
pub const DATA: u64 = 0x20_0000;
pub const STATUS: u64 = 0x50_0000;
pub const RING: u64 = 0x1000;

pub fn memory() -> Mem {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap())
}

/// Counts queue interrupts (`.0`) and NEEDS_RESET requests (`.1`).
#[derive(Default)]
pub struct Irqs(pub AtomicUsize, pub AtomicUsize);

impl VirtioInterrupt for Irqs {
    fn trigger(&self, kind: InterruptKind) {
        assert_eq!(kind, InterruptKind::Queue(0));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn needs_reset(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Irqs {
    /// Waits (up to 20 s) until the device asked for a reset.
    pub fn wait_needs_reset(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.1.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no NEEDS_RESET");
            std::thread::yield_now();
        }
    }
}

/// The driver's view of one split queue at [`RING`].
pub struct Driver {
    pub mem: Mem,
    pub size: u16,
    next_desc: u16,
    avail_idx: u16,
    seen_used: u16,
}

impl Driver {
    pub fn new(mem: Mem, size: u16) -> Self {
        Driver {
            mem,
            size,
            next_desc: 0,
            avail_idx: 0,
            seen_used: 0,
        }
    }

    pub fn desc_addr(&self) -> u64 {
        RING
    }
    pub fn avail_addr(&self) -> u64 {
        RING + 16 * u64::from(self.size)
    }
    pub fn used_addr(&self) -> u64 {
        (self.avail_addr() + 6 + 2 * u64::from(self.size) + 3) & !3
    }

    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_ready(true);
        let lohi = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (l, h) = lohi(self.desc_addr());
        q.set_desc_table_address(l, h);
        let (l, h) = lohi(self.avail_addr());
        q.set_avail_ring_address(l, h);
        let (l, h) = lohi(self.used_addr());
        q.set_used_ring_address(l, h);
        q
    }

    /// Writes a raw descriptor at table index `i`.
    pub fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.desc_addr() + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, at).unwrap();
    }

    /// Publishes `head` in the avail ring.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(self.avail_addr() + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.avail_addr() + 2))
            .unwrap();
    }

    /// Adds a chain of (addr, len, WRITE?) buffers, linked with NEXT; returns its head.
    pub fn add_chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, write)) in bufs.iter().enumerate() {
            let i = (head + k as u16) % self.size;
            let last = k + 1 == bufs.len();
            let flags = if write { WRITE } else { 0 } | if last { 0 } else { NEXT };
            self.write_desc(i, addr, len, flags, (i + 1) % self.size);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.used_addr() + 2))
            .unwrap()
    }

    /// (id, len) of used element `n` (mod the size).
    pub fn used_elem(&self, n: u16) -> (u32, u32) {
        let at = self.used_addr() + 4 + 8 * u64::from(n % self.size);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// Waits until `count` more used elements appeared; returns them.
    pub fn wait_used(&mut self, count: u16) -> Vec<(u32, u32)> {
        let target = self.seen_used.wrapping_add(count);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.used_idx() != target {
            assert!(
                Instant::now() < deadline,
                "no completion (used idx {})",
                self.used_idx()
            );
            std::thread::yield_now();
        }
        let out = (0..count)
            .map(|k| self.used_elem(self.seen_used.wrapping_add(k)))
            .collect();
        self.seen_used = target;
        out
    }
}

/// A started device, the driver and the queue's eventfd.
pub struct Bench {
    pub blk: VirtioBlk,
    pub driver: Driver,
    pub notify: EventFd,
    pub irqs: Arc<Irqs>,
}

impl Bench {
    /// Negotiates `features` and activates a device on `backend`.
    pub fn start(mut blk: VirtioBlk, features: u64) -> Self {
        let mem = memory();
        let driver = Driver::new(mem.clone(), 256);
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        let irqs = Arc::new(Irqs::default());
        let dev: &mut dyn VirtioDevice<Mem> = &mut blk;
        let offered = dev.device_features();
        assert_eq!(features & !offered, 0, "asked for features not offered");
        dev.ack_features(features).unwrap();
        dev.activate(
            mem,
            irqs.clone(),
            vec![(0, driver.queue(), notify.try_clone().unwrap())],
        )
        .unwrap();
        Bench {
            blk,
            driver,
            notify,
            irqs,
        }
    }

    pub fn mem(&self) -> &Mem {
        &self.driver.mem
    }

    /// Submits one request: header (type, sector), `out` bytes to send, `in_len` bytes
    /// for the device to fill, then the status byte. Returns (status, used len, in data).
    pub fn request(
        &mut self,
        kind: u32,
        sector: u64,
        out: &[u8],
        in_len: u32,
    ) -> (u8, u32, Vec<u8>) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let mem = self.mem().clone();
        mem.write_slice(&header, GuestAddress(HEADER)).unwrap();
        mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let mut bufs = vec![(HEADER, 16, false)];
        if !out.is_empty() {
            mem.write_slice(out, GuestAddress(DATA)).unwrap();
            bufs.push((DATA, out.len() as u32, false));
        }
        if in_len > 0 {
            mem.write_slice(&vec![0xa5; in_len as usize], GuestAddress(DATA + 0x10_0000))
                .unwrap();
            bufs.push((DATA + 0x10_0000, in_len, true));
        }
        bufs.push((STATUS, 1, true));
        let head = self.driver.add_chain(&bufs);
        self.notify.write(1).unwrap();
        let used = self.driver.wait_used(1);
        assert_eq!(used[0].0, u32::from(head));
        let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
        let mut data = vec![0u8; in_len as usize];
        mem.read_slice(&mut data, GuestAddress(DATA + 0x10_0000))
            .unwrap();
        (status, used[0].1, data)
    }

    pub fn reset(&mut self) -> bool {
        VirtioDevice::<Mem>::reset(&mut self.blk)
    }
}

pub fn config(blk: &VirtioBlk) -> Vec<u8> {
    let mut c = vec![0u8; vmkit_block::BLK_CONFIG_LEN];
    VirtioDevice::<Mem>::read_config(blk, 0, &mut c);
    c
}

pub fn backend_bytes(b: &dyn BlockBackend) -> Vec<u8> {
    let mut v = vec![0u8; b.size() as usize];
    b.read_at(&mut v, 0).unwrap();
    v
}

/// A fresh file under the target's temporary directory with `bytes`.
pub fn temp_image(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("vmkit-block");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.img", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}
