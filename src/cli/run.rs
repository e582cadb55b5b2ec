//! `guestd run`: serve every protocol on every channel found (or the channels named with
//! `--channel`) until SIGTERM; SIGHUP reloads the configuration. The daemon itself is
//! [`crate::daemon`]; this module turns the command line into a configuration layer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use guestd_core::Paths;
use guestd_protocols::qga::COMMANDS;
use guestd_transports::spec::ChannelSpec;

use crate::config::{self, Layer, Sources};

/// The QGA channel a bare `--channel qga` names: the virtio-serial port QEMU and libvirt create.
pub const DEFAULT_QGA_CHANNEL: &str = "virtio:org.qemu.guest_agent.0";
/// qemu-ga's default fsfreeze hook, used by a bare `--fsfreeze-hook`.
pub const DEFAULT_FSFREEZE_HOOK: &str = config::DEFAULT_FSFREEZE_HOOK;

/// Exit code of a configuration that cannot be used (LSB "program is not configured"); the
/// systemd unit does not restart on it.
pub const EXIT_CONFIG: u8 = 6;

/// Arguments of `guestd run`. Options given here override the configuration files.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve only the channels named here, instead of every channel found. PROTOCOL is `qga`,
    /// `ovirt` or `ovmd`; SPEC is `virtio:NAME`, `serial:PATH`, `unix-listen:PATH`,
    /// `unix-connect:PATH` or `vsock-listen:PORT` (`ovmd`: `xenstore` or `xenstore:PATH`). A
    /// bare PROTOCOL means its usual channel: `qga=virtio:org.qemu.guest_agent.0`,
    /// `ovirt=virtio:ovirt-guest-agent.0,com.redhat.rhevm.vdsm`, `ovmd=xenstore`. Repeatable.
    #[arg(long = "channel", value_name = "PROTOCOL[=SPEC]")]
    pub channels: Vec<String>,

    /// Configuration file [default: /etc/guestd/guestd.toml, or $GUESTD_CONFIG; a missing
    /// default file is fine].
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// qemu-ga's configuration file, read too [default: /etc/qemu/qemu-ga.conf, or $QGA_CONF].
    #[arg(long = "qemu-ga-config", value_name = "FILE")]
    pub qemu_ga_config: Option<PathBuf>,

    /// QGA commands to disable, comma-separated (qemu-ga's `--block-rpcs`; `help` lists
    /// the commands). Disabled commands answer "Command X has been disabled".
    #[arg(
        long = "block-rpcs",
        value_name = "LIST",
        value_delimiter = ',',
        alias = "blacklist"
    )]
    pub block_rpcs: Option<Vec<String>>,

    /// Enable only these QGA commands, comma-separated (qemu-ga's `--allow-rpcs`); the others
    /// answer "Command X has been disabled: the command is not allowed".
    #[arg(long = "allow-rpcs", value_name = "LIST", value_delimiter = ',')]
    pub allow_rpcs: Option<Vec<String>>,

    /// Run an fsfreeze hook around freeze and thaw: PATH, or /etc/qemu/fsfreeze-hook when
    /// given without a value (write `--fsfreeze-hook=PATH`). No hook without this option.
    #[arg(
        long = "fsfreeze-hook",
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_FSFREEZE_HOOK
    )]
    pub fsfreeze_hook: Option<PathBuf>,

    /// Thaw by itself this many seconds after a freeze when no thaw comes (0: never)
    /// [default: 600].
    #[arg(long = "fsfreeze-watchdog", value_name = "SECS")]
    pub fsfreeze_watchdog: Option<u64>,

    /// Directory for state that must survive a restart (file-handle counter, frozen state).
    /// It must not be on a filesystem that may be frozen [default: /run/guestd].
    #[arg(long = "statedir", value_name = "DIR")]
    pub statedir: Option<PathBuf>,

    /// Largest QGA request in bytes; a larger one is answered with an error and skipped
    /// [default: 67108864].
    #[arg(long = "qga-max-request", value_name = "BYTES")]
    pub qga_max_request: Option<usize>,

    #[command(flatten)]
    pub ovirt: super::ovirt::OvirtArgs,
}

/// One `--channel` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    Qga(ChannelSpec),
    Ovirt(ChannelSpec),
    /// Oracle VM messaging: `xenstore` or `xenstore:PATH`.
    Ovmd(String),
}

fn parse_channel(s: &str) -> anyhow::Result<Channel> {
    let (proto, spec) = match s.split_once('=') {
        Some((p, spec)) => (p, Some(spec)),
        None => (s, None),
    };
    let stream = |default: String| -> anyhow::Result<ChannelSpec> {
        spec.map(str::to_owned)
            .unwrap_or(default)
            .parse()
            .with_context(|| format!("Invalid --channel '{s}'"))
    };
    match proto {
        "qga" => Ok(Channel::Qga(stream(DEFAULT_QGA_CHANNEL.into())?)),
        "ovirt" => Ok(Channel::Ovirt(stream(
            super::ovirt::default_spec().to_string(),
        )?)),
        "ovmd" => {
            let spec = spec.unwrap_or("xenstore");
            super::ovmd::DaemonConfig::from_channel(spec, &Paths::system())
                .with_context(|| format!("Invalid --channel '{s}'"))?;
            Ok(Channel::Ovmd(spec.to_owned()))
        }
        other => bail!("Unknown protocol '{other}' in --channel '{s}' (known: qga, ovirt, ovmd)"),
    }
}

