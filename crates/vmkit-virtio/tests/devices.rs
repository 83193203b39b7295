//! virtio-console both ways with input flow control, emergency writes, and bad descriptor
//! chains on both devices: a loop, a buffer outside guest memory, zero or huge lengths, the
//! wrong direction end in NEEDS_RESET with a configuration interrupt (never a panic, a hang
//! or a completion with made-up data), and the device works again after a reset.

mod common;

use common::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmkit_virtio::{Console, Rng, VirtioDevice, VirtioPciBuilder};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RX_BASE: u64 = 0x1000;
const TX_BASE: u64 = 0x4000;
const QSIZE: u16 = 16;

fn console(capacity: usize) -> (Harness, Sink, vmkit_virtio::ConsoleInput) {
    let sink = Sink::default();
    let dev = Console::with_input_capacity(sink.clone(), capacity).unwrap();
    let input = dev.input();
    let h = Harness::new(Box::new(dev), VirtioPciBuilder::new());
    (h, sink, input)
}

#[test]
fn console_transmits_guest_output() {
    let (mut h, sink, _input) = console(64);
    let mem = h.mem.clone();
    let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
    let tx = MockSplitQueue::create(&*mem, GuestAddress(TX_BASE), QSIZE);
    assert_eq!(h.negotiate(VERSION_1), ACK | DRIVER | FEATURES_OK);
    h.setup_mock(0, &rx, QSIZE);
    h.setup_mock(1, &tx, QSIZE);
    h.driver_ok();
    mem.write_slice(b"hello, ", GuestAddress(0x10000)).unwrap();
    mem.write_slice(b"world\n", GuestAddress(0x20000)).unwrap();
    // One chain of two readable descriptors.
    tx.add_desc_chains(&[desc(0x10000, 7, NEXT, 1), desc(0x20000, 6, 0, 0)], 0)
        .unwrap();
    h.notify(1);
    let s = sink.clone();
    wait_for("output", || s.bytes() == b"hello, world\n");
    let u = tx.used_addr();
    wait_for("used", || used_idx(&mem, u) == 1);
    assert_eq!(
        used_elem(&mem, u, 0),
        (0, 0),
        "tx: the device wrote nothing"
    );
}

#[test]
fn console_receives_host_input_with_flow_control() {
    let (mut h, _sink, input) = console(8);
    let room = EventFd::new(EFD_NONBLOCK).unwrap();
    input.set_room_notifier(room.try_clone().unwrap());
    let mem = h.mem.clone();
    let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
    let tx = MockSplitQueue::create(&*mem, GuestAddress(TX_BASE), QSIZE);
    h.negotiate(VERSION_1);
    h.setup_mock(0, &rx, QSIZE);
    h.setup_mock(1, &tx, QSIZE);
    h.driver_ok();

    // No receive buffer yet: 8 bytes fit, the other 12 are refused (not lost: the
    // chardev keeps them and offers them again on "room").
    let data: Vec<u8> = (0..20u8).collect();
    let mut sent = input.enqueue(&data);
    assert_eq!(sent, 8);
    assert_eq!(input.pending(), 8);
    assert!(room.read().is_err(), "no room signalled yet");

    // The guest posts a 5-byte buffer: it gets the first 5 bytes; room appears.
    rx.add_desc_chains(&[desc(0x30000, 5, WRITE, 0)], 0)
        .unwrap();
    h.notify(0);
    let u = rx.used_addr();
    wait_for("rx used 1", || used_idx(&mem, u) == 1);
    assert_eq!(used_elem(&mem, u, 0), (0, 5));
    let r = room.try_clone().unwrap();
    wait_for("room", || r.read().is_ok());

    let mut got = vec![0u8; 5];
    mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    // The chardev offers the rest while there is room.
    while sent < data.len() {
        let n = input.enqueue(&data[sent..]);
        sent += n;
        // The guest posts another buffer each round.
        let i = used_idx(&mem, u);
        rx.add_desc_chains(&[desc(0x30000 + 0x100 * u64::from(i), 64, WRITE, 0)], i)
            .unwrap();
        h.notify(0);
        wait_for("rx used", || used_idx(&mem, u) == i + 1);
        let (_, len) = used_elem(&mem, u, i);
        let mut more = vec![0u8; len as usize];
        mem.read_slice(&mut more, GuestAddress(0x30000 + 0x100 * u64::from(i)))
            .unwrap();
        got.extend(more);
    }
    // Whatever is still buffered arrives with one more buffer.
    if input.pending() > 0 {
        let i = used_idx(&mem, u);
        rx.add_desc_chains(&[desc(0x38000, 64, WRITE, 0)], i)
            .unwrap();
        h.notify(0);
        wait_for("last rx", || used_idx(&mem, u) == i + 1);
        let (_, len) = used_elem(&mem, u, i);
        let mut more = vec![0u8; len as usize];
        mem.read_slice(&mut more, GuestAddress(0x38000)).unwrap();
        got.extend(more);
    }
    assert_eq!(got, data, "every byte, in order");
    let line = h.line.clone();
    wait_for("rx interrupt", || line.level());
}

