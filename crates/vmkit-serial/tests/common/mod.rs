//! A test bench: a UART with a recording IRQ line, a manual clock, a recording input-room
//! line and a `Vec<u8>` as its output, plus `inb`/`outb` helpers that act like a guest.

#![allow(dead_code)]

use std::sync::Arc;

use vmkit_hw::{ManualClock, RecordingLine};
use vmkit_serial::Serial;

pub type TestSerial = Serial<Arc<RecordingLine>, ManualClock, Vec<u8>>;

pub struct Bench {
    pub uart: TestSerial,
    pub irq: Arc<RecordingLine>,
    pub room: Arc<RecordingLine>,
    pub clock: ManualClock,
}

impl Bench {
    pub fn new() -> Self {
        let irq = Arc::new(RecordingLine::new());
        let room = Arc::new(RecordingLine::new());
        let clock = ManualClock::new(1_000);
        let uart = Serial::new(irq.clone(), clock.clone(), Vec::new())
            .with_input_room_line(Box::new(room.clone()));
        Self {
            uart,
            irq,
            room,
            clock,
        }
    }

    /// One-byte guest read of register `reg`.
    pub fn inb(&mut self, reg: u64) -> u8 {
        let mut value = [0u8];
        self.uart.read(reg, &mut value);
        value[0]
    }

    /// One-byte guest write of `value` to register `reg`.
    pub fn outb(&mut self, reg: u64, value: u8) {
        self.uart.write(reg, &[value]);
    }

    pub fn output(&self) -> &[u8] {
        self.uart.output().as_slice()
    }
}
