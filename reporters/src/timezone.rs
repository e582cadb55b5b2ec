//! Time zone: the IANA name, and the offsets in force, read from the zone file itself (TZif,
//! RFC 8536, with its POSIX TZ footer for times past the last transition), so a tree that is
//! not running answers too and no libc time zone code is involved.

use std::path::PathBuf;

use guestd_core::Paths;
use guestd_core::calendar::{civil_from_days, days_from_civil, is_leap};
use guestd_core::contract::FactError;
use guestd_core::model::Timezone;

use crate::util;

/// Reads the time zone of `paths` as of now.
pub fn read(paths: &Paths) -> Result<Timezone, FactError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    read_at(paths, now)
}

/// The time zone as of `now` (seconds since the epoch).
pub fn read_at(paths: &Paths, now: i64) -> Result<Timezone, FactError> {
    let name = zone_name(paths);
    let file = resolve(paths, "/etc/localtime")
        .filter(|p| p.is_file())
        .or_else(|| {
            let n = name.as_ref()?;
            Some(paths.join("usr/share/zoneinfo").join(n)).filter(|p| p.is_file())
        });
    let Some(file) = file else {
        // No zone file: glibc and musl then use UTC.
        return Ok(Timezone {
            name: name.or_else(|| Some("UTC".into())),
            abbreviation: Some("UTC".into()),
            ..Timezone::default()
        });
    };
    let bytes = std::fs::read(&file).map_err(|e| util::io_err(&file, e))?;
    let tz = Tzif::parse(&bytes).map_err(|r| util::parse_err(&file, r))?;
    let (now_type, std_offset) = tz.at(now);
    Ok(Timezone {
        name,
        abbreviation: Some(now_type.abbr).filter(|a| !a.is_empty()),
        utc_offset: now_type.utoff,
        std_offset,
        dst: now_type.dst,
    })
}

/// The IANA name: Debian's `/etc/timezone`, the target of the `/etc/localtime` link, or
/// RHEL 5/6's `/etc/sysconfig/clock`.
fn zone_name(paths: &Paths) -> Option<String> {
    if let Some(n) = util::attr(&paths.etc("timezone")) {
        return Some(n);
    }
    if let Ok(target) = std::fs::read_link(paths.etc("localtime")) {
        let t = target.to_string_lossy();
        if let Some((_, zone)) = t.split_once("zoneinfo/") {
            let zone = zone
                .strip_prefix("posix/")
                .or_else(|| zone.strip_prefix("right/"))
                .unwrap_or(zone);
            return Some(zone.to_owned());
        }
    }
    let clock = util::read_opt(&paths.etc("sysconfig/clock")).ok()??;
    let fields = crate::os::parse_os_release(&clock);
    fields
        .get("ZONE")
        .or_else(|| fields.get("TIMEZONE"))
        .filter(|z| !z.is_empty())
        .cloned()
}

/// Follows symlinks of `rel` inside the root: an absolute target (`/usr/share/zoneinfo/..`)
/// means the tree's own file, not the host's.
fn resolve(paths: &Paths, rel: &str) -> Option<PathBuf> {
    let mut p = paths.join(rel);
    for _ in 0..16 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = paths.join(t),
            Ok(t) => p = p.parent()?.join(t),
            Err(_) => return Some(p),
        }
    }
    None
}

/// A local time type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalType {
    /// Offset east of UTC, seconds.
    pub utoff: i32,
    /// Daylight saving time.
    pub dst: bool,
    /// Abbreviation.
    pub abbr: String,
}

/// The parts of a TZif file that say which local time type applies when.
#[derive(Debug)]
pub struct Tzif {
    transitions: Vec<(i64, usize)>,
    types: Vec<LocalType>,
    footer: Option<PosixTz>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("truncated zone file")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn be32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

impl Tzif {
    /// Parses a TZif file of any version.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        let mut r = Reader { b, at: 0 };
        let (version, counts) = header(&mut r)?;
        if version == 0 {
            return body(&mut r, counts, 4);
        }
        // Skip the 32-bit block; the 64-bit one after the second header is complete.
        let [isut, isstd, leap, time, typ, chr] = counts;
        r.take(time * 5 + typ * 6 + chr + leap * 8 + isstd + isut)?;
        let (_, counts) = header(&mut r)?;
        let mut tz = body(&mut r, counts, 8)?;
        let rest = &b[r.at..];
        if let Some(text) = rest.strip_prefix(b"\n")
            && let Some(end) = text.iter().position(|&c| c == b'\n')
        {
            let s = String::from_utf8_lossy(&text[..end]);
            tz.footer = PosixTz::parse(&s);
        }
        Ok(tz)
    }

