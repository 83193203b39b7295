//! The PIIX4 (82371AB) power-management function at 00:01.3, as QEMU's `PIIX4_PM`: its
//! configuration registers (PMBA, PMREGMISC, SMBus base) and the ACPI fixed hardware in the
//! PM I/O block it decodes at PMBA (PM1a event and control, the PM timer), plus the GPE0
//! block QEMU puts at 0xAFE0 and the APM ports 0xB2/0xB3 that switch ACPI mode.
//!
//! PM block layout (offsets from PMBA): PM1a_STS +0 (16-bit, write 1 to clear), PM1a_EN +2,
//! PM1a_CNT +4, PM_TMR +8 (24-bit, read-only, 3.579545 MHz).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmkit_bus::Space;
use vmkit_hw::{Clock, IrqLine};
use vmkit_pci::{ConfigSpace, ConfigSpaceState, Mapping, PciDevice, RegionIndex};

use crate::i440fx::VENDOR_INTEL;

/// PIIX4 PM device id.
pub const PIIX4_PM_DEVICE_ID: u16 = 0x7113;
/// Revision QEMU reports.
pub const PIIX4_PM_REVISION: u8 = 0x03;
/// PMBA: the PM I/O base (bits 15:6; bit 0 reads 1, "I/O space").
pub const PMBA: u16 = 0x40;
/// PMREGMISC: bit 0 enables the PM I/O block.
pub const PMREGMISC: u16 = 0x80;
/// SMBus host base address.
pub const SMBBA: u16 = 0x90;
/// SMBus host configuration.
pub const SMBHSTCFG: u16 = 0xd2;
/// Bytes the PM block decodes.
pub const PM_IO_LEN: u64 = 64;
/// The region index the PM block is reported as.
pub const PM_REGION: RegionIndex = RegionIndex::Custom(0);
/// The PM timer's frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// Where QEMU's PIIX4 puts GPE0 (4 bytes: status, enable).
pub const GPE0_BASE: u16 = 0xafe0;
/// GPE0's length.
pub const GPE0_LEN: u16 = 4;
/// The APM control port (SMI command): 0xF1 enables ACPI mode, 0xF0 disables it.
pub const APM_CNT_PORT: u16 = 0xb2;
/// ACPI_ENABLE command.
pub const ACPI_ENABLE: u8 = 0xf1;
/// ACPI_DISABLE command.
pub const ACPI_DISABLE: u8 = 0xf0;

/// PM1 status: timer carry (bit 23 of the timer changed).
pub const TMROF_STS: u16 = 1 << 0;
/// PM1 status: global lock release.
pub const GBL_STS: u16 = 1 << 5;
/// PM1 status: power button pressed.
pub const PWRBTN_STS: u16 = 1 << 8;
/// PM1 status: RTC alarm.
pub const RTC_STS: u16 = 1 << 10;
/// PM1 status: woke up.
pub const WAK_STS: u16 = 1 << 15;
/// PM1 control: SCI_EN (ACPI mode).
pub const SCI_EN: u16 = 1 << 0;
/// PM1 control: SLP_EN (write-only: enter the state SLP_TYP names).
pub const SLP_EN: u16 = 1 << 13;
/// PM1 control: SLP_TYP field shift (bits 12:10).
pub const SLP_TYP_SHIFT: u16 = 10;
/// The SLP_TYP of S5 (soft off) on QEMU's PIIX4 (`\_S5` = {0, 0}).
pub const SLP_TYP_S5: u8 = 0;
/// Status bits that raise the SCI when their enable is set (QEMU's `acpi_update_sci`).
const SCI_SOURCES: u16 = TMROF_STS | GBL_STS | PWRBTN_STS | RTC_STS;
/// Writable bits of PM1_EN.
const PM1_EN_MASK: u16 = SCI_SOURCES;

/// What the guest asks of the machine through PM1_CNT.
pub trait PowerEvents: Send + Sync {
    /// The guest wrote SLP_EN with sleep type `slp_typ` (0 = S5 soft off on PIIX4).
    fn sleep(&self, slp_typ: u8);
}

/// Power events that go nowhere (a model under test).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPower;

impl PowerEvents for NoPower {
    fn sleep(&self, _slp_typ: u8) {}
}

/// The PIIX4 PM function (see the [module docs](self)).
pub struct Piix4Pm {
    config: ConfigSpace,
    clock: Arc<dyn Clock>,
    sci: Arc<dyn IrqLine>,
    power: Arc<dyn PowerEvents>,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe_sts: [u8; 2],
    gpe_en: [u8; 2],
    /// Timer ticks when TMROF_STS was last cleared (the carry is bit 23 changing since).
    tmr_ref: u64,
    apm_status: u8,
    /// Added to the clock (ns): a restored PM timer goes on from the saved time base.
    ns_bias: i64,
}

