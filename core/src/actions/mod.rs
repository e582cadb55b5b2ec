//! The action handlers: one implementation of each action, with the fallbacks real images
//! need, shared by every protocol.

pub mod instance;

use std::path::PathBuf;
use std::time::Duration;

use crate::action::Dispatcher;
use crate::events::EventBus;
use crate::paths::Paths;

/// Settings of the action layer.
#[derive(Clone, Debug)]
pub struct ActionsConfig {
    /// Root the actions work on.
    pub paths: Paths,
    /// Directory for state that must survive a restart (frozen state, file-handle counter).
    pub state_dir: PathBuf,
    /// fsfreeze hook script, if enabled.
    pub fsfreeze_hook: Option<PathBuf>,
    /// Thaw by itself this long after a freeze if no thaw came; `None` disables.
    pub freeze_watchdog: Option<Duration>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            paths: Paths::system(),
            state_dir: PathBuf::from("/run/guestd"),
            fsfreeze_hook: None,
            freeze_watchdog: Some(Duration::from_secs(600)),
        }
    }
}

/// A dispatcher with every handler this system supports registered.
pub fn default_dispatcher(cfg: &ActionsConfig, _events: &EventBus) -> Dispatcher {
    let mut d = Dispatcher::new();
    d.register(instance::InstanceHandler::arc(cfg.paths.clone()));
    d
}
