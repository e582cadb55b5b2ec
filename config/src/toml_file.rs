//! `/etc/guestd/guestd.toml`. Every value keeps its place in the file (`toml::Spanned`), so an
//! error names the file, line and column. The reference is in `docs/configuration.md`; qemu-ga's
//! option names are accepted in `[qga]` where they mean the same thing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guestd_transports::ChannelSpec;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::{
    DEFAULT_FSFREEZE_HOOK, Diagnostic, Layer, OvirtLayer, OvmdLayer, QgaLayer, check_log_level,
    qga_method_channel, split_rpcs, unknown_rpcs,
};

/// A number of seconds: an integer or a fraction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Secs(pub f64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                Ok(Secs(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                Ok(Secs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One string or an array of strings.
#[derive(Clone, Debug, PartialEq)]
pub struct Strs(pub Vec<String>);

impl<'de> Deserialize<'de> for Strs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strs, E> {
                Ok(Strs(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strs, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Strs(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A hook setting: a path, `true` (qemu-ga's default hook) or `false` (none).
#[derive(Clone, Debug, PartialEq)]
pub enum Hook {
    /// `true` / `false`.
    Flag(bool),
    /// A path (empty: the default).
    Path(String),
}

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hook;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Hook, E> {
                Ok(Hook::Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hook, E> {
                Ok(Hook::Path(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    log_level: S<String>,
    statedir: S<String>,
    qemu_ga_config: S<String>,
    discovery: Option<RawDiscovery>,
    freeze: Option<RawFreeze>,
    qga: Option<RawQga>,
    ovirt: Option<RawOvirt>,
    ovmd: Option<RawOvmd>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDiscovery {
    uevents: Option<bool>,
    rescan_interval: S<Secs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFreeze {
    hook: S<Hook>,
    watchdog: S<Secs>,
    hook_timeout: S<Secs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawQga {
    enable: Option<bool>,
    channel: S<Strs>,
    #[serde(alias = "blacklist")]
    block_rpcs: S<Strs>,
    allow_rpcs: S<Strs>,
    max_request: S<i64>,
    // qemu-ga's own names.
    method: S<String>,
    path: S<String>,
    fsfreeze_hook: S<Hook>,
    statedir: S<String>,
    verbose: Option<bool>,
    // Accepted for qemu-ga compatibility: guestd always reopens a failed channel.
    #[allow(dead_code)]
    retry_path: Option<bool>,
    daemon: S<bool>,
    logfile: S<String>,
    pidfile: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOvirt {
    enable: Option<bool>,
    channel: S<Strs>,
    heartbeat: S<Secs>,
    user_interval: S<Secs>,
    cpus_interval: S<Secs>,
    inventory_interval: S<Secs>,
    disks_interval: S<Secs>,
    applications: S<Strs>,
    all_applications: Option<bool>,
    free_ram: S<String>,
    hooks_dir: S<String>,
    hooks_deadline: S<Secs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOvmd {
    enable: Option<bool>,
    channel: S<String>,
    store: S<String>,
    socket: S<String>,
}

/// What a guestd.toml gave.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Its values.
    pub layer: Layer,
    /// `qemu-ga-config`: `Some(None)` for `""` (read none), `Some(Some(p))` for a path.
    pub qemu_ga_config: Option<Option<PathBuf>>,
    /// Errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error<T>(&mut self, v: &Spanned<T>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(
            self.file,
            self.text,
            Some(v.span().start),
            msg,
        ));
    }

    fn warn<T>(&mut self, v: &Spanned<T>, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(self.file, self.text, Some(v.span().start), msg).warning());
    }

    /// A positive duration, at most a day.
    fn interval(&mut self, v: &S<Secs>, key: &str) -> Option<Duration> {
        let v = v.as_ref()?;
        let s = v.get_ref().0;
        if !(0.01..=86_400.0).contains(&s) {
            self.error(
                v,
                format!("{key}: {s} is out of range (0.01 to 86400 seconds)"),
            );
            return None;
        }
        Some(Duration::from_secs_f64(s))
    }

    /// Zero (off) or a positive duration.
    fn optional_interval(&mut self, v: &S<Secs>, key: &str) -> Option<Option<Duration>> {
        let v = v.as_ref()?;
        let s = v.get_ref().0;
        if s == 0.0 {
            return Some(None);
        }
        if !(0.01..=31_536_000.0).contains(&s) {
            self.error(
                v,
                format!("{key}: {s} is out of range (0 for never, else 0.01 to 31536000 seconds)"),
            );
            return None;
        }
        Some(Some(Duration::from_secs_f64(s)))
    }

    fn abs_path(&mut self, v: &S<String>, key: &str) -> Option<PathBuf> {
        let v = v.as_ref()?;
        let p = v.get_ref();
        if !p.starts_with('/') {
            self.error(v, format!("{key}: '{p}' is not an absolute path"));
            return None;
        }
        Some(PathBuf::from(p))
    }

    fn hook(&mut self, v: &S<Hook>, key: &str) -> Option<Option<PathBuf>> {
        let v = v.as_ref()?;
        match v.get_ref() {
            Hook::Flag(false) => Some(None),
            Hook::Flag(true) => Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK))),
            Hook::Path(p) if p.is_empty() => Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK))),
            Hook::Path(p) if p.starts_with('/') => Some(Some(PathBuf::from(p))),
            Hook::Path(p) => {
                self.error(v, format!("{key}: '{p}' is not an absolute path"));
                None
            }
        }
    }

    fn channels(&mut self, v: &S<Strs>, proto: &str) -> Option<Vec<ChannelSpec>> {
        let v = v.as_ref()?;
        let mut out = Vec::new();
        for s in &v.get_ref().0 {
            match s.parse::<ChannelSpec>() {
                Ok(c) => out.push(c),
                Err(e) => self.error(v, format!("[{proto}] channel: {e}")),
            }
        }
        Some(out)
    }

    fn rpcs(&mut self, v: &S<Strs>, key: &str) -> Option<Vec<String>> {
        let v = v.as_ref()?;
        let list = split_rpcs(v.get_ref().0.iter().map(String::as_str));
        let unknown = unknown_rpcs(&list);
        if !unknown.is_empty() {
            self.warn(
                v,
                format!(
                    "{key}: not QGA commands, ignored as qemu-ga does: {}",
                    unknown.join(", ")
                ),
            );
        }
        Some(list)
    }
}

/// Parse the text of a guestd.toml named `file`.
pub fn parse(file: &Path, text: &str) -> Parsed {
    let raw: Raw = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.message().trim_end().replace('\n', " ");
            return Parsed {
                diagnostics: vec![Diagnostic::at(file, text, e.span().map(|s| s.start), msg)],
                ..Parsed::default()
            };
        }
    };
    let mut cx = Ctx {
        file,
        text,
        diags: Vec::new(),
    };
    let mut layer = Layer {
        source: file.display().to_string(),
        ..Layer::default()
    };
    if let Some(l) = &raw.log_level {
        match check_log_level(l.get_ref()) {
            Ok(()) => layer.log_level = Some(l.get_ref().clone()),
            Err(e) => cx.error(l, e),
        }
    }
    layer.statedir = cx.abs_path(&raw.statedir, "statedir");
    let qemu_ga_config = match &raw.qemu_ga_config {
        None => None,
        Some(v) if v.get_ref().is_empty() => Some(None),
        Some(_) => cx.abs_path(&raw.qemu_ga_config, "qemu-ga-config").map(Some),
    };

    if let Some(d) = &raw.discovery {
        layer.uevents = d.uevents;
        layer.rescan = cx.interval(&d.rescan_interval, "rescan-interval");
    }
    if let Some(f) = &raw.freeze {
        layer.hook = cx.hook(&f.hook, "hook");
        layer.watchdog = cx.optional_interval(&f.watchdog, "watchdog");
        layer.hook_timeout = cx.interval(&f.hook_timeout, "hook-timeout");
    }
    if let Some(q) = &raw.qga {
        layer.qga = qga(
            &mut cx,
            q,
            &mut layer.hook,
            &mut layer.statedir,
            &mut layer.log_level,
        );
    }
    if let Some(o) = &raw.ovirt {
        layer.ovirt = ovirt(&mut cx, o);
    }
    if let Some(o) = &raw.ovmd {
        layer.ovmd = OvmdLayer {
            enable: o.enable,
            channel: o.channel.as_ref().and_then(|c| {
                let s = c.get_ref();
                match s.strip_prefix("xenstore") {
                    Some("") => Some(s.clone()),
                    Some(rest) if rest.len() > 1 && rest.starts_with(":/") => Some(s.clone()),
                    _ => {
                        cx.error(
                            c,
                            format!(
                                "[ovmd] channel: '{s}': expected xenstore or xenstore:/ABSOLUTE/PATH"
                            ),
                        );
                        None
                    }
                }
            }),
            store: cx.abs_path(&o.store, "store"),
            socket: cx.abs_path(&o.socket, "socket"),
        };
    }
    let mut diagnostics = cx.diags;
    diagnostics.sort_by_key(|d| (d.line, d.column));
    Parsed {
        layer,
        qemu_ga_config,
        diagnostics,
    }
}

fn qga(
    cx: &mut Ctx<'_>,
    q: &RawQga,
    hook: &mut Option<Option<PathBuf>>,
    statedir: &mut Option<PathBuf>,
    log_level: &mut Option<String>,
) -> QgaLayer {
    let mut out = QgaLayer {
        enable: q.enable,
        channels: cx.channels(&q.channel, "qga"),
        block: cx.rpcs(&q.block_rpcs, "block-rpcs"),
        allow: cx.rpcs(&q.allow_rpcs, "allow-rpcs"),
        max_request: None,
    };
    if let (Some(b), Some(_)) = (&q.block_rpcs, &q.allow_rpcs) {
        cx.error(b, "block-rpcs and allow-rpcs cannot both be given");
    }
    if let Some(m) = &q.max_request {
        let v = *m.get_ref();
        if !(1024..=1 << 30).contains(&v) {
            cx.error(
                m,
                format!("max-request: {v} is out of range (1024 to 1073741824 bytes)"),
            );
        } else {
            out.max_request = usize::try_from(v).ok();
        }
    }
    if q.method.is_some() || q.path.is_some() {
        let at = q.method.as_ref().map(|m| m.span().start);
        let at = at.or_else(|| q.path.as_ref().map(|p| p.span().start));
        if q.channel.is_some() {
            cx.diags.push(Diagnostic::at(
                cx.file,
                cx.text,
                at,
                "give either channel or qemu-ga's method/path, not both",
            ));
        } else {
            match qga_method_channel(
                q.method.as_ref().map(|m| m.get_ref().as_str()),
                q.path.as_ref().map(|p| p.get_ref().as_str()),
            ) {
                Ok(c) => out.channels = Some(vec![c]),
                Err(e) => cx.diags.push(Diagnostic::at(cx.file, cx.text, at, e)),
            }
        }
    }
    if let Some(h) = cx.hook(&q.fsfreeze_hook, "fsfreeze-hook") {
        *hook = Some(h);
    }
    if let Some(s) = cx.abs_path(&q.statedir, "statedir") {
        *statedir = Some(s);
    }
    if q.verbose == Some(true) && log_level.is_none() {
        *log_level = Some("debug".into());
    }
    if let Some(d) = &q.daemon
        && *d.get_ref()
    {
        cx.warn(d, "daemon: ignored; guestd never forks (systemd runs it)");
    }
    for (v, key) in [(&q.logfile, "logfile"), (&q.pidfile, "pidfile")] {
        if let Some(v) = v {
            cx.warn(
                v,
                format!(
                    "{key}: ignored; guestd logs to stderr (the journal) and needs no pid file"
                ),
            );
        }
    }
    out
}

fn ovirt(cx: &mut Ctx<'_>, o: &RawOvirt) -> OvirtLayer {
    let free_ram_available = o.free_ram.as_ref().and_then(|f| match f.get_ref().as_str() {
        "available" => Some(true),
        "free" => Some(false),
        other => {
            cx.error(
                f,
                format!("free-ram: '{other}': expected \"free\" (MemFree + Buffers + Cached) or \"available\""),
            );
            None
        }
    });
    if let (Some(a), Some(true)) = (&o.applications, o.all_applications) {
        cx.error(
            a,
            "give either applications or all-applications = true, not both",
        );
    }
    OvirtLayer {
        enable: o.enable,
        channels: cx.channels(&o.channel, "ovirt"),
        heartbeat: cx.interval(&o.heartbeat, "heartbeat"),
        user: cx.interval(&o.user_interval, "user-interval"),
        cpus: cx.interval(&o.cpus_interval, "cpus-interval"),
        inventory: cx.interval(&o.inventory_interval, "inventory-interval"),
        disks: cx.interval(&o.disks_interval, "disks-interval"),
        applications: o.applications.as_ref().map(|a| a.get_ref().0.clone()),
        all_applications: o.all_applications,
        free_ram_available,
        hooks_dir: cx.abs_path(&o.hooks_dir, "hooks-dir"),
        hooks_deadline: cx.interval(&o.hooks_deadline, "hooks-deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn p(text: &str) -> Parsed {
        parse(Path::new("/etc/guestd/guestd.toml"), text)
    }

    fn errors(text: &str) -> Vec<String> {
        p(text)
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn full_file() {
        let t = r#"
log-level = "debug"
statedir = "/run/x"
qemu-ga-config = ""

[discovery]
uevents = false
rescan-interval = 2.5

[freeze]
hook = true
watchdog = 0
hook-timeout = 30

[qga]
channel = ["virtio:org.qemu.guest_agent.0", "serial:/dev/ttyS1"]
block-rpcs = ["guest-exec", "guest-file-open,guest-file-write"]
max-request = 65536

[ovirt]
enable = true
channel = "virtio:ovirt-guest-agent.0"
heartbeat = 1
applications = ["kernel*"]
free-ram = "available"

[ovmd]
enable = false
channel = "xenstore:/run/xenstored/socket"
"#;
        let r = p(t);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let l = r.layer;
        assert_eq!(r.qemu_ga_config, Some(None));
        assert_eq!(l.log_level.as_deref(), Some("debug"));
        assert_eq!(l.uevents, Some(false));
        assert_eq!(l.rescan, Some(Duration::from_millis(2500)));
        assert_eq!(l.hook, Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK))));
        assert_eq!(l.watchdog, Some(None));
        assert_eq!(
            l.qga.channels,
            Some(vec![
                ChannelSpec::Virtio("org.qemu.guest_agent.0".into()),
                ChannelSpec::Serial("/dev/ttyS1".into())
            ])
        );
        assert_eq!(
            l.qga.block,
            Some(vec![
                "guest-exec".into(),
                "guest-file-open".into(),
                "guest-file-write".into()
            ])
        );
        assert_eq!(l.qga.max_request, Some(65536));
        assert_eq!(l.ovirt.heartbeat, Some(Duration::from_secs(1)));
        assert_eq!(l.ovirt.free_ram_available, Some(true));
        assert_eq!(l.ovmd.enable, Some(false));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = errors("[qga]\nenable = true\nchannel = \n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("/etc/guestd/guestd.toml:3:"), "{e:?}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = errors("[qga]\nenable = true\nbogus-key = 1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("/etc/guestd/guestd.toml:3:"), "{e:?}");
        assert!(e[0].contains("bogus-key"), "{e:?}");
        let e = errors("[nosuch]\nx = 1\n");
        assert!(e[0].contains(":1:"), "{e:?}");
    }

    #[test]
    fn wrong_type_is_an_error_with_its_line() {
        let e = errors("\n[ovirt]\nheartbeat = \"fast\"\n");
        assert!(e[0].starts_with("/etc/guestd/guestd.toml:3:"), "{e:?}");
    }

    #[test]
    fn semantic_errors_all_reported_with_lines() {
        let e = errors(
            "statedir = \"relative\"\n[qga]\nchannel = \"bogus:x\"\n[ovirt]\nheartbeat = 0\nfree-ram = \"lots\"\n[ovmd]\nchannel = \"virtio:x\"\n",
        );
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].contains(":1:") && e[0].contains("absolute"), "{e:?}");
        assert!(e[1].contains(":3:") && e[1].contains("bogus:x"), "{e:?}");
        assert!(e[2].contains(":5:") && e[2].contains("heartbeat"), "{e:?}");
        assert!(e[3].contains(":6:") && e[3].contains("free-ram"), "{e:?}");
        assert!(e[4].contains(":8:") && e[4].contains("xenstore"), "{e:?}");
    }

