//! i8259 PIC pair (+ ELCR): port accesses, line changes and acknowledges in any order.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::RecordingLine;
use vmkit_i8259::{Chip, DualPic};

const PORTS: [u16; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];

fn port(offset: u16) -> u16 {
    if offset & 0x8000 == 0 {
        PORTS[usize::from(offset) % PORTS.len()]
    } else {
        offset & 0x7fff
    }
}

fuzz_target!(|ops: Vec<RegOp>| {
    let mut pic = DualPic::new(Arc::new(RecordingLine::new()));
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                pic.read_port(port(offset), &mut b);
            }
            RegOp::Write { offset, len, value } => {
                pic.write_port(port(offset), &value_bytes(value, access_len(len)))
            }
            RegOp::Advance(_) | RegOp::Update => {
                if pic.interrupt_pending() {
                    pic.acknowledge();
                }
            }
            RegOp::Reset => pic.reset(),
            RegOp::Event(k, v) => match k % 3 {
                0 => {
                    let _ = pic.set_irq_level((v % 17) as u8, k & 0x80 != 0);
                }
                1 => {
                    let _ = pic.acknowledge();
                }
                _ => {
                    let _ = (
                        pic.pending_vector(),
                        pic.registers(Chip::Master),
                        pic.registers(Chip::Slave),
                    );
                }
            },
        }
    }
});
