//! What the host can ask the guest to do, independent of any protocol. Each protocol turns its
//! commands into an [`Action`], calls [`Dispatcher::dispatch`], and maps the [`Outcome`] or
//! [`ActionError`] to its own wire form at one place.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// A secret (password) that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Power-off, reboot or halt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerMode {
    /// Power off.
    Poweroff,
    /// Reboot.
    Reboot,
    /// Halt without powering off.
    Halt,
}

/// Suspend target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuspendMode {
    /// Suspend to RAM.
    Ram,
    /// Suspend to disk (hibernate).
    Disk,
    /// Both (hybrid sleep).
    Hybrid,
}

/// Which sessions a lock or log-off applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionTarget {
    /// The active graphical session (else the active session of seat0).
    Active,
    /// Every session of this user.
    User(String),
    /// Every session.
    All,
}

/// One vCPU state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuChange {
    /// Logical CPU number.
    pub logical_id: u32,
    /// Desired state.
    pub online: bool,
}

/// One memory-block state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBlockChange {
    /// Block number.
    pub phys_index: u64,
    /// Desired state.
    pub online: bool,
}

/// What to do with a user's authorized ssh keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshKeysOp {
    /// List them.
    Get,
    /// Add these (or replace everything with them when `reset`).
    Add {
        /// Keys, one `authorized_keys` line each.
        keys: Vec<String>,
        /// Replace the file instead of appending.
        reset: bool,
    },
    /// Remove these; absent keys are fine.
    Remove {
        /// Keys to remove.
        keys: Vec<String>,
    },
}

/// A VM lifecycle event the host announces (oVirt `lifecycle-event`), naming a set of hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    /// The VM is about to be hibernated (saved to disk).
    BeforeHibernation,
    /// The VM was restored after hibernation.
    AfterHibernation,
    /// The VM is about to be migrated.
    BeforeMigration,
    /// The VM arrived on the destination host.
    AfterMigration,
}

impl LifecycleEvent {
    /// Every event.
    pub const ALL: [LifecycleEvent; 4] = [
        LifecycleEvent::BeforeHibernation,
        LifecycleEvent::AfterHibernation,
        LifecycleEvent::BeforeMigration,
        LifecycleEvent::AfterMigration,
    ];

    /// The wire name, which is also the name of its hook directory (`before_migration`).
    pub fn name(self) -> &'static str {
        match self {
            LifecycleEvent::BeforeHibernation => "before_hibernation",
            LifecycleEvent::AfterHibernation => "after_hibernation",
            LifecycleEvent::BeforeMigration => "before_migration",
            LifecycleEvent::AfterMigration => "after_migration",
        }
    }

    /// The event a wire name denotes; `None` for any other string.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// Every action guestd can perform.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Power off, reboot or halt, after an optional delay, with an optional wall message.
    Power {
        /// Which.
        mode: PowerMode,
        /// Grace delay before it happens.
        delay: Option<Duration>,
        /// Message to logged-in users.
        message: Option<String>,
    },
    /// Suspend.
    Suspend(SuspendMode),
    /// Lock the screen of sessions.
    LockScreen(SessionTarget),
    /// Log sessions off.
    LogOff(SessionTarget),
    /// Freeze filesystems: all freezable ones, or these mount points.
    FsFreeze {
        /// Mount points (exact strings); `None` for all.
        mountpoints: Option<Vec<String>>,
    },
    /// Thaw everything frozen.
    FsThaw,
    /// Report whether filesystems are frozen.
    FsFreezeStatus,
    /// Discard unused blocks on every mounted filesystem.
    FsTrim {
        /// Minimum contiguous free range to discard, in bytes.
        minimum: Option<u64>,
    },
    /// Set the clock to `nanos` since the epoch, or reload it from the RTC when `None`.
    SetTime {
        /// Nanoseconds since the epoch.
        nanos: Option<i64>,
    },
    /// Set a user's password.
    SetPassword {
        /// User name.
        user: String,
        /// The new password, plain or crypt(3) hash.
        password: Secret,
        /// `password` is already a crypt(3) hash.
        crypted: bool,
    },
    /// Manage a user's authorized ssh keys.
    SshKeys {
        /// User name.
        user: String,
        /// What to do.
        op: SshKeysOp,
    },
    /// Bring vCPUs online or offline, in order, stopping at the first failure.
    SetVcpus(Vec<VcpuChange>),
    /// Bring memory blocks online or offline.
    SetMemoryBlocks(Vec<MemoryBlockChange>),
    /// First-boot configuration of this instance (hostname, network, passwords, users, ...).
    ConfigureInstance(Box<crate::actions::instance::InstanceRequest>),
    /// Remove instance state (ssh host keys, machine id, leases, logs) so the VM can become a
    /// template.
    CleanupInstance,
    /// Arm (`true`) or disarm first-boot configuration for the next boot.
    SetInitialConfig(bool),
    /// Whether first-boot configuration is armed: [`Outcome::Armed`].
    InitialConfigArmed,
    /// Run the hooks of a lifecycle event, within the handler's deadline.
    LifecycleHooks {
        /// Which event.
        event: LifecycleEvent,
        /// The host says the operation failed (`after_*` only); passed to the hooks.
        failure: bool,
    },
}

