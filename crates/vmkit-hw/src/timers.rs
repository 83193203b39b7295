//! One host timer for every timed device (PIT counters, the UARTs' character timeout).
//!
//! Device models only report when their outputs next change
//! ([`TimedDevice::next_deadline_ns`], absolute nanoseconds on the shared clock) and bring
//! themselves up to date when asked ([`TimedDevice::update`]). [`DeviceTimers`] keeps the
//! list and talks to the VMM's single host timer (a one-shot timerfd on its main loop)
//! through a *notifier*: "make sure the timer fires no later than `t`".
//!
//! # The protocol, and why no expiry is lost
//!
//! `DeviceTimers` tracks the earliest deadline it has told the VMM about (`armed`).
//!
//! - After every guest access to a timed device (the [`Timed`] bus adapter) and after input
//!   is pushed into a device from outside, the device's new deadline is compared with
//!   `armed` (one atomic load); only if it is earlier is `armed` lowered and the notifier
//!   called. An access that does not move the deadline earlier costs no syscall.
//! - When the host timer fires, the VMM calls [`DeviceTimers::service`]: it forgets what
//!   was armed (the one-shot timer is spent), calls `update()` on every device whose
//!   deadline has passed, and returns the earliest next deadline, which the VMM arms.
//!
//! The VMM must treat the notifier and the re-arm after `service` the same way: arm the
//! timer at `t` only if nothing is armed or `t` is earlier than what is, under one lock, and
//! mark the timer as unarmed when it fires, *before* calling `service`. Both paths are then
//! "minimum" operations, so a notification racing with `service` on another thread can fire
//! the timer early (service finds nothing due and re-arms) but never late.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vmkit_hw::{Clock, ManualClock};
//! use vmkit_hw::timers::{DeviceTimers, TimedDevice};
//!
//! /// A device that wants an update every millisecond.
//! struct Ticker { next: u64, ticks: u32 }
//! impl TimedDevice for Ticker {
//!     fn next_deadline_ns(&self) -> Option<u64> { Some(self.next) }
//!     fn update(&mut self) { self.ticks += 1; self.next += 1_000_000; }
//! }
//!
//! let clock = ManualClock::new(0);
//! let timers = DeviceTimers::new(Arc::new(clock.clone()));
//! let armed = Arc::new(Mutex::new(Vec::new()));
//! let log = Arc::clone(&armed);
//! timers.set_notifier(Arc::new(move |t| log.lock().unwrap().push(t)));
//!
//! let ticker = Arc::new(Mutex::new(Ticker { next: 1_000_000, ticks: 0 }));
//! timers.register("ticker", ticker.clone());
//! assert_eq!(*armed.lock().unwrap(), [1_000_000]); // the VMM arms its timerfd
//!
//! clock.set(1_000_000); // ... the timerfd fires
//! assert_eq!(timers.service(), Some(2_000_000)); // re-arm with this
//! assert_eq!(ticker.lock().unwrap().ticks, 1);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::Clock;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::{DevicePio, MutDevicePio};

/// Locks `mutex`, taking the data even if a thread panicked while holding it: a device's
/// registers stay usable after a panic elsewhere, which is what a VMM wants on a vCPU thread.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A device whose outputs change with time, serviced from the VMM's main loop.
pub trait TimedDevice: Send {
    /// Absolute time (ns on the shared clock) at which the device next needs
    /// [`update`](Self::update), or `None` if nothing is scheduled.
    fn next_deadline_ns(&self) -> Option<u64>;

    /// Brings time-driven state up to date (drives interrupt lines). Harmless when early.
    fn update(&mut self);
}

/// "Make sure the host timer fires no later than this absolute time (ns)".
pub type TimerNotifier = Arc<dyn Fn(u64) + Send + Sync>;

/// A registered device's handle in [`DeviceTimers`], for
/// [`unregister`](DeviceTimers::unregister).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

struct Entry {
    id: TimerId,
    name: String,
    device: Arc<Mutex<dyn TimedDevice>>,
}

/// Nothing armed.
const UNARMED: u64 = u64::MAX;

struct Inner {
    clock: Arc<dyn Clock>,
    devices: Mutex<Vec<Entry>>,
    notifier: RwLock<Option<TimerNotifier>>,
    armed: AtomicU64,
    next_id: AtomicU64,
    notifications: AtomicU64,
}

/// The registry of timed devices sharing the VMM's one host timer (see the
/// [module docs](self) for the protocol). Clones share the registry.
#[derive(Clone)]
pub struct DeviceTimers {
    inner: Arc<Inner>,
}

