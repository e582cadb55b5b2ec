//! The daemon behind `guestd run`: every protocol on every channel it finds, at once, on one tokio
//! runtime.
//!
//! - [`plan`] says which protocol is wanted on which channel and whether the channel is there.
//! - The [`Supervisor`] keeps one task per present channel. It rescans when the kernel reports a
//!   device change (uevents), on a timer as a fallback, and when a task ends: a port that appears
//!   is served, one that goes is released, a task that fails is restarted with back-off. One
//!   channel's failure never touches another's task.
//! - SIGHUP reloads the configuration: a bad file is logged and the running settings stay; a good
//!   one restarts only the channels whose settings changed. SIGTERM and SIGINT thaw frozen
//!   filesystems first, then stop every channel.
//! - systemd is told `READY=1` once the channels present at start are open, and `STATUS=` lines
//!   as channels come and go.

pub mod notify;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use guestd_core::action::{Action, FreezeStatus, Outcome};
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_core::contract::{ByteTransport, Facts, StreamProtocol};
use guestd_core::exec::ExecTable;
use guestd_core::files::FileHandles;
use guestd_core::runtime::{StreamOptions, serve_stream};
use guestd_core::{Agent, EventBus, Paths};
use guestd_protocols::qga::{CommandFilter, QgaConfig, QgaProtocol};
use guestd_transports::ChannelSpec;
use guestd_transports::spec::TransportOptions;
use guestd_transports::unix::UnixListen;
use guestd_transports::virtio::VirtioPort;
use guestd_transports::xenstore::{Endpoint as XsEndpoint, XenstoreTransport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{self, Layer, Loaded, Settings, Sources};
use plan::{Endpoint, Presence, Proto, Want};

/// How long a stopping channel may take before its task is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Uevents come in bursts (a device and its ports): wait this long for the burst to end.
const UEVENT_SETTLE: Duration = Duration::from_millis(150);
/// Back-off of a channel whose task ended by itself.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// Longest rescan interval while no uevent socket works.
const NO_UEVENT_RESCAN: Duration = Duration::from_secs(5);

/// What `guestd run` hands the daemon: the loaded configuration and how to load it again.
#[derive(Debug)]
pub struct Inputs {
    /// Where the configuration files are (for reloads).
    pub sources: Sources,
    /// The command line's values, applied over the files on every (re)load.
    pub cli: Layer,
    /// The root the agent acts on.
    pub paths: Paths,
}

/// Run until SIGTERM or SIGINT.
pub fn run(loaded: Loaded, inputs: Inputs) -> anyhow::Result<()> {
    // One thread serves every channel: the work per message is small, and everything that
    // can block (facts, files, freeze, helpers) runs on threads of its own. A second worker
    // only doubled the wake-ups of every timer (work stealing wakes a sibling) and the idle
    // memory, and bought nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut sup = Supervisor::new(loaded.settings, inputs)?;
        sup.serve().await
    })
}

/// The protocol objects, shared by every channel of a protocol and rebuilt when its settings
/// change.
#[derive(Debug)]
struct Protocols {
    qga: Arc<dyn StreamProtocol>,
    ovirt: Option<Arc<dyn StreamProtocol>>,
}

/// The services and protocols built from one version of the settings.
#[derive(Debug)]
struct Built {
    agent: Agent,
    files: Arc<FileHandles>,
    exec: Arc<ExecTable>,
    protocols: Protocols,
}

fn actions_config(s: &Settings, paths: &Paths) -> ActionsConfig {
    ActionsConfig {
        paths: paths.clone(),
        state_dir: s.statedir.clone(),
        fsfreeze_hook: s.freeze.hook.clone(),
        freeze_watchdog: s.freeze.watchdog,
        hook_timeout: s.freeze.hook_timeout,
        lifecycle_hooks: s.ovirt.hooks_dir.clone(),
        lifecycle_deadline: s.ovirt.hooks_deadline,
        ..ActionsConfig::default()
    }
}

