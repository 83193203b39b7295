//! i8254 PIT (+ port 0x61): control words, counts, read-backs and time in any order.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_i8254::Pit;

const PORTS: [u16; 5] = [0x40, 0x41, 0x42, 0x43, 0x61];

fn port(offset: u16) -> u16 {
    if offset & 0x8000 == 0 {
        PORTS[usize::from(offset) % PORTS.len()]
    } else {
        offset & 0x7fff
    }
}

fuzz_target!(|ops: Vec<RegOp>| {
    let clock = ManualClock::new(0);
    let mut pit = Pit::new(Arc::new(RecordingLine::new()), clock.clone());
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                pit.read_port(port(offset), &mut b);
            }
            RegOp::Write { offset, len, value } => {
                pit.write_port(port(offset), &value_bytes(value, access_len(len)))
            }
            RegOp::Advance(ns) => clock.advance(u64::from(ns) << (ns & 7)),
            RegOp::Update => pit.update(),
            RegOp::Reset => pit.reset(),
            RegOp::Event(k, _) => {
                let _ = (
                    pit.next_deadline_ns(),
                    pit.next_rising_edge_ns(),
                    pit.counter_info(usize::from(k % 4)),
                    pit.gate2(),
                    pit.speaker_data_enabled(),
                );
            }
        }
    }
});
