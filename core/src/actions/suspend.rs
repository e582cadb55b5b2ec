//! Suspend to RAM, to disk, or both (QGA `guest-suspend-ram/-disk/-hybrid`), trying what
//! qemu-ga tries, in its order:
//!
//! 1. systemd: `systemctl status systemd-<unit>.service` exiting 1–3 means the unit exists
//!    (LSB codes; 4 is "no such unit"), then `systemctl suspend|hibernate|hybrid-sleep`;
//! 2. pm-utils: `pm-is-supported --suspend|--hibernate|--suspend-hybrid`, then `pm-suspend`,
//!    `pm-hibernate` or `pm-suspend-hybrid`;
//! 3. the kernel: `mem` or `disk` written to `/sys/power/state` when listed there (hybrid has
//!    no sysfs form). The write returns after the guest wakes up.
//!
//! A mode none of them supports gives `the requested suspend mode is not supported by the
//! guest`; otherwise the last method's failure is returned.

use std::ffi::OsStr;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;

use super::exec::{self, Ended, ExecError, Programs};
use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, SuspendMode};
use crate::paths::Paths;

/// How long a support probe may take.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the suspend command may take: it may return only after the guest woke up, which
/// is up to the host.
const SUSPEND_DEADLINE: Duration = Duration::from_secs(24 * 3600);

fn systemd_unit(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Ram => "systemd-suspend",
        SuspendMode::Disk => "systemd-hibernate",
        SuspendMode::Hybrid => "systemd-hybrid-sleep",
    }
}

fn systemctl_verb(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Ram => "suspend",
        SuspendMode::Disk => "hibernate",
        SuspendMode::Hybrid => "hybrid-sleep",
    }
}

fn pm_probe_arg(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Ram => "--suspend",
        SuspendMode::Disk => "--hibernate",
        SuspendMode::Hybrid => "--suspend-hybrid",
    }
}

fn pm_program(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Ram => "pm-suspend",
        SuspendMode::Disk => "pm-hibernate",
        SuspendMode::Hybrid => "pm-suspend-hybrid",
    }
}

fn sysfs_word(mode: SuspendMode) -> Option<&'static str> {
    match mode {
        SuspendMode::Ram => Some("mem"),
        SuspendMode::Disk => Some("disk"),
        SuspendMode::Hybrid => None,
    }
}

/// Handles [`Action::Suspend`].
#[derive(Debug, Clone)]
pub struct SuspendHandler {
    paths: Paths,
    programs: Programs,
}

impl SuspendHandler {
    /// Suspend the system at `paths` (its `/sys/power/state`), with helper programs from
    /// `programs`.
    pub fn new(paths: Paths, programs: Programs) -> Self {
        Self { paths, programs }
    }

    /// Run a program by name; `None` when it is not installed.
    async fn run(
        &self,
        name: &str,
        args: &[&str],
        deadline: Duration,
    ) -> Option<Result<Ended, ExecError>> {
        let program = self.programs.find(name)?;
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        Some(
            exec::run(&program, &args, None, deadline)
                .await
                .map(Ended::from),
        )
    }

    async fn try_helper(
        &self,
        program: &str,
        args: &[&str],
        shown: &str,
    ) -> Result<(), ActionError> {
        match self.run(program, args, SUSPEND_DEADLINE).await {
            None => Err(ActionError::Failed(format!(
                "the helper program '{shown}' was not found"
            ))),
            Some(Ok(Ended::Success)) => Ok(()),
            Some(Ok(Ended::Status(code))) => Err(ActionError::Failed(format!(
                "the helper program '{shown}' returned an unexpected exit status code ({code})"
            ))),
            Some(Ok(Ended::Signal(_))) => Err(ActionError::Failed(
                "child process has terminated abnormally".into(),
            )),
            Some(Err(ExecError::Spawn(e))) => Err(ActionError::Failed(format!(
                "failed to create child process: {}",
                e.desc()
            ))),
            Some(Err(ExecError::TimedOut(_))) => Err(ActionError::Timeout(shown.to_owned())),
        }
    }

    async fn systemd_supports(&self, mode: SuspendMode) -> bool {
        let unit = systemd_unit(mode);
        matches!(
            self.run("systemctl", &["status", unit], PROBE_DEADLINE)
                .await,
            Some(Ok(Ended::Status(1..=3)))
        )
    }

    async fn pmutils_supports(&self, mode: SuspendMode) -> bool {
        matches!(
            self.run("pm-is-supported", &[pm_probe_arg(mode)], PROBE_DEADLINE)
                .await,
            Some(Ok(Ended::Success))
        )
    }

    fn sysfs_supports(&self, mode: SuspendMode) -> bool {
        let Some(word) = sysfs_word(mode) else {
            return false;
        };
        std::fs::read_to_string(self.paths.sys("power/state"))
            .is_ok_and(|s| s.split_whitespace().any(|w| w == word))
    }

