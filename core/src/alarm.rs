//! A one-shot timer for long deadlines (seconds to minutes) that wakes the process exactly
//! once, at the deadline.
//!
//! Why not `tokio::time::sleep`: tokio's timer wheel keeps a deadline of seconds in a coarse
//! level and parks only until that level's slot begins, then moves the entry down a level and
//! parks again: a 5 s sleep wakes the thread two or three times. For an idle agent whose only
//! work is a heartbeat, those extra wake-ups are most of its CPU wake-ups. On Linux a timerfd
//! registered with the runtime's epoll (through [`AsyncFd`]) is armed once in the kernel and
//! becomes readable once, at its deadline.
//!
//! The clock is `CLOCK_MONOTONIC`, the clock of [`std::time::Instant`] and tokio's `Instant`:
//! setting the wall clock moves no deadline, and deadlines computed from `Instant`s are met
//! on the same clock that computed them (a timer on `CLOCK_BOOTTIME` would fire early after a
//! suspend, when `Instant` says the deadline has not come yet, and the caller would find
//! nothing due). Elsewhere, or when a timerfd cannot be had, tokio's timer serves instead.

use std::time::{Duration, Instant};

use std::sync::Arc;
#[cfg(target_os = "linux")]
use tokio::io::unix::AsyncFd;

use tokio::sync::Notify;

thread_local! {
    /// Told whenever an alarm fires on this thread: the thread is awake then anyway, and
    /// alarms that may fire early (see [`Alarm::set_early`]) do their work in the same
    /// wake-up instead of one of their own. Per thread, because waking an alarm on another
    /// thread would be a wake-up of its own; the daemon's runtime has one thread.
    static AWAKE: Arc<Notify> = Arc::new(Notify::new());
}

/// A one-shot timer: [`Alarm::set`] a deadline, then await [`Alarm::wait`]. Setting the same
/// deadline again costs nothing; a new one replaces the old.
#[derive(Debug)]
pub struct Alarm {
    /// The deadline armed, if any.
    deadline: Option<Instant>,
    /// How much sooner it may fire when another alarm wakes the process.
    early: Duration,
    #[cfg(target_os = "linux")]
    fd: Option<AsyncFd<linux::Fd>>,
    /// Whether the armed deadline has fired since it was set.
    fired: bool,
}

impl Alarm {
    /// A disarmed alarm. Inside a tokio runtime that runtime must have I/O enabled (for the
    /// timerfd); outside one, or when the kernel refuses a timerfd, it uses tokio's timer.
    pub fn new() -> Self {
        Self {
            deadline: None,
            early: Duration::ZERO,
            #[cfg(target_os = "linux")]
            fd: linux::open(),
            fired: false,
        }
    }

    /// The deadline set, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Arm for exactly `deadline` (`None`: disarm). A deadline already past makes
    /// [`Alarm::wait`] return at once.
    pub fn set(&mut self, deadline: Option<Instant>) {
        self.set_early(deadline, Duration::ZERO);
    }

    /// Arm for `deadline`, letting it fire up to `early` sooner if another alarm of the process
    /// fires in that window: for work whose exact time does not matter (a fallback rescan), so
    /// that it rides on a wake-up the process has anyway (a heartbeat) instead of adding one.
    /// It never fires later than `deadline`.
    pub fn set_early(&mut self, deadline: Option<Instant>, early: Duration) {
        self.early = early;
        if deadline == self.deadline {
            return;
        }
        self.deadline = deadline;
        self.fired = false;
        self.arm(deadline);
    }

    /// Disarm.
    pub fn cancel(&mut self) {
        self.set(None);
    }

