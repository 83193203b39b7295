//! The HPET block: registers, the main counter, the comparators and their deadlines.

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use vmkit_hw::{Clock, TimedDevice};

use crate::irq::HpetIrq;
use crate::regs::*;
use crate::state::{HpetState, HpetTimerState, HPET_STATE_VERSION};
use crate::{Error, Result};

/// How an HPET is built: QEMU's `hpet` device properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpetConfig {
    /// Number of comparators, [`HPET_MIN_TIMERS`]..=[`HPET_MAX_TIMERS`] (QEMU's `timers`,
    /// default 3). Only the first 24 fit in the 1 KiB window (as in QEMU).
    pub timers: u8,
    /// `Tn_INT_ROUTE_CAP` of every timer: bit n set = GSI n may be routed to (QEMU's
    /// `hpet-intcap`; [`PC_INT_ROUTE_CAP`] on pc, [`Q35_INT_ROUTE_CAP`] on q35).
    pub int_route_cap: u32,
    /// `Tn_FSB_INT_DEL_CAP`: timers can deliver FSB (MSI) messages (QEMU's `msi`, off by
    /// default on pc).
    pub fsb: bool,
}

impl Default for HpetConfig {
    /// QEMU's pc: 3 timers, routable to GSI 2 only, no FSB delivery.
    fn default() -> Self {
        Self {
            timers: HPET_DEFAULT_TIMERS,
            int_route_cap: PC_INT_ROUTE_CAP,
            fsb: false,
        }
    }
}

/// One comparator (QEMU's `HPETTimer`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timer {
    /// Configuration and capability register (capabilities in bits 63:32 and 15, 5, 4).
    pub(crate) config: u64,
    /// Comparator value register as the guest reads it.
    pub(crate) cmp: u64,
    /// FSB interrupt route register: value in bits 31:0, address in bits 63:32.
    pub(crate) fsb: u64,
    /// The comparator extended to the 64-bit counter (differs from `cmp` in 32-bit mode).
    pub(crate) cmp64: u64,
    /// Periodic mode's increment: the last value written to the comparator.
    pub(crate) period: u64,
    /// The armed deadline is the 32-bit counter wrap, not the match (32-bit one-shot mode).
    pub(crate) wrap_flag: bool,
    /// When this timer next fires, ns on the clock (QEMU's armed `qemu_timer`).
    pub(crate) deadline_ns: Option<u64>,
    /// The last deadline armed, for the 1 us minimum between periodic expiries.
    pub(crate) last_arm_ns: Option<u64>,
}

impl Timer {
    fn level(&self) -> bool {
        self.config & TN_INT_TYPE_LEVEL != 0
    }
    fn int_enabled(&self) -> bool {
        self.config & TN_INT_ENABLE != 0
    }
    fn periodic(&self) -> bool {
        self.config & TN_PERIODIC != 0
    }
    fn mode32(&self) -> bool {
        self.config & TN_32BIT != 0
    }
    fn fsb_enabled(&self) -> bool {
        self.config & TN_FSB_ENABLE != 0
    }
}

/// A snapshot of one timer for monitors and tests ("info hpet").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerInfo {
    /// The configuration and capability register.
    pub config: u64,
    /// The comparator register.
    pub comparator: u64,
    /// The periodic increment (0 until a periodic comparator write).
    pub period: u64,
    /// The FSB route register.
    pub fsb_route: u64,
    /// The GSI the timer drives now (legacy route applied), or `None` with FSB delivery.
    pub gsi: Option<u32>,
    /// When the timer next fires (ns on the clock), if armed.
    pub deadline_ns: Option<u64>,
}

/// Inserts the `len` low bits of `value` at bit `shift` of `old` (QEMU's `deposit64`).
fn deposit(old: u64, shift: u32, len: u32, value: u64) -> u64 {
    let mask = if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    };
    (old & !(mask << shift)) | ((value & mask) << shift)
}

/// Bits of `new` under `mask`, bits of `old` elsewhere.
fn fixup(new: u64, old: u64, mask: u64) -> u64 {
    (new & mask) | (old & !mask)
}

fn activating(old: u64, new: u64, bit: u64) -> bool {
    old & bit == 0 && new & bit != 0
}

fn deactivating(old: u64, new: u64, bit: u64) -> bool {
    old & bit != 0 && new & bit == 0
}

