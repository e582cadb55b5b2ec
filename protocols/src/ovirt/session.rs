//! One oVirt endpoint: reads commands, writes reports on timers and events, negotiates the
//! API version. Pure: the runtime feeds it bytes, ticks and events and writes what it returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use guestd_core::action::{ActionError, Outcome};
use guestd_core::contract::{FactError, StreamSession};
use guestd_core::events::Event;
use guestd_core::runtime::display_chain;
use guestd_core::{Agent, UserSession};
use tracing::{debug, info, warn};

use super::command::{Command, HibernateState};
use super::config::OvirtConfig;
use super::frame::{LineReader, encode_capped, parse_line};
use super::message::{self, MemorySampler, Message};
use super::version::Negotiation;

/// Which full report to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Agent start (note §3.4, plus `disks-usage` and `number-of-cpus`).
    Start,
    /// `refresh` or a version change.
    Refresh,
}

/// Whether a report goes out even when it did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    Always,
    IfChanged,
}

#[derive(Debug, Clone)]
struct Timers {
    heartbeat: Instant,
    user: Instant,
    cpus: Instant,
    inventory: Instant,
    disks: Instant,
    /// Interfaces to re-read after an address change settles.
    interfaces: Option<Instant>,
    /// A full batch due right after the current write.
    batch: Option<(Instant, Batch)>,
}

impl Timers {
    fn new(now: Instant, cfg: &OvirtConfig) -> Self {
        Self {
            heartbeat: now,
            user: now + cfg.user,
            cpus: now + cfg.cpus,
            inventory: now + cfg.inventory,
            disks: now + cfg.disks,
            interfaces: None,
            batch: None,
        }
    }

    /// The report timers count their intervals anew, from the heartbeat tick at or before
    /// `now` rather than from `now`, so they stay due at heartbeat instants.
    fn restart_reports(&mut self, now: Instant, cfg: &OvirtConfig) {
        let base = self.last_heartbeat_tick(cfg.heartbeat, now);
        self.user = advance(base, cfg.user, now);
        self.cpus = advance(base, cfg.cpus, now);
        self.inventory = advance(base, cfg.inventory, now);
        self.disks = advance(base, cfg.disks, now);
        self.interfaces = None;
    }

    /// The latest instant on the heartbeat's grid (its next tick less whole intervals) that
    /// is not after `now`.
    fn last_heartbeat_tick(&self, every: Duration, now: Instant) -> Instant {
        let next = self.heartbeat;
        if next <= now {
            return next;
        }
        let every = every.max(MIN_INTERVAL);
        let steps = next
            .duration_since(now)
            .as_nanos()
            .div_ceil(every.as_nanos());
        u32::try_from(steps)
            .ok()
            .and_then(|n| every.checked_mul(n))
            .and_then(|d| next.checked_sub(d))
            .unwrap_or(now)
    }

    /// The earliest deadline; the active-user poll counts only when `poll_user` (no session
    /// events flow).
    fn next(&self, poll_user: bool) -> Instant {
        let mut t = self.heartbeat;
        if poll_user {
            t = t.min(self.user);
        }
        let mut t = t.min(self.cpus).min(self.inventory).min(self.disks);
        if let Some(i) = self.interfaces {
            t = t.min(i);
        }
        if let Some((b, _)) = self.batch {
            t = t.min(b);
        }
        t
    }
}

/// Shortest interval a timer runs at, so a zero from a test or a typo cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The next tick of a periodic timer: `prev` plus the fewest whole intervals that land after
/// `now`. Missed ticks (a stalled write) are skipped, never piled up, and the timer keeps its
/// phase: timers started at one instant whose intervals are multiples of one another (5 s
/// heartbeat, 10 s user poll, 60 s CPUs, 120 s inventory, 300 s disks) stay due at the very
/// same instants, so the idle agent serves whatever falls due together in one wake-up.
fn advance(prev: Instant, every: Duration, now: Instant) -> Instant {
    let every = every.max(MIN_INTERVAL);
    let next = prev + every;
    if next > now {
        return next;
    }
    let steps = now.duration_since(prev).as_nanos() / every.as_nanos() + 1;
    u32::try_from(steps)
        .ok()
        .and_then(|n| every.checked_mul(n))
        .and_then(|d| prev.checked_add(d))
        .unwrap_or(now + every)
}