    #[cfg(target_os = "linux")]
    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(fd) = &self.fd
            && let Err(e) = linux::arm(fd.get_ref(), deadline)
        {
            // Leave the timerfd for good: tokio's timer is slower to idle but never wrong.
            tracing::warn!(error = %e, "cannot arm a timerfd; using tokio's timer");
            self.fd = None;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn arm(&mut self, _deadline: Option<Instant>) {}

    /// Resolves once the deadline set has passed (or, with [`Alarm::set_early`], another
    /// alarm fired close enough before it); never while disarmed. Cancel-safe: dropping the
    /// future (a `select!` that took another branch) leaves the alarm armed.
    pub async fn wait(&mut self) {
        let Some(deadline) = self.deadline else {
            return std::future::pending().await;
        };
        if !self.fired {
            let window = deadline.checked_sub(self.early).unwrap_or(deadline);
            let early = self.early > Duration::ZERO;
            tokio::select! {
                _ = self.wait_timer(deadline) => {}
                _ = ride_along(window), if early => {
                    // Its own expiry would wake the process for nothing now.
                    self.arm(None);
                }
            }
            self.fired = true;
        }
        AWAKE.with(|n| n.notify_waiters());
    }

    async fn wait_timer(&mut self, deadline: Instant) {
        if deadline <= Instant::now() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, deadline).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "timerfd failed; using tokio's timer");
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Resolves when another alarm fires at or after `from` (on the thread that first polls this).
async fn ride_along(from: Instant) {
    let awake = AWAKE.with(Arc::clone);
    loop {
        awake.notified().await;
        if Instant::now() >= from {
            return;
        }
    }
}

impl Default for Alarm {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Instant;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// `AsyncFd` wants `AsRawFd`, which nix's `TimerFd` does not implement.
    #[derive(Debug)]
    pub(super) struct Fd(TimerFd);

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    pub(super) fn open() -> Option<AsyncFd<Fd>> {
        // AsyncFd panics outside a runtime; a runtime without I/O is the caller's mistake.
        if tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        );
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(error = %e, "no timerfd; using tokio's timer");
                return None;
            }
        };
        // SAFETY: `Fd` owns the timerfd (an `OwnedFd` inside nix's `TimerFd`), so the
        // descriptor stays open and the same for the whole life of the `AsyncFd`, and nothing
        // here swaps the inner value (no `get_mut`).
        match unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) } {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::debug!(error = %e, "cannot register a timerfd; using tokio's timer");
                None
            }
        }
    }

    /// Arms `fd` to expire once, `deadline - now` from now (relative, on the monotonic clock
    /// `Instant` reads, so the two agree). An expiry not yet read is discarded by the kernel.
    pub(super) fn arm(fd: &Fd, deadline: Option<Instant>) -> nix::Result<()> {
        let Some(deadline) = deadline else {
            return fd.0.unset();
        };
        // Zero would disarm: a deadline already past expires after one nanosecond instead.
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_nanos(1));
        fd.0.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )
    }

    /// Waits until `fd` expires and `deadline` has passed by `Instant`'s reading.
    pub(super) async fn wait(fd: &AsyncFd<Fd>, deadline: Instant) -> io::Result<()> {
        loop {
            let mut guard = fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut buf = [0u8; 8];
                nix::unistd::read(fd.get_ref().0.as_fd(), &mut buf).map_err(io::Error::from)
            });
            match read {
                // The expiry count; one-shot, so any count means the deadline came.
                Ok(Ok(_)) => {
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                    // Cannot happen on one clock; re-arm rather than return early if it does.
                    arm(fd.get_ref(), Some(deadline)).map_err(io::Error::from)?;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                // Not expired yet (a stale readiness): `try_io` cleared it; wait again.
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn expiries(alarm: &Alarm) -> bool {
        #[cfg(target_os = "linux")]
        {
            alarm.fd.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = alarm;
            false
        }
    }

    #[tokio::test]
    async fn fires_once_at_the_deadline_not_before() {
        let mut a = Alarm::new();
        assert!(expiries(&a), "a timerfd on Linux");
        let start = Instant::now();
        let deadline = start + Duration::from_millis(50);
        a.set(Some(deadline));
        a.wait().await;
        assert!(Instant::now() >= deadline, "woke before the deadline");
        // Fired stays fired until re-armed: a second wait returns at once.
        let again = tokio::time::timeout(Duration::from_secs(5), a.wait()).await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn disarmed_never_fires() {
        let mut a = Alarm::new();
        let r = tokio::time::timeout(Duration::from_millis(100), a.wait()).await;
        assert!(r.is_err(), "a disarmed alarm fired");
    }

    #[tokio::test]
    async fn cancel_disarms() {
        let mut a = Alarm::new();
        a.set(Some(Instant::now() + Duration::from_millis(20)));
        a.cancel();
        assert_eq!(a.deadline(), None);
        // Well past the old deadline: the kernel timer was disarmed too, not just forgotten.
        let r = tokio::time::timeout(Duration::from_millis(200), a.wait()).await;
        assert!(r.is_err(), "a cancelled alarm fired");
    }

    #[tokio::test]
    async fn rearming_later_moves_the_deadline() {
        let mut a = Alarm::new();
        let start = Instant::now();
        a.set(Some(start + Duration::from_millis(10)));
        let later = start + Duration::from_millis(150);
        a.set(Some(later));
        a.wait().await;
        assert!(Instant::now() >= later, "fired at the replaced deadline");
    }

    #[tokio::test]
    async fn rearming_after_it_fired_waits_again() {
        let mut a = Alarm::new();
        a.set(Some(Instant::now() + Duration::from_millis(10)));
        a.wait().await;
        let next = Instant::now() + Duration::from_millis(80);
        a.set(Some(next));
        a.wait().await;
        assert!(Instant::now() >= next);
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_returns_at_once() {
        let mut a = Alarm::new();
        a.set(Some(Instant::now() - Duration::from_secs(1)));
        let r = tokio::time::timeout(Duration::from_secs(5), a.wait()).await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn survives_a_dropped_wait() {
        // As in a select! whose other branch won: the alarm stays armed for the next wait.
        let mut a = Alarm::new();
        let deadline = Instant::now() + Duration::from_millis(60);
        a.set(Some(deadline));
        let r = tokio::time::timeout(Duration::from_millis(5), a.wait()).await;
        assert!(r.is_err());
        a.wait().await;
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn fires_after_an_expiry_that_was_never_read() {
        // The timer expired while nobody waited; re-arming discards that expiry, and the
        // new deadline is still honoured.
        let mut a = Alarm::new();
        a.set(Some(Instant::now() + Duration::from_millis(5)));
        std::thread::sleep(Duration::from_millis(20));
        let next = Instant::now() + Duration::from_millis(50);
        a.set(Some(next));
        a.wait().await;
        assert!(Instant::now() >= next);
    }

    #[tokio::test]
    async fn an_early_alarm_rides_on_another_alarms_wake_up() {
        let start = Instant::now();
        let mut lazy = Alarm::new();
        lazy.set_early(
            Some(start + Duration::from_secs(20)),
            Duration::from_secs(20),
        );
        let mut beat = Alarm::new();
        let beat_at = start + Duration::from_millis(100);
        beat.set(Some(beat_at));
        // Without riding along the lazy one would take 20 s and the timeout would hit.
        let both = async {
            tokio::join!(lazy.wait(), beat.wait());
        };
        let r = tokio::time::timeout(Duration::from_secs(10), both).await;
        assert!(r.is_ok(), "the early alarm waited for its own deadline");
        assert!(Instant::now() >= beat_at);
    }

    #[tokio::test]
    async fn an_early_alarm_ignores_wake_ups_before_its_window() {
        let start = Instant::now();
        let mut lazy = Alarm::new();
        let deadline = start + Duration::from_millis(300);
        lazy.set_early(Some(deadline), Duration::from_millis(100));
        let mut beat = Alarm::new();
        beat.set(Some(start + Duration::from_millis(20)));
        tokio::join!(lazy.wait(), beat.wait());
        assert!(
            Instant::now() >= start + Duration::from_millis(200),
            "fired before its window opened"
        );
    }

    #[tokio::test]
    async fn an_early_alarm_fires_at_its_deadline_when_nothing_else_wakes() {
        let mut lazy = Alarm::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        lazy.set_early(Some(deadline), Duration::from_millis(40));
        lazy.wait().await;
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn without_a_runtime_falls_back_instead_of_panicking() {
        let a = Alarm::new();
        assert!(!expiries(&a));
    }
}
