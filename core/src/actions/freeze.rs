//! Filesystem freeze and thaw (FIFREEZE/FITHAW), with qemu-ga's hook order and error texts,
//! plus what no agent had: a watchdog that thaws when no thaw comes, a state file that lets a
//! restarted agent thaw what a dead one froze, a policy that refuses everything but status and
//! thaw while frozen, and a log gate that keeps log lines off frozen filesystems.
//!
//! Semantics (qga.md §5):
//! - freeze: run the hook with `freeze` (failure: nothing frozen, the hook's error returned);
//!   list the freezable mounts ([`super::mounts::freezable`]); enter frozen state (state file,
//!   log gate); FIFREEZE in reverse mount order. `EOPNOTSUPP` and `EBUSY` (already frozen
//!   through another mount) are skipped uncounted; any other failure thaws everything and
//!   returns `failed to freeze <dir>: <strerror>`. Zero frozen leaves frozen state again.
//! - thaw: FITHAW every freezable mount, in mount order, until the kernel refuses (a
//!   filesystem frozen twice needs two thaws), counting mounts thawed at least once; leave
//!   frozen state; run the hook with `thaw`, whose failure is returned though the
//!   filesystems are thawed.
//!
//! Where qemu-ga is silent or wrong, we choose: when a freeze ends with nothing frozen (zero
//! mounts, or a failure) the hook also gets `thaw`, so hook scripts that lock something on
//! `freeze` always see the matching `thaw`.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::hooks::{self, HookError, HookSpec};
use super::loggate::{hold_logs, release_logs};
use super::mounts::{self, MountEntry, MountOpenError};
use crate::action::{
    Action, ActionError, ActionHandler, ActionKind, Dispatcher, FreezeStatus, Outcome, Policy,
};
use crate::events::{Event, EventBus};
use crate::paths::Paths;

/// Name of the state file in the state directory.
pub const STATE_FILE_NAME: &str = "fsfreeze.frozen";

/// A filesystem frozen N times by userspace needs N thaws; no real stack goes this deep, and
/// the bound keeps a misbehaving filesystem from looping us forever.
const MAX_THAWS_PER_MOUNT: u32 = 64;

/// The actions that still run while filesystems are frozen.
pub const FROZEN_ALLOWLIST: &[ActionKind] = &[ActionKind::FsFreezeStatus, ActionKind::FsThaw];

// ---------------------------------------------------------------------------------------------
// The ioctls.

/// How a per-mount operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsOpError {
    /// The mount point could not be opened.
    Open(Errno),
    /// The ioctl failed.
    Ioctl(Errno),
    /// What the path leads to is not the filesystem mountinfo names (over-mounted, moved).
    NotThatFilesystem,
}

/// The per-mount operations, apart so the ordering and error rules can be tested without
/// freezing anything.
pub trait FsOps: Send + Sync + fmt::Debug {
    /// FIFREEZE the filesystem of `mount`, opened at `path`.
    fn freeze(&self, path: &Path, mount: &MountEntry) -> Result<(), FsOpError>;
    /// FITHAW it until the kernel refuses; how many thaws succeeded.
    fn thaw(&self, path: &Path, mount: &MountEntry) -> Result<u32, FsOpError>;
}

/// The real thing: FIFREEZE and FITHAW through nix.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxFsOps;

