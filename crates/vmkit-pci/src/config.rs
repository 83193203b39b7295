//! The 256-byte type-0 configuration space of one PCI function.

use vmkit_bus::Space;

use crate::{BarDef, BarKind, Error, Mapping, RegionIndex, Result};

/// Size of a conventional PCI function's configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// Vendor ID register (16 bits, read-only).
pub const VENDOR_ID: u16 = 0x00;
/// Device ID register (16 bits, read-only).
pub const DEVICE_ID: u16 = 0x02;
/// Command register (16 bits).
pub const COMMAND: u16 = 0x04;
/// Status register (16 bits).
pub const STATUS: u16 = 0x06;
/// Revision ID register (8 bits, read-only).
pub const REVISION_ID: u16 = 0x08;
/// Programming interface byte of the class code (read-only).
pub const PROG_IF: u16 = 0x09;
/// Sub-class byte of the class code (read-only).
pub const SUBCLASS: u16 = 0x0a;
/// Base-class byte of the class code (read-only).
pub const CLASS: u16 = 0x0b;
/// Cache line size register (8 bits, writable).
pub const CACHE_LINE_SIZE: u16 = 0x0c;
/// Latency timer register (8 bits).
pub const LATENCY_TIMER: u16 = 0x0d;
/// Header type register (8 bits, read-only; bit 7 = multi-function).
pub const HEADER_TYPE: u16 = 0x0e;
/// First base address register; BAR `n` is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Subsystem vendor ID (16 bits, read-only).
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Subsystem ID (16 bits, read-only).
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM base address register (32 bits).
pub const ROM_ADDRESS: u16 = 0x30;
/// Capabilities pointer (8 bits, read-only).
pub const CAPABILITY_LIST: u16 = 0x34;
/// Interrupt line register (8 bits, writable: firmware writes the routed IRQ here).
pub const INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin register (8 bits, read-only: 0 = none, 1 = INTA# .. 4 = INTD#).
pub const INTERRUPT_PIN: u16 = 0x3d;
/// First byte after the standard header; capabilities are placed from here on.
pub const HEADER_END: u16 = 0x40;

/// Command bit 0: respond to I/O space accesses.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command bit 1: respond to memory space accesses.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command bit 2: the function may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command bit 10: the function must not assert INTx#.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The command bits a guest may write (the same four QEMU implements).
pub const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;

/// Status bit 3: the function is asserting INTx# (read-only, set by the device).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status bit 4: the capabilities pointer at 0x34 is valid (read-only).
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status bit 8: master data parity error (write 1 to clear).
pub const STATUS_MASTER_PARITY_ERROR: u16 = 1 << 8;
/// Status bit 11: signaled target abort (write 1 to clear).
pub const STATUS_SIG_TARGET_ABORT: u16 = 1 << 11;
/// Status bit 12: received target abort (write 1 to clear).
pub const STATUS_REC_TARGET_ABORT: u16 = 1 << 12;
/// Status bit 13: received master abort (write 1 to clear).
pub const STATUS_REC_MASTER_ABORT: u16 = 1 << 13;
/// Status bit 14: signaled system error (write 1 to clear).
pub const STATUS_SIG_SYSTEM_ERROR: u16 = 1 << 14;
/// Status bit 15: detected parity error (write 1 to clear).
pub const STATUS_DETECTED_PARITY_ERROR: u16 = 1 << 15;
/// Every write-1-to-clear status bit.
pub const STATUS_W1C: u16 = STATUS_MASTER_PARITY_ERROR
    | STATUS_SIG_TARGET_ABORT
    | STATUS_REC_TARGET_ABORT
    | STATUS_REC_MASTER_ABORT
    | STATUS_SIG_SYSTEM_ERROR
    | STATUS_DETECTED_PARITY_ERROR;

/// Expansion ROM BAR bit 0: address decode enable.
pub const ROM_ENABLE: u32 = 1;
/// Address bits of the expansion ROM BAR (31:11).
pub const ROM_ADDRESS_MASK: u32 = 0xffff_f800;

/// Smallest I/O BAR (bits 1:0 are the type bits).
pub const IO_BAR_MIN: u64 = 4;
/// Largest I/O BAR the PCI specification allows.
pub const IO_BAR_MAX: u64 = 256;
/// Smallest memory BAR (bits 3:0 are the type bits).
pub const MEM_BAR_MIN: u64 = 16;
/// Largest 32-bit memory BAR.
pub const MEM32_BAR_MAX: u64 = 1 << 31;
/// Largest 64-bit memory BAR.
pub const MEM64_BAR_MAX: u64 = 1 << 63;
/// Smallest expansion ROM (2 KiB: the address field starts at bit 11).
pub const ROM_MIN: u64 = 2048;
/// Largest expansion ROM.
pub const ROM_MAX: u64 = 1 << 31;

/// What a BAR register slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarSlot {
    Empty,
    Bar(BarDef),
    /// The upper dword of the 64-bit BAR in the slot below.
    Upper,
}

