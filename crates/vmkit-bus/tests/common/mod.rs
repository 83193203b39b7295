//! Test devices shared by the integration tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{MutDeviceMmio, MutDevicePio};

/// One access as a device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub write: bool,
    pub base: u64,
    pub offset: u64,
    pub len: usize,
    /// First byte written (0 for reads).
    pub first: u8,
}

/// Records every access; a read returns `pattern(id, offset + k)` in byte k, so the expected
/// bytes of any access, whole or split, can be computed from the address alone.
#[derive(Debug, Default)]
pub struct Recorder {
    pub id: u8,
    pub seen: Vec<Seen>,
}

pub fn pattern(id: u8, offset: u64) -> u8 {
    id.wrapping_mul(0x10).wrapping_add(offset as u8) | 0x01
}

impl Recorder {
    pub fn new(id: u8) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            id,
            seen: Vec::new(),
        }))
    }

    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.seen.push(Seen {
            write: false,
            base,
            offset,
            len: data.len(),
            first: 0,
        });
        for (k, byte) in data.iter_mut().enumerate() {
            *byte = pattern(self.id, offset + k as u64);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let first = data.first().copied().unwrap_or(0);
        self.seen.push(Seen {
            write: true,
            base,
            offset,
            len: data.len(),
            first,
        });
    }
}

impl MutDevicePio for Recorder {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(u64::from(base.0), u64::from(offset), data);
    }
    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(u64::from(base.0), u64::from(offset), data);
    }
}

impl MutDeviceMmio for Recorder {
    fn mmio_read(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(base.0, offset, data);
    }
    fn mmio_write(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(base.0, offset, data);
    }
}

/// Counts reads and writes; nothing else, so threads can hammer it.
#[derive(Debug, Default)]
pub struct Counting {
    pub reads: u64,
    pub writes: u64,
}

impl MutDevicePio for Counting {
    fn pio_read(&mut self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) {
        self.reads += 1;
        data.fill(0);
    }
    fn pio_write(&mut self, _: PioAddress, _: PioAddressOffset, _: &[u8]) {
        self.writes += 1;
    }
}

impl MutDeviceMmio for Counting {
    fn mmio_read(&mut self, _: MmioAddress, _: MmioAddressOffset, data: &mut [u8]) {
        self.reads += 1;
        data.fill(0);
    }
    fn mmio_write(&mut self, _: MmioAddress, _: MmioAddressOffset, _: &[u8]) {
        self.writes += 1;
    }
}
