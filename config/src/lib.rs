//! guestd's configuration: `/etc/guestd/guestd.toml` ([`toml_file`]) and qemu-ga's
//! `/etc/qemu/qemu-ga.conf` ([`keyfile`]), each read into a [`Layer`] of optional values, merged
//! over the defaults in the order qemu-ga's file, guestd's file, the command line. The result is
//! a complete [`Settings`].
//!
//! Every problem found in a file is a [`Diagnostic`] with the file and, where it has one, the line
//! and column: `guestd check-config` prints them, `guestd run` refuses to start on an error, and a
//! reload (SIGHUP) with an error keeps the running settings.

pub mod keyfile;
pub mod toml_file;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guestd_transports::ChannelSpec;

/// guestd's own configuration file.
pub const DEFAULT_PATH: &str = "/etc/guestd/guestd.toml";
/// qemu-ga's configuration file, read too so existing images keep their settings.
pub const QGA_DEFAULT_PATH: &str = "/etc/qemu/qemu-ga.conf";
/// The QGA port when no channel is configured.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";
/// The oVirt ports when no channel is configured, in preference order: VDSM uses only the
/// current one when both exist (ovirt.md §1.1).
pub const OVIRT_PORTS: [&str; 2] = ["ovirt-guest-agent.0", "com.redhat.rhevm.vdsm"];
/// qemu-ga's default fsfreeze hook, used by a hook setting of `true` or an empty path.
pub const DEFAULT_FSFREEZE_HOOK: &str = "/etc/qemu/fsfreeze-hook";
/// The oVirt lifecycle hooks directory of the old agent.
pub const DEFAULT_OVIRT_HOOKS: &str = "/etc/ovirt-guest-agent/hooks.d";
/// The control socket of the `ovmd` command (the daemon listens, the command connects).
pub const DEFAULT_OVMD_SOCKET: &str = "/run/guestd/ovmd.sock";

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// Accepted, but something is ignored or surprising.
    Warning,
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// 1-based column (characters), when known.
    pub column: Option<usize>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error at a byte offset of `text`.
    pub fn at(file: &Path, text: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = line_col(text, o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Self {
            file: file.to_owned(),
            line,
            column,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// An error about the whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self::at(file, "", None, message)
    }

    /// The same, as a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        match self.severity {
            Severity::Error => f.write_str(": ")?,
            Severity::Warning => f.write_str(": warning: ")?,
        }
        // Messages quote values from the file, which may hold newlines (TOML and key file
        // escapes): one diagnostic stays one line of check-config's output and of the log.
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// A configuration that cannot be used: every error found (and the warnings beside them).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError(pub Vec<Diagnostic>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<String> = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        write!(f, "{}", errors.join("\n"))
    }
}

/// Values from one source; `None` leaves the value of the sources below.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    /// Where these values come from (a file, or "the command line").
    pub source: String,
    /// Log filter.
    pub log_level: Option<String>,
    /// State directory.
    pub statedir: Option<PathBuf>,
    /// Follow kernel uevents for hot-plug.
    pub uevents: Option<bool>,
    /// Rescan interval.
    pub rescan: Option<Duration>,
    /// fsfreeze hook: `Some(None)` turns it off.
    pub hook: Option<Option<PathBuf>>,
    /// Freeze watchdog: `Some(None)` turns it off.
    pub watchdog: Option<Option<Duration>>,
    /// Longest a hook may run.
    pub hook_timeout: Option<Duration>,
    /// QGA.
    pub qga: QgaLayer,
    /// oVirt.
    pub ovirt: OvirtLayer,
    /// Oracle VM messaging.
    pub ovmd: OvmdLayer,
}

/// QGA values of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QgaLayer {
    /// Serve QGA at all.
    pub enable: Option<bool>,
    /// Where; replaces the channels below.
    pub channels: Option<Vec<ChannelSpec>>,
    /// Commands to disable; accumulates over sources, as qemu-ga's lists do.
    pub block: Option<Vec<String>>,
    /// The only commands enabled; accumulates over sources.
    pub allow: Option<Vec<String>>,
    /// Largest request.
    pub max_request: Option<usize>,
}

