//! CMOS RAM and the MC146818A real-time clock at ports 0x70/0x71.
//!
//! # Ports
//! Offset 0 (port 0x70) is the index port: bits 6..0 select one of 128 CMOS bytes, bit 7 is
//! the PC's NMI-disable gate, remembered ([`Cmos::nmi_disabled`]) but not part of the index.
//! It is write-only on a PC; reads return 0xFF. Offset 1 (port 0x71) reads and writes the
//! selected byte. Other offsets (0x72/0x73 would be a second bank on some chipsets) read 0xFF.
//!
//! # Clock (MC146818A datasheet, "Address Map" and "Time, Calendar and Alarm Locations")
//! Bytes 0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week (1 = Sunday), 0x07 day of
//! month, 0x08 month, 0x09 year (two digits) and 0x32 century (the IBM PC convention, also
//! ACPI's FADT century index) show the time of an injected [`WallClock`] plus an offset the
//! guest sets. They are encoded per register B: bit 2 (DM) selects binary (1) or BCD (0),
//! bit 1 selects 24-hour (1) or 12-hour (0) mode, where hours 1..=12 carry bit 7 for PM.
//! The century byte follows the DM bit too, as Linux's `mc146818_get_time` expects. The alarm
//! bytes 0x01/0x03/0x05 are plain RAM.
//!
//! Setting the time (datasheet: register B bit 7, SET): while SET is 1 the clock bytes stop
//! updating and hold what the guest writes; clearing SET starts the clock from those values.
//! The model stores `guest time - wall-clock time` as an offset, so the guest's time keeps
//! running with the host's clock afterwards, as QEMU's RTC does. A clock byte written while
//! SET is 0 takes effect at once (the other fields keep their current values), also as in
//! QEMU. Day of week is derived from the date, never stored.
//!
//! # Status registers
//! - A (0x0A): bit 7 UIP is read-only. It is 1 during the 244 us before each second boundary
//!   of the injected monotonic [`Clock`] (the datasheet's "UIP goes high 244 us before the
//!   update cycle"), and 0 while SET is on or the divider (bits 6..4) is not the normal
//!   32.768 kHz setting 010. So a reader that waits for UIP = 0 waits at most 244 us of
//!   clock time. Simplifications: the update is instantaneous (the real chip keeps UIP for a
//!   further ~2 ms update cycle), and the seconds shown come from the wall clock, whose
//!   second boundaries need not line up with the monotonic clock's; Linux's RTC read
//!   (`mc146818_avoid_UIP`) re-reads the seconds and retries if they changed mid-read.
//! - B (0x0B): stored; setting SET clears UIE, as the datasheet specifies.
//! - C (0x0C): always reads 0. The periodic, alarm and update-ended interrupts are not
//!   modelled: no flag is ever set and IRQ8 is never raised, so the device has no deadline.
//! - D (0x0D): reads 0x80 (bit 7 VRT: RAM and time valid, battery good); writes are ignored.
//!
//! # Memory size bytes
//! Set once from a [`CmosMemoryLayout`], with the values QEMU's pc machine stores and
//! SeaBIOS and Linux's early boot code read: 0x15/0x16 base memory in KiB (640),
//! 0x17/0x18 and 0x30/0x31 memory above 1 MiB in KiB (at most 0xFFFF), 0x34/0x35 memory
//! between 16 MiB and the start of the PCI hole in 64 KiB units, 0x5B..0x5D memory above
//! 4 GiB in 64 KiB units. All are little-endian. No CMOS checksum (0x2E/0x2F) is computed;
//! QEMU does not either. Other BIOS bytes can be set with [`Cmos::set_ram_byte`].

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_hw::{Clock, WallClock};

use crate::calendar::DateTime;
use crate::{byte_offsets, pio_offset, Error, Result, CMOS_INDEX_PORT};

/// Number of CMOS bytes behind ports 0x70/0x71.
pub const CMOS_SIZE: usize = 128;

/// Seconds register.
pub const REG_SECONDS: u8 = 0x00;
/// Seconds alarm register (plain RAM here).
pub const REG_SECONDS_ALARM: u8 = 0x01;
/// Minutes register.
pub const REG_MINUTES: u8 = 0x02;
/// Hours register.
pub const REG_HOURS: u8 = 0x04;
/// Day-of-week register (1 = Sunday).
pub const REG_DAY_OF_WEEK: u8 = 0x06;
/// Day-of-month register.
pub const REG_DAY_OF_MONTH: u8 = 0x07;
/// Month register.
pub const REG_MONTH: u8 = 0x08;
/// Two-digit year register.
pub const REG_YEAR: u8 = 0x09;
/// Status register A.
pub const REG_A: u8 = 0x0A;
/// Status register B.
pub const REG_B: u8 = 0x0B;
/// Status register C (interrupt flags).
pub const REG_C: u8 = 0x0C;
/// Status register D (valid RAM and time).
pub const REG_D: u8 = 0x0D;
/// Century register (IBM PC convention).
pub const REG_CENTURY: u8 = 0x32;

/// Register A bit 7: update in progress.
pub const REG_A_UIP: u8 = 0x80;
/// Register A bits 6..4: divider chain select.
pub const REG_A_DIVIDER_MASK: u8 = 0x70;
/// Register A divider value for a running 32.768 kHz time base.
pub const REG_A_DIVIDER_NORMAL: u8 = 0x20;
/// Register A as a BIOS leaves it: 32.768 kHz time base, 1024 Hz periodic rate.
pub const REG_A_DEFAULT: u8 = 0x26;
/// Register B bit 7: SET, updates stopped so the time can be set.
pub const REG_B_SET: u8 = 0x80;
/// Register B bit 6: periodic interrupt enable.
pub const REG_B_PIE: u8 = 0x40;
/// Register B bit 5: alarm interrupt enable.
pub const REG_B_AIE: u8 = 0x20;
/// Register B bit 4: update-ended interrupt enable.
pub const REG_B_UIE: u8 = 0x10;
/// Register B bit 3: square-wave enable.
pub const REG_B_SQWE: u8 = 0x08;
/// Register B bit 2: data mode, 1 = binary, 0 = BCD.
pub const REG_B_BINARY: u8 = 0x04;
/// Register B bit 1: 1 = 24-hour mode, 0 = 12-hour mode.
pub const REG_B_24_HOUR: u8 = 0x02;
/// Register B as a BIOS leaves it: 24-hour, BCD.
pub const REG_B_DEFAULT: u8 = REG_B_24_HOUR;
/// Register D bit 7: valid RAM and time.
pub const REG_D_VALID: u8 = 0x80;
/// In 12-hour mode, bit 7 of the hours byte marks PM.
pub const HOURS_PM: u8 = 0x80;

