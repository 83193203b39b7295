//! PCI configuration mechanism #1 (ports 0xCF8..=0xCFF) and PIIX3's reset control register.

use std::ops::Range;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::{DevFn, PciBus};

/// CONFIG_ADDRESS bit 31: configuration cycles enabled.
pub const CONFIG_ENABLE: u32 = 1 << 31;
/// The CONFIG_ADDRESS bits that latch: enable, bus (23:16), devfn (15:8), register (7:2).
/// Reserved bits 30:24 and 1:0 read back as 0, as on the 440FX.
pub const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;
/// Reset control register bit 1: system (hard) reset rather than a CPU-only soft reset.
pub const RCR_SYSTEM_RESET: u8 = 1 << 1;
/// Reset control register bit 2: perform the reset (reads back as 0).
pub const RCR_RESET_CPU: u8 = 1 << 2;

/// What the machine does when the guest writes the reset control register with bit 2 set;
/// the argument says whether bit 1 (hard/system reset) was set too.
///
/// It runs with the host's own lock held (inside a PIO dispatch): request the reset (set a
/// flag, send to the main loop) rather than resetting the machine synchronously.
pub type ResetCallback = Box<dyn Fn(bool) + Send + Sync>;

/// The i440FX/PIIX3 configuration mechanism #1 host bridge interface.
///
/// | port | access | register |
/// |---|---|---|
/// | 0xCF8 | dword | CONFIG_ADDRESS: enable (31), bus (23:16), devfn (15:8), register (7:2) |
/// | 0xCF9 | byte | PIIX3 reset control register (bit 1 hard reset, bit 2 do reset) |
/// | 0xCFC..=0xCFF | byte, word, dword | CONFIG_DATA: register `(addr & 0xfc) + (port - 0xCFC)` |
///
/// CONFIG_DATA reads all ones when the enable bit is clear, the bus is not 0 or no function
/// answers; writes then go nowhere. Any other access (a word at 0xCF8, a byte at 0xCFA, an
/// access running from CONFIG_ADDRESS into CONFIG_DATA) is split into bytes: bytes of
/// CONFIG_ADDRESS read 0xff and ignore writes, bytes of CONFIG_DATA are byte config accesses.
/// Only a byte access exactly at 0xCF9 reaches the reset control register.
pub struct PciHost {
    bus: PciBus,
    pub(crate) address: u32,
    pub(crate) rcr: u8,
    reset: Option<ResetCallback>,
}