/// The settings the action layer is built from: a change needs a new dispatcher.
fn actions_differ(a: &Settings, b: &Settings) -> bool {
    a.statedir != b.statedir
        || a.freeze != b.freeze
        || a.ovirt.hooks_dir != b.ovirt.hooks_dir
        || a.ovirt.hooks_deadline != b.ovirt.hooks_deadline
}

fn prepare_statedir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("Cannot create state directory {}", dir.display()))
}

fn build_agent(s: &Settings, paths: &Paths, events: &EventBus) -> Agent {
    let dispatcher = default_dispatcher(&actions_config(s, paths), events);
    let facts: Arc<dyn Facts> = Arc::new(guestd_reporters::SystemFacts::new(paths.clone()));
    Agent {
        paths: paths.clone(),
        facts,
        actions: Arc::new(dispatcher),
        events: events.clone(),
    }
}

fn qga_protocol(
    s: &Settings,
    files: &Arc<FileHandles>,
    exec: &Arc<ExecTable>,
) -> anyhow::Result<Arc<dyn StreamProtocol>> {
    let filter = CommandFilter::from_lists(s.qga.block.clone(), s.qga.allow.clone())?;
    Ok(Arc::new(QgaProtocol::new(
        QgaConfig {
            filter,
            max_request: s.qga.max_request,
            ..QgaConfig::default()
        },
        Arc::clone(files),
        Arc::clone(exec),
    )))
}

/// The oVirt protocol.
fn ovirt_protocol(s: &Settings) -> Option<Arc<dyn StreamProtocol>> {
    Some(crate::cli::ovirt::protocol(&s.ovirt))
}

fn build(s: &Settings, paths: &Paths, events: &EventBus) -> anyhow::Result<Built> {
    prepare_statedir(&s.statedir)?;
    let files = Arc::new(FileHandles::new(&s.statedir));
    let exec = Arc::new(ExecTable::new());
    Ok(Built {
        agent: build_agent(s, paths, events),
        protocols: Protocols {
            qga: qga_protocol(s, &files, &exec)?,
            ovirt: ovirt_protocol(s),
        },
        files,
        exec,
    })
}

/// One running protocol-on-channel.
#[derive(Debug)]
struct Running {
    want: Want,
    /// What the channel was found at when started (a port's node): a change restarts it.
    at: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A channel whose task ended by itself, waiting to be restarted.
#[derive(Debug)]
struct Failed {
    failures: u32,
    retry_at: Instant,
}

/// Keeps one task per present channel.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    inputs: Inputs,
    events: EventBus,
    built: Built,
    running: BTreeMap<String, Running>,
    failed: HashMap<String, Failed>,
    /// Last reason logged for an absent channel, so it is logged once, not on every scan.
    absent: HashMap<String, String>,
    ended_tx: mpsc::UnboundedSender<String>,
    ended_rx: mpsc::UnboundedReceiver<String>,
    topts: TransportOptions,
    session_watcher: Option<JoinHandle<()>>,
}

impl Supervisor {
    fn new(settings: Settings, inputs: Inputs) -> anyhow::Result<Self> {
        let events = EventBus::default();
        let built = build(&settings, &inputs.paths, &events)?;
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let topts = TransportOptions {
            paths: inputs.paths.clone(),
            ..TransportOptions::default()
        };
        Ok(Self {
            settings,
            inputs,
            events,
            built,
            running: BTreeMap::new(),
            failed: HashMap::new(),
            absent: HashMap::new(),
            ended_tx,
            ended_rx,
            topts,
            session_watcher: None,
        })
    }