#[test]
fn console_input_waits_across_a_reset() {
    let (mut h, _sink, input) = console(64);
    let mem = h.mem.clone();
    assert_eq!(input.enqueue(b"early"), 5);
    let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
    let tx = MockSplitQueue::create(&*mem, GuestAddress(TX_BASE), QSIZE);
    h.negotiate(VERSION_1);
    h.setup_mock(0, &rx, QSIZE);
    h.setup_mock(1, &tx, QSIZE);
    // A buffer posted before DRIVER_OK is used once the device starts.
    rx.add_desc_chains(&[desc(0x30000, 16, WRITE, 0)], 0)
        .unwrap();
    h.driver_ok();
    let u = rx.used_addr();
    wait_for("rx", || used_idx(&mem, u) == 1);
    assert_eq!(used_elem(&mem, u, 0), (0, 5));
    h.set_status(0);
    assert_eq!(input.enqueue(b"late"), 4, "input is buffered while reset");
    assert_eq!(input.pending(), 4);
}

#[test]
fn console_config_and_emergency_write() {
    let (mut h, sink, _input) = console(64);
    assert_eq!(h.read(BAR4, 0x2004, 4), 1, "max_nr_ports");
    assert_eq!(h.read(BAR4, 0x2000, 4), 0, "cols, rows");
    assert_eq!(h.read(BAR4, 0x200c, 1), 0xff, "past the 12-byte config");
    let f = h.device_features();
    assert_eq!(f & 0b111, 1 << vmkit_virtio::VIRTIO_CONSOLE_F_EMERG_WRITE);
    h.write(BAR4, 0x2008, u64::from(b'!'), 4);
    assert_eq!(sink.bytes(), b"!");
    // The same register through the legacy BAR (config at 0x14 without MSI-X).
    h.legacy_write(0x14 + 8, u64::from(b'?'), 4);
    assert_eq!(sink.bytes(), b"!?");
}

#[test]
fn console_needs_both_queues() {
    let (mut h, _sink, _input) = console(64);
    let mem = h.mem.clone();
    let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
    h.negotiate(VERSION_1);
    h.setup_mock(0, &rx, QSIZE);
    h.driver_ok();
    assert_eq!(h.status() & NEEDS_RESET, NEEDS_RESET);
}

fn rng_harness() -> Harness {
    let dev: Box<dyn VirtioDevice<Mem>> = Box::new(Rng::with_source(|b: &mut [u8]| {
        b.fill(0x5a);
        Ok(())
    }));
    Harness::new(dev, VirtioPciBuilder::new())
}

/// How a chain ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Completed: (id, used length).
    Used(u32, u32),
    /// Not completed; the device set NEEDS_RESET and raised a configuration interrupt.
    NeedsReset,
}