/// The kind of an action, used to register handlers and in policy lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// [`Action::Power`].
    Power,
    /// [`Action::Suspend`].
    Suspend,
    /// [`Action::LockScreen`].
    LockScreen,
    /// [`Action::LogOff`].
    LogOff,
    /// [`Action::FsFreeze`].
    FsFreeze,
    /// [`Action::FsThaw`].
    FsThaw,
    /// [`Action::FsFreezeStatus`].
    FsFreezeStatus,
    /// [`Action::FsTrim`].
    FsTrim,
    /// [`Action::SetTime`].
    SetTime,
    /// [`Action::SetPassword`].
    SetPassword,
    /// [`Action::SshKeys`].
    SshKeys,
    /// [`Action::SetVcpus`].
    SetVcpus,
    /// [`Action::SetMemoryBlocks`].
    SetMemoryBlocks,
    /// [`Action::ConfigureInstance`].
    ConfigureInstance,
    /// [`Action::CleanupInstance`].
    CleanupInstance,
    /// [`Action::SetInitialConfig`].
    SetInitialConfig,
    /// [`Action::InitialConfigArmed`].
    InitialConfigArmed,
    /// [`Action::LifecycleHooks`].
    LifecycleHooks,
}

impl Action {
    /// This action's kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Power { .. } => ActionKind::Power,
            Action::Suspend(_) => ActionKind::Suspend,
            Action::LockScreen(_) => ActionKind::LockScreen,
            Action::LogOff(_) => ActionKind::LogOff,
            Action::FsFreeze { .. } => ActionKind::FsFreeze,
            Action::FsThaw => ActionKind::FsThaw,
            Action::FsFreezeStatus => ActionKind::FsFreezeStatus,
            Action::FsTrim { .. } => ActionKind::FsTrim,
            Action::SetTime { .. } => ActionKind::SetTime,
            Action::SetPassword { .. } => ActionKind::SetPassword,
            Action::SshKeys { .. } => ActionKind::SshKeys,
            Action::SetVcpus(_) => ActionKind::SetVcpus,
            Action::SetMemoryBlocks(_) => ActionKind::SetMemoryBlocks,
            Action::ConfigureInstance(_) => ActionKind::ConfigureInstance,
            Action::CleanupInstance => ActionKind::CleanupInstance,
            Action::SetInitialConfig(_) => ActionKind::SetInitialConfig,
            Action::InitialConfigArmed => ActionKind::InitialConfigArmed,
            Action::LifecycleHooks { .. } => ActionKind::LifecycleHooks,
        }
    }
}

/// Frozen or thawed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeStatus {
    /// No filesystem frozen by guestd.
    Thawed,
    /// Filesystems are frozen.
    Frozen,
    /// Thawed by the freeze watchdog because no thaw came in time; reported by the first
    /// status request after it happened, [`FreezeStatus::Thawed`] after that. Protocols whose
    /// status is a bare "thawed"/"frozen" (QGA) answer "thawed".
    ThawedByWatchdog,
}

/// Result of trimming one filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimResult {
    /// Mount point.
    pub path: String,
    /// Bytes trimmed, when it worked.
    pub trimmed: Option<u64>,
    /// Minimum used.
    pub minimum: Option<u64>,
    /// Error text, when it failed.
    pub error: Option<String>,
}

/// Result of one memory-block change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBlockResponse {
    /// Done.
    Success,
    /// No such block.
    NotFound,
    /// The kernel does not allow it.
    OperationNotSupported,
    /// It failed; the errno.
    OperationFailed(i32),
}

/// What an action produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Done, nothing to report.
    Done,
    /// The action was accepted and will happen later (delayed power-off).
    Scheduled,
    /// Sessions affected by a lock or log-off (logind session ids).
    Sessions(Vec<String>),
    /// Number of filesystems frozen or thawed.
    Count(u32),
    /// Freeze status.
    FreezeStatus(FreezeStatus),
    /// fstrim results.
    Trimmed(Vec<TrimResult>),
    /// Authorized keys.
    Keys(Vec<String>),
    /// How many leading vCPU changes were processed.
    VcpusProcessed(u32),
    /// Per-block results, in request order.
    MemoryBlocks(Vec<(u64, MemoryBlockResponse)>),
    /// What first-boot configuration, cleanup or arming did, item by item.
    Instance(Box<crate::actions::instance::Report>),
    /// Whether first-boot configuration is armed.
    Armed(bool),
}