/// The configuration space of one PCI function: the 256 bytes the guest sees, which bits it
/// may write (write mask), which bits a 1 clears (w1c mask), and the BAR/ROM/capability
/// layout the device declared.
///
/// Guest accesses go through [`read`](Self::read) and [`write`](Self::write); the device
/// itself uses the raw `set_*` methods, which ignore both masks. Bytes 0x40..=0xff are
/// read-only by default (a real function's unimplemented registers read 0 and ignore
/// writes); a chipset function opens its registers with
/// [`set_write_mask_byte`](Self::set_write_mask_byte).
///
/// ```
/// use vmkit_bus::Space;
/// use vmkit_pci::{BarDef, BarKind, ConfigSpace, Mapping, RegionIndex};
///
/// let mut cfg = ConfigSpace::new(0x1af4, 0x1000, 0x02, 0x00, 0x00, 0x00);
/// cfg.add_bar(0, BarDef { kind: BarKind::Io, size: 0x20, prefetchable: false })?;
///
/// // Sizing: write all ones, read back the size mask (bit 0 = I/O).
/// cfg.write(0x10, &0xffff_ffffu32.to_le_bytes());
/// assert_eq!(cfg.dword(0x10), 0xffff_ffe1);
///
/// // Place it at 0xc000 and enable I/O decode in the command register.
/// cfg.write(0x10, &0xc000u32.to_le_bytes());
/// assert_eq!(cfg.bar_mapping(RegionIndex::Bar(0)), None, "decode still off");
/// cfg.write(0x04, &1u16.to_le_bytes());
/// assert_eq!(
///     cfg.bar_mapping(RegionIndex::Bar(0)),
///     Some(Mapping { space: Space::Pio, addr: 0xc000, size: 0x20 })
/// );
///
/// // A capability: ID, next pointer, body; the list starts at 0x34.
/// let at = cfg.add_capability(0x09, &[0x03, 0x00])?;
/// assert_eq!((at, cfg.byte(0x34)), (0x40, 0x40));
/// assert_eq!(cfg.capabilities(), vec![(0x09, 0x40)]);
/// # Ok::<(), vmkit_pci::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    pub(crate) data: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    w1cmask: [u8; CONFIG_SPACE_SIZE],
    bars: [BarSlot; 6],
    rom_size: Option<u64>,
    /// Offset of the last capability in the list, if any.
    cap_tail: Option<u16>,
    /// Where the next capability may go.
    cap_free: u16,
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &format_args!("{:#06x}", self.word(VENDOR_ID)))
            .field("device", &format_args!("{:#06x}", self.word(DEVICE_ID)))
            .field("command", &format_args!("{:#06x}", self.word(COMMAND)))
            .field("status", &format_args!("{:#06x}", self.word(STATUS)))
            .field("bars", &self.bars)
            .field("rom_size", &self.rom_size)
            .finish_non_exhaustive()
    }
}

fn idx(off: u16) -> Option<usize> {
    let i = usize::from(off);
    (i < CONFIG_SPACE_SIZE).then_some(i)
}

fn bar_offset(index: u8) -> u16 {
    BAR0 + 4 * u16::from(index)
}

impl ConfigSpace {
    /// A function with the given identity and class code, no BARs, no capabilities, no
    /// interrupt pin, header type 0, single function.
    pub fn new(
        vendor: u16,
        device: u16,
        class: u8,
        subclass: u8,
        prog_if: u8,
        revision: u8,
    ) -> Self {
        let mut c = ConfigSpace {
            data: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            w1cmask: [0; CONFIG_SPACE_SIZE],
            bars: [BarSlot::Empty; 6],
            rom_size: None,
            cap_tail: None,
            cap_free: HEADER_END,
        };
        c.set_word(VENDOR_ID, vendor);
        c.set_word(DEVICE_ID, device);
        c.set_byte(REVISION_ID, revision);
        c.set_byte(PROG_IF, prog_if);
        c.set_byte(SUBCLASS, subclass);
        c.set_byte(CLASS, class);
        c.set_write_mask_word(COMMAND, COMMAND_WRITABLE);
        c.set_w1c_mask_word(STATUS, STATUS_W1C);
        c.set_write_mask_byte(CACHE_LINE_SIZE, 0xff);
        c.set_write_mask_byte(INTERRUPT_LINE, 0xff);
        c
    }