/// Waits until the used ring at `used` has one entry or the device set NEEDS_RESET; for
/// the latter, checks that the configuration interrupt (ISR bit 1) came, that the chain
/// stays uncompleted, and that a reset clears NEEDS_RESET.
fn outcome(h: &mut Harness, used: GuestAddress) -> Outcome {
    let mem = h.mem.clone();
    wait_for("a used entry or NEEDS_RESET", || {
        used_idx(&mem, used) == 1 || h.dev.status() & NEEDS_RESET != 0
    });
    if used_idx(&mem, used) == 1 {
        assert_eq!(h.status() & NEEDS_RESET, 0);
        return Outcome::Used(used_elem(&mem, used, 0).0, used_elem(&mem, used, 0).1);
    }
    assert_eq!(h.dev.isr() & 2, 2, "a configuration interrupt");
    assert!(h.line.level(), "INTx raised for it");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(used_idx(&mem, used), 0, "the bad chain is not completed");
    h.set_status(0);
    assert_eq!(h.status(), 0, "a reset clears NEEDS_RESET");
    Outcome::NeedsReset
}

/// Runs one chain (descriptors at table slots 0..) through a fresh rng.
fn rng_one(descs: &[(u16, vmkit_virtio_test_desc::D)]) -> Outcome {
    let mut h = rng_harness();
    let mem = h.mem.clone();
    const D: u64 = 0x1000;
    const A: u64 = 0x2000;
    const U: u64 = 0x3000;
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, D, A, U);
    h.driver_ok();
    let raw: Vec<_> = descs.iter().map(|(i, d)| (*i, d.raw())).collect();
    publish(&mem, D, A, QSIZE, &raw, descs[0].0);
    h.notify(0);
    let result = outcome(&mut h, GuestAddress(U));
    if result == Outcome::NeedsReset {
        // After the reset the device serves a good request again.
        h.negotiate(VERSION_1);
        h.setup_queue(0, QSIZE, D, A, U);
        h.driver_ok();
        mem.write_obj(0u16, GuestAddress(A + 2)).unwrap();
        publish(&mem, D, A, QSIZE, &[(0, desc(0x10000, 4, WRITE, 0))], 0);
        h.notify(0);
        wait_for("the request after the reset", || {
            used_idx(&mem, GuestAddress(U)) == 1
        });
        assert_eq!(used_elem(&mem, GuestAddress(U), 0), (0, 4));
    }
    result
}

mod vmkit_virtio_test_desc {
    #[derive(Clone, Copy)]
    pub struct D(pub u64, pub u32, pub u16, pub u16);
    impl D {
        pub fn raw(self) -> virtio_queue::desc::RawDescriptor {
            super::desc(self.0, self.1, self.2, self.3)
        }
    }
}
use vmkit_virtio_test_desc::D;

#[test]
fn bad_chains_end_in_needs_reset_and_good_ones_complete() {
    use Outcome::*;
    // Control: two writable descriptors are filled.
    assert_eq!(
        rng_one(&[
            (0, D(0x10000, 8, WRITE | NEXT, 1)),
            (1, D(0x11000, 8, WRITE, 0))
        ]),
        Used(0, 16)
    );
    // Outside guest memory.
    assert_eq!(rng_one(&[(0, D(0x4000_0000, 64, WRITE, 0))]), NeedsReset);
    // Straddling the end of memory.
    assert_eq!(rng_one(&[(0, D((1 << 20) - 8, 64, WRITE, 0))]), NeedsReset);
    // Zero length.
    assert_eq!(rng_one(&[(0, D(0x10000, 0, WRITE, 0))]), NeedsReset);
    // Huge length: outside memory as a whole.
    assert_eq!(rng_one(&[(0, D(0x10000, u32::MAX, WRITE, 0))]), NeedsReset);
    // Wrong direction: device-readable only, nothing to fill.
    assert_eq!(rng_one(&[(0, D(0x10000, 64, 0, 0))]), NeedsReset);
    // A device-readable descriptor after a writable one.
    assert_eq!(
        rng_one(&[
            (0, D(0x10000, 8, WRITE | NEXT, 1)),
            (1, D(0x11000, 8, 0, 0))
        ]),
        NeedsReset
    );
    // A loop 0 -> 1 -> 0: more descriptors than the queue holds.
    assert_eq!(
        rng_one(&[
            (0, D(0x10000, 8, WRITE | NEXT, 1)),
            (1, D(0x11000, 8, WRITE | NEXT, 0)),
        ]),
        NeedsReset
    );
    // A descriptor pointing at itself.
    assert_eq!(rng_one(&[(3, D(0x10000, 8, WRITE | NEXT, 3))]), NeedsReset);
    // next out of the table.
    assert_eq!(
        rng_one(&[(0, D(0x10000, 8, WRITE | NEXT, 200))]),
        NeedsReset
    );
    // An indirect table outside memory / with a bad length.
    assert_eq!(rng_one(&[(0, D(0x4000_0000, 32, 4, 0))]), NeedsReset);
    assert_eq!(rng_one(&[(0, D(0x10000, 17, 4, 0))]), NeedsReset);
}