/// Limits repeated warnings about bad input to a few per minute.
#[derive(Debug, Clone)]
struct LogLimiter {
    window: Instant,
    count: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_MINUTE: u32 = 10;

    fn new(now: Instant) -> Self {
        Self {
            window: now,
            count: 0,
            suppressed: 0,
        }
    }

    /// True when this warning may be logged; the first one of a new window also reports how
    /// many were suppressed.
    fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(60) {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "more bad input from the host was skipped"
                );
            }
            self.window = now;
            self.count = 0;
            self.suppressed = 0;
        }
        if self.count < Self::PER_MINUTE {
            self.count += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// The state of one oVirt channel.
#[derive(Debug)]
pub struct OvirtSession {
    agent: Agent,
    cfg: Arc<OvirtConfig>,
    reader: LineReader,
    neg: Negotiation,
    started: bool,
    connected: bool,
    shutdown_sent: bool,
    timers: Timers,
    /// The last frame of each report, for "only when changed".
    last: HashMap<&'static str, Vec<u8>>,
    /// The active user last sent (`None` inside: nobody); outer `None`: not sent yet.
    user_sent: Option<Option<String>>,
    mem: MemorySampler,
    bad_input: LogLimiter,
    warned_facts: HashSet<&'static str>,
}

impl OvirtSession {
    /// A session on `agent` with these settings.
    pub fn new(agent: Agent, cfg: Arc<OvirtConfig>) -> Self {
        let now = Instant::now();
        Self {
            timers: Timers::new(now, &cfg),
            agent,
            cfg,
            reader: LineReader::default(),
            neg: Negotiation::new(),
            started: false,
            connected: false,
            shutdown_sent: false,
            last: HashMap::new(),
            user_sent: None,
            mem: MemorySampler::default(),
            bad_input: LogLimiter::new(now),
            warned_facts: HashSet::new(),
        }
    }

    /// The API version in force.
    pub fn api_version(&self) -> u8 {
        self.neg.version()
    }

    // -----------------------------------------------------------------------------------
    // Writing
    // -----------------------------------------------------------------------------------

    /// Write `msg` if the version allows it (and, for `IfChanged`, if it differs from the
    /// last one of its name). Returns true when written.
    fn send(&mut self, out: &mut Vec<u8>, msg: Message, mode: Send) -> bool {
        if !self.neg.allows(msg.name) {
            debug!(
                message = msg.name,
                version = self.neg.version(),
                "not sent at this API version"
            );
            return false;
        }
        self.write(out, msg, mode)
    }

    /// Write without the version gate (a `completion` the host is waiting for).
    fn write(&mut self, out: &mut Vec<u8>, msg: Message, mode: Send) -> bool {
        let (frame, dropped) =
            match encode_capped(msg.name, &msg.body, msg.trim_key(), self.cfg.max_message) {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "message dropped");
                    return false;
                }
            };
        if dropped > 0 {
            warn!(
                message = msg.name,
                dropped,
                limit = self.cfg.max_message,
                "message too big; trailing entries left out"
            );
        }
        if mode == Send::IfChanged && self.last.get(msg.name) == Some(&frame) {
            return false;
        }
        debug!(message = msg.name, bytes = frame.len(), "sending");
        out.extend_from_slice(&frame);
        self.last.insert(msg.name, frame);
        true
    }

    /// The fact, or `None` with the failure logged (a warning the first time per fact).
    fn got<T>(&mut self, fact: &'static str, r: Result<T, FactError>) -> Option<T> {
        r.map_err(|e| self.fact_failed(fact, &e)).ok()
    }

    fn fact_failed(&mut self, fact: &'static str, e: &FactError) {
        if self.warned_facts.insert(fact) {
            warn!(fact, error = %display_chain(e), "cannot collect; the report is left out");
        } else {
            debug!(fact, error = %display_chain(e), "cannot collect");
        }
    }

    // -----------------------------------------------------------------------------------
    // Collecting
    // -----------------------------------------------------------------------------------

    async fn heartbeat(&mut self, out: &mut Vec<u8>) {
        let now = Instant::now();
        let (free_mib, stat) = match self.agent.facts.memory().await {
            Ok(mem) => {
                let stat = self.mem.sample(&mem, now, self.cfg.free_ram);
                (
                    message::free_bytes(&mem, self.cfg.free_ram) >> 20,
                    Some(stat),
                )
            }
            Err(e) => {
                // The heartbeat still goes out: it is what keeps the VM "Up" on the host.
                self.fact_failed("memory", &e);
                (0, None)
            }
        };
        let api = self.neg.heartbeat_version();
        self.send(
            out,
            message::heartbeat(free_mib, stat.as_ref(), api),
            Send::Always,
        );
        self.timers.heartbeat = advance(self.timers.heartbeat, self.cfg.heartbeat, now);
    }

    async fn host_name_msg(&mut self) -> Option<Message> {
        // The old Linux agent reported socket.getfqdn() as the host name.
        match self.agent.facts.fqdn().await {
            Ok(n) if !n.is_empty() => return Some(message::host_name(&n)),
            Ok(_) => {}
            Err(e) => self.fact_failed("fqdn", &e),
        }
        let r = self.agent.facts.hostname().await;
        self.got("hostname", r).map(|n| message::host_name(&n))
    }

    async fn fqdn_msg(&mut self) -> Option<Message> {
        match self.agent.facts.fqdn().await {
            Ok(n) if !n.is_empty() => Some(message::fqdn(&n)),
            _ => {
                let r = self.agent.facts.hostname().await;
                self.got("hostname", r).map(|n| message::fqdn(&n))
            }
        }
    }

    async fn os_version_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.os().await;
        self.got("os", r)?
            .kernel_release
            .as_deref()
            .map(message::os_version)
    }

    async fn os_info_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.os().await;
        self.got("os", r).map(|os| message::os_info(&os))
    }

    async fn timezone_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.timezone().await;
        self.got("timezone", r).map(|tz| message::timezone(&tz))
    }

    async fn interfaces_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.interfaces_without_mtu().await;
        let i = self.got("interfaces", r)?;
        Some(message::network_interfaces(&i, &self.cfg.ignored_nics))
    }

    async fn applications_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.applications().await;
        // The old agent sent [] on any error; a missing database is no error to VDSM.
        let a = self.got("applications", r).unwrap_or_default();
        Some(message::applications(&a, &self.cfg.applications))
    }

    async fn containers_msg(&mut self) -> Option<Message> {
        if !self.neg.allows("containers") {
            return None;
        }
        match self.agent.facts.containers().await {
            Ok(c) => Some(message::containers(&c)),
            Err(e) => {
                if !matches!(e, FactError::Unsupported(_)) {
                    self.fact_failed("containers", &e);
                }
                Some(message::containers(&[]))
            }
        }
    }

    async fn disks_msg(&mut self) -> Option<Message> {
        let r = self.agent.facts.filesystems().await;
        let fss = self.got("filesystems", r)?;
        // The mapping also names disks without a mounted filesystem; optional.
        let block = self.agent.facts.block_devices().await.unwrap_or_default();
        Some(message::disks_usage(
            &fss,
            &block,
            &self.cfg.ignored_fs,
            self.cfg.ignore_zero_size_fs,
        ))
    }

    async fn cpus_msg(&mut self) -> Option<Message> {
        if !self.neg.allows("number-of-cpus") {
            return None;
        }
        let r = self.agent.facts.cpus().await;
        let c = self.got("cpus", r);
        Some(message::number_of_cpus(c.as_ref()))
    }

    async fn sessions(&mut self) -> Option<Vec<UserSession>> {
        let r = self.agent.facts.users().await;
        self.got("users", r)
    }

    /// Send `active-user` when forced or when the user differs from the last one sent.
    fn send_user(&mut self, out: &mut Vec<u8>, user: Option<String>, force: bool) {
        if !force && self.user_sent.as_ref() == Some(&user) {
            return;
        }
        if self.send(out, message::active_user(user.as_deref()), Send::Always) {
            self.user_sent = Some(user);
        }
    }

    /// The active-user poll is the fallback for systems without session events (no logind):
    /// while the session watcher publishes them, `on_event` sees every change as it happens.
    fn poll_user(&self) -> bool {
        !self.agent.events.session_events_live()
    }

    async fn report_user(&mut self, out: &mut Vec<u8>, force: bool) {
        let user = match self.sessions().await {
            Some(s) => message::pick_active_user(&s),
            None if force => None,
            None => return,
        };
        self.send_user(out, user, force);
    }

    async fn batch(&mut self, out: &mut Vec<u8>, batch: Batch) {
        let now = Instant::now();
        // A full report supersedes a start report still waiting to be written.
        self.timers.batch = None;
        debug!(?batch, version = self.neg.version(), "sending full report");
        let a = Send::Always;
        match batch {
            Batch::Start => {
                // session-startup went out with the first heartbeat.
                if let Some(m) = self.host_name_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.os_version_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.interfaces_msg().await {
                    self.send(out, m, a);
                }
                self.report_user(out, true).await;
                if let Some(m) = self.applications_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.containers_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.fqdn_msg().await {
                    self.send(out, m, a);
                }
            }
            Batch::Refresh => {
                self.send(out, Message::bare("session-startup"), a);
                self.report_user(out, true).await;
                if let Some(m) = self.applications_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.containers_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.host_name_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.os_version_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.interfaces_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.disks_msg().await {
                    self.send(out, m, a);
                }
                if let Some(m) = self.fqdn_msg().await {
                    self.send(out, m, a);
                }
            }
        }
        if self.neg.allows("timezone")
            && let Some(m) = self.timezone_msg().await
        {
            self.send(out, m, a);
        }
        if self.neg.allows("os-info")
            && let Some(m) = self.os_info_msg().await
        {
            self.send(out, m, a);
        }
        // VDSM accepts these in any batch (note §3.4); the old agent only had timers for them.
        if batch == Batch::Start
            && let Some(m) = self.disks_msg().await
        {
            self.send(out, m, a);
        }
        if let Some(m) = self.cpus_msg().await {
            self.send(out, m, a);
        }
        self.timers.restart_reports(now, &self.cfg);
    }

    async fn inventory(&mut self, out: &mut Vec<u8>) {
        let c = Send::IfChanged;
        if let Some(m) = self.applications_msg().await {
            self.send(out, m, c);
        }
        if let Some(m) = self.containers_msg().await {
            self.send(out, m, c);
        }
        if let Some(m) = self.host_name_msg().await {
            self.send(out, m, c);
        }
        if let Some(m) = self.os_version_msg().await {
            self.send(out, m, c);
        }
        if let Some(m) = self.interfaces_msg().await {
            self.send(out, m, c);
        }
        if let Some(m) = self.fqdn_msg().await {
            self.send(out, m, c);
        }
    }

    // -----------------------------------------------------------------------------------
    // Commands
    // -----------------------------------------------------------------------------------

    async fn handle(&mut self, cmd: Command, out: &mut Vec<u8>) {
        match cmd {
            Command::Refresh {
                api_version_present,
            } => {
                info!(
                    api_version_present,
                    version = self.neg.version(),
                    "refresh requested"
                );
                self.neg.on_refresh(api_version_present);
                self.batch(out, Batch::Refresh).await;
                // A heartbeat right away: after a host restart it is what marks the VM up.
                self.heartbeat(out).await;
            }
            Command::ApiVersion { version } => {
                let before = self.neg.version();
                if self.neg.on_api_version(version) {
                    info!(
                        from = before,
                        to = self.neg.version(),
                        "API version changed"
                    );
                    self.batch(out, Batch::Refresh).await;
                } else if version.is_none() {
                    info!("api-version without an integer apiVersion; ignored");
                }
            }
            Command::Login { ref username, .. } => {
                // Single sign-on hands the credentials to a greeter plugin over the old
                // agent's D-Bus name and socket (note §8). guestd ships no such channel, so
                // it does what the old agent did when no plugin picked the credentials up:
                // nothing goes back to the host, the password is dropped unlogged.
                info!(
                    user = %username,
                    "login requested; no credentials plugin is available, so it is ignored"
                );
            }
            Command::SetNumberOfCpus { count } => {
                // The old agent's handler was a no-op that only reported the count back; CPU
                // hot-plug is the QGA vCPU commands' job.
                info!(count, "set-number-of-cpus: reporting the current count");
                if count > 0
                    && let Some(m) = self.cpus_msg().await
                {
                    self.send(out, m, Send::Always);
                }
            }
            Command::LifecycleEvent {
                ref kind,
                ref reply_id,
                failure,
            } => {
                match cmd.action() {
                    Some(action) => {
                        info!(
                            event = kind.as_deref().unwrap_or(""),
                            failure, "lifecycle event"
                        );
                        let r = self.agent.actions.dispatch(action).await;
                        log_outcome(cmd.name(), &r);
                    }
                    None => warn!(
                        event = kind.as_deref().unwrap_or(""),
                        "unknown lifecycle event type; no hooks run"
                    ),
                }
                if let Some(id) = reply_id {
                    // Always answer: the host holds the migration or hibernation until then.
                    let m = message::completion(id);
                    self.write(out, m, Send::Always);
                }
            }
            Command::Echo(ref args) => {
                debug!("echo");
                self.send(out, message::echo(args), Send::Always);
            }
            Command::Hibernate(HibernateState::Other(ref s)) => {
                warn!(state = %s, "hibernate with an unknown state; ignored");
            }
            Command::Unknown(ref name) => {
                warn!(command = %name, "unknown command; ignored");
            }
            Command::LockScreen
            | Command::LogOff
            | Command::Shutdown { .. }
            | Command::Hibernate(_) => {
                let Some(action) = cmd.action() else { return };
                info!(command = cmd.name(), "performing");
                let r = self.agent.actions.dispatch(action).await;
                log_outcome(cmd.name(), &r);
            }
        }
    }
}