impl std::fmt::Debug for PciHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciHost")
            .field("address", &format_args!("{:#010x}", self.address))
            .field("rcr", &format_args!("{:#04x}", self.rcr))
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl PciHost {
    /// First port of the interface (CONFIG_ADDRESS).
    pub const BASE: u16 = 0xcf8;
    /// Number of ports (0xCF8..=0xCFF).
    pub const LEN: u16 = 8;
    /// The ports the host decodes.
    pub const RANGE: Range<u16> = Self::BASE..Self::BASE + Self::LEN;
    /// CONFIG_ADDRESS port.
    pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
    /// Reset control register port.
    pub const RESET_CONTROL_PORT: u16 = 0xcf9;
    /// First CONFIG_DATA port.
    pub const CONFIG_DATA_PORT: u16 = 0xcfc;

    /// A host for `bus`, with no reset callback (0xCF9 resets are ignored).
    pub fn new(bus: PciBus) -> Self {
        PciHost {
            bus,
            address: 0,
            rcr: 0,
            reset: None,
        }
    }

    /// A host for `bus` that calls `reset` on a 0xCF9 reset request.
    pub fn with_reset(bus: PciBus, reset: ResetCallback) -> Self {
        PciHost {
            reset: Some(reset),
            ..Self::new(bus)
        }
    }

    /// The bus this host reaches.
    pub fn bus(&self) -> &PciBus {
        &self.bus
    }

    /// The latched CONFIG_ADDRESS.
    pub fn config_address(&self) -> u32 {
        self.address
    }

    /// The reset control register as the guest reads it.
    pub fn reset_control(&self) -> u8 {
        self.rcr
    }

    /// Back to power-on: CONFIG_ADDRESS and the reset control register become 0. (The
    /// functions are reset through [`PciBus::reset`].)
    pub fn reset(&mut self) {
        self.address = 0;
        self.rcr = 0;
    }

    /// Where CONFIG_DATA byte `k` (0..=3) of the latched address goes, or `None` if nothing
    /// answers (disabled or bus != 0).
    fn target(&self, k: u16) -> Option<(DevFn, u16)> {
        if self.address & CONFIG_ENABLE == 0 || (self.address >> 16) & 0xff != 0 {
            return None;
        }
        let devfn = DevFn(((self.address >> 8) & 0xff) as u8);
        let register = (self.address & 0xfc) as u16;
        Some((devfn, register + k))
    }

    /// A guest read at `offset` from 0xCF8 (0..=7).
    pub fn read(&mut self, offset: u16, data: &mut [u8]) {
        let len = data.len();
        match (offset, len) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (1, 1) => data[0] = self.rcr,
            (4..=7, 1 | 2 | 4) if usize::from(offset) + len <= 8 => match self.target(offset - 4) {
                Some((devfn, reg)) => self.bus.config_read(devfn, reg, data),
                None => data.fill(0xff),
            },
            _ => {
                for (k, byte) in (0u16..).zip(data.iter_mut()) {
                    *byte = match offset.checked_add(k) {
                        Some(o @ 4..=7) => match self.target(o - 4) {
                            Some((devfn, reg)) => {
                                let mut b = [0xff];
                                self.bus.config_read(devfn, reg, &mut b);
                                b[0]
                            }
                            None => 0xff,
                        },
                        _ => 0xff,
                    };
                }
            }
        }
    }

    /// A guest write at `offset` from 0xCF8 (0..=7).
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        let len = data.len();
        match (offset, data) {
            (0, &[a, b, c, d]) => {
                self.address = u32::from_le_bytes([a, b, c, d]) & CONFIG_ADDRESS_MASK;
            }
            (1, &[value]) => self.write_rcr(value),
            (4..=7, _) if matches!(len, 1 | 2 | 4) && usize::from(offset) + len <= 8 => {
                if let Some((devfn, reg)) = self.target(offset - 4) {
                    self.bus.config_write(devfn, reg, data);
                }
            }
            _ => {
                for (k, byte) in (0u16..).zip(data) {
                    if let Some(o @ 4..=7) = offset.checked_add(k) {
                        if let Some((devfn, reg)) = self.target(o - 4) {
                            self.bus.config_write(devfn, reg, &[*byte]);
                        }
                    }
                }
            }
        }
    }

    fn write_rcr(&mut self, value: u8) {
        self.rcr = value & !RCR_RESET_CPU;
        if value & RCR_RESET_CPU != 0 {
            if let Some(reset) = &self.reset {
                reset(value & RCR_SYSTEM_RESET != 0);
            }
        }
    }
}

/// Offset of absolute port `base + offset` from 0xCF8; `u16::MAX` (decodes nothing) when it
/// lies outside the host's ports.
fn host_offset(base: PioAddress, offset: PioAddressOffset) -> u16 {
    let port = u32::from(base.0) + u32::from(offset);
    port.checked_sub(u32::from(PciHost::BASE))
        .and_then(|o| u16::try_from(o).ok())
        .filter(|&o| o < PciHost::LEN)
        .unwrap_or(u16::MAX)
}

/// The host works out the absolute port from `base + offset`, so it may be registered as one
/// range 0xCF8..=0xCFF or as several (e.g. 0xCF8 dword, 0xCF9 byte, 0xCFC..=0xCFF).
impl MutDevicePio for PciHost {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(host_offset(base, offset), data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(host_offset(base, offset), data);
    }
}
