//! Input flow control between the VMM and a guest that reads slower than input arrives:
//! the VMM offers bytes with `enqueue_input`, keeps what was not accepted, and waits for
//! the input-room line's rising edge before offering more. No byte may be lost.

mod common;

use common::Bench;
use vmkit_hw::Clock;
use vmkit_serial::regs::*;

/// Deterministic pseudo-random bytes (xorshift64*), so a lost or reordered byte shows.
fn test_data(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// The VMM side: reads "stdin" in chunks, offers them to the UART and, when the UART is
/// full, sleeps until the input-room line rises (event-driven, no polling).
struct Vmm {
    input: Vec<u8>,
    read_pos: usize,
    pending: Vec<u8>,
    waiting_for_edge: Option<u64>,
    times_blocked: usize,
    chunk: usize,
}

impl Vmm {
    fn new(input: Vec<u8>) -> Self {
        Self {
            input,
            read_pos: 0,
            pending: Vec::new(),
            waiting_for_edge: None,
            times_blocked: 0,
            chunk: 1,
        }
    }

    fn step(&mut self, bench: &mut Bench) {
        if let Some(edges) = self.waiting_for_edge {
            if bench.room.rising_edges() == edges {
                return; // still asleep
            }
            self.waiting_for_edge = None;
        }
        if self.pending.is_empty() && self.read_pos < self.input.len() {
            // Varying read sizes, like a terminal delivering pastes and keystrokes.
            self.chunk = self.chunk % 61 + 7;
            let end = (self.read_pos + self.chunk).min(self.input.len());
            self.pending
                .extend_from_slice(&self.input[self.read_pos..end]);
            self.read_pos = end;
        }
        if self.pending.is_empty() {
            return;
        }
        let accepted = bench.uart.enqueue_input(&self.pending);
        self.pending.drain(..accepted);
        if !self.pending.is_empty() {
            assert_eq!(bench.uart.input_room(), 0, "partial accept means full");
            assert!(!bench.room.level(), "the room line is low while full");
            self.times_blocked += 1;
            self.waiting_for_edge = Some(bench.room.rising_edges());
        }
    }

    fn done(&self) -> bool {
        self.read_pos == self.input.len() && self.pending.is_empty()
    }
}

#[test]
fn sixty_four_kib_reach_a_slow_interrupt_driven_guest_in_order() {
    let input = test_data(64 * 1024, 0x1234_5678_9ABC_DEF0);
    let mut bench = Bench::new();
    // Guest: 115200 8N1, FIFOs with trigger 14, receive interrupts, OUT2.
    bench.outb(LCR, LCR_DLAB | 0x03);
    bench.outb(DLL, 1);
    bench.outb(DLM, 0);
    bench.outb(LCR, 0x03);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_TRIGGER_14);
    bench.outb(IER, IER_ERBFI | IER_ELSI);
    bench.outb(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);

    let mut vmm = Vmm::new(input.clone());
    let mut received = Vec::with_capacity(input.len());
    let mut timeouts = 0;
    let mut steps = 0u64;
    while received.len() < input.len() {
        steps += 1;
        assert!(steps < 2_000_000, "stalled at {} bytes", received.len());
        vmm.step(&mut bench);

        // 20 us per step; the VMM's timer fires when the UART's deadline passes.
        bench.clock.advance(20_000);
        if let Some(deadline) = bench.uart.next_deadline_ns() {
            if deadline <= bench.clock.now_ns() {
                bench.uart.update();
            }
        }

        // The slow guest: runs every 4th step and takes at most 3 bytes per interrupt.
        if steps % 4 != 0 || !bench.irq.level() {
            continue;
        }
        match bench.inb(IIR_FCR) {
            0xC4 => {}
            0xCC => timeouts += 1,
            other => panic!("unexpected IIR {other:#04x}"),
        }
        for _ in 0..3 {
            if bench.inb(LSR) & LSR_DR == 0 {
                break;
            }
            received.push(bench.inb(RBR_THR));
        }
        assert_eq!(bench.inb(LSR) & LSR_OE, 0, "never an overrun");
    }
    assert!(vmm.done());
    assert!(received == input, "bytes lost or reordered");
    assert!(vmm.times_blocked > 1000, "the guest was the bottleneck");
    assert!(
        timeouts > 0,
        "the tail arrived through the character timeout"
    );
    assert_eq!(bench.uart.rx_fifo_len(), 0);
}

#[test]
fn sixty_four_kib_reach_a_polling_guest_in_16450_mode() {
    // Without FIFOs RBR holds a single byte; the VMM must still not lose any.
    let input = test_data(64 * 1024, 0x0F0F_1234_5555_AAAA);
    let mut bench = Bench::new();
    let mut vmm = Vmm::new(input.clone());
    let mut received = Vec::with_capacity(input.len());
    let mut steps = 0u64;
    while received.len() < input.len() {
        steps += 1;
        assert!(steps < 1_000_000, "stalled at {} bytes", received.len());
        vmm.step(&mut bench);
        if steps % 3 == 0 && bench.inb(LSR) & LSR_DR != 0 {
            received.push(bench.inb(RBR_THR));
        }
    }
    assert!(received == input, "bytes lost or reordered");
    assert!(vmm.times_blocked > 1000);
    assert_eq!(
        bench.uart.next_deadline_ns(),
        None,
        "no timeout without FIFOs"
    );
}

#[test]
fn the_room_line_rises_whenever_room_reappears() {
    let mut bench = Bench::new();
    assert!(bench.room.level(), "room from the start");
    bench.outb(IIR_FCR, FCR_ENABLE);
    assert_eq!(bench.uart.enqueue_input(&[7; 20]), 16);
    assert!(!bench.room.level());
    let edges = bench.room.rising_edges();

    bench.inb(RBR_THR);
    assert!(bench.room.level(), "a guest read made room");
    assert_eq!(bench.room.rising_edges(), edges + 1);
    assert_eq!(bench.uart.enqueue_input(&[8; 5]), 1);
    assert!(!bench.room.level());

    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
    assert_eq!(
        bench.room.rising_edges(),
        edges + 2,
        "the guest cleared the FIFO"
    );

    bench.outb(MCR, MCR_LOOP);
    assert!(!bench.room.level(), "loopback disconnects the input");
    assert_eq!(bench.uart.enqueue_input(b"held"), 0);
    bench.outb(MCR, 0);
    assert_eq!(bench.room.rising_edges(), edges + 3, "leaving loopback");
    assert_eq!(bench.uart.enqueue_input(b"held"), 4);
}
