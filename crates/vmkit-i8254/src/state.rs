//! The PIT's state as plain data, for snapshots and migration (QEMU's `vmstate_pit`).
//!
//! Ticks in the state are on the saved PIT's time base (1.193182 MHz ticks of its clock);
//! `now_ns` says where that time base was when the state was taken. A PIT restored from it
//! carries the time base on (an offset on its own clock), so counts, OUT levels and pending
//! transfers continue exactly where they were, however the two hosts' clocks read.

use serde::{Deserialize, Serialize};
use vmkit_hw::{Clock, IrqLine};

use crate::counter::Counter;
use crate::{Error, Pit, Result};

/// The layout version [`PitState`] has; [`Pit::restore`] accepts only this one.
pub const PIT_STATE_VERSION: u32 = 1;

/// One counter's programming and counting element, serialized as plain fields (control
/// word bits, count register, latches, flip-flops, the running or held count with its
/// start tick, and any pending count transfer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CounterState(pub(crate) Counter);

/// The 8254 with its PC wiring (port 0x61 and the IRQ0 level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// Layout version, [`PIT_STATE_VERSION`].
    pub version: u32,
    /// The PIT's time base when the state was taken, in ns (ticks are `ns * 1193182 / 1e9`).
    pub now_ns: u64,
    /// Port 0x61 bits 0-3.
    pub port61: u8,
    /// The level IRQ0 was driven at.
    pub irq_level: bool,
    /// OUT0 changes up to this tick had been delivered to IRQ0.
    pub irq_tick: u64,
    /// Counters 0, 1 and 2.
    pub counters: Vec<CounterState>,
}

impl<L: IrqLine, C: Clock> Pit<L, C> {
    /// The PIT's state now.
    pub fn state(&self) -> PitState {
        PitState {
            version: PIT_STATE_VERSION,
            now_ns: self.time_base_ns(),
            port61: self.port61,
            irq_level: self.irq_level,
            irq_tick: self.irq_tick,
            counters: self.counters.iter().cloned().map(CounterState).collect(),
        }
    }

    /// Puts the PIT into `state`, drives IRQ0 to the saved level and continues the saved
    /// time base. Another version, a counter list that is not three long, or a counter no
    /// 8254 can be in is refused (naming it) and the PIT is left as it was.
    pub fn restore(&mut self, state: &PitState) -> Result<()> {
        if state.version != PIT_STATE_VERSION {
            return Err(Error::StateVersion {
                found: state.version,
                supported: PIT_STATE_VERSION,
            });
        }
        let counters: [CounterState; 3] =
            state
                .counters
                .clone()
                .try_into()
                .map_err(|_| Error::InvalidState {
                    counter: 3,
                    field: "counters (needs exactly 3)",
                })?;
        for (index, c) in counters.iter().enumerate() {
            c.0.check().map_err(|field| Error::InvalidState {
                counter: index,
                field,
            })?;
        }
        let bias = i128::from(state.now_ns) - i128::from(self.clock.now_ns());
        self.ns_bias = i64::try_from(bias).map_err(|_| Error::InvalidState {
            counter: 3,
            field: "now_ns",
        })?;
        self.counters = counters.map(|c| c.0);
        self.port61 = state.port61 & 0x0f;
        self.irq_tick = state.irq_tick;
        self.irq_level = state.irq_level;
        self.irq0.set_level(state.irq_level);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vmkit_hw::{ManualClock, RecordingLine};

    use super::*;

    type TestPit = Pit<Arc<RecordingLine>, ManualClock>;

    fn pit(start_ns: u64) -> (TestPit, Arc<RecordingLine>, ManualClock) {
        let line = Arc::new(RecordingLine::new());
        let clock = ManualClock::new(start_ns);
        (Pit::new(line.clone(), clock.clone()), line, clock)
    }

    /// A periodic mode 2 timer saved on a clock far ahead and restored on one just started
    /// keeps its count, its next edge (relative to now) and its OUT level.
    #[test]
    fn periodic_timer_continues_on_a_younger_clock() {
        let (mut a, _, clock_a) = pit(5_000_000_000);
        a.write_port(0x43, &[0x34]);
        a.write_port(0x40, &[0x9c]); // 11932: 100 Hz
        a.write_port(0x40, &[0x2e]);
        clock_a.advance(123_456_789);
        a.update();
        let state = a.state();
        let json = serde_json::to_string(&state).unwrap();
        let (mut b, line_b, clock_b) = pit(1_000);
        b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(line_b.level(), a.state().irq_level);
        let rel_a = a.next_deadline_ns().unwrap() - clock_a.now_ns();
        let rel_b = b.next_deadline_ns().unwrap() - clock_b.now_ns();
        assert!(rel_a.abs_diff(rel_b) <= 1, "{rel_a} vs {rel_b}");
        for _ in 0..5 {
            clock_a.advance(3_000_000);
            clock_b.advance(3_000_000);
            a.write_port(0x43, &[0x00]);
            b.write_port(0x43, &[0x00]);
            let (mut x, mut y) = ([0u8; 2], [0u8; 2]);
            a.read_port(0x40, &mut x[..1]);
            a.read_port(0x40, &mut x[1..]);
            b.read_port(0x40, &mut y[..1]);
            b.read_port(0x40, &mut y[1..]);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn bad_states_are_refused() {
        let (mut a, _, _) = pit(0);
        let mut s = a.state();
        s.counters.pop();
        assert!(a.restore(&s).unwrap_err().to_string().contains("exactly 3"));
        let mut s = a.state();
        s.version = 3;
        assert!(a.restore(&s).unwrap_err().to_string().contains("version 3"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Read(u16),
        Write(u16, u8),
        Advance(u64),
    }

    const PORTS: [u16; 5] = [0x40, 0x41, 0x42, 0x43, 0x61];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..5).prop_map(|i| Op::Read(PORTS[i])),
            (0usize..5, any::<u8>()).prop_map(|(i, v)| Op::Write(PORTS[i], v)),
            (0u64..50_000_000).prop_map(Op::Advance),
        ]
    }

    fn apply(pit: &mut TestPit, clock: &ManualClock, op: &Op) -> Option<u8> {
        match *op {
            Op::Read(port) => {
                let mut b = [0u8];
                pit.read_port(port, &mut b);
                Some(b[0])
            }
            Op::Write(port, v) => {
                pit.write_port(port, &[v]);
                None
            }
            Op::Advance(ns) => {
                clock.advance(ns);
                pit.update();
                None
            }
        }
    }

    proptest! {
        /// Random programming and time, save, restore into a PIT whose clock reads
        /// something else entirely: every later read and IRQ0 level is the same.
        #[test]
        fn save_restore_gives_identical_behaviour(
            start_a in 0u64..10_000_000_000,
            start_b in 0u64..10_000_000_000,
            before in proptest::collection::vec(op(), 0..40),
            after in proptest::collection::vec(op(), 0..40),
        ) {
            let (mut a, line_a, clock_a) = pit(start_a);
            for op in &before {
                apply(&mut a, &clock_a, op);
            }
            let (mut b, line_b, clock_b) = pit(start_b);
            b.restore(&a.state()).unwrap();
            prop_assert_eq!(line_a.level(), line_b.level());
            for op in &after {
                prop_assert_eq!(apply(&mut a, &clock_a, op), apply(&mut b, &clock_b, op), "{:?}", op);
                prop_assert_eq!(line_a.level(), line_b.level());
            }
        }
    }
}