impl DeviceTimers {
    /// An empty registry reading time from `clock` (the same clock the devices use).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                devices: Mutex::new(Vec::new()),
                notifier: RwLock::new(None),
                armed: AtomicU64::new(UNARMED),
                next_id: AtomicU64::new(0),
                notifications: AtomicU64::new(0),
            }),
        }
    }

    /// The clock deadlines are measured on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Sets the function that arms the host timer. It is called on vCPU threads (after a
    /// guest access) and on whatever thread registers devices or pushes input, never with a
    /// device locked; it must only arm a timer (never block, never touch devices). If
    /// deadlines are already pending it is called at once with the earliest.
    pub fn set_notifier(&self, notifier: TimerNotifier) {
        *self
            .inner
            .notifier
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(notifier);
        // Whatever was notified before went nowhere: notify again.
        self.inner.armed.store(UNARMED, Ordering::Release);
        let earliest = self.next_deadline();
        self.deadline_changed(earliest);
    }

    /// Adds `device`; `name` is for debugging. If the device already has a deadline earlier
    /// than the armed one, the notifier is called.
    pub fn register(
        &self,
        name: impl Into<String>,
        device: Arc<Mutex<dyn TimedDevice>>,
    ) -> TimerId {
        let id = TimerId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let deadline = lock(&device).next_deadline_ns();
        lock(&self.inner.devices).push(Entry {
            id,
            name: name.into(),
            device,
        });
        self.deadline_changed(deadline);
        id
    }

    /// Removes a device; returns whether it was registered. An armed deadline of the device
    /// may still fire once; [`service`](Self::service) then finds nothing to do.
    pub fn unregister(&self, id: TimerId) -> bool {
        let mut devices = lock(&self.inner.devices);
        let before = devices.len();
        devices.retain(|e| e.id != id);
        devices.len() != before
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        lock(&self.inner.devices).len()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the registered devices, in registration order.
    pub fn names(&self) -> Vec<String> {
        lock(&self.inner.devices)
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    fn snapshot(&self) -> Vec<Arc<Mutex<dyn TimedDevice>>> {
        // Devices are locked only after the list lock is dropped: a device's lock is never
        // held while waiting for the list.
        lock(&self.inner.devices)
            .iter()
            .map(|e| Arc::clone(&e.device))
            .collect()
    }

    /// The earliest deadline of all devices, without updating anything.
    pub fn next_deadline(&self) -> Option<u64> {
        self.snapshot()
            .iter()
            .filter_map(|d| lock(d).next_deadline_ns())
            .min()
    }

    /// Called when the host timer fired: updates every device whose deadline has passed and
    /// returns the earliest deadline still pending (arm the timer for it), or `None`.
    ///
    /// Call it after marking the host timer unarmed; see the [module docs](self).
    pub fn service(&self) -> Option<u64> {
        // The one-shot timer is spent: from here on, any new deadline must notify.
        self.inner.armed.store(UNARMED, Ordering::Release);
        let now = self.inner.clock.now_ns();
        let mut earliest = UNARMED;
        for device in self.snapshot() {
            let mut device = lock(&device);
            if device.next_deadline_ns().is_some_and(|d| d <= now) {
                device.update();
            }
            if let Some(d) = device.next_deadline_ns() {
                earliest = earliest.min(d);
            }
        }
        // Deadlines notified by other threads meanwhile are included.
        let previous = self.inner.armed.fetch_min(earliest, Ordering::AcqRel);
        let armed = previous.min(earliest);
        (armed != UNARMED).then_some(armed)
    }

    /// Reports a device's deadline after something changed it (a guest access, pushed
    /// input): if it is earlier than the armed deadline, records it and calls the notifier.
    /// Cheap (one atomic load) when the deadline is `None` or not earlier.
    #[inline]
    pub fn deadline_changed(&self, deadline: Option<u64>) {
        let Some(deadline) = deadline else {
            return;
        };
        if deadline >= self.inner.armed.load(Ordering::Acquire) {
            return;
        }
        let previous = self.inner.armed.fetch_min(deadline, Ordering::AcqRel);
        if deadline < previous {
            self.notify(deadline);
        }
    }

    #[cold]
    fn notify(&self, deadline: u64) {
        self.inner.notifications.fetch_add(1, Ordering::Relaxed);
        let notifier = self
            .inner
            .notifier
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(notify) = notifier {
            notify(deadline);
        }
    }

    /// The earliest deadline notified since the last [`service`](Self::service), if any.
    pub fn armed(&self) -> Option<u64> {
        let armed = self.inner.armed.load(Ordering::Acquire);
        (armed != UNARMED).then_some(armed)
    }

    /// How many times the notifier was called (or would have been, before one was set).
    pub fn notifications(&self) -> u64 {
        self.inner.notifications.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for DeviceTimers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTimers")
            .field("devices", &self.names())
            .field("armed", &self.armed())
            .field("notifications", &self.notifications())
            .finish_non_exhaustive()
    }
}

/// A port-bus device adapter for a timed device: after every access the device's deadline
/// is reported to [`DeviceTimers::deadline_changed`], with the device's lock released.
///
/// Register the same `Timed` (or clones: they share the device) for each range the device
/// occupies.
pub struct Timed<D> {
    device: Arc<Mutex<D>>,
    timers: DeviceTimers,
}

impl<D> Clone for Timed<D> {
    fn clone(&self) -> Self {
        Self {
            device: Arc::clone(&self.device),
            timers: self.timers.clone(),
        }
    }
}

impl<D> Timed<D> {
    /// Wraps `device`, reporting to `timers`.
    pub fn new(device: Arc<Mutex<D>>, timers: DeviceTimers) -> Self {
        Self { device, timers }
    }

    /// The wrapped device.
    pub fn device(&self) -> &Arc<Mutex<D>> {
        &self.device
    }
}

impl<D: MutDevicePio + TimedDevice> DevicePio for Timed<D> {
    fn pio_read(&self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let deadline = {
            let mut device = lock(&self.device);
            device.pio_read(base, offset, data);
            device.next_deadline_ns()
        };
        self.timers.deadline_changed(deadline);
    }

    fn pio_write(&self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let deadline = {
            let mut device = lock(&self.device);
            device.pio_write(base, offset, data);
            device.next_deadline_ns()
        };
        self.timers.deadline_changed(deadline);
    }
}

impl<D> fmt::Debug for Timed<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timed").finish_non_exhaustive()
    }
}

