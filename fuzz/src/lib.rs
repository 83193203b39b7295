//! Shared pieces of vmkit's fuzz targets: a generic register-access operation decoded from
//! the fuzzer's bytes, and a virtio driver that brings a device up on a PCI transport over a
//! small guest memory and then feeds it descriptor chains the fuzzer wrote.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_hw::RecordingLine;
use vmkit_pci::{MsiMessage, MsiSignal, PciDevice, RegionIndex};
use vmkit_virtio::{common as cc, VirtioDevice, VirtioPciBuilder, VirtioPciDevice};

/// One guest register access or a piece of the outside world happening.
#[derive(Arbitrary, Debug, Clone)]
pub enum RegOp {
    /// A read of `len % 9` bytes at `offset` (the target folds the offset into its span).
    Read { offset: u16, len: u8 },
    /// A write of `len % 9` bytes of `value` (little-endian, padded with 0xa5).
    Write { offset: u16, len: u8, value: u64 },
    /// Time passes (nanoseconds, scaled by the target).
    Advance(u32),
    /// The device's timer callback runs.
    Update,
    /// Machine reset.
    Reset,
    /// A target-specific event with a parameter (input bytes, a line level...).
    Event(u8, u32),
}

/// The access length of a [`RegOp`]: 0..=8 bytes, mostly the natural sizes.
pub fn access_len(len: u8) -> usize {
    match len % 16 {
        0..=3 => 1,
        4..=6 => 2,
        7..=9 => 4,
        10..=11 => 8,
        n => usize::from(n - 12) * 2 + 1, // 1, 3, 5, 7 ... odd and zero-ish sizes
    }
    .min(8)
}

/// `value` as `len` little-endian bytes, padded past 8 with 0xa5.
pub fn value_bytes(value: u64, len: usize) -> Vec<u8> {
    let mut v = value.to_le_bytes().to_vec();
    v.resize(len.max(8), 0xa5);
    v.truncate(len);
    v
}

/// Guest memory for the virtio and fw_cfg targets.
pub type Mem = Arc<GuestMemoryMmap>;
/// A virtio PCI transport over [`Mem`].
pub type Dev = VirtioPciDevice<Mem>;

/// Size of the virtio targets' guest memory (one region at 0).
pub const VIRTIO_MEM: usize = 0x1_0000;
/// The modern BAR.
pub const BAR4: RegionIndex = RegionIndex::Bar(4);
/// Entries in each queue the harness sets up.
pub const QUEUE_SIZE: u16 = 16;

/// Where queue `q`'s descriptor table, available ring and used ring live.
pub fn rings(q: u16) -> (u64, u64, u64) {
    let base = 0x1000 * (u64::from(q) + 1);
    (base, base + 0x400, base + 0x800)
}

/// An MSI sink that drops everything.
#[derive(Default)]
pub struct NullMsi;

impl MsiSignal for NullMsi {
    fn signal(&self, _vector: u16, _message: MsiMessage) {}
    fn update_vector(&self, _vector: u16, _route: Option<MsiMessage>) {}
}

/// A `Write` sink that keeps at most 64 KiB.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap();
        if v.len() > 0x1_0000 {
            v.clear();
        }
        v.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One descriptor the fuzzer writes into a table.
#[derive(Arbitrary, Debug, Clone)]
pub struct Desc {
    /// Buffer address: inside guest memory when the top bit is clear, else far outside.
    pub addr: u32,
    /// Buffer length.
    pub len: u32,
    /// Flags (NEXT 1, WRITE 2, INDIRECT 4).
    pub flags: u16,
    /// Next index.
    pub next: u16,
}

impl Desc {
    /// The guest address the descriptor names.
    pub fn address(&self) -> u64 {
        if self.addr & 0x8000_0000 == 0 {
            u64::from(self.addr) % VIRTIO_MEM as u64
        } else {
            u64::from(self.addr) << 20
        }
    }
    /// The length: usually a small one.
    pub fn length(&self) -> u32 {
        if self.len & 0x8000_0000 == 0 {
            self.len % 0x2000
        } else {
            self.len
        }
    }
}

/// One round of driver activity on a queue.
#[derive(Arbitrary, Debug, Clone)]
pub struct Round {
    /// Which queue (folded into the device's queues).
    pub queue: u8,
    /// Descriptors written at slots 0.. of that queue's table.
    pub descs: Vec<Desc>,
    /// Bytes written into guest memory (request headers, frames...): (address, bytes).
    pub data: Vec<(u16, Vec<u8>)>,
    /// Chain heads published in the available ring.
    pub heads: Vec<u16>,
    /// Whether to write the queue's doorbell.
    pub kick: bool,
    /// A raw register write on the modern BAR between rounds (offset, len, value).
    pub poke: Option<(u16, u8, u64)>,
}

/// A whole virtio session: feature bits the driver acks (VERSION_1 always) and rounds.
#[derive(Arbitrary, Debug, Clone)]
pub struct VirtioSession {
    /// Low feature bits the driver acks (anded with what the device offers).
    pub features: u64,
    /// Rounds of descriptor chains.
    pub rounds: Vec<Round>,
}

