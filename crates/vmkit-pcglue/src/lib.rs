//! Register-level models of the small "glue" devices every PC guest expects.
//!
//! | module | device | ports |
//! |---|---|---|
//! | [`i8042`] | 8042 keyboard controller, enough for CPU reset, A20 and Linux's probe | 0x60, 0x64 |
//! | [`post`] | POST code sink / Linux's `outb_p` I/O-delay port | 0x80 |
//! | [`cmos`] | CMOS RAM and MC146818A real-time clock | 0x70, 0x71 |
//! | [`debug_exit`] | QEMU's `isa-debug-exit`: the guest asks the VMM to exit | 0x501..0x503 by default |
//! | [`testdev`] | QEMU's `pc-testdev` (kvm-unit-tests): scratch register, flush port, IRQ lines, 64 KiB memory window | 0xE0-0xEB, 0x2000-0x2017, 0xFF000000 |
//!
//! Like the other vmkit device crates these know only their registers: no KVM, no bus, no
//! threads. Outputs go through [`vmkit_hw::IrqLine`] (the i8042's CPU-reset line and its
//! optional IRQ1/IRQ12) or the small [`ExitRequest`] trait; time comes in through
//! [`vmkit_hw::WallClock`] and [`vmkit_hw::Clock`].
//!
//! Each device has inherent `read(offset, data)` / `write(offset, data)` methods, offsets
//! relative to the device's base port, and implements [`vm_device::MutDevicePio`] so a
//! rust-vmm PIO bus can hold `Mutex<Device>` directly. The PIO implementations work out the
//! absolute port as `base + offset`, so a VMM may register a device as one range or as one
//! range per port (the i8042 must be two ranges, 0x60 and 0x64, because 0x61 is the PIT's
//! port B). 8-bit devices split a wider access into byte accesses at consecutive ports, as
//! the ISA bus does; ports outside a device read 0xFF and ignore writes.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::{FixedWallClock, ManualClock, RecordingLine};
//! use vmkit_pcglue::{
//!     Cmos, CmosMemoryLayout, DebugExit, I8042, PostPort, RecordingExit, CMOS_DATA_PORT,
//!     CMOS_INDEX_PORT, I8042_COMMAND_PORT, I8042_DATA_PORT,
//! };
//!
//! // i8042: Linux's reboot=k writes 0xFE to port 0x64, which pulses the CPU reset line.
//! let reset = Arc::new(RecordingLine::new());
//! let mut kbc = I8042::new(reset.clone());
//! let command = u64::from(I8042_COMMAND_PORT - I8042_DATA_PORT);
//! let mut status = [0u8];
//! kbc.read(command, &mut status);
//! assert_eq!(status[0] & 0x02, 0, "input buffer empty: the guest may write");
//! kbc.write(command, &[0xFE]);
//! assert_eq!(reset.rising_edges(), 1);
//!
//! // CMOS: 2024-02-29 12:34:56 UTC, read back in the BIOS default BCD, 24-hour mode.
//! let wall = FixedWallClock::new(1_709_210_096);
//! let layout = CmosMemoryLayout::new(128 << 20, 0);
//! let mut cmos = Cmos::new(wall, ManualClock::new(0), layout).unwrap();
//! let data = u64::from(CMOS_DATA_PORT - CMOS_INDEX_PORT);
//! let mut byte = [0u8];
//! for (index, expected) in [(0x00, 0x56), (0x02, 0x34), (0x04, 0x12), (0x07, 0x29), (0x08, 0x02), (0x09, 0x24), (0x32, 0x20)] {
//!     cmos.write(0, &[index]);
//!     cmos.read(data, &mut byte);
//!     assert_eq!(byte[0], expected);
//! }
//!
//! // POST codes and the debug-exit port.
//! let mut post = PostPort::new();
//! post.write(0, &[0x42]);
//! assert_eq!(post.last_value(), Some(0x42));
//! let exit = Arc::new(RecordingExit::new());
//! let mut debug_exit = DebugExit::new(exit.clone());
//! debug_exit.write(0, &[0x10]);
//! assert_eq!(exit.last_status(), Some(0x21));
//! ```
#![forbid(unsafe_code)]

pub mod calendar;
pub mod cmos;
pub mod debug_exit;
pub mod debugcon;
pub mod i8042;
pub mod post;
pub mod testdev;

pub use cmos::{Cmos, CmosMemoryLayout, CmosState, CMOS_STATE_VERSION};
pub use debug_exit::{DebugExit, ExitFn, ExitRequest, RecordingExit};
pub use debugcon::DebugCon;
pub use i8042::{I8042State, I8042, I8042_STATE_VERSION};
pub use post::PostPort;
pub use testdev::{PcTestdev, TestdevIrq};

use vm_device::bus::{PioAddress, PioAddressOffset};

