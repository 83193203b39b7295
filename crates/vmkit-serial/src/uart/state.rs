//! The UART's state as plain data, for snapshots and migration (vm-superio's `SerialState`,
//! QEMU's `vmstate_serial`).

use serde::{Deserialize, Serialize};

use super::{Fifo, Serial};
use crate::{Error, Result, FIFO_SIZE};
use std::io::Write;
use vmkit_hw::{Clock, IrqLine};

/// The layout version [`SerialState`] has; [`Serial::restore`] accepts only this one.
pub const SERIAL_STATE_VERSION: u32 = 1;

/// Everything a guest can observe of a [`Serial`]: registers, the receive FIFO with the
/// input it holds, pending interrupt conditions and the character-timeout progress.
///
/// Times are relative (how long ago the last receive activity was), so a state taken on
/// one host restores on another whose clock reads differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    /// Layout version, [`SERIAL_STATE_VERSION`].
    pub version: u32,
    /// Interrupt enable register.
    pub ier: u8,
    /// Line control register.
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Scratch register.
    pub scr: u8,
    /// Divisor latch.
    pub divisor: u16,
    /// FCR FIFO enable.
    pub fifo_enabled: bool,
    /// Receive trigger level in bytes (1, 4, 8 or 14).
    pub rx_trigger: u8,
    /// Bytes in the receive FIFO, oldest first (input not yet read by the guest).
    pub rx_fifo: Vec<u8>,
    /// Receiver overrun pending in LSR.
    pub overrun: bool,
    /// THR-empty interrupt pending.
    pub thre_pending: bool,
    /// MSR delta bits.
    pub msr_deltas: u8,
    /// Modem status inputs (CTS, DSR, RI, DCD).
    pub modem_inputs: u8,
    /// Nanoseconds since a character last entered or left the receive FIFO.
    pub rx_idle_ns: u64,
    /// The character-timeout indication is latched.
    pub timeout_latched: bool,
}

impl<L: IrqLine, C: Clock, W: Write + Send> Serial<L, C, W> {
    /// The UART's state now.
    pub fn state(&self) -> SerialState {
        let mut rx = self.rx.clone();
        let mut rx_fifo = Vec::with_capacity(rx.len());
        while let Some(byte) = rx.pop() {
            rx_fifo.push(byte);
        }
        SerialState {
            version: SERIAL_STATE_VERSION,
            ier: self.ier,
            lcr: self.lcr,
            mcr: self.mcr,
            scr: self.scr,
            divisor: self.divisor,
            fifo_enabled: self.fifo_enabled,
            rx_trigger: self.rx_trigger as u8,
            rx_fifo,
            overrun: self.overrun,
            thre_pending: self.thre_pending,
            msr_deltas: self.msr_deltas,
            modem_inputs: self.modem_inputs,
            rx_idle_ns: self.clock.now_ns().saturating_sub(self.last_rx_activity_ns),
            timeout_latched: self.timeout_latched,
        }
    }

