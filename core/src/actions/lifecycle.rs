//! Lifecycle-event hooks: before and after hibernation and migration, the host runs the
//! executables of `<dir>/<event>/` in name order (oVirt's `hooks.d` layout, so existing images'
//! hooks keep working). Unlike the old oVirt agent, the whole event has a deadline: the host
//! holds a migration or hibernation only about 10 s for the answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::hooks::{HookError, HookSpec, list_hook_dir, run_hook};
use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome};

/// Runs the hooks of [`Action::LifecycleHooks`].
#[derive(Debug, Clone)]
pub struct LifecycleHandler {
    dir: PathBuf,
    deadline: Duration,
}

impl LifecycleHandler {
    /// Hooks under `dir/<event>/`, all of one event within `deadline`.
    pub fn new(dir: impl Into<PathBuf>, deadline: Duration) -> Self {
        Self {
            dir: dir.into(),
            deadline,
        }
    }
}

fn to_action_error(e: HookError) -> ActionError {
    match e {
        HookError::Failed { what, status } => ActionError::ChildFailed { what, status },
        HookError::TimedOut { what, .. } => ActionError::Timeout(what),
        other => ActionError::Failed(other.to_string()),
    }
}

#[async_trait]
impl ActionHandler for LifecycleHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::LifecycleHooks]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::LifecycleHooks { event, failure } = action else {
            return Err(ActionError::Unsupported);
        };
        let dir = self.dir.join(event.name());
        // A missing directory means no hooks (the old agent failed there and never answered).
        let scripts = list_hook_dir(&dir).map_err(|source| ActionError::Io {
            what: format!("Cannot list {}", dir.display()),
            source,
        })?;
        tracing::info!(
            event = event.name(),
            failure,
            hooks = scripts.len(),
            "running lifecycle hooks"
        );
        let start = Instant::now();
        let mut first_error = None;
        let mut ran = 0u32;
        for path in scripts {
            let left = self.deadline.saturating_sub(start.elapsed());
            let what = format!("{} hook '{}'", event.name(), path.display());
            if left.is_zero() {
                tracing::warn!(hook = %path.display(), "no time left for this hook; skipped");
                first_error.get_or_insert(ActionError::Timeout(what));
                continue;
            }
            ran += 1;
            match run_hook(&path, &[], &HookSpec::new(what, left)).await {
                Ok(()) => tracing::info!(hook = %path.display(), "hook done"),
                Err(e) => {
                    tracing::warn!(hook = %path.display(), error = %e, "hook failed");
                    first_error.get_or_insert(to_action_error(e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Outcome::Count(ran)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::LifecycleEvent;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "#!/bin/sh\n{body}").unwrap();
        drop(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn action(event: LifecycleEvent) -> Action {
        Action::LifecycleHooks {
            event,
            failure: false,
        }
    }

    #[tokio::test]
    async fn runs_the_event_directory_in_order() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let ev = d.path().join("before_migration");
        script(&ev, "20-second", &format!("echo 2 >> {}", out.display()));
        script(&ev, "10-first", &format!("echo 1 >> {}", out.display()));
        script(
            &d.path().join("after_migration"),
            "x",
            &format!("echo no >> {}", out.display()),
        );
        let h = LifecycleHandler::new(d.path(), Duration::from_secs(10));
        let r = h
            .run(action(LifecycleEvent::BeforeMigration))
            .await
            .unwrap();
        assert_eq!(r, Outcome::Count(2));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "1\n2\n");
        // No directory: nothing to run, success.
        let r = h
            .run(action(LifecycleEvent::AfterHibernation))
            .await
            .unwrap();
        assert_eq!(r, Outcome::Count(0));
    }

    #[tokio::test]
    async fn failures_and_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let ev = d.path().join("before_hibernation");
        let out = d.path().join("out");
        script(&ev, "a-fails", "exit 3");
        script(&ev, "b-slow", "sleep 30");
        script(&ev, "c-late", &format!("echo late >> {}", out.display()));
        let h = LifecycleHandler::new(d.path(), Duration::from_millis(700));
        let start = Instant::now();
        let e = h
            .run(action(LifecycleEvent::BeforeHibernation))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(e, ActionError::ChildFailed { status: 3, .. }),
            "{e}"
        );
        assert!(!out.exists(), "a hook ran after the deadline");
    }
}
