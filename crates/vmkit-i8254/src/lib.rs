//! Register-level model of the Intel 8254 programmable interval timer (PIT) as wired in a PC.
//!
//! The model knows only its registers. Time comes in through a [`vmkit_hw::Clock`]
//! (monotonic nanoseconds); counter 0's OUT drives IRQ0 through a [`vmkit_hw::IrqLine`].
//! There are no threads and no host timers inside: the VMM asks [`Pit::next_deadline_ns`] when
//! OUT0 next changes, arms one host timer (timerfd) for it, and calls [`Pit::update`] when it
//! fires. Register reads are correct at any clock time even if the VMM is late, because every
//! count is computed from the clock, never accumulated.
//!
//! # What is modelled
//!
//! - Input clock: exactly [`PIT_CLOCK_HZ`] = 1 193 182 Hz. Tick `k` begins at
//!   `ceil(k * 1e9 / 1_193_182)` ns on the injected clock ([`ticks_to_ns`], [`ns_to_ticks`];
//!   u128 arithmetic). Counts and OUT levels are derived from the number of ticks since the
//!   count was loaded, so nothing drifts.
//! - Three counters, modes 0-5 (6 and 7 alias 2 and 3), binary and BCD counting, a count of 0
//!   meaning 65536 (binary) or 10000 (BCD), access modes LSB / MSB / LSB-then-MSB with separate
//!   read and write flip-flops, the counter latch command, the read-back command (count and/or
//!   status, status first), NULL COUNT, and the gate rules of every mode. As in the datasheet,
//!   a written count reaches the counting element on the next CLK pulse, so a mode 0 count of
//!   N raises OUT N+1 ticks after the write and a mode 2 count of N lowers OUT N ticks after it.
//! - Gates: counters 0 and 1 are tied high; counter 2's gate is bit 0 of port 0x61.
//! - Port 0x61 (PC/AT system control port B): bit 0 GATE2 and bit 1 speaker data enable (both
//!   stored, readable), bits 2-3 stored, bit 4 the refresh-request toggle (flips every 18 input
//!   clock ticks, ~15.09 us, derived from the clock), bit 5 OUT2; bits 6-7 read 0.
//!
//! # IRQ0
//!
//! The line follows OUT0 as seen by [`Pit::update`] and by accesses that reprogram counter 0:
//!
//! - mode 0: low from the control word / count write, high at the terminal count and stays high
//!   (one rising edge);
//! - mode 2 (rate generator, count N): OUT0 is high except for one input clock tick (~838 ns)
//!   at the end of every period, so IRQ0 gets one rising edge per period, when OUT0 returns
//!   high: `load + k*N` ticks (`load` is the tick after the count write);
//! - mode 3 (square wave, count N): high for `ceil(N/2)` ticks then low for `floor(N/2)` ticks;
//!   one rising edge per period, at the start of each high half;
//! - mode 4: one low tick at the terminal count, so one rising edge one tick later;
//! - modes 1 and 5 need a gate trigger, which counter 0 never gets: OUT0 stays high.
//!
//! [`Pit::next_deadline_ns`] reports every OUT0 change, falling edges included. A VMM that is
//! late loses no interrupt window: if OUT0 rose at least once since the previous update but the
//! line did not see it (for example the one-tick low pulse of mode 2 was missed completely),
//! `update` replays one rising edge (lowering the line first if it is high) and then leaves the
//! line at OUT0's current level. So every `update` whose interval contains at least one rising
//! edge of OUT0 delivers exactly one edge: several missed periods produce one edge, not a burst,
//! and the next period's edge is on time.
//! A VMM may also arm its timer with [`Pit::next_rising_edge_ns`] only.
//!
//! # Ports
//!
//! [`Pit::read_port`] / [`Pit::write_port`] take absolute port numbers (0x40-0x43, 0x61).
//! Wider accesses are split into byte accesses at consecutive ports, as the ISA bus does; ports
//! that are not the PIT's read 0xFF and ignore writes. The [`vm_device::MutDevicePio`]
//! implementation expects the device registered twice, at base 0x40 (length 4) and at base
//! 0x61 (length 1): it adds `offset` to `base` to find the port.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::{Clock, ManualClock, RecordingLine};
//! use vmkit_i8254::{ns_to_ticks, Pit, PIT_CONTROL_PORT, PIT_COUNTER0_PORT};
//!
//! let clock = ManualClock::new(0);
//! let irq0 = Arc::new(RecordingLine::new());
//! let mut pit = Pit::new(irq0.clone(), clock.clone());
//!
//! // Counter 0, LSB then MSB, mode 2 (rate generator), binary: 1193 ticks = ~1 kHz.
//! pit.write_port(PIT_CONTROL_PORT, &[0x34]);
//! // An 8-bit port: LSB then MSB as two byte writes (a word write would reach port 0x41).
//! let [lsb, msb] = 1193u16.to_le_bytes();
//! pit.write_port(PIT_COUNTER0_PORT, &[lsb]);
//! pit.write_port(PIT_COUNTER0_PORT, &[msb]);
//!
//! // (The control word already raised OUT0, and with it IRQ0, as on real hardware.)
//! let programmed = irq0.rising_edges();
//!
//! // The VMM arms a timer for the deadline and calls update() when it fires.
//! while irq0.rising_edges() < programmed + 3 {
//!     let deadline = pit.next_deadline_ns().expect("mode 2 is periodic");
//!     clock.set(deadline);
//!     pit.update();
//! }
//! // The third tick came three periods after the count was loaded (one tick after the write).
//! assert_eq!(ns_to_ticks(clock.now_ns()), 1 + 3 * 1193);
//! ```
#![forbid(unsafe_code)]

