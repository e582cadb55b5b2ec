//! The datetime module: time zone, hardware clock mode, NTP servers and service.
//!
//! - Zone: `/etc/localtime` becomes a relative symlink to `../usr/share/zoneinfo/<zone>` (as
//!   `timedatectl` makes it; the zone must exist in the root); Debian also gets `/etc/timezone`,
//!   Red Hat `ZONE=` in `/etc/sysconfig/clock` (when that file exists, or on OL5/6).
//! - UTC: line 3 of `/etc/adjtime` (`UTC`/`LOCAL`, read by hwclock and systemd), and `UTC=` in
//!   `/etc/sysconfig/clock` when that file exists.
//! - NTP servers: every `server`/`pool`/`peer` line of the NTP client configuration the guest
//!   has (`/etc/chrony.conf`, `/etc/chrony/chrony.conf`, `/etc/ntp.conf`,
//!   `/etc/ntpsec/ntp.conf`) is replaced by `server <name> iburst` lines; with none of those,
//!   `NTP=` in `/etc/systemd/timesyncd.conf`.
//! - NTP on/off: the first installed of chronyd/chrony, ntpd/ntp/ntpsec, systemd-timesyncd is
//!   enabled; off disables all of them.
//! - The date and time itself is not set here: [`set_time_nanos`] gives the instant for the
//!   caller's [`crate::action::Action::SetTime`] (see [`super::Report::set_time`]).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::InstanceConfig;
use super::distro::{Distro, Family};
use super::fsutil::{
    disable_unit, edit_shell_file, enable_unit, read_opt, unit_installed, write_atomic,
};
use super::report::{Module, Report};
use super::validate;
use crate::paths::Paths;

const NTP_CONFIGS: &[&str] = &[
    "etc/chrony.conf",
    "etc/chrony/chrony.conf",
    "etc/ntp.conf",
    "etc/ntpsec/ntp.conf",
];

const NTP_UNITS: &[&str] = &[
    "chronyd.service",
    "chrony.service",
    "ntpd.service",
    "ntpsec.service",
    "ntp.service",
    "systemd-timesyncd.service",
];

/// Apply the datetime part of `cfg`.
pub fn configure(cfg: &InstanceConfig, paths: &Paths, distro: &Distro, report: &mut Report) {
    if let Some(z) = &cfg.timezone {
        timezone(z, paths, distro, report);
    }
    if let Some(utc) = cfg.utc {
        match hwclock_utc(utc, paths, distro) {
            Ok(()) => report.applied(Module::Datetime, "hardware clock mode"),
            Err(e) => report.failed(Module::Datetime, "hardware clock mode", e),
        }
    }
    if let Some(servers) = &cfg.ntp_servers {
        ntp_servers(servers, paths, report);
    }
    if let Some(on) = cfg.ntp_enabled {
        ntp_service(on, paths, report);
    }
}

fn timezone(zone: &str, paths: &Paths, distro: &Distro, report: &mut Report) {
    let item = "time zone";
    if let Err(e) = validate::timezone(zone) {
        report.failed(Module::Datetime, item, e);
        return;
    }
    let zonefile = paths.join("usr/share/zoneinfo").join(zone);
    if !zonefile.is_file() {
        report.failed(
            Module::Datetime,
            item,
            format!("unknown time zone: no /usr/share/zoneinfo/{zone} in the root"),
        );
        return;
    }
    let res = (|| -> io::Result<()> {
        replace_symlink(
            &paths.etc("localtime"),
            &Path::new("../usr/share/zoneinfo").join(zone),
        )?;
        if distro.family == Family::Debian || paths.etc("timezone").exists() {
            write_atomic(
                &paths.etc("timezone"),
                format!("{zone}\n").as_bytes(),
                0o644,
            )?;
        }
        let clock = paths.etc("sysconfig/clock");
        if distro.family == Family::RedHat && (clock.exists() || distro.is_legacy_redhat()) {
            edit_shell_file(&clock, &[("ZONE", Some(zone))], 0o644)?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => report.applied(Module::Datetime, item),
        Err(e) => report.failed(Module::Datetime, item, e),
    }
}

/// Atomically make `link` a symlink to `target` (whatever `link` was before).
fn replace_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_file_name(".localtime.guestd");
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp)?;
    fs::rename(&tmp, link)
}