/// oVirt values of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OvirtLayer {
    /// Serve oVirt at all.
    pub enable: Option<bool>,
    /// Where.
    pub channels: Option<Vec<ChannelSpec>>,
    /// Heartbeat interval.
    pub heartbeat: Option<Duration>,
    /// Active-user interval.
    pub user: Option<Duration>,
    /// number-of-cpus interval.
    pub cpus: Option<Duration>,
    /// Inventory interval (applications, host name, OS, interfaces, FQDN).
    pub inventory: Option<Duration>,
    /// disks-usage interval.
    pub disks: Option<Duration>,
    /// Application name patterns.
    pub applications: Option<Vec<String>>,
    /// Report every package.
    pub all_applications: Option<bool>,
    /// Free memory as MemAvailable.
    pub free_ram_available: Option<bool>,
    /// Lifecycle hooks directory.
    pub hooks_dir: Option<PathBuf>,
    /// Lifecycle hooks deadline.
    pub hooks_deadline: Option<Duration>,
}

/// Oracle VM messaging values of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OvmdLayer {
    /// Serve it at all.
    pub enable: Option<bool>,
    /// `xenstore` or `xenstore:PATH`.
    pub channel: Option<String>,
    /// Parameter store directory.
    pub store: Option<PathBuf>,
    /// Control socket of the `ovmd` command.
    pub socket: Option<PathBuf>,
}

/// Hot-plug settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Follow kernel uevents (NETLINK_KOBJECT_UEVENT).
    pub uevents: bool,
    /// Rescan every this long anyway (the fallback when uevents are off or unavailable).
    pub rescan: Duration,
}

/// Freeze settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    /// The fsfreeze hook, if enabled.
    pub hook: Option<PathBuf>,
    /// Thaw by itself this long after a freeze.
    pub watchdog: Option<Duration>,
    /// Longest a hook may run.
    pub hook_timeout: Duration,
}

/// QGA settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qga {
    /// Serve QGA.
    pub enable: bool,
    /// Configured channels; `None`: discover the virtio port.
    pub channels: Option<Vec<ChannelSpec>>,
    /// `--block-rpcs`.
    pub block: Option<Vec<String>>,
    /// `--allow-rpcs`.
    pub allow: Option<Vec<String>>,
    /// Largest request in bytes.
    pub max_request: usize,
}

/// oVirt settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovirt {
    /// Serve oVirt.
    pub enable: bool,
    /// Configured channels; `None`: discover the ports.
    pub channels: Option<Vec<ChannelSpec>>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Active-user interval.
    pub user: Duration,
    /// number-of-cpus interval.
    pub cpus: Duration,
    /// Inventory interval.
    pub inventory: Duration,
    /// disks-usage interval.
    pub disks: Duration,
    /// Application patterns (`None`: the old agent's list).
    pub applications: Option<Vec<String>>,
    /// Report every package.
    pub all_applications: bool,
    /// Free memory as MemAvailable.
    pub free_ram_available: bool,
    /// Lifecycle hooks directory.
    pub hooks_dir: PathBuf,
    /// Lifecycle hooks deadline.
    pub hooks_deadline: Duration,
}

/// Oracle VM messaging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovmd {
    /// Serve it.
    pub enable: bool,
    /// Configured channel (`xenstore` or `xenstore:PATH`); `None`: only in a Xen guest.
    pub channel: Option<String>,
    /// Parameter store directory.
    pub store: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
}

/// The complete, effective settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Log filter, if any source set one.
    pub log_level: Option<String>,
    /// State that must survive an agent restart (not on a freezable filesystem).
    pub statedir: PathBuf,
    /// Hot-plug.
    pub discovery: Discovery,
    /// Freeze.
    pub freeze: Freeze,
    /// QGA.
    pub qga: Qga,
    /// oVirt.
    pub ovirt: Ovirt,
    /// Oracle VM messaging.
    pub ovmd: Ovmd,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log_level: None,
            statedir: PathBuf::from("/run/guestd"),
            discovery: Discovery {
                uevents: true,
                rescan: Duration::from_secs(30),
            },
            freeze: Freeze {
                hook: None,
                watchdog: Some(Duration::from_secs(600)),
                hook_timeout: Duration::from_secs(60),
            },
            qga: Qga {
                enable: true,
                channels: None,
                block: None,
                allow: None,
                max_request: 64 << 20,
            },
            ovirt: Ovirt {
                enable: true,
                channels: None,
                heartbeat: Duration::from_secs(5),
                user: Duration::from_secs(10),
                cpus: Duration::from_secs(60),
                inventory: Duration::from_secs(120),
                disks: Duration::from_secs(300),
                applications: None,
                all_applications: false,
                free_ram_available: false,
                hooks_dir: PathBuf::from(DEFAULT_OVIRT_HOOKS),
                hooks_deadline: Duration::from_secs(8),
            },
            ovmd: Ovmd {
                enable: true,
                channel: None,
                store: PathBuf::from(guestd_core::params::ParamStore::DEFAULT_DIR),
                socket: PathBuf::from(DEFAULT_OVMD_SOCKET),
            },
        }
    }
}

fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
    if let Some(v) = v {
        *dst = v.clone();
    }
}

fn accumulate(dst: &mut Option<Vec<String>>, v: &Option<Vec<String>>) {
    if let Some(v) = v {
        dst.get_or_insert_with(Vec::new).extend(v.iter().cloned());
    }
}

impl Settings {
    /// The defaults with `layers` applied in order (later wins; command lists accumulate).
    pub fn resolve(layers: &[&Layer]) -> Result<Self, Diagnostic> {
        let mut s = Settings::default();
        let (mut block_from, mut allow_from) = (None, None);
        for l in layers {
            if l.log_level.is_some() {
                s.log_level.clone_from(&l.log_level);
            }
            set(&mut s.statedir, &l.statedir);
            set(&mut s.discovery.uevents, &l.uevents);
            set(&mut s.discovery.rescan, &l.rescan);
            set(&mut s.freeze.hook, &l.hook);
            set(&mut s.freeze.watchdog, &l.watchdog);
            set(&mut s.freeze.hook_timeout, &l.hook_timeout);

            set(&mut s.qga.enable, &l.qga.enable);
            if l.qga.channels.is_some() {
                s.qga.channels.clone_from(&l.qga.channels);
            }
            accumulate(&mut s.qga.block, &l.qga.block);
            accumulate(&mut s.qga.allow, &l.qga.allow);
            if l.qga.block.is_some() {
                block_from = Some(l.source.clone());
            }
            if l.qga.allow.is_some() {
                allow_from = Some(l.source.clone());
            }
            set(&mut s.qga.max_request, &l.qga.max_request);

            let o = &l.ovirt;
            set(&mut s.ovirt.enable, &o.enable);
            if o.channels.is_some() {
                s.ovirt.channels.clone_from(&o.channels);
            }
            set(&mut s.ovirt.heartbeat, &o.heartbeat);
            set(&mut s.ovirt.user, &o.user);
            set(&mut s.ovirt.cpus, &o.cpus);
            set(&mut s.ovirt.inventory, &o.inventory);
            set(&mut s.ovirt.disks, &o.disks);
            if o.applications.is_some() {
                s.ovirt.applications.clone_from(&o.applications);
                s.ovirt.all_applications = false;
            }
            set(&mut s.ovirt.all_applications, &o.all_applications);
            set(&mut s.ovirt.free_ram_available, &o.free_ram_available);
            set(&mut s.ovirt.hooks_dir, &o.hooks_dir);
            set(&mut s.ovirt.hooks_deadline, &o.hooks_deadline);

            set(&mut s.ovmd.enable, &l.ovmd.enable);
            if l.ovmd.channel.is_some() {
                s.ovmd.channel.clone_from(&l.ovmd.channel);
            }
            set(&mut s.ovmd.store, &l.ovmd.store);
            set(&mut s.ovmd.socket, &l.ovmd.socket);
        }
        if let (Some(b), Some(a)) = (&block_from, &allow_from) {
            let file = if b == a {
                b.clone()
            } else {
                format!("{b} and {a}")
            };
            return Err(Diagnostic::file(
                Path::new(&file),
                "QGA block-rpcs and allow-rpcs cannot both be given (qemu-ga refuses this too)",
            ));
        }
        Ok(s)
    }
}

/// Where the configuration files are.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// guestd.toml named explicitly (`--config`, `$GUESTD_CONFIG`): it must exist.
    pub config: Option<PathBuf>,
    /// qemu-ga.conf named explicitly (`--qemu-ga-config`): it must exist.
    pub qga_config: Option<PathBuf>,
}

impl Sources {
    /// guestd.toml to read, and whether it must exist.
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => match std::env::var_os("GUESTD_CONFIG").filter(|v| !v.is_empty()) {
                Some(p) => (PathBuf::from(p), true),
                None => (PathBuf::from(DEFAULT_PATH), false),
            },
        }
    }
}

/// Settings and what was read to make them.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective settings.
    pub settings: Settings,
    /// Warnings (nothing fatal).
    pub warnings: Vec<Diagnostic>,
    /// The files that were read.
    pub files: Vec<PathBuf>,
}

fn read_optional(path: &Path, must_exist: bool) -> Result<Option<String>, Diagnostic> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Diagnostic::file(path, "not valid UTF-8")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(None),
        Err(e) => Err(Diagnostic::file(path, format!("cannot read: {e}"))),
    }
}

