//! A guest-driver harness: config-space and BAR accesses on a `VirtioPciDevice`, rings in
//! a `GuestMemoryMmap`, and recording interrupt sinks.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_hw::RecordingLine;
use vmkit_pci::{MsiMessage, MsiSignal, PciDevice, RegionIndex};
use vmkit_virtio::{common, legacy, VirtioDevice, VirtioPciBuilder, VirtioPciDevice};

pub type Mem = Arc<GuestMemoryMmap>;
pub type Dev = VirtioPciDevice<Mem>;

pub const ACK: u8 = 1;
pub const DRIVER: u8 = 2;
pub const DRIVER_OK: u8 = 4;
pub const FEATURES_OK: u8 = 8;
pub const NEEDS_RESET: u8 = 0x40;
pub const VERSION_1: u64 = 1 << 32;
pub const WRITE: u16 = 2;
pub const NEXT: u16 = 1;

pub const BAR0: RegionIndex = RegionIndex::Bar(0);
pub const BAR1: RegionIndex = RegionIndex::Bar(1);
pub const BAR4: RegionIndex = RegionIndex::Bar(4);

pub fn memory(size: usize) -> Mem {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap())
}

#[derive(Default)]
pub struct RecordingMsi {
    pub sent: Mutex<Vec<(u16, MsiMessage)>>,
    pub routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
}

impl RecordingMsi {
    pub fn count(&self, vector: u16) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == vector)
            .count()
    }
}

impl MsiSignal for RecordingMsi {
    fn signal(&self, vector: u16, message: MsiMessage) {
        self.sent.lock().unwrap().push((vector, message));
    }
    fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
        self.routes.lock().unwrap().push((vector, route));
    }
}

/// A `Write` sink tests can read back.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

impl Sink {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `cond` for up to 10 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub struct Harness {
    pub dev: Dev,
    pub mem: Mem,
    pub line: Arc<RecordingLine>,
    pub msi: Arc<RecordingMsi>,
}

impl Harness {
    pub fn new(device: Box<dyn VirtioDevice<Mem>>, builder: VirtioPciBuilder) -> Self {
        let mem = memory(1 << 20);
        let line = Arc::new(RecordingLine::new());
        let msi = Arc::new(RecordingMsi::default());
        let dev = builder
            .intx(line.clone())
            .msi(msi.clone())
            .build(device, mem.clone())
            .unwrap();
        Harness {
            dev,
            mem,
            line,
            msi,
        }
    }