    #[test]
    fn qemu_ga_names_in_qga_section() {
        let r = p(
            "[qga]\nmethod = \"isa-serial\"\npath = \"/dev/ttyS2\"\nblacklist = \"guest-exec;bogus\"\nfsfreeze-hook = \"\"\nverbose = true\ndaemon = true\n",
        );
        let warnings: Vec<String> = r.diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            r.diagnostics
                .iter()
                .all(|d| d.severity == Severity::Warning),
            "{warnings:?}"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains(":4:") && warnings[0].contains("bogus"));
        assert!(warnings[1].contains(":7:") && warnings[1].contains("daemon"));
        let l = r.layer;
        assert_eq!(
            l.qga.channels,
            Some(vec![ChannelSpec::Serial("/dev/ttyS2".into())])
        );
        assert_eq!(l.qga.block, Some(vec!["guest-exec".into(), "bogus".into()]));
        assert_eq!(l.hook, Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK))));
        assert_eq!(l.log_level.as_deref(), Some("debug"));
        let e = errors("[qga]\nchannel = \"virtio:x\"\nmethod = \"isa-serial\"\n");
        assert!(e[0].contains(":3:") && e[0].contains("not both"), "{e:?}");
        let e = errors("[qga]\nblock-rpcs = \"a\"\nallow-rpcs = \"b\"\n");
        assert!(e[0].contains(":2:"), "{e:?}");
    }

    #[test]
    fn empty_file_is_fine() {
        let r = p("# nothing\n");
        assert!(r.diagnostics.is_empty());
        assert_eq!(r.layer.qga, QgaLayer::default());
    }
}