// _IOWR('X', 119, int) and _IOWR('X', 120, int) in linux/fs.h; the argument is ignored.
nix::ioctl_readwrite!(ioctl_fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(ioctl_fithaw, b'X', 120, libc::c_int);

impl FsOps for LinuxFsOps {
    fn freeze(&self, path: &Path, mount: &MountEntry) -> Result<(), FsOpError> {
        use std::os::fd::AsRawFd;
        let file = mounts::open_mount(path, mount).map_err(|e| match e {
            MountOpenError::Open(errno) => FsOpError::Open(errno),
            MountOpenError::NotThatFilesystem => FsOpError::NotThatFilesystem,
        })?;
        let mut arg: libc::c_int = 0;
        // SAFETY: the fd is open for the whole call and the kernel neither reads nor writes
        // the argument of FIFREEZE; it points to a live local anyway.
        unsafe { ioctl_fifreeze(file.as_raw_fd(), &mut arg) }
            .map(|_| ())
            .map_err(FsOpError::Ioctl)
    }

    fn thaw(&self, path: &Path, mount: &MountEntry) -> Result<u32, FsOpError> {
        use std::os::fd::AsRawFd;
        let file = mounts::open_mount(path, mount).map_err(|e| match e {
            MountOpenError::Open(errno) => FsOpError::Open(errno),
            MountOpenError::NotThatFilesystem => FsOpError::NotThatFilesystem,
        })?;
        let mut thawed = 0;
        while thawed < MAX_THAWS_PER_MOUNT {
            let mut arg: libc::c_int = 0;
            // SAFETY: as for FIFREEZE: open fd, argument unused by the kernel.
            match unsafe { ioctl_fithaw(file.as_raw_fd(), &mut arg) } {
                Ok(_) => thawed += 1,
                Err(_) => break,
            }
        }
        Ok(thawed)
    }
}

/// FIFREEZE `targets` in reverse order with qemu-ga's skip rules; on a hard failure, the text
/// to return (the caller thaws).
fn freeze_in_reverse(
    ops: &dyn FsOps,
    paths: &Paths,
    targets: &[MountEntry],
) -> Result<u32, String> {
    let mut frozen = 0;
    for m in targets.iter().rev() {
        match ops.freeze(&m.path_under(paths), m) {
            Ok(()) => frozen += 1,
            Err(FsOpError::Ioctl(Errno::EOPNOTSUPP | Errno::EBUSY)) => {}
            // Not the filesystem we listed: never freeze something else by mistake.
            Err(FsOpError::NotThatFilesystem) => {
                tracing::warn!(mountpoint = %m.mountpoint, "mount point no longer leads to its filesystem; skipped");
            }
            Err(FsOpError::Open(e)) => {
                return Err(format!("failed to open {}: {}", m.mountpoint, e.desc()));
            }
            Err(FsOpError::Ioctl(e)) => {
                return Err(format!("failed to freeze {}: {}", m.mountpoint, e.desc()));
            }
        }
    }
    Ok(frozen)
}

/// FITHAW every mount in order; how many were thawed at least once.
fn thaw_in_order(ops: &dyn FsOps, paths: &Paths, targets: &[MountEntry]) -> u32 {
    targets
        .iter()
        .filter(|m| ops.thaw(&m.path_under(paths), m).is_ok_and(|n| n > 0))
        .count() as u32
}

// ---------------------------------------------------------------------------------------------
// The freezer.

/// What the freezer needs from the configuration.
#[derive(Clone, Debug)]
pub struct FreezeSettings {
    /// Root whose mountinfo lists the filesystems; mount points are opened under it.
    pub paths: Paths,
    /// The state file (on a filesystem that is never frozen: `/run`).
    pub state_file: PathBuf,
    /// Hook script (or directory of hooks), when enabled.
    pub hook: Option<PathBuf>,
    /// Deadline of one hook run.
    pub hook_timeout: Duration,
    /// Thaw by itself this long after a freeze; `None` disables.
    pub watchdog: Option<Duration>,
}

/// What the state file records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenRecord {
    /// The agent that froze.
    pub pid: u32,
    /// When, in seconds since the epoch.
    pub since: u64,
    /// What it meant to freeze.
    pub mountpoints: Vec<String>,
}

/// Why the filesystems are being thawed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawReason {
    /// The host asked.
    Request,
    /// The watchdog ran out.
    Watchdog,
    /// A previous agent left them frozen.
    Recovery,
}

/// Frozen state and the operations on it; one per agent, shared by the handler, the policy
/// and the watchdog.
#[derive(Debug)]
pub struct Freezer {
    settings: FreezeSettings,
    ops: Arc<dyn FsOps>,
    events: EventBus,
    /// Serialises freeze and thaw; holds the running watchdog.
    op: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    frozen: AtomicBool,
    watchdog_fired: AtomicBool,
    generation: AtomicU64,
}

fn hook_to_action_error(e: HookError) -> ActionError {
    match e {
        HookError::Failed { what, status } => ActionError::ChildFailed { what, status },
        HookError::TimedOut { what, .. } => ActionError::Timeout(what),
        other => ActionError::Failed(other.to_string()),
    }
}

