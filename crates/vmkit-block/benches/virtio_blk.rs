//! Request throughput of the virtio-blk model (no KVM): a driver thread queues 32 requests
//! of 4 KiB, rings the queue's eventfd and waits for the used ring; the device's I/O
//! thread parses them and the worker pool runs them on a RAM disk or a raw file (host
//! page cache, `cache=writeback`). Reported per request.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vm_memory::{Bytes, GuestAddress};
use vmkit_block::{BlockBackend, MemoryBackend, RawFile, RawOptions, VirtioBlk};

const DEPTH: u64 = 32;
const BLOCK: u64 = 4096;
const DISK: u64 = 64 << 20;

/// Queues DEPTH requests of `kind` at consecutive 4 KiB blocks from `*next`, waits for
/// all of them.
fn batch(b: &mut Bench, kind: u32, next: &mut u64) {
    for k in 0..DEPTH {
        let sector = (*next * BLOCK / 512) % (DISK / 512);
        *next += 1;
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let h = HEADER + 16 * k;
        b.mem().write_slice(&header, GuestAddress(h)).unwrap();
        let data = DATA + BLOCK * k;
        b.driver.add_chain(&[
            (h, 16, false),
            (data, BLOCK as u32, kind == T_IN),
            (STATUS + k, 1, true),
        ]);
    }
    b.notify.write(1).unwrap();
    b.driver.wait_used(DEPTH as u16);
}

fn requests(c: &mut Criterion) {
    let path = temp_image("bench", &[]);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(DISK)
        .unwrap();
    let backends: Vec<(&str, Arc<dyn BlockBackend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new(DISK as usize))),
        (
            "raw-file",
            Arc::new(RawFile::open(&path, RawOptions::default()).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("virtio-blk");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(DEPTH));
    for (name, backend) in backends {
        let mut b = Bench::start(VirtioBlk::new(backend), F_FLUSH);
        let mut next = 0;
        for (op, kind) in [("read", T_IN), ("write", T_OUT)] {
            group.bench_function(format!("{name}/4KiB-{op}-qd{DEPTH}"), |iter| {
                iter.iter(|| batch(&mut b, kind, &mut next))
            });
        }
        assert!(b.reset());
    }
    group.finish();
    let _ = std::fs::remove_file(path);
}

criterion_group!(benches, requests);
criterion_main!(benches);