    async fn sysfs_suspend(&self, mode: SuspendMode) -> Result<(), ActionError> {
        let Some(word) = sysfs_word(mode) else {
            return Err(ActionError::Failed("unknown guest suspend mode".into()));
        };
        let state = self.paths.sys("power/state");
        // Blocks until the guest wakes up again.
        tokio::task::spawn_blocking(move || std::fs::write(&state, word))
            .await
            .map_err(|e| ActionError::Failed(format!("suspend task failed: {e}")))?
            .map_err(|e| {
                ActionError::Failed(format!(
                    "suspend: cannot write to '/sys/power/state': {}",
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)).desc()
                ))
            })
    }

    /// Suspend with the first method that supports `mode`, falling through on failure.
    pub async fn suspend(&self, mode: SuspendMode) -> Result<(), ActionError> {
        let mut supported = false;
        let mut last = None;
        if self.systemd_supports(mode).await {
            supported = true;
            let verb = systemctl_verb(mode);
            match self
                .try_helper("systemctl", &[verb], &format!("systemctl {verb}"))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "systemd could not suspend; trying pm-utils");
                    last = Some(e);
                }
            }
        }
        if self.pmutils_supports(mode).await {
            supported = true;
            let program = pm_program(mode);
            match self.try_helper(program, &[], program).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "pm-utils could not suspend; trying sysfs");
                    last = Some(e);
                }
            }
        }
        if self.sysfs_supports(mode) {
            supported = true;
            match self.sysfs_suspend(mode).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if supported => Err(e),
            _ => Err(ActionError::Failed(
                "the requested suspend mode is not supported by the guest".into(),
            )),
        }
    }
}

#[async_trait]
impl ActionHandler for SuspendHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::Suspend]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::Suspend(mode) = action else {
            return Err(ActionError::Unsupported);
        };
        tracing::info!(?mode, "suspending");
        self.suspend(mode).await.map(|()| Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fixture with fake helper programs that log their arguments and exit as told.
    struct Fixture {
        dir: tempfile::TempDir,
        handler: SuspendHandler,
    }

    fn fixture(programs: &[(&str, &str)], power_state: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.path().join("calls");
        for (name, body) in programs {
            let p = bin.join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> {}\n{body}\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if let Some(s) = power_state {
            std::fs::create_dir_all(dir.path().join("sys/power")).unwrap();
            std::fs::write(dir.path().join("sys/power/state"), s).unwrap();
        }
        let handler = SuspendHandler::new(
            Paths::under(dir.path()),
            Programs::new(Some(bin.as_os_str())),
        );
        Fixture { dir, handler }
    }

    impl Fixture {
        fn calls(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
        }
        fn power_state(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("sys/power/state")).unwrap()
        }
    }

    #[tokio::test]
    async fn systemd_first() {
        let f = fixture(
            &[
                ("systemctl", "[ \"$1\" = status ] && exit 3; exit 0"),
                ("pm-is-supported", "exit 0"),
            ],
            Some("freeze mem disk\n"),
        );
        f.handler.suspend(SuspendMode::Hybrid).await.unwrap();
        assert_eq!(
            f.calls(),
            "systemctl status systemd-hybrid-sleep\nsystemctl hybrid-sleep\n"
        );
        assert_eq!(f.power_state(), "freeze mem disk\n");
    }

    #[tokio::test]
    async fn falls_back_to_pm_utils_then_sysfs() {
        // systemctl knows no such unit (4); pm-utils supports it but fails; sysfs works.
        let f = fixture(
            &[
                ("systemctl", "exit 4"),
                ("pm-is-supported", "exit 0"),
                ("pm-suspend", "exit 1"),
            ],
            Some("freeze mem disk\n"),
        );
        f.handler.suspend(SuspendMode::Ram).await.unwrap();
        assert_eq!(
            f.calls(),
            "systemctl status systemd-suspend\npm-is-supported --suspend\npm-suspend \n"
        );
        assert_eq!(f.power_state(), "mem");
    }

    #[tokio::test]
    async fn errors() {
        // Nothing installed, hybrid has no sysfs form.
        let f = fixture(&[], Some("freeze mem disk\n"));
        let e = f.handler.suspend(SuspendMode::Hybrid).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the requested suspend mode is not supported by the guest"
        );
        // The kernel lists no `disk`.
        let f = fixture(&[], Some("freeze mem\n"));
        let e = f.handler.suspend(SuspendMode::Disk).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the requested suspend mode is not supported by the guest"
        );
        // systemd supports it and fails; nothing else does: its error.
        let f = fixture(
            &[("systemctl", "[ \"$1\" = status ] && exit 3; exit 5")],
            None,
        );
        let e = f.handler.suspend(SuspendMode::Disk).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the helper program 'systemctl hibernate' returned an unexpected exit status code (5)"
        );
    }
}