impl Freezer {
    /// A freezer; when the state file says a previous agent left filesystems frozen, it starts
    /// in frozen state until [`Freezer::recover`] thaws them.
    pub fn new(settings: FreezeSettings, ops: Arc<dyn FsOps>, events: EventBus) -> Arc<Self> {
        let left_frozen = settings.state_file.exists();
        if left_frozen {
            hold_logs();
        }
        Arc::new(Self {
            settings,
            ops,
            events,
            op: tokio::sync::Mutex::new(None),
            frozen: AtomicBool::new(left_frozen),
            watchdog_fired: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &FreezeSettings {
        &self.settings
    }

    /// True while filesystems are frozen (or a previous agent's freeze is not yet undone).
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// The status answer: frozen, thawed, or (once, right after it happened) thawed by the
    /// watchdog.
    pub fn status(&self) -> FreezeStatus {
        if self.is_frozen() {
            FreezeStatus::Frozen
        } else if self.watchdog_fired.swap(false, Ordering::SeqCst) {
            FreezeStatus::ThawedByWatchdog
        } else {
            FreezeStatus::Thawed
        }
    }

    /// The state file's record, when there is one.
    pub fn read_state(&self) -> Option<FrozenRecord> {
        let text = std::fs::read(&self.settings.state_file).ok()?;
        serde_json::from_slice(&text).ok()
    }

    async fn run_hook(&self, arg: &str) -> Result<(), ActionError> {
        let Some(hook) = &self.settings.hook else {
            return Ok(());
        };
        let spec = HookSpec::new("fsfreeze hook", self.settings.hook_timeout);
        hooks::run_hook_or_dir(hook, &[std::ffi::OsStr::new(arg)], &spec)
            .await
            .map_err(hook_to_action_error)
    }

    fn write_state(&self, targets: &[MountEntry]) {
        let record = FrozenRecord {
            pid: std::process::id(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            mountpoints: targets.iter().map(|m| m.mountpoint.clone()).collect(),
        };
        let file = &self.settings.state_file;
        let result = (|| -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{STATE_FILE_NAME}.tmp"));
            let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = result {
            // As qemu-ga: the freeze goes on, but a restart will not know to thaw.
            tracing::warn!(file = %file.display(), error = %e,
                "cannot write the frozen-state file; a restarted agent will not thaw by itself");
        }
    }

    fn enter_frozen(&self, targets: &[MountEntry]) {
        self.write_state(targets);
        if !self.frozen.swap(true, Ordering::SeqCst) {
            hold_logs();
        }
    }

    /// Leave frozen state; true when it was frozen.
    fn leave_frozen(&self) -> bool {
        let was = self.frozen.swap(false, Ordering::SeqCst);
        if was {
            release_logs();
        }
        match std::fs::remove_file(&self.settings.state_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %self.settings.state_file.display(), error = %e,
                "cannot remove the frozen-state file"),
        }
        was
    }

    /// Freeze all freezable filesystems, or those mounted exactly at `only`; how many froze.
    pub async fn freeze(self: &Arc<Self>, only: Option<Vec<String>>) -> Result<u32, ActionError> {
        let mut watchdog = self.op.lock().await;
        if self.is_frozen() {
            return Err(ActionError::Frozen);
        }
        self.run_hook("freeze").await?;
        self.watchdog_fired.store(false, Ordering::SeqCst);
        let mounts = match mounts::read_mounts(&self.settings.paths) {
            Ok(m) => m,
            Err(e) => {
                self.thaw_hook_after_failed_freeze().await;
                return Err(ActionError::Failed(format!(
                    "failed to open {}: {}",
                    e.path.display(),
                    Errno::from_raw(e.source.raw_os_error().unwrap_or(0)).desc()
                )));
            }
        };
        let targets = mounts::freezable(&mounts, only.as_deref());
        self.enter_frozen(&targets);
        let (ops, paths) = (Arc::clone(&self.ops), self.settings.paths.clone());
        let frozen = tokio::task::spawn_blocking(move || {
            let r = freeze_in_reverse(ops.as_ref(), &paths, &targets);
            if r.is_err() {
                thaw_in_order(ops.as_ref(), &paths, &targets);
            }
            r
        })
        .await
        .unwrap_or_else(|e| Err(format!("freeze task failed: {e}")));
        match frozen {
            Ok(0) => {
                self.leave_frozen();
                self.thaw_hook_after_failed_freeze().await;
                Ok(0)
            }
            Ok(n) => {
                self.events.publish(Event::FreezeChanged { frozen: true });
                if let Some(after) = self.settings.watchdog {
                    let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    let me = Arc::clone(self);
                    *watchdog = Some(tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        me.watchdog_fire(generation, after).await;
                    }));
                }
                Ok(n)
            }
            Err(text) => {
                // The blocking task already thawed what it froze; thaw the rest of the
                // system the way a thaw request would, for filesystems frozen twice.
                let _ = self.thaw_filesystems().await;
                self.leave_frozen();
                self.thaw_hook_after_failed_freeze().await;
                Err(ActionError::Failed(text))
            }
        }
    }

    async fn thaw_hook_after_failed_freeze(&self) {
        if let Err(e) = self.run_hook("thaw").await {
            tracing::warn!(error = %e, "fsfreeze hook failed on thaw after a freeze that froze nothing");
        }
    }

    async fn thaw_filesystems(&self) -> Result<u32, ActionError> {
        let mounts = mounts::read_mounts(&self.settings.paths).map_err(|e| {
            ActionError::Failed(format!(
                "failed to open {}: {}",
                e.path.display(),
                Errno::from_raw(e.source.raw_os_error().unwrap_or(0)).desc()
            ))
        })?;
        let targets = mounts::freezable(&mounts, None);
        let (ops, paths) = (Arc::clone(&self.ops), self.settings.paths.clone());
        tokio::task::spawn_blocking(move || thaw_in_order(ops.as_ref(), &paths, &targets))
            .await
            .map_err(|e| ActionError::Failed(format!("thaw task failed: {e}")))
    }

    /// Thaw; how many filesystems were thawed. The hook's `thaw` failure is returned though
    /// the filesystems are thawed, as qemu-ga does.
    pub async fn thaw(self: &Arc<Self>, reason: ThawReason) -> Result<u32, ActionError> {
        let mut watchdog = self.op.lock().await;
        self.thaw_locked(&mut watchdog, reason).await
    }

    async fn thaw_locked(
        &self,
        watchdog: &mut Option<JoinHandle<()>>,
        reason: ThawReason,
    ) -> Result<u32, ActionError> {
        let thawed = self.thaw_filesystems().await?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = watchdog.take()
            && reason != ThawReason::Watchdog
        {
            w.abort();
        }
        let was_frozen = self.leave_frozen();
        if was_frozen {
            self.events.publish(Event::FreezeChanged { frozen: false });
        }
        match reason {
            ThawReason::Request => {}
            ThawReason::Watchdog => {
                self.watchdog_fired.store(true, Ordering::SeqCst);
                self.events.publish(Event::FreezeWatchdogFired);
            }
            ThawReason::Recovery => {
                tracing::warn!(thawed, "thawed what a previous agent left frozen");
            }
        }
        self.run_hook("thaw").await?;
        Ok(thawed)
    }

    async fn watchdog_fire(self: Arc<Self>, generation: u64, after: Duration) {
        let mut watchdog = self.op.lock().await;
        if self.generation.load(Ordering::SeqCst) != generation || !self.is_frozen() {
            return;
        }
        let result = self.thaw_locked(&mut watchdog, ThawReason::Watchdog).await;
        match result {
            Ok(n) => tracing::warn!(
                after_s = after.as_secs_f64(),
                thawed = n,
                "fsfreeze watchdog: no thaw came in time; filesystems thawed"
            ),
            Err(e) => tracing::error!(after_s = after.as_secs_f64(), error = %e,
                "fsfreeze watchdog: thaw failed"),
        }
    }

    /// Undo a freeze a previous agent left behind (its state file exists): thaw and run the
    /// hook's `thaw`. `None` when there was nothing to undo.
    pub async fn recover(self: &Arc<Self>) -> Option<Result<u32, ActionError>> {
        let mut watchdog = self.op.lock().await;
        if !self.settings.state_file.exists() {
            return None;
        }
        let record = self.read_state();
        tracing::warn!(state = ?record, file = %self.settings.state_file.display(),
            "a previous agent left filesystems frozen; thawing");
        Some(self.thaw_locked(&mut watchdog, ThawReason::Recovery).await)
    }
}

// ---------------------------------------------------------------------------------------------
// Handler, policy, registration.

/// Handles freeze, thaw and status.
#[derive(Debug, Clone)]
pub struct FreezeHandler {
    freezer: Arc<Freezer>,
}

#[async_trait]
impl ActionHandler for FreezeHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[
            ActionKind::FsFreeze,
            ActionKind::FsThaw,
            ActionKind::FsFreezeStatus,
        ]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        // Freeze and thaw run as tasks of their own: a caller that gives up waiting (a
        // per-command deadline, a client gone) must not cancel them half-way, which could
        // leave filesystems frozen with no watchdog armed.
        let freezer = Arc::clone(&self.freezer);
        let task = match action {
            Action::FsFreeze { mountpoints } => {
                tokio::spawn(async move { freezer.freeze(mountpoints).await })
            }
            Action::FsThaw => tokio::spawn(async move { freezer.thaw(ThawReason::Request).await }),
            Action::FsFreezeStatus => {
                return Ok(Outcome::FreezeStatus(self.freezer.status()));
            }
            _ => return Err(ActionError::Unsupported),
        };
        task.await
            .map_err(|e| ActionError::Failed(format!("freeze task failed: {e}")))?
            .map(Outcome::Count)
    }
}

