//! One 8259A: the registers and the priority resolver of a single chip.
//!
//! The pair in `lib.rs` wires two of these together; nothing here knows about ports or about
//! the other chip beyond the chip's own cascade programming (ICW3).

/// Which socket of the PC/AT pair a chip sits in. On the AT the SP/EN pin fixes this in
/// hardware (master tied high, slave tied low), so ICW4's buffered-mode M/S bit does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Master,
    Slave,
}

/// Where the chip is in the ICW1..ICW4 initialisation sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitStep {
    /// Not initialising: odd-port writes are OCW1 (the mask).
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

// ICW1 bits.
const ICW1_IC4: u8 = 0x01;
const ICW1_SNGL: u8 = 0x02;
const ICW1_LTIM: u8 = 0x08;
const ICW1_SELECT: u8 = 0x10;
// ICW4 bits.
const ICW4_AEOI: u8 = 0x02;
const ICW4_SFNM: u8 = 0x10;
/// ICW4 bits 7-5 are reserved (zero).
const ICW4_DEFINED: u8 = 0x1f;
// OCW3 bits.
const OCW3_SELECT: u8 = 0x08;
const OCW3_ESMM: u8 = 0x40;
const OCW3_SMM: u8 = 0x20;
const OCW3_POLL: u8 = 0x04;
const OCW3_RR: u8 = 0x02;
const OCW3_RIS: u8 = 0x01;
/// Poll word bit 7: an interrupt was pending.
const POLL_INTERRUPT: u8 = 0x80;

fn bit(ir: u8) -> u8 {
    1u8 << (ir & 7)
}

/// The IR that comes right after `ir` in the rotating priority order.
fn next_ir(ir: u8) -> u8 {
    ir.wrapping_add(1) & 7
}

#[derive(Debug, Clone)]
pub(crate) struct I8259 {
    pub(crate) role: Role,
    /// Interrupt request register.
    pub(crate) irr: u8,
    /// In-service register.
    pub(crate) isr: u8,
    /// Interrupt mask register (OCW1).
    pub(crate) imr: u8,
    /// Current level of the eight IR input pins, kept to detect rising edges.
    pub(crate) pins: u8,
    /// Edge/level control register (PIIX ELCR), already masked by `elcr_writable`.
    pub(crate) elcr: u8,
    pub(crate) elcr_writable: u8,
    /// The IR with the highest priority; IR `highest_priority - 1` is the lowest.
    pub(crate) highest_priority: u8,
    pub(crate) read_isr: bool,
    pub(crate) poll: bool,
    pub(crate) special_mask: bool,
    pub(crate) init: InitStep,
    pub(crate) icw4_expected: bool,
    pub(crate) single: bool,
    /// ICW1 LTIM: every input level-triggered.
    pub(crate) level_triggered: bool,
    /// ICW2 with T2-T0 cleared (8086 mode).
    pub(crate) vector_base: u8,
    /// ICW3: master, a bit per IR with a slave; slave, its ID in bits 2-0.
    pub(crate) icw3: u8,
    pub(crate) icw4: u8,
    pub(crate) rotate_on_auto_eoi: bool,
}

impl I8259 {
    /// A chip in its power-on state; `elcr_writable` lists the ELCR bits the chipset
    /// implements and `default_icw3` is the cascade wiring of the PC/AT pair, used until the
    /// guest programs ICW3.
    pub(crate) fn new(role: Role, elcr_writable: u8, default_icw3: u8) -> Self {
        Self::power_on(role, elcr_writable, default_icw3, 0)
    }

    /// Machine reset. The input pins keep their level: they belong to the devices, and a line
    /// held high must make a new low-to-high transition before it counts as an edge again.
    pub(crate) fn reset(&mut self, default_icw3: u8) {
        *self = Self::power_on(self.role, self.elcr_writable, default_icw3, self.pins);
    }

    fn power_on(role: Role, elcr_writable: u8, default_icw3: u8, pins: u8) -> Self {
        Self {
            role,
            irr: 0,
            isr: 0,
            imr: 0,
            pins,
            elcr: 0,
            elcr_writable,
            highest_priority: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init: InitStep::Ready,
            icw4_expected: false,
            single: false,
            level_triggered: false,
            vector_base: 0,
            icw3: default_icw3,
            // 8086 mode, normal EOI: what every PC BIOS and OS programs.
            icw4: 0x01,
            rotate_on_auto_eoi: false,
        }
    }

