//! Register-level model of the HPET (IA-PC HPET specification 1.0a) as QEMU's pc machine
//! has it at [`HPET_BASE`] (0xFED00000, [`HPET_LEN`] = 1 KiB), after QEMU's
//! `hw/timer/hpet.c`.
//!
//! The model knows only its registers. Time comes in through a [`vmkit_hw::Clock`]
//! (monotonic ns); interrupts go out through the small [`HpetIrq`] trait (a level per GSI, an
//! edge per GSI, an FSB message, the legacy-route switch; [`GsiLines`] adapts it to one
//! [`vmkit_hw::IrqLine`] per GSI). No threads, no host timers: the VMM asks
//! [`Hpet::next_deadline_ns`] when a comparator next matches and calls [`Hpet::update`] when
//! its host timer fires; [`Hpet`] implements [`vmkit_hw::TimedDevice`] for
//! [`vmkit_hw::DeviceTimers`], and [`TimedMmio`] is the MMIO-bus adapter that reports a moved
//! deadline after each guest access (vmkit-hw's `Timed` is for the PIO bus).
//!
//! # Registers (as QEMU's)
//!
//! | offset | register | notes |
//! |---|---|---|
//! | 0x000 | capabilities and ID | `0x00989680_8086A201` for 3 timers: 10 ns period, vendor 0x8086, `LEG_RT_CAP`, 64-bit counter, `NUM_TIM_CAP` = timers - 1, revision 1; read-only |
//! | 0x010 | general configuration | `ENABLE_CNF`, `LEG_RT_CNF` |
//! | 0x020 | general interrupt status | bit n: level-triggered timer n fired; write 1 to clear |
//! | 0x0F0 | main counter | 100 MHz while enabled; writable only while halted |
//! | 0x100 + 0x20 n | timer n configuration and capability | `Tn_INT_ROUTE_CAP` = [`PC_INT_ROUTE_CAP`] (GSI 2, QEMU's pc); `Tn_FSB_INT_DEL_CAP` off unless [`HpetConfig::fsb`]; `Tn_PER_INT_CAP` and `Tn_SIZE_CAP` on every timer |
//! | 0x108 + 0x20 n | timer n comparator | 32-bit mode truncates; periodic mode accumulates, `Tn_VAL_SET_CNF` sets the comparator itself |
//! | 0x110 + 0x20 n | timer n FSB route | value (31:0), address (63:32) |
//!
//! Naturally aligned 4- and 8-byte accesses are decoded (the high half of a 64-bit register
//! at +4). Any other width or an unaligned access reads as zero and writes are dropped, as
//! QEMU's memory core does for the HPET (`valid.min_access_size = 4`, not `unaligned`).
//! Reserved offsets and timers that do not exist read 0 and ignore writes.
//!
//! # Interrupts
//!
//! - Route: `Tn_INT_ROUTE_CNF` = n drives GSI n (any value is accepted, as in QEMU; the
//!   capability mask only advertises). With `LEG_RT_CNF`, timer 0 drives GSI
//!   [`LEGACY_TIMER0_GSI`] (2: the I/O APIC input of ISA IRQ0, what QEMU's GSI 0 reaches) and
//!   timer 1 GSI [`LEGACY_TIMER1_GSI`] (8, the RTC's); a machine that needs the PIC's IRQ0
//!   maps GSI 2 to it.
//! - Level-triggered timers set their status bit at every match, even with
//!   `Tn_INT_ENB_CNF` clear (spec 2.3.9: "the timer will still operate and generate
//!   appropriate status bits"). Their GSI is high while the status bit is set, the
//!   interrupt is enabled and `ENABLE_CNF` is set (wired-OR over timers sharing a GSI).
//!   Clearing the status bit, the enable, or `ENABLE_CNF` lowers it.
//! - Edge-triggered timers pulse their GSI ([`HpetIrq::pulse_gsi`]) when enabled; they never
//!   set a status bit.
//! - FSB delivery (only with [`HpetConfig::fsb`], QEMU's `msi=on`): [`HpetIrq::fsb_write`].
//!
//! # Time
//!
//! The counter is derived from the clock (`ticks = start + elapsed_ns / 10`), never
//! accumulated. Comparator semantics follow QEMU: a periodic timer adds its period at each
//! match (one interrupt however late `update` is; missed periods are skipped, and two
//! expiries are at least [`MIN_PERIODIC_NS`] apart as with QEMU's clamp); a 32-bit one-shot
//! timer interrupts at the 32-bit wrap of the counter before its match, and at the match (QEMU's
//! `wrap_flag`). A 64-bit comparator behind the counter matches only after the counter wraps
//! (the spec's equality match; QEMU fires such a timer at once).
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hpet::{
//!     timer_comparator, timer_config, Hpet, RecordingGsis, CFG_ENABLE, CFG_LEGACY,
//!     REG_CONFIG, TN_INT_ENABLE, TN_INT_TYPE_LEVEL, REG_STATUS,
//! };
//! use vmkit_hw::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(0);
//! let gsis = Arc::new(RecordingGsis::new());
//! let mut hpet = Hpet::pc(gsis.clone(), clock.clone());
//! assert_eq!(hpet.capabilities(), 0x0098_9680_8086_A201);
//!
//! // Timer 0: level-triggered, interrupt enabled, match at tick 1000 (10 us).
//! hpet.write(timer_config(0), &(TN_INT_TYPE_LEVEL | TN_INT_ENABLE).to_le_bytes());
//! hpet.write(timer_comparator(0), &1000u64.to_le_bytes());
//! // Legacy replacement route (timer 0 on GSI 2) and start the counter.
//! hpet.write(REG_CONFIG, &(CFG_ENABLE | CFG_LEGACY).to_le_bytes());
//!
//! // The VMM arms its host timer for the deadline and calls update() when it fires.
//! let deadline = hpet.next_deadline_ns().expect("timer 0 is armed");
//! assert_eq!(deadline, 10_000);
//! clock.set(deadline);
//! hpet.update();
//! assert!(gsis.level(2));
//!
//! // The guest's handler clears the status bit: the line drops.
//! hpet.write(REG_STATUS, &1u32.to_le_bytes());
//! assert!(!gsis.level(2));
//! ```
#![forbid(unsafe_code)]

mod device;
mod irq;
mod regs;
mod state;
mod timed;

pub use device::{Hpet, HpetConfig, TimerInfo};
pub use irq::{GsiLines, HpetIrq, RecordingGsis};
pub use regs::*;
pub use state::{HpetState, HpetTimerState, HPET_STATE_VERSION};
pub use timed::TimedMmio;

/// Errors of building, inspecting and restoring an HPET.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `HpetConfig::timers` out of range.
    #[error("an HPET has {min} to {max} timers; {timers} requested")]
    TimerCount {
        /// The requested number.
        timers: u8,
        /// Fewest allowed.
        min: u8,
        /// Most allowed.
        max: u8,
    },
    /// A timer index the HPET does not have.
    #[error("timer {index} does not exist; this HPET has timers 0..{timers}")]
    NoSuchTimer {
        /// The index asked for.
        index: usize,
        /// The number of timers.
        timers: usize,
    },
    /// A GSI beyond the 5-bit route field.
    #[error("HPET routes reach GSIs 0..={max}; GSI {gsi} cannot be connected")]
    GsiOutOfRange {
        /// The GSI asked for.
        gsi: u32,
        /// The highest routable GSI.
        max: u32,
    },
    /// A saved state of an unknown layout version.
    #[error("HPET state version {found} is not supported (this build reads version {supported})")]
    StateVersion {
        /// The state's version.
        found: u32,
        /// The version this crate reads.
        supported: u32,
    },
    /// A saved state with a different number of timers.
    #[error("HPET state has {state} timers but the device has {device}")]
    StateTimerCount {
        /// Timers in the state.
        state: usize,
        /// Timers in the device.
        device: usize,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests;