    // ---- configuration space ----
    pub fn cfg_read(&mut self, off: u16, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.config_read(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    pub fn cfg_write(&mut self, off: u16, v: u64, len: usize) {
        self.dev.config_write(off, &v.to_le_bytes()[..len]);
    }

    /// The vendor capabilities: (offset, cfg_type).
    pub fn vendor_caps(&self) -> Vec<(u16, u8)> {
        self.dev
            .config()
            .capabilities()
            .into_iter()
            .filter(|c| c.0 == 0x09)
            .map(|(_, off)| (off, self.dev.config().byte(off + 3)))
            .collect()
    }

    pub fn msix_cap(&self) -> u16 {
        self.dev
            .config()
            .capabilities()
            .into_iter()
            .find(|c| c.0 == 0x11)
            .unwrap()
            .1
    }

    // ---- BARs ----
    pub fn read(&mut self, bar: RegionIndex, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.region_read(bar, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    pub fn write(&mut self, bar: RegionIndex, off: u64, v: u64, len: usize) {
        self.dev.region_write(bar, off, &v.to_le_bytes()[..len]);
    }
    pub fn common_read(&mut self, off: u64, len: usize) -> u64 {
        self.read(BAR4, off, len)
    }
    pub fn common_write(&mut self, off: u64, v: u64, len: usize) {
        self.write(BAR4, off, v, len)
    }
    pub fn status(&mut self) -> u8 {
        self.common_read(common::DEVICE_STATUS, 1) as u8
    }
    pub fn set_status(&mut self, s: u8) {
        self.common_write(common::DEVICE_STATUS, u64::from(s), 1)
    }

    pub fn device_features(&mut self) -> u64 {
        self.common_write(common::DEVICE_FEATURE_SELECT, 0, 4);
        let lo = self.common_read(common::DEVICE_FEATURE, 4);
        self.common_write(common::DEVICE_FEATURE_SELECT, 1, 4);
        let hi = self.common_read(common::DEVICE_FEATURE, 4);
        hi << 32 | lo
    }

    pub fn write_driver_features(&mut self, f: u64) {
        self.common_write(common::DRIVER_FEATURE_SELECT, 0, 4);
        self.common_write(common::DRIVER_FEATURE, f & 0xffff_ffff, 4);
        self.common_write(common::DRIVER_FEATURE_SELECT, 1, 4);
        self.common_write(common::DRIVER_FEATURE, f >> 32, 4);
    }

    /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u8 {
        self.set_status(0);
        self.set_status(ACK);
        self.set_status(ACK | DRIVER);
        self.write_driver_features(features);
        self.set_status(ACK | DRIVER | FEATURES_OK);
        self.status()
    }

    pub fn setup_queue(&mut self, index: u16, size: u16, desc: u64, avail: u64, used: u64) {
        self.common_write(common::QUEUE_SELECT, u64::from(index), 2);
        self.common_write(common::QUEUE_SIZE, u64::from(size), 2);
        for (lo, a) in [
            (common::QUEUE_DESC_LO, desc),
            (common::QUEUE_DRIVER_LO, avail),
            (common::QUEUE_DEVICE_LO, used),
        ] {
            self.common_write(lo, a & 0xffff_ffff, 4);
            self.common_write(lo + 4, a >> 32, 4);
        }
        self.common_write(common::QUEUE_ENABLE, 1, 2);
    }

    pub fn setup_mock(&mut self, index: u16, vq: &MockSplitQueue<'_, GuestMemoryMmap>, size: u16) {
        self.setup_queue(
            index,
            size,
            vq.desc_table_addr().0,
            vq.avail_addr().0,
            vq.used_addr().0,
        );
    }

    pub fn driver_ok(&mut self) {
        let s = self.status();
        self.set_status(s | DRIVER_OK);
    }

    pub fn notify(&mut self, queue: u16) {
        self.write(BAR4, 0x3000 + 4 * u64::from(queue), u64::from(queue), 2);
    }

    /// Turns MSI-X on and programs vector `v` unmasked with data 0x40 + v.
    pub fn enable_msix(&mut self, vectors: u16) {
        let cap = self.msix_cap();
        for v in 0..u64::from(vectors) {
            self.write(BAR1, v * 16, 0xfee0_0000, 4);
            self.write(BAR1, v * 16 + 4, 0, 4);
            self.write(BAR1, v * 16 + 8, 0x40 + v, 4);
            self.write(BAR1, v * 16 + 12, 0, 4);
        }
        self.cfg_write(cap + 2, 0x8000, 2);
    }

    // ---- legacy ----
    pub fn legacy_read(&mut self, off: u64, len: usize) -> u64 {
        self.read(BAR0, off, len)
    }
    pub fn legacy_write(&mut self, off: u64, v: u64, len: usize) {
        self.write(BAR0, off, v, len)
    }
    pub fn legacy_status(&mut self, s: u8) {
        self.legacy_write(legacy::STATUS, u64::from(s), 1)
    }
}

pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// The used element at `slot` of a used ring at `used`: (id, len).
pub fn used_elem(mem: &GuestMemoryMmap, used: GuestAddress, slot: u16) -> (u32, u32) {
    let base = used.0 + 4 + 8 * u64::from(slot);
    let id: u32 = mem.read_obj(GuestAddress(base)).unwrap();
    let len: u32 = mem.read_obj(GuestAddress(base + 4)).unwrap();
    (id, len)
}

pub fn used_idx(mem: &GuestMemoryMmap, used: GuestAddress) -> u16 {
    mem.read_obj(GuestAddress(used.0 + 2)).unwrap()
}

/// A legacy (4096-aligned) ring of `size` entries at page frame `pfn`: (desc, avail, used).
pub fn legacy_layout(pfn: u64, size: u64) -> (u64, u64, u64) {
    let desc = pfn << 12;
    let avail = desc + 16 * size;
    let used = (avail + 2 * (3 + size)).next_multiple_of(4096);
    (desc, avail, used)
}

/// Writes descriptor `i` and publishes head `head` in the avail ring (driver side, by hand).
pub fn publish(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    avail: u64,
    size: u16,
    descs: &[(u16, RawDescriptor)],
    head: u16,
) {
    for (i, d) in descs {
        mem.write_obj(*d, GuestAddress(desc_table + 16 * u64::from(*i)))
            .unwrap();
    }
    let idx: u16 = mem.read_obj(GuestAddress(avail + 2)).unwrap();
    mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(idx % size)))
        .unwrap();
    mem.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
        .unwrap();
}
