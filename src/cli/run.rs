//! `guestd run`: serve protocols on their channels until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use guestd_core::action::{Action, FreezeStatus, Outcome};
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_core::contract::{Facts, StreamProtocol};
use guestd_core::exec::ExecTable;
use guestd_core::files::FileHandles;
use guestd_core::runtime::{StreamOptions, serve_stream};
use guestd_core::{Agent, EventBus, Paths};
use guestd_protocols::qga::{COMMANDS, CommandFilter, QgaConfig, QgaProtocol};
use guestd_transports::spec::{ChannelSpec, TransportOptions};
use tokio::sync::watch;
use tracing::{info, warn};

/// The QGA channel when none is named: the virtio-serial port QEMU and libvirt create.
pub const DEFAULT_QGA_CHANNEL: &str = "virtio:org.qemu.guest_agent.0";
/// qemu-ga's default fsfreeze hook, used by a bare `--fsfreeze-hook`.
pub const DEFAULT_FSFREEZE_HOOK: &str = "/etc/qemu/fsfreeze-hook";

/// Arguments of `guestd run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve PROTOCOL on a channel: `qga=virtio:NAME`, `qga=serial:PATH`,
    /// `qga=unix-listen:PATH`, `qga=unix-connect:PATH`, `qga=vsock-listen:PORT`. A bare `qga`
    /// means `qga=virtio:org.qemu.guest_agent.0`, which is also the default when no channel
    /// is given. `ovmd` (or `ovmd=xenstore:PATH`) serves Oracle VM messaging on xenstore, with
    /// the `ovmd` command's control socket and store. Repeatable.
    #[arg(long = "channel", value_name = "PROTOCOL[=SPEC]")]
    pub channels: Vec<String>,

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

    /// Thaw by itself this many seconds after a freeze when no thaw comes (0: never).
    #[arg(long = "fsfreeze-watchdog", value_name = "SECS", default_value_t = 600)]
    pub fsfreeze_watchdog: u64,

    /// Directory for state that must survive a restart (file-handle counter, frozen state).
    /// It must not be on a filesystem that may be frozen.
    #[arg(long = "statedir", value_name = "DIR", default_value = "/run/guestd")]
    pub statedir: PathBuf,

    /// Largest QGA request in bytes; a larger one is answered with an error and skipped.
    #[arg(long = "qga-max-request", value_name = "BYTES", default_value_t = 64 << 20)]
    pub qga_max_request: usize,

    #[command(flatten)]
    pub ovirt: super::ovirt::OvirtArgs,
}

/// One `--channel` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    Qga(ChannelSpec),
    /// Oracle VM messaging: `xenstore` or `xenstore:PATH`.
    Ovmd(String),
    /// A bare `ovirt` means the oVirt port, else the legacy one.
    Ovirt(ChannelSpec),
}

fn parse_channel(s: &str) -> anyhow::Result<Channel> {
    let (proto, spec) = match s.split_once('=') {
        Some((p, spec)) => (p, Some(spec)),
        None => (s, None),
    };
    match proto {
        "qga" => {
            let spec = spec.unwrap_or(DEFAULT_QGA_CHANNEL);
            Ok(Channel::Qga(
                spec.parse()
                    .with_context(|| format!("Invalid --channel '{s}'"))?,
            ))
        }
        "ovmd" => {
            let spec = spec.unwrap_or("xenstore");
            super::ovmd::DaemonConfig::from_channel(spec, &Paths::system())
                .with_context(|| format!("Invalid --channel '{s}'"))?;
            Ok(Channel::Ovmd(spec.to_owned()))
        }
        "ovirt" => Ok(Channel::Ovirt(match spec {
            Some(spec) => spec
                .parse()
                .with_context(|| format!("Invalid --channel '{s}'"))?,
            None => super::ovirt::default_spec(),
        })),
        other => bail!("Unknown protocol '{other}' in --channel '{s}' (known: qga, ovirt, ovmd)"),
    }
}