    /// Puts the UART into `state` (keeping its lines, clock, writer and statistics) and
    /// drives the interrupt line to match. A state of another version, or one no 16550 can
    /// be in (a FIFO over 16 bytes, a trigger level other than 1/4/8/14), is refused and the
    /// UART is left as it was.
    pub fn restore(&mut self, state: &SerialState) -> Result<()> {
        if state.version != SERIAL_STATE_VERSION {
            return Err(Error::StateVersion {
                found: state.version,
                supported: SERIAL_STATE_VERSION,
            });
        }
        if state.rx_fifo.len() > FIFO_SIZE {
            return Err(Error::InvalidState(format!(
                "rx_fifo holds {} bytes, the FIFO has {FIFO_SIZE}",
                state.rx_fifo.len()
            )));
        }
        if !matches!(state.rx_trigger, 1 | 4 | 8 | 14) {
            return Err(Error::InvalidState(format!(
                "rx_trigger {} is not 1, 4, 8 or 14",
                state.rx_trigger
            )));
        }
        self.ier = state.ier & 0x0f;
        self.lcr = state.lcr;
        self.mcr = state.mcr & 0x1f;
        self.scr = state.scr;
        self.divisor = state.divisor;
        self.fifo_enabled = state.fifo_enabled;
        self.rx_trigger = usize::from(state.rx_trigger);
        let mut rx = Fifo::new();
        for &byte in &state.rx_fifo {
            rx.push(byte);
        }
        self.rx = rx;
        self.overrun = state.overrun;
        self.thre_pending = state.thre_pending;
        self.msr_deltas = state.msr_deltas & 0x0f;
        self.modem_inputs = state.modem_inputs & 0xf0;
        self.last_rx_activity_ns = self.clock.now_ns().saturating_sub(state.rx_idle_ns);
        self.timeout_latched = state.timeout_latched;
        self.update_outputs();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vmkit_hw::{ManualClock, RecordingLine};

    use super::*;

    type TestSerial = Serial<Arc<RecordingLine>, ManualClock, Vec<u8>>;

    fn uart() -> (TestSerial, Arc<RecordingLine>, ManualClock) {
        let irq = Arc::new(RecordingLine::new());
        let clock = ManualClock::new(1_000);
        (
            Serial::new(irq.clone(), clock.clone(), Vec::new()),
            irq,
            clock,
        )
    }

    #[test]
    fn round_trip_keeps_registers_fifo_and_interrupt() {
        let (mut a, _, _) = uart();
        a.write(3, &[0x80]);
        a.write(0, &[1, 0]);
        a.write(3, &[0x03]);
        a.write(2, &[0x07]); // FIFO on, trigger 1
        a.write(1, &[0x01]);
        a.write(4, &[0x0b]);
        a.write(7, &[0x5a]);
        assert_eq!(a.enqueue_input(b"abc"), 3);
        let state = a.state();
        assert_eq!(state.rx_fifo, b"abc");
        let json = serde_json::to_string(&state).unwrap();
        let back: SerialState = serde_json::from_str(&json).unwrap();

        let (mut b, irq_b, _) = uart();
        b.restore(&back).unwrap();
        assert_eq!(b.state(), state);
        assert!(
            irq_b.level(),
            "the restored UART raises its pending interrupt"
        );
        for offset in [1u64, 2, 3, 4, 5, 6, 7, 0, 0, 0, 5] {
            let (mut x, mut y) = ([0u8], [0u8]);
            a.read(offset, &mut x);
            b.read(offset, &mut y);
            assert_eq!(x, y, "offset {offset}");
        }
    }

    #[test]
    fn bad_states_are_refused_with_the_field() {
        let (mut a, _, _) = uart();
        let mut state = a.state();
        state.version = 9;
        let err = a.restore(&state).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        state.version = SERIAL_STATE_VERSION;
        state.rx_fifo = vec![0; 17];
        let err = a.restore(&state).unwrap_err().to_string();
        assert!(err.contains("rx_fifo"), "{err}");
        state.rx_fifo.clear();
        state.rx_trigger = 3;
        assert!(a
            .restore(&state)
            .unwrap_err()
            .to_string()
            .contains("rx_trigger"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Read(u64),
        Write(u64, u8),
        Input(Vec<u8>),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..9).prop_map(Op::Read),
            (0u64..9, any::<u8>()).prop_map(|(o, v)| Op::Write(o, v)),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Input),
            (0u64..10_000_000).prop_map(Op::Advance),
        ]
    }

    fn apply(uart: &mut TestSerial, clock: &ManualClock, op: &Op) -> Vec<u8> {
        match op {
            Op::Read(offset) => {
                let mut b = [0u8];
                uart.read(*offset, &mut b);
                b.to_vec()
            }
            Op::Write(offset, value) => {
                uart.write(*offset, &[*value]);
                Vec::new()
            }
            Op::Input(bytes) => vec![uart.enqueue_input(bytes) as u8],
            Op::Advance(ns) => {
                clock.advance(*ns);
                uart.update();
                Vec::new()
            }
        }
    }

    proptest! {
        /// Random register traffic, then save/restore into a fresh UART: both answer every
        /// later access the same way and drive the same interrupt level.
        #[test]
        fn save_restore_gives_identical_behaviour(
            before in proptest::collection::vec(op(), 0..60),
            after in proptest::collection::vec(op(), 0..60),
        ) {
            let (mut a, irq_a, clock_a) = uart();
            for op in &before {
                apply(&mut a, &clock_a, op);
            }
            let sent_before = a.output().len();
            let (mut b, irq_b, clock_b) = uart();
            clock_b.set(clock_a.now_ns() + 12_345);
            b.restore(&a.state()).unwrap();
            prop_assert_eq!(irq_a.level(), irq_b.level());
            for op in &after {
                let x = apply(&mut a, &clock_a, op);
                let y = apply(&mut b, &clock_b, op);
                prop_assert_eq!(x, y, "after {:?}", op);
                prop_assert_eq!(irq_a.level(), irq_b.level());
            }
            prop_assert_eq!(&a.output()[sent_before..], b.output().as_slice());
        }
    }
}
