//! One host timer (timerfd) for every device deadline, armed from any thread.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use vmkit_hw::{Clock, MonotonicClock};
use vmm_sys_util::timerfd::TimerFd;

use crate::error::{Error, Result};

/// A timerfd armed for the earliest device deadline (ns on a [`MonotonicClock`]).
///
/// Device models report deadlines; vCPU threads call [`HostTimer::arm_at`] when a guest access
/// moved a deadline earlier, the main loop calls [`HostTimer::expired`] when the fd fires and
/// re-arms for the next deadline. Nothing polls.
#[derive(Debug)]
pub struct HostTimer {
    clock: MonotonicClock,
    inner: Mutex<Armed>,
    fd: RawFd,
}

#[derive(Debug)]
struct Armed {
    timer: TimerFd,
    deadline: Option<u64>,
}

impl HostTimer {
    /// A disarmed timer reading deadlines on `clock`.
    pub fn new(clock: MonotonicClock) -> Result<Self> {
        let timer = TimerFd::new().map_err(|e| Error::Host {
            what: "creating a timerfd",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let fd = timer.as_raw_fd();
        Ok(Self {
            clock,
            inner: Mutex::new(Armed {
                timer,
                deadline: None,
            }),
            fd,
        })
    }

    /// The clock deadlines are read on.
    pub fn clock(&self) -> &MonotonicClock {
        &self.clock
    }

    /// Arms the timer for `deadline_ns` unless it is already armed for an earlier time.
    pub fn arm_at(&self, deadline_ns: u64) {
        let mut armed = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if armed.deadline.is_some_and(|current| current <= deadline_ns) {
            return;
        }
        // A zero duration would disarm the timerfd: fire in 1 ns for a deadline already due.
        let delay = deadline_ns.saturating_sub(self.clock.now_ns()).max(1);
        if armed.timer.reset(Duration::from_nanos(delay), None).is_ok() {
            armed.deadline = Some(deadline_ns);
        }
    }

    /// Main-loop side: consumes the expiry and forgets the armed deadline, so the caller can
    /// arm the next one.
    pub fn expired(&self) {
        let mut armed = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        armed.deadline = None;
        // The fd is non-blocking in effect: it only fires once we were told it is readable.
        let _ = armed.timer.clear();
    }

    /// The timerfd, for epoll.
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_deadlines_win_and_later_ones_are_ignored() {
        let timer = HostTimer::new(MonotonicClock::new()).unwrap();
        let now = timer.clock().now_ns();
        timer.arm_at(now + 50_000_000);
        timer.arm_at(now + 5_000_000);
        timer.arm_at(now + 80_000_000);
        let armed = timer.inner.lock().unwrap().deadline;
        assert_eq!(armed, Some(now + 5_000_000));
        // The fd fires after about 5 ms, not 50.
        let start = std::time::Instant::now();
        let fired = timer.inner.lock().unwrap().timer.wait().unwrap();
        assert_eq!(fired, 1);
        assert!(start.elapsed() < Duration::from_millis(40));
        timer.expired();
        assert_eq!(timer.inner.lock().unwrap().deadline, None);
    }
}