impl std::fmt::Debug for Piix4Pm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piix4Pm")
            .field("pm_base", &self.pm_base())
            .field("pm1_sts", &self.pm1_sts)
            .field("pm1_en", &self.pm1_en)
            .field("pm1_cnt", &self.pm1_cnt)
            .finish_non_exhaustive()
    }
}

impl Piix4Pm {
    /// The function at power-on; the SCI drives `sci`, sleep requests go to `power`.
    pub fn new(clock: Arc<dyn Clock>, sci: Arc<dyn IrqLine>, power: Arc<dyn PowerEvents>) -> Self {
        let mut config = ConfigSpace::new(
            VENDOR_INTEL,
            PIIX4_PM_DEVICE_ID,
            0x06,
            0x80,
            0x00,
            PIIX4_PM_REVISION,
        );
        config.set_interrupt_pin(1);
        config.set_subsystem(
            crate::i440fx::QEMU_SUBSYSTEM_VENDOR,
            crate::i440fx::QEMU_SUBSYSTEM_ID,
        );
        for off in 0x40..=0xff {
            config.set_write_mask_byte(off, 0xff);
        }
        // PMBA: bits 15:6 are the base; bit 0 is the read-only I/O indicator.
        config.set_write_mask_byte(PMBA, 0xc0);
        config.set_write_mask_byte(PMBA + 2, 0);
        config.set_write_mask_byte(PMBA + 3, 0);
        let mut pm = Self {
            config,
            clock,
            sci,
            power,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            gpe_sts: [0; 2],
            gpe_en: [0; 2],
            tmr_ref: 0,
            apm_status: 0,
            ns_bias: 0,
        };
        pm.power_on();
        pm
    }

    fn power_on(&mut self) {
        self.config.reset();
        self.config.set_byte(PMBA, 0x01);
        self.config.set_byte(SMBBA, 0x01);
        // SMM is "already initialised" for firmware, as QEMU without SMM says (0x5B bit 1).
        self.config.set_byte(0x5b, 0x02);
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = 0;
        self.gpe_sts = [0; 2];
        self.gpe_en = [0; 2];
        self.tmr_ref = self.ticks();
        self.apm_status = 0;
        self.update_sci();
    }

    /// Programs PMBA and PMREGMISC as firmware does (for boots without firmware).
    pub fn set_pm_base(&mut self, base: u16) {
        self.config.set_dword(PMBA, u32::from(base & 0xffc0) | 1);
        self.config.set_byte(PMREGMISC, 1);
    }

    /// Where the PM block is decoded, if PM I/O is enabled.
    pub fn pm_base(&self) -> Option<u16> {
        (self.config.byte(PMREGMISC) & 1 != 0).then(|| self.config.word(PMBA) & 0xffc0)
    }