/// Values from the environment, between the files and the command line: the `ovmd` command's
/// `$GUESTD_OVMD_STORE` and `$GUESTD_OVMD_SOCKET`, so the daemon and the command agree.
fn env_layer() -> Layer {
    let path = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    Layer {
        source: "the environment".into(),
        ovmd: OvmdLayer {
            store: path("GUESTD_OVMD_STORE"),
            socket: path("GUESTD_OVMD_SOCKET"),
            ..OvmdLayer::default()
        },
        ..Layer::default()
    }
}

/// Read both files and merge them with the command line's `cli` layer.
pub fn load(sources: &Sources, cli: &Layer) -> Result<Loaded, ConfigError> {
    let mut diags = Vec::new();
    let mut files = Vec::new();
    let (path, must) = sources.config_path();
    let mut own = Layer::default();
    let mut qga_named: Option<Option<PathBuf>> = None;
    match read_optional(&path, must) {
        Ok(Some(text)) => {
            files.push(path.clone());
            let parsed = toml_file::parse(&path, &text);
            diags.extend(parsed.diagnostics);
            own = parsed.layer;
            qga_named = parsed.qemu_ga_config;
        }
        Ok(None) => {}
        Err(d) => diags.push(d),
    }
    // qemu-ga.conf: the command line, else guestd.toml's `qemu-ga-config`, else $QGA_CONF (as
    // qemu-ga), else the default path, which may be missing.
    let qga_path: Option<(PathBuf, bool)> = match (&sources.qga_config, qga_named) {
        (Some(p), _) => Some((p.clone(), true)),
        (None, Some(named)) => named.map(|p| (p, true)),
        (None, None) => match std::env::var_os("QGA_CONF").filter(|v| !v.is_empty()) {
            Some(p) => Some((PathBuf::from(p), true)),
            None => Some((PathBuf::from(QGA_DEFAULT_PATH), false)),
        },
    };
    let mut qga = Layer::default();
    if let Some((p, must)) = qga_path {
        match read_optional(&p, must) {
            Ok(Some(text)) => {
                files.push(p.clone());
                let parsed = keyfile::parse(&p, &text);
                diags.extend(parsed.diagnostics);
                qga = parsed.layer;
            }
            Ok(None) => {}
            Err(d) => diags.push(d),
        }
    }
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(ConfigError(diags));
    }
    match Settings::resolve(&[&qga, &own, &env_layer(), cli]) {
        Ok(settings) => Ok(Loaded {
            settings,
            warnings: diags,
            files,
        }),
        Err(d) => {
            diags.push(d);
            Err(ConfigError(diags))
        }
    }
}

/// A QGA channel from qemu-ga's `method` and `path` (its `-m` and `-p`).
pub fn qga_method_channel(method: Option<&str>, path: Option<&str>) -> Result<ChannelSpec, String> {
    let path = path.filter(|p| !p.is_empty());
    let method = method.unwrap_or("virtio-serial");
    Ok(match method {
        // qemu-ga opens the one path it is given; in a virtio channel `,` separates alternative
        // ports, so such a path would mean other ports than qemu-ga's.
        "virtio-serial" if path.is_some_and(|p| p.contains(',')) => {
            return Err(format!(
                "virtio-serial path '{}' contains ',', which guestd cannot open (',' separates port names)",
                path.unwrap_or_default()
            ));
        }
        "virtio-serial" => match path {
            None => ChannelSpec::Virtio(QGA_PORT.into()),
            // The udev link names the port: find it by name so images without udev work too.
            Some(p) => match p.strip_prefix("/dev/virtio-ports/") {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    ChannelSpec::Virtio(name.into())
                }
                _ => ChannelSpec::Virtio(p.into()),
            },
        },
        "isa-serial" => ChannelSpec::Serial(path.unwrap_or("/dev/ttyS0").into()),
        "unix-listen" => match path {
            Some(p) => ChannelSpec::UnixListen(p.into()),
            None => return Err("method unix-listen needs a path".into()),
        },
        "vsock-listen" => match path {
            Some(p) => format!("vsock-listen:{p}")
                .parse()
                .map_err(|_| format!("invalid vsock path '{p}': expected CID:PORT"))?,
            None => return Err("method vsock-listen needs a path (CID:PORT)".into()),
        },
        other => {
            return Err(format!(
                "unknown method '{other}' (known: virtio-serial, isa-serial, unix-listen, vsock-listen)"
            ));
        }
    })
}

