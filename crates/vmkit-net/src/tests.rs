//! Unit tests: the queues driven without a thread, through a mock backend; the device on
//! the PCI transport; a proptest of arbitrary rings.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use proptest::prelude::*;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::backend::{NetBackend, VNET_HDR_LEN};
use crate::device::testing;

const VERSION_1: u64 = 1 << 32;
const MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
const WRITE: u16 = 2;
const NEXT: u16 = 1;

#[derive(Default)]
struct MockBackend {
    hdr: usize,
    incoming: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    recv_calls: usize,
    block_tx: bool,
}

impl NetBackend for MockBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.block_tx {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.sent.push(frame.to_vec());
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_calls += 1;
        let frame = self
            .incoming
            .pop_front()
            .ok_or(io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }
    fn as_raw_fd(&self) -> RawFd {
        -1
    }
    fn vnet_hdr_len(&self) -> usize {
        self.hdr
    }
    fn describe(&self) -> String {
        "mock".into()
    }
}

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// The used ring's idx and entry `i` (id, len).
fn used(
    mem: &GuestMemoryMmap<()>,
    vq: &MockSplitQueue<GuestMemoryMmap<()>>,
    i: u64,
) -> (u16, u32, u32) {
    let base = vq.used_addr().0;
    let idx: u16 = mem.read_obj(GuestAddress(base + 2)).unwrap();
    let id: u32 = mem.read_obj(GuestAddress(base + 4 + 8 * i)).unwrap();
    let len: u32 = mem.read_obj(GuestAddress(base + 8 + 8 * i)).unwrap();
    (idx, id, len)
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn transmit_passes_the_header_and_frame_to_a_vnet_backend() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    // Header in one descriptor (NEEDS_CSUM, gso none, csum_start 34, offset 16), frame in two.
    let mut hdr = [0u8; 12];
    hdr[0] = 1;
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    hdr[10] = 0x77; // num_buffers from the guest: ignored
    mem.write_slice(&hdr, GuestAddress(0x8000)).unwrap();
    let f = frame(100, 1);
    mem.write_slice(&f[..40], GuestAddress(0x9000)).unwrap();
    mem.write_slice(&f[40..], GuestAddress(0xa000)).unwrap();
    tx.add_desc_chains(
        &[
            desc(0x8000, 12, NEXT, 1),
            desc(0x9000, 40, NEXT, 2),
            desc(0xa000, 60, 0, 0),
        ],
        0,
    )
    .unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        VERSION_1,
        true,
    );
    let mut backend = MockBackend {
        hdr: VNET_HDR_LEN,
        ..Default::default()
    };
    assert!(q.process_tx(&mem, &mut backend));
    assert_eq!(backend.sent.len(), 1);
    let sent = &backend.sent[0];
    let mut expected = hdr.to_vec();
    expected[10] = 0;
    expected.extend_from_slice(&f);
    assert_eq!(sent, &expected);
    assert_eq!(used(&mem, &tx, 0), (1, 0, 0));
}

#[test]
fn a_legacy_header_is_widened_for_the_tap_and_stripped_for_plain_backends() {
    for hdr_backend in [0, VNET_HDR_LEN] {
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let f = frame(64, 2);
        mem.write_slice(&[0u8; 10], GuestAddress(0x8000)).unwrap();
        mem.write_slice(&f, GuestAddress(0x800a)).unwrap();
        tx.add_desc_chains(&[desc(0x8000, 74, 0, 0)], 0).unwrap();
        // A legacy driver without MRG_RXBUF: 10-byte header.
        let mut q = testing::queues(
            rx.create_queue().unwrap(),
            tx.create_queue().unwrap(),
            0,
            true,
        );
        let mut backend = MockBackend {
            hdr: hdr_backend,
            ..Default::default()
        };
        q.process_tx(&mem, &mut backend);
        let mut expected = vec![0u8; hdr_backend];
        expected.extend_from_slice(&f);
        assert_eq!(backend.sent, [expected], "backend header {hdr_backend}");
    }
}

