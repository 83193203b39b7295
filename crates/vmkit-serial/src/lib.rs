//! A register-level model of the National Semiconductor PC16550D UART, the PC's
//! 8250/16450/16550A serial port, for KVM virtual machine monitors.
//!
//! [`Serial`] knows only its eight registers. Everything else crosses the device boundary
//! through small interfaces, so the same model runs under a VMM and in unit tests:
//!
//! - the interrupt output is a [`vmkit_hw::IrqLine`] (level-triggered, gated by MCR OUT2
//!   as on a PC, see [`Serial::new`]);
//! - time comes from a [`vmkit_hw::Clock`]; the only time-driven behaviour is the receive
//!   FIFO's character timeout, announced by [`Serial::next_deadline_ns`] and applied by
//!   [`Serial::update`], so the VMM arms one host timer and never polls;
//! - transmitted bytes go to any [`std::io::Write`] (a terminal, a file, a socket);
//! - received bytes are pushed by the VMM with [`Serial::enqueue_input`], which accepts
//!   only what fits; [`Serial::input_room`] and the optional input-room line
//!   ([`Serial::with_input_room_line`]) tell the VMM when to read its input source again,
//!   so no byte is ever dropped, however slowly the guest reads.
//!
//! Modelled: all registers (RBR/THR, IER, IIR/FCR, LCR with DLAB and the divisor latch,
//! MCR, LSR, MSR, SCR), 16-byte FIFOs with trigger levels 1/4/8/14, the character
//! timeout, the datasheet's interrupt priorities and clearing rules, THRE on enabling
//! ETBEI, loopback with MCR-to-MSR wiring, and receiver overrun (only producible in
//! loopback). Not modelled: parity, framing and break errors (the virtual line is
//! perfect), transmission time (bytes leave at once), DMA mode pins, and break in
//! loopback.
//!
//! The device is an 8-bit ISA device at offsets 0..8 from its base ([`COM1_BASE`]...):
//! wider accesses are split into consecutive byte accesses, and offsets past 7 read 0xFF.
//! It also implements [`vm_device::MutDevicePio`], so a rust-vmm PIO bus can hold a
//! `Mutex<Serial<..>>` registered at the port's base with length [`PORT_RANGE_LEN`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::{ManualClock, RecordingLine};
//! use vmkit_serial::{regs, ComPort, Serial};
//!
//! let irq = Arc::new(RecordingLine::new());
//! let mut uart = Serial::new(irq.clone(), ManualClock::new(0), Vec::new());
//!
//! // The guest sets 115200 8N1, enables the FIFOs and the receive interrupt, and sets OUT2.
//! uart.write(regs::LCR, &[regs::LCR_DLAB]);
//! uart.write(regs::DLL, &[1, 0]); // DLL then DLM, as an `out dx, ax` would
//! uart.write(regs::LCR, &[0x03]);
//! uart.write(regs::IIR_FCR, &[regs::FCR_ENABLE]);
//! uart.write(regs::IER, &[regs::IER_ERBFI]);
//! uart.write(regs::MCR, &[regs::MCR_DTR | regs::MCR_RTS | regs::MCR_OUT2]);
//!
//! // The guest transmits; the byte reaches the output writer at once.
//! uart.write(regs::RBR_THR, b"!");
//! assert_eq!(uart.output().as_slice(), b"!");
//!
//! // The VMM pushes input; the guest gets an interrupt and reads it.
//! assert_eq!(uart.enqueue_input(b"hi"), 2);
//! assert!(irq.level());
//! let mut byte = [0u8];
//! uart.read(regs::RBR_THR, &mut byte);
//! assert_eq!(&byte, b"h");
//!
//! assert_eq!(ComPort::Com1.base(), 0x3F8);
//! assert_eq!("ttyS1".parse::<ComPort>().unwrap(), ComPort::Com2);
//! ```
#![forbid(unsafe_code)]

pub mod regs;
mod uart;

use std::fmt;
use std::str::FromStr;

pub use uart::{Serial, SerialState, DEFAULT_MODEM_INPUTS, SERIAL_STATE_VERSION};

/// Base I/O port of COM1.
pub const COM1_BASE: u16 = 0x3F8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;
/// Base I/O port of COM2.
pub const COM2_BASE: u16 = 0x2F8;
/// ISA IRQ of COM2.
pub const COM2_IRQ: u32 = 3;
/// Base I/O port of COM3.
pub const COM3_BASE: u16 = 0x3E8;
/// ISA IRQ of COM3 (shared with COM1 on a PC).
pub const COM3_IRQ: u32 = 4;
/// Base I/O port of COM4.
pub const COM4_BASE: u16 = 0x2E8;
/// ISA IRQ of COM4 (shared with COM2 on a PC).
pub const COM4_IRQ: u32 = 3;