fn wants_help(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|l| l.iter().any(|n| n == "help"))
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if wants_help(&args.block_rpcs) || wants_help(&args.allow_rpcs) {
        for c in COMMANDS {
            println!("{}", c.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let filter = CommandFilter::from_lists(args.block_rpcs.clone(), args.allow_rpcs.clone())?;
    let mut channels = args
        .channels
        .iter()
        .map(|c| parse_channel(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if channels.is_empty() {
        channels.push(parse_channel("qga")?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(serve(args, filter, channels))?;
    Ok(ExitCode::SUCCESS)
}

fn prepare_statedir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("Cannot create state directory {}", dir.display()))
}

async fn serve(args: Args, filter: CommandFilter, channels: Vec<Channel>) -> anyhow::Result<()> {
    prepare_statedir(&args.statedir)?;
    let paths = Paths::system();
    let events = EventBus::default();
    let actions_cfg = ActionsConfig {
        paths: paths.clone(),
        state_dir: args.statedir.clone(),
        fsfreeze_hook: args.fsfreeze_hook.clone(),
        freeze_watchdog: (args.fsfreeze_watchdog > 0)
            .then(|| Duration::from_secs(args.fsfreeze_watchdog)),
        lifecycle_hooks: args.ovirt.hooks_dir.clone(),
        lifecycle_deadline: args.ovirt.hooks_deadline,
        ..ActionsConfig::default()
    };
    let dispatcher = default_dispatcher(&actions_cfg, &events);
    let facts: Arc<dyn Facts> = Arc::new(guestd_reporters::SystemFacts::new(paths.clone()));
    let agent = Agent {
        paths,
        facts,
        actions: Arc::new(dispatcher),
        events,
    };

    let qga: Arc<dyn StreamProtocol> = Arc::new(QgaProtocol::new(
        QgaConfig {
            filter,
            max_request: args.qga_max_request,
            ..QgaConfig::default()
        },
        Arc::new(FileHandles::new(&args.statedir)),
        Arc::new(ExecTable::new()),
    ));

    let ovirt = args.ovirt.protocol();
    // oVirt reports logons, logoffs, locks and the active user from logind's signals.
    let _session_watcher = channels
        .iter()
        .any(|c| matches!(c, Channel::Ovirt(_)))
        .then(|| guestd_core::actions::session_events::spawn_session_watcher(agent.events.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let topts = TransportOptions::default();
    for ch in &channels {
        let (spec, protocol) = match ch {
            Channel::Qga(spec) => (spec, &qga),
            Channel::Ovirt(spec) => (spec, &ovirt),
            Channel::Ovmd(spec) => {
                let cfg = super::ovmd::DaemonConfig::from_channel(spec, &agent.paths)?;
                let (agent, stop) = (agent.clone(), stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = super::ovmd::serve(cfg, agent, stop).await {
                        warn!(error = format!("{e:#}"), "Oracle VM messaging stopped");
                    }
                }));
                continue;
            }
        };
        let transport = guestd_transports::spec::build(spec, &topts)
            .with_context(|| format!("Cannot serve {} on {spec}", protocol.name()))?;
        tasks.push(tokio::spawn(serve_stream(
            transport,
            Arc::clone(protocol),
            agent.clone(),
            stop_rx.clone(),
            StreamOptions::default(),
        )));
    }
    info!(channels = channels.len(), "guestd running");

    wait_for_signal().await?;
    info!("stopping");
    thaw_if_frozen(&agent).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            warn!("a channel did not stop in time");
        }
    }
    Ok(())
}

/// Leaving filesystems frozen behind an exiting agent would leave them frozen for good.
async fn thaw_if_frozen(agent: &Agent) {
    if let Ok(Outcome::FreezeStatus(FreezeStatus::Frozen)) =
        agent.actions.dispatch(Action::FsFreezeStatus).await
    {
        match agent.actions.dispatch(Action::FsThaw).await {
            Ok(o) => info!(outcome = ?o, "thawed filesystems before exit"),
            Err(e) => warn!(error = %e, "cannot thaw filesystems before exit"),
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("Cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("Cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
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
        assert_eq!(
            parse_channel("ovirt=unix-listen:/tmp/o.sock").unwrap(),
            Channel::Ovirt(ChannelSpec::UnixListen("/tmp/o.sock".into()))
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
}