#[test]
fn receive_fills_one_buffer_with_header_and_frame() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    rx.add_desc_chains(&[desc(0x10000, 2048, WRITE, 0)], 0)
        .unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        VERSION_1,
        true,
    );
    let f = frame(200, 3);
    let mut tapframe = vec![0u8; 12];
    tapframe[0] = 2; // DATA_VALID
    tapframe.extend_from_slice(&f);
    let mut backend = MockBackend {
        hdr: VNET_HDR_LEN,
        ..Default::default()
    };
    backend.incoming.push_back(tapframe);
    assert!(q.process_rx(&mem, &mut backend));
    assert_eq!(used(&mem, &rx, 0), (1, 0, 212));
    let mut got = vec![0u8; 212];
    mem.read_slice(&mut got, GuestAddress(0x10000)).unwrap();
    assert_eq!(got[0], 2);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[12..], &f[..]);
    assert_eq!(
        testing::stats(&q)
            .rx_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn no_frame_is_lost_while_the_guest_has_no_buffer() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        0,
        true,
    );
    let mut backend = MockBackend::default();
    for seed in 0..3 {
        backend.incoming.push_back(frame(60, seed));
    }
    assert!(!q.process_rx(&mem, &mut backend));
    // One frame was read and waits; the backend is no longer polled.
    assert!(testing::pending(&q));
    assert!(!q.rx_polling);
    assert_eq!(backend.incoming.len(), 2);
    // Two buffers arrive: the waiting frame and the next one go in, in order.
    rx.add_desc_chains(
        &[desc(0x10000, 1514, WRITE, 0), desc(0x11000, 1514, WRITE, 0)],
        0,
    )
    .unwrap();
    q.rx_polling = true;
    assert!(q.process_rx(&mem, &mut backend));
    assert_eq!(used(&mem, &rx, 0), (2, 0, 70));
    assert_eq!(used(&mem, &rx, 1), (2, 1, 70));
    let mut got = vec![0u8; 60];
    mem.read_slice(&mut got, GuestAddress(0x1000a)).unwrap();
    assert_eq!(got, frame(60, 0));
    mem.read_slice(&mut got, GuestAddress(0x1100a)).unwrap();
    assert_eq!(got, frame(60, 1));
    assert!(!q.rx_polling, "out of buffers again with frame 2 waiting");
    assert!(testing::pending(&q));
    assert_eq!(backend.incoming.len(), 0);
}

#[test]
fn mergeable_buffers_carry_a_large_frame_in_several_chains() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    rx.add_desc_chains(
        &[desc(0x10000, 1000, WRITE, 0), desc(0x11000, 1000, WRITE, 0)],
        0,
    )
    .unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        MRG,
        true,
    );
    let f = frame(2500, 4);
    let mut backend = MockBackend::default();
    backend.incoming.push_back(f.clone());
    // 2512 bytes do not fit 2000: the chains go back and the frame waits.
    assert!(!q.process_rx(&mem, &mut backend));
    assert!(testing::pending(&q) && !q.rx_polling);
    assert_eq!(used(&mem, &rx, 0).0, 0);
    rx.add_desc_chains(&[desc(0x12000, 1000, WRITE, 0)], 2)
        .unwrap();
    q.rx_polling = true;
    assert!(q.process_rx(&mem, &mut backend));
    assert_eq!(used(&mem, &rx, 0), (3, 0, 1000));
    assert_eq!(used(&mem, &rx, 1), (3, 1, 1000));
    assert_eq!(used(&mem, &rx, 2), (3, 2, 512));
    let mut hdr = [0u8; 12];
    mem.read_slice(&mut hdr, GuestAddress(0x10000)).unwrap();
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3, "num_buffers");
    let mut got = vec![0u8; 2500];
    mem.read_slice(&mut got[..988], GuestAddress(0x1000c))
        .unwrap();
    mem.read_slice(&mut got[988..1988], GuestAddress(0x11000))
        .unwrap();
    mem.read_slice(&mut got[1988..], GuestAddress(0x12000))
        .unwrap();
    assert_eq!(got, f);
}

#[test]
fn without_mergeable_buffers_a_frame_too_large_is_dropped_and_the_buffer_kept() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    rx.add_desc_chains(&[desc(0x10000, 100, WRITE, 0)], 0)
        .unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        0,
        true,
    );
    let mut backend = MockBackend::default();
    backend.incoming.push_back(frame(500, 5));
    backend.incoming.push_back(frame(50, 6));
    assert!(q.process_rx(&mem, &mut backend));
    let stats = testing::stats(&q);
    assert_eq!(
        stats.rx_dropped.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(used(&mem, &rx, 0), (1, 0, 60));
}