/// Names of a QGA command list: comma- or semicolon-separated (qemu-ga 7.2 wrote `;`, later
/// ones `,`), empty items dropped.
pub fn split_rpcs<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    items
        .into_iter()
        .flat_map(|s| s.split([',', ';']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Names in `list` that are no QGA command (qemu-ga ignores them; guestd warns).
pub fn unknown_rpcs(list: &[String]) -> Vec<String> {
    list.iter()
        .filter(|n| {
            !guestd_protocols::qga::COMMANDS
                .iter()
                .any(|c| c.name == n.as_str())
        })
        .cloned()
        .collect()
}

/// Check a log filter the way logging will use it.
pub fn check_log_level(s: &str) -> Result<(), String> {
    log_filter(s).map(|_| ())
}

/// The log filter `s` names. Only ASCII: tracing-subscriber 0.3's directive parser slices some
/// non-ASCII input inside a character and panics (found by the config_file fuzz target), and
/// targets, levels and span names are ASCII anyway.
pub fn log_filter(s: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if !s.is_ascii() {
        return Err(format!("invalid log level '{s}': not ASCII"));
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("invalid log level '{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a\nbc\n\ndéf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 6), (4, 1));
        assert_eq!(line_col(t, 9), (4, 3));
        assert_eq!(line_col(t, 999), (4, 4));
    }

    #[test]
    fn a_diagnostic_prints_on_one_line() {
        let d = Diagnostic::at(
            Path::new("/f"),
            "a\nb",
            Some(2),
            "statedir: 'x\ny\u{1b}' is bad",
        );
        assert_eq!(d.to_string(), "/f:2:1: statedir: 'x\\ny\\u{1b}' is bad");
        assert_eq!(
            d.warning().to_string(),
            "/f:2:1: warning: statedir: 'x\\ny\\u{1b}' is bad"
        );
    }

    #[test]
    fn layers_override_and_lists_accumulate() {
        let a = Layer {
            source: "a".into(),
            statedir: Some("/a".into()),
            qga: QgaLayer {
                block: Some(vec!["guest-exec".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let b = Layer {
            source: "b".into(),
            statedir: Some("/b".into()),
            hook: Some(None),
            qga: QgaLayer {
                block: Some(vec!["guest-file-open".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Settings::resolve(&[&a, &b]).unwrap();
        assert_eq!(s.statedir, PathBuf::from("/b"));
        assert_eq!(
            s.qga.block,
            Some(vec!["guest-exec".into(), "guest-file-open".into()])
        );
        assert_eq!(s.freeze.hook, None);
        let c = Layer {
            source: "c".into(),
            qga: QgaLayer {
                allow: Some(vec!["guest-ping".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Settings::resolve(&[&a, &c]).unwrap_err();
        assert!(e.to_string().contains("a and c"), "{e}");
    }

    #[test]
    fn qemu_ga_methods() {
        assert_eq!(
            qga_method_channel(None, None),
            Ok(ChannelSpec::Virtio(QGA_PORT.into()))
        );
        assert_eq!(
            qga_method_channel(Some("virtio-serial"), Some("/dev/virtio-ports/x.y")),
            Ok(ChannelSpec::Virtio("x.y".into()))
        );
        assert_eq!(
            qga_method_channel(Some("virtio-serial"), Some("/dev/vport0p1")),
            Ok(ChannelSpec::Virtio("/dev/vport0p1".into()))
        );
        assert_eq!(
            qga_method_channel(Some("isa-serial"), None),
            Ok(ChannelSpec::Serial("/dev/ttyS0".into()))
        );
        assert_eq!(
            qga_method_channel(Some("vsock-listen"), Some("3:1234")),
            Ok(ChannelSpec::VsockListen(1234))
        );
        assert!(qga_method_channel(Some("unix-listen"), None).is_err());
        assert!(qga_method_channel(None, Some("/dev/virtio-ports/a,b")).is_err());
        assert!(qga_method_channel(Some("virtio-serial"), Some(",")).is_err());
        assert!(qga_method_channel(Some("bogus"), None).is_err());
    }

    #[test]
    fn log_levels() {
        assert!(check_log_level("info,guestd=debug").is_ok());
        assert!(check_log_level("info,[{=bad").is_err());
        // tracing-subscriber 0.3.23 panics on this one.
        assert!(check_log_level("  8\u{c3}\u{83}\u{83}=t\u{ad}fo,ga11ck").is_err());
    }

    #[test]
    fn rpc_lists() {
        assert_eq!(split_rpcs(["a,b;c", " d ", ""]), vec!["a", "b", "c", "d"]);
        assert_eq!(
            unknown_rpcs(&["guest-ping".into(), "nope".into()]),
            vec!["nope".to_owned()]
        );
    }
}