/// The one place an action's result meets this protocol: oVirt has no error replies, so it
/// goes to the log.
fn log_outcome(cmd: &str, r: &Result<Outcome, ActionError>) {
    match r {
        Ok(o) => info!(command = cmd, outcome = ?o, "done"),
        Err(ActionError::Unsupported) => {
            warn!(command = cmd, "not supported on this system")
        }
        Err(e) => warn!(command = cmd, error = %display_chain(e), "failed"),
    }
}

#[async_trait]
impl StreamSession for OvirtSession {
    async fn on_connect(&mut self, out: &mut Vec<u8>) {
        let now = Instant::now();
        self.connected = true;
        self.reader.reset();
        // Every timer starts at this instant (the heartbeat goes out now), so they stay in
        // step with one another (see `advance`).
        self.timers = Timers::new(now, &self.cfg);
        if !self.started {
            self.started = true;
            info!("oVirt channel connected; sending the start report");
            self.send(out, Message::bare("session-startup"), Send::Always);
            // The first heartbeat at once: only a heartbeat marks the VM "Up" on the host.
            self.heartbeat(out).await;
            // The inventory can be slow to collect; let the heartbeat be written first.
            self.timers.batch = Some((now, Batch::Start));
        } else {
            info!("oVirt host is back");
            self.neg.on_host_returned();
            self.heartbeat(out).await;
        }
    }

