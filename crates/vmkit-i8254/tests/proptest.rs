//! Property tests: no panic on any access sequence, and invariants that must always hold.

use std::sync::Arc;

use proptest::prelude::*;
use vmkit_hw::{Clock, ManualClock, RecordingLine};
use vmkit_i8254::{
    ns_to_ticks, ticks_to_ns, Pit, PIT_CONTROL_PORT, PIT_COUNTER0_PORT, PIT_COUNTER2_PORT,
    SYSTEM_CONTROL_PORT_B,
};

type TestPit = Pit<Arc<RecordingLine>, ManualClock>;

#[derive(Debug, Clone)]
enum Op {
    Read { port: u16, len: usize },
    Write { port: u16, data: Vec<u8> },
    Advance(u64),
    Update,
    Reset,
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        6 => 0x40u16..=0x43,
        2 => Just(SYSTEM_CONTROL_PORT_B),
        1 => 0x3Cu16..=0x64,
        1 => any::<u16>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (port(), 0usize..=9).prop_map(|(port, len)| Op::Read { port, len }),
        5 => (port(), prop::collection::vec(any::<u8>(), 0..=9))
            .prop_map(|(port, data)| Op::Write { port, data }),
        // Counter-sized control words and counts are likelier to make things happen.
        2 => (0u8..=3, 1u8..=3, 0u8..=7, any::<bool>(), any::<u16>()).prop_map(
            |(counter, rw, mode, bcd, count)| Op::Write {
                port: PIT_CONTROL_PORT,
                data: vec![(counter << 6) | (rw << 4) | (mode << 1) | u8::from(bcd)],
            }
            .with_count(counter, count)
        ),
        4 => prop_oneof![0u64..2_000, 0u64..2_000_000, 0u64..200_000_000].prop_map(Op::Advance),
        3 => Just(Op::Update),
        1 => Just(Op::Reset),
    ]
}

impl Op {
    /// Appends a count to a control word op as a second write (kept as one op for shrinking).
    fn with_count(self, counter: u8, count: u16) -> Op {
        match self {
            Op::Write { port, mut data } if counter < 3 => {
                // Encoded as: control word, then LSB and MSB for the counter's port; the
                // harness splits it (see `apply`).
                data.extend_from_slice(&count.to_le_bytes());
                data.push(counter);
                Op::Write { port, data }
            }
            other => other,
        }
    }
}

/// What the harness knows about latched status bytes, to tell status reads from count reads.
#[derive(Default)]
struct Shadow {
    status_latched: [bool; 3],
}

impl Shadow {
    fn wrote(&mut self, port: u16, value: u8) {
        if port != PIT_CONTROL_PORT {
            return;
        }
        let select = usize::from(value >> 6);
        if select == 3 {
            for i in 0..3 {
                if value & (2 << i) != 0 && value & 0x10 == 0 {
                    self.status_latched[i] = true;
                }
            }
        } else if value & 0x30 != 0 {
            self.status_latched[select] = false;
        }
    }
}

fn port_at(port: u16, index: usize) -> Option<u16> {
    u16::try_from(index).ok().and_then(|i| port.checked_add(i))
}

fn is_bcd_byte(byte: u8) -> bool {
    byte >> 4 <= 9 && byte & 0xF <= 9
}

fn check_invariants(pit: &TestPit) {
    for i in 0..3 {
        let info = pit.counter_info(i).expect("counters 0-2 exist");
        assert!(info.mode <= 5);
        if info.bcd {
            let [lsb, msb] = info.count.to_le_bytes();
            assert!(
                is_bcd_byte(lsb) && is_bcd_byte(msb),
                "BCD count {:#06x}",
                info.count
            );
        }
        assert_eq!(info.status >> 7 == 1, info.out, "status OUT bit");
        assert_eq!(info.status & 1 == 1, info.bcd, "status BCD bit");
        assert_ne!(info.status & 0x30, 0, "status RW bits are never 00");
    }
    let info2 = pit.counter_info(2).expect("counter 2");
    assert_eq!(info2.gate, pit.gate2());
    // A deadline is never later than the next rising edge.
    if let Some(rise) = pit.next_rising_edge_ns() {
        let deadline = pit.next_deadline_ns().expect("a rising edge is a change");
        assert!(deadline <= rise);
    }
}