/// i8042 data port: output buffer on read, keyboard data or command parameter on write.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 status register on read, controller command on write.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// ISA IRQ of the i8042's keyboard (first) port.
pub const I8042_KBD_IRQ: u32 = 1;
/// ISA IRQ of the i8042's auxiliary (mouse) port.
pub const I8042_AUX_IRQ: u32 = 12;
/// POST diagnostic port; also Linux's I/O-delay port.
pub const POST_PORT: u16 = 0x80;
/// CMOS index port (bit 7: NMI disable).
pub const CMOS_INDEX_PORT: u16 = 0x70;
/// CMOS data port.
pub const CMOS_DATA_PORT: u16 = 0x71;
/// QEMU `isa-debug-exit` default `iobase`.
pub const DEBUG_EXIT_DEFAULT_PORT: u16 = 0x501;
/// QEMU `isa-debug-exit` default `iosize`.
pub const DEBUG_EXIT_DEFAULT_SIZE: u16 = 2;

/// Errors from configuring the devices (guest accesses never fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A saved state of a layout version this build does not read.
    #[error(
        "{device} state version {found} is not supported (this build reads version {supported})"
    )]
    StateVersion {
        /// The device.
        device: &'static str,
        /// The version in the state.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A saved state the device cannot be in.
    #[error("invalid {device} state: {field}")]
    InvalidState {
        /// The device.
        device: &'static str,
        /// The field and what is wrong with it.
        field: &'static str,
    },
    /// The CMOS memory layout puts more than 4 GiB below 4 GiB.
    #[error(
        "CMOS memory layout has {below_4g:#x} bytes below 4 GiB, more than 4 GiB; \
         put the memory above the PCI hole in `above_4g`"
    )]
    BelowFourGibTooLarge {
        /// The rejected `below_4g` value in bytes.
        below_4g: u64,
    },
    /// A CMOS byte index outside the 128-byte CMOS.
    #[error("CMOS index {index:#x} is outside the 128-byte CMOS (0x00..=0x7f)")]
    CmosIndexOutOfRange {
        /// The rejected index.
        index: u8,
    },
    /// A CMOS byte index that belongs to the clock, not to plain CMOS RAM.
    #[error(
        "CMOS index {index:#x} is a clock or status register (0x00..=0x0d, 0x32); \
         the time comes from the wall clock and the guest"
    )]
    CmosIndexIsClock {
        /// The rejected index.
        index: u8,
    },
    /// A debug-exit port range that is empty or does not fit below port 0x10000.
    #[error(
        "debug-exit port range {base:#x} + {size} is empty or runs past port 0xffff; \
         use a size of 1 to 4 ports (QEMU's default is {DEBUG_EXIT_DEFAULT_PORT:#x} + 2)"
    )]
    InvalidDebugExitRange {
        /// The rejected base port.
        base: u16,
        /// The rejected size in ports.
        size: u16,
    },
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Offset of the absolute port `base + offset` from `device_base`; `u64::MAX` (out of every
/// device's range) when the port lies below the device.
pub(crate) fn pio_offset(device_base: u16, base: PioAddress, offset: PioAddressOffset) -> u64 {
    let port = u64::from(base.0) + u64::from(offset);
    port.checked_sub(u64::from(device_base)).unwrap_or(u64::MAX)
}

/// The offsets an ISA bus splits an access of `len` bytes at `offset` into.
pub(crate) fn byte_offsets(offset: u64, len: usize) -> impl Iterator<Item = u64> {
    (0..len).map(move |i| {
        u64::try_from(i)
            .ok()
            .and_then(|i| offset.checked_add(i))
            .unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pio_offset_uses_absolute_ports() {
        assert_eq!(pio_offset(0x60, PioAddress(0x64), 0), 4);
        assert_eq!(pio_offset(0x60, PioAddress(0x60), 4), 4);
        assert_eq!(pio_offset(0x70, PioAddress(0x10), 0), u64::MAX);
        assert_eq!(pio_offset(0, PioAddress(0xFFFF), 0xFFFF), 0x1_FFFE);
    }

    #[test]
    fn byte_offsets_never_overflow() {
        assert_eq!(byte_offsets(4, 3).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(
            byte_offsets(u64::MAX - 1, 3).collect::<Vec<_>>(),
            vec![u64::MAX - 1, u64::MAX, u64::MAX]
        );
        assert_eq!(byte_offsets(0, 0).count(), 0);
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let msg = Error::BelowFourGibTooLarge { below_4g: 5 << 30 }.to_string();
        assert!(msg.contains("above_4g"), "{msg}");
        let msg = Error::InvalidDebugExitRange {
            base: 0xFFFF,
            size: 2,
        }
        .to_string();
        assert!(msg.contains("0x501"), "{msg}");
    }
}