/// How long UIP is set before each second boundary (MC146818A: 244 us).
pub const UIP_LEAD_NS: u64 = 244_000;
const NS_PER_SECOND: u64 = 1_000_000_000;

/// 0000-01-01T00:00:00Z: the earliest time the century and year bytes can show.
pub const RTC_MIN_UNIX_SECONDS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z: the latest time the century and year bytes can show.
pub const RTC_MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The clock bytes, in the order they are snapshot and committed.
const TIME_REGISTERS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Guest RAM as the BIOS memory-size bytes describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CmosMemoryLayout {
    /// Bytes of RAM from address 0 up to the start of the PCI hole (at most 4 GiB).
    pub below_4g: u64,
    /// Bytes of RAM relocated above 4 GiB.
    pub above_4g: u64,
}

impl CmosMemoryLayout {
    /// A layout with `below_4g` bytes below 4 GiB and `above_4g` bytes above it.
    pub const fn new(below_4g: u64, above_4g: u64) -> Self {
        Self { below_4g, above_4g }
    }

    /// Splits `ram_size` bytes at `hole_start` (e.g. 3 GiB or 3.5 GiB), as a pc machine
    /// does: RAM beyond the hole start is moved above 4 GiB.
    pub fn split(ram_size: u64, hole_start: u64) -> Self {
        let below_4g = ram_size.min(hole_start).min(4 * GIB);
        Self {
            below_4g,
            above_4g: ram_size - below_4g,
        }
    }

    /// The `(index, value)` pairs of the memory-size bytes for this layout.
    pub fn cmos_bytes(&self) -> [(u8, u8); 11] {
        let base_kib = (self.below_4g / KIB).min(640);
        let extended_kib = (self.below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above_16m = (self.below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        let above_4g = (self.above_4g / (64 * KIB)).min(0xFF_FFFF);
        let byte = |value: u64, shift: u32| (value >> shift) as u8;
        [
            (0x15, byte(base_kib, 0)),
            (0x16, byte(base_kib, 8)),
            (0x17, byte(extended_kib, 0)),
            (0x18, byte(extended_kib, 8)),
            (0x30, byte(extended_kib, 0)),
            (0x31, byte(extended_kib, 8)),
            (0x34, byte(above_16m, 0)),
            (0x35, byte(above_16m, 8)),
            (0x5B, byte(above_4g, 0)),
            (0x5C, byte(above_4g, 8)),
            (0x5D, byte(above_4g, 16)),
        ]
    }
}

/// Whether `index` is one of the clock bytes.
fn is_time_register(index: u8) -> bool {
    TIME_REGISTERS.contains(&index)
}

fn to_bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// BCD to binary; invalid digits give a value above 99 instead of a panic.
fn from_bcd(value: u8) -> u8 {
    (value >> 4) * 10 + (value & 0x0F)
}

/// The CMOS RAM and RTC (see the [module docs](self)).
#[derive(Debug)]
pub struct Cmos<W: WallClock, C: Clock> {
    wall: W,
    clock: C,
    ram: [u8; CMOS_SIZE],
    index: u8,
    nmi_disabled: bool,
    /// Guest time minus wall-clock time, in seconds.
    offset_seconds: i64,
    /// Monotonic time of a second boundary of the update cycle.
    phase_origin_ns: u64,
}

impl<W: WallClock, C: Clock> Cmos<W, C> {
    /// A CMOS showing `wall`'s time, with UIP timed by `clock` and the memory-size bytes of
    /// `layout`. Registers A, B and D hold what a BIOS leaves (0x26, 0x02, 0x80).
    ///
    /// # Errors
    /// [`Error::BelowFourGibTooLarge`] if `layout.below_4g` exceeds 4 GiB.
    pub fn new(wall: W, clock: C, layout: CmosMemoryLayout) -> Result<Self> {
        if layout.below_4g > 4 * GIB {
            return Err(Error::BelowFourGibTooLarge {
                below_4g: layout.below_4g,
            });
        }
        let mut ram = [0u8; CMOS_SIZE];
        ram[usize::from(REG_A)] = REG_A_DEFAULT;
        ram[usize::from(REG_B)] = REG_B_DEFAULT;
        ram[usize::from(REG_D)] = REG_D_VALID;
        for (index, value) in layout.cmos_bytes() {
            if let Some(byte) = ram.get_mut(usize::from(index)) {
                *byte = value;
            }
        }
        let phase_origin_ns = clock.now_ns();
        Ok(Self {
            wall,
            clock,
            ram,
            index: 0,
            nmi_disabled: false,
            offset_seconds: 0,
            phase_origin_ns,
        })
    }

    /// What the RESET pin does (machine reset): clears the interrupt enables PIE, AIE, UIE
    /// and SQWE in register B. RAM, the time and the guest's offset are kept (battery-backed).
    pub fn reset(&mut self) {
        let b = self.reg(REG_B) & !(REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_SQWE);
        self.set_reg(REG_B, b);
    }

    /// Whether the guest last wrote the index port with bit 7 (NMI disable) set.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// The CMOS byte the data port currently selects.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Guest time minus wall-clock time, in seconds (0 until the guest sets the clock).
    pub fn guest_offset_seconds(&self) -> i64 {
        self.offset_seconds
    }

    /// Sets guest time minus wall-clock time, e.g. to restore a saved VM.
    pub fn set_guest_offset_seconds(&mut self, offset: i64) {
        self.offset_seconds = offset;
    }

    /// The time the clock bytes show when running (limited to years 0..=9999).
    pub fn guest_unix_seconds(&self) -> i64 {
        let wall = i64::try_from(self.wall.unix_seconds()).unwrap_or(i64::MAX);
        wall.saturating_add(self.offset_seconds)
            .clamp(RTC_MIN_UNIX_SECONDS, RTC_MAX_UNIX_SECONDS)
    }

    /// [`Cmos::guest_unix_seconds`] broken down.
    pub fn guest_time(&self) -> DateTime {
        DateTime::from_unix(self.guest_unix_seconds())
    }

    /// Register A's UIP bit now.
    pub fn update_in_progress(&self) -> bool {
        if self.reg(REG_B) & REG_B_SET != 0
            || self.reg(REG_A) & REG_A_DIVIDER_MASK != REG_A_DIVIDER_NORMAL
        {
            return false;
        }
        let phase = self.clock.now_ns().saturating_sub(self.phase_origin_ns) % NS_PER_SECOND;
        phase >= NS_PER_SECOND - UIP_LEAD_NS
    }

    /// A plain CMOS RAM byte (not a clock or status register).
    ///
    /// # Errors
    /// [`Error::CmosIndexOutOfRange`] for `index >= 128`; [`Error::CmosIndexIsClock`] for
    /// 0x00..=0x0D and 0x32.
    pub fn ram_byte(&self, index: u8) -> Result<u8> {
        self.check_ram_index(index)?;
        Ok(self.reg(index))
    }

    /// Sets a plain CMOS RAM byte, e.g. a BIOS setting the guest will read.
    ///
    /// # Errors
    /// As [`Cmos::ram_byte`].
    pub fn set_ram_byte(&mut self, index: u8, value: u8) -> Result<()> {
        self.check_ram_index(index)?;
        self.set_reg(index, value);
        Ok(())
    }

    fn check_ram_index(&self, index: u8) -> Result<()> {
        if usize::from(index) >= CMOS_SIZE {
            Err(Error::CmosIndexOutOfRange { index })
        } else if index <= REG_D || index == REG_CENTURY {
            Err(Error::CmosIndexIsClock { index })
        } else {
            Ok(())
        }
    }

    /// Reads from `offset` relative to port 0x70 (0: index, reads 0xFF; 1: data).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, offset) in data.iter_mut().zip(byte_offsets(offset, len)) {
            *byte = match offset {
                1 => self.read_register(self.index),
                _ => 0xFF,
            };
        }
    }

