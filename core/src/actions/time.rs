//! Setting the clock (QGA `guest-set-time`).
//!
//! With a time: validate it as qemu-ga does (`Time N is too large` when `time_t` cannot hold
//! it, `Invalid time` for a year outside 1970–2069), set `CLOCK_REALTIME`, then copy the system
//! time to the RTC. Without one: set the system time from the RTC. The RTC is reached through
//! `hwclock` (`-w` / `-s`) where it exists, as qemu-ga does; where it does not (busybox images
//! without the applet, minimal containers), through the RTC device's own ioctls
//! (`RTC_SET_TIME` / `RTC_RD_TIME` on `/dev/rtc0` or `/dev/rtc`), taking the RTC to keep UTC
//! unless `/etc/adjtime` says `LOCAL`. qemu-ga instead refuses the whole command when
//! `/sbin/hwclock` is missing.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime, clock_settime};

use super::exec::{self, Ended, ExecError, Programs};
use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome};
use crate::calendar::{SECS_PER_DAY, civil_from_days, days_from_civil, year_of};
use crate::paths::Paths;

/// How long `hwclock` may take (it waits for the RTC's next second, and some RTCs are slow).
const HWCLOCK_DEADLINE: Duration = Duration::from_secs(30);

/// `struct rtc_time` of linux/rtc.h (the fields of `struct tm` the RTC uses).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    /// Seconds, 0–59.
    pub tm_sec: libc::c_int,
    /// Minutes, 0–59.
    pub tm_min: libc::c_int,
    /// Hours, 0–23.
    pub tm_hour: libc::c_int,
    /// Day of the month, 1–31.
    pub tm_mday: libc::c_int,
    /// Month, 0–11.
    pub tm_mon: libc::c_int,
    /// Years since 1900.
    pub tm_year: libc::c_int,
    /// Day of the week, 0 = Sunday.
    pub tm_wday: libc::c_int,
    /// Day of the year, 0–365.
    pub tm_yday: libc::c_int,
    /// Unused by the RTC.
    pub tm_isdst: libc::c_int,
}

// _IOR('p', 0x09, struct rtc_time) and _IOW('p', 0x0a, struct rtc_time)
nix::ioctl_read!(ioctl_rtc_rd_time, b'p', 0x09, RtcTime);
nix::ioctl_write_ptr!(ioctl_rtc_set_time, b'p', 0x0a, RtcTime);

/// UTC calendar time of `secs` since the epoch, as the RTC wants it.
pub fn rtc_time_of(secs: i64) -> RtcTime {
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let c = |v: i64| libc::c_int::try_from(v).unwrap_or(0);
    RtcTime {
        tm_sec: c(rem % 60),
        tm_min: c(rem / 60 % 60),
        tm_hour: c(rem / 3600),
        tm_mday: c(i64::from(d)),
        tm_mon: c(i64::from(m) - 1),
        tm_year: c(y - 1900),
        tm_wday: c((days + 4).rem_euclid(7)),
        tm_yday: c(days - days_from_civil(y, 1, 1)),
        tm_isdst: 0,
    }
}

/// Seconds since the epoch of an RTC time taken as UTC.
pub fn secs_of(t: &RtcTime) -> i64 {
    // The kernel hands out only valid RTC times (rtc_valid_tm), so the fields fit.
    let month = u32::try_from(i64::from(t.tm_mon) + 1).unwrap_or(1);
    let day = u32::try_from(t.tm_mday).unwrap_or(1);
    let days = days_from_civil(i64::from(t.tm_year) + 1900, month, day);
    days * SECS_PER_DAY
        + i64::from(t.tm_hour) * 3600
        + i64::from(t.tm_min) * 60
        + i64::from(t.tm_sec)
}

/// qemu-ga's checks of a time to set; the (seconds, nanoseconds) to set.
pub fn validate(nanos: i64) -> Result<(i64, i64), ActionError> {
    let secs = nanos / 1_000_000_000;
    if libc::time_t::try_from(secs).is_err() {
        return Err(ActionError::InvalidArgument(format!(
            "Time {nanos} is too large"
        )));
    }
    let year = year_of(secs);
    let sub = nanos % 1_000_000_000;
    if !(1970..2070).contains(&year) || sub < 0 {
        return Err(ActionError::InvalidArgument("Invalid time".into()));
    }
    Ok((secs, sub))
}