/// Refuses everything but [`FROZEN_ALLOWLIST`] while frozen.
#[derive(Debug, Clone)]
pub struct FrozenPolicy {
    freezer: Arc<Freezer>,
}

impl FrozenPolicy {
    /// The policy of this freezer.
    pub fn new(freezer: Arc<Freezer>) -> Self {
        Self { freezer }
    }
}

impl Policy for FrozenPolicy {
    fn check(&self, kind: ActionKind) -> Result<(), ActionError> {
        if self.freezer.is_frozen() && !FROZEN_ALLOWLIST.contains(&kind) {
            Err(ActionError::Frozen)
        } else {
            Ok(())
        }
    }
}

/// Register the freeze handler and the frozen-state policy, and start undoing a freeze a
/// previous agent left behind (in the background when a tokio runtime runs, else at once).
pub fn register(d: &mut Dispatcher, freezer: &Arc<Freezer>) {
    d.register(Arc::new(FreezeHandler {
        freezer: Arc::clone(freezer),
    }));
    d.add_policy(Arc::new(FrozenPolicy::new(Arc::clone(freezer))));
    if freezer.settings.state_file.exists() {
        let f = Arc::clone(freezer);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { f.recover().await });
            }
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(f.recover());
                }
                Err(e) => tracing::error!(error = %e, "cannot thaw a previous agent's freeze"),
            },
        }
    }
}