/// Bad chains on either queue: not completed, the queues stop (`broken`, which the worker
/// turns into NEEDS_RESET), nothing reaches the backend, and a received frame is kept.
#[test]
fn malformed_chains_stop_the_queues_without_completing() {
    const INDIRECT: u16 = 4;
    let cases: [(&str, bool, Vec<RawDescriptor>); 9] = [
        ("tx outside memory", true, vec![desc(0x4000_0000, 74, 0, 0)]),
        ("tx huge length", true, vec![desc(0x8000, u32::MAX, 0, 0)]),
        (
            "tx zero length",
            true,
            vec![desc(0x8000, 12, NEXT, 1), desc(0x9000, 0, 0, 0)],
        ),
        (
            "tx device-writable (wrong direction)",
            true,
            vec![desc(0x8000, 74, WRITE, 0)],
        ),
        (
            "tx loop",
            true,
            vec![desc(0x8000, 12, NEXT, 1), desc(0x9000, 60, NEXT, 0)],
        ),
        (
            "rx outside memory",
            false,
            vec![desc(0x4000_0000, 2048, WRITE, 0)],
        ),
        (
            "rx read-only (wrong direction)",
            false,
            vec![desc(0x10000, 2048, 0, 0)],
        ),
        (
            "rx readable after writable",
            false,
            vec![
                desc(0x10000, 1024, WRITE | NEXT, 1),
                desc(0x11000, 1024, 0, 0),
            ],
        ),
        (
            "rx indirect table outside memory",
            false,
            vec![desc(0x4000_0000, 64, INDIRECT, 0)],
        ),
    ];
    for (what, tx_side, chain) in cases {
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let vq = if tx_side { &tx } else { &rx };
        vq.add_desc_chains(&chain, 0).unwrap();
        let mut q = testing::queues(
            rx.create_queue().unwrap(),
            tx.create_queue().unwrap(),
            VERSION_1,
            true,
        );
        let mut backend = MockBackend {
            hdr: VNET_HDR_LEN,
            ..Default::default()
        };
        backend.incoming.push_back(vec![0u8; 12 + 60]);
        assert!(!q.process_tx(&mem, &mut backend), "{what}");
        assert!(!q.process_rx(&mem, &mut backend), "{what}");
        assert!(testing::broken(&q), "{what}: the queues stop");
        assert_eq!(used(&mem, vq, 0).0, 0, "{what}: not completed");
        assert!(backend.sent.is_empty(), "{what}: nothing sent");
        if !tx_side {
            assert!(testing::pending(&q), "{what}: the frame is kept");
        }
        // Stopped: a good transmit chain after it is not served either.
        tx.add_desc_chains(&[desc(0x8000, 74, 0, 0)], 1).unwrap();
        assert!(!q.process_tx(&mem, &mut backend), "{what}");
        assert!(backend.sent.is_empty(), "{what}: stopped until a reset");
    }
    // avail idx far ahead of the device on the transmit queue.
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    mem.write_obj(1000u16, GuestAddress(tx.avail_addr().0 + 2))
        .unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        VERSION_1,
        true,
    );
    let mut backend = MockBackend::default();
    assert!(!q.process_tx(&mem, &mut backend));
    assert!(testing::broken(&q), "avail overrun stops the queues");
}

#[test]
fn link_down_drops_both_ways_as_qemu() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    rx.add_desc_chains(&[desc(0x10000, 2048, WRITE, 0)], 0)
        .unwrap();
    tx.add_desc_chains(&[desc(0x8000, 74, 0, 0)], 0).unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        0,
        false,
    );
    let mut backend = MockBackend::default();
    backend.incoming.push_back(frame(60, 7));
    assert!(!q.process_rx(&mem, &mut backend));
    assert!(backend.incoming.is_empty());
    assert_eq!(used(&mem, &rx, 0).0, 0, "no buffer used");
    assert!(q.process_tx(&mem, &mut backend));
    assert!(backend.sent.is_empty());
    assert_eq!(used(&mem, &tx, 0), (1, 0, 0));
}

