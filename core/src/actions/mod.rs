//! The action handlers: one implementation of each action, with the fallbacks real images
//! need, shared by every protocol.

pub mod instance;
#[cfg(feature = "dbus")]
pub mod logind;
#[cfg(target_os = "linux")]
pub mod power;
#[cfg(all(target_os = "linux", feature = "dbus"))]
pub mod session;
pub mod session_events;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::action::Dispatcher;
use crate::events::EventBus;
use crate::paths::Paths;

#[cfg(target_os = "linux")]
pub mod cpu_mem;
pub mod exec;
#[cfg(target_os = "linux")]
pub mod freeze;
pub mod hooks;
pub mod lifecycle;
pub mod loggate;
#[cfg(target_os = "linux")]
pub mod mounts;
#[cfg(target_os = "linux")]
pub mod password;
#[cfg(target_os = "linux")]
pub mod ssh;
#[cfg(target_os = "linux")]
pub mod suspend;
#[cfg(target_os = "linux")]
pub mod time;
#[cfg(target_os = "linux")]
pub mod trim;

/// Settings of the action layer.
#[derive(Clone, Debug)]
pub struct ActionsConfig {
    /// Root the actions work on.
    pub paths: Paths,
    /// Directory for state that must survive a restart (frozen state, file-handle counter).
    /// It must not be on a filesystem that gets frozen: `/run` is a tmpfs.
    pub state_dir: PathBuf,
    /// fsfreeze hook script (or directory of hook scripts), if enabled.
    pub fsfreeze_hook: Option<PathBuf>,
    /// Thaw by itself this long after a freeze if no thaw came; `None` disables.
    pub freeze_watchdog: Option<Duration>,
    /// Longest a hook script may run before it is killed.
    pub hook_timeout: Duration,
    /// Lifecycle-event hooks: `<dir>/<event>/*` (under `paths`), e.g.
    /// `before_migration/`; oVirt's layout, so existing images' hooks keep working.
    pub lifecycle_hooks: PathBuf,
    /// Longest all hooks of one lifecycle event may take together (the host waits ~10 s).
    pub lifecycle_deadline: Duration,
    /// Where helper programs (chpasswd, hwclock, systemctl, pm-utils) are looked up,
    /// colon-separated; `None`: `$PATH` plus the usual sbin and bin directories.
    pub exec_path: Option<std::ffi::OsString>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            paths: Paths::system(),
            state_dir: PathBuf::from("/run/guestd"),
            fsfreeze_hook: None,
            freeze_watchdog: Some(Duration::from_secs(600)),
            hook_timeout: Duration::from_secs(60),
            lifecycle_hooks: PathBuf::from("/etc/ovirt-guest-agent/hooks.d"),
            lifecycle_deadline: Duration::from_secs(8),
            exec_path: None,
        }
    }
}

/// A dispatcher with every handler this system supports registered.
pub fn default_dispatcher(cfg: &ActionsConfig, events: &EventBus) -> Dispatcher {
    let mut d = Dispatcher::new();
    d.register(std::sync::Arc::new(lifecycle::LifecycleHandler::new(
        cfg.paths.join(&cfg.lifecycle_hooks),
        cfg.lifecycle_deadline,
    )));
    d.register(instance::InstanceHandler::arc(cfg.paths.clone()));
    #[cfg(target_os = "linux")]
    {
        let freezer = freeze::Freezer::new(
            freeze::FreezeSettings {
                paths: cfg.paths.clone(),
                state_file: cfg.state_dir.join(freeze::STATE_FILE_NAME),
                hook: cfg.fsfreeze_hook.clone(),
                hook_timeout: cfg.hook_timeout,
                watchdog: cfg.freeze_watchdog,
            },
            std::sync::Arc::new(freeze::LinuxFsOps),
            events.clone(),
        );
        freeze::register(&mut d, &freezer);
        let programs = exec::Programs::new(cfg.exec_path.as_deref());
        let paths = &cfg.paths;
        d.register(std::sync::Arc::new(trim::TrimHandler::new(
            paths.clone(),
            std::sync::Arc::new(trim::LinuxTrimmer),
        )));
        d.register(std::sync::Arc::new(time::TimeHandler::new(
            paths.clone(),
            programs.clone(),
        )));
        d.register(std::sync::Arc::new(password::PasswordHandler::new(
            paths.clone(),
            programs.clone(),
        )));
        d.register(std::sync::Arc::new(ssh::SshKeysHandler::new(paths.clone())));
        d.register(std::sync::Arc::new(cpu_mem::CpuMemHandler::new(
            paths.clone(),
            events.clone(),
        )));
        d.register(std::sync::Arc::new(suspend::SuspendHandler::new(
            paths.clone(),
            programs,
        )));
    }
    #[cfg(target_os = "linux")]
    d.register(Arc::new(power::PowerHandler::new(
        power::PowerConfig {
            paths: cfg.paths.clone(),
            ..Default::default()
        },
        events.clone(),
    )));
    // Lock and log off act on the running machine's logind: not for another root.
    #[cfg(all(target_os = "linux", feature = "dbus"))]
    if cfg.paths.is_system() {
        d.register(Arc::new(session::SessionHandler::new()));
    }
    d
}