mod counter;
mod state;

pub use counter::AccessMode;
use counter::Counter;
pub use state::{CounterState, PitState, PIT_STATE_VERSION};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_hw::{Clock, IrqLine};

/// The PIT's input clock: 1.193182 MHz.
pub const PIT_CLOCK_HZ: u64 = 1_193_182;
/// First I/O port of the PIT (counter 0).
pub const PIT_BASE: u16 = 0x40;
/// Number of consecutive PIT ports starting at [`PIT_BASE`].
pub const PIT_PORT_COUNT: u16 = 4;
/// Counter 0 data port (system timer, IRQ0).
pub const PIT_COUNTER0_PORT: u16 = 0x40;
/// Counter 1 data port (historically DRAM refresh).
pub const PIT_COUNTER1_PORT: u16 = 0x41;
/// Counter 2 data port (PC speaker, gated through port 0x61).
pub const PIT_COUNTER2_PORT: u16 = 0x42;
/// Control word register (write-only; reads return 0xFF).
pub const PIT_CONTROL_PORT: u16 = 0x43;
/// PC/AT system control port B: GATE2, speaker enable, refresh toggle, OUT2.
pub const SYSTEM_CONTROL_PORT_B: u16 = 0x61;
/// The ISA IRQ that counter 0's OUT drives.
pub const PIT_IRQ: u8 = 0;
/// Input clock ticks per refresh-request toggle of port 0x61 bit 4 (~15.09 us, the period of
/// the DRAM refresh that counter 1 paced on the PC/AT).
pub const REFRESH_TOGGLE_TICKS: u64 = 18;

/// Port 0x61 bits the CPU can write and read back (GATE2, speaker data, parity/IOCHK enables).
const PORT61_WRITABLE: u8 = 0x0F;
const PORT61_GATE2: u8 = 0x01;
const PORT61_SPEAKER_DATA: u8 = 0x02;
const PORT61_REFRESH_TOGGLE: u8 = 0x10;
const PORT61_OUT2: u8 = 0x20;