    /// Guest read of `data.len()` bytes at `offset` (little-endian). Bytes past 0xff read 0xff.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::from(offset)
                .checked_add(i)
                .and_then(|o| self.data.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// Guest write of `data` at `offset`: only bits in the write mask change, a 1 written to
    /// a w1c bit clears it; bytes past 0xff are ignored.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let Some(o) = usize::from(offset)
                .checked_add(i)
                .filter(|&o| o < CONFIG_SPACE_SIZE)
            else {
                break;
            };
            let (w, c) = (self.wmask[o], self.w1cmask[o]);
            let byte = (self.data[o] & !w) | (value & w);
            self.data[o] = byte & !(value & c);
        }
    }

    /// The byte at `off` (0xff past the end).
    pub fn byte(&self, off: u16) -> u8 {
        idx(off).map_or(0xff, |i| self.data[i])
    }

    /// The little-endian word at `off`.
    pub fn word(&self, off: u16) -> u16 {
        let mut b = [0; 2];
        self.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    /// The little-endian dword at `off`.
    pub fn dword(&self, off: u16) -> u32 {
        let mut b = [0; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn set_bytes(&mut self, off: u16, bytes: &[u8]) {
        for (k, &b) in (0u16..).zip(bytes) {
            if let Some(i) = off.checked_add(k).and_then(idx) {
                self.data[i] = b;
            }
        }
    }

    /// Sets the byte at `off`, ignoring the masks (device-internal state).
    pub fn set_byte(&mut self, off: u16, v: u8) {
        self.set_bytes(off, &[v]);
    }

    /// Sets the word at `off`, ignoring the masks.
    pub fn set_word(&mut self, off: u16, v: u16) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    /// Sets the dword at `off`, ignoring the masks.
    pub fn set_dword(&mut self, off: u16, v: u32) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    fn set_mask(mask: &mut [u8; CONFIG_SPACE_SIZE], off: u16, bytes: &[u8]) {
        for (k, &b) in (0u16..).zip(bytes) {
            if let Some(i) = off.checked_add(k).and_then(idx) {
                mask[i] = b;
            }
        }
    }

    /// Which bits of the byte at `off` the guest may write.
    pub fn set_write_mask_byte(&mut self, off: u16, mask: u8) {
        Self::set_mask(&mut self.wmask, off, &[mask]);
    }

    /// Which bits of the word at `off` the guest may write.
    pub fn set_write_mask_word(&mut self, off: u16, mask: u16) {
        Self::set_mask(&mut self.wmask, off, &mask.to_le_bytes());
    }

    /// Which bits of the dword at `off` the guest may write.
    pub fn set_write_mask_dword(&mut self, off: u16, mask: u32) {
        Self::set_mask(&mut self.wmask, off, &mask.to_le_bytes());
    }

    /// Which bits of the byte at `off` are write-1-to-clear.
    pub fn set_w1c_mask_byte(&mut self, off: u16, mask: u8) {
        Self::set_mask(&mut self.w1cmask, off, &[mask]);
    }

    /// Which bits of the word at `off` are write-1-to-clear.
    pub fn set_w1c_mask_word(&mut self, off: u16, mask: u16) {
        Self::set_mask(&mut self.w1cmask, off, &mask.to_le_bytes());
    }

    /// The write mask of the byte at `off` (0 past the end).
    pub fn write_mask_byte(&self, off: u16) -> u8 {
        idx(off).map_or(0, |i| self.wmask[i])
    }

    /// The w1c mask of the byte at `off` (0 past the end).
    pub fn w1c_mask_byte(&self, off: u16) -> u8 {
        idx(off).map_or(0, |i| self.w1cmask[i])
    }

    /// Sets or clears the multi-function bit (header type bit 7). Function 0 of a device
    /// with more functions must set it, or guests will not probe functions 1..=7.
    pub fn set_multifunction(&mut self, on: bool) {
        let h = self.byte(HEADER_TYPE);
        self.set_byte(HEADER_TYPE, if on { h | 0x80 } else { h & 0x7f });
    }

    /// Sets the subsystem vendor and subsystem IDs (read-only to the guest).
    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_word(SUBSYSTEM_VENDOR_ID, vendor);
        self.set_word(SUBSYSTEM_ID, id);
    }

    /// Sets the interrupt pin (1 = INTA# .. 4 = INTD#, 0 = none; read-only to the guest).
    /// The interrupt line register stays guest-writable either way.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_byte(INTERRUPT_PIN, pin);
    }

    /// The interrupt pin (0 = none, 1 = INTA# .. 4 = INTD#).
    pub fn interrupt_pin(&self) -> u8 {
        self.byte(INTERRUPT_PIN)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.word(COMMAND)
    }

    /// Declares BAR `index` (0..=5). A 64-bit memory BAR also takes slot `index + 1` for its
    /// upper dword. The size must be a power of two within the kind's limits (I/O 4..=256,
    /// 32-bit memory 16 B..=2 GiB, 64-bit memory 16 B..=2^63); prefetchable is for memory
    /// BARs only.
    pub fn add_bar(&mut self, index: u8, def: BarDef) -> Result<()> {
        let slots = match def.kind {
            BarKind::Mem64 => 2,
            BarKind::Io | BarKind::Mem32 => 1,
        };
        if usize::from(index) + slots > self.bars.len() {
            return Err(Error::BarIndexOutOfRange {
                index,
                kind: def.kind,
            });
        }
        let first = usize::from(index);
        if let Some(k) = (first..first + slots).find(|&k| self.bars[k] != BarSlot::Empty) {
            return Err(Error::BarSlotInUse {
                index,
                slot: k as u8,
            });
        }
        let (min, max) = match def.kind {
            BarKind::Io => (IO_BAR_MIN, IO_BAR_MAX),
            BarKind::Mem32 => (MEM_BAR_MIN, MEM32_BAR_MAX),
            BarKind::Mem64 => (MEM_BAR_MIN, MEM64_BAR_MAX),
        };
        if !def.size.is_power_of_two() || def.size < min || def.size > max {
            return Err(Error::InvalidBarSize {
                index,
                kind: def.kind,
                size: def.size,
                min,
                max,
            });
        }
        if def.kind == BarKind::Io && def.prefetchable {
            return Err(Error::PrefetchableIoBar { index });
        }
        let mask = !(def.size - 1);
        let off = bar_offset(index);
        let prefetch = if def.prefetchable { 0x8 } else { 0 };
        match def.kind {
            BarKind::Io => {
                self.set_dword(off, 0x1);
                self.set_write_mask_dword(off, mask as u32);
            }
            BarKind::Mem32 => {
                self.set_dword(off, prefetch);
                self.set_write_mask_dword(off, mask as u32);
            }
            BarKind::Mem64 => {
                self.set_dword(off, 0x4 | prefetch);
                self.set_dword(off + 4, 0);
                self.set_write_mask_dword(off, mask as u32);
                self.set_write_mask_dword(off + 4, (mask >> 32) as u32);
                self.bars[first + 1] = BarSlot::Upper;
            }
        }
        self.bars[first] = BarSlot::Bar(def);
        Ok(())
    }

    /// The BAR declared at `index`, if any (`None` for the upper half of a 64-bit BAR).
    pub fn bar(&self, index: u8) -> Option<BarDef> {
        match self.bars.get(usize::from(index)) {
            Some(BarSlot::Bar(def)) => Some(*def),
            _ => None,
        }
    }

    /// Declares the expansion ROM BAR at 0x30: a power-of-two size of 2 KiB..=2 GiB.
    pub fn add_rom_bar(&mut self, size: u64) -> Result<()> {
        if self.rom_size.is_some() {
            return Err(Error::RomBarInUse);
        }
        if !size.is_power_of_two() || !(ROM_MIN..=ROM_MAX).contains(&size) {
            return Err(Error::InvalidRomSize {
                size,
                min: ROM_MIN,
                max: ROM_MAX,
            });
        }
        self.set_dword(ROM_ADDRESS, 0);
        self.set_write_mask_dword(
            ROM_ADDRESS,
            (!(size - 1) as u32 & ROM_ADDRESS_MASK) | ROM_ENABLE,
        );
        self.rom_size = Some(size);
        Ok(())
    }

    /// The size of the expansion ROM, if one was declared.
    pub fn rom_size(&self) -> Option<u64> {
        self.rom_size
    }

    /// Appends a capability with ID `id` whose contents after the ID and next-pointer bytes
    /// are `body`; returns its offset (dword-aligned, at 0x40 or above). The capability
    /// bytes are read-only to the guest until the device opens bits with
    /// [`set_write_mask_byte`](Self::set_write_mask_byte). Sets the status register's
    /// capability-list bit.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u16> {
        let start = (self.cap_free + 3) & !3;
        let len = body.len().saturating_add(2);
        let end = usize::from(start).saturating_add(len);
        if end > CONFIG_SPACE_SIZE {
            return Err(Error::NoRoomForCapability {
                id,
                len,
                offset: start,
            });
        }
        self.set_byte(start, id);
        self.set_byte(start + 1, 0);
        self.set_bytes(start + 2, body);
        match self.cap_tail {
            Some(tail) => self.set_byte(tail + 1, start as u8),
            None => self.set_byte(CAPABILITY_LIST, start as u8),
        }
        self.set_word(STATUS, self.word(STATUS) | STATUS_CAP_LIST);
        self.cap_tail = Some(start);
        // end <= 256, so this fits.
        self.cap_free = end as u16;
        Ok(start)
    }

    /// The capability list as the guest walks it: `(id, offset)` from the pointer at 0x34,
    /// stopping at a null pointer, a pointer below 0x40 or after 48 entries (a loop).
    pub fn capabilities(&self) -> Vec<(u8, u16)> {
        let mut out = Vec::new();
        if self.word(STATUS) & STATUS_CAP_LIST == 0 {
            return out;
        }
        let mut ptr = u16::from(self.byte(CAPABILITY_LIST) & 0xfc);
        while ptr >= HEADER_END && out.len() < 48 {
            out.push((self.byte(ptr), ptr));
            ptr = u16::from(self.byte(ptr + 1) & 0xfc);
        }
        out
    }

    /// Where region `index` is decoded now, as the command register and BAR contents say;
    /// `None` if the region is not declared, its space's command bit is off, its address is
    /// 0, or its range wraps or runs past the space (past port 0xffff for I/O; reaching
    /// 0xffff_ffff for 32-bit memory and the ROM, or `u64::MAX` for 64-bit memory, which is
    /// what an all-ones sizing write leaves, as QEMU does). The ROM also needs its enable
    /// bit. [`RegionIndex::Custom`] regions are the device's business: always `None` here.
    pub fn bar_mapping(&self, index: RegionIndex) -> Option<Mapping> {
        let command = self.command();
        match index {
            RegionIndex::Bar(i) => {
                let def = self.bar(i)?;
                let off = bar_offset(i);
                let low = u64::from(self.dword(off));
                let mask = !(def.size - 1);
                let (space, addr, limit) = match def.kind {
                    BarKind::Io => {
                        if command & COMMAND_IO == 0 {
                            return None;
                        }
                        (Space::Pio, low & mask & !0x3, u64::from(u16::MAX))
                    }
                    BarKind::Mem32 => {
                        if command & COMMAND_MEMORY == 0 {
                            return None;
                        }
                        (Space::Mmio, low & mask & !0xf, u64::from(u32::MAX) - 1)
                    }
                    BarKind::Mem64 => {
                        if command & COMMAND_MEMORY == 0 {
                            return None;
                        }
                        let high = u64::from(self.dword(off + 4));
                        (Space::Mmio, (high << 32 | low) & mask & !0xf, u64::MAX - 1)
                    }
                };
                decoded(space, addr, def.size, limit)
            }
            RegionIndex::Rom => {
                let size = self.rom_size?;
                let rom = self.dword(ROM_ADDRESS);
                if command & COMMAND_MEMORY == 0 || rom & ROM_ENABLE == 0 {
                    return None;
                }
                let addr = u64::from(rom & ROM_ADDRESS_MASK) & !(size - 1);
                decoded(Space::Mmio, addr, size, u64::from(u32::MAX) - 1)
            }
            RegionIndex::Custom(_) => None,
        }
    }

    /// Every BAR and the ROM that [`bar_mapping`](Self::bar_mapping) decodes now, in index
    /// order (the default [`PciDevice::regions`](crate::PciDevice::regions)).
    pub fn regions(&self) -> Vec<(RegionIndex, Mapping)> {
        (0..6)
            .map(RegionIndex::Bar)
            .chain([RegionIndex::Rom])
            .filter_map(|r| self.bar_mapping(r).map(|m| (r, m)))
            .collect()
    }

    /// Back to power-on values: every guest-writable and w1c bit becomes 0 (command, w1c
    /// status bits, cache line size, interrupt line, BAR and ROM addresses, ROM enable, any
    /// bits the device opened), while read-only bits (identity, BAR type bits, capability
    /// list, interrupt pin, device-internal values) stay. A device whose writable registers
    /// have other power-on values sets them after calling this.
    pub fn reset(&mut self) {
        for ((d, w), c) in self.data.iter_mut().zip(&self.wmask).zip(&self.w1cmask) {
            *d &= !(w | c);
        }
    }
}

/// A decoded range, or `None` if it is at 0 or its last byte wraps or passes `limit`.
fn decoded(space: Space, addr: u64, size: u64, limit: u64) -> Option<Mapping> {
    let last = addr.checked_add(size - 1)?;
    (addr != 0 && last <= limit).then_some(Mapping { space, addr, size })
}