    /// Inputs that are level-triggered: all of them under LTIM, else those set in the ELCR.
    pub(crate) fn level_mask(&self) -> u8 {
        if self.level_triggered {
            0xff
        } else {
            self.elcr
        }
    }

    pub(crate) fn auto_eoi(&self) -> bool {
        self.icw4 & ICW4_AEOI != 0
    }

    fn special_fully_nested(&self) -> bool {
        self.icw4 & ICW4_SFNM != 0
    }

    /// Whether this (master) chip hands the INTA cycle for `ir` to a slave.
    pub(crate) fn routes_to_slave(&self, ir: u8) -> bool {
        self.role == Role::Master && !self.single && self.icw3 & bit(ir) != 0
    }

    /// The cascade address a slave answers to (ICW3 ID bits).
    pub(crate) fn slave_id(&self) -> u8 {
        self.icw3 & 7
    }

    /// Drives IR input `ir` (0-7).
    pub(crate) fn set_pin(&mut self, ir: u8, high: bool) {
        let mask = bit(ir);
        let was_high = self.pins & mask != 0;
        if high {
            self.pins |= mask;
        } else {
            self.pins &= !mask;
        }
        if self.level_mask() & mask != 0 {
            // Level-sensitive: the request is the pin.
            if high {
                self.irr |= mask;
            } else {
                self.irr &= !mask;
            }
        } else if high && !was_high {
            // Edge-sensitive: latched on the rising edge and held until acknowledged, so a
            // short pulse from a device is never lost.
            self.irr |= mask;
        }
    }

    /// Re-derives the IRR bits of level-triggered inputs from the pins.
    fn sync_level_irr(&mut self) {
        let level = self.level_mask();
        self.irr = (self.irr & !level) | (self.pins & level);
    }

    /// Priority rank of `ir`: 0 is the highest.
    fn rank(&self, ir: u8) -> u8 {
        ir.wrapping_sub(self.highest_priority) & 7
    }

    /// The highest-priority IR among `bits`.
    fn highest_of(&self, bits: u8) -> Option<u8> {
        (0..8u8)
            .map(|rank| self.highest_priority.wrapping_add(rank) & 7)
            .find(|&ir| bits & bit(ir) != 0)
    }

    /// The IR the priority resolver would present now, i.e. whether INT is asserted and for
    /// which level.
    pub(crate) fn pending_request(&self) -> Option<u8> {
        let requests = self.irr & !self.imr;
        if self.special_mask {
            // 8259A, special mask mode: masking a level enables all other unmasked levels,
            // lower as well as higher; only a level's own in-service bit still holds it off.
            return self.highest_of(requests & !self.isr);
        }
        let ir = self.highest_of(requests)?;
        let Some(in_service) = self.highest_of(self.isr) else {
            return Some(ir);
        };
        let (request_rank, service_rank) = (self.rank(ir), self.rank(in_service));
        // 8259A, special fully nested mode: a slave's higher-priority request passes the
        // master while that slave's IR is already in service.
        let nested_slave =
            request_rank == service_rank && self.special_fully_nested() && self.routes_to_slave(ir);
        (request_rank < service_rank || nested_slave).then_some(ir)
    }

    pub(crate) fn int_output(&self) -> bool {
        self.pending_request().is_some()
    }

    /// The chip's part of an INTA cycle (or of a poll read): sets the ISR bit of the winning
    /// request and clears its IRR bit. `None` when nothing is requesting (a spurious INTA).
    pub(crate) fn acknowledge(&mut self) -> Option<u8> {
        let ir = self.pending_request()?;
        self.irr &= !bit(ir);
        self.sync_level_irr();
        if self.auto_eoi() {
            // 8259A, AEOI: the ISR bit is reset at the end of the last INTA pulse.
            if self.rotate_on_auto_eoi {
                self.highest_priority = next_ir(ir);
            }
        } else {
            self.isr |= bit(ir);
        }
        Some(ir)
    }

    /// A write with A0 = 0: ICW1, OCW2 or OCW3 depending on D4/D3.
    pub(crate) fn write_command(&mut self, value: u8) {
        if value & ICW1_SELECT != 0 {
            self.write_icw1(value);
        } else if value & OCW3_SELECT != 0 {
            self.write_ocw3(value);
        } else {
            self.write_ocw2(value);
        }
    }

