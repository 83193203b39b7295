//! 16550 UART register interface: any access sequence, input, modem lines and time.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmkit_fuzz::{access_len, value_bytes, RegOp};
use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_serial::Serial;

fuzz_target!(|ops: Vec<RegOp>| {
    let clock = ManualClock::new(0);
    let mut uart = Serial::new(Arc::new(RecordingLine::new()), clock.clone(), Vec::new())
        .with_input_room_line(Box::new(Arc::new(RecordingLine::new())));
    for op in ops {
        match op {
            RegOp::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                uart.read(u64::from(offset % 10), &mut b);
            }
            RegOp::Write { offset, len, value } => {
                uart.write(u64::from(offset % 10), &value_bytes(value, access_len(len)))
            }
            RegOp::Advance(ns) => clock.advance(u64::from(ns) * 16),
            RegOp::Update => uart.update(),
            RegOp::Reset => uart.reset(),
            RegOp::Event(k, v) => match k % 3 {
                0 => {
                    uart.enqueue_input(&v.to_le_bytes()[..usize::from(k % 5)]);
                }
                1 => uart.set_modem_inputs(v as u8),
                _ => {
                    let _ = (uart.next_deadline_ns(), uart.irq_level(), uart.input_room());
                }
            },
        }
        if uart.output().len() > 4096 {
            uart.output_mut().clear();
        }
    }
});
