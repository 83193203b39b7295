//! A register-level model of the PC/AT programmable interrupt controller: two Intel 8259A
//! chips, the slave's INT output wired to the master's IR2, plus the PIIX edge/level control
//! registers (ELCR).
//!
//! [`DualPic`] knows only its registers. A VMM:
//!
//! 1. creates it with an [`IrqLine`] that stands for the master's INT pin (the CPU's INTR):
//!    when that line rises, the VMM kicks the vCPU or asks KVM for an interrupt window;
//! 2. puts it on its PIO bus at [`PIC_MASTER_BASE`], [`PIC_SLAVE_BASE`] and [`ELCR_BASE`]
//!    (two ports each) through [`vm_device::MutDevicePio`], or calls
//!    [`DualPic::read_port`] / [`DualPic::write_port`] itself;
//! 3. lets devices drive ISA IRQs 0-15 with [`DualPic::set_irq_level`] (or a
//!    [`PicInputLine`], an [`IrqLine`] bound to one input);
//! 4. when the vCPU can take an interrupt and [`DualPic::interrupt_pending`] is true, runs
//!    the INTA cycle with [`DualPic::acknowledge`] and injects the returned vector
//!    (`KVM_INTERRUPT`).
//!
//! The model has no threads, timers or KVM calls, so it runs the same in a unit test.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::RecordingLine;
//! use vmkit_i8259::DualPic;
//!
//! let intr = Arc::new(RecordingLine::new());
//! let mut pic = DualPic::new(Arc::clone(&intr));
//!
//! // What Linux's init_8259A() writes: vectors 0x30/0x38, slave on IR2, 8086 mode.
//! for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01),
//!                       (0xa0, 0x11), (0xa1, 0x38), (0xa1, 0x02), (0xa1, 0x01)] {
//!     pic.write_port(port, &[value]);
//! }
//!
//! // The RTC (IRQ 8) raises its line: INT goes high through the cascade.
//! pic.set_irq_level(8, true).unwrap();
//! assert!(intr.level());
//! assert_eq!(pic.acknowledge(), 0x38);
//! pic.set_irq_level(8, false).unwrap();
//!
//! // A slave interrupt is ended on both chips with specific EOIs.
//! pic.write_port(0xa0, &[0x60]);
//! pic.write_port(0x20, &[0x62]);
//! assert!(!pic.interrupt_pending());
//! ```
//!
//! Not modelled: 8080/8085 mode (the INTA cycle always yields an 8086 vector), buffered
//! mode (the chips' roles are fixed by their sockets, as on the AT), and the 0x20-0x3f /
//! 0xa0-0xbf port aliases of some chipsets.
#![forbid(unsafe_code)]

mod chip;
mod state;

use std::sync::{Arc, Mutex, PoisonError};

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_hw::IrqLine;

use chip::{InitStep, Role, I8259};
pub use state::{ChipState, PicState, PIC_STATE_VERSION};

/// First port of the master 8259A (command / status; the data / IMR port follows).
pub const PIC_MASTER_BASE: u16 = 0x20;
/// First port of the slave 8259A.
pub const PIC_SLAVE_BASE: u16 = 0xa0;
/// Ports each 8259A decodes (A0 = 0 and A0 = 1).
pub const PIC_PORT_COUNT: u16 = 2;
/// The master's ELCR port; the slave's ELCR is at the next port.
pub const ELCR_BASE: u16 = 0x4d0;
/// Ports of the ELCR pair.
pub const ELCR_PORT_COUNT: u16 = 2;
/// The master input the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;
/// ISA IRQ lines handled by the pair (0-15).
pub const IRQ_COUNT: u8 = 16;
/// The ELCR bits the PIIX implements on the master: IRQ 0, 1 and 2 are always edge.
pub const MASTER_ELCR_MASK: u8 = 0xf8;
/// The ELCR bits the PIIX implements on the slave: IRQ 8 and 13 are always edge.
pub const SLAVE_ELCR_MASK: u8 = 0xde;