/// Handles [`Action::SetTime`].
#[derive(Debug, Clone)]
pub struct TimeHandler {
    paths: Paths,
    programs: Programs,
}

impl TimeHandler {
    /// Set the clock of the system at `paths` (the RTC device and `/etc/adjtime` are looked
    /// up under it), with helper programs from `programs`.
    pub fn new(paths: Paths, programs: Programs) -> Self {
        Self { paths, programs }
    }

    fn rtc_device(&self) -> Option<PathBuf> {
        ["rtc0", "rtc"]
            .iter()
            .map(|n| self.paths.dev(n))
            .find(|p| p.exists())
    }

    fn rtc_is_local(&self) -> bool {
        std::fs::read_to_string(self.paths.etc("adjtime"))
            .is_ok_and(|t| t.lines().nth(2).is_some_and(|l| l.trim() == "LOCAL"))
    }

    async fn hwclock(&self, hwclock: &std::path::Path, arg: &str) -> Result<(), ActionError> {
        match exec::run(hwclock, &[OsStr::new(arg)], None, HWCLOCK_DEADLINE).await {
            Ok(status) => match Ended::from(status) {
                Ended::Success => Ok(()),
                Ended::Status(_) => Err(ActionError::Failed(
                    "hwclock failed to set hardware clock to system time".into(),
                )),
                Ended::Signal(_) => Err(ActionError::Failed(
                    "child process has terminated abnormally".into(),
                )),
            },
            Err(ExecError::Spawn(e)) => Err(ActionError::Failed(format!(
                "failed to create child process: {}",
                e.desc()
            ))),
            Err(ExecError::TimedOut(_)) => Err(ActionError::Timeout("hwclock".into())),
        }
    }

    /// Copy the system time to the RTC.
    async fn system_to_rtc(&self) -> Result<(), ActionError> {
        if let Some(hw) = self.programs.find("hwclock") {
            return self.hwclock(&hw, "-w").await;
        }
        let Some(dev) = self.rtc_device() else {
            tracing::warn!("no hwclock and no RTC device: the clock is set, the RTC is not");
            return Ok(());
        };
        if self.rtc_is_local() {
            tracing::warn!("the RTC keeps local time and there is no hwclock: RTC not set");
            return Ok(());
        }
        tokio::task::spawn_blocking(move || -> Result<(), ActionError> {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&dev).map_err(|e| rtc_error(&dev, &e))?;
            let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(|e| {
                ActionError::Failed(format!("failed to read the clock: {}", e.desc()))
            })?;
            let t = rtc_time_of(now.tv_sec());
            // SAFETY: the fd is open for the call and `t` is a live `struct rtc_time` the
            // kernel only reads.
            unsafe { ioctl_rtc_set_time(file.as_raw_fd(), &t) }.map_err(|e| {
                ActionError::Failed(format!(
                    "failed to set hardware clock {}: {}",
                    dev.display(),
                    e.desc()
                ))
            })?;
            Ok(())
        })
        .await
        .map_err(|e| ActionError::Failed(format!("RTC task failed: {e}")))?
    }

    /// Set the system time from the RTC.
    async fn rtc_to_system(&self) -> Result<(), ActionError> {
        if let Some(hw) = self.programs.find("hwclock") {
            return self.hwclock(&hw, "-s").await;
        }
        let Some(dev) = self.rtc_device() else {
            return Err(ActionError::Failed(
                "no hardware clock to read the time from (no hwclock, no /dev/rtc)".into(),
            ));
        };
        if self.rtc_is_local() {
            return Err(ActionError::Failed(
                "the hardware clock keeps local time and hwclock is missing".into(),
            ));
        }
        tokio::task::spawn_blocking(move || -> Result<(), ActionError> {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&dev).map_err(|e| rtc_error(&dev, &e))?;
            let mut t = RtcTime::default();
            // SAFETY: the fd is open for the call and `t` is a live `struct rtc_time` the
            // kernel fills in.
            unsafe { ioctl_rtc_rd_time(file.as_raw_fd(), &mut t) }.map_err(|e| {
                ActionError::Failed(format!(
                    "failed to read hardware clock {}: {}",
                    dev.display(),
                    e.desc()
                ))
            })?;
            clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs_of(&t), 0)).map_err(|e| {
                ActionError::Failed(format!("Failed to set time to guest: {}", e.desc()))
            })
        })
        .await
        .map_err(|e| ActionError::Failed(format!("RTC task failed: {e}")))?
    }
}