    /// Serve until SIGTERM/SIGINT, reloading on SIGHUP.
    async fn serve(&mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("Cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("Cannot watch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("Cannot watch SIGHUP")?;

        // Open the uevent socket before the first scan, so no device slips in between.
        let mut uevents = self.open_uevents();
        self.reconcile().await;
        notify::notify(&format!("READY=1\nSTATUS={}", self.status()));
        info!(
            channels = self.running.len(),
            uevents = uevents.is_some(),
            "guestd running"
        );

        // The fallback rescan is the daemon's only timer while idle: an alarm wakes the process
        // once per rescan, where tokio's timer wheel would wake it three or four times, and
        // none at all when a protocol's timer (the oVirt heartbeat) wakes it in the last
        // quarter of the interval: the rescan then runs in that wake-up, a little early.
        let mut rescan = guestd_core::alarm::Alarm::new();
        loop {
            // Without uevents the timer is the only way to notice hot-plug: scan more often.
            let every = match uevents {
                Some(_) => self.settings.discovery.rescan,
                None => self.settings.discovery.rescan.min(NO_UEVENT_RESCAN),
            };
            // Counted anew after whatever woke the loop, as a fresh sleep was before.
            rescan.set_early(Some(Instant::now() + every), every / 4);
            let retry = self.next_retry();
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.reload().await;
                    if self.settings.discovery.uevents != uevents.is_some() {
                        uevents = self.open_uevents();
                    }
                }
                seen = next_uevent(&mut uevents) => {
                    if self.on_uevent(seen, &mut uevents).await {
                        self.reconcile().await;
                    }
                }
                Some(key) = self.ended_rx.recv() => self.on_ended(key),
                _ = rescan.wait() => self.reconcile().await,
                _ = sleep_until(retry) => self.reconcile().await,
            }
        }
        notify::notify("STOPPING=1");
        info!("stopping");
        thaw_if_frozen(&self.built.agent).await;
        self.stop_all().await;
        Ok(())
    }

    fn status(&self) -> String {
        if self.running.is_empty() {
            return "no channel present; waiting for one".into();
        }
        let list: Vec<&str> = self.running.keys().map(String::as_str).collect();
        format!("serving {}", list.join(", "))
    }

    fn open_uevents(&self) -> Option<Uevents> {
        if !self.settings.discovery.uevents {
            return None;
        }
        open_uevent_monitor()
    }

    /// Handles what the uevent socket gave; true when a rescan is due.
    async fn on_uevent(&mut self, seen: UeventSeen, uevents: &mut Option<Uevents>) -> bool {
        match seen {
            UeventSeen::Relevant => {
                // Let the burst end (a port's name arrives in a `change` after its `add`).
                let settle = tokio::time::sleep(UEVENT_SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        s = next_uevent(uevents) => if let UeventSeen::Failed = s {
                            *uevents = None;
                            break;
                        },
                    }
                }
                true
            }
            UeventSeen::Other => false,
            UeventSeen::Failed => {
                warn!("uevent socket failed; hot-plug is now noticed by rescanning only");
                *uevents = None;
                true
            }
        }
    }

    fn on_ended(&mut self, key: String) {
        let Some(r) = self.running.remove(&key) else {
            return;
        };
        let f = self.failed.entry(key.clone()).or_insert(Failed {
            failures: 0,
            retry_at: Instant::now(),
        });
        f.failures += 1;
        let wait = (RESTART_MIN * 2u32.saturating_pow(f.failures - 1)).min(RESTART_MAX);
        f.retry_at = Instant::now() + wait;
        error!(
            channel = %key,
            at = %r.at,
            retry_in = ?wait,
            "channel task ended unexpectedly; restarting it"
        );
    }

    fn next_retry(&self) -> Option<Instant> {
        self.failed.values().map(|f| f.retry_at).min()
    }

    /// Bring the running tasks in line with what is wanted and present.
    async fn reconcile(&mut self) {
        let wanted = plan::wanted(&self.settings);
        let keys: Vec<String> = wanted.iter().map(Want::key).collect();
        // Channels no longer wanted.
        let stale: Vec<String> = self
            .running
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for k in stale {
            self.stop(&k, "no longer configured").await;
        }
        self.failed.retain(|k, _| keys.contains(k));
        let mut changed = false;
        for want in wanted {
            let key = want.key();
            let presence = if want.gated() {
                plan::presence(&want, &self.inputs.paths).await
            } else {
                Presence::Present {
                    at: want.endpoint.to_string(),
                }
            };
            match presence {
                Presence::Present { at } => {
                    self.absent.remove(&key);
                    if let Some(r) = self.running.get(&key) {
                        if r.at == at {
                            continue;
                        }
                        let why = format!("now found at {at}");
                        self.stop(&key, &why).await;
                    }
                    if self
                        .failed
                        .get(&key)
                        .is_some_and(|f| f.retry_at > Instant::now())
                    {
                        continue;
                    }
                    self.start(want, at).await;
                    changed = true;
                }
                Presence::Absent { why } => {
                    if self.running.contains_key(&key) {
                        self.stop(&key, &format!("gone: {why}")).await;
                        changed = true;
                    }
                    if self.absent.get(&key) != Some(&why) {
                        if want.default {
                            debug!(channel = %key, reason = %why, "channel not present");
                        } else {
                            info!(channel = %key, reason = %why, "channel not present; waiting for it");
                        }
                        self.absent.insert(key, why);
                    }
                }
            }
        }
        if changed {
            notify::notify(&format!("STATUS={}", self.status()));
        }
    }

    async fn start(&mut self, want: Want, at: String) {
        let key = want.key();
        let (stop_tx, stop_rx) = watch::channel(false);
        let agent = self.built.agent.clone();
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match &want
            .endpoint
        {
            Endpoint::Stream(spec) => {
                let protocol = match want.proto {
                    Proto::Qga => Some(Arc::clone(&self.built.protocols.qga)),
                    Proto::Ovirt => self.built.protocols.ovirt.clone(),
                    Proto::Ovmd => None,
                };
                let Some(protocol) = protocol else {
                    if self.absent.get(&key).map(String::as_str) != Some("unsupported") {
                        warn!(channel = %key, "this build has no {} protocol", want.proto);
                        self.absent.insert(key, "unsupported".into());
                    }
                    return;
                };
                if want.proto == Proto::Ovirt {
                    self.ensure_session_watcher();
                }
                let transport = match self.transport(spec).await {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(channel = %key, error = %format!("{e:#}"), "cannot serve channel");
                        return;
                    }
                };
                Box::pin(serve_stream(
                    transport,
                    protocol,
                    agent,
                    stop_rx,
                    StreamOptions::default(),
                ))
            }
            Endpoint::Xenstore(path) => {
                let xenstore = match path {
                    Some(p) => XenstoreTransport::at(XsEndpoint::from_path(p.clone())),
                    None => XenstoreTransport::discover(self.inputs.paths.clone()),
                };
                let cfg = crate::cli::ovmd::DaemonConfig {
                    xenstore,
                    store: self.settings.ovmd.store.clone(),
                    socket: self.settings.ovmd.socket.clone(),
                    chunk_size: guestd_protocols::ovmd::OvmdConfig::default().chunk_size,
                    send_wait: Duration::from_secs(10),
                };
                let key = key.clone();
                Box::pin(async move {
                    if let Err(e) = crate::cli::ovmd::serve(cfg, agent, stop_rx).await {
                        warn!(channel = %key, error = %format!("{e:#}"), "Oracle VM messaging stopped");
                    }
                })
            }
        };
        info!(channel = %key, at = %at, "channel present; starting it");
        // The inner task runs the channel; the outer one reports its end, panics included.
        let inner = tokio::spawn(fut);
        let ended = self.ended_tx.clone();
        let k = key.clone();
        let mut stopped = stop_tx.subscribe();
        let task = tokio::spawn(async move {
            let r = inner.await;
            if let Err(e) = &r
                && e.is_panic()
            {
                error!(channel = %k, "channel task panicked");
            }
            if !*stopped.borrow_and_update() {
                let _ = ended.send(k);
            }
        });
        self.running.insert(
            key,
            Running {
                want,
                at,
                stop: stop_tx,
                task,
            },
        );
    }

    /// The transport for a stream channel. A virtio port is opened and a listening socket bound
    /// at once, so the host sees the guest side open and readiness means the channels are open.
    async fn transport(&self, spec: &ChannelSpec) -> anyhow::Result<Arc<dyn ByteTransport>> {
        if let ChannelSpec::Virtio(_) = spec {
            let port = VirtioPort::with_options(
                spec.virtio_names().unwrap_or_default(),
                self.topts.paths.clone(),
                self.topts.virtio.clone(),
            );
            if let Err(e) = port.open_now().await {
                // Busy (another agent holds it) or a race with an unplug: the runtime retries.
                warn!(channel = %spec, error = %guestd_core::runtime::display_chain(&e), "cannot open the port yet; retrying");
            }
            return Ok(Arc::new(port));
        }
        if let ChannelSpec::UnixListen(path) = spec {
            let l =
                UnixListen::with_mode(path.clone(), self.topts.max_clients, self.topts.socket_mode);
            if let Err(e) = l.open_now().await {
                warn!(channel = %spec, error = %guestd_core::runtime::display_chain(&e), "cannot listen yet; retrying");
            }
            return Ok(Arc::new(l));
        }
        Ok(guestd_transports::spec::build(spec, &self.topts)?)
    }

    fn ensure_session_watcher(&mut self) {
        if self.session_watcher.is_none() {
            self.session_watcher = Some(
                guestd_core::actions::session_events::spawn_session_watcher(self.events.clone()),
            );
        }
    }

    async fn stop(&mut self, key: &str, why: &str) {
        let Some(r) = self.running.remove(key) else {
            return;
        };
        info!(channel = %key, reason = %why, "releasing channel");
        stop_running(r).await;
    }

    async fn stop_all(&mut self) {
        let all = std::mem::take(&mut self.running);
        let stops: Vec<_> = all.into_values().map(stop_running).collect();
        for s in stops {
            s.await;
        }
    }

    /// SIGHUP: load the files again; keep everything running on any error.
    async fn reload(&mut self) {
        notify::reloading();
        info!("reloading the configuration");
        match config::load(&self.inputs.sources, &self.inputs.cli) {
            Err(e) => {
                for d in &e.0 {
                    error!("{d}");
                }
                error!("configuration not reloaded: the running configuration stays in force");
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    warn!("{w}");
                }
                if let Err(e) = self.apply(loaded.settings).await {
                    error!(error = %format!("{e:#}"), "configuration not applied: the running configuration stays in force");
                }
            }
        }
        notify::notify(&format!("READY=1\nSTATUS={}", self.status()));
    }

    async fn apply(&mut self, mut new: Settings) -> anyhow::Result<()> {
        if new == self.settings {
            info!("configuration unchanged");
            return Ok(());
        }
        let old = self.settings.clone();
        if actions_differ(&old, &new) {
            if is_frozen(&self.built.agent).await {
                warn!(
                    "freeze or state directory settings changed while filesystems are frozen: they apply at the next reload after the thaw"
                );
                new.statedir = old.statedir.clone();
                new.freeze = old.freeze.clone();
                new.ovirt.hooks_dir = old.ovirt.hooks_dir.clone();
                new.ovirt.hooks_deadline = old.ovirt.hooks_deadline;
            } else {
                let built = build(&new, &self.inputs.paths, &self.events)?;
                info!("action settings changed: restarting every channel");
                self.stop_all().await;
                self.built = built;
            }
        }
        if !actions_differ(&old, &new) {
            if old.qga != new.qga {
                self.built.protocols.qga = qga_protocol(&new, &self.built.files, &self.built.exec)?;
                self.stop_proto(Proto::Qga, "QGA settings changed").await;
            }
            if old.ovirt != new.ovirt {
                self.built.protocols.ovirt = ovirt_protocol(&new);
                self.stop_proto(Proto::Ovirt, "oVirt settings changed")
                    .await;
            }
            if old.ovmd != new.ovmd {
                self.stop_proto(Proto::Ovmd, "Oracle VM messaging settings changed")
                    .await;
            }
        }
        crate::logging::apply_config_level(new.log_level.as_deref());
        self.settings = new;
        self.failed.clear();
        self.absent.clear();
        self.reconcile().await;
        info!(channels = self.running.len(), "configuration reloaded");
        Ok(())
    }

    async fn stop_proto(&mut self, proto: Proto, why: &str) {
        let keys: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.want.proto == proto)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.stop(&k, why).await;
        }
    }
}

