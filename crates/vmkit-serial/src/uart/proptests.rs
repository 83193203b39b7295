//! Property tests: no access sequence panics, invariants always hold, and outside input is
//! never lost unless the guest itself discards it.

use std::collections::VecDeque;
use std::sync::Arc;

use proptest::prelude::*;
use vmkit_hw::{ManualClock, RecordingLine};

use super::*;

type TestSerial = Serial<Arc<RecordingLine>, ManualClock, Vec<u8>>;

const VALID_IDS: [u8; 6] = [
    IIR_NO_INTERRUPT,
    IIR_LINE_STATUS,
    IIR_RX_DATA,
    IIR_CHAR_TIMEOUT,
    IIR_THR_EMPTY,
    IIR_MODEM_STATUS,
];

struct Rig {
    uart: TestSerial,
    irq: Arc<RecordingLine>,
    room: Arc<RecordingLine>,
    clock: ManualClock,
}

fn rig() -> Rig {
    let irq = Arc::new(RecordingLine::new());
    let room = Arc::new(RecordingLine::new());
    let clock = ManualClock::new(0);
    let uart = Serial::new(irq.clone(), clock.clone(), Vec::new())
        .with_input_room_line(Box::new(room.clone()));
    Rig {
        uart,
        irq,
        room,
        clock,
    }
}

fn check_invariants(rig: &Rig) {
    let uart = &rig.uart;
    assert!(uart.rx.len() <= FIFO_SIZE);
    if !uart.fifo_enabled {
        assert!(uart.rx.len() <= 1, "16450 mode holds one byte");
    }
    assert!(uart.input_room() + uart.rx.len() <= FIFO_SIZE);
    assert!(VALID_IDS.contains(&uart.interrupt_id()));
    assert!(matches!(uart.rx_trigger, 1 | 4 | 8 | 14));
    assert_eq!(uart.ier & 0xF0, 0);
    assert_eq!(uart.mcr & 0xE0, 0);
    let gate = uart.mcr & MCR_OUT2 != 0 && uart.mcr & MCR_LOOP == 0;
    let expected_irq = gate && uart.interrupt_id() != IIR_NO_INTERRUPT;
    assert_eq!(uart.irq_level(), expected_irq);
    assert_eq!(rig.irq.level(), expected_irq);
    assert_eq!(rig.room.level(), uart.input_room() > 0);
    if let Some(deadline) = uart.next_deadline_ns() {
        assert!(deadline >= uart.last_rx_activity_ns);
    }
}

fn assert_valid_iir(value: u8, fifo_enabled: bool) {
    let fifo_bits = if fifo_enabled { IIR_FIFO_ENABLED } else { 0 };
    assert_eq!(value & 0xF0, fifo_bits, "IIR {value:#04x}");
    assert!(VALID_IDS.contains(&(value & 0x0F)), "IIR {value:#04x}");
}

#[derive(Debug, Clone)]
enum Op {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
    Advance(u64),
    Enqueue(Vec<u8>),
    Update,
    SetModem(u8),
    Reset,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![9 => 0u64..10, 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (offset(), 0usize..=9).prop_map(|(offset, len)| Op::Read { offset, len }),
        6 => (offset(), proptest::collection::vec(any::<u8>(), 0..=9))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        2 => prop_oneof![0u64..200_000, 0u64..20_000_000, Just(u64::MAX)].prop_map(Op::Advance),
        3 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Enqueue),
        1 => Just(Op::Update),
        1 => any::<u8>().prop_map(Op::SetModem),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random accesses of any offset and width (0..=9 bytes), clock jumps, input pushes,
    /// modem changes and resets never panic, and the invariants hold after every step.
    #[test]
    fn any_access_sequence_keeps_invariants(ops in proptest::collection::vec(op(), 0..64)) {
        let mut rig = rig();
        for op in ops {
            match op {
                Op::Read { offset, len } => {
                    let fifo_enabled = rig.uart.fifo_enabled;
                    let dlab_or_ier_before = rig.uart.lcr;
                    let mut data = vec![0u8; len];
                    rig.uart.read(offset, &mut data);
                    for (i, value) in data.iter().enumerate() {
                        let reg = offset.checked_add(i as u64);
                        match reg {
                            Some(IIR_FCR) => assert_valid_iir(*value, fifo_enabled),
                            Some(r) if r >= u64::from(PORT_RANGE_LEN) => assert_eq!(*value, 0xFF),
                            None => assert_eq!(*value, 0xFF),
                            _ => {}
                        }
                    }
                    // Reads never change LCR.
                    prop_assert_eq!(rig.uart.lcr, dlab_or_ier_before);
                }
                Op::Write { offset, data } => rig.uart.write(offset, &data),
                Op::Advance(ns) => rig.clock.advance(ns),
                Op::Enqueue(bytes) => {
                    let room = rig.uart.input_room();
                    let accepted = rig.uart.enqueue_input(&bytes);
                    prop_assert_eq!(accepted, bytes.len().min(room));
                }
                Op::Update => rig.uart.update(),
                Op::SetModem(inputs) => rig.uart.set_modem_inputs(inputs),
                Op::Reset => rig.uart.reset(),
            }
            check_invariants(&rig);
        }
    }
}