    /// A write with A0 = 1: the next ICW of an initialisation sequence, else OCW1.
    pub(crate) fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            InitStep::Icw2 => {
                self.vector_base = value & 0xf8;
                if !self.single {
                    InitStep::Icw3
                } else if self.icw4_expected {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                }
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                if self.icw4_expected {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                }
            }
            InitStep::Icw4 => {
                self.icw4 = value & ICW4_DEFINED;
                InitStep::Ready
            }
            InitStep::Ready => {
                self.imr = value;
                InitStep::Ready
            }
        };
    }

    fn write_icw1(&mut self, value: u8) {
        self.init = InitStep::Icw2;
        self.icw4_expected = value & ICW1_IC4 != 0;
        self.single = value & ICW1_SNGL != 0;
        self.level_triggered = value & ICW1_LTIM != 0;
        // 8259A, ICW1: edge sense reset, IMR cleared, IR7 lowest priority, special mask mode
        // off, status read set to IRR, ICW4 functions zero when no ICW4 follows. The ISR is
        // cleared too so a guest re-initialising mid-interrupt is not left blocked.
        self.imr = 0;
        self.isr = 0;
        self.irr = 0;
        self.sync_level_irr();
        self.highest_priority = 0;
        self.special_mask = false;
        self.read_isr = false;
        self.poll = false;
        self.rotate_on_auto_eoi = false;
        if !self.icw4_expected {
            self.icw4 = 0;
        }
    }

    fn write_ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Non-specific EOI.
            0b001 => {
                let _ = self.non_specific_eoi();
            }
            // Rotate on non-specific EOI: the level just ended becomes the lowest.
            0b101 => {
                if let Some(ir) = self.non_specific_eoi() {
                    self.highest_priority = next_ir(ir);
                }
            }
            // Specific EOI.
            0b011 => self.isr &= !bit(level),
            // Rotate on specific EOI.
            0b111 => {
                self.isr &= !bit(level);
                self.highest_priority = next_ir(level);
            }
            // Set priority: `level` becomes the lowest.
            0b110 => self.highest_priority = next_ir(level),
            // Rotate in automatic EOI mode: set / clear.
            0b100 => self.rotate_on_auto_eoi = true,
            0b000 => self.rotate_on_auto_eoi = false,
            // 0b010: no operation.
            _ => {}
        }
    }

    /// Resets the highest-priority ISR bit and returns its level. In special mask mode a
    /// masked ISR bit is not cleared by a non-specific EOI (8259A, End of Interrupt).
    fn non_specific_eoi(&mut self) -> Option<u8> {
        let candidates = if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        };
        let ir = self.highest_of(candidates)?;
        self.isr &= !bit(ir);
        Some(ir)
    }

    fn write_ocw3(&mut self, value: u8) {
        if value & OCW3_ESMM != 0 {
            self.special_mask = value & OCW3_SMM != 0;
        }
        if value & OCW3_POLL != 0 {
            self.poll = true;
        }
        if value & OCW3_RR != 0 {
            self.read_isr = value & OCW3_RIS != 0;
        }
    }

    /// A read with A0 = 0: the poll word after a poll command, else IRR or ISR per OCW3.
    pub(crate) fn read_command(&mut self) -> u8 {
        if let Some(word) = self.take_poll() {
            return word;
        }
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    /// A read with A0 = 1: the poll word after a poll command, else the IMR.
    pub(crate) fn read_data(&mut self) -> u8 {
        self.take_poll().unwrap_or(self.imr)
    }

    /// 8259A, poll command: the next RD pulse is an interrupt acknowledge that returns
    /// I (bit 7) and the level W2-W0 instead of a vector.
    fn take_poll(&mut self) -> Option<u8> {
        if !self.poll {
            return None;
        }
        self.poll = false;
        Some(self.acknowledge().map_or(0, |ir| POLL_INTERRUPT | ir))
    }

    pub(crate) fn write_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_writable;
        self.sync_level_irr();
    }

    pub(crate) fn read_isr_selected(&self) -> bool {
        self.read_isr
    }

    pub(crate) fn poll_pending(&self) -> bool {
        self.poll
    }
}