/// Errors of the PIT's inspection API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A counter index other than 0, 1 or 2.
    #[error("the 8254 has counters 0, 1 and 2; there is no counter {0}")]
    NoSuchCounter(usize),
    /// A saved state of a layout version this build does not read.
    #[error("i8254 state version {found} is not supported (this build reads version {supported})")]
    StateVersion {
        /// The version in the state.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A saved state no 8254 can be in.
    #[error("invalid i8254 state: counter {counter} field {field} is out of range")]
    InvalidState {
        /// The counter (0..2), or 3 for the counter list itself.
        counter: usize,
        /// The field.
        field: &'static str,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The input clock tick that is running at `ns` on the PIT's clock: `floor(ns * 1193182 / 1e9)`.
pub fn ns_to_ticks(ns: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(PIT_CLOCK_HZ) / 1_000_000_000;
    // At most ~2.2e16 for ns = u64::MAX, so this never saturates.
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first nanosecond of input clock tick `ticks`: `ceil(ticks * 1e9 / 1193182)`,
/// saturating at `u64::MAX`. `ns_to_ticks(ticks_to_ns(k)) == k` for every reachable `k`.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(PIT_CLOCK_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// A snapshot of one counter, for debugging and monitors ("info pit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    /// The effective mode, 0..=5 (modes 6 and 7 are reported as 2 and 3).
    pub mode: u8,
    /// BCD counting.
    pub bcd: bool,
    /// How the count is read and written.
    pub access: AccessMode,
    /// What an unlatched read of the count would return now (BCD-encoded in BCD mode).
    pub count: u16,
    /// The OUT pin now.
    pub out: bool,
    /// The GATE input now.
    pub gate: bool,
    /// NULL COUNT: the last count written has not reached the counting element yet.
    pub null_count: bool,
    /// The byte a read-back status latch would return now.
    pub status: u8,
}

/// An Intel 8254 PIT with PC wiring: OUT0 on IRQ0, GATE2/OUT2 on port 0x61.
///
/// `L` is the IRQ0 line and `C` the time source; both are usually `Arc`s shared with the VMM
/// (the traits are implemented for `Arc<T>` and `Box<T>`).
#[derive(Debug)]
pub struct Pit<L: IrqLine, C: Clock> {
    counters: [Counter; 3],
    /// Port 0x61 bits 0-3 as written.
    port61: u8,
    irq0: L,
    clock: C,
    /// The level IRQ0 is driven at.
    irq_level: bool,
    /// OUT0 changes up to and including this tick have been delivered to IRQ0.
    irq_tick: u64,
    /// Added to the clock's ns: a restored PIT keeps the time base of the one saved.
    ns_bias: i64,
}

impl<L: IrqLine, C: Clock> Pit<L, C> {
    /// Creates a PIT in its power-on state (see [`Pit::reset`]) and drives IRQ0 low.
    pub fn new(irq0: L, clock: C) -> Self {
        let irq_tick = ns_to_ticks(clock.now_ns());
        let pit = Self {
            counters: Self::power_on_counters(),
            port61: 0,
            irq0,
            clock,
            irq_level: false,
            irq_tick,
            ns_bias: 0,
        };
        pit.irq0.set_level(false);
        pit
    }

    fn power_on_counters() -> [Counter; 3] {
        [
            Counter::power_on(true),
            Counter::power_on(true),
            Counter::power_on(false),
        ]
    }

    /// Returns to the power-on state and drives IRQ0 low.
    ///
    /// The datasheet leaves the power-on state undefined; this model starts quiet: every
    /// counter as if just given a mode 0, binary, LSB-then-MSB control word and no count (OUT
    /// low, counting element 0, NULL COUNT set), port 0x61 all zero (GATE2 low). Nothing
    /// counts until the guest programs a counter, so [`Pit::next_deadline_ns`] is `None`.
    pub fn reset(&mut self) {
        self.counters = Self::power_on_counters();
        self.port61 = 0;
        self.irq_level = false;
        self.irq_tick = self.now_tick();
        self.irq0.set_level(false);
    }

    /// The IRQ0 line.
    pub fn irq_line(&self) -> &L {
        &self.irq0
    }

    /// The clock the PIT reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn now_tick(&self) -> u64 {
        ns_to_ticks(self.time_base_ns())
    }

    /// The clock's ns on the PIT's time base (the saved one's, after a restore).
    fn time_base_ns(&self) -> u64 {
        let ns = i128::from(self.clock.now_ns()) + i128::from(self.ns_bias);
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// The clock's ns at which the PIT's time base reads `tick` (clamped at 0).
    fn tick_to_clock_ns(&self, tick: u64) -> u64 {
        let ns = i128::from(ticks_to_ns(tick)) - i128::from(self.ns_bias);
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// Reads `data.len()` bytes starting at I/O port `port`, one port per byte.
    ///
    /// Ports 0x40-0x42 return the counters' bytes (latched status, then latched count, then the
    /// live count, per the access mode), 0x43 returns 0xFF (write-only), 0x61 returns system
    /// control port B, any other port 0xFF.
    pub fn read_port(&mut self, port: u16, data: &mut [u8]) {
        let tick = self.now_tick();
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = match Self::port_at(port, index) {
                Some(p) => self.read_byte(p, tick),
                None => 0xFF,
            };
        }
    }

    /// Writes `data` starting at I/O port `port`, one port per byte; bytes for ports that are
    /// not the PIT's are ignored.
    pub fn write_port(&mut self, port: u16, data: &[u8]) {
        let tick = self.now_tick();
        for (index, byte) in data.iter().enumerate() {
            if let Some(p) = Self::port_at(port, index) {
                self.write_byte(p, *byte, tick);
            }
        }
    }

    fn port_at(port: u16, index: usize) -> Option<u16> {
        u16::try_from(index)
            .ok()
            .and_then(|index| port.checked_add(index))
    }

    fn counter_index(port: u16) -> Option<usize> {
        match port {
            PIT_COUNTER0_PORT => Some(0),
            PIT_COUNTER1_PORT => Some(1),
            PIT_COUNTER2_PORT => Some(2),
            _ => None,
        }
    }

    fn read_byte(&mut self, port: u16, tick: u64) -> u8 {
        if port == SYSTEM_CONTROL_PORT_B {
            return self.port61_at(tick);
        }
        match Self::counter_index(port).and_then(|i| self.counters.get_mut(i)) {
            Some(counter) => counter.read_byte(tick),
            None => 0xFF,
        }
    }

    fn port61_at(&self, tick: u64) -> u8 {
        let refresh = if (tick / REFRESH_TOGGLE_TICKS) % 2 == 1 {
            PORT61_REFRESH_TOGGLE
        } else {
            0
        };
        let out2 = if self.counters[2].out_at(tick) {
            PORT61_OUT2
        } else {
            0
        };
        (self.port61 & PORT61_WRITABLE) | refresh | out2
    }

    fn write_byte(&mut self, port: u16, value: u8, tick: u64) {
        match port {
            PIT_CONTROL_PORT => self.write_control(value, tick),
            SYSTEM_CONTROL_PORT_B => {
                self.port61 = value & PORT61_WRITABLE;
                self.counters[2].set_gate(tick, value & PORT61_GATE2 != 0);
            }
            _ => {
                let Some(index) = Self::counter_index(port) else {
                    return;
                };
                self.with_counter(index, tick, |counter| counter.write_byte(tick, value));
            }
        }
    }

    /// Runs a state-changing access on a counter; for counter 0 the IRQ line first catches up
    /// with what happened until now and then follows the new OUT0.
    fn with_counter(&mut self, index: usize, tick: u64, access: impl FnOnce(&mut Counter)) {
        if index == 0 {
            self.sync_irq(tick);
        }
        if let Some(counter) = self.counters.get_mut(index) {
            access(counter);
        }
        if index == 0 {
            self.drive_irq(tick);
        }
    }

    fn write_control(&mut self, value: u8, tick: u64) {
        let select = value >> 6;
        let rw_bits = (value >> 4) & 0b11;
        if select == 0b11 {
            // 8254 read-back command: bit 5 low latches the count, bit 4 low latches the
            // status, bits 1-3 select counters 0-2.
            for (index, counter) in self.counters.iter_mut().enumerate() {
                if value & (0b10 << index) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    counter.latch_count(tick);
                }
                if value & 0x10 == 0 {
                    counter.latch_status(tick);
                }
            }
            return;
        }
        let index = usize::from(select);
        if rw_bits == 0 {
            if let Some(counter) = self.counters.get_mut(index) {
                counter.latch_count(tick);
            }
            return;
        }
        let mode_bits = (value >> 1) & 0b111;
        let bcd = value & 1 != 0;
        self.with_counter(index, tick, |counter| {
            counter.control_word(tick, rw_bits, mode_bits, bcd)
        });
    }

    /// Delivers OUT0 changes that happened after `irq_tick` up to `tick`.
    fn sync_irq(&mut self, tick: u64) {
        if tick > self.irq_tick {
            let out = self.counters[0].out_at(tick);
            if self.out0_rose_between(self.irq_tick, tick) {
                // Exactly one edge for any number of unseen rising edges: an edge-triggered
                // PIC latches one request anyway, and none is lost.
                if self.irq_level {
                    self.irq0.set_level(false);
                }
                self.irq0.set_level(true);
                if !out {
                    self.irq0.set_level(false);
                }
            } else if out != self.irq_level {
                self.irq0.set_level(out);
            }
            self.irq_level = out;
            self.irq_tick = tick;
        }
        self.counters[0].sync(self.irq_tick);
    }

    /// Whether OUT0 went from low to high at some tick in `(after, until]`.
    fn out0_rose_between(&self, after: u64, until: u64) -> bool {
        let counter = &self.counters[0];
        let Some(first) = counter.next_out_change(after).filter(|c| *c <= until) else {
            return false;
        };
        if counter.out_at(first) {
            return true;
        }
        // OUT alternates, so the change after a falling one is rising.
        counter
            .next_out_change(first)
            .is_some_and(|second| second <= until)
    }

    /// Drives IRQ0 to OUT0 right after counter 0 was reprogrammed at `tick`.
    fn drive_irq(&mut self, tick: u64) {
        let out = self.counters[0].out_at(tick);
        if out != self.irq_level {
            self.irq0.set_level(out);
            self.irq_level = out;
        }
        self.irq_tick = self.irq_tick.max(tick);
    }

    /// Brings IRQ0 to the level OUT0 has now; call it at or after [`Pit::next_deadline_ns`].
    ///
    /// Calling it early or more often is harmless. Calling it late still produces the rising
    /// edge of a missed pulse (see the crate docs); afterwards [`Pit::next_deadline_ns`] is in
    /// the future.
    pub fn update(&mut self) {
        let tick = self.now_tick();
        self.sync_irq(tick);
        for counter in &mut self.counters[1..] {
            counter.sync(tick);
        }
    }

    /// When OUT0 next changes (absolute ns on the injected clock), or `None` if it never will
    /// without a new register access.
    ///
    /// Periodic in modes 2 and 3, once in modes 0 and 4 (twice for the one-tick strobe of mode
    /// 4). A value at or before the current time means a change has not been delivered to IRQ0
    /// yet: call [`Pit::update`] now.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.counters[0]
            .next_out_change(self.irq_tick)
            .map(|tick| self.tick_to_clock_ns(tick))
    }

    /// When OUT0 next goes high (the next IRQ0 rising edge), or `None` if it never will without
    /// a new register access. A VMM may arm its timer with this instead of
    /// [`Pit::next_deadline_ns`]: a late [`Pit::update`] replays the edge.
    pub fn next_rising_edge_ns(&self) -> Option<u64> {
        let counter = &self.counters[0];
        let first = counter.next_out_change(self.irq_tick)?;
        let rising = if counter.out_at(first) {
            first
        } else {
            counter.next_out_change(first)?
        };
        Some(self.tick_to_clock_ns(rising))
    }

    /// A snapshot of counter `index` (0, 1 or 2) at the current time.
    pub fn counter_info(&self, index: usize) -> Result<CounterInfo> {
        let counter = self
            .counters
            .get(index)
            .ok_or(Error::NoSuchCounter(index))?;
        let tick = self.now_tick();
        Ok(CounterInfo {
            mode: counter.mode(),
            bcd: counter.bcd(),
            access: counter.access(),
            count: counter.count_at(tick),
            out: counter.out_at(tick),
            gate: counter.gate(),
            null_count: counter.null_count_at(tick),
            status: counter.status_at(tick),
        })
    }

    /// Counter 2's GATE (port 0x61 bit 0).
    pub fn gate2(&self) -> bool {
        self.port61 & PORT61_GATE2 != 0
    }

    /// The speaker data enable bit (port 0x61 bit 1); the speaker sounds OUT2 while it is set.
    pub fn speaker_data_enabled(&self) -> bool {
        self.port61 & PORT61_SPEAKER_DATA != 0
    }
}

impl<L: IrqLine, C: Clock> MutDevicePio for Pit<L, C> {
    /// `base` is 0x40 (offsets 0-3) or 0x61 (offset 0); the port is `base + offset`.
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match base.0.checked_add(offset) {
            Some(port) => self.read_port(port, data),
            None => data.fill(0xFF),
        }
    }

    /// `base` is 0x40 (offsets 0-3) or 0x61 (offset 0); the port is `base + offset`.
    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let Some(port) = base.0.checked_add(offset) {
            self.write_port(port, data);
        }
    }
}

/// The PIT is serviced at the rising edges of OUT0 only (one host timer expiry per period,
/// not two): IRQ0 is edge-triggered on a PC (the PIIX ELCR cannot make it level), and a late
/// [`Pit::update`] replays the falling-then-rising pulse, so the PIC sees exactly the edges it
/// would see if every OUT0 change were serviced.
impl<L: vmkit_hw::IrqLine, C: vmkit_hw::Clock> vmkit_hw::TimedDevice for Pit<L, C> {
    fn next_deadline_ns(&self) -> Option<u64> {
        Pit::next_rising_edge_ns(self)
    }

    fn update(&mut self) {
        Pit::update(self);
    }
}

#[cfg(test)]
mod tests;