    /// The type in force at `t`, and the standard-time offset then.
    pub fn at(&self, t: i64) -> (LocalType, i32) {
        let after_last = self.transitions.last().is_none_or(|&(last, _)| t >= last);
        if after_last && let Some(rule) = &self.footer {
            return (rule.at(t), rule.std.utoff);
        }
        let idx = match self.transitions.iter().rposition(|&(at, _)| at <= t) {
            Some(i) => self.transitions[i].1,
            None => 0,
        };
        let cur = self.types.get(idx).cloned().unwrap_or(LocalType {
            utoff: 0,
            dst: false,
            abbr: "UTC".into(),
        });
        let std = if !cur.dst {
            cur.utoff
        } else {
            // The standard time this daylight time belongs to: the last non-DST type before.
            let upto = self.transitions.iter().rposition(|&(at, _)| at <= t);
            upto.and_then(|i| {
                self.transitions[..i]
                    .iter()
                    .rev()
                    .filter_map(|&(_, ty)| self.types.get(ty))
                    .find(|ty| !ty.dst)
                    .map(|ty| ty.utoff)
            })
            .unwrap_or(cur.utoff - 3600)
        };
        (cur, std)
    }
}

fn header(r: &mut Reader<'_>) -> Result<(u8, [usize; 6]), String> {
    if r.take(4)? != b"TZif" {
        return Err("not a TZif zone file".into());
    }
    let version = match r.take(1)?[0] {
        0 => 0,
        v @ b'2'..=b'9' => v - b'0',
        _ => return Err("unknown TZif version".into()),
    };
    r.take(15)?;
    let mut c = [0usize; 6];
    for n in &mut c {
        *n = r.be32()? as usize;
        if *n > 1 << 20 {
            return Err("implausible TZif count".into());
        }
    }
    Ok((version, c))
}

fn body(r: &mut Reader<'_>, counts: [usize; 6], width: usize) -> Result<Tzif, String> {
    let [isut, isstd, leap, time, typ, chr] = counts;
    let times = r.take(time * width)?;
    let idx = r.take(time)?;
    let types_raw = r.take(typ * 6)?;
    let chars = r.take(chr)?;
    r.take(leap * (width + 4) + isstd + isut)?;
    let types: Vec<LocalType> = types_raw
        .chunks_exact(6)
        .map(|t| {
            let abbr_at = t[5] as usize;
            let abbr = chars
                .get(abbr_at..)
                .map(|s| s.split(|&c| c == 0).next().unwrap_or(&[]))
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            LocalType {
                utoff: i32::from_be_bytes([t[0], t[1], t[2], t[3]]),
                dst: t[4] != 0,
                abbr,
            }
        })
        .collect();
    let transitions = times
        .chunks_exact(width)
        .zip(idx)
        .map(|(t, &i)| {
            let at = if width == 8 {
                i64::from_be_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]])
            } else {
                i64::from(i32::from_be_bytes([t[0], t[1], t[2], t[3]]))
            };
            (at, i as usize)
        })
        .filter(|&(_, i)| i < types.len())
        .collect();
    Ok(Tzif {
        transitions,
        types,
        footer: None,
    })
}

/// A POSIX TZ string (`CET-1CEST,M3.5.0,M10.5.0/3`).
#[derive(Clone, Debug, PartialEq)]
pub struct PosixTz {
    std: LocalType,
    dst: Option<(LocalType, Rule, i32, Rule, i32)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(u32),
    /// `n`: day 0..=365, February 29 counted.
    Julian0(u32),
    /// `Mm.w.d`: weekday d of week w (5 = last) of month m.
    Month(u32, u32, u32),
}

impl PosixTz {
    /// Parses a TZ string; `None` when it is empty or malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let mut p = s;
        let std_name = tz_name(&mut p)?;
        let std_off = -tz_offset(&mut p)?;
        let std = LocalType {
            utoff: std_off,
            dst: false,
            abbr: std_name,
        };
        if p.is_empty() {
            return Some(Self { std, dst: None });
        }
        let dst_name = tz_name(&mut p)?;
        let dst_off = if p.starts_with(',') || p.is_empty() {
            std_off + 3600
        } else {
            -tz_offset(&mut p)?
        };
        let dst = LocalType {
            utoff: dst_off,
            dst: true,
            abbr: dst_name,
        };
        let rules = p.strip_prefix(',').unwrap_or("M3.2.0,M11.1.0");
        let (a, b) = rules.split_once(',')?;
        let (start, st) = rule(a)?;
        let (end, et) = rule(b)?;
        Some(Self {
            std,
            dst: Some((dst, start, st, end, et)),
        })
    }

    /// The local time type in force at `t`.
    pub fn at(&self, t: i64) -> LocalType {
        let Some((dst, start, st, end, et)) = &self.dst else {
            return self.std.clone();
        };
        let year = civil_from_days((t + i64::from(self.std.utoff)).div_euclid(86_400)).0;
        let begins = rule_day(*start, year) * 86_400 + i64::from(*st) - i64::from(self.std.utoff);
        let ends = rule_day(*end, year) * 86_400 + i64::from(*et) - i64::from(dst.utoff);
        let in_dst = if begins < ends {
            begins <= t && t < ends
        } else {
            !(ends <= t && t < begins) // southern hemisphere
        };
        if in_dst {
            dst.clone()
        } else {
            self.std.clone()
        }
    }
}