fn wants_help(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|l| l.iter().any(|n| n == "help"))
}

impl Args {
    /// Where the configuration files are.
    pub fn sources(&self) -> Sources {
        Sources {
            config: self.config.clone(),
            qga_config: self.qemu_ga_config.clone(),
        }
    }

    /// The command line as a configuration layer. With `--channel`, exactly the channels named
    /// are served: every protocol not named is off.
    pub fn layer(&self) -> anyhow::Result<Layer> {
        let mut l = Layer {
            source: "the command line".into(),
            statedir: self.statedir.clone(),
            hook: self.fsfreeze_hook.clone().map(Some),
            watchdog: self
                .fsfreeze_watchdog
                .map(|s| (s > 0).then(|| Duration::from_secs(s))),
            ..Layer::default()
        };
        l.qga.block = self.block_rpcs.clone();
        l.qga.allow = self.allow_rpcs.clone();
        l.qga.max_request = self.qga_max_request;
        l.ovirt = self.ovirt.layer();
        if self.channels.is_empty() {
            return Ok(l);
        }
        let (mut qga, mut ovirt, mut ovmd) = (Vec::new(), Vec::new(), None);
        for c in &self.channels {
            match parse_channel(c)? {
                Channel::Qga(s) => qga.push(s),
                Channel::Ovirt(s) => ovirt.push(s),
                Channel::Ovmd(s) => {
                    if ovmd.replace(s).is_some() {
                        bail!(
                            "Oracle VM messaging runs on one xenstore channel: give --channel ovmd once"
                        );
                    }
                }
            }
        }
        l.qga.enable = Some(!qga.is_empty());
        l.qga.channels = (!qga.is_empty()).then_some(qga);
        l.ovirt.enable = Some(!ovirt.is_empty());
        l.ovirt.channels = (!ovirt.is_empty()).then_some(ovirt);
        l.ovmd.enable = Some(ovmd.is_some());
        l.ovmd.channel = ovmd;
        Ok(l)
    }
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if wants_help(&args.block_rpcs) || wants_help(&args.allow_rpcs) {
        for c in COMMANDS {
            println!("{}", c.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cli = args.layer()?;
    let sources = args.sources();
    let loaded = match config::load(&sources, &cli) {
        Ok(l) => l,
        Err(e) => {
            for d in &e.0 {
                eprintln!("guestd: {d}");
            }
            eprintln!("guestd: the configuration is not valid; not starting");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    crate::logging::apply_config_level(loaded.settings.log_level.as_deref());
    crate::memory::tune_allocator();
    crate::daemon::run(
        loaded,
        crate::daemon::Inputs {
            sources,
            cli,
            paths: Paths::system(),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_arguments() {
        assert_eq!(
            parse_channel("qga").unwrap(),
            Channel::Qga(ChannelSpec::Virtio("org.qemu.guest_agent.0".into()))
        );
        assert_eq!(
            parse_channel("qga=unix-listen:/tmp/q.sock").unwrap(),
            Channel::Qga(ChannelSpec::UnixListen("/tmp/q.sock".into()))
        );
        assert_eq!(
            parse_channel("ovirt").unwrap(),
            Channel::Ovirt(ChannelSpec::Virtio(
                "ovirt-guest-agent.0,com.redhat.rhevm.vdsm".into()
            ))
        );
        assert!(parse_channel("nope=virtio:x").is_err());
        assert_eq!(
            parse_channel("ovmd").unwrap(),
            Channel::Ovmd("xenstore".into())
        );
        assert_eq!(
            parse_channel("ovmd=xenstore:/run/xs.sock").unwrap(),
            Channel::Ovmd("xenstore:/run/xs.sock".into())
        );
        assert!(parse_channel("ovmd=virtio:x").is_err());
        assert!(parse_channel("qga=bogus:x").is_err());
    }

    fn args(channels: &[&str]) -> Args {
        Args {
            channels: channels.iter().map(|s| s.to_string()).collect(),
            config: None,
            qemu_ga_config: None,
            block_rpcs: None,
            allow_rpcs: None,
            fsfreeze_hook: None,
            fsfreeze_watchdog: Some(0),
            statedir: None,
            qga_max_request: None,
            ovirt: Default::default(),
        }
    }

    #[test]
    fn channels_on_the_command_line_turn_the_others_off() {
        let l = args(&["qga=unix-listen:/tmp/q"]).layer().unwrap();
        assert_eq!(l.qga.enable, Some(true));
        assert_eq!(l.ovirt.enable, Some(false));
        assert_eq!(l.ovmd.enable, Some(false));
        assert_eq!(l.watchdog, Some(None));
        let l = args(&[]).layer().unwrap();
        assert_eq!(l.qga.enable, None);
        assert!(args(&["ovmd", "ovmd=xenstore:/x"]).layer().is_err());
    }
}
