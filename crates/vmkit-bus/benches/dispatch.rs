//! Dispatch cost per access: vmkit-bus against vm-device's `IoManager`, on the same devices.
//!
//! Each case maps N devices (1, 16, 256) of one counting type behind one `Arc<Mutex<_>>` in
//! both buses, then dispatches a fixed, shuffled list of 1024 addresses spread over every
//! device (a write of the access size), three ways: vmkit-bus through a per-vCPU handle
//! (`vmkit-bus-handle`), vmkit-bus through `&self` (`vmkit-bus`), and `IoManager`
//! (`vm-device-IoManager`). Criterion reports the time of one batch of 1024
//! accesses; divide by 1024 for ns per access (criterion also prints it as a throughput in
//! elements per second).

// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{MutDeviceMmio, MutDevicePio};
use vmkit_bus::{MmioBus, MmioRange, PioBus, PioRange};

const BATCH: usize = 1024;
const DEVICE_COUNTS: [usize; 3] = [1, 16, 256];

/// The device behind every range: counts accesses and keeps the last value written, so the
/// access has a real (if tiny) effect the optimiser cannot drop.
#[derive(Default)]
struct Counting {
    accesses: u64,
    last: u64,
}

impl Counting {
    fn touch(&mut self, offset: u64, data: &[u8]) {
        self.accesses = self.accesses.wrapping_add(1);
        self.last = offset ^ u64::from(data.first().copied().unwrap_or(0));
    }
}

impl MutDevicePio for Counting {
    fn pio_read(&mut self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.touch(u64::from(offset), &[]);
        data.fill(self.last as u8);
    }
    fn pio_write(&mut self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.touch(u64::from(offset), data);
    }
}

impl MutDeviceMmio for Counting {
    fn mmio_read(&mut self, _: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.touch(offset, &[]);
        data.fill(self.last as u8);
    }
    fn mmio_write(&mut self, _: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.touch(offset, data);
    }
}

/// A small deterministic xorshift so both buses get the same "random" address list.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `BATCH` addresses: device `i % n` in a shuffled order, at a random aligned offset inside it.
fn addresses(n: usize, base: u64, stride: u64, size: u64, align: u64) -> Vec<u64> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let mut order: Vec<u64> = (0..BATCH as u64).map(|i| i % n as u64).collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
        .into_iter()
        .map(|dev| base + dev * stride + (rng.next() % (size / align)) * align)
        .collect()
}

fn pio(c: &mut Criterion) {
    // Devices of 8 ports every 16 ports from 0x1000, like a row of UARTs; 1-byte accesses.
    let mut group = c.benchmark_group("pio");
    group.throughput(Throughput::Elements(BATCH as u64));
    for &n in &DEVICE_COUNTS {
        let bus = PioBus::new();
        let mut manager = IoManager::new();
        for i in 0..n {
            let device = Arc::new(Mutex::new(Counting::default()));
            let base = 0x1000 + 16 * i as u16;
            bus.insert(
                PioRange::new(base, 8).unwrap(),
                format!("dev{i}"),
                device.clone(),
            )
            .unwrap();
            manager
                .register_pio(
                    vm_device::bus::PioRange::new(PioAddress(base), 8).unwrap(),
                    device,
                )
                .unwrap();
        }
        let ports: Vec<u16> = addresses(n, 0x1000, 16, 8, 1)
            .into_iter()
            .map(|a| a as u16)
            .collect();
        let data = [0x5Au8];

        group.bench_with_input(BenchmarkId::new("vmkit-bus", n), &ports, |b, ports| {
            b.iter(|| {
                for &port in ports {
                    black_box(bus.write(black_box(port), &data));
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("vmkit-bus-handle", n),
            &ports,
            |b, ports| {
                let mut handle = bus.handle();
                b.iter(|| {
                    for &port in ports {
                        black_box(handle.write(black_box(port), &data));
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("vm-device-IoManager", n),
            &ports,
            |b, ports| {
                b.iter(|| {
                    for &port in ports {
                        let _ = black_box(manager.pio_write(PioAddress(black_box(port)), &data));
                    }
                })
            },
        );
    }
    group.finish();
}

fn mmio(c: &mut Criterion) {
    // 4 KiB devices every 8 KiB from 0xd000_0000, like PCI BARs; 4-byte aligned accesses.
    let mut group = c.benchmark_group("mmio");
    group.throughput(Throughput::Elements(BATCH as u64));
    for &n in &DEVICE_COUNTS {
        let bus = MmioBus::new();
        let mut manager = IoManager::new();
        for i in 0..n {
            let device = Arc::new(Mutex::new(Counting::default()));
            let base = 0xd000_0000 + 0x2000 * i as u64;
            bus.insert(
                MmioRange::new(base, 0x1000).unwrap(),
                format!("dev{i}"),
                device.clone(),
            )
            .unwrap();
            manager
                .register_mmio(
                    vm_device::bus::MmioRange::new(MmioAddress(base), 0x1000).unwrap(),
                    device,
                )
                .unwrap();
        }
        let addrs = addresses(n, 0xd000_0000, 0x2000, 0x1000, 4);
        let data = [0x5Au8, 0, 0, 0];

        group.bench_with_input(BenchmarkId::new("vmkit-bus", n), &addrs, |b, addrs| {
            b.iter(|| {
                for &addr in addrs {
                    black_box(bus.write(black_box(addr), &data));
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("vmkit-bus-handle", n),
            &addrs,
            |b, addrs| {
                let mut handle = bus.handle();
                b.iter(|| {
                    for &addr in addrs {
                        black_box(handle.write(black_box(addr), &data));
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("vm-device-IoManager", n),
            &addrs,
            |b, addrs| {
                b.iter(|| {
                    for &addr in addrs {
                        let _ = black_box(manager.mmio_write(MmioAddress(black_box(addr)), &data));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pio, mmio);
criterion_main!(benches);