/// Master ICW3 of the PC/AT wiring: a slave on IR2.
const MASTER_CASCADE_ICW3: u8 = 1 << CASCADE_IRQ;
/// Slave ICW3 of the PC/AT wiring: slave ID 2.
const SLAVE_CASCADE_ICW3: u8 = CASCADE_IRQ;
/// What the CPU reads when no chip drives the data bus during INTA.
const OPEN_BUS: u8 = 0xff;

/// Errors of the VMM-facing API (guest port accesses never fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The line number is outside the sixteen ISA IRQs.
    #[error("IRQ line {0} does not exist: the PC/AT 8259A pair has ISA IRQ lines 0-15")]
    InvalidLine(u8),
    /// IRQ 2 is internal to the pair.
    #[error(
        "IRQ 2 is the master 8259A's cascade input from the slave and cannot be driven; \
         connect an ISA device that uses IRQ 2 to IRQ 9, as the PC/AT bus does"
    )]
    CascadeLine,
    /// A saved state of a layout version this build does not read.
    #[error("i8259 state version {found} is not supported (this build reads version {supported})")]
    StateVersion {
        /// The version in the state.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A saved state no 8259A pair can be in.
    #[error("invalid i8259 state: {field} = {value} is out of range")]
    InvalidState {
        /// The field, such as `master.init_step`.
        field: &'static str,
        /// Its value.
        value: u8,
    },
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One chip of the pair, for [`DualPic::registers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// The master at ports 0x20/0x21, IRQs 0-7, INT to the CPU.
    Master,
    /// The slave at ports 0xa0/0xa1, IRQs 8-15, INT to the master's IR2.
    Slave,
}

/// A snapshot of one chip's state, for debugging, tracing and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChipRegisters {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Edge/level control register (1 = level-triggered).
    pub elcr: u8,
    /// Current levels of the eight IR inputs.
    pub input_levels: u8,
    /// Vector of IR0 (ICW2 with bits 2-0 clear).
    pub vector_base: u8,
    /// ICW3 as last written (master: slave bitmap; slave: ID in bits 2-0).
    pub icw3: u8,
    /// ICW4 bits 4-0 as last written (zero when ICW1 said no ICW4 follows).
    pub icw4: u8,
    /// The IR with the highest priority (0 unless rotated).
    pub highest_priority_irq: u8,
    /// ICW1 LTIM: every input level-triggered regardless of the ELCR.
    pub level_triggered_mode: bool,
    /// ICW1 SNGL: no cascade.
    pub single_mode: bool,
    /// OCW3 special mask mode.
    pub special_mask_mode: bool,
    /// OCW2 rotate in automatic EOI mode.
    pub rotate_on_auto_eoi: bool,
    /// OCW3 selects the ISR (not the IRR) for reads of the command port.
    pub read_selects_isr: bool,
    /// A poll command waits for the next read.
    pub poll_pending: bool,
    /// An ICW1 was written and ICW2-ICW4 are still expected.
    pub initializing: bool,
}

/// The PC/AT pair of 8259A interrupt controllers with the PIIX ELCR registers.
///
/// `L` is the master's INT output (the CPU's INTR input); it is driven only when the level
/// changes. After [`acknowledge`](Self::acknowledge) or an EOI another interrupt may already
/// be pending with the line still high, so a VMM checks
/// [`interrupt_pending`](Self::interrupt_pending) before each entry into the guest rather
/// than waiting for a new rising edge.
///
/// The output line is called with `&mut self` borrowed (so under the lock of a
/// `Mutex<DualPic>`): its implementation must not call back into this device.
#[derive(Debug)]
pub struct DualPic<L: IrqLine> {
    master: I8259,
    slave: I8259,
    output: L,
    int_level: bool,
}

impl<L: IrqLine> DualPic<L> {
    /// Creates the pair in its power-on state (see [`reset`](Self::reset)) driving `output`.
    pub fn new(output: L) -> Self {
        Self {
            master: I8259::new(Role::Master, MASTER_ELCR_MASK, MASTER_CASCADE_ICW3),
            slave: I8259::new(Role::Slave, SLAVE_ELCR_MASK, SLAVE_CASCADE_ICW3),
            output,
            int_level: false,
        }
    }

    /// Returns both chips to their power-on state, as a machine reset does: no request, none
    /// in service, nothing masked, vector base 0, IR0 highest priority, 8086 mode with normal
    /// EOI, edge-triggered with the ELCRs cleared, and the PC/AT cascade (slave on IR2)
    /// assumed until the guest programs ICW3. Input levels are kept; a line held high must go
    /// low and high again to make a new edge. INT is lowered.
    pub fn reset(&mut self) {
        self.master.reset(MASTER_CASCADE_ICW3);
        self.slave.reset(SLAVE_CASCADE_ICW3);
        self.update_outputs();
    }

    /// The INT output line given at construction.
    pub fn output(&self) -> &L {
        &self.output
    }

    /// Drives ISA IRQ `line` (0-15, except the cascade IRQ 2) to `high`.
    ///
    /// An edge-triggered input latches a request on a rising edge (a pulse is enough); a
    /// level-triggered input (ELCR bit or ICW1 LTIM) requests while it is high.
    pub fn set_irq_level(&mut self, line: u8, high: bool) -> Result<()> {
        match line {
            CASCADE_IRQ => return Err(Error::CascadeLine),
            0..=7 => self.master.set_pin(line, high),
            8..=15 => self.slave.set_pin(line - 8, high),
            _ => return Err(Error::InvalidLine(line)),
        }
        self.update_outputs();
        Ok(())
    }

    /// The level of the master's INT output: an interrupt is waiting for an INTA cycle.
    pub fn interrupt_pending(&self) -> bool {
        self.int_level
    }

    /// The vector [`acknowledge`](Self::acknowledge) would return now, without changing any
    /// state; `None` while INT is low.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.int_level {
            return None;
        }
        let ir = self.master.pending_request()?;
        if !self.master.routes_to_slave(ir) {
            return Some(self.master.vector_base | ir);
        }
        if self.slave.slave_id() != ir {
            return Some(OPEN_BUS);
        }
        let slave_ir = self.slave.pending_request().unwrap_or(7);
        Some(self.slave.vector_base | slave_ir)
    }

    /// Runs an INTA cycle and returns the vector the CPU reads.
    ///
    /// Call it when the CPU takes the interrupt (INT was high and the vCPU can accept one).
    /// As on the 8259A, if the request went away in the meantime the master answers with its
    /// spurious vector (base + 7) without setting an in-service bit; if the master's request
    /// was a cascade from a slave whose own request went away, the master acknowledges IR2
    /// normally and the slave answers with its base + 7. If the master's ICW3 names a slave
    /// IR that the slave's ID does not match, nothing drives the bus and 0xff is returned.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.acknowledge() {
            None => self.master.vector_base | 7,
            Some(ir) if self.master.routes_to_slave(ir) => {
                if self.slave.slave_id() == ir {
                    let slave_ir = self.slave.acknowledge().unwrap_or(7);
                    // The slave's INT drops during INTA; if it rises again right after (AEOI
                    // with another request waiting) the master must see a new edge on IR2.
                    self.master.set_pin(CASCADE_IRQ, false);
                    self.slave.vector_base | slave_ir
                } else {
                    OPEN_BUS
                }
            }
            Some(ir) => self.master.vector_base | ir,
        };
        self.update_outputs();
        vector
    }

    /// A snapshot of one chip's registers.
    pub fn registers(&self, chip: Chip) -> ChipRegisters {
        let c = match chip {
            Chip::Master => &self.master,
            Chip::Slave => &self.slave,
        };
        ChipRegisters {
            irr: c.irr,
            isr: c.isr,
            imr: c.imr,
            elcr: c.elcr,
            input_levels: c.pins,
            vector_base: c.vector_base,
            icw3: c.icw3,
            icw4: c.icw4,
            highest_priority_irq: c.highest_priority,
            level_triggered_mode: c.level_triggered,
            single_mode: c.single,
            special_mask_mode: c.special_mask,
            rotate_on_auto_eoi: c.rotate_on_auto_eoi,
            read_selects_isr: c.read_isr_selected(),
            poll_pending: c.poll_pending(),
            initializing: c.init != InitStep::Ready,
        }
    }

    /// Reads `data.len()` bytes starting at I/O port `port` (absolute: 0x20, 0x21, 0xa0,
    /// 0xa1, 0x4d0, 0x4d1). A wider access is split into byte accesses at consecutive
    /// ports, as the ISA bus does; ports outside the pair read 0xff.
    pub fn read_port(&mut self, port: u16, data: &mut [u8]) {
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = match port_at(port, index) {
                Some(p) => self.read_byte(p),
                None => 0xff,
            };
        }
    }

    /// Writes `data` starting at I/O port `port`, one byte per consecutive port; writes to
    /// ports outside the pair are ignored.
    pub fn write_port(&mut self, port: u16, data: &[u8]) {
        for (index, &byte) in data.iter().enumerate() {
            if let Some(p) = port_at(port, index) {
                self.write_byte(p, byte);
            }
        }
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        let value = match port {
            0x20 => self.master.read_command(),
            0x21 => self.master.read_data(),
            0xa0 => self.slave.read_command(),
            0xa1 => self.slave.read_data(),
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => return 0xff,
        };
        // A poll read is an acknowledge and may change INT.
        self.update_outputs();
        value
    }

    fn write_byte(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xa0 => self.slave.write_command(value),
            0xa1 => self.slave.write_data(value),
            0x4d0 => self.master.write_elcr(value),
            0x4d1 => self.slave.write_elcr(value),
            _ => return,
        }
        self.update_outputs();
    }

    /// Propagates the slave's INT to the master's IR2 and the master's INT to the output.
    fn update_outputs(&mut self) {
        let slave_int = self.slave.int_output();
        self.master.set_pin(CASCADE_IRQ, slave_int);
        let int = self.master.int_output();
        if int != self.int_level {
            self.int_level = int;
            self.output.set_level(int);
        }
    }
}

/// The port of byte `index` of an access at `port`, if it exists.
fn port_at(port: u16, index: usize) -> Option<u16> {
    u16::try_from(index)
        .ok()
        .and_then(|offset| port.checked_add(offset))
}

/// PIO bus access. Register the same device for three ranges: ([`PIC_MASTER_BASE`], 2),
/// ([`PIC_SLAVE_BASE`], 2) and ([`ELCR_BASE`], 2). The bus passes the range start as `base`,
/// and the device serves the absolute port `base + offset`, which tells the three ranges
/// apart.
impl<L: IrqLine> MutDevicePio for DualPic<L> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match base.0.checked_add(offset) {
            Some(port) => self.read_port(port, data),
            None => data.fill(0xff),
        }
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let Some(port) = base.0.checked_add(offset) {
            self.write_port(port, data);
        }
    }
}

/// An [`IrqLine`] bound to one input of a shared [`DualPic`], to hand to a device model
/// (PIT on IRQ 0, serial port on IRQ 4, ...).
///
/// Setting its level locks the PIC, so the device's own lock is taken before the PIC's; the
/// PIC's output line must not lock devices.
pub struct PicInputLine<L: IrqLine> {
    pic: Arc<Mutex<DualPic<L>>>,
    line: u8,
}

impl<L: IrqLine> PicInputLine<L> {
    /// Binds ISA IRQ `line` of `pic`; fails for lines the pair cannot drive (2, 16+).
    pub fn new(pic: Arc<Mutex<DualPic<L>>>, line: u8) -> Result<Self> {
        match line {
            CASCADE_IRQ => Err(Error::CascadeLine),
            0..=15 => Ok(Self { pic, line }),
            _ => Err(Error::InvalidLine(line)),
        }
    }

    /// The ISA IRQ this line drives.
    pub fn line(&self) -> u8 {
        self.line
    }
}

impl<L: IrqLine> std::fmt::Debug for PicInputLine<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PicInputLine")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl<L: IrqLine> IrqLine for PicInputLine<L> {
    fn set_level(&self, high: bool) {
        // A panic elsewhere while holding the lock leaves registers that are still valid.
        let mut pic = self.pic.lock().unwrap_or_else(PoisonError::into_inner);
        // The line was validated in `new`.
        let _ = pic.set_irq_level(self.line, high);
    }
}

#[cfg(test)]
mod tests;
