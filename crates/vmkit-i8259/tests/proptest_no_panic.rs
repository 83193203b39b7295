//! Random guest port traffic and device line activity never panic the model, and the
//! invariants that the 8259A pair must keep hold after every step.

use std::sync::Arc;

use proptest::prelude::*;
use vm_device::bus::PioAddress;
use vm_device::MutDevicePio;
use vmkit_hw::RecordingLine;
use vmkit_i8259::{Chip, DualPic, ELCR_BASE, PIC_MASTER_BASE, PIC_SLAVE_BASE};

#[derive(Debug, Clone)]
enum Op {
    Write {
        port: u16,
        data: Vec<u8>,
    },
    Read {
        port: u16,
        len: usize,
    },
    PioWrite {
        base: u16,
        offset: u16,
        data: Vec<u8>,
    },
    PioRead {
        base: u16,
        offset: u16,
        len: usize,
    },
    Line {
        line: u8,
        high: bool,
    },
    Acknowledge,
    Reset,
}

/// Mostly the pair's own ports (so the chips get programmed), sometimes any port.
fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![0x20u16, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1]),
        1 => any::<u16>(),
    ]
}

/// Command bytes biased towards meaningful ICW/OCW values.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        1 => prop::sample::select(vec![
            0x11u8, 0x13, 0x19, 0x10, 0x08, 0x30, 0x70, 0x04, 0x02, 0x01, 0x03, 0x11, 0x20,
            0x60, 0x62, 0xa0, 0xe3, 0xc7, 0x80, 0x00, 0x0a, 0x0b, 0x0c, 0x68, 0x48, 0xff,
        ]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (port(), prop::collection::vec(byte(), 0..=9))
            .prop_map(|(port, data)| Op::Write { port, data }),
        3 => (port(), 0usize..=9).prop_map(|(port, len)| Op::Read { port, len }),
        1 => (
            prop::sample::select(vec![PIC_MASTER_BASE, PIC_SLAVE_BASE, ELCR_BASE, 0xffff]),
            any::<u16>(),
            prop::collection::vec(byte(), 0..=9)
        )
            .prop_map(|(base, offset, data)| Op::PioWrite { base, offset, data }),
        1 => (
            prop::sample::select(vec![PIC_MASTER_BASE, PIC_SLAVE_BASE, ELCR_BASE, 0xffff]),
            0u16..4,
            0usize..=9
        )
            .prop_map(|(base, offset, len)| Op::PioRead { base, offset, len }),
        5 => (0u8..=20, any::<bool>()).prop_map(|(line, high)| Op::Line { line, high }),
        3 => Just(Op::Acknowledge),
        1 => Just(Op::Reset),
    ]
}

/// Every vector an INTA cycle may produce: base + 0..7 of either chip, or 0xff when the
/// master names a cascade IR whose slave ID does not match.
fn check_vector(pic: &DualPic<Arc<RecordingLine>>, vector: u8) -> Result<(), TestCaseError> {
    let master = pic.registers(Chip::Master);
    let slave = pic.registers(Chip::Slave);
    let from_master = vector & 0xf8 == master.vector_base;
    let from_slave = vector & 0xf8 == slave.vector_base;
    prop_assert!(
        from_master || from_slave || vector == 0xff,
        "vector {vector:#x} outside bases {:#x}/{:#x}",
        master.vector_base,
        slave.vector_base
    );
    Ok(())
}

fn check_invariants(
    pic: &DualPic<Arc<RecordingLine>>,
    intr: &RecordingLine,
) -> Result<(), TestCaseError> {
    // The output line always shows the INT level.
    prop_assert_eq!(intr.level(), pic.interrupt_pending());
    prop_assert_eq!(pic.pending_vector().is_some(), pic.interrupt_pending());
    for chip in [Chip::Master, Chip::Slave] {
        let regs = pic.registers(chip);
        prop_assert_eq!(regs.vector_base & 7, 0);
        prop_assert!(regs.highest_priority_irq < 8);
        // A level-triggered input's request is its pin.
        let level = if regs.level_triggered_mode {
            0xff
        } else {
            regs.elcr
        };
        prop_assert_eq!(regs.irr & level, regs.input_levels & level);
    }
    prop_assert_eq!(pic.registers(Chip::Master).elcr & !0xf8, 0);
    prop_assert_eq!(pic.registers(Chip::Slave).elcr & !0xde, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_panic_and_invariants_hold(ops in prop::collection::vec(op(), 0..64)) {
        let intr = Arc::new(RecordingLine::new());
        let mut pic = DualPic::new(Arc::clone(&intr));
        for op in ops {
            match op {
                Op::Write { port, data } => pic.write_port(port, &data),
                Op::Read { port, len } => {
                    let mut data = vec![0u8; len];
                    pic.read_port(port, &mut data);
                }
                Op::PioWrite { base, offset, data } => {
                    pic.pio_write(PioAddress(base), offset, &data)
                }
                Op::PioRead { base, offset, len } => {
                    let mut data = vec![0u8; len];
                    pic.pio_read(PioAddress(base), offset, &mut data);
                }
                Op::Line { line, high } => {
                    let result = pic.set_irq_level(line, high);
                    prop_assert_eq!(result.is_ok(), line < 16 && line != 2);
                }
                Op::Acknowledge => {
                    let peeked = pic.pending_vector();
                    let vector = pic.acknowledge();
                    check_vector(&pic, vector)?;
                    if let Some(expected) = peeked {
                        prop_assert_eq!(vector, expected, "pending_vector must predict INTA");
                    }
                }
                Op::Reset => {
                    pic.reset();
                    prop_assert!(!intr.level());
                }
            }
            check_invariants(&pic, &intr)?;
        }
    }
}
