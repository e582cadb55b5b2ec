//! `guestd info`: the report for a person, or as JSON (schema: docs/info-schema.md).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use guestd_core::contract::Facts as _;
use guestd_core::model::*;
use guestd_core::{Paths, calendar};
use guestd_reporters::SystemFacts;

const FACT_NAMES: [&str; 12] = [
    "hostname",
    "fqdn",
    "os",
    "interfaces",
    "applications",
    "memory",
    "users",
    "filesystems",
    "timezone",
    "cpus",
    "load",
    "uptime",
];

/// Arguments of `guestd info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (the schema in docs/info-schema.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read this root instead of `/` (a fixture tree or a mounted image).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Only these facts (all when none is given).
    #[arg(
        value_name = "FACT",
        value_parser = PossibleValuesParser::new(FACT_NAMES).try_map(|s| s.parse::<Fact>())
    )]
    pub facts: Vec<Fact>,
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = match &args.root {
        Some(dir) => {
            anyhow::ensure!(dir.is_dir(), "--root {}: not a directory", dir.display());
            Paths::under(dir)
        }
        None => Paths::system(),
    };
    let which: Vec<Fact> = if args.facts.is_empty() {
        Fact::ALL.to_vec()
    } else {
        let mut v = args.facts.clone();
        v.sort();
        v.dedup();
        v
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    let report = rt.block_on(SystemFacts::new(paths).report(&which));

    for (fact, why) in &report.errors {
        eprintln!("guestd: {fact}: {why}");
    }
    let out = if args.json {
        let mut v = serde_json::to_value(&report).context("Cannot encode the report")?;
        if let Some(obj) = v.as_object_mut() {
            obj.retain(|k, _| k == "errors" || which.iter().any(|f| f.name() == k));
        }
        let mut s = serde_json::to_string_pretty(&v).context("Cannot encode the report")?;
        s.push('\n');
        s
    } else {
        text(&report, &which, !args.facts.is_empty())
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `guestd info | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("Cannot write the report"),
    }
}

/// Sizes for people: 1024-based with one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

fn date_utc(epoch: u64) -> String {
    let secs = epoch as i64;
    let (y, m, d) = calendar::civil_from_days(secs.div_euclid(calendar::SECS_PER_DAY));
    let s = secs.rem_euclid(calendar::SECS_PER_DAY);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h {m} min"),
    }
}

/// Key/value rows with the keys padded to one width.
fn rows(out: &mut String, title: &str, rows: &[(&str, String)]) {
    let _ = writeln!(out, "{title}");
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<w$}  {v}");
    }
}

/// A table: a header and rows, every column padded to its widest cell.
fn table(out: &mut String, title: &str, head: &[&str], body: &[Vec<String>]) {
    let _ = writeln!(out, "{title}");
    if body.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in body {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let width = w.get(i).copied().unwrap_or(0);
            let _ = write!(s, " {c:<width$} ");
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for r in body {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

fn missing(out: &mut String, title: &str, report: &Report, fact: Fact) {
    let why = report
        .errors
        .get(fact.name())
        .map(String::as_str)
        .unwrap_or("not collected");
    let _ = writeln!(out, "{title}\n  (unknown: {why})");
}

/// The readable report. Applications are counted, and listed only when asked for by name.
pub fn text(report: &Report, which: &[Fact], named: bool) -> String {
    let mut out = String::new();
    let mut first = true;
    for &fact in which {
        if !first {
            out.push('\n');
        }
        first = false;
        section(&mut out, report, fact, named);
    }
    out
}

fn section(out: &mut String, r: &Report, fact: Fact, named: bool) {
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    match fact {
        Fact::Hostname => match &r.hostname {
            Some(h) => rows(out, "Host name", &[("hostname", h.clone())]),
            None => missing(out, "Host name", r, fact),
        },
        Fact::Fqdn => match &r.fqdn {
            Some(h) => rows(out, "Fully qualified name", &[("fqdn", h.clone())]),
            None => missing(out, "Fully qualified name", r, fact),
        },
        Fact::Os => match &r.os {
            Some(o) => rows(
                out,
                "Operating system",
                &[
                    ("name", opt(&o.pretty_name)),
                    ("id", opt(&o.id)),
                    ("version", opt(&o.version_id)),
                    ("kernel", opt(&o.kernel_release)),
                    ("build", opt(&o.kernel_version)),
                    ("machine", opt(&o.machine)),
                    ("source", opt(&o.source)),
                ],
            ),
            None => missing(out, "Operating system", r, fact),
        },
        Fact::Interfaces => match &r.interfaces {
            Some(ifs) => {
                let body: Vec<Vec<String>> = ifs
                    .iter()
                    .map(|i| {
                        let mut addrs: Vec<String> = i
                            .ipv4
                            .iter()
                            .map(|a| format!("{}/{}", a.address, a.prefix))
                            .collect();
                        addrs.extend(i.ipv6.iter().map(|a| format!("{}/{}", a.address, a.prefix)));
                        let (rx, tx) = i
                            .stats
                            .map(|s| (human(s.rx_bytes), human(s.tx_bytes)))
                            .unwrap_or_else(|| ("-".into(), "-".into()));
                        vec![
                            i.name.clone(),
                            if i.up { "up" } else { "down" }.to_owned(),
                            opt(&i.mac),
                            rx,
                            tx,
                            if addrs.is_empty() {
                                "-".into()
                            } else {
                                addrs.join(" ")
                            },
                        ]
                    })
                    .collect();
                table(
                    out,
                    "Network interfaces",
                    &["NAME", "STATE", "MAC", "RX", "TX", "ADDRESSES"],
                    &body,
                );
            }
            None => missing(out, "Network interfaces", r, fact),
        },
        Fact::Applications => match &r.applications {
            Some(apps) if named => {
                let body: Vec<Vec<String>> = apps
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.version.clone(),
                            opt(&a.arch),
                            format!("{:?}", a.source).to_lowercase(),
                        ]
                    })
                    .collect();
                table(
                    out,
                    "Installed applications",
                    &["NAME", "VERSION", "ARCH", "FROM"],
                    &body,
                );
            }
            Some(apps) => rows(
                out,
                "Installed applications",
                &[(
                    "packages",
                    format!("{} (list them: guestd info applications)", apps.len()),
                )],
            ),
            None => missing(out, "Installed applications", r, fact),
        },
        Fact::Memory => match &r.memory {
            Some(m) => rows(
                out,
                "Memory",
                &[
                    ("total", human(m.total)),
                    ("free", human(m.free)),
                    (
                        "available",
                        if m.available_estimated {
                            format!("{} (estimated)", human(m.available))
                        } else {
                            human(m.available)
                        },
                    ),
                    ("buffers", human(m.buffers)),
                    ("cached", human(m.cached)),
                    ("swap total", human(m.swap_total)),
                    ("swap free", human(m.swap_free)),
                    ("paged in", human(m.page_in)),
                    ("paged out", human(m.page_out)),
                    ("swapped in", format!("{} pages", m.swap_in)),
                    ("swapped out", format!("{} pages", m.swap_out)),
                    ("faults", format!("{} ({} major)", m.faults, m.major_faults)),
                ],
            ),
            None => missing(out, "Memory", r, fact),
        },
        Fact::Users => match &r.users {
            Some(us) => {
                let body: Vec<Vec<String>> = us
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.uid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                            opt(&u.tty),
                            opt(&u.remote_host),
                            u.login_time
                                .map(|t| date_utc(t as u64))
                                .unwrap_or_else(|| "-".into()),
                            [u.active.then_some("active"), u.locked.then_some("locked")]
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect();
                table(
                    out,
                    "Users",
                    &["NAME", "UID", "TTY", "FROM", "LOGIN", "STATE"],
                    &body,
                );
            }
            None => missing(out, "Users", r, fact),
        },
        Fact::Filesystems => match &r.filesystems {
            Some(fs) => {
                let size = |v: Option<u64>| v.map(human).unwrap_or_else(|| "-".into());
                let body: Vec<Vec<String>> = fs
                    .iter()
                    .map(|f| {
                        let disks: Vec<String> = f
                            .disks
                            .iter()
                            .map(|d| match &d.bus {
                                Some(b) => format!("{} ({b})", d.name),
                                None => d.name.clone(),
                            })
                            .collect();
                        vec![
                            f.mountpoint.clone(),
                            f.device.clone(),
                            f.fstype.clone(),
                            size(f.total),
                            size(f.used),
                            size(f.available),
                            if disks.is_empty() {
                                "-".into()
                            } else {
                                disks.join(" ")
                            },
                        ]
                    })
                    .collect();
                table(
                    out,
                    "Filesystems",
                    &["MOUNT", "DEVICE", "TYPE", "SIZE", "USED", "AVAIL", "DISKS"],
                    &body,
                );
            }
            None => missing(out, "Filesystems", r, fact),
        },
        Fact::Timezone => match &r.timezone {
            Some(t) => rows(
                out,
                "Time zone",
                &[
                    ("name", opt(&t.name)),
                    (
                        "now",
                        format!("{} ({})", opt(&t.abbreviation), offset(t.utc_offset)),
                    ),
                    ("standard", offset(t.std_offset)),
                    ("daylight", if t.dst { "yes" } else { "no" }.to_owned()),
                ],
            ),
            None => missing(out, "Time zone", r, fact),
        },
        Fact::Cpus => match &r.cpus {
            Some(c) => rows(
                out,
                "CPUs",
                &[
                    ("online", c.online.to_string()),
                    ("present", c.present.to_string()),
                ],
            ),
            None => missing(out, "CPUs", r, fact),
        },
        Fact::Load => match &r.load {
            Some(l) => rows(
                out,
                "Load average",
                &[(
                    "1 5 15 min",
                    format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen),
                )],
            ),
            None => missing(out, "Load average", r, fact),
        },
        Fact::Uptime => match &r.uptime {
            Some(u) => rows(
                out,
                "Uptime",
                &[
                    ("up", duration(u.seconds)),
                    ("booted", date_utc(u.boot_time)),
                ],
            ),
            None => missing(out, "Uptime", r, fact),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(2_030_148 * 1024), "1.9 GiB");
    }

    #[test]
    fn times() {
        assert_eq!(offset(3600), "UTC+01:00");
        assert_eq!(offset(-16_200), "UTC-04:30");
        assert_eq!(date_utc(1_717_171_717), "2024-05-31 16:08:37 UTC");
        assert_eq!(duration(90_061.0), "1 d 1 h 1 min");
    }

    #[test]
    fn names_match_the_model() {
        for (n, f) in FACT_NAMES.iter().zip(Fact::ALL) {
            assert_eq!(*n, f.name());
        }
    }
}
