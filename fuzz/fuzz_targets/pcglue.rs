//! The PC glue devices: CMOS/RTC, i8042, POST port and debug-exit, each driven by its own
//! register accesses (the op's offset picks the device in its top bits).
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::{FixedWallClock, ManualClock, RecordingLine};
use vmkit_pcglue::{Cmos, CmosMemoryLayout, DebugExit, PostPort, RecordingExit, I8042};

fuzz_target!(|input: (u32, Vec<RegOp>)| {
    let (wall, ops) = input;
    let clock = ManualClock::new(0);
    let mut cmos = Cmos::new(
        FixedWallClock::new(u64::from(wall) * 8),
        clock.clone(),
        CmosMemoryLayout::split(u64::from(wall) << 12, 0xe000_0000),
    );
    let mut kbd = I8042::with_interrupts(
        Arc::new(RecordingLine::new()),
        Arc::new(RecordingLine::new()),
        Arc::new(RecordingLine::new()),
    );
    let post = PostPort::new();
    let mut exit = DebugExit::new(RecordingExit::new());
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                let o = u64::from(offset & 0x3fff) % 8;
                match offset >> 14 {
                    0 => {
                        if let Ok(c) = cmos.as_mut() {
                            c.read(o % 2, &mut b)
                        }
                    }
                    1 => kbd.read(o % 5, &mut b),
                    2 => post.read(o % 2, &mut b),
                    _ => exit.read(o % 4, &mut b),
                }
            }
            RegOp::Write { offset, len, value } => {
                let b = value_bytes(value, access_len(len));
                let o = u64::from(offset & 0x3fff) % 8;
                match offset >> 14 {
                    0 => {
                        if let Ok(c) = cmos.as_mut() {
                            c.write(o % 2, &b)
                        }
                    }
                    1 => kbd.write(o % 5, &b),
                    2 => post.write(o % 2, &b),
                    _ => exit.write(o % 4, &b),
                }
            }
            RegOp::Advance(ns) => clock.advance(u64::from(ns) << 8),
            RegOp::Update => {}
            RegOp::Reset => {
                if let Ok(c) = cmos.as_mut() {
                    c.reset();
                }
                kbd.reset();
            }
            RegOp::Event(k, v) => {
                if let Ok(c) = cmos.as_mut() {
                    match k % 4 {
                        0 => c.set_guest_offset_seconds(i64::from(v as i32) * 1000),
                        1 => {
                            let _ = c.set_ram_byte(k, v as u8);
                        }
                        2 => {
                            let _ = c.ram_byte(v as u8);
                        }
                        _ => {
                            let _ = (c.guest_time(), c.update_in_progress());
                        }
                    }
                }
            }
        }
    }
});