#[test]
fn a_corrupt_avail_ring_ends_in_needs_reset_without_hanging_the_worker() {
    let mut h = rng_harness();
    let mem = h.mem.clone();
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, 0x1000, 0x2000, 0x3000);
    h.driver_ok();
    // avail.idx claims 1000 entries in a 16-entry ring.
    mem.write_obj(1000u16, GuestAddress(0x2002)).unwrap();
    h.notify(0);
    assert_eq!(outcome(&mut h, GuestAddress(0x3000)), Outcome::NeedsReset);
    // A head index out of range.
    mem.write_obj(0u16, GuestAddress(0x2002)).unwrap();
    h.negotiate(VERSION_1);
    h.setup_queue(0, QSIZE, 0x1000, 0x2000, 0x3000);
    h.driver_ok();
    mem.write_obj(40u16, GuestAddress(0x2004)).unwrap(); // head 40 >= size
    mem.write_obj(1u16, GuestAddress(0x2002)).unwrap();
    h.notify(0);
    assert_eq!(outcome(&mut h, GuestAddress(0x3000)), Outcome::NeedsReset);
    assert!(!h.dev.is_active());
}

#[test]
fn console_bad_chains_end_in_needs_reset_on_both_queues() {
    let (mut h, sink, input) = console(64);
    let mem = h.mem.clone();
    let start = |h: &mut Harness| {
        let rx = MockSplitQueue::create(&*mem, GuestAddress(RX_BASE), QSIZE);
        let tx = MockSplitQueue::create(&*mem, GuestAddress(TX_BASE), QSIZE);
        h.negotiate(VERSION_1);
        h.setup_mock(0, &rx, QSIZE);
        h.setup_mock(1, &tx, QSIZE);
        h.driver_ok();
        (rx, tx)
    };
    // tx: a buffer outside guest memory.
    let (_rx, tx) = start(&mut h);
    tx.add_desc_chains(&[desc(0x4000_0000, 16, 0, 0)], 0)
        .unwrap();
    h.notify(1);
    assert_eq!(outcome(&mut h, tx.used_addr()), Outcome::NeedsReset);
    assert!(sink.bytes().is_empty());
    // tx: a device-writable buffer (wrong direction).
    let (_rx, tx) = start(&mut h);
    tx.add_desc_chains(&[desc(0x30000, 16, WRITE, 0)], 0)
        .unwrap();
    h.notify(1);
    assert_eq!(outcome(&mut h, tx.used_addr()), Outcome::NeedsReset);
    // rx: a buffer the device may not write (read-only): the byte waits.
    let (rx, _tx) = start(&mut h);
    rx.add_desc_chains(&[desc(0x30000, 16, 0, 0)], 0).unwrap();
    input.enqueue(b"x");
    assert_eq!(outcome(&mut h, rx.used_addr()), Outcome::NeedsReset);
    assert_eq!(input.pending(), 1, "the byte waits for a usable buffer");
    // rx: a zero-length buffer.
    let (rx, _tx) = start(&mut h);
    rx.add_desc_chains(&[desc(0x30000, 0, WRITE, 0)], 0)
        .unwrap();
    h.notify(0);
    assert_eq!(outcome(&mut h, rx.used_addr()), Outcome::NeedsReset);
    // After a reset a good buffer takes the byte.
    let (rx, _tx) = start(&mut h);
    rx.add_desc_chains(&[desc(0x30000, 16, WRITE, 0)], 0)
        .unwrap();
    h.notify(0);
    assert_eq!(outcome(&mut h, rx.used_addr()), Outcome::Used(0, 1));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x30000)).unwrap(), b'x');
}