/// Number of consecutive I/O ports a UART occupies from its base.
pub const PORT_RANGE_LEN: u16 = 8;
/// Depth of the receive and transmit FIFOs.
pub const FIFO_SIZE: usize = 16;
/// The PC's UART input clock (XIN); one bit lasts 16 clocks times the divisor.
pub const UART_CLOCK_HZ: u64 = 1_843_200;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A serial port name or number that is not COM1 to COM4.
    #[error("unknown serial port `{0}`: expected com1..com4, ttyS0..ttyS3 or a number 1..4")]
    UnknownPort(String),
    /// The output writer failed; the bytes it refused were dropped.
    #[error(
        "writing serial output failed ({failed_writes} byte(s) dropped so far); \
         check the output file, pipe or terminal: {source}"
    )]
    Output {
        /// How many bytes have failed to be written since the device was created.
        failed_writes: u64,
        /// The most recent error from the writer.
        #[source]
        source: std::io::Error,
    },
    /// A saved state of a layout version this build does not read.
    #[error(
        "serial state version {found} is not supported (this build reads version {supported})"
    )]
    StateVersion {
        /// The version in the state.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A saved state no PC16550D can be in; the text names the field.
    #[error("invalid serial state: {0}")]
    InvalidState(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One of the four standard PC serial ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComPort {
    /// COM1: ports 0x3F8..0x400, IRQ 4 (Linux ttyS0).
    Com1,
    /// COM2: ports 0x2F8..0x300, IRQ 3 (Linux ttyS1).
    Com2,
    /// COM3: ports 0x3E8..0x3F0, IRQ 4 (Linux ttyS2).
    Com3,
    /// COM4: ports 0x2E8..0x2F0, IRQ 3 (Linux ttyS3).
    Com4,
}

impl ComPort {
    /// All four ports, in order.
    pub const ALL: [ComPort; 4] = [Self::Com1, Self::Com2, Self::Com3, Self::Com4];

    /// The port's base I/O address.
    pub const fn base(self) -> u16 {
        match self {
            Self::Com1 => COM1_BASE,
            Self::Com2 => COM2_BASE,
            Self::Com3 => COM3_BASE,
            Self::Com4 => COM4_BASE,
        }
    }

    /// The port's ISA IRQ number.
    pub const fn irq(self) -> u32 {
        match self {
            Self::Com1 => COM1_IRQ,
            Self::Com2 => COM2_IRQ,
            Self::Com3 => COM3_IRQ,
            Self::Com4 => COM4_IRQ,
        }
    }

    /// The port numbered `number` (1 for COM1 ... 4 for COM4).
    pub fn from_number(number: u8) -> Result<Self> {
        match number {
            1 => Ok(Self::Com1),
            2 => Ok(Self::Com2),
            3 => Ok(Self::Com3),
            4 => Ok(Self::Com4),
            _ => Err(Error::UnknownPort(number.to_string())),
        }
    }
}

impl fmt::Display for ComPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = match self {
            Self::Com1 => 1,
            Self::Com2 => 2,
            Self::Com3 => 3,
            Self::Com4 => 4,
        };
        write!(f, "COM{number}")
    }
}

/// Parses `com1`..`com4` (any case), Linux's `ttyS0`..`ttyS3`, or `1`..`4`.
impl FromStr for ComPort {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let number = if let Some(rest) = lower.strip_prefix("com") {
            rest.parse::<u8>().ok()
        } else if let Some(rest) = lower.strip_prefix("ttys") {
            rest.parse::<u8>().ok().and_then(|n| n.checked_add(1))
        } else {
            lower.parse::<u8>().ok()
        };
        number
            .and_then(|n| Self::from_number(n).ok())
            .ok_or_else(|| Error::UnknownPort(name.to_string()))
    }
}

/// The UART's character timeout (and transmit pacing) runs on the shared device timers.
impl<L: vmkit_hw::IrqLine, C: vmkit_hw::Clock, W: std::io::Write + Send> vmkit_hw::TimedDevice
    for Serial<L, C, W>
{
    fn next_deadline_ns(&self) -> Option<u64> {
        Serial::next_deadline_ns(self)
    }

    fn update(&mut self) {
        Serial::update(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn com_ports_parse_and_map_to_pc_resources() {
        assert_eq!("COM3".parse::<ComPort>().unwrap(), ComPort::Com3);
        assert_eq!("ttyS0".parse::<ComPort>().unwrap(), ComPort::Com1);
        assert_eq!("4".parse::<ComPort>().unwrap(), ComPort::Com4);
        assert_eq!(ComPort::Com2.base(), 0x2F8);
        assert_eq!(ComPort::Com4.irq(), 3);
        assert_eq!(ComPort::Com3.to_string(), "COM3");
        for bad in ["com0", "com5", "ttyS4", "ttyS255", "", "serial"] {
            let err = bad.parse::<ComPort>().unwrap_err();
            assert!(err.to_string().contains("expected com1..com4"), "{err}");
        }
        assert!(ComPort::from_number(0).is_err());
    }
}