/// A port-bus adapter for a device behind a mutex, recovering the lock if a previous access
/// panicked (vm-device's own `Mutex` adapter would propagate the panic to every vCPU).
pub struct Locked<D>(pub Arc<Mutex<D>>);

impl<D: MutDevicePio> DevicePio for Locked<D> {
    fn pio_read(&self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        lock(&self.0).pio_read(base, offset, data);
    }

    fn pio_write(&self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        lock(&self.0).pio_write(base, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use proptest::prelude::*;

    /// A device whose deadline the test sets through "port writes" (8-byte little-endian
    /// absolute time; all ones = none), and which counts updates.
    #[derive(Default)]
    struct Fake {
        deadline: Option<u64>,
        updates: u32,
        period: Option<u64>,
    }

    impl TimedDevice for Fake {
        fn next_deadline_ns(&self) -> Option<u64> {
            self.deadline
        }
        fn update(&mut self) {
            self.updates += 1;
            self.deadline = match (self.deadline, self.period) {
                (Some(d), Some(p)) => Some(d.saturating_add(p)),
                _ => None,
            };
        }
    }

    impl MutDevicePio for Fake {
        fn pio_read(&mut self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) {
            data.fill(0);
        }
        fn pio_write(&mut self, _: PioAddress, _: PioAddressOffset, data: &[u8]) {
            let mut bytes = [0u8; 8];
            for (b, d) in bytes.iter_mut().zip(data) {
                *b = *d;
            }
            let value = u64::from_le_bytes(bytes);
            self.deadline = (value != u64::MAX).then_some(value);
        }
    }

    fn recorder(timers: &DeviceTimers) -> Arc<Mutex<Vec<u64>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        timers.set_notifier(Arc::new(move |t| lock(&l).push(t)));
        log
    }

    #[test]
    fn access_notifies_only_when_the_deadline_moves_earlier() {
        let clock = ManualClock::new(0);
        let timers = DeviceTimers::new(Arc::new(clock.clone()));
        let log = recorder(&timers);
        let fake = Arc::new(Mutex::new(Fake::default()));
        timers.register("fake", fake.clone());
        let port = Timed::new(fake, timers.clone());
        assert!(lock(&log).is_empty(), "no deadline yet");

        port.pio_write(PioAddress(0), 0, &500u64.to_le_bytes());
        port.pio_write(PioAddress(0), 0, &700u64.to_le_bytes()); // later: no syscall
        let mut data = [0u8];
        port.pio_read(PioAddress(0), 0, &mut data); // unchanged: nothing
        port.pio_write(PioAddress(0), 0, &300u64.to_le_bytes()); // earlier: notify
        assert_eq!(*lock(&log), [500, 300]);
        assert_eq!(timers.armed(), Some(300));
        assert_eq!(timers.notifications(), 2);
    }

    #[test]
    fn service_updates_due_devices_and_returns_the_next_deadline() {
        let clock = ManualClock::new(0);
        let timers = DeviceTimers::new(Arc::new(clock.clone()));
        let log = recorder(&timers);
        let early = Arc::new(Mutex::new(Fake {
            deadline: Some(100),
            period: Some(100),
            updates: 0,
        }));
        let late = Arc::new(Mutex::new(Fake {
            deadline: Some(1_000),
            period: None,
            updates: 0,
        }));
        timers.register("early", early.clone());
        let late_id = timers.register("late", late.clone());
        assert_eq!(*lock(&log), [100]);
        assert_eq!(timers.names(), ["early", "late"]);

        clock.set(150);
        assert_eq!(timers.service(), Some(200));
        assert_eq!((lock(&early).updates, lock(&late).updates), (1, 0));
        // Both due: each gets one update; the early one's next period is already due
        // again, so the VMM re-arms in the past and the timer fires at once.
        clock.set(1_000);
        assert_eq!(timers.service(), Some(300));
        assert_eq!((lock(&early).updates, lock(&late).updates), (2, 1));
        assert_eq!(lock(&late).deadline, None);
        assert!(timers.unregister(late_id));
        assert!(!timers.unregister(late_id));
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.service(), Some(400));
        assert_eq!(lock(&early).updates, 3);
        let empty = DeviceTimers::new(Arc::new(clock));
        assert!(empty.is_empty());
        assert_eq!(empty.service(), None);
    }