/// Call on SIGTERM/SIGINT before exiting: thaws when frozen, so a stopping agent never leaves
/// the guest frozen. Returns how many filesystems were thawed, `None` when nothing was frozen
/// (or no freeze handler is registered).
pub async fn thaw_on_exit(d: &Dispatcher) -> Option<Result<u32, ActionError>> {
    match d.dispatch(Action::FsFreezeStatus).await {
        Ok(Outcome::FreezeStatus(FreezeStatus::Frozen)) => {}
        _ => return None,
    }
    tracing::warn!("stopping while filesystems are frozen: thawing first");
    Some(match d.dispatch(Action::FsThaw).await {
        Ok(Outcome::Count(n)) => Ok(n),
        Ok(other) => Err(ActionError::Failed(format!(
            "unexpected thaw outcome {other:?}"
        ))),
        Err(e) => Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Records the calls, freezes and thaws by counting, fails where told.
    #[derive(Debug, Default)]
    struct FakeOps {
        log: Mutex<Vec<String>>,
        /// Freeze depth per filesystem (device), as the kernel keeps it.
        depth: Mutex<HashMap<(u32, u32), u32>>,
        fail: HashMap<String, FsOpError>,
    }

    impl FsOps for FakeOps {
        fn freeze(&self, _path: &Path, m: &MountEntry) -> Result<(), FsOpError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("freeze {}", m.mountpoint));
            if let Some(e) = self.fail.get(&m.mountpoint) {
                return Err(*e);
            }
            *self
                .depth
                .lock()
                .unwrap()
                .entry((m.major, m.minor))
                .or_default() += 1;
            Ok(())
        }
        fn thaw(&self, _path: &Path, m: &MountEntry) -> Result<u32, FsOpError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("thaw {}", m.mountpoint));
            Ok(self
                .depth
                .lock()
                .unwrap()
                .remove(&(m.major, m.minor))
                .unwrap_or(0))
        }
    }

    const MOUNTINFO: &str = "\
26 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
27 26 0:24 / /run rw - tmpfs tmpfs rw
30 26 254:16 / /data rw,relatime - xfs /dev/vdb rw
31 26 254:32 / /data/inner rw,relatime - ext4 /dev/vdc rw
32 26 254:16 / /again rw,relatime - xfs /dev/vdb rw
";

    struct Fixture {
        dir: tempfile::TempDir,
        ops: Arc<FakeOps>,
        freezer: Arc<Freezer>,
        events: EventBus,
    }

    fn fixture(
        fail: &[(&str, FsOpError)],
        hook: Option<&str>,
        watchdog: Option<Duration>,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(dir.path().join("proc/self/mountinfo"), MOUNTINFO).unwrap();
        let hook = hook.map(|body| {
            let p = dir.path().join("hook");
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        });
        let ops = Arc::new(FakeOps {
            fail: fail.iter().map(|(m, e)| (m.to_string(), *e)).collect(),
            ..Default::default()
        });
        let events = EventBus::new(16);
        let freezer = Freezer::new(
            FreezeSettings {
                paths: Paths::under(dir.path()),
                state_file: dir.path().join("run/guestd").join(STATE_FILE_NAME),
                hook,
                hook_timeout: Duration::from_secs(10),
                watchdog,
            },
            ops.clone(),
            events.clone(),
        );
        Fixture {
            dir,
            ops,
            freezer,
            events,
        }
    }

    impl Fixture {
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.ops.log.lock().unwrap())
        }
        fn state_file(&self) -> PathBuf {
            self.freezer.settings.state_file.clone()
        }
        fn hook_log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("hook.log")).unwrap_or_default()
        }
    }

    #[tokio::test]
    async fn freezes_in_reverse_and_thaws_in_order() {
        let f = fixture(&[], None, None);
        let mut rx = f.events.subscribe();
        assert_eq!(f.freezer.freeze(None).await.unwrap(), 3);
        assert_eq!(f.log(), ["freeze /data/inner", "freeze /data", "freeze /"]);
        assert_eq!(f.freezer.status(), FreezeStatus::Frozen);
        let rec = f.freezer.read_state().unwrap();
        assert_eq!(rec.mountpoints, ["/", "/data", "/data/inner"]);
        assert_eq!(rec.pid, std::process::id());
        assert!(crate::actions::loggate::logging_held());
        assert!(matches!(
            f.freezer.freeze(None).await,
            Err(ActionError::Frozen)
        ));
        assert_eq!(f.freezer.thaw(ThawReason::Request).await.unwrap(), 3);
        assert_eq!(f.log(), ["thaw /", "thaw /data", "thaw /data/inner"]);
        assert!(!f.state_file().exists());
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
        assert_eq!(f.freezer.thaw(ThawReason::Request).await.unwrap(), 0);
        assert_eq!(
            rx.recv().await.unwrap(),
            Event::FreezeChanged { frozen: true }
        );
        assert_eq!(
            rx.recv().await.unwrap(),
            Event::FreezeChanged { frozen: false }
        );
        assert!(
            rx.try_recv().is_err(),
            "a thaw of nothing publishes nothing"
        );
    }

    #[tokio::test]
    async fn freeze_list_and_zero_frozen() {
        let f = fixture(&[], None, None);
        let list = vec!["/again".to_owned(), "/nonexistent".to_owned()];
        assert_eq!(f.freezer.freeze(Some(list)).await.unwrap(), 1);
        assert_eq!(f.log(), ["freeze /again"]);
        // Thaw goes by the full list; the xfs is thawed at its first mount.
        assert_eq!(f.freezer.thaw(ThawReason::Request).await.unwrap(), 1);
        f.log();
        assert_eq!(
            f.freezer.freeze(Some(vec!["/run".into()])).await.unwrap(),
            0
        );
        assert!(f.log().is_empty());
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
        assert!(!f.state_file().exists());
    }

    #[tokio::test]
    async fn skips_unsupported_and_busy_and_fails_on_others() {
        let f = fixture(
            &[
                ("/data/inner", FsOpError::Ioctl(Errno::EOPNOTSUPP)),
                ("/data", FsOpError::Ioctl(Errno::EBUSY)),
            ],
            None,
            None,
        );
        assert_eq!(f.freezer.freeze(None).await.unwrap(), 1);
        f.freezer.thaw(ThawReason::Request).await.unwrap();

        let f = fixture(
            &[("/data", FsOpError::Ioctl(Errno::EIO))],
            Some("echo $1 >> $(dirname $0)/hook.log"),
            None,
        );
        let e = f.freezer.freeze(None).await.unwrap_err();
        assert_eq!(e.to_string(), "failed to freeze /data: I/O error");
        let log = f.log();
        assert_eq!(&log[..2], ["freeze /data/inner", "freeze /data"]);
        assert!(log[2..].contains(&"thaw /data/inner".to_owned()), "{log:?}");
        assert!(
            f.ops.depth.lock().unwrap().is_empty(),
            "everything thawed again"
        );
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
        assert!(!f.state_file().exists());
        assert_eq!(f.hook_log(), "freeze\nthaw\n");

        let f = fixture(
            &[("/data/inner", FsOpError::Open(Errno::EACCES))],
            None,
            None,
        );
        let e = f.freezer.freeze(None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to open /data/inner: Permission denied"
        );
    }

    #[tokio::test]
    async fn hook_order_and_failures() {
        let f = fixture(
            &[],
            Some(
                "echo $1 >> $(dirname $0)/hook.log\n[ -e $(dirname $0)/fail-$1 ] && exit 7\nexit 0",
            ),
            None,
        );
        f.freezer.freeze(None).await.unwrap();
        f.freezer.thaw(ThawReason::Request).await.unwrap();
        assert_eq!(f.hook_log(), "freeze\nthaw\n");
        f.log();

        std::fs::write(f.dir.path().join("fail-freeze"), "").unwrap();
        let e = f.freezer.freeze(None).await.unwrap_err();
        assert_eq!(e.to_string(), "fsfreeze hook has failed with status 7");
        assert!(
            f.log().is_empty(),
            "nothing frozen when the freeze hook fails"
        );
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
        std::fs::remove_file(f.dir.path().join("fail-freeze")).unwrap();

        std::fs::write(f.dir.path().join("fail-thaw"), "").unwrap();
        assert_eq!(f.freezer.freeze(None).await.unwrap(), 3);
        let e = f.freezer.thaw(ThawReason::Request).await.unwrap_err();
        assert_eq!(e.to_string(), "fsfreeze hook has failed with status 7");
        assert_eq!(
            f.freezer.status(),
            FreezeStatus::Thawed,
            "thawed though the hook failed"
        );
        assert!(f.ops.depth.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn policy_allows_only_status_and_thaw_while_frozen() {
        let f = fixture(&[], None, None);
        let p = FrozenPolicy::new(Arc::clone(&f.freezer));
        assert!(p.check(ActionKind::SetTime).is_ok());
        f.freezer.freeze(None).await.unwrap();
        for kind in [
            ActionKind::FsFreeze,
            ActionKind::SetTime,
            ActionKind::Power,
            ActionKind::SshKeys,
        ] {
            assert!(
                matches!(p.check(kind), Err(ActionError::Frozen)),
                "{kind:?}"
            );
        }
        assert!(p.check(ActionKind::FsThaw).is_ok());
        assert!(p.check(ActionKind::FsFreezeStatus).is_ok());
        f.freezer.thaw(ThawReason::Request).await.unwrap();
        assert!(p.check(ActionKind::SetTime).is_ok());
    }

    #[tokio::test]
    async fn watchdog_thaws_and_reports_once() {
        // Real time: the hook is a child process, which paused time would see as idle.
        let f = fixture(
            &[],
            Some("echo $1 >> $(dirname $0)/hook.log"),
            Some(Duration::from_millis(300)),
        );
        let mut rx = f.events.subscribe();
        f.freezer.freeze(None).await.unwrap();
        assert!(f.freezer.is_frozen());
        assert_eq!(
            rx.recv().await.unwrap(),
            Event::FreezeChanged { frozen: true }
        );
        let next = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        assert_eq!(
            next.unwrap().unwrap(),
            Event::FreezeChanged { frozen: false }
        );
        let next = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        assert_eq!(next.unwrap().unwrap(), Event::FreezeWatchdogFired);
        // The hook's thaw runs after the events; wait for the thaw to finish as a whole.
        drop(f.freezer.op.lock().await);
        assert_eq!(f.freezer.status(), FreezeStatus::ThawedByWatchdog);
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed, "reported once");
        assert!(f.ops.depth.lock().unwrap().is_empty());
        assert!(!f.state_file().exists());
        assert_eq!(f.hook_log(), "freeze\nthaw\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_thaw_cancels_the_watchdog() {
        let f = fixture(&[], None, Some(Duration::from_secs(10)));
        f.freezer.freeze(None).await.unwrap();
        f.freezer.thaw(ThawReason::Request).await.unwrap();
        f.freezer.freeze(None).await.unwrap();
        // The first watchdog would fire at 10 s; it must not thaw the second freeze.
        tokio::time::sleep(Duration::from_secs(8)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(f.freezer.status(), FreezeStatus::Frozen);
        f.freezer.thaw(ThawReason::Request).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
    }

    #[tokio::test]
    async fn restart_with_state_file_thaws() {
        let f = fixture(&[], Some("echo $1 >> $(dirname $0)/hook.log"), None);
        f.freezer.freeze(None).await.unwrap();
        let state = f.state_file();
        assert!(state.exists());
        // A new agent on the same state dir (the old one died without thawing).
        let again = Freezer::new(f.freezer.settings.clone(), f.ops.clone(), EventBus::new(4));
        assert!(again.is_frozen(), "comes up frozen until recovered");
        let mut d = Dispatcher::new();
        register(&mut d, &again);
        assert!(matches!(
            d.dispatch(Action::SetTime { nanos: None }).await,
            Err(ActionError::Frozen) | Err(ActionError::Unsupported)
        ));
        for _ in 0..500 {
            if !again.is_frozen() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!again.is_frozen());
        drop(again.op.lock().await); // the recovery's hook run ends with it
        assert!(!state.exists());
        assert!(f.ops.depth.lock().unwrap().is_empty());
        assert_eq!(f.hook_log(), "freeze\nthaw\n");
    }

    #[tokio::test]
    async fn a_caller_giving_up_does_not_cancel_a_freeze() {
        let f = fixture(&[], Some("sleep 1"), Some(Duration::from_secs(600)));
        let mut d = Dispatcher::new();
        register(&mut d, &f.freezer);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            d.dispatch(Action::FsFreeze { mountpoints: None }),
        )
        .await;
        assert!(gave_up.is_err(), "the hook takes a second");
        // The freeze still completes, watchdog armed.
        drop(f.freezer.op.lock().await);
        assert_eq!(f.freezer.status(), FreezeStatus::Frozen);
        assert!(f.freezer.op.lock().await.is_some(), "watchdog armed");
        assert_eq!(d.dispatch(Action::FsThaw).await.unwrap(), Outcome::Count(3));
    }

    #[tokio::test]
    async fn thaw_on_exit_thaws_only_when_frozen() {
        let f = fixture(&[], None, None);
        let mut d = Dispatcher::new();
        register(&mut d, &f.freezer);
        assert!(thaw_on_exit(&d).await.is_none());
        assert_eq!(
            d.dispatch(Action::FsFreeze { mountpoints: None })
                .await
                .unwrap(),
            Outcome::Count(3)
        );
        assert!(matches!(
            d.dispatch(Action::SetTime { nanos: None }).await,
            Err(ActionError::Frozen)
        ));
        assert_eq!(thaw_on_exit(&d).await.unwrap().unwrap(), 3);
        assert_eq!(f.freezer.status(), FreezeStatus::Thawed);
    }
}