fn tz_name(p: &mut &str) -> Option<String> {
    if let Some(rest) = p.strip_prefix('<') {
        let (name, rest) = rest.split_once('>')?;
        *p = rest;
        return Some(name.to_owned());
    }
    let end = p
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(p.len());
    if end < 3 {
        return None;
    }
    let name = p[..end].to_owned();
    *p = &p[end..];
    Some(name)
}

/// `[+-]hh[:mm[:ss]]` as seconds (positive west of Greenwich, as POSIX writes it).
fn tz_offset(p: &mut &str) -> Option<i32> {
    let end = p
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '+' || c == '-'))
        .unwrap_or(p.len());
    let v = hms(&p[..end])?;
    *p = &p[end..];
    Some(v)
}

fn hms(s: &str) -> Option<i32> {
    let (sign, s) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut parts = s.split(':');
    let h: i32 = parts.next()?.parse().ok()?;
    let m: i32 = parts.next().map_or(Some(0), |x| x.parse().ok())?;
    let sec: i32 = parts.next().map_or(Some(0), |x| x.parse().ok())?;
    (h <= 167 && m < 60 && sec < 60).then_some(sign * (h * 3600 + m * 60 + sec))
}

fn rule(s: &str) -> Option<(Rule, i32)> {
    let (date, time) = match s.split_once('/') {
        Some((d, t)) => (d, hms(t)?),
        None => (s, 7200),
    };
    let r = if let Some(m) = date.strip_prefix('M') {
        let mut f = m.split('.').map(|x| x.parse::<u32>().ok());
        let (mo, w, d) = (f.next()??, f.next()??, f.next()??);
        ((1..=12).contains(&mo) && (1..=5).contains(&w) && d <= 6)
            .then_some(Rule::Month(mo, w, d))?
    } else if let Some(j) = date.strip_prefix('J') {
        Rule::Julian1(j.parse().ok().filter(|n| (1..=365).contains(n))?)
    } else {
        Rule::Julian0(date.parse().ok().filter(|n| *n <= 365)?)
    };
    Some((r, time))
}