/// The HPET event timer block.
///
/// `I` receives the interrupts (see [`HpetIrq`]) and `C` is the time source; both are usually
/// `Arc`s shared with the VMM.
#[derive(Debug)]
pub struct Hpet<I: HpetIrq, C: Clock> {
    irq: I,
    clock: C,
    capabilities: u64,
    fsb_cap: bool,
    int_route_cap: u32,
    /// General configuration register.
    config: u64,
    /// General interrupt status register.
    isr: u64,
    /// The main counter while halted (and the value it restarts from).
    counter: u64,
    /// While enabled: the counter read `base_ticks` at clock time `base_ns`.
    base_ns: u64,
    base_ticks: u64,
    timers: Vec<Timer>,
    /// GSIs driven high now (level-triggered timers), bit n = GSI n.
    driven: u32,
}

impl<I: HpetIrq, C: Clock> Hpet<I, C> {
    /// Creates an HPET in its reset state (halted, counter 0, every comparator all ones).
    pub fn new(config: HpetConfig, irq: I, clock: C) -> Result<Self> {
        if !(HPET_MIN_TIMERS..=HPET_MAX_TIMERS).contains(&config.timers) {
            return Err(Error::TimerCount {
                timers: config.timers,
                min: HPET_MIN_TIMERS,
                max: HPET_MAX_TIMERS,
            });
        }
        Ok(Self::build(config, irq, clock))
    }

    /// QEMU's pc HPET ([`HpetConfig::default`]): 3 timers routable to GSI 2, no FSB.
    pub fn pc(irq: I, clock: C) -> Self {
        Self::build(HpetConfig::default(), irq, clock)
    }

    /// `config.timers` must be in range.
    fn build(config: HpetConfig, irq: I, clock: C) -> Self {
        let timers = config.timers.clamp(HPET_MIN_TIMERS, HPET_MAX_TIMERS);
        let capabilities = HPET_CAP_BASE
            | (u64::from(timers - 1) << CAP_NUM_TIM_SHIFT)
            | (u64::from(HPET_CLK_PERIOD_FS) << 32);
        let mut hpet = Self {
            irq,
            clock,
            capabilities,
            fsb_cap: config.fsb,
            int_route_cap: config.int_route_cap,
            config: 0,
            isr: 0,
            counter: 0,
            base_ns: 0,
            base_ticks: 0,
            timers: vec![Timer::default(); usize::from(timers)],
            driven: 0,
        };
        hpet.reset();
        hpet
    }

    /// The power-on / system reset state (QEMU's `hpet_reset`): halted, legacy routing off,
    /// counter 0, status clear, every timer edge-triggered, disabled, one-shot, 64-bit, with
    /// comparator all ones and no period. Lines this device drove are lowered.
    pub fn reset(&mut self) {
        let was_legacy = self.legacy_replacement();
        let timer_config = self.timer_reset_config();
        for t in &mut self.timers {
            *t = Timer {
                config: timer_config,
                cmp: u64::MAX,
                cmp64: u64::MAX,
                ..Timer::default()
            };
        }
        self.config = 0;
        self.isr = 0;
        self.counter = 0;
        self.base_ns = 0;
        self.base_ticks = 0;
        self.sync_lines();
        if was_legacy {
            self.irq.legacy_replacement_changed(false);
        }
    }

    fn timer_reset_config(&self) -> u64 {
        let mut config = TN_PERIODIC_CAP | TN_SIZE_CAP | (u64::from(self.int_route_cap) << 32);
        if self.fsb_cap {
            config |= TN_FSB_CAP;
        }
        config
    }

    /// The interrupt sink.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The general capabilities and ID register.
    pub fn capabilities(&self) -> u64 {
        self.capabilities
    }

    /// Number of timers.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// `ENABLE_CNF`: the main counter runs and timers may interrupt.
    pub fn enabled(&self) -> bool {
        self.config & CFG_ENABLE != 0
    }

    /// `LEG_RT_CNF`: timers 0 and 1 use the legacy routes (GSI 2 and 8).
    pub fn legacy_replacement(&self) -> bool {
        self.config & CFG_LEGACY != 0
    }

    /// Whether the 8254's output should reach IRQ0 (QEMU's `pit_enabled`): not while the
    /// legacy replacement route is on.
    pub fn pit_enabled(&self) -> bool {
        !self.legacy_replacement()
    }