fn hwclock_utc(utc: bool, paths: &Paths, distro: &Distro) -> io::Result<()> {
    let p = paths.etc("adjtime");
    let old = read_opt(&p)?.unwrap_or_else(|| "0.0 0 0.0\n0\n".into());
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    while lines.len() < 2 {
        lines.push(if lines.is_empty() {
            "0.0 0 0.0".into()
        } else {
            "0".into()
        });
    }
    let mode = if utc { "UTC" } else { "LOCAL" };
    if lines.len() >= 3 {
        lines[2] = mode.into();
    } else {
        lines.push(mode.into());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomic(&p, text.as_bytes(), 0o644)?;
    let clock = paths.etc("sysconfig/clock");
    if distro.family == Family::RedHat && clock.exists() {
        edit_shell_file(
            &clock,
            &[("UTC", Some(if utc { "true" } else { "false" }))],
            0o644,
        )?;
    }
    Ok(())
}

/// Replace the server lines of a chrony or ntp configuration.
pub fn replace_servers(text: &str, servers: &[String]) -> String {
    let mut out = Vec::new();
    let mut inserted = false;
    let new: Vec<String> = servers
        .iter()
        .map(|s| format!("server {s} iburst"))
        .collect();
    for l in text.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if matches!(first, "server" | "pool" | "peer") {
            if !inserted {
                out.push("# Servers set by guestd first-boot configuration".to_string());
                out.extend(new.iter().cloned());
                inserted = true;
            }
            continue;
        }
        out.push(l.to_string());
    }
    if !inserted {
        out.push("# Servers set by guestd first-boot configuration".to_string());
        out.extend(new);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn ntp_servers(servers: &[String], paths: &Paths, report: &mut Report) {
    if let Some(bad) = servers.iter().find_map(|s| validate::ntp_server(s).err()) {
        report.failed(Module::Datetime, "NTP servers", bad);
        return;
    }
    let mut any = false;
    for rel in NTP_CONFIGS {
        let p = paths.join(rel);
        let item = format!("NTP servers (/{rel})");
        match read_opt(&p) {
            Ok(Some(text)) => {
                any = true;
                match write_atomic(&p, replace_servers(&text, servers).as_bytes(), 0o644) {
                    Ok(()) => report.applied(Module::Datetime, item),
                    Err(e) => report.failed(Module::Datetime, item, e),
                }
            }
            Ok(None) => {}
            Err(e) => report.failed(Module::Datetime, item, e),
        }
    }
    if any {
        return;
    }
    let ts = paths.etc("systemd/timesyncd.conf");
    if ts.exists() || unit_installed(paths, "systemd-timesyncd.service") {
        let item = "NTP servers (/etc/systemd/timesyncd.conf)";
        let res = (|| -> io::Result<()> {
            let old = read_opt(&ts)?.unwrap_or_else(|| "[Time]\n".into());
            write_atomic(
                &ts,
                set_ini(&old, "Time", "NTP", &servers.join(" ")).as_bytes(),
                0o644,
            )
        })();
        match res {
            Ok(()) => report.applied(Module::Datetime, item),
            Err(e) => report.failed(Module::Datetime, item, e),
        }
    } else {
        report.skipped(
            Module::Datetime,
            "NTP servers",
            "no NTP client configuration in the root",
        );
    }
}

/// Set `key=value` in `[section]` of an ini-style file, uncommenting or appending.
fn set_ini(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut in_sec = false;
    let mut done = false;
    let header = format!("[{section}]");
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            if in_sec && !done {
                out.push(format!("{key}={value}"));
                done = true;
            }
            in_sec = t == header;
            out.push(l.to_string());
            continue;
        }
        let bare = t.trim_start_matches(['#', ';']).trim_start();
        if in_sec && bare.split('=').next().map(str::trim) == Some(key) {
            if !done {
                out.push(format!("{key}={value}"));
                done = true;
            }
            continue;
        }
        out.push(l.to_string());
    }
    if !done {
        if !in_sec {
            out.push(header);
        }
        out.push(format!("{key}={value}"));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn ntp_service(on: bool, paths: &Paths, report: &mut Report) {
    let installed: Vec<&str> = NTP_UNITS
        .iter()
        .copied()
        .filter(|u| unit_installed(paths, u))
        .collect();
    if installed.is_empty() {
        report.skipped(
            Module::Datetime,
            "NTP service",
            "no NTP service unit installed",
        );
        return;
    }
    if on {
        let u = installed[0];
        match enable_unit(paths, u) {
            Ok(_) => report.applied(Module::Datetime, format!("NTP service ({u} enabled)")),
            Err(e) => report.failed(Module::Datetime, format!("NTP service ({u})"), e),
        }
    } else {
        for u in installed {
            match disable_unit(paths, u) {
                Ok(_) => report.applied(Module::Datetime, format!("NTP service ({u} disabled)")),
                Err(e) => report.failed(Module::Datetime, format!("NTP service ({u})"), e),
            }
        }
    }
}

/// Offset from UTC, in seconds east, of `zone` at `unix` seconds, read from the root's TZif
/// file. Times past the file's last transition use that transition's offset (the footer's
/// POSIX rule is not evaluated); `None` when the file is missing or malformed.
pub fn utc_offset_at(paths: &Paths, zone: &str, unix: i64) -> Option<i64> {
    validate::timezone(zone).ok()?;
    let data = fs::read(paths.join("usr/share/zoneinfo").join(zone)).ok()?;
    tzif_offset(&data, unix)
}

/// The UTC instant of a wall-clock time in `zone` (see [`utc_offset_at`]).
pub fn local_to_unix(paths: &Paths, zone: &str, dt: &super::DateTime) -> Option<i64> {
    let guess = dt.unix_seconds(0);
    let off1 = utc_offset_at(paths, zone, guess)?;
    let off2 = utc_offset_at(paths, zone, guess - off1)?;
    Some(dt.unix_seconds(off2))
}

/// The instant, in nanoseconds since the epoch, of the date and time the manager sent, or
/// `None` when none was sent. The wall-clock time is read in the new zone, as
/// ovm-template-config does (it runs `date` after setting the zone): the sent zone when the
/// root has it, else the zone `/etc/localtime` points at (the zone configuration left in
/// place), else UTC.
pub fn set_time_nanos(cfg: &InstanceConfig, paths: &Paths) -> Option<i64> {
    let dt = cfg.datetime?;
    let current = fs::read_link(paths.etc("localtime")).ok().and_then(|t| {
        let s = t.to_string_lossy().into_owned();
        s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
    });
    let secs = cfg
        .timezone
        .iter()
        .chain(current.iter())
        .find_map(|z| local_to_unix(paths, z, &dt))
        .unwrap_or_else(|| dt.unix_seconds(0));
    Some(secs.saturating_mul(1_000_000_000))
}

/// The [`crate::action::Action::SetTime`] that sets the clock to the date and time the
/// manager sent (see [`set_time_nanos`]), or `None` when none was sent. Dispatching it is the
/// caller's decision (it changes the running clock).
pub fn set_time_action(cfg: &InstanceConfig, paths: &Paths) -> Option<crate::action::Action> {
    set_time_nanos(cfg, paths).map(|n| crate::action::Action::SetTime { nanos: Some(n) })
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn tzif_offset(d: &[u8], t: i64) -> Option<i64> {
    if d.get(0..4)? != b"TZif" {
        return None;
    }
    let counts = |at: usize| -> Option<[usize; 6]> {
        let mut c = [0usize; 6];
        for (i, v) in c.iter_mut().enumerate() {
            *v = usize::try_from(be32(d, at + 20 + 4 * i)?).ok()?;
        }
        Some(c)
    };
    let c1 = counts(0)?;
    let version = *d.get(4)?;
    let (base, c, tsize) = if version >= b'2' {
        // Skip the 32-bit block to the 64-bit one.
        let v1_len = c1[3] * 5 + c1[4] * 6 + c1[5] + c1[2] * 8 + c1[1] + c1[0];
        let h2 = 44 + v1_len;
        (h2 + 44, counts(h2)?, 8usize)
    } else {
        (44, c1, 4usize)
    };
    let [_isut, _isstd, _leap, timecnt, typecnt, _charcnt] = c;
    if typecnt == 0 {
        return None;
    }
    let times = base;
    let idxs = times + timecnt * tsize;
    let types = idxs + timecnt;
    let ttinfo = |i: usize| -> Option<i64> {
        let at = types + 6 * i;
        Some(i64::from(be32(d, at)? as i32))
    };
    let time_at = |i: usize| -> Option<i64> {
        let at = times + i * tsize;
        if tsize == 8 {
            Some(i64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
        } else {
            Some(i64::from(be32(d, at)? as i32))
        }
    };
    let mut chosen: Option<usize> = None;
    for i in 0..timecnt {
        if time_at(i)? <= t {
            chosen = Some(usize::from(*d.get(idxs + i)?));
        } else {
            break;
        }
    }
    let ty = match chosen {
        Some(ty) => ty,
        // Before the first transition: the first non-DST type, else type 0.
        None => (0..typecnt)
            .find(|&i| d.get(types + 6 * i + 4) == Some(&0))
            .unwrap_or(0),
    };
    if ty >= typecnt {
        return None;
    }
    ttinfo(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_replaced_in_place() {
        let t = "# c\npool 2.debian.pool.ntp.org iburst\nkeyfile /etc/chrony/chrony.keys\nserver 1.x iburst\n";
        let out = replace_servers(t, &["a.example".into(), "192.0.2.1".into()]);
        assert_eq!(
            out,
            "# c\n# Servers set by guestd first-boot configuration\nserver a.example iburst\nserver 192.0.2.1 iburst\nkeyfile /etc/chrony/chrony.keys\n"
        );
    }

    #[test]
    fn ini() {
        assert_eq!(
            set_ini("[Time]\n#NTP=\n#FallbackNTP=x\n", "Time", "NTP", "a b"),
            "[Time]\nNTP=a b\n#FallbackNTP=x\n"
        );
        assert_eq!(set_ini("", "Time", "NTP", "a"), "[Time]\nNTP=a\n");
    }

    #[test]
    fn host_zoneinfo_offsets() {
        let paths = Paths::system();
        if !Path::new("/usr/share/zoneinfo/America/New_York").exists() {
            return;
        }
        // 2011-04-07 is in EDT (-4h); 2011-01-07 in EST (-5h).
        assert_eq!(
            utc_offset_at(&paths, "America/New_York", 1_302_166_962),
            Some(-4 * 3600)
        );
        assert_eq!(
            utc_offset_at(&paths, "America/New_York", 1_294_390_962),
            Some(-5 * 3600)
        );
        assert_eq!(utc_offset_at(&paths, "UTC", 1_302_166_962), Some(0));
        let dt = super::super::DateTime::new(2011, 4, 7, 9, 2, 42).unwrap();
        assert_eq!(
            local_to_unix(&paths, "America/New_York", &dt),
            Some(1_302_166_962 + 4 * 3600)
        );
    }
}
