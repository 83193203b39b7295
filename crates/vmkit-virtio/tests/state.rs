//! Transport state: pause, save, restore into a new transport on the same guest memory,
//! resume; no request lost or repeated, refusals for a state of another device.

mod common;

use std::sync::Arc;

use common::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmkit_hw::RecordingLine;
use vmkit_pci::{PciDevice, RegionIndex};
use vmkit_virtio::{Console, Rng, VirtioPciBuilder, VirtioPciState};

const RX_BASE: u64 = 0x1000;
const TX_BASE: u64 = 0x4000;
const QSIZE: u16 = 16;

fn console_on(mem: &Mem, sink: Sink, msi: Arc<RecordingMsi>) -> Dev {
    VirtioPciBuilder::new()
        .intx(Arc::new(RecordingLine::new()))
        .msi(msi)
        .build(Box::new(Console::new(sink).unwrap()), mem.clone())
        .unwrap()
}

#[test]
fn a_paused_console_is_restored_elsewhere_and_goes_on_with_the_next_chain() {
    let sink = Sink::default();
    let msi = Arc::new(RecordingMsi::default());
    let mem = memory(1 << 20);
    let mut h = Harness {
        dev: console_on(&mem, sink.clone(), msi.clone()),
        mem: mem.clone(),
        line: Arc::new(RecordingLine::new()),
        msi,
    };
    let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
    let tx = MockSplitQueue::create(&*mem, GuestAddress(TX_BASE), QSIZE);
    h.negotiate(VERSION_1);
    h.setup_mock(0, &rx, QSIZE);
    h.setup_mock(1, &tx, QSIZE);
    h.enable_msix(3);
    h.common_write(vmkit_virtio::common::QUEUE_SELECT, 1, 2);
    h.common_write(vmkit_virtio::common::QUEUE_MSIX_VECTOR, 2, 2);
    // BAR4 placed and memory decode on, as firmware leaves it.
    h.cfg_write(0x20, 0xfe00_000c, 4);
    h.cfg_write(0x04, 0x6, 2);
    h.driver_ok();
    mem.write_slice(b"one\n", GuestAddress(0x10000)).unwrap();
    tx.add_desc_chains(&[desc(0x10000, 4, 0, 0)], 0).unwrap();
    h.notify(1);
    let u = tx.used_addr();
    wait_for("the first chain", || used_idx(&mem, u) == 1);

    h.dev.pause().unwrap();
    assert!(h.dev.is_paused());
    // Made available while the device is stopped: it waits in the ring.
    mem.write_slice(b"two\n", GuestAddress(0x20000)).unwrap();
    tx.add_desc_chains(&[desc(0x20000, 4, 0, 0)], 1).unwrap();
    h.notify(1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(used_idx(&mem, u), 1);
    let state = h.dev.state().unwrap();
    assert!(state.active);
    assert_eq!(
        (state.queues[1].next_avail, state.queues[1].next_used),
        (1, 1)
    );
    let state: VirtioPciState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

    // The destination: the same guest memory (as migrated), a new transport and device.
    let sink2 = Sink::default();
    let msi2 = Arc::new(RecordingMsi::default());
    let mut dest = console_on(&mem, sink2.clone(), msi2.clone());
    dest.restore(&state).unwrap();
    assert!(dest.is_active() && dest.is_paused() && dest.msix_enabled());
    assert_eq!(dest.status(), h.dev.status());
    assert_eq!(
        dest.config().bar_mapping(RegionIndex::Bar(4)),
        h.dev.config().bar_mapping(RegionIndex::Bar(4))
    );
    assert_eq!(
        msi2.routes.lock().unwrap().len(),
        3,
        "every unmasked vector's route is reported to the machine"
    );
    dest.resume().unwrap();
    wait_for("the second chain on the destination", || {
        used_idx(&mem, u) == 2
    });
    assert_eq!(
        sink2.bytes(),
        b"two\n",
        "the destination sends the new chain only"
    );
    assert_eq!(sink.bytes(), b"one\n", "the source sent nothing more");
    wait_for("the used-buffer interrupt on vector 2", || {
        msi2.count(2) >= 1
    });

    // A state of another device type is refused and changes nothing.
    let mut rng = VirtioPciBuilder::new()
        .build(Box::new(Rng::new()), mem.clone())
        .unwrap();
    let err = rng.restore(&state).unwrap_err().to_string();
    assert!(err.contains("device type 3"), "{err}");
    assert!(!rng.is_active());
    let mut old = state.clone();
    old.version = 0;
    let err = console_on(&mem, Sink::default(), Arc::default())
        .restore(&old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 0"), "{err}");
}

#[test]
fn an_inactive_device_round_trips_its_configuration() {
    let mem = memory(1 << 20);
    let mut a = Harness::new(Box::new(Rng::new()), VirtioPciBuilder::new());
    a.negotiate(VERSION_1);
    a.cfg_write(0x3c, 11, 1);
    let state = a.dev.state().unwrap();
    assert!(!state.active);
    let mut b = VirtioPciBuilder::new()
        .build(Box::new(Rng::new()), mem)
        .unwrap();
    b.restore(&state).unwrap();
    assert_eq!(b.status(), ACK | DRIVER | FEATURES_OK);
    assert_eq!(b.acked_features(), Some(VERSION_1));
    assert_eq!(b.config().byte(0x3c), 11);
    assert!(!b.is_paused());
}