    /// PM timer ticks since the clock's epoch.
    /// The PM timer's time base in ns (the clock plus the restored bias).
    fn now_ns(&self) -> u64 {
        let ns = i128::from(self.clock.now_ns()) + i128::from(self.ns_bias);
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    fn ticks(&self) -> u64 {
        let ns = u128::from(self.now_ns());
        u64::try_from(ns * u128::from(PM_TIMER_HZ) / 1_000_000_000).unwrap_or(u64::MAX)
    }

    /// The 24-bit PM timer value now.
    pub fn timer(&self) -> u32 {
        (self.ticks() & 0xff_ffff) as u32
    }

    /// PM1_STS with the timer carry folded in.
    pub fn pm1_status(&self) -> u16 {
        let carry = (self.ticks() >> 23) != (self.tmr_ref >> 23);
        self.pm1_sts | if carry { TMROF_STS } else { 0 }
    }

    /// PM1_CNT (SLP_EN always reads 0).
    pub fn pm1_control(&self) -> u16 {
        self.pm1_cnt
    }

    /// Presses the power button: PWRBTN_STS, and the SCI if PWRBTN_EN is set (QMP
    /// `system_powerdown`).
    pub fn power_button(&mut self) {
        self.pm1_sts |= PWRBTN_STS;
        self.update_sci();
    }

    fn update_sci(&self) {
        let pm1 = self.pm1_status() & self.pm1_en & SCI_SOURCES != 0;
        let gpe = (self.gpe_sts[0] & self.gpe_en[0]) | (self.gpe_sts[1] & self.gpe_en[1]) != 0;
        self.sci.set_level(pm1 || gpe);
    }

    fn read_register(&self, offset: u64) -> u8 {
        let word = |v: u16, hi: bool| if hi { (v >> 8) as u8 } else { v as u8 };
        match offset {
            0 | 1 => word(self.pm1_status(), offset == 1),
            2 | 3 => word(self.pm1_en, offset == 3),
            4 | 5 => word(self.pm1_cnt, offset == 5),
            8..=11 => (self.timer() >> ((offset - 8) * 8)) as u8,
            _ => 0,
        }
    }

    /// A read of the PM block at `offset`.
    pub fn pm_read(&mut self, offset: u64, data: &mut [u8]) {
        // Read the timer once so a dword read is consistent.
        let timer = self.timer();
        for (i, byte) in data.iter_mut().enumerate() {
            let off = offset.saturating_add(i as u64);
            *byte = match off {
                8..=11 => (timer >> ((off - 8) * 8)) as u8,
                _ => self.read_register(off),
            };
        }
    }

    /// A write to the PM block at `offset` (registers are written as whole 16-bit values
    /// where the access covers them, byte by byte otherwise).
    pub fn pm_write(&mut self, offset: u64, data: &[u8]) {
        let value = |lo: u8, hi: Option<u8>, old: u16| match hi {
            Some(hi) => u16::from_le_bytes([lo, hi]),
            None => (old & 0xff00) | u16::from(lo),
        };
        let mut i = 0;
        while i < data.len() {
            let off = offset.saturating_add(i as u64);
            let pair = (off % 2 == 0 && i + 1 < data.len()).then(|| data[i + 1]);
            let (reg, lo, hi, step) = if off % 2 == 1 {
                // The high byte alone.
                (off - 1, None, Some(data[i]), 1)
            } else {
                (off, Some(data[i]), pair, if pair.is_some() { 2 } else { 1 })
            };
            match reg {
                0 => {
                    let bits = match (lo, hi) {
                        (Some(lo), Some(hi)) => u16::from_le_bytes([lo, hi]),
                        (Some(lo), None) => u16::from(lo),
                        (None, Some(hi)) => u16::from(hi) << 8,
                        (None, None) => 0,
                    };
                    self.clear_status(bits);
                }
                2 => {
                    let v = match (lo, hi) {
                        (Some(lo), hi) => value(lo, hi, self.pm1_en),
                        (None, Some(hi)) => (self.pm1_en & 0xff) | (u16::from(hi) << 8),
                        (None, None) => self.pm1_en,
                    };
                    self.pm1_en = v & PM1_EN_MASK;
                }
                4 => {
                    let v = match (lo, hi) {
                        (Some(lo), hi) => value(lo, hi, self.pm1_cnt),
                        (None, Some(hi)) => (self.pm1_cnt & 0xff) | (u16::from(hi) << 8),
                        (None, None) => self.pm1_cnt,
                    };
                    self.write_control(v);
                }
                _ => {}
            }
            i += step;
        }
        self.update_sci();
    }

    fn clear_status(&mut self, bits: u16) {
        if bits & TMROF_STS != 0 {
            self.tmr_ref = self.ticks();
        }
        self.pm1_sts &= !bits;
    }

    fn write_control(&mut self, value: u16) {
        self.pm1_cnt = value & !SLP_EN;
        if value & SLP_EN != 0 {
            let slp_typ = ((value >> SLP_TYP_SHIFT) & 7) as u8;
            self.power.sleep(slp_typ);
        }
    }

    /// A read of GPE0 at `offset` (0-1 status, 2-3 enable).
    pub fn gpe_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.saturating_add(i as u64) {
                o @ 0..=1 => self.gpe_sts[o as usize],
                o @ 2..=3 => self.gpe_en[o as usize - 2],
                _ => 0,
            };
        }
    }

    /// A write to GPE0: status bits are write-1-to-clear, enables are plain.
    pub fn gpe_write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                o @ 0..=1 => self.gpe_sts[o as usize] &= !value,
                o @ 2..=3 => self.gpe_en[o as usize - 2] = value,
                _ => {}
            }
        }
        self.update_sci();
    }

    /// Sets GPE0 status bit `bit` (0-15), as a hot-plug controller would.
    pub fn raise_gpe(&mut self, bit: u8) {
        if let Some(byte) = self.gpe_sts.get_mut(usize::from(bit / 8)) {
            *byte |= 1 << (bit % 8);
        }
        self.update_sci();
    }

    /// A read of the APM ports at `offset` (0 = 0xB2 control, 1 = 0xB3 status).
    pub fn apm_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.saturating_add(i as u64) {
                1 => self.apm_status,
                _ => 0,
            };
        }
    }

    /// A write to the APM ports: ACPI_ENABLE / ACPI_DISABLE on 0xB2 switch SCI_EN, as
    /// QEMU's `apm_ctrl_changed` does for the PIIX4; 0xB3 is a scratch register.
    pub fn apm_write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                0 => match value {
                    ACPI_ENABLE => self.pm1_cnt |= SCI_EN,
                    ACPI_DISABLE => self.pm1_cnt &= !SCI_EN,
                    _ => {}
                },
                1 => self.apm_status = value,
                _ => {}
            }
        }
    }
}