fn apply(
    pit: &mut TestPit,
    clock: &ManualClock,
    irq0: &RecordingLine,
    shadow: &mut Shadow,
    op: &Op,
) {
    match op {
        Op::Read { port, len } => {
            let mut buf = vec![0u8; *len];
            pit.read_port(*port, &mut buf);
            let out2 = pit.counter_info(2).map(|i| i.out).unwrap_or(false);
            for (index, byte) in buf.iter().enumerate() {
                let Some(p) = port_at(*port, index) else {
                    assert_eq!(*byte, 0xFF);
                    continue;
                };
                match p {
                    0x40..=0x42 => {
                        let i = usize::from(p - PIT_COUNTER0_PORT);
                        if std::mem::take(&mut shadow.status_latched[i]) {
                            assert_ne!(byte & 0x30, 0, "a status byte has RW bits");
                        } else if pit.counter_info(i).map(|c| c.bcd).unwrap_or(false) {
                            assert!(is_bcd_byte(*byte), "BCD count byte {byte:#04x}");
                        }
                    }
                    SYSTEM_CONTROL_PORT_B => {
                        assert_eq!(byte & 0xC0, 0);
                        assert_eq!(byte & 0x20 != 0, out2, "port 0x61 bit 5 is OUT2");
                    }
                    _ => assert_eq!(*byte, 0xFF, "port {p:#x} is not the PIT's"),
                }
            }
        }
        Op::Write { port, data } => {
            if *port == PIT_CONTROL_PORT && data.len() == 4 && data[3] < 3 {
                // Control word plus count (see `Op::with_count`).
                let counter_port = PIT_COUNTER0_PORT + u16::from(data[3]);
                pit.write_port(*port, &data[..1]);
                shadow.wrote(*port, data[0]);
                pit.write_port(counter_port, &data[1..2]);
                pit.write_port(counter_port, &data[2..3]);
            } else {
                pit.write_port(*port, data);
                for (index, value) in data.iter().enumerate() {
                    if let Some(p) = port_at(*port, index) {
                        shadow.wrote(p, *value);
                    }
                }
            }
        }
        Op::Advance(ns) => clock.advance(*ns),
        Op::Update => {
            pit.update();
            let now = clock.now_ns();
            if let Some(deadline) = pit.next_deadline_ns() {
                // (Deadlines saturate at the end of the u64 nanosecond range.)
                assert!(
                    deadline > now || deadline == u64::MAX,
                    "deadline {deadline} not after now {now}"
                );
            }
            let out0 = pit.counter_info(0).map(|i| i.out).unwrap_or(false);
            assert_eq!(irq0.level(), out0, "IRQ0 follows OUT0 after update()");
        }
        Op::Reset => {
            pit.reset();
            *shadow = Shadow::default();
            assert!(!irq0.level());
            assert_eq!(pit.next_deadline_ns(), None);
        }
    }
    check_invariants(pit);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_panic_and_invariants_hold(
        start in prop_oneof![Just(0u64), 0u64..1_000_000_000_000, Just(u64::MAX - 1_000_000)],
        ops in prop::collection::vec(op(), 0..64),
    ) {
        let clock = ManualClock::new(start);
        let irq0 = Arc::new(RecordingLine::new());
        let mut pit = Pit::new(irq0.clone(), clock.clone());
        let mut shadow = Shadow::default();
        for op in &ops {
            apply(&mut pit, &clock, &irq0, &mut shadow, op);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Modes 2 and 3 on counter 0, updates at random (often late) times: every update whose
    /// interval contains at least one rising edge of OUT0 delivers exactly one IRQ0 edge, and
    /// the others deliver none.
    #[test]
    fn periodic_irq0_edges_one_per_update_interval_with_a_rising_edge(
        mode in prop_oneof![Just(2u8), Just(3u8)],
        count in 2u16..=u16::MAX,
        start in 0u64..10_000_000_000,
        gaps in prop::collection::vec(0u64..3_000_000, 1..200),
    ) {
        let clock = ManualClock::new(start);
        let irq0 = Arc::new(RecordingLine::new());
        let mut pit = Pit::new(irq0.clone(), clock.clone());
        pit.write_port(PIT_CONTROL_PORT, &[0x30 | (mode << 1)]);
        pit.write_port(PIT_COUNTER0_PORT, &[(count & 0xFF) as u8]);
        pit.write_port(PIT_COUNTER0_PORT, &[(count >> 8) as u8]);
        let n = u64::from(count);
        let load = ns_to_ticks(start) + 1;
        // Rising edges of OUT0 happen at load + k*n, k >= 1 (8254 modes 2 and 3).
        let rises_up_to = |tick: u64| tick.saturating_sub(load) / n;
        let mut previous = ns_to_ticks(start);
        let mut expected = irq0.rising_edges();
        for gap in gaps {
            clock.advance(gap);
            pit.update();
            let now = ns_to_ticks(clock.now_ns());
            if rises_up_to(now) > rises_up_to(previous) {
                expected += 1;
            }
            prop_assert_eq!(irq0.rising_edges(), expected);
            let deadline = pit.next_deadline_ns().expect("periodic");
            prop_assert!(deadline > clock.now_ns());
            prop_assert!(deadline <= ticks_to_ns(load + (rises_up_to(now) + 1) * n));
            previous = now;
        }
    }

    /// Counter 2 in mode 0 read without latching (Linux's pit_verify_msb style): the 16-bit
    /// value never goes up while counting down from the count.
    #[test]
    fn counter2_mode0_unlatched_reads_never_increase(
        count in 1u16..=u16::MAX,
        steps in prop::collection::vec(0u64..50_000, 1..100),
    ) {
        let clock = ManualClock::new(1_000);
        let irq0 = Arc::new(RecordingLine::new());
        let mut pit = Pit::new(irq0, clock.clone());
        pit.write_port(SYSTEM_CONTROL_PORT_B, &[0x01]);
        pit.write_port(PIT_CONTROL_PORT, &[0xB0]);
        pit.write_port(PIT_COUNTER2_PORT, &[(count & 0xFF) as u8]);
        pit.write_port(PIT_COUNTER2_PORT, &[(count >> 8) as u8]);
        let load = ns_to_ticks(1_000) + 1;
        clock.set(ticks_to_ns(load));
        let mut last = u32::from(count);
        for step in steps {
            clock.advance(step);
            let mut lsb = [0u8];
            let mut msb = [0u8];
            pit.read_port(PIT_COUNTER2_PORT, &mut lsb);
            pit.read_port(PIT_COUNTER2_PORT, &mut msb);
            let value = u32::from(u16::from_le_bytes([lsb[0], msb[0]]));
            let elapsed = ns_to_ticks(clock.now_ns()) - load;
            if elapsed < u64::from(count) {
                prop_assert!(value <= last);
                prop_assert_eq!(u64::from(value), u64::from(count) - elapsed);
                last = value;
            }
            let mut port61 = [0u8];
            pit.read_port(SYSTEM_CONTROL_PORT_B, &mut port61);
            prop_assert_eq!(port61[0] & 0x20 != 0, elapsed >= u64::from(count));
        }
    }
}