    async fn on_disconnect(&mut self) {
        self.connected = false;
        self.reader.reset();
        // What was sent before may never have arrived: report everything anew.
        self.last.clear();
        self.user_sent = None;
    }

    async fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) {
        while let Some(line) = self.reader.next_line(input) {
            let parsed = line.and_then(|l| parse_line(&l));
            match parsed {
                Ok(raw) => {
                    let cmd = Command::from_raw(raw);
                    debug!(command = cmd.name(), "command");
                    self.handle(cmd, out).await;
                }
                Err(e) => {
                    if self.bad_input.allow(Instant::now()) {
                        warn!(error = %e, "bad line from the host; skipped");
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.timers.next(self.poll_user()))
    }

    async fn on_timer(&mut self, out: &mut Vec<u8>) {
        let now = Instant::now();
        if self.timers.heartbeat <= now {
            self.heartbeat(out).await;
        }
        if let Some((at, batch)) = self.timers.batch
            && at <= now
        {
            self.timers.batch = None;
            self.batch(out, batch).await;
            return;
        }
        if self.timers.user <= now {
            if self.poll_user() {
                self.report_user(out, false).await;
            }
            self.timers.user = advance(self.timers.user, self.cfg.user, now);
        }
        if self.timers.inventory <= now {
            self.inventory(out).await;
            self.timers.inventory = advance(self.timers.inventory, self.cfg.inventory, now);
            self.timers.interfaces = None;
        }
        if let Some(at) = self.timers.interfaces
            && at <= now
        {
            self.timers.interfaces = None;
            if let Some(m) = self.interfaces_msg().await {
                self.send(out, m, Send::IfChanged);
            }
        }
        if self.timers.disks <= now {
            if let Some(m) = self.disks_msg().await {
                self.send(out, m, Send::IfChanged);
            }
            self.timers.disks = advance(self.timers.disks, self.cfg.disks, now);
        }
        if self.timers.cpus <= now {
            if let Some(m) = self.cpus_msg().await {
                self.send(out, m, Send::IfChanged);
            }
            self.timers.cpus = advance(self.timers.cpus, self.cfg.cpus, now);
        }
    }

    async fn on_event(&mut self, event: &Event, out: &mut Vec<u8>) {
        match event {
            Event::SessionNew { session, user } => {
                let sessions = self.sessions().await;
                let class = sessions
                    .as_deref()
                    .and_then(|s| {
                        s.iter()
                            .find(|s| s.session_id.as_deref() == Some(session.as_str()))
                    })
                    .and_then(|s| s.class.clone());
                if matches!(class.as_deref(), Some("greeter" | "lock-screen")) {
                    return;
                }
                let active = match sessions {
                    Some(s) => message::pick_active_user(&s),
                    None => Some(user.clone()),
                };
                // The old agent: active-user before session-logon.
                self.send_user(out, active, false);
                self.send(out, Message::bare("session-logon"), Send::Always);
            }
            Event::SessionRemoved { user, .. } => {
                self.send(out, Message::bare("session-logoff"), Send::Always);
                let active = match self.sessions().await {
                    Some(s) => message::pick_active_user(&s),
                    None => match &self.user_sent {
                        Some(Some(u)) if u == user => None,
                        Some(u) => u.clone(),
                        None => None,
                    },
                };
                self.send_user(out, active, false);
            }
            Event::SessionLocked { .. } => {
                self.send(out, Message::bare("session-lock"), Send::Always);
            }
            Event::SessionUnlocked { .. } => {
                self.send(out, Message::bare("session-unlock"), Send::Always);
            }
            Event::ActiveUserChanged { user } => {
                let active = match self.sessions().await {
                    Some(s) => message::pick_active_user(&s),
                    None => user.clone(),
                };
                self.send_user(out, active, false);
            }
            Event::AddressAdded { .. } | Event::AddressRemoved { .. }
                if self.timers.interfaces.is_none() =>
            {
                self.timers.interfaces = Some(Instant::now() + self.cfg.address_settle);
            }
            Event::CpusChanged { online } => {
                let m = message::number_of_cpus(Some(&guestd_core::Cpus {
                    online: *online,
                    present: *online,
                }));
                self.send(out, m, Send::IfChanged);
            }
            Event::ShuttingDown if !self.shutdown_sent => {
                self.shutdown_sent = true;
                self.send(out, Message::bare("session-shutdown"), Send::Always);
            }
            // Freeze state and whatever else the bus carries have no oVirt message.
            _ => {}
        }
    }

    async fn on_shutdown(&mut self, out: &mut Vec<u8>) {
        if self.connected && !self.shutdown_sent {
            self.shutdown_sent = true;
            self.send(out, Message::bare("session-shutdown"), Send::Always);
        }
    }

    fn max_input(&self) -> usize {
        // The reader never leaves more than its limit; one extra byte lets it see the excess.
        self.reader.limit() + 1
    }
}

#[cfg(test)]
mod timer_tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn advance_steps_one_interval_when_on_time() {
        let t0 = Instant::now();
        assert_eq!(advance(t0, 5 * S, t0), t0 + 5 * S);
        // Served a little late: still on the grid.
        assert_eq!(advance(t0, 5 * S, t0 + S / 10), t0 + 5 * S);
    }

    #[test]
    fn advance_skips_missed_ticks_and_keeps_the_phase() {
        let t0 = Instant::now();
        // 12 s late (a stalled write): the ticks at 5 and 10 are gone, the next is at 15.
        assert_eq!(advance(t0, 5 * S, t0 + 12 * S), t0 + 15 * S);
        // Exactly on a later tick: the one after it.
        assert_eq!(advance(t0, 5 * S, t0 + 10 * S), t0 + 15 * S);
    }

    #[test]
    fn advance_never_spins_on_a_zero_interval() {
        let t0 = Instant::now();
        assert!(advance(t0, Duration::ZERO, t0) > t0);
    }

    #[test]
    fn default_timers_fall_due_on_heartbeat_ticks() {
        let cfg = OvirtConfig::default();
        let t0 = Instant::now();
        let mut t = Timers::new(t0, &cfg);
        let mut ticks = std::collections::HashSet::new();
        let mut hb = t.heartbeat;
        while hb <= t0 + cfg.disks {
            ticks.insert(hb);
            hb = advance(hb, cfg.heartbeat, hb);
        }
        for due in [t.user, t.cpus, t.inventory, t.disks] {
            assert!(
                ticks.contains(&due),
                "{:?} after start is off the heartbeat",
                due - t0
            );
        }
        // A refresh between ticks restarts the reports, still on the heartbeat's grid.
        t.heartbeat = t0 + 35 * S;
        t.restart_reports(t0 + 32 * S, &cfg);
        assert_eq!(t.user, t0 + 40 * S);
        assert_eq!(t.cpus, t0 + 90 * S);
        assert_eq!(t.inventory, t0 + 150 * S);
        assert_eq!(t.disks, t0 + 330 * S);
    }

    #[test]
    fn the_user_poll_counts_only_when_asked() {
        let cfg = OvirtConfig {
            heartbeat: 5 * S,
            user: 2 * S,
            ..OvirtConfig::default()
        };
        let t0 = Instant::now();
        let t = Timers::new(t0, &cfg);
        assert_eq!(t.next(true), t0);
        let mut t = t;
        t.heartbeat = t0 + 5 * S;
        assert_eq!(t.next(true), t0 + 2 * S);
        assert_eq!(t.next(false), t0 + 5 * S);
    }
}