#[test]
fn a_blocked_backend_keeps_the_chain_for_later() {
    let mem = memory();
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    tx.add_desc_chains(&[desc(0x8000, 74, 0, 0)], 0).unwrap();
    let mut q = testing::queues(
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        0,
        true,
    );
    let mut backend = MockBackend {
        block_tx: true,
        ..Default::default()
    };
    assert!(!q.process_tx(&mem, &mut backend));
    assert!(q.tx_blocked);
    assert_eq!(used(&mem, &tx, 0).0, 0);
    backend.block_tx = false;
    q.tx_blocked = false;
    assert!(q.process_tx(&mem, &mut backend));
    assert_eq!(backend.sent.len(), 1);
    assert_eq!(used(&mem, &tx, 0), (1, 0, 0));
}

mod transport {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use vmkit_pci::{PciDevice, RegionIndex};
    use vmkit_virtio::{common, VirtioPciBuilder, DEVICE_CFG_OFFSET};

    struct Line(AtomicBool);
    impl vmkit_hw::IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    #[test]
    fn config_shows_mac_and_link_and_set_link_interrupts() {
        let (wire, host) = UnixDatagram::pair().unwrap();
        let net = crate::VirtioNet::new(
            Box::new(crate::DatagramBackend::new(wire).unwrap()),
            crate::default_mac(1),
        )
        .unwrap();
        let link = net.link();
        let mem = Arc::new(memory());
        let line = Arc::new(Line(AtomicBool::new(false)));
        let mut dev = VirtioPciBuilder::new()
            .disable_legacy(true)
            .vectors(0)
            .intx(line.clone())
            .build(Box::new(net), mem.clone())
            .unwrap();
        let bar4 = RegionIndex::Bar(4);
        let read_cfg = |dev: &mut vmkit_virtio::VirtioPciDevice<_>| {
            let mut cfg = [0u8; 8];
            dev.region_read(bar4, DEVICE_CFG_OFFSET, &mut cfg);
            cfg
        };
        assert_eq!(read_cfg(&mut dev), [0x52, 0x54, 0, 0x12, 0x34, 0x57, 1, 0]);
        let rxq = MockSplitQueue::create(&*mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&*mem, GuestAddress(0x4000), 16);
        rxq.add_desc_chains(&[desc(0x10000, 2048, WRITE, 0)], 0)
            .unwrap();
        let w = |dev: &mut vmkit_virtio::VirtioPciDevice<_>, off: u64, v: u64, len: usize| {
            dev.region_write(bar4, off, &v.to_le_bytes()[..len])
        };
        w(&mut dev, common::DEVICE_STATUS, 3, 1);
        w(&mut dev, common::DRIVER_FEATURE_SELECT, 1, 4);
        w(&mut dev, common::DRIVER_FEATURE, 1, 4);
        w(&mut dev, common::DEVICE_STATUS, 11, 1);
        for (q, vq) in [(0u64, &rxq), (1, &txq)] {
            w(&mut dev, common::QUEUE_SELECT, q, 2);
            w(&mut dev, common::QUEUE_SIZE, 16, 2);
            w(&mut dev, common::QUEUE_DESC_LO, vq.desc_table_addr().0, 4);
            w(&mut dev, common::QUEUE_DRIVER_LO, vq.avail_addr().0, 4);
            w(&mut dev, common::QUEUE_DEVICE_LO, vq.used_addr().0, 4);
            w(&mut dev, common::QUEUE_ENABLE, 1, 2);
        }
        w(&mut dev, common::DEVICE_STATUS, 15, 1);
        // A frame from the host reaches the posted buffer.
        host.send(&frame(60, 9)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while used(&mem, &rxq, 0).0 != 1 {
            assert!(Instant::now() < deadline, "no receive completion");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(used(&mem, &rxq, 0), (1, 0, 72));
        while dev.isr() == 0 {
            assert!(Instant::now() < deadline, "no queue interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut isr = [0u8];
        dev.region_read(bar4, 0x1000, &mut isr);
        assert_eq!(isr, [1]);
        // Link down: status 0 and a configuration interrupt (ISR bit 1, INTx high).
        assert!(link.set_up(false));
        assert!(!link.set_up(false), "no change, no interrupt");
        assert_eq!(read_cfg(&mut dev)[6..], [0, 0]);
        assert!(line.0.load(Ordering::SeqCst));
        dev.region_read(bar4, 0x1000, &mut isr);
        assert_eq!(isr, [2]);
        assert!(link.set_up(true));
        assert_eq!(read_cfg(&mut dev)[6..], [1, 0]);
        // Reset stops the worker; the link handle stays usable.
        w(&mut dev, common::DEVICE_STATUS, 0, 1);
        assert!(link.set_up(false));
    }

    #[test]
    fn a_malformed_transmit_chain_sets_needs_reset_until_the_driver_resets() {
        let (wire, host) = UnixDatagram::pair().unwrap();
        host.set_nonblocking(true).unwrap();
        let net = crate::VirtioNet::new(
            Box::new(crate::DatagramBackend::new(wire).unwrap()),
            crate::default_mac(2),
        )
        .unwrap();
        let mem = Arc::new(memory());
        let line = Arc::new(Line(AtomicBool::new(false)));
        let mut dev = VirtioPciBuilder::new()
            .disable_legacy(true)
            .vectors(0)
            .intx(line.clone())
            .build(Box::new(net), mem.clone())
            .unwrap();
        let bar4 = RegionIndex::Bar(4);
        let w = |dev: &mut vmkit_virtio::VirtioPciDevice<_>, off: u64, v: u64, len: usize| {
            dev.region_write(bar4, off, &v.to_le_bytes()[..len])
        };
        let start = |dev: &mut vmkit_virtio::VirtioPciDevice<_>| {
            let rxq = MockSplitQueue::create(&*mem, GuestAddress(0x1000), 16);
            let txq = MockSplitQueue::create(&*mem, GuestAddress(0x4000), 16);
            w(dev, common::DEVICE_STATUS, 3, 1);
            w(dev, common::DRIVER_FEATURE_SELECT, 1, 4);
            w(dev, common::DRIVER_FEATURE, 1, 4);
            w(dev, common::DEVICE_STATUS, 11, 1);
            for (q, vq) in [(0u64, &rxq), (1, &txq)] {
                w(dev, common::QUEUE_SELECT, q, 2);
                w(dev, common::QUEUE_SIZE, 16, 2);
                w(dev, common::QUEUE_DESC_LO, vq.desc_table_addr().0, 4);
                w(dev, common::QUEUE_DRIVER_LO, vq.avail_addr().0, 4);
                w(dev, common::QUEUE_DEVICE_LO, vq.used_addr().0, 4);
                w(dev, common::QUEUE_ENABLE, 1, 2);
            }
            w(dev, common::DEVICE_STATUS, 15, 1);
            (rxq, txq)
        };
        let status = |dev: &mut vmkit_virtio::VirtioPciDevice<_>| {
            let mut s = [0u8];
            dev.region_read(bar4, common::DEVICE_STATUS, &mut s);
            s[0]
        };
        let (_rxq, txq) = start(&mut dev);
        // A transmit buffer outside guest memory.
        txq.add_desc_chains(&[desc(0x4000_0000, 74, 0, 0)], 0)
            .unwrap();
        w(&mut dev, 0x3000 + 4, 1, 2); // queue 1's doorbell
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&mut dev) & 0x40 == 0 {
            assert!(Instant::now() < deadline, "no NEEDS_RESET");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(status(&mut dev), 15 | 0x40);
        assert!(line.0.load(Ordering::SeqCst), "a configuration interrupt");
        let mut isr = [0u8];
        dev.region_read(bar4, 0x1000, &mut isr);
        assert_eq!(isr, [2]);
        assert_eq!(used(&mem, &txq, 0).0, 0, "not completed");
        // The driver cannot clear it; a reset does, and the device works again.
        w(&mut dev, common::DEVICE_STATUS, 15, 1);
        assert_eq!(status(&mut dev) & 0x40, 0x40);
        w(&mut dev, common::DEVICE_STATUS, 0, 1);
        assert_eq!(status(&mut dev), 0);
        let (_rxq, txq) = start(&mut dev);
        mem.write_slice(&[0u8; 12], GuestAddress(0x8000)).unwrap();
        mem.write_slice(&frame(60, 4), GuestAddress(0x800c))
            .unwrap();
        txq.add_desc_chains(&[desc(0x8000, 72, 0, 0)], 0).unwrap();
        w(&mut dev, 0x3000 + 4, 1, 2);
        let mut got = [0u8; 100];
        let n = loop {
            if let Ok(n) = host.recv(&mut got) {
                break n;
            }
            assert!(Instant::now() < deadline, "no frame after the reset");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(&got[..n], &frame(60, 4)[..]);
        w(&mut dev, common::DEVICE_STATUS, 0, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any descriptor table, avail ring and frames: no panic, no write outside guest
    /// memory (vm-memory refuses those), and every frame is delivered, dropped or waiting.
    #[test]
    fn arbitrary_rings_never_panic(
        descs in proptest::collection::vec(
            (0u64..0x12_0000, 0u32..0x2_0000, 0u16..8, 0u16..20), 1..16),
        // The mock lays the used ring 20 bytes after the avail ring: at most 8 heads.
        avail_heads in proptest::collection::vec(0u16..20, 0..8),
        avail_idx in any::<u16>(),
        frames in proptest::collection::vec(0usize..3000, 0..6),
        features in prop_oneof![Just(0u64), Just(MRG), Just(VERSION_1), Just(VERSION_1 | MRG)],
        backend_hdr in prop_oneof![Just(0usize), Just(VNET_HDR_LEN)],
        up in any::<bool>(),
    ) {
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        for vq in [&rx, &tx] {
            for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
                vq.desc_table().store(i as u16, desc(addr, len, flags, next)).unwrap();
            }
            let avail = vq.avail_addr().0;
            for (i, &head) in avail_heads.iter().enumerate() {
                mem.write_obj(head, GuestAddress(avail + 4 + 2 * i as u64)).unwrap();
            }
            mem.write_obj(avail_idx, GuestAddress(avail + 2)).unwrap();
        }
        let mut q = testing::queues(rx.create_queue().unwrap(), tx.create_queue().unwrap(), features, up);
        let mut backend = MockBackend { hdr: backend_hdr, ..Default::default() };
        for (i, &len) in frames.iter().enumerate() {
            backend.incoming.push_back(frame(len, i as u8));
        }
        q.process_tx(&mem, &mut backend);
        q.process_rx(&mem, &mut backend);
        q.rx_polling = true;
        q.process_rx(&mem, &mut backend);
        let stats = testing::stats(&q);
        let handled = stats.rx_frames.load(std::sync::atomic::Ordering::Relaxed)
            + stats.rx_dropped.load(std::sync::atomic::Ordering::Relaxed)
            + u64::from(testing::pending(&q))
            + backend.incoming.len() as u64;
        prop_assert_eq!(handled, frames.len() as u64);
        let used_idx: u16 = mem.read_obj(GuestAddress(rx.used_addr().0 + 2)).unwrap();
        prop_assert!(used_idx <= 16 || used_idx == 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of register accesses on the transport with virtio-net behind it (legacy
    /// and modern BARs, config space included, DRIVER_OK with whatever rings): no panic,
    /// and the device stops cleanly on drop.
    #[test]
    fn arbitrary_register_accesses_never_panic(
        ops in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), 0u64..0x4000, prop_oneof![Just(1usize), Just(2), Just(4)], any::<u32>()),
            1..48),
    ) {
        use std::os::unix::net::UnixDatagram;
        use vmkit_pci::{PciDevice, RegionIndex};
        let (wire, _host) = UnixDatagram::pair().unwrap();
        let net = crate::VirtioNet::new(Box::new(crate::DatagramBackend::new(wire).unwrap()), crate::DEFAULT_MAC).unwrap();
        let mem = std::sync::Arc::new(memory());
        let mut dev = vmkit_virtio::VirtioPciBuilder::new()
            .vectors(0)
            .build(Box::new(net), mem)
            .unwrap();
        for (legacy, write, offset, len, value) in ops {
            let (bar, offset) = if legacy { (RegionIndex::Bar(0), offset % 0x40) } else { (RegionIndex::Bar(4), offset) };
            if write {
                dev.region_write(bar, offset, &value.to_le_bytes()[..len]);
            } else {
                let mut buf = [0u8; 4];
                dev.region_read(bar, offset, &mut buf[..len]);
            }
        }
        drop(dev);
    }
}