/// Where a byte in the receive FIFO came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Outside(u8),
    Loopback,
}

#[derive(Debug, Clone)]
enum GuestOp {
    Read(u64),
    Write(u64, u8),
    Advance(u64),
    Enqueue(Vec<u8>),
    Update,
    SetModem(u8),
    Reset,
}

fn guest_op() -> impl Strategy<Value = GuestOp> {
    prop_oneof![
        6 => Just(GuestOp::Read(RBR_THR)),
        4 => (0u64..8).prop_map(GuestOp::Read),
        // Mostly plain LCR values so that RBR stays reachable.
        2 => prop_oneof![3 => 0u8..0x80, 1 => any::<u8>()].prop_map(|v| GuestOp::Write(LCR, v)),
        6 => ((0u64..8), any::<u8>()).prop_map(|(offset, value)| GuestOp::Write(offset, value)),
        2 => (0u64..5_000_000).prop_map(GuestOp::Advance),
        5 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(GuestOp::Enqueue),
        1 => Just(GuestOp::Update),
        1 => any::<u8>().prop_map(GuestOp::SetModem),
        1 => Just(GuestOp::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every byte accepted by `enqueue_input` is later read from RBR, in order and
    /// unchanged, unless the guest discards it itself (FCR clear or FIFO mode change, a
    /// loopback overrun in 16450 mode) or the VMM resets the chip.
    #[test]
    fn accepted_input_is_never_lost(ops in proptest::collection::vec(guest_op(), 0..64)) {
        let mut rig = rig();
        let mut shadow: VecDeque<Origin> = VecDeque::new();
        for op in ops {
            let len_before = rig.uart.rx.len();
            let dlab = rig.uart.lcr & LCR_DLAB != 0;
            let loopback = rig.uart.mcr & MCR_LOOP != 0;
            let fifo_enabled = rig.uart.fifo_enabled;
            match op {
                GuestOp::Read(offset) => {
                    let mut value = [0u8];
                    rig.uart.read(offset, &mut value);
                    if offset == RBR_THR && !dlab && len_before > 0 {
                        prop_assert_eq!(rig.uart.rx.len(), len_before - 1);
                        if let Some(Origin::Outside(expected)) = shadow.pop_front() {
                            prop_assert_eq!(value[0], expected);
                        }
                    }
                }
                GuestOp::Write(offset, value) => {
                    rig.uart.write(offset, &[value]);
                    let len_after = rig.uart.rx.len();
                    if offset == RBR_THR && !dlab && loopback {
                        if len_after > len_before {
                            shadow.push_back(Origin::Loopback);
                        } else if !fifo_enabled {
                            // 16450-mode overrun: the looped byte replaced the unread one.
                            prop_assert_eq!(len_after, 1);
                            shadow.clear();
                            shadow.push_back(Origin::Loopback);
                        }
                    } else if offset == IIR_FCR && len_after < len_before {
                        let mode_change = (value & FCR_ENABLE != 0) != fifo_enabled;
                        let clear = value & (FCR_ENABLE | FCR_CLEAR_RX) == FCR_ENABLE | FCR_CLEAR_RX;
                        prop_assert!(mode_change || clear, "FCR {:#04x} dropped input", value);
                        prop_assert_eq!(len_after, 0);
                        shadow.clear();
                    }
                }
                GuestOp::Advance(ns) => rig.clock.advance(ns),
                GuestOp::Enqueue(bytes) => {
                    let room = rig.uart.input_room();
                    let accepted = rig.uart.enqueue_input(&bytes);
                    prop_assert_eq!(accepted, bytes.len().min(room));
                    shadow.extend(bytes.iter().take(accepted).map(|&b| Origin::Outside(b)));
                }
                GuestOp::Update => rig.uart.update(),
                GuestOp::SetModem(inputs) => rig.uart.set_modem_inputs(inputs),
                GuestOp::Reset => {
                    rig.uart.reset();
                    shadow.clear();
                }
            }
            prop_assert_eq!(shadow.len(), rig.uart.rx.len());
            check_invariants(&rig);
        }
    }
}
