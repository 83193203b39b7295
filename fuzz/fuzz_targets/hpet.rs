//! HPET MMIO registers: any access sequence, time and timer callbacks.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hpet::{Hpet, RecordingGsis};
use vmkit_hw::ManualClock;

fuzz_target!(|ops: Vec<RegOp>| {
    let clock = ManualClock::new(0);
    let mut hpet = Hpet::pc(Arc::new(RecordingGsis::new()), clock.clone());
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                hpet.read(u64::from(offset % 0x480), &mut b);
            }
            RegOp::Write { offset, len, value } => hpet.write(
                u64::from(offset % 0x480),
                &value_bytes(value, access_len(len)),
            ),
            RegOp::Advance(ns) => clock.advance(u64::from(ns) << (ns & 15)),
            RegOp::Update => hpet.update(),
            RegOp::Reset => hpet.reset(),
            RegOp::Event(k, _) => {
                let _ = (
                    hpet.next_deadline_ns(),
                    hpet.timer_info(usize::from(k % 4)),
                    hpet.state(),
                );
            }
        }
    }
});
