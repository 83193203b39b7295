//! Dispatch from several threads at once, with exact counts afterwards.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use common::Counting;
use vmkit_bus::{Dispatch, MmioBus, MmioRange, PioBus, PioRange};

const THREADS: usize = 4;
const PER_THREAD: u64 = 20_000;

/// Thread `t` does PER_THREAD accesses; every third one is a read.
fn is_read(i: u64) -> bool {
    i % 3 == 0
}

fn expected_reads() -> u64 {
    (0..PER_THREAD).filter(|&i| is_read(i)).count() as u64
}

#[test]
fn threads_on_different_devices() {
    let bus = PioBus::new();
    let devices: Vec<Arc<Mutex<Counting>>> = (0..THREADS)
        .map(|_| Arc::new(Mutex::new(Counting::default())))
        .collect();
    for (t, device) in devices.iter().enumerate() {
        let base = 0x100 + 8 * t as u16;
        bus.insert(
            PioRange::new(base, 8).unwrap(),
            format!("dev{t}"),
            device.clone(),
        )
        .unwrap();
    }
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let bus = bus.clone();
            let start = start.clone();
            thread::spawn(move || {
                // Half the threads use a handle, half the bus itself: both paths count alike.
                let mut handle = (t % 2 == 0).then(|| bus.handle());
                start.wait();
                for i in 0..PER_THREAD {
                    let port = 0x100 + 8 * t as u16 + (i % 8) as u16;
                    let mut data = [0u8; 1];
                    let result = match (&mut handle, is_read(i)) {
                        (Some(h), true) => h.read(port, &mut data),
                        (Some(h), false) => h.write(port, &data),
                        (None, true) => bus.read(port, &mut data),
                        (None, false) => bus.write(port, &data),
                    };
                    assert_eq!(result, Dispatch::Handled);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let reads = expected_reads();
    let writes = PER_THREAD - reads;
    let stats = bus.stats();
    for (t, device) in devices.iter().enumerate() {
        let device = device.lock().unwrap();
        assert_eq!((device.reads, device.writes), (reads, writes), "device {t}");
        assert_eq!(
            (stats.ranges[t].reads, stats.ranges[t].writes),
            (reads, writes)
        );
    }
    let total = THREADS as u64 * PER_THREAD;
    assert_eq!((stats.accesses, stats.unassigned), (total, 0));
}

#[test]
fn threads_on_the_same_device() {
    let bus = MmioBus::new();
    let device = Arc::new(Mutex::new(Counting::default()));
    bus.insert(
        MmioRange::new(0xfee0_0000, 0x1000).unwrap(),
        "shared",
        device.clone(),
    )
    .unwrap();
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let bus = bus.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut handle = (t % 2 == 1).then(|| bus.handle());
                start.wait();
                for i in 0..PER_THREAD {
                    let addr = 0xfee0_0000 + (i % 0x400) * 4;
                    let mut data = [0u8; 4];
                    let result = match (&mut handle, is_read(i)) {
                        (Some(h), true) => h.read(addr, &mut data),
                        (Some(h), false) => h.write(addr, &data),
                        (None, true) => bus.read(addr, &mut data),
                        (None, false) => bus.write(addr, &data),
                    };
                    assert_eq!(result, Dispatch::Handled);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let reads = THREADS as u64 * expected_reads();
    let writes = THREADS as u64 * PER_THREAD - reads;
    let device = device.lock().unwrap();
    assert_eq!((device.reads, device.writes), (reads, writes));
    let stats = bus.stats();
    assert_eq!(
        (stats.ranges[0].reads, stats.ranges[0].writes),
        (reads, writes)
    );
    assert_eq!((stats.reads, stats.writes), (reads, writes));
}

#[test]
fn more_handles_than_counter_shards_still_count_exactly() {
    // Each range has 15 shards a handle can own; the rest share one with atomic adds.
    const HANDLES: usize = 24;
    const EACH: u64 = 2_000;
    let bus = PioBus::new();
    let device = Arc::new(Mutex::new(Counting::default()));
    bus.insert(PioRange::new(0x80, 1).unwrap(), "post", device.clone())
        .unwrap();
    let handles: Vec<_> = (0..HANDLES).map(|_| bus.handle()).collect();
    let workers: Vec<_> = handles
        .into_iter()
        .map(|mut handle| {
            thread::spawn(move || {
                for _ in 0..EACH {
                    handle.write(0x80, &[0]);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let total = HANDLES as u64 * EACH;
    assert_eq!(device.lock().unwrap().writes, total);
    assert_eq!(bus.stats().ranges[0].writes, total);

    // Dropped handles gave their shards back: new handles keep counting exactly.
    let mut again = bus.handle();
    again.write(0x80, &[0]);
    assert_eq!(bus.stats().ranges[0].writes, total + 1);
}

#[test]
fn dispatch_while_ranges_come_and_go() {
    let bus = PioBus::new();
    let stable = Arc::new(Mutex::new(Counting::default()));
    let flapping = Arc::new(Mutex::new(Counting::default()));
    bus.insert(PioRange::new(0x60, 1).unwrap(), "stable", stable.clone())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flapping_handled = Arc::new(AtomicU64::new(0));

    let writer = {
        let bus = bus.clone();
        let stop = stop.clone();
        let flapping = flapping.clone();
        thread::spawn(move || {
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                bus.insert(
                    PioRange::new(0x64, 1).unwrap(),
                    "flapping",
                    flapping.clone(),
                )
                .unwrap();
                bus.remove(0x64).unwrap();
                cycles += 1;
            }
            cycles
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            let handled = flapping_handled.clone();
            thread::spawn(move || {
                let mut handle = bus.handle();
                for _ in 0..PER_THREAD {
                    assert_eq!(handle.write(0x60, &[1]), Dispatch::Handled);
                    let mut data = [0u8; 1];
                    match handle.read(0x64, &mut data) {
                        Dispatch::Handled => {
                            assert_eq!(data, [0]);
                            handled.fetch_add(1, Ordering::Relaxed);
                        }
                        Dispatch::Unassigned => assert_eq!(data, [0xFF]),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let cycles = writer.join().unwrap();
    assert!(cycles > 0);
    assert_eq!(stable.lock().unwrap().writes, 2 * PER_THREAD);
    assert_eq!(
        flapping.lock().unwrap().reads,
        flapping_handled.load(Ordering::Relaxed)
    );
    let stats = bus.stats();
    assert_eq!(
        stats.ranges_named("stable").next().unwrap().writes,
        2 * PER_THREAD
    );
    assert_eq!(stats.writes, 2 * PER_THREAD);
}
