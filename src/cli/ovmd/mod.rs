//! `guestd ovmd ...` and the `ovmd` symlink: Oracle's ovmd, drop-in. With an action option
//! (`-p -g -r -x -l -e -s`) it asks the running daemon over its root-only control socket, or
//! works on the parameter store directly when no daemon runs; without one it is the daemon
//! (`-d -f -t`), serving Oracle VM messaging on xenstore.

pub mod args;
pub mod control;
mod syslog;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_core::params::{ParamStore, StoreError};
use guestd_core::runtime::{StreamOptions, serve_kv};
use guestd_core::{Agent, EventBus, Paths};
use guestd_protocols::ovmd::{Ovmd, OvmdConfig, outbound};
use guestd_transports::xenstore::{Endpoint, XenstoreTransport, detect};
use tokio::sync::watch;
use tracing::{info, warn};

use args::{Op, Opts};
use control::{Ctx, Mode, Request};

/// The daemon's control socket unless `--control-socket` or `$GUESTD_OVMD_SOCKET` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = crate::config::DEFAULT_OVMD_SOCKET;

/// Arguments of `guestd ovmd`, parsed by ovmd's own grammar (they are passed through raw).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ovmd options (see `guestd ovmd --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "OPTIONS"
    )]
    pub rest: Vec<OsString>,
}

/// `guestd ovmd ...`; `log_level` is guestd's global `--log-level`.
pub fn run(args: Args, log_level: Option<&str>) -> anyhow::Result<ExitCode> {
    Ok(main_with("guestd ovmd", &args.rest, log_level))
}

/// The binary was started as `ovmd`.
pub fn main_as_ovmd() -> anyhow::Result<ExitCode> {
    let rest: Vec<OsString> = std::env::args_os().skip(1).collect();
    Ok(main_with("ovmd", &rest, None))
}