    /// The general interrupt status register.
    pub fn interrupt_status(&self) -> u64 {
        self.isr
    }

    /// The main counter now.
    pub fn counter(&self) -> u64 {
        self.ticks_at(self.clock.now_ns())
    }

    fn ticks_at(&self, now: u64) -> u64 {
        if self.enabled() {
            let elapsed = now.saturating_sub(self.base_ns) / HPET_CLK_PERIOD_NS;
            self.base_ticks.wrapping_add(elapsed)
        } else {
            self.counter
        }
    }

    /// A snapshot of timer `index`.
    pub fn timer_info(&self, index: usize) -> Result<TimerInfo> {
        let t = self.timers.get(index).ok_or(Error::NoSuchTimer {
            index,
            timers: self.timers.len(),
        })?;
        Ok(TimerInfo {
            config: t.config,
            comparator: t.cmp,
            period: t.period,
            fsb_route: t.fsb,
            gsi: (!t.fsb_enabled()).then(|| self.route(index)),
            deadline_ns: t.deadline_ns,
        })
    }

    /// The GSI timer `index` drives: the legacy route for timers 0 and 1 with `LEG_RT_CNF`,
    /// else `Tn_INT_ROUTE_CNF`.
    fn route(&self, index: usize) -> u32 {
        if index <= 1 && self.legacy_replacement() {
            [LEGACY_TIMER0_GSI, LEGACY_TIMER1_GSI][index]
        } else {
            let config = self.timers.get(index).map_or(0, |t| t.config);
            ((config & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT) as u32
        }
    }

    /// Drives every GSI to the wired-OR of the level-triggered timers routed to it: a timer
    /// asserts its GSI while its status bit is set, its interrupt is enabled, the HPET is
    /// enabled and it does not use FSB delivery.
    fn sync_lines(&mut self) {
        let mut want = 0u32;
        if self.enabled() {
            for (i, t) in self.timers.iter().enumerate() {
                if t.level() && t.int_enabled() && !t.fsb_enabled() && self.isr & (1 << i) != 0 {
                    want |= 1 << self.route(i);
                }
            }
        }
        let changed = want ^ self.driven;
        for gsi in 0..HPET_ROUTE_COUNT {
            if changed & (1 << gsi) != 0 {
                self.irq.set_gsi(gsi, want & (1 << gsi) != 0);
            }
        }
        self.driven = want;
    }

    /// The clock time at which the counter, counting on from `now`, reaches `target` (the
    /// first time: a target behind the counter is reached after the 64-bit wrap). `None` if
    /// that is beyond the clock's range.
    fn ns_of_tick(&self, target: u64, now: u64) -> Option<u64> {
        let cur = self.ticks_at(now);
        let elapsed = now.saturating_sub(self.base_ns) / HPET_CLK_PERIOD_NS;
        let distance = target.wrapping_sub(cur);
        let ns = u128::from(self.base_ns)
            + (u128::from(elapsed) + u128::from(distance)) * u128::from(HPET_CLK_PERIOD_NS);
        u64::try_from(ns).ok().filter(|&ns| ns != u64::MAX)
    }

    /// Arms timer `i` to fire when the counter reaches `target` (QEMU's `hpet_arm`, with its
    /// 1 us minimum between periodic expiries).
    fn arm(&mut self, i: usize, target: u64, now: u64) {
        let Some(mut ns) = self.ns_of_tick(target, now) else {
            self.timers[i].deadline_ns = None;
            return;
        };
        let t = &mut self.timers[i];
        if let Some(last) = t.last_arm_ns {
            if t.periodic() && ns >= last && ns - last < MIN_PERIODIC_NS {
                ns = last.saturating_add(MIN_PERIODIC_NS);
            }
        }
        t.last_arm_ns = Some(ns);
        t.deadline_ns = Some(ns);
    }

    /// (Re)computes timer `i`'s deadline from its comparator (QEMU's `hpet_set_timer`).
    fn set_timer(&mut self, i: usize, now: u64) {
        let cur = self.ticks_at(now);
        let t = &mut self.timers[i];
        t.wrap_flag = false;
        t.cmp64 = if t.mode32() {
            let mut result = (cur & !0xFFFF_FFFF) | (t.cmp & 0xFFFF_FFFF);
            if result < cur {
                result = result.wrapping_add(1 << 32);
            }
            result
        } else {
            t.cmp
        };
        if t.mode32() && !t.periodic() {
            // The spec's 32-bit one-shot mode also interrupts when the counter's low 32 bits
            // wrap before the match.
            let next_wrap = (cur | 0xFFFF_FFFF).wrapping_add(1);
            if t.cmp64.wrapping_sub(cur) > next_wrap.wrapping_sub(cur) {
                t.wrap_flag = true;
                self.arm(i, next_wrap, now);
                return;
            }
        }
        let target = t.cmp64;
        self.arm(i, target, now);
    }

    /// Disarms timer `i` (QEMU's `hpet_del_timer`); a set status bit stays set.
    fn del_timer(&mut self, i: usize) {
        self.timers[i].deadline_ns = None;
    }

    /// Timer `i`'s comparator matched (or its 32-bit wrap came): re-arm and interrupt
    /// (QEMU's `hpet_timer` callback).
    fn fire(&mut self, i: usize, now: u64) {
        let cur = self.ticks_at(now);
        let t = &mut self.timers[i];
        if t.periodic() && t.period != 0 {
            // The next match strictly after now: one interrupt however late we are.
            let behind = cur.wrapping_sub(t.cmp64);
            if behind as i64 >= 0 {
                let periods = behind / t.period + 1;
                t.cmp64 = t.cmp64.wrapping_add(periods.wrapping_mul(t.period));
            }
            t.cmp = if t.mode32() {
                t.cmp64 & 0xFFFF_FFFF
            } else {
                t.cmp64
            };
            let target = t.cmp64;
            self.arm(i, target, now);
        } else if t.wrap_flag {
            t.wrap_flag = false;
            let target = t.cmp64;
            if (cur.wrapping_sub(target) as i64) >= 0 {
                // Serviced so late that the match has passed too: deliver it now.
                t.deadline_ns = Some(now);
            } else {
                self.arm(i, target, now);
            }
        } else {
            t.deadline_ns = None;
        }
        self.raise(i);
    }

    /// The interrupt of timer `i` (QEMU's `update_irq(timer, 1)`): level timers set their
    /// status bit even with the interrupt disabled; delivery needs `Tn_INT_ENB_CNF` and
    /// `ENABLE_CNF`.
    fn raise(&mut self, i: usize) {
        let bit = 1u64 << i;
        let t = &self.timers[i];
        if t.level() {
            self.isr |= bit;
        } else {
            self.isr &= !bit;
        }
        if t.int_enabled() && self.enabled() {
            if t.fsb_enabled() {
                self.irq.fsb_write((t.fsb >> 32) as u32, t.fsb as u32);
            } else if !t.level() {
                let gsi = self.route(i);
                // A level timer holding the same GSI high already asserts it.
                if self.driven & (1 << gsi) == 0 {
                    self.irq.pulse_gsi(gsi);
                }
            }
        }
        self.sync_lines();
    }

    /// When the next timer fires (ns on the clock), or `None` if none is armed. A value at
    /// or before now means [`update`](Self::update) is due.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.timers.iter().filter_map(|t| t.deadline_ns).min()
    }

