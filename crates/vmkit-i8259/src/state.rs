//! The PIC pair's state as plain data, for snapshots and migration (QEMU's `vmstate_pic`).

use serde::{Deserialize, Serialize};
use vmkit_hw::IrqLine;

use crate::chip::{InitStep, I8259};
use crate::{DualPic, Error, Result};

/// The layout version [`PicState`] has; [`DualPic::restore`] accepts only this one.
pub const PIC_STATE_VERSION: u32 = 1;

/// One 8259A's complete register state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipState {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register.
    pub imr: u8,
    /// Levels of the IR inputs (for edge detection).
    pub pins: u8,
    /// Edge/level control register.
    pub elcr: u8,
    /// Highest-priority IR.
    pub highest_priority: u8,
    /// OCW3 read selects the ISR.
    pub read_isr: bool,
    /// A poll command waits for the next read.
    pub poll: bool,
    /// Special mask mode.
    pub special_mask: bool,
    /// Initialisation step: 0 ready, 2..4 the ICW expected next.
    pub init_step: u8,
    /// ICW1 said an ICW4 follows.
    pub icw4_expected: bool,
    /// ICW1 SNGL.
    pub single: bool,
    /// ICW1 LTIM.
    pub level_triggered: bool,
    /// ICW2 vector base.
    pub vector_base: u8,
    /// ICW3.
    pub icw3: u8,
    /// ICW4.
    pub icw4: u8,
    /// Rotate on automatic EOI.
    pub rotate_on_auto_eoi: bool,
}

/// Both chips of the PC/AT pair and the INT output level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    /// Layout version, [`PIC_STATE_VERSION`].
    pub version: u32,
    /// The master at 0x20.
    pub master: ChipState,
    /// The slave at 0xa0.
    pub slave: ChipState,
}

fn chip_state(c: &I8259) -> ChipState {
    ChipState {
        irr: c.irr,
        isr: c.isr,
        imr: c.imr,
        pins: c.pins,
        elcr: c.elcr,
        highest_priority: c.highest_priority,
        read_isr: c.read_isr,
        poll: c.poll,
        special_mask: c.special_mask,
        init_step: match c.init {
            InitStep::Ready => 0,
            InitStep::Icw2 => 2,
            InitStep::Icw3 => 3,
            InitStep::Icw4 => 4,
        },
        icw4_expected: c.icw4_expected,
        single: c.single,
        level_triggered: c.level_triggered,
        vector_base: c.vector_base,
        icw3: c.icw3,
        icw4: c.icw4,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi,
    }
}

fn apply_chip(c: &mut I8259, s: &ChipState, which: &str) -> Result<()> {
    let init = match s.init_step {
        0 => InitStep::Ready,
        2 => InitStep::Icw2,
        3 => InitStep::Icw3,
        4 => InitStep::Icw4,
        value => {
            return Err(Error::InvalidState {
                field: if which == "master" {
                    "master.init_step"
                } else {
                    "slave.init_step"
                },
                value,
            })
        }
    };
    if s.highest_priority > 7 {
        return Err(Error::InvalidState {
            field: if which == "master" {
                "master.highest_priority"
            } else {
                "slave.highest_priority"
            },
            value: s.highest_priority,
        });
    }
    c.irr = s.irr;
    c.isr = s.isr;
    c.imr = s.imr;
    c.pins = s.pins;
    c.elcr = s.elcr & c.elcr_writable;
    c.highest_priority = s.highest_priority;
    c.read_isr = s.read_isr;
    c.poll = s.poll;
    c.special_mask = s.special_mask;
    c.init = init;
    c.icw4_expected = s.icw4_expected;
    c.single = s.single;
    c.level_triggered = s.level_triggered;
    c.vector_base = s.vector_base & 0xf8;
    c.icw3 = s.icw3;
    c.icw4 = s.icw4 & 0x1f;
    c.rotate_on_auto_eoi = s.rotate_on_auto_eoi;
    Ok(())
}