fn main_with(prog: &str, rest: &[OsString], log_level: Option<&str>) -> ExitCode {
    let opts = match args::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{prog}: {e}\nTry '{prog} --help' for more information.");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{}", args::usage(prog));
        return ExitCode::SUCCESS;
    }
    if opts.version {
        println!("ovmd (guestd) {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let daemon = opts.ops.is_empty();
    init_logging(opts.debug, daemon, log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{prog}: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = if daemon {
        rt.block_on(run_daemon(&opts))
    } else {
        rt.block_on(run_ops(&opts))
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{prog}: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn store_dir(opts: &Opts) -> PathBuf {
    opts.store
        .clone()
        .or_else(|| env_path("GUESTD_OVMD_STORE"))
        .unwrap_or_else(|| PathBuf::from(ParamStore::DEFAULT_DIR))
}

fn socket_path(opts: &Opts) -> PathBuf {
    opts.socket
        .clone()
        .or_else(|| env_path("GUESTD_OVMD_SOCKET"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn root_paths(opts: &Opts) -> Paths {
    match &opts.root {
        Some(r) => Paths::under(r),
        None => Paths::system(),
    }
}

fn transport(opts: &Opts, paths: &Paths) -> XenstoreTransport {
    match &opts.xenstore {
        Some(p) => XenstoreTransport::at(Endpoint::from_path(p.clone())),
        None => XenstoreTransport::discover(paths.clone()),
    }
}

/// The services the daemon (and the CLI's direct mode) act through.
pub fn build_agent(paths: Paths) -> Agent {
    let events = EventBus::default();
    let actions = default_dispatcher(
        &ActionsConfig {
            paths: paths.clone(),
            ..ActionsConfig::default()
        },
        &events,
    );
    Agent {
        facts: Arc::new(guestd_reporters::SystemFacts::new(paths.clone())),
        paths,
        actions: Arc::new(actions),
        events,
    }
}

/// Logs: `-d 0` none, `-d 1` stderr, `-d 2` syslog (the daemon's default). The CLI's own
/// messages always go to stderr; its logs only show warnings unless `-d` asks for more.
fn init_logging(debug: Option<u8>, daemon: bool, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let target = debug.unwrap_or(if daemon { 2 } else { 1 });
    let chosen = level
        .map(str::to_owned)
        .or_else(|| std::env::var("GUESTD_LOG").ok());
    let default = if daemon || debug.is_some() {
        "info"
    } else {
        "warn"
    };
    let filter = chosen.unwrap_or_else(|| default.to_owned());
    let filter = crate::config::log_filter(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match target {
        0 => return,
        1 => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
        _ => builder
            .with_writer(syslog::Syslog::new("ovmd"))
            .with_ansi(false)
            .without_time()
            .try_init(),
    };
}

fn to_request(op: &Op) -> Result<Request, String> {
    Ok(match op {
        Op::Set(arg) => {
            let (key, value) = outbound::split_pair(arg)
                .ok_or_else(|| format!("invalid parameter '{arg}': expected KEY=VALUE"))?;
            Request::Set {
                key: key.to_owned(),
                value: value.to_owned(),
            }
        }
        Op::Get(k) => Request::Get { key: k.clone() },
        Op::Delete(k) => Request::Delete { key: k.clone() },
        Op::DeleteAll => Request::DeleteAll,
        Op::List => Request::List,
        Op::Event(name) => Request::Event { name: name.clone() },
        Op::Script(name) => Request::Script { name: name.clone() },
        Op::EnableInitialConfig => Request::EnableInitialConfig,
    })
}

async fn run_ops(opts: &Opts) -> anyhow::Result<ExitCode> {
    let socket = socket_path(opts);
    if opts.local
        && opts.ops.iter().any(|o| matches!(o, Op::Set(_)))
        && std::os::unix::net::UnixStream::connect(&socket).is_ok()
    {
        // Two senders would number messages over each other.
        anyhow::bail!(
            "a daemon is running ({}): send through it (without --local)",
            socket.display()
        );
    }
    let mut direct: Option<Ctx> = None;
    let mut code = 0u8;
    for op in &opts.ops {
        let req = match to_request(op) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ovmd: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let answered = if opts.local {
            None
        } else {
            control::call(&socket, &req)
                .await
                .map_err(anyhow::Error::msg)?
        };
        let resp = match answered {
            Some(r) => r,
            None => {
                if direct.is_none() {
                    let paths = root_paths(opts);
                    let store = open_store(store_dir(opts))?;
                    let cfg = OvmdConfig {
                        chunk_size: opts.chunk_size.unwrap_or(OvmdConfig::default().chunk_size),
                    };
                    direct = Some(Ctx {
                        ovmd: Arc::new(Ovmd::new(store, cfg)),
                        mode: Mode::Direct {
                            xenstore: transport(opts, &paths),
                        },
                        agent: build_agent(paths),
                    });
                }
                match &direct {
                    Some(ctx) => control::execute(ctx, req).await,
                    None => anyhow::bail!("internal error: no direct context"),
                }
            }
        };
        print!("{}", resp.stdout);
        if let Some(m) = &resp.message {
            eprintln!("ovmd: {m}");
        }
        if resp.exit != 0 {
            code = resp.exit;
            break;
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(ExitCode::from(code))
}

/// The store, with an unreadable file moved aside (logged) rather than stopping everything.
fn open_store(dir: PathBuf) -> anyhow::Result<ParamStore> {
    let store = ParamStore::new(dir);
    if let Err(StoreError::Corrupt { reason, .. }) = store.load() {
        let aside = store.quarantine()?;
        warn!(reason = %reason, kept = %aside.display(), "parameter store unreadable; starting empty");
    }
    Ok(store)
}

/// Settings of one ovmd daemon.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The xenstore endpoint.
    pub xenstore: XenstoreTransport,
    /// The parameter store's directory.
    pub store: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Outbound chunk size.
    pub chunk_size: usize,
    /// Longest `-p` waits for its commit before answering "queued".
    pub send_wait: Duration,
}

impl DaemonConfig {
    /// From a `--channel ovmd=xenstore[:PATH]` spec (the part after `ovmd=`), the rest from
    /// the environment or the defaults.
    pub fn from_channel(spec: &str, paths: &Paths) -> anyhow::Result<Self> {
        let rest = spec
            .strip_prefix("xenstore")
            .ok_or_else(|| anyhow::anyhow!("ovmd runs on xenstore: expected ovmd=xenstore or ovmd=xenstore:PATH, got ovmd={spec}"))?;
        let xenstore =
            XenstoreTransport::from_spec(rest, paths.clone()).map_err(anyhow::Error::msg)?;
        Ok(Self {
            xenstore,
            store: env_path("GUESTD_OVMD_STORE")
                .unwrap_or_else(|| PathBuf::from(ParamStore::DEFAULT_DIR)),
            socket: env_path("GUESTD_OVMD_SOCKET").unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            chunk_size: OvmdConfig::default().chunk_size,
            send_wait: Duration::from_secs(10),
        })
    }
}

/// Serve Oracle VM messaging until `shutdown`: the protocol on xenstore (reconnecting as
/// needed) and the control socket for `ovmd` commands. This is what both `ovmd` (daemon
/// mode) and `guestd run --channel ovmd=xenstore[:PATH]` run.
pub async fn serve(
    cfg: DaemonConfig,
    agent: Agent,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let signals = detect::detect(&agent.paths);
    if signals.ovmapi {
        // Two consumers and two counters would corrupt the channel (ovmd.md §6 q11).
        warn!(
            "UEK's ovmapi driver is loaded (/dev/ovmapi): it owns the Oracle VM channel, so guestd's ovmd protocol stays off"
        );
        while shutdown.changed().await.is_ok() && !*shutdown.borrow() {}
        return Ok(());
    }
    let store = open_store(cfg.store.clone())?;
    let ovmd = Arc::new(Ovmd::new(
        store,
        OvmdConfig {
            chunk_size: cfg.chunk_size,
        },
    ));
    let listener = control::bind(&cfg.socket)
        .with_context(|| format!("cannot listen on {}", cfg.socket.display()))?;
    let ctx = Arc::new(Ctx {
        ovmd: Arc::clone(&ovmd),
        agent: agent.clone(),
        mode: Mode::Daemon {
            wait: cfg.send_wait,
        },
    });
    info!(
        socket = %cfg.socket.display(),
        store = %cfg.store.display(),
        xenstore = %guestd_core::contract::KeyValueTransport::describe(&cfg.xenstore),
        "ovmd daemon ready"
    );
    let server = tokio::spawn(control::serve(
        listener,
        cfg.socket.clone(),
        ctx,
        shutdown.clone(),
    ));
    serve_kv(
        Arc::new(cfg.xenstore),
        ovmd,
        agent,
        shutdown,
        StreamOptions::default(),
    )
    .await;
    let _ = server.await;
    Ok(())
}

async fn run_daemon(opts: &Opts) -> anyhow::Result<ExitCode> {
    let paths = root_paths(opts);
    let cfg = DaemonConfig {
        xenstore: transport(opts, &paths),
        store: store_dir(opts),
        socket: socket_path(opts),
        chunk_size: opts.chunk_size.unwrap_or(OvmdConfig::default().chunk_size),
        send_wait: Duration::from_secs(10),
    };
    if let Some(t) = opts.period {
        // Kept for compatibility; guestd sends nothing unsolicited (ovmd.md §6 q1).
        info!(seconds = t, "time period set");
    }
    let pid_file = opts.pid_file.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", p.display()))?;
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("stopping");
        let _ = tx.send(true);
    });
    let result = serve(cfg, build_agent(paths), rx).await;
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result.map(|()| ExitCode::SUCCESS)
}