fn w(dev: &mut Dev, off: u64, v: u64, len: usize) {
    dev.region_write(BAR4, off, &v.to_le_bytes()[..len]);
}

fn r16(dev: &mut Dev, off: u64) -> u16 {
    let mut b = [0u8; 2];
    dev.region_read(BAR4, off, &mut b);
    u16::from_le_bytes(b)
}

/// Builds a transport around `device` over fresh memory.
pub fn transport(device: Box<dyn VirtioDevice<Mem>>) -> (Dev, Mem) {
    let mem: Mem =
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), VIRTIO_MEM)]).unwrap());
    let dev = VirtioPciBuilder::new()
        .intx(Arc::new(RecordingLine::new()))
        .msi(Arc::new(NullMsi))
        .build(device, mem.clone())
        .unwrap();
    (dev, mem)
}

/// Brings `dev` up as a modern driver would (queues at [`rings`]), acking `features`.
/// Returns the number of queues enabled.
pub fn bring_up(dev: &mut Dev, features: u64) -> u16 {
    for s in [0u64, 1, 3] {
        w(dev, cc::DEVICE_STATUS, s, 1);
    }
    let mut offered = 0u64;
    for sel in 0..2u64 {
        w(dev, cc::DEVICE_FEATURE_SELECT, sel, 4);
        let mut b = [0u8; 4];
        dev.region_read(BAR4, cc::DEVICE_FEATURE, &mut b);
        offered |= u64::from(u32::from_le_bytes(b)) << (32 * sel);
    }
    let acked = (features & offered) | (offered & (1 << 32));
    w(dev, cc::DRIVER_FEATURE_SELECT, 0, 4);
    w(dev, cc::DRIVER_FEATURE, acked & 0xffff_ffff, 4);
    w(dev, cc::DRIVER_FEATURE_SELECT, 1, 4);
    w(dev, cc::DRIVER_FEATURE, acked >> 32, 4);
    w(dev, cc::DEVICE_STATUS, 11, 1);
    let queues = r16(dev, cc::NUM_QUEUES).min(4);
    for q in 0..queues {
        let (d, a, u) = rings(q);
        w(dev, cc::QUEUE_SELECT, u64::from(q), 2);
        w(dev, cc::QUEUE_SIZE, u64::from(QUEUE_SIZE), 2);
        w(dev, cc::QUEUE_DESC_LO, d, 4);
        w(dev, cc::QUEUE_DRIVER_LO, a, 4);
        w(dev, cc::QUEUE_DEVICE_LO, u, 4);
        w(dev, cc::QUEUE_ENABLE, 1, 2);
    }
    w(dev, cc::DEVICE_STATUS, 15, 1);
    queues
}

/// Runs `session` against `dev`: each round writes its descriptors and data, publishes its
/// heads, rings the doorbell and waits (briefly) for the device to use what it published.
/// `between` runs after each round (e.g. to feed a backend).
pub fn run_session(
    dev: &mut Dev,
    mem: &Mem,
    session: &VirtioSession,
    mut between: impl FnMut(&Round),
) {
    let queues = bring_up(dev, session.features);
    if queues == 0 {
        return;
    }
    let mut avail_idx = vec![0u16; usize::from(queues)];
    for round in session.rounds.iter().take(16) {
        let q = u16::from(round.queue) % queues;
        let (table, avail, used) = rings(q);
        for (slot, d) in round.descs.iter().take(usize::from(QUEUE_SIZE)).enumerate() {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&d.address().to_le_bytes());
            raw[8..12].copy_from_slice(&d.length().to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..16].copy_from_slice(&d.next.to_le_bytes());
            let _ = mem.write_slice(&raw, GuestAddress(table + 16 * slot as u64));
        }
        for (addr, bytes) in round.data.iter().take(8) {
            let a = u64::from(*addr);
            // Keep the rings themselves out of reach of plain data writes.
            if a >= 0x1000 * (u64::from(queues) + 1) {
                let n = bytes.len().min(VIRTIO_MEM - a as usize);
                let _ = mem.write_slice(&bytes[..n], GuestAddress(a));
            }
        }
        let idx = &mut avail_idx[usize::from(q)];
        for head in round.heads.iter().take(usize::from(QUEUE_SIZE)) {
            let slot = u64::from(*idx % QUEUE_SIZE);
            let _ = mem.write_obj(*head % (QUEUE_SIZE + 2), GuestAddress(avail + 4 + 2 * slot));
            *idx = idx.wrapping_add(1);
        }
        let _ = mem.write_obj(*idx, GuestAddress(avail + 2));
        if let Some((off, len, value)) = round.poke {
            let len = crate::access_len(len);
            dev.region_write(BAR4, u64::from(off) % 0x4000, &value_bytes(value, len));
        }
        if round.kick {
            w(dev, 0x3000 + 4 * u64::from(q), u64::from(q), 2);
            let deadline = Instant::now() + Duration::from_millis(5);
            while Instant::now() < deadline {
                let done: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap_or(0);
                if done == *idx {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        between(round);
    }
    // Machine reset stops the workers; dropping the transport joins them.
    PciDevice::reset(dev);
}