impl PciDevice for Piix4Pm {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn regions(&self) -> Vec<(RegionIndex, Mapping)> {
        let mut regions = self.config.regions();
        if let Some(base) = self.pm_base().filter(|b| *b != 0) {
            regions.push((
                PM_REGION,
                Mapping {
                    space: Space::Pio,
                    addr: u64::from(base),
                    size: PM_IO_LEN,
                },
            ));
        }
        regions
    }

    fn region_read(&mut self, region: RegionIndex, offset: u64, data: &mut [u8]) {
        if region == PM_REGION {
            self.pm_read(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn region_write(&mut self, region: RegionIndex, offset: u64, data: &[u8]) {
        if region == PM_REGION {
            self.pm_write(offset, data);
        }
    }

    fn reset(&mut self) {
        self.power_on();
    }
}

/// The layout version of [`PmState`].
pub const PM_STATE_VERSION: u32 = 1;

/// The PIIX4 PM function as plain data (QEMU's `vmstate_acpi`): configuration space, the
/// PM1 event and control registers, GPE0, the APM status port and the PM timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmState {
    /// Layout version, [`PM_STATE_VERSION`].
    pub version: u32,
    /// Configuration space (PMBA, PMREGMISC, SMBus base, ...).
    pub config: ConfigSpaceState,
    /// The PM timer's time base when saved, in ns (the timer reads `ns * 3.579545 MHz`).
    pub now_ns: u64,
    /// PM1a_STS (without the timer carry, which follows from `tmr_ref`).
    pub pm1_sts: u16,
    /// PM1a_EN.
    pub pm1_en: u16,
    /// PM1a_CNT.
    pub pm1_cnt: u16,
    /// GPE0 status bytes.
    pub gpe_sts: [u8; 2],
    /// GPE0 enable bytes.
    pub gpe_en: [u8; 2],
    /// The timer tick of the last TMROF_STS clear.
    pub tmr_ref: u64,
    /// APM status (0xB3).
    pub apm_status: u8,
}

impl Piix4Pm {
    /// The function's state now.
    pub fn state(&self) -> PmState {
        PmState {
            version: PM_STATE_VERSION,
            config: self.config.state(),
            now_ns: self.now_ns(),
            pm1_sts: self.pm1_sts,
            pm1_en: self.pm1_en,
            pm1_cnt: self.pm1_cnt,
            gpe_sts: self.gpe_sts,
            gpe_en: self.gpe_en,
            tmr_ref: self.tmr_ref,
            apm_status: self.apm_status,
        }
    }

    /// Takes `state`: the PM timer goes on from the saved time base (however this host's
    /// clock reads), and the SCI is driven to what the restored registers say. The PM
    /// I/O block moves when the bus re-reads the regions
    /// ([`PciBus::update_mappings`](vmkit_pci::PciBus::update_mappings)). Another version
    /// or another function's configuration is refused and nothing changes.
    pub fn restore(&mut self, state: &PmState) -> vmkit_pci::Result<()> {
        if state.version != PM_STATE_VERSION {
            return Err(vmkit_pci::Error::InvalidState(format!(
                "PIIX4 PM state version {} is not supported (this build reads version \
                 {PM_STATE_VERSION})",
                state.version
            )));
        }
        let bias = i128::from(state.now_ns) - i128::from(self.clock.now_ns());
        let bias = i64::try_from(bias).map_err(|_| {
            vmkit_pci::Error::InvalidState(format!(
                "PIIX4 PM time base {} ns is out of range",
                state.now_ns
            ))
        })?;
        self.config.restore(&state.config)?;
        self.ns_bias = bias;
        self.pm1_sts = state.pm1_sts;
        self.pm1_en = state.pm1_en & PM1_EN_MASK;
        self.pm1_cnt = state.pm1_cnt & !SLP_EN;
        self.gpe_sts = state.gpe_sts;
        self.gpe_en = state.gpe_en;
        self.tmr_ref = state.tmr_ref;
        self.apm_status = state.apm_status;
        self.update_sci();
        Ok(())
    }
}