/// Why an action failed. Protocols map these to their own error vocabulary at one boundary.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No handler for this action is registered in this build or on this system.
    #[error("This action is not supported")]
    Unsupported,
    /// Refused because filesystems are frozen.
    #[error("The agent is in frozen state")]
    Frozen,
    /// The arguments make no sense (unknown user, bad time, forbidden characters).
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing matched (no such session, no such user).
    #[error("{0}")]
    NotFound(String),
    /// Every way of doing it was tried and failed; the text says what was tried.
    #[error("{0}")]
    Failed(String),
    /// A hook or helper program failed.
    #[error("{what} has failed with status {status}")]
    ChildFailed {
        /// What was run.
        what: String,
        /// Its exit status.
        status: i32,
    },
    /// An I/O error on a path.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time.
    #[error("{0} timed out")]
    Timeout(String),
}

/// Performs one kind of action. Registered with the [`Dispatcher`] by kind: a new way of doing
/// things is a new handler, not a branch.
#[async_trait]
pub trait ActionHandler: Send + Sync + fmt::Debug {
    /// The kinds it handles.
    fn kinds(&self) -> &[ActionKind];
    /// Do it.
    async fn run(&self, action: Action) -> Result<Outcome, ActionError>;
}

/// Decides whether an action may run now (frozen state, configuration).
pub trait Policy: Send + Sync + fmt::Debug {
    /// `Ok` to run, or the reason not to.
    fn check(&self, kind: ActionKind) -> Result<(), ActionError>;
}

/// Allows everything.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn check(&self, _kind: ActionKind) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Routes actions to their handlers after one policy check.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    handlers: HashMap<ActionKind, Arc<dyn ActionHandler>>,
    policies: Vec<Arc<dyn Policy>>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Dispatcher {
    /// No handlers, no policies.
    pub fn new() -> Self {
        Self {
            handlers: HashMap::new(),
            policies: Vec::new(),
        }
    }

    /// Register a handler for every kind it names (a later one replaces an earlier one).
    pub fn register(&mut self, handler: Arc<dyn ActionHandler>) {
        for kind in handler.kinds() {
            self.handlers.insert(*kind, Arc::clone(&handler));
        }
    }

    /// Add a policy; all must allow an action.
    pub fn add_policy(&mut self, policy: Arc<dyn Policy>) {
        self.policies.push(policy);
    }

    /// True when a handler for `kind` is registered.
    pub fn supports(&self, kind: ActionKind) -> bool {
        self.handlers.contains_key(&kind)
    }

    /// Whether an action of `kind` may run now, by the policies alone (no handler runs, no
    /// state changes): a side-effect-free way to learn, say, that the guest is frozen.
    pub fn check(&self, kind: ActionKind) -> Result<(), ActionError> {
        self.policies.iter().try_for_each(|p| p.check(kind))
    }

    /// Check policy, then run the action's handler.
    pub async fn dispatch(&self, action: Action) -> Result<Outcome, ActionError> {
        let kind = action.kind();
        self.check(kind)?;
        let handler = self.handlers.get(&kind).ok_or(ActionError::Unsupported)?;
        tracing::debug!(?kind, "dispatching action");
        handler.run(action).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Count;

    #[async_trait]
    impl ActionHandler for Count {
        fn kinds(&self) -> &[ActionKind] {
            &[ActionKind::FsThaw]
        }
        async fn run(&self, _action: Action) -> Result<Outcome, ActionError> {
            Ok(Outcome::Count(7))
        }
    }

    #[derive(Debug)]
    struct DenyThaw;

    impl Policy for DenyThaw {
        fn check(&self, kind: ActionKind) -> Result<(), ActionError> {
            if kind == ActionKind::FsThaw {
                Err(ActionError::Frozen)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn routes_by_kind_and_checks_policy() {
        let mut d = Dispatcher::new();
        assert!(matches!(
            d.dispatch(Action::FsThaw).await,
            Err(ActionError::Unsupported)
        ));
        d.register(Arc::new(Count));
        assert_eq!(d.dispatch(Action::FsThaw).await.unwrap(), Outcome::Count(7));
        d.add_policy(Arc::new(DenyThaw));
        assert!(matches!(
            d.dispatch(Action::FsThaw).await,
            Err(ActionError::Frozen)
        ));
    }

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