    /// Writes to `offset` relative to port 0x70 (0: index and NMI gate; 1: data).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (&value, offset) in data.iter().zip(byte_offsets(offset, data.len())) {
            match offset {
                0 => {
                    self.index = value & 0x7F;
                    self.nmi_disabled = value & 0x80 != 0;
                }
                1 => self.write_register(self.index, value),
                _ => {}
            }
        }
    }

    fn reg(&self, index: u8) -> u8 {
        self.ram.get(usize::from(index)).copied().unwrap_or(0xFF)
    }

    fn set_reg(&mut self, index: u8, value: u8) {
        if let Some(byte) = self.ram.get_mut(usize::from(index)) {
            *byte = value;
        }
    }

    fn in_set_mode(&self) -> bool {
        self.reg(REG_B) & REG_B_SET != 0
    }

    fn read_register(&self, index: u8) -> u8 {
        match index {
            REG_A => {
                let uip = if self.update_in_progress() {
                    REG_A_UIP
                } else {
                    0
                };
                (self.reg(REG_A) & !REG_A_UIP) | uip
            }
            REG_C => 0,
            REG_D => REG_D_VALID,
            _ if is_time_register(index) && !self.in_set_mode() => {
                self.encode(&self.guest_time(), index)
            }
            _ => self.reg(index),
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            REG_A => self.set_reg(REG_A, value & !REG_A_UIP),
            REG_B => self.write_reg_b(value),
            REG_C | REG_D => {}
            _ if is_time_register(index) => {
                if self.in_set_mode() {
                    self.set_reg(index, value);
                } else {
                    self.snapshot_time();
                    self.set_reg(index, value);
                    self.commit_time();
                }
            }
            _ => self.set_reg(index, value),
        }
    }

    fn write_reg_b(&mut self, value: u8) {
        let was_set = self.in_set_mode();
        let now_set = value & REG_B_SET != 0;
        // MC146818A register B: "SET = 1 ... UIE is cleared".
        let value = if now_set { value & !REG_B_UIE } else { value };
        self.set_reg(REG_B, value);
        match (was_set, now_set) {
            (false, true) => self.snapshot_time(),
            (true, false) => self.commit_time(),
            _ => {}
        }
    }

    /// Freezes the current time into the clock bytes, in the current format.
    fn snapshot_time(&mut self) {
        let now = self.guest_time();
        for index in TIME_REGISTERS {
            let value = self.encode(&now, index);
            self.set_reg(index, value);
        }
    }

    /// Starts the clock from the clock bytes: stores their distance from the wall clock.
    fn commit_time(&mut self) {
        let set = self.decode_registers();
        let wall = i64::try_from(self.wall.unix_seconds()).unwrap_or(i64::MAX);
        self.offset_seconds = set.to_unix().saturating_sub(wall);
    }

    fn binary_mode(&self) -> bool {
        self.reg(REG_B) & REG_B_BINARY != 0
    }

    fn encode_value(&self, value: u8) -> u8 {
        if self.binary_mode() {
            value
        } else {
            to_bcd(value)
        }
    }

    fn decode_value(&self, value: u8) -> u8 {
        if self.binary_mode() {
            value
        } else {
            from_bcd(value)
        }
    }

    /// The clock byte `index` showing `time` in the format register B selects.
    fn encode(&self, time: &DateTime, index: u8) -> u8 {
        // The clamp to years 0..=9999 keeps both halves of the year below 100.
        let year = u8::try_from(time.year.rem_euclid(100)).unwrap_or(0);
        let century = u8::try_from(time.year.div_euclid(100).clamp(0, 99)).unwrap_or(0);
        match index {
            REG_SECONDS => self.encode_value(time.second),
            REG_MINUTES => self.encode_value(time.minute),
            REG_HOURS => {
                if self.reg(REG_B) & REG_B_24_HOUR != 0 {
                    self.encode_value(time.hour)
                } else {
                    // 12-hour clock: 0h is 12 AM, 12h is 12 PM.
                    let hour12 = match time.hour % 12 {
                        0 => 12,
                        h => h,
                    };
                    let pm = if time.hour >= 12 { HOURS_PM } else { 0 };
                    self.encode_value(hour12) | pm
                }
            }
            REG_DAY_OF_WEEK => self.encode_value(time.weekday + 1),
            REG_DAY_OF_MONTH => self.encode_value(time.day),
            REG_MONTH => self.encode_value(time.month),
            REG_YEAR => self.encode_value(year),
            REG_CENTURY => self.encode_value(century),
            _ => self.reg(index),
        }
    }

    /// The time the frozen clock bytes hold. Impossible values (minute 75, BCD digit 0xA)
    /// roll over instead of failing, so a confused guest gets a nearby time.
    fn decode_registers(&self) -> DateTime {
        let field = |index: u8| self.decode_value(self.reg(index));
        let raw_hour = self.reg(REG_HOURS);
        let hour = if self.reg(REG_B) & REG_B_24_HOUR != 0 {
            self.decode_value(raw_hour)
        } else {
            let pm = raw_hour & HOURS_PM != 0;
            self.decode_value(raw_hour & !HOURS_PM) % 12 + if pm { 12 } else { 0 }
        };
        DateTime {
            year: i64::from(field(REG_CENTURY)) * 100 + i64::from(field(REG_YEAR)),
            month: field(REG_MONTH),
            day: field(REG_DAY_OF_MONTH),
            hour,
            minute: field(REG_MINUTES),
            second: field(REG_SECONDS),
            weekday: 0,
        }
    }
}