/// Days since the epoch of the rule's day in `year`.
fn rule_day(r: Rule, year: i64) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    let leap = is_leap(year);
    match r {
        Rule::Julian0(n) => jan1 + i64::from(n),
        Rule::Julian1(n) => jan1 + i64::from(n) - 1 + i64::from(leap && n >= 60),
        Rule::Month(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            let dow_first = (first + 4).rem_euclid(7); // 1970-01-01 was a Thursday
            let mut day = first + (i64::from(d) - dow_first).rem_euclid(7) + 7 * (i64::from(w) - 1);
            let next_month = if m == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, m + 1, 1)
            };
            while day >= next_month {
                day -= 7;
            }
            day
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-01-15 12:00 UTC and 2024-07-15 12:00 UTC.
    const WINTER: i64 = 1_705_320_000;
    const SUMMER: i64 = 1_721_044_800;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 3, 1), 19_783);
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        // Last Sunday of March 2024 is the 31st; first Sunday of November 2024 the 3rd.
        assert_eq!(
            rule_day(Rule::Month(3, 5, 0), 2024),
            days_from_civil(2024, 3, 31)
        );
        assert_eq!(
            rule_day(Rule::Month(11, 1, 0), 2024),
            days_from_civil(2024, 11, 3)
        );
    }

    #[test]
    fn posix_rules() {
        let cet = PosixTz::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(cet.at(WINTER).utoff, 3600);
        let s = cet.at(SUMMER);
        assert_eq!((s.utoff, s.dst, s.abbr.as_str()), (7200, true, "CEST"));
        // Southern hemisphere: daylight time spans the new year.
        let syd = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert!(syd.at(WINTER).dst);
        assert!(!syd.at(SUMMER).dst);
        let ist = PosixTz::parse("<+0530>-5:30").unwrap();
        assert_eq!(ist.at(SUMMER).utoff, 19_800);
        assert_eq!(ist.at(SUMMER).abbr, "+0530");
        assert!(PosixTz::parse("").is_none());
        assert!(PosixTz::parse("X").is_none());
    }

    /// A v2 TZif file written here: two transitions in 2023, then the footer rule.
    fn tzif_prague() -> Vec<u8> {
        let types: [(i32, u8, u8); 2] = [(3600, 0, 0), (7200, 1, 4)];
        let chars = b"CET\0CEST\0";
        let trans: [(i64, u8); 2] = [(1_679_792_400, 1), (1_698_541_200, 0)];
        let mut v = Vec::new();
        let head = |v: &mut Vec<u8>, ver: u8| {
            v.extend_from_slice(b"TZif");
            v.push(ver);
            v.extend_from_slice(&[0; 15]);
            for n in [
                0u32,
                0,
                0,
                trans.len() as u32,
                types.len() as u32,
                chars.len() as u32,
            ] {
                v.extend_from_slice(&n.to_be_bytes());
            }
        };
        head(&mut v, b'2');
        for (t, _) in trans {
            v.extend_from_slice(&(t as i32).to_be_bytes());
        }
        v.extend(trans.iter().map(|t| t.1));
        for (o, d, a) in types {
            v.extend_from_slice(&o.to_be_bytes());
            v.extend_from_slice(&[d, a]);
        }
        v.extend_from_slice(chars);
        head(&mut v, b'2');
        for (t, _) in trans {
            v.extend_from_slice(&t.to_be_bytes());
        }
        v.extend(trans.iter().map(|t| t.1));
        for (o, d, a) in types {
            v.extend_from_slice(&o.to_be_bytes());
            v.extend_from_slice(&[d, a]);
        }
        v.extend_from_slice(chars);
        v.extend_from_slice(b"\nCET-1CEST,M3.5.0,M10.5.0/3\n");
        v
    }

    #[test]
    fn tzif_transitions_then_footer() {
        let tz = Tzif::parse(&tzif_prague()).unwrap();
        // Inside the table: summer 2023.
        let (t, std) = tz.at(1_689_000_000);
        assert_eq!(
            (t.utoff, t.dst, t.abbr.as_str(), std),
            (7200, true, "CEST", 3600)
        );
        // Past the table: the footer decides.
        let (t, std) = tz.at(SUMMER);
        assert_eq!((t.utoff, t.dst, std), (7200, true, 3600));
        let (t, _) = tz.at(WINTER);
        assert_eq!((t.utoff, t.abbr.as_str()), (3600, "CET"));
        assert!(Tzif::parse(b"TZif2").is_err());
        assert!(Tzif::parse(b"nope").is_err());
    }

    #[test]
    fn tree_with_absolute_localtime_link() {
        let dir = tempfile::tempdir().unwrap();
        let zi = dir.path().join("usr/share/zoneinfo/Europe");
        std::fs::create_dir_all(&zi).unwrap();
        std::fs::write(zi.join("Prague"), tzif_prague()).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/share/zoneinfo/Europe/Prague",
            dir.path().join("etc/localtime"),
        )
        .unwrap();
        let tz = read_at(&Paths::under(dir.path()), SUMMER).unwrap();
        assert_eq!(tz.name.as_deref(), Some("Europe/Prague"));
        assert_eq!((tz.utc_offset, tz.std_offset, tz.dst), (7200, 3600, true));
        assert_eq!(tz.abbreviation.as_deref(), Some("CEST"));
    }

    #[test]
    fn live_zone_files_parse() {
        // Every zone the system ships must parse; a cheap guard against format surprises.
        for z in [
            "UTC",
            "Europe/Prague",
            "America/New_York",
            "Australia/Sydney",
            "Asia/Kolkata",
        ] {
            let p = std::path::Path::new("/usr/share/zoneinfo").join(z);
            if let Ok(b) = std::fs::read(&p) {
                let tz = Tzif::parse(&b).unwrap();
                let _ = tz.at(SUMMER);
            }
        }
        if let Ok(b) = std::fs::read("/usr/share/zoneinfo/America/New_York") {
            let tz = Tzif::parse(&b).unwrap();
            assert_eq!(tz.at(SUMMER).0.utoff, -4 * 3600);
            assert_eq!(
                tz.at(WINTER),
                (
                    LocalType {
                        utoff: -5 * 3600,
                        dst: false,
                        abbr: "EST".into()
                    },
                    -5 * 3600
                )
            );
        }
    }
}