impl<L: IrqLine> DualPic<L> {
    /// The pair's state now.
    pub fn state(&self) -> PicState {
        PicState {
            version: PIC_STATE_VERSION,
            master: chip_state(&self.master),
            slave: chip_state(&self.slave),
        }
    }

    /// Puts the pair into `state` and drives INT to match. Another version, or a field no
    /// 8259A can hold, is refused (naming the field) and the pair is left as it was.
    pub fn restore(&mut self, state: &PicState) -> Result<()> {
        if state.version != PIC_STATE_VERSION {
            return Err(Error::StateVersion {
                found: state.version,
                supported: PIC_STATE_VERSION,
            });
        }
        let mut master = self.master.clone();
        let mut slave = self.slave.clone();
        apply_chip(&mut master, &state.master, "master")?;
        apply_chip(&mut slave, &state.slave, "slave")?;
        self.master = master;
        self.slave = slave;
        self.update_outputs();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vmkit_hw::RecordingLine;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Read(u16),
        Write(u16, u8),
        Line(u8, bool),
        Ack,
    }

    const PORTS: [u16; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(|i| Op::Read(PORTS[i])),
            (0usize..6, any::<u8>()).prop_map(|(i, v)| Op::Write(PORTS[i], v)),
            (0u8..16, any::<bool>()).prop_map(|(l, h)| Op::Line(l, h)),
            Just(Op::Ack),
        ]
    }

    fn apply(pic: &mut DualPic<Arc<RecordingLine>>, op: &Op) -> Option<u8> {
        match *op {
            Op::Read(port) => {
                let mut b = [0u8];
                pic.read_port(port, &mut b);
                Some(b[0])
            }
            Op::Write(port, v) => {
                pic.write_port(port, &[v]);
                None
            }
            Op::Line(line, high) => {
                let _ = pic.set_irq_level(line, high);
                None
            }
            Op::Ack => pic.interrupt_pending().then(|| pic.acknowledge()),
        }
    }

    /// A programmed pair (as a BIOS leaves it) with IRQ0 raised saves and restores to the
    /// same pending vector, masks and INT level; the state survives JSON.
    #[test]
    fn programmed_pair_round_trips() {
        let out_a = Arc::new(RecordingLine::new());
        let mut a = DualPic::new(out_a.clone());
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x70),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xfe),
        ] {
            a.write_port(port, &[v]);
        }
        a.set_irq_level(0, true).unwrap();
        let json = serde_json::to_string(&a.state()).unwrap();
        let out_b = Arc::new(RecordingLine::new());
        let mut b = DualPic::new(out_b.clone());
        b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        assert!(out_b.level());
        assert_eq!(b.pending_vector(), Some(0x08));
        assert_eq!(a.acknowledge(), b.acknowledge());
        let mut bad = a.state();
        bad.slave.init_step = 7;
        let err = b.restore(&bad).unwrap_err().to_string();
        assert!(err.contains("slave.init_step"), "{err}");
        bad.version = 2;
        assert!(b
            .restore(&bad)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
    }

    proptest! {
        /// Random traffic, save, restore into a fresh pair: every later access answers the
        /// same and INT follows the same levels.
        #[test]
        fn save_restore_gives_identical_behaviour(
            before in proptest::collection::vec(op(), 0..80),
            after in proptest::collection::vec(op(), 0..80),
        ) {
            let out_a = Arc::new(RecordingLine::new());
            let mut a = DualPic::new(out_a.clone());
            for op in &before {
                apply(&mut a, op);
            }
            let out_b = Arc::new(RecordingLine::new());
            let mut b = DualPic::new(out_b.clone());
            b.restore(&a.state()).unwrap();
            prop_assert_eq!(out_a.level(), out_b.level());
            for op in &after {
                prop_assert_eq!(apply(&mut a, op), apply(&mut b, op), "{:?}", op);
                prop_assert_eq!(out_a.level(), out_b.level());
            }
        }
    }
}