async fn stop_running(r: Running) {
    let _ = r.stop.send(true);
    let mut task = r.task;
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        warn!(channel = %r.want.key(), "channel did not stop in time; abandoning it");
        task.abort();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

async fn is_frozen(agent: &Agent) -> bool {
    matches!(
        agent.actions.dispatch(Action::FsFreezeStatus).await,
        Ok(Outcome::FreezeStatus(FreezeStatus::Frozen))
    )
}

/// Leaving filesystems frozen behind an exiting agent would leave them frozen for good.
async fn thaw_if_frozen(agent: &Agent) {
    if is_frozen(agent).await {
        match agent.actions.dispatch(Action::FsThaw).await {
            Ok(o) => info!(outcome = ?o, "thawed filesystems before exit"),
            Err(e) => warn!(error = %e, "cannot thaw filesystems before exit"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// uevents (behind the `netlink` feature)
// ---------------------------------------------------------------------------------------------

// Without netlink no uevent is ever seen: the variants are built only by the netlink reader.
#[cfg_attr(not(all(target_os = "linux", feature = "netlink")), allow(dead_code))]
enum UeventSeen {
    /// A device of a channel subsystem changed (or events were lost).
    Relevant,
    /// Something else.
    Other,
    /// The socket failed.
    Failed,
}

#[cfg(all(target_os = "linux", feature = "netlink"))]
type Uevents = guestd_transports::hotplug::UeventMonitor;

#[cfg(all(target_os = "linux", feature = "netlink"))]
fn open_uevent_monitor() -> Option<Uevents> {
    match guestd_transports::hotplug::UeventMonitor::open() {
        Ok(m) => Some(m),
        Err(e) => {
            warn!(error = %e, "cannot follow kernel uevents; hot-plug is noticed by rescanning only");
            None
        }
    }
}

#[cfg(all(target_os = "linux", feature = "netlink"))]
async fn next_uevent(m: &mut Option<Uevents>) -> UeventSeen {
    use guestd_transports::hotplug::Seen;
    let Some(mon) = m.as_mut() else {
        return std::future::pending().await;
    };
    match mon.next().await {
        Ok(Seen::Event(ev)) if ev.concerns_channels() => {
            debug!(action = %ev.action, devpath = %ev.devpath, "device event");
            UeventSeen::Relevant
        }
        Ok(Seen::Event(_)) => UeventSeen::Other,
        Ok(Seen::Overflow) => UeventSeen::Relevant,
        Err(e) => {
            warn!(error = %e, "uevent socket error");
            UeventSeen::Failed
        }
    }
}

#[cfg(not(all(target_os = "linux", feature = "netlink")))]
#[derive(Debug)]
struct Uevents;

#[cfg(not(all(target_os = "linux", feature = "netlink")))]
fn open_uevent_monitor() -> Option<Uevents> {
    debug!("built without netlink: hot-plug is noticed by rescanning only");
    None
}

#[cfg(not(all(target_os = "linux", feature = "netlink")))]
async fn next_uevent(_m: &mut Option<Uevents>) -> UeventSeen {
    std::future::pending().await
}