    #[test]
    fn a_notifier_set_late_learns_the_pending_deadline() {
        let timers = DeviceTimers::new(Arc::new(ManualClock::new(0)));
        timers.register(
            "fake",
            Arc::new(Mutex::new(Fake {
                deadline: Some(42),
                ..Fake::default()
            })),
        );
        let log = recorder(&timers);
        assert_eq!(*lock(&log), [42]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A guest access to device `dev` setting its deadline to `now + delta` (or none).
        Access { dev: usize, delta: Option<u64> },
        /// Time passes; if the host timer is due, it fires and the VMM services.
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, proptest::option::of(0..5_000u64))
                .prop_map(|(dev, delta)| Op::Access { dev, delta }),
            (0..3_000u64).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the interleaving of accesses and expiries, the host timer as a VMM
        /// following the protocol arms it is never later than any device's deadline, and
        /// every due device is updated when the timer fires.
        #[test]
        fn no_deadline_is_ever_missed(ops in proptest::collection::vec(op(), 1..64)) {
            let clock = ManualClock::new(0);
            let timers = DeviceTimers::new(Arc::new(clock.clone()));
            // The VMM's one-shot timer: armed only ever lowered, cleared when it fires.
            let host_timer = Arc::new(Mutex::new(None::<u64>));
            let h = Arc::clone(&host_timer);
            timers.set_notifier(Arc::new(move |t| {
                let mut armed = lock(&h);
                *armed = Some(armed.map_or(t, |a| a.min(t)));
            }));
            let devices: Vec<_> = (0..3)
                .map(|_| Arc::new(Mutex::new(Fake { period: Some(700), ..Fake::default() })))
                .collect();
            let ports: Vec<_> = devices
                .iter()
                .map(|d| {
                    timers.register("fake", d.clone());
                    Timed::new(d.clone(), timers.clone())
                })
                .collect();
            for op in ops {
                match op {
                    Op::Access { dev, delta } => {
                        let value = delta.map_or(u64::MAX, |d| clock.now_ns() + d);
                        ports[dev].pio_write(PioAddress(0), 0, &value.to_le_bytes());
                    }
                    Op::Advance(delta) => {
                        clock.advance(delta);
                        // A timer armed in the past fires at once, so service until none is.
                        while lock(&host_timer).is_some_and(|t| t <= clock.now_ns()) {
                            *lock(&host_timer) = None;
                            if let Some(next) = timers.service() {
                                let mut armed = lock(&host_timer);
                                *armed = Some(armed.map_or(next, |a| a.min(next)));
                            }
                        }
                        for d in &devices {
                            let due = lock(d).deadline.is_some_and(|t| t <= clock.now_ns());
                            prop_assert!(!due, "a due device was not updated");
                        }
                    }
                }
                let armed = *lock(&host_timer);
                for d in &devices {
                    if let Some(deadline) = lock(d).deadline {
                        prop_assert!(
                            armed.is_some_and(|a| a <= deadline),
                            "deadline {deadline} but host timer {armed:?}"
                        );
                    }
                }
            }
        }
    }
}