    /// Fires every timer whose deadline has passed and re-arms it. Early or repeated calls
    /// are harmless; a late call delivers one interrupt per timer (periodic timers skip the
    /// missed periods, as QEMU's do).
    pub fn update(&mut self) {
        let now = self.clock.now_ns();
        for i in 0..self.timers.len() {
            // A 32-bit one-shot may be due twice (wrap, then match) if serviced late.
            for _ in 0..2 {
                if self.timers[i].deadline_ns.is_some_and(|d| d <= now) {
                    self.fire(i, now);
                }
            }
        }
    }

    /// Reads `data.len()` bytes at `offset` in the 1 KiB register block. 4- and 8-byte
    /// naturally aligned accesses are decoded; anything else reads as zeros (QEMU's memory
    /// core rejects such accesses to the HPET: `valid` 4..=8, aligned).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        if !Self::access_ok(offset, len) {
            data.fill(0);
            return;
        }
        let value = self.read_reg(offset & !7) >> ((offset & 4) * 8);
        data.copy_from_slice(&value.to_le_bytes()[..len]);
    }

    /// Writes `data` at `offset` in the 1 KiB register block. 4- and 8-byte naturally aligned
    /// accesses are decoded; anything else is ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let len = data.len();
        if !Self::access_ok(offset, len) {
            return;
        }
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        let shift = ((offset & 4) * 8) as u32;
        let bits = ((len * 8) as u32).min(64 - shift);
        self.write_reg(offset & !7, shift, bits, value);
    }

    fn access_ok(offset: u64, len: usize) -> bool {
        (len == 4 || len == 8) && offset % len as u64 == 0 && offset < HPET_LEN
    }

    /// The 64-bit register at 8-aligned `offset`.
    fn read_reg(&self, offset: u64) -> u64 {
        if offset >= TIMER_BASE {
            let index = ((offset - TIMER_BASE) / TIMER_STRIDE) as usize;
            let Some(t) = self.timers.get(index) else {
                return 0;
            };
            match offset & 0x18 {
                TN_CONFIG => t.config,
                TN_COMPARATOR => t.cmp,
                TN_FSB_ROUTE => t.fsb,
                _ => 0,
            }
        } else {
            match offset {
                REG_CAPABILITIES => self.capabilities,
                REG_CONFIG => self.config,
                REG_STATUS => self.isr,
                REG_COUNTER => self.counter(),
                _ => 0,
            }
        }
    }

    fn write_reg(&mut self, offset: u64, shift: u32, len: u32, value: u64) {
        let now = self.clock.now_ns();
        if offset >= TIMER_BASE {
            let index = ((offset - TIMER_BASE) / TIMER_STRIDE) as usize;
            if index >= self.timers.len() {
                return;
            }
            match offset & 0x18 {
                TN_CONFIG => self.write_timer_config(index, shift, len, value, now),
                TN_COMPARATOR => self.write_comparator(index, shift, len, value, now),
                TN_FSB_ROUTE => {
                    let t = &mut self.timers[index];
                    t.fsb = deposit(t.fsb, shift, len, value);
                }
                _ => {}
            }
            return;
        }
        match offset {
            REG_CONFIG => self.write_config(shift, len, value, now),
            REG_STATUS => {
                let cleared = (value << shift) & self.isr;
                self.isr &= !cleared;
                self.sync_lines();
            }
            // Writable only while halted (spec 2.3.4); QEMU's stored value is replaced when
            // the counter stops, so a write while running has no effect there either.
            REG_COUNTER if !self.enabled() => {
                self.counter = deposit(self.counter, shift, len, value);
            }
            _ => {} // capabilities are read-only; the rest is reserved
        }
    }

    fn write_config(&mut self, shift: u32, len: u32, value: u64, now: u64) {
        let old = self.config;
        let new = fixup(deposit(old, shift, len, value), old, CFG_WRITE_MASK);
        let cur = self.ticks_at(now);
        self.config = new;
        if activating(old, new, CFG_ENABLE) {
            self.base_ns = now;
            self.base_ticks = self.counter;
            for i in 0..self.timers.len() {
                self.set_timer(i, now);
            }
        } else if deactivating(old, new, CFG_ENABLE) {
            self.counter = cur;
            for i in 0..self.timers.len() {
                self.del_timer(i);
            }
        }
        self.sync_lines();
        if (old ^ new) & CFG_LEGACY != 0 {
            self.irq.legacy_replacement_changed(new & CFG_LEGACY != 0);
        }
    }

    fn write_timer_config(&mut self, i: usize, shift: u32, len: u32, value: u64, now: u64) {
        let mut mask = TN_CONFIG_WRITE_MASK;
        if !self.fsb_cap {
            mask &= !TN_FSB_ENABLE;
        }
        let bit = 1u64 << i;
        let t = &mut self.timers[i];
        let old = t.config;
        let new = fixup(deposit(old, shift, len, value), old, mask);
        if deactivating(old, new, TN_INT_TYPE_LEVEL) {
            // Edge-triggered timers have no status bit.
            self.isr &= !bit;
        }
        t.config = new;
        if t.mode32() {
            t.cmp &= 0xFFFF_FFFF;
            t.period &= 0xFFFF_FFFF;
        }
        if self.enabled() {
            self.set_timer(i, now);
        }
        self.sync_lines();
    }

    fn write_comparator(&mut self, i: usize, shift: u32, mut len: u32, mut value: u64, now: u64) {
        let t = &mut self.timers[i];
        if t.mode32() {
            // The high half is zero in 32-bit mode; writes to it are ignored.
            if shift != 0 {
                return;
            }
            len = 64;
            value &= 0xFFFF_FFFF;
        }
        if !t.periodic() || t.config & TN_VAL_SET != 0 {
            t.cmp = deposit(t.cmp, shift, len, value);
        }
        if t.periodic() {
            t.period = deposit(t.period, shift, len, value);
        }
        t.config &= !TN_VAL_SET;
        if self.enabled() {
            self.set_timer(i, now);
        }
    }

    /// The device's state for save/restore. Deadlines are saved relative to now, so a state
    /// restored on another clock keeps the remaining time of every armed timer.
    pub fn state(&self) -> HpetState {
        let now = self.clock.now_ns();
        HpetState {
            version: HPET_STATE_VERSION,
            config: self.config,
            isr: self.isr,
            counter: self.ticks_at(now),
            timers: self
                .timers
                .iter()
                .map(|t| HpetTimerState {
                    config: t.config,
                    comparator: t.cmp,
                    fsb_route: t.fsb,
                    cmp64: t.cmp64,
                    period: t.period,
                    wrap_flag: t.wrap_flag,
                    remaining_ns: t.deadline_ns.map(|d| d.saturating_sub(now)),
                })
                .collect(),
        }
    }

    /// Puts this HPET into `state` in place (as [`Hpet::from_state`] with this device's
    /// configuration, lines and clock); on error it is left as it was.
    pub fn restore(&mut self, state: &HpetState) -> Result<()>
    where
        I: Clone,
        C: Clone,
    {
        let config = HpetConfig {
            timers: u8::try_from(self.timers.len()).unwrap_or(HPET_MAX_TIMERS),
            int_route_cap: self.int_route_cap,
            fsb: self.fsb_cap,
        };
        *self = Self::from_state(config, state, self.irq.clone(), self.clock.clone())?;
        Ok(())
    }

    /// Creates an HPET from a saved state; `config` must describe the same device (timer
    /// count). Capability bits come from `config`, not from the state. Lines are driven to
    /// the restored levels.
    pub fn from_state(config: HpetConfig, state: &HpetState, irq: I, clock: C) -> Result<Self> {
        if state.version != HPET_STATE_VERSION {
            return Err(Error::StateVersion {
                found: state.version,
                supported: HPET_STATE_VERSION,
            });
        }
        let mut hpet = Self::new(config, irq, clock)?;
        if state.timers.len() != hpet.timers.len() {
            return Err(Error::StateTimerCount {
                state: state.timers.len(),
                device: hpet.timers.len(),
            });
        }
        let now = hpet.clock.now_ns();
        let caps = hpet.timer_reset_config();
        let writable = if hpet.fsb_cap {
            TN_CONFIG_WRITE_MASK
        } else {
            TN_CONFIG_WRITE_MASK & !TN_FSB_ENABLE
        };
        hpet.config = state.config & CFG_WRITE_MASK;
        hpet.isr = state.isr & ((1u64 << hpet.timers.len()) - 1);
        hpet.counter = state.counter;
        hpet.base_ns = now;
        hpet.base_ticks = state.counter;
        for (t, s) in hpet.timers.iter_mut().zip(&state.timers) {
            t.config = (s.config & writable) | caps;
            t.cmp = s.comparator;
            t.fsb = s.fsb_route;
            t.cmp64 = s.cmp64;
            t.period = s.period;
            t.wrap_flag = s.wrap_flag;
            t.deadline_ns = if hpet.config & CFG_ENABLE != 0 {
                s.remaining_ns.map(|r| now.saturating_add(r))
            } else {
                None
            };
            t.last_arm_ns = None;
        }
        hpet.sync_lines();
        if hpet.legacy_replacement() {
            hpet.irq.legacy_replacement_changed(true);
        }
        Ok(hpet)
    }
}

impl<I: HpetIrq, C: Clock> MutDeviceMmio for Hpet<I, C> {
    /// `offset` is relative to the HPET's base (0xFED00000 on a PC), register `HPET_LEN` bytes.
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

impl<I: HpetIrq, C: Clock> TimedDevice for Hpet<I, C> {
    fn next_deadline_ns(&self) -> Option<u64> {
        Hpet::next_deadline_ns(self)
    }

    fn update(&mut self) {
        Hpet::update(self);
    }
}