impl<W: WallClock, C: Clock> MutDevicePio for Cmos<W, C> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(pio_offset(CMOS_INDEX_PORT, base, offset), data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(pio_offset(CMOS_INDEX_PORT, base, offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{days_from_civil, SECONDS_PER_DAY};
    use proptest::prelude::*;
    use std::sync::Mutex;
    use vm_device::DevicePio;
    use vmkit_hw::{FixedWallClock, ManualClock};

    type TestCmos = Cmos<FixedWallClock, ManualClock>;

    fn unix(y: i64, mo: u8, d: u8, h: i64, mi: i64, s: i64) -> u64 {
        let secs = days_from_civil(y, mo, d) * SECONDS_PER_DAY + h * 3600 + mi * 60 + s;
        u64::try_from(secs).unwrap()
    }

    fn cmos_at(unix_seconds: u64) -> (FixedWallClock, ManualClock, TestCmos) {
        let wall = FixedWallClock::new(unix_seconds);
        let clock = ManualClock::new(0);
        let cmos = Cmos::new(
            wall.clone(),
            clock.clone(),
            CmosMemoryLayout::new(128 * MIB, 0),
        )
        .unwrap();
        (wall, clock, cmos)
    }

    fn get(cmos: &mut TestCmos, index: u8) -> u8 {
        cmos.write(0, &[index]);
        let mut b = [0];
        cmos.read(1, &mut b);
        b[0]
    }

    fn put(cmos: &mut TestCmos, index: u8, value: u8) {
        cmos.write(0, &[index]);
        cmos.write(1, &[value]);
    }

    /// (sec, min, hour, dow, day, month, year, century) as the guest reads them.
    fn clock_bytes(cmos: &mut TestCmos) -> [u8; 8] {
        TIME_REGISTERS.map(|index| get(cmos, index))
    }

    fn memory_bytes(layout: CmosMemoryLayout) -> Vec<u8> {
        let cmos = Cmos::new(FixedWallClock::new(0), ManualClock::new(0), layout).unwrap();
        [
            0x15u8, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5B, 0x5C, 0x5D,
        ]
        .iter()
        .map(|&i| cmos.ram_byte(i).unwrap())
        .collect()
    }

    #[test]
    fn memory_bytes_128_mib() {
        // QEMU pc / SeaBIOS: 640 KiB base, 127 MiB extended capped at 0xFFFF KiB,
        // (128 - 16) MiB / 64 KiB = 0x0700 above 16 MiB, nothing above 4 GiB.
        assert_eq!(
            memory_bytes(CmosMemoryLayout::new(128 * MIB, 0)),
            [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x07, 0, 0, 0]
        );
    }

    #[test]
    fn memory_bytes_small_guests() {
        // 32 MiB: 31 MiB extended = 31744 KiB = 0x7C00; 16 MiB above 16 MiB = 0x0100.
        assert_eq!(
            memory_bytes(CmosMemoryLayout::new(32 * MIB, 0)),
            [0x80, 0x02, 0x00, 0x7C, 0x00, 0x7C, 0x00, 0x01, 0, 0, 0]
        );
        // 512 KiB: base memory is what exists, below 640 KiB; nothing else.
        assert_eq!(
            memory_bytes(CmosMemoryLayout::new(512 * KIB, 0)),
            [0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn memory_bytes_3_5_gib() {
        // 3.5 GiB all below the hole: (3584 - 16) MiB / 64 KiB = 57088 = 0xDF00.
        let layout = CmosMemoryLayout::split(3584 * MIB, 3584 * MIB);
        assert_eq!(layout, CmosMemoryLayout::new(0xE000_0000, 0));
        assert_eq!(
            memory_bytes(layout),
            [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xDF, 0, 0, 0]
        );
    }

    #[test]
    fn memory_bytes_8_gib() {
        // Hole at 3.5 GiB: 4.5 GiB above 4 GiB = 0x12000 * 64 KiB.
        let layout = CmosMemoryLayout::split(8 * GIB, 3584 * MIB);
        assert_eq!(layout.above_4g, 4608 * MIB);
        assert_eq!(
            memory_bytes(layout),
            [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xDF, 0x00, 0x20, 0x01]
        );
        // Hole at 3 GiB (QEMU's gigabyte alignment): (3072 - 16) MiB / 64 KiB = 0xBF00,
        // 5 GiB above = 0x14000 units.
        let layout = CmosMemoryLayout::split(8 * GIB, 3 * GIB);
        assert_eq!(
            memory_bytes(layout),
            [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xBF, 0x00, 0x40, 0x01]
        );
    }

    #[test]
    fn memory_above_4g_is_capped_and_below_4g_checked() {
        let huge = CmosMemoryLayout::new(3 * GIB, u64::MAX);
        assert_eq!(&memory_bytes(huge)[8..], &[0xFF, 0xFF, 0xFF]);
        let err = Cmos::new(
            FixedWallClock::new(0),
            ManualClock::new(0),
            CmosMemoryLayout::new(4 * GIB + 1, 0),
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::BelowFourGibTooLarge {
                below_4g: 4 * GIB + 1
            }
        );
        assert!(Cmos::new(
            FixedWallClock::new(0),
            ManualClock::new(0),
            CmosMemoryLayout::new(4 * GIB, 0)
        )
        .is_ok());
    }

    #[test]
    fn time_in_bcd_24_hour_mode() {
        // MC146818A: DM = 0 (BCD), 24/12 = 1. 2024-02-29 is a Thursday (day 5).
        let (_, _, mut cmos) = cmos_at(unix(2024, 2, 29, 13, 45, 9));
        assert_eq!(
            clock_bytes(&mut cmos),
            [0x09, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
    }

    #[test]
    fn time_in_binary_mode() {
        // MC146818A register B bit 2 (DM) = 1: binary; the century byte follows it.
        let (_, _, mut cmos) = cmos_at(unix(2024, 2, 29, 13, 45, 9));
        put(&mut cmos, REG_B, REG_B_24_HOUR | REG_B_BINARY);
        assert_eq!(clock_bytes(&mut cmos), [9, 45, 13, 5, 29, 2, 24, 20]);
    }

    #[test]
    fn twelve_hour_mode_bcd_and_binary() {
        // MC146818A register B bit 1 = 0: 12-hour mode, hours 1-12 with bit 7 = PM.
        let cases = [
            (0, 0x12, 12),                // midnight is 12 AM
            (1, 0x01, 1),                 // 1 AM
            (11, 0x11, 11),               // 11 AM
            (12, 0x80 | 0x12, 0x80 | 12), // noon is 12 PM
            (13, 0x80 | 0x01, 0x80 | 1),  // 1 PM
            (23, 0x80 | 0x11, 0x80 | 11), // 11 PM
        ];
        for (hour, bcd, binary) in cases {
            let (_, _, mut cmos) = cmos_at(unix(2023, 6, 1, hour, 30, 0));
            put(&mut cmos, REG_B, 0);
            assert_eq!(get(&mut cmos, REG_HOURS), bcd, "BCD hour {hour}");
            put(&mut cmos, REG_B, REG_B_BINARY);
            assert_eq!(get(&mut cmos, REG_HOURS), binary, "binary hour {hour}");
        }
    }

    #[test]
    fn century_rollover_1999_to_2000() {
        let (wall, _, mut cmos) = cmos_at(unix(1999, 12, 31, 23, 59, 59));
        // 1999-12-31 was a Friday (6).
        assert_eq!(
            clock_bytes(&mut cmos),
            [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]
        );
        wall.advance(1);
        // 2000-01-01, Saturday (7).
        assert_eq!(
            clock_bytes(&mut cmos),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
    }

    #[test]
    fn leap_days_across_centuries() {
        // 2000 is a leap year (divisible by 400): 02-28 -> 02-29.
        let (wall, _, mut cmos) = cmos_at(unix(2000, 2, 28, 23, 59, 59));
        wall.advance(1);
        assert_eq!(get(&mut cmos, REG_DAY_OF_MONTH), 0x29);
        assert_eq!(get(&mut cmos, REG_MONTH), 0x02);
        // 2100 is not (divisible by 100 only): 02-28 -> 03-01, and century 21.
        let (wall, _, mut cmos) = cmos_at(unix(2100, 2, 28, 23, 59, 59));
        wall.advance(1);
        assert_eq!(clock_bytes(&mut cmos)[4..], [0x01, 0x03, 0x00, 0x21]);
        // 2024 (every fourth year): 02-29 then 03-01.
        let (wall, _, mut cmos) = cmos_at(unix(2024, 2, 29, 0, 0, 0));
        assert_eq!(get(&mut cmos, REG_DAY_OF_MONTH), 0x29);
        wall.advance(86_400);
        assert_eq!(clock_bytes(&mut cmos)[4..6], [0x01, 0x03]);
    }

    #[test]
    fn guest_sets_time_with_set_bit_and_it_persists() {
        // MC146818A register B bit 7 (SET): updates stop while the guest writes the time.
        let (wall, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        put(&mut cmos, REG_B, REG_B_SET | REG_B_24_HOUR | REG_B_UIE);
        assert_eq!(get(&mut cmos, REG_B) & REG_B_UIE, 0, "SET clears UIE");
        // Linux's mc146818_set_time order: year, month, day, hours, minutes, seconds, century.
        for (index, value) in [
            (REG_YEAR, 0x99),
            (REG_MONTH, 0x12),
            (REG_DAY_OF_MONTH, 0x31),
            (REG_HOURS, 0x23),
            (REG_MINUTES, 0x59),
            (REG_SECONDS, 0x50),
            (REG_CENTURY, 0x19),
        ] {
            put(&mut cmos, index, value);
        }
        // While SET is on, the clock bytes hold what was written and do not move.
        wall.advance(5);
        assert_eq!(get(&mut cmos, REG_SECONDS), 0x50);
        put(&mut cmos, REG_B, REG_B_24_HOUR);
        let expected = i64::try_from(unix(1999, 12, 31, 23, 59, 50)).unwrap();
        assert_eq!(cmos.guest_unix_seconds(), expected);
        // The set time runs on with the wall clock: 10 s later it is 2000-01-01 00:00:00.
        wall.advance(10);
        assert_eq!(
            clock_bytes(&mut cmos),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
        let offset = cmos.guest_offset_seconds();
        assert_eq!(
            offset,
            expected - i64::try_from(unix(2024, 5, 1, 8, 0, 5)).unwrap()
        );
    }

    #[test]
    fn guest_sets_time_in_binary_12_hour_mode() {
        let (_, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        put(&mut cmos, REG_B, REG_B_SET | REG_B_BINARY);
        put(&mut cmos, REG_HOURS, HOURS_PM | 12); // 12 PM = 12:00
        put(&mut cmos, REG_MINUTES, 7);
        put(&mut cmos, REG_SECONDS, 0);
        put(&mut cmos, REG_B, REG_B_BINARY);
        let t = cmos.guest_time();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2024, 5, 1, 12, 7)
        );
        put(&mut cmos, REG_B, REG_B_SET | REG_B_BINARY);
        put(&mut cmos, REG_HOURS, 12); // 12 AM = 00:xx
        put(&mut cmos, REG_B, REG_B_BINARY);
        assert_eq!(cmos.guest_time().hour, 0);
    }

    #[test]
    fn clock_write_without_set_applies_at_once() {
        // As QEMU: a clock byte written while running replaces that field immediately.
        let (wall, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        put(&mut cmos, REG_MINUTES, 0x30);
        assert_eq!(get(&mut cmos, REG_MINUTES), 0x30);
        wall.advance(61);
        assert_eq!(get(&mut cmos, REG_MINUTES), 0x31);
        assert_eq!(get(&mut cmos, REG_HOURS), 0x08);
    }

    #[test]
    fn day_of_week_is_derived_not_stored() {
        let (_, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0)); // Wednesday
        put(&mut cmos, REG_B, REG_B_SET | REG_B_24_HOUR);
        put(&mut cmos, REG_DAY_OF_WEEK, 0x01);
        put(&mut cmos, REG_B, REG_B_24_HOUR);
        assert_eq!(get(&mut cmos, REG_DAY_OF_WEEK), 0x04);
    }

    #[test]
    fn nonsense_clock_values_do_not_panic_and_roll_over() {
        let (_, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        put(&mut cmos, REG_B, REG_B_SET | REG_B_24_HOUR);
        put(&mut cmos, REG_SECONDS, 0xFF); // BCD "165" seconds
        put(&mut cmos, REG_MONTH, 0x00);
        put(&mut cmos, REG_CENTURY, 0xFF);
        put(&mut cmos, REG_B, REG_B_24_HOUR);
        let t = cmos.guest_time();
        assert!(t.year <= 9999 && t.second < 60);
        assert_eq!(cmos.guest_unix_seconds(), RTC_MAX_UNIX_SECONDS);
    }

    #[test]
    fn status_registers() {
        // MC146818A: A = 0x26 as a BIOS leaves it, UIP read-only; B = 0x02;
        // C reads 0 (no interrupt sources modelled) and is cleared by reading; D = VRT.
        let (_, _, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        assert_eq!(get(&mut cmos, REG_A), 0x26);
        put(&mut cmos, REG_A, 0xA5);
        assert_eq!(get(&mut cmos, REG_A), 0x25, "UIP cannot be written");
        assert_eq!(get(&mut cmos, REG_B), 0x02);
        put(
            &mut cmos,
            REG_B,
            REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_24_HOUR,
        );
        assert_eq!(get(&mut cmos, REG_C), 0);
        assert_eq!(get(&mut cmos, REG_C), 0);
        put(&mut cmos, REG_C, 0xFF);
        assert_eq!(get(&mut cmos, REG_C), 0);
        assert_eq!(get(&mut cmos, REG_D), 0x80);
        put(&mut cmos, REG_D, 0x00);
        assert_eq!(get(&mut cmos, REG_D), 0x80);
        // RESET pin: interrupt enables cleared, format kept.
        cmos.reset();
        assert_eq!(get(&mut cmos, REG_B), REG_B_24_HOUR);
    }

    #[test]
    fn uip_is_set_244_us_before_each_second() {
        // MC146818A: UIP goes high 244 us before the update cycle.
        let (_, clock, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        assert_eq!(get(&mut cmos, REG_A) & REG_A_UIP, 0);
        clock.set(NS_PER_SECOND - UIP_LEAD_NS - 1);
        assert_eq!(get(&mut cmos, REG_A) & REG_A_UIP, 0);
        clock.set(NS_PER_SECOND - UIP_LEAD_NS);
        assert_eq!(get(&mut cmos, REG_A) & REG_A_UIP, REG_A_UIP);
        clock.set(NS_PER_SECOND - 1);
        assert!(cmos.update_in_progress());
        clock.set(NS_PER_SECOND);
        assert!(!cmos.update_in_progress());
        clock.set(5 * NS_PER_SECOND - 1_000);
        assert!(cmos.update_in_progress());
        // No updates while SET is on or the divider is held in reset.
        put(&mut cmos, REG_B, REG_B_SET | REG_B_24_HOUR);
        assert!(!cmos.update_in_progress());
        put(&mut cmos, REG_B, REG_B_24_HOUR);
        put(&mut cmos, REG_A, 0x66);
        assert!(!cmos.update_in_progress());
    }

    #[test]
    fn uip_wait_loop_terminates() {
        // Linux mc146818_avoid_UIP: poll register A until UIP clears. Each poll is a VM
        // exit of ~10 us, so it ends within 244 us of clock time.
        let (_, clock, mut cmos) = cmos_at(unix(2024, 5, 1, 8, 0, 0));
        clock.set(NS_PER_SECOND - UIP_LEAD_NS);
        let mut polls = 0;
        while get(&mut cmos, REG_A) & REG_A_UIP != 0 {
            clock.advance(10_000);
            polls += 1;
            assert!(polls <= 25);
        }
        assert!(polls >= 24);
    }

    #[test]
    fn uip_phase_starts_at_construction() {
        let clock = ManualClock::new(123_456_789);
        let cmos = Cmos::new(
            FixedWallClock::new(0),
            clock.clone(),
            CmosMemoryLayout::default(),
        )
        .unwrap();
        clock.advance(NS_PER_SECOND - UIP_LEAD_NS);
        assert!(cmos.update_in_progress());
    }

    #[test]
    fn index_port_nmi_bit() {
        // PC/AT: port 0x70 bit 7 gates NMI; bits 6..0 select the CMOS byte.
        let (_, _, mut cmos) = cmos_at(0);
        cmos.write(0, &[0x80 | REG_D]);
        assert!(cmos.nmi_disabled());
        assert_eq!(cmos.index(), REG_D);
        let mut b = [0];
        cmos.read(1, &mut b);
        assert_eq!(b[0], REG_D_VALID);
        cmos.write(0, &[REG_D]);
        assert!(!cmos.nmi_disabled());
        // The index port is write-only.
        cmos.read(0, &mut b);
        assert_eq!(b[0], 0xFF);
    }

    #[test]
    fn plain_ram_bytes() {
        let (_, _, mut cmos) = cmos_at(0);
        put(&mut cmos, 0x7F, 0xA5);
        put(&mut cmos, 0x0E, 0x5A);
        assert_eq!(get(&mut cmos, 0x7F), 0xA5);
        assert_eq!(cmos.ram_byte(0x0E), Ok(0x5A));
        // Alarm bytes are plain RAM here.
        put(&mut cmos, REG_SECONDS_ALARM, 0x42);
        assert_eq!(get(&mut cmos, REG_SECONDS_ALARM), 0x42);
        cmos.set_ram_byte(0x5F, 3).unwrap();
        assert_eq!(get(&mut cmos, 0x5F), 3);
        assert_eq!(
            cmos.set_ram_byte(0x80, 0),
            Err(Error::CmosIndexOutOfRange { index: 0x80 })
        );
        assert_eq!(
            cmos.ram_byte(REG_CENTURY),
            Err(Error::CmosIndexIsClock { index: REG_CENTURY })
        );
    }

    #[test]
    fn wide_accesses_split_into_index_then_data() {
        // `out 0x70, ax`: the ISA bus writes AL to 0x70 then AH to 0x71.
        let (_, _, mut cmos) = cmos_at(0);
        cmos.write(0, &[0x40, 0x77]);
        assert_eq!(cmos.ram_byte(0x40), Ok(0x77));
        let mut buf = [0u8; 4];
        cmos.read(0, &mut buf);
        assert_eq!(buf, [0xFF, 0x77, 0xFF, 0xFF]);
    }

    #[test]
    fn pio_bus_dispatch() {
        let (_, _, cmos) = cmos_at(unix(2024, 2, 29, 13, 45, 9));
        let cmos = Mutex::new(cmos);
        DevicePio::pio_write(&cmos, PioAddress(CMOS_INDEX_PORT), 0, &[REG_YEAR]);
        let mut b = [0];
        DevicePio::pio_read(&cmos, PioAddress(CMOS_INDEX_PORT), 1, &mut b);
        assert_eq!(b[0], 0x24);
        // Registered as two one-port ranges.
        DevicePio::pio_read(&cmos, PioAddress(CMOS_INDEX_PORT + 1), 0, &mut b);
        assert_eq!(b[0], 0x24);
    }

    #[test]
    fn rtc_range_constants() {
        assert_eq!(
            RTC_MIN_UNIX_SECONDS,
            days_from_civil(0, 1, 1) * SECONDS_PER_DAY
        );
        assert_eq!(
            RTC_MAX_UNIX_SECONDS,
            days_from_civil(10_000, 1, 1) * SECONDS_PER_DAY - 1
        );
        let (_, _, cmos) = cmos_at(u64::MAX);
        assert_eq!(cmos.guest_unix_seconds(), RTC_MAX_UNIX_SECONDS);
        let t = cmos.guest_time();
        assert_eq!((t.year, t.month, t.day), (9999, 12, 31));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Read(u64, usize),
        Write(u64, Vec<u8>),
        AdvanceClock(u64),
        AdvanceWall(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let offset = prop_oneof![0u64..3, any::<u64>()];
        prop_oneof![
            (offset.clone(), 0usize..=9).prop_map(|(o, n)| Op::Read(o, n)),
            (offset, prop::collection::vec(any::<u8>(), 0..=9)).prop_map(|(o, d)| Op::Write(o, d)),
            prop_oneof![
                0u64..2_000_000,
                Just(NS_PER_SECOND - UIP_LEAD_NS),
                any::<u64>()
            ]
            .prop_map(Op::AdvanceClock),
            prop_oneof![0u64..100_000, any::<u64>()].prop_map(Op::AdvanceWall),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// No panic on any access sequence. Invariants: D reads 0x80, C reads 0, the index
        /// port reads 0xFF, UIP is never set in SET mode, the guest time stays in the RTC's
        /// range, and a running clock shows valid field values in any format.
        #[test]
        fn any_access_sequence(ops in prop::collection::vec(op(), 0..64), start in any::<u32>()) {
            let (wall, clock, mut cmos) = cmos_at(u64::from(start));
            for op in ops {
                match op {
                    Op::Read(offset, len) => {
                        let mut buf = vec![0u8; len];
                        cmos.read(offset, &mut buf);
                    }
                    Op::Write(offset, data) => cmos.write(offset, &data),
                    Op::AdvanceClock(ns) => clock.advance(ns),
                    Op::AdvanceWall(s) => wall.advance(s),
                }
                let index = cmos.index() | if cmos.nmi_disabled() { 0x80 } else { 0 };
                prop_assert_eq!(get(&mut cmos, REG_D), REG_D_VALID);
                prop_assert_eq!(get(&mut cmos, REG_C), 0);
                let mut b = [0];
                cmos.read(0, &mut b);
                prop_assert_eq!(b[0], 0xFF);
                let b_reg = get(&mut cmos, REG_B);
                if b_reg & REG_B_SET != 0 {
                    prop_assert_eq!(get(&mut cmos, REG_A) & REG_A_UIP, 0);
                } else {
                    let dec = |v: u8| if b_reg & REG_B_BINARY != 0 { v } else { from_bcd(v) };
                    let bytes = clock_bytes(&mut cmos);
                    prop_assert!(dec(bytes[0]) < 60 && dec(bytes[1]) < 60);
                    let hour = bytes[2];
                    if b_reg & REG_B_24_HOUR != 0 {
                        prop_assert!(dec(hour) < 24);
                    } else {
                        prop_assert!((1..=12).contains(&dec(hour & 0x7F)));
                    }
                    prop_assert!((1..=7).contains(&dec(bytes[3])));
                    prop_assert!((1..=31).contains(&dec(bytes[4])));
                    prop_assert!((1..=12).contains(&dec(bytes[5])));
                    prop_assert!(dec(bytes[6]) < 100 && dec(bytes[7]) < 100);
                }
                let t = cmos.guest_unix_seconds();
                prop_assert!((RTC_MIN_UNIX_SECONDS..=RTC_MAX_UNIX_SECONDS).contains(&t));
                // Restore the guest's index so the checks above do not change the sequence.
                cmos.write(0, &[index]);
            }
        }
    }
}

/// The layout version [`CmosState`] has; [`Cmos::restore`] accepts only this one.
pub const CMOS_STATE_VERSION: u32 = 1;

/// The CMOS / RTC as plain data (QEMU's `vmstate_rtc`): the 128 bytes, the index register
/// with the NMI mask, the guest's clock offset from the wall clock and the position in the
/// one-second update cycle (relative, so it restores on any host clock).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CmosState {
    /// Layout version, [`CMOS_STATE_VERSION`].
    pub version: u32,
    /// CMOS RAM, 128 bytes.
    pub ram: Vec<u8>,
    /// The index register.
    pub index: u8,
    /// Bit 7 of the last index write.
    pub nmi_disabled: bool,
    /// Guest time minus wall-clock time, seconds.
    pub offset_seconds: i64,
    /// Nanoseconds into the current update-cycle second.
    pub phase_ns: u64,
}

impl<W: WallClock, C: Clock> Cmos<W, C> {
    /// The CMOS's state now.
    pub fn state(&self) -> CmosState {
        CmosState {
            version: CMOS_STATE_VERSION,
            ram: self.ram.to_vec(),
            index: self.index,
            nmi_disabled: self.nmi_disabled,
            offset_seconds: self.offset_seconds,
            phase_ns: self.clock.now_ns().wrapping_sub(self.phase_origin_ns) % 1_000_000_000,
        }
    }

    /// Puts the CMOS into `state`; another version or a RAM that is not 128 bytes is refused.
    pub fn restore(&mut self, state: &CmosState) -> Result<()> {
        if state.version != CMOS_STATE_VERSION {
            return Err(Error::StateVersion {
                device: "cmos",
                found: state.version,
                supported: CMOS_STATE_VERSION,
            });
        }
        let ram: [u8; CMOS_SIZE] =
            state
                .ram
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidState {
                    device: "cmos",
                    field: "ram (needs 128 bytes)",
                })?;
        self.ram = ram;
        self.index = state.index & 0x7f;
        self.nmi_disabled = state.nmi_disabled;
        self.offset_seconds = state.offset_seconds;
        self.phase_origin_ns = self
            .clock
            .now_ns()
            .wrapping_sub(state.phase_ns % 1_000_000_000);
        Ok(())
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use proptest::prelude::*;
    use vmkit_hw::{FixedWallClock, ManualClock};

    fn cmos(start: u64) -> (Cmos<FixedWallClock, ManualClock>, ManualClock) {
        let clock = ManualClock::new(start);
        let wall = FixedWallClock::new(1_700_000_000);
        (
            Cmos::new(wall, clock.clone(), CmosMemoryLayout::default()).unwrap(),
            clock,
        )
    }

    proptest! {
        /// Random index/data traffic, save, restore on another clock: every later read is
        /// the same (time, UIP, RAM), through JSON.
        #[test]
        fn save_restore_gives_identical_reads(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u64..2_000_000_000), 0..60),
            after in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u64..2_000_000_000), 0..60),
            start_b in 0u64..10_000_000_000,
        ) {
            let (mut a, clock_a) = cmos(5_000_000_000);
            for &(write_index, v, dt) in &ops {
                clock_a.advance(dt);
                if write_index { a.write(0, &[v]) } else { a.write(1, &[v]) }
            }
            let json = serde_json::to_string(&a.state()).unwrap();
            let (mut b, clock_b) = cmos(start_b);
            b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
            for &(index_only, v, dt) in &after {
                clock_a.advance(dt);
                clock_b.advance(dt);
                if index_only {
                    a.write(0, &[v & 0x3f]);
                    b.write(0, &[v & 0x3f]);
                }
                let (mut x, mut y) = ([0u8], [0u8]);
                a.read(1, &mut x);
                b.read(1, &mut y);
                prop_assert_eq!(x, y);
            }
        }
    }

    #[test]
    fn bad_states_are_refused() {
        let (mut a, _) = cmos(0);
        let mut s = a.state();
        s.ram.pop();
        assert!(a.restore(&s).unwrap_err().to_string().contains("128 bytes"));
        s.version = 5;
        assert!(a.restore(&s).unwrap_err().to_string().contains("version 5"));
    }
}
