//! Shared signal traits for vmkit's register-level device models.
//!
//! Device crates (`vmkit-i8259`, `vmkit-i8254`, `vmkit-serial`, `vmkit-pcglue`) know only
//! their registers. Everything that crosses the device boundary goes through the small traits
//! here, so the same model runs under a VMM (lines wired to KVM or to a userspace PIC, time
//! from the host's monotonic clock) and in a unit test (lines that record, a clock the test
//! advances by hand).
//!
//! - [`IrqLine`]: an interrupt request line a device drives (raise, lower, pulse).
//! - [`Clock`]: monotonic nanoseconds for timer devices; they report their next deadline in
//!   the same unit so the VMM can arm a host timer instead of polling.
//! - [`WallClock`]: seconds since the Unix epoch, for the RTC.
//! - [`timers`]: the device-timer protocol: a timed model implements [`TimedDevice`]
//!   (next deadline, update), [`DeviceTimers`] shares one host timer among all of them, and
//!   the [`Timed`] port-bus adapter reports a moved deadline after each guest access.
//!   [`Locked`] is the same adapter for untimed devices (poison-tolerant, unlike vm-device's
//!   `Mutex` blanket impl).
//! - [`thread`]: where device crates start their threads ([`thread::spawn`]), so that a VMM
//!   can confine each thread for its role (seccomp) without the device knowing how.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::{Clock, IrqLine, ManualClock, RecordingLine};
//!
//! let line = Arc::new(RecordingLine::default());
//! line.raise();
//! assert!(line.level());
//! line.lower();
//! line.pulse();
//! assert!(!line.level());
//! assert_eq!(line.rising_edges(), 2);
//!
//! let clock = ManualClock::new(1_000);
//! clock.advance(500);
//! assert_eq!(clock.now_ns(), 1_500);
//! ```
#![forbid(unsafe_code)]

pub mod thread;
pub mod timers;

pub use timers::{lock, DeviceTimers, Locked, Timed, TimedDevice, TimerId, TimerNotifier};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// An interrupt request line driven by a device.
///
/// Implementations decide what a level means: a KVM `KVM_IRQ_LINE` call, an irqfd write on a
/// rising edge, an input of a userspace interrupt controller. The device only reports the level
/// it drives; it never learns whether delivery succeeded, exactly as a real chip does not.
pub trait IrqLine: Send + Sync {
    /// Drives the line to `high` (true) or low (false).
    fn set_level(&self, high: bool);

    /// Drives the line high.
    fn raise(&self) {
        self.set_level(true);
    }

    /// Drives the line low.
    fn lower(&self) {
        self.set_level(false);
    }

    /// Raises then lowers the line: one edge for an edge-triggered input.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

impl<T: IrqLine + ?Sized> IrqLine for Arc<T> {
    fn set_level(&self, high: bool) {
        (**self).set_level(high)
    }
}

impl<T: IrqLine + ?Sized> IrqLine for Box<T> {
    fn set_level(&self, high: bool) {
        (**self).set_level(high)
    }
}

/// A line connected to nothing: every level change is ignored.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLine;

impl IrqLine for NullLine {
    fn set_level(&self, _high: bool) {}
}

/// A line that remembers its level and counts rising edges, for tests and for polling VMMs.
#[derive(Debug, Default)]
pub struct RecordingLine {
    level: AtomicBool,
    rising_edges: AtomicU64,
}

impl RecordingLine {
    /// Creates a line that is low and has seen no edge.
    pub fn new() -> Self {
        Self::default()
    }

    /// The level the device drives now.
    pub fn level(&self) -> bool {
        self.level.load(Ordering::Acquire)
    }

    /// How many low-to-high transitions the line has seen.
    pub fn rising_edges(&self) -> u64 {
        self.rising_edges.load(Ordering::Acquire)
    }
}

impl IrqLine for RecordingLine {
    fn set_level(&self, high: bool) {
        let was_high = self.level.swap(high, Ordering::AcqRel);
        if high && !was_high {
            self.rising_edges.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A monotonic time source in nanoseconds since an arbitrary, fixed origin.
///
/// Timer devices read it on every register access that depends on time and express their
/// next deadline in the same unit.
pub trait Clock: Send + Sync {
    /// Nanoseconds since this clock's origin; never decreases.
    fn now_ns(&self) -> u64;
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

impl<T: Clock + ?Sized> Clock for Box<T> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// The host's monotonic clock (`std::time::Instant`), with its origin at creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// Creates a clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The host instant that this clock reads as `ns`; lets a VMM turn a device deadline
    /// into a host timer.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + std::time::Duration::from_nanos(ns)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        // Saturates after ~584 years of uptime.
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to: deterministic time for device tests.
///
/// Clones share the same time, so a test can keep one handle and give another to the device.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// Creates a clock reading `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Moves the clock forward by `delta_ns` (saturating).
    pub fn advance(&self, delta_ns: u64) {
        let _ = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(delta_ns))
            });
    }

    /// Sets the clock to `ns` if that is not earlier than now; a monotonic clock never goes back.
    pub fn set(&self, ns: u64) {
        self.now.fetch_max(ns, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }
}

/// Calendar time for real-time-clock devices: seconds since 1970-01-01T00:00:00Z.
pub trait WallClock: Send + Sync {
    /// Whole seconds since the Unix epoch.
    fn unix_seconds(&self) -> u64;
}

/// The host's calendar clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostWallClock;

impl WallClock for HostWallClock {
    fn unix_seconds(&self) -> u64 {
        // A host clock set before 1970 reads as the epoch rather than failing.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A calendar clock fixed at a given time, advanced by hand: deterministic RTC tests.
#[derive(Debug, Clone, Default)]
pub struct FixedWallClock {
    seconds: Arc<AtomicU64>,
}

impl FixedWallClock {
    /// Creates a clock reading `unix_seconds`.
    pub fn new(unix_seconds: u64) -> Self {
        Self {
            seconds: Arc::new(AtomicU64::new(unix_seconds)),
        }
    }

    /// Moves the clock forward by `seconds` (saturating).
    pub fn advance(&self, seconds: u64) {
        let _ = self
            .seconds
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(seconds))
            });
    }
}

impl WallClock for FixedWallClock {
    fn unix_seconds(&self) -> u64 {
        self.seconds.load(Ordering::Acquire)
    }
}

impl<T: WallClock + ?Sized> WallClock for Arc<T> {
    fn unix_seconds(&self) -> u64 {
        (**self).unix_seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_line_counts_rising_edges_only() {
        let line = RecordingLine::new();
        line.lower();
        assert_eq!(line.rising_edges(), 0);
        line.raise();
        line.raise();
        assert_eq!(line.rising_edges(), 1);
        line.lower();
        line.pulse();
        assert_eq!(line.rising_edges(), 2);
        assert!(!line.level());
    }

    #[test]
    fn manual_clock_never_goes_back() {
        let clock = ManualClock::new(100);
        clock.set(50);
        assert_eq!(clock.now_ns(), 100);
        clock.advance(u64::MAX);
        assert_eq!(clock.now_ns(), u64::MAX);
    }

    #[test]
    fn monotonic_clock_advances() {
        let clock = MonotonicClock::new();
        let a = clock.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(clock.now_ns() >= a + 1_000_000);
    }

    #[test]
    fn wall_clocks() {
        let fixed = FixedWallClock::new(1_700_000_000);
        fixed.advance(10);
        assert_eq!(fixed.unix_seconds(), 1_700_000_010);
        assert!(HostWallClock.unix_seconds() > 1_600_000_000);
    }
}