fn rtc_error(dev: &std::path::Path, e: &std::io::Error) -> ActionError {
    ActionError::Failed(format!(
        "failed to open {}: {}",
        dev.display(),
        Errno::from_raw(e.raw_os_error().unwrap_or(0)).desc()
    ))
}

#[async_trait]
impl ActionHandler for TimeHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::SetTime]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::SetTime { nanos } = action else {
            return Err(ActionError::Unsupported);
        };
        match nanos {
            Some(nanos) => {
                let (secs, sub) = validate(nanos)?;
                if !self.paths.is_system() {
                    // The running clock belongs to the running system, not to another root
                    // (`guestd ovmd --root`, fixture roots in tests): never set it from there.
                    return Err(ActionError::Failed(format!(
                        "not setting the running clock for the root {}",
                        self.paths.root().display()
                    )));
                }
                clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, sub)).map_err(|e| {
                    ActionError::Failed(format!("Failed to set time to guest: {}", e.desc()))
                })?;
                tracing::info!(secs, "system clock set");
                self.system_to_rtc().await?;
            }
            None => {
                self.rtc_to_system().await?;
                tracing::info!("system clock set from the hardware clock");
            }
        }
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_texts_match_qemu_ga() {
        let text = |n: i64| validate(n).unwrap_err().to_string();
        assert_eq!(text(4_102_444_800_000_000_000), "Invalid time"); // 2100
        assert_eq!(text(-1_000_000_000_000_000_000), "Invalid time");
        assert_eq!(text(i64::MAX), "Invalid time");
        assert_eq!(text(-1), "Invalid time");
        // 2069-12-31T23:59:59 is the last accepted second, 2070-01-01 the first refused.
        assert_eq!(
            validate(3_155_759_999_000_000_000).unwrap().0,
            3_155_759_999
        );
        assert_eq!(text(3_155_760_000_000_000_000), "Invalid time");
        assert_eq!(
            validate(1_795_359_107_123_456_789).unwrap(),
            (1_795_359_107, 123_456_789)
        );
        assert_eq!(validate(0).unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn reading_the_rtc_without_hwclock_or_rtc_device_fails_cleanly() {
        // Nothing to read from: an error, and the clock is never touched.
        let d = tempfile::tempdir().unwrap();
        let h = TimeHandler::new(Paths::under(d.path()), Programs::new(Some(OsStr::new(""))));
        let e = h.run(Action::SetTime { nanos: None }).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "no hardware clock to read the time from (no hwclock, no /dev/rtc)"
        );
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/rtc0"), "").unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/adjtime"), "0.0 0 0.0\n0\nLOCAL\n").unwrap();
        let e = h.run(Action::SetTime { nanos: None }).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the hardware clock keeps local time and hwclock is missing"
        );
        // Invalid times are refused before anything is set.
        let e = h
            .run(Action::SetTime { nanos: Some(-5) })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Invalid time");
        // A valid time for another root never reaches the running clock.
        let e = h
            .run(Action::SetTime {
                nanos: Some(1_302_166_962_000_000_000),
            })
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("not setting the running clock"),
            "{e}"
        );
    }

    #[test]
    fn calendar_conversions_round_trip() {
        // 2026-11-23T16:31:29Z, a Monday, day 326 of the year.
        let t = rtc_time_of(1_795_451_489);
        assert_eq!(
            (
                t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec
            ),
            (126, 10, 23, 16, 31, 29)
        );
        assert_eq!((t.tm_wday, t.tm_yday), (1, 326));
        for s in [0, 951_782_400, 1_709_164_800, 4_107_542_399, 1_795_451_489] {
            assert_eq!(secs_of(&rtc_time_of(s)), s);
        }
        let leap = rtc_time_of(951_782_400); // 2000-02-29
        assert_eq!((leap.tm_mon, leap.tm_mday), (1, 29));
    }
}
