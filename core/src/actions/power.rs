//! Power off, reboot and halt, with an optional delay and wall message, on every kind of Linux
//! guest: systemd, sysvinit, and busybox initramfs images (CloudStack system VMs) that have no
//! `shutdown` at all, where qemu-ga fails.
//!
//! Ways tried, in this order, until one works ([`PowerMethod`]):
//! 1. systemd-logind over D-Bus: `PowerOff`/`Reboot`/`Halt`, or `ScheduleShutdown` with the
//!    exact delay (and `SetWallMessage`) when there is one;
//! 2. `/sbin/shutdown -h -P|-h -H|-r +0 MESSAGE` (sysvinit, systemd's compatibility command,
//!    image-specific scripts), the command qemu-ga runs;
//! 3. `systemctl poweroff|reboot|halt`;
//! 4. `poweroff`, `reboot` or `halt` from `/sbin`, `/usr/sbin`, `/bin` or `/usr/bin` (busybox
//!    applets signal busybox init);
//! 5. `sync` and the `reboot(2)` system call.
//!
//! When the caller gets its answer: none of the protocols expects a reply on success (QGA's
//! `guest-shutdown` has `success-response: false`; oVirt's `shutdown` has no reply), but the
//! protocol loop must be free, and an error must still be reported when nothing can work. So:
//! - logind is asked synchronously: its answer comes once systemd has queued the job, long before
//!   anything stops;
//! - the other ways can end the machine at once (a busybox shim runs `poweroff -f`; `reboot(2)`
//!   never returns), so the handler only checks that at least one of them is present, publishes
//!   [`Event::ShuttingDown`], answers `Done`, and runs them in a spawned task after a short grace
//!   ([`PowerConfig::grace`]) so the answer and any event are on the wire first. A command that
//!   fails (non-zero exit) or hangs past [`PowerConfig::command_timeout`] passes to the next way;
//! - with a delay, logind's `ScheduleShutdown` keeps the exact time (and survives an agent
//!   restart); without logind the agent keeps the time itself in a spawned task, walls the
//!   message at once, and runs the chain when the delay ends. The answer is `Scheduled`.
//!
//! The message goes to logged-in users: `shutdown` walls it itself; for every other way the
//! agent runs `wall` (util-linux or busybox) first, when present. It is passed as one argv
//! element, never through a shell.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, PowerMode};
use crate::events::{Event, EventBus};
use crate::paths::Paths;

/// One way of powering off, rebooting or halting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerMethod {
    /// systemd-logind over the system D-Bus (needs the `dbus` feature).
    Logind,
    /// `/sbin/shutdown` (or `/usr/sbin/shutdown`).
    Shutdown,
    /// `systemctl` (`/bin` or `/usr/bin`).
    Systemctl,
    /// `poweroff`/`reboot`/`halt` commands (busybox applets, sysvinit, systemd links).
    InitCommand,
    /// `sync` + `reboot(2)`; needs CAP_SYS_BOOT.
    Syscall,
}

impl PowerMethod {
    /// Every way, in the order tried.
    pub const ALL: [PowerMethod; 5] = [
        PowerMethod::Logind,
        PowerMethod::Shutdown,
        PowerMethod::Systemctl,
        PowerMethod::InitCommand,
        PowerMethod::Syscall,
    ];
}

/// Settings of the power handler.
#[derive(Clone, Debug)]
pub struct PowerConfig {
    /// Root under which the commands are looked up.
    pub paths: Paths,
    /// The ways to try, in order.
    pub methods: Vec<PowerMethod>,
    /// How long one command may run before the next way is tried.
    pub command_timeout: Duration,
    /// Pause between answering the caller and running commands that may end the machine.
    pub grace: Duration,
}

impl Default for PowerConfig {
    fn default() -> Self {
        Self {
            paths: Paths::system(),
            methods: PowerMethod::ALL.to_vec(),
            command_timeout: Duration::from_secs(30),
            grace: Duration::from_millis(500),
        }
    }
}

/// CAP_SYS_BOOT, from linux/capability.h.
const CAP_SYS_BOOT: u32 = 22;

/// Longest wall message accepted (logind's own limit).
pub const MAX_MESSAGE: usize = 4096;

/// Handles [`Action::Power`].
#[derive(Debug)]
pub struct PowerHandler {
    cfg: PowerConfig,
    events: EventBus,
}

impl PowerHandler {
    /// A handler with these settings, publishing [`Event::ShuttingDown`] on `events`. On a root
    /// other than `/` (a fixture tree, a chroot being prepared) logind and `reboot(2)` are left
    /// out: both would act on the running machine, not on that root.
    pub fn new(mut cfg: PowerConfig, events: EventBus) -> Self {
        if !cfg.paths.is_system() {
            cfg.methods
                .retain(|m| !matches!(m, PowerMethod::Logind | PowerMethod::Syscall));
        }
        Self { cfg, events }
    }
}

/// `shutdown` flags, as qemu-ga passes them.
fn shutdown_flags(mode: PowerMode) -> &'static [&'static str] {
    match mode {
        PowerMode::Poweroff => &["-h", "-P"],
        PowerMode::Halt => &["-h", "-H"],
        PowerMode::Reboot => &["-r"],
    }
}

/// The verb of systemctl, logind's `ScheduleShutdown` and the init command's name.
fn verb(mode: PowerMode) -> &'static str {
    match mode {
        PowerMode::Poweroff => "poweroff",
        PowerMode::Reboot => "reboot",
        PowerMode::Halt => "halt",
    }
}

fn words(mode: PowerMode) -> &'static str {
    match mode {
        PowerMode::Poweroff => "power off",
        PowerMode::Reboot => "reboot",
        PowerMode::Halt => "halt",
    }
}

/// The message of `shutdown` when the caller gave none (qemu-ga's text).
pub const DEFAULT_MESSAGE: &str = "hypervisor initiated shutdown";

/// A command to run for one way, found under the root.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cmd {
    method: PowerMethod,
    program: PathBuf,
    args: Vec<String>,
}

impl PowerConfig {
    fn find(&self, candidates: &[&str]) -> Option<PathBuf> {
        candidates
            .iter()
            .map(|c| self.paths.join(c))
            .find(|p| is_executable(p))
    }

    /// The command for `method`, when it is present. Logind and Syscall are not commands.
    fn command(&self, method: PowerMethod, mode: PowerMode, message: Option<&str>) -> Option<Cmd> {
        let (program, args) = match method {
            PowerMethod::Shutdown => {
                let p = self.find(&["sbin/shutdown", "usr/sbin/shutdown"])?;
                let mut a: Vec<String> =
                    shutdown_flags(mode).iter().map(|s| s.to_string()).collect();
                a.push("+0".into());
                a.push(message.unwrap_or(DEFAULT_MESSAGE).to_owned());
                (p, a)
            }
            PowerMethod::Systemctl => {
                let p = self.find(&["bin/systemctl", "usr/bin/systemctl"])?;
                let mut a = vec![verb(mode).to_owned()];
                if let Some(m) = message {
                    a.push(format!("--message={m}"));
                }
                (p, a)
            }
            PowerMethod::InitCommand => {
                let n = verb(mode);
                let p = self.find(&[
                    &format!("sbin/{n}"),
                    &format!("usr/sbin/{n}"),
                    &format!("bin/{n}"),
                    &format!("usr/bin/{n}"),
                ])?;
                (p, Vec::new())
            }
            PowerMethod::Logind | PowerMethod::Syscall => return None,
        };
        Some(Cmd {
            method,
            program,
            args,
        })
    }

    fn wall_command(&self) -> Option<PathBuf> {
        self.find(&["usr/bin/wall", "bin/wall", "usr/sbin/wall", "sbin/wall"])
    }

    /// Whether `reboot(2)` may work: CAP_SYS_BOOT in this process's effective set.
    fn syscall_allowed(&self) -> bool {
        let Ok(status) = std::fs::read_to_string(self.paths.proc("self/status")) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_BOOT) != 0)
    }

    /// The ways besides logind that are present here, in order, with what is missing.
    fn fallbacks(&self, mode: PowerMode, message: Option<&str>) -> (Vec<Step>, Vec<String>) {
        let mut steps = Vec::new();
        let mut missing = Vec::new();
        for m in &self.methods {
            match m {
                PowerMethod::Logind => {}
                PowerMethod::Syscall => {
                    if self.syscall_allowed() {
                        steps.push(Step::Syscall);
                    } else {
                        missing.push("reboot(2) (no CAP_SYS_BOOT)".to_owned());
                    }
                }
                _ => match self.command(*m, mode, message) {
                    Some(c) => steps.push(Step::Command(c)),
                    None => missing.push(match m {
                        PowerMethod::Shutdown => "no shutdown command".to_owned(),
                        PowerMethod::Systemctl => "no systemctl".to_owned(),
                        _ => format!("no {} command", verb(mode)),
                    }),
                },
            }
        }
        (steps, missing)
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Command(Cmd),
    Syscall,
}

/// Child processes get a standard PATH: the shutdown scripts of images call `poweroff` and
/// friends by name, and the agent may run with an empty environment.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `cmd`, waiting at most `limit`. `Ok` when it exited 0.
async fn run_command(cmd: &Cmd, limit: Duration) -> Result<(), String> {
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = c
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.program.display()))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if text.is_empty() {
                text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            text.truncate(300);
            Err(format!(
                "{} failed ({}): {text}",
                cmd.program.display(),
                out.status
            ))
        }
        Ok(Err(e)) => Err(format!("{}: {e}", cmd.program.display())),
        Err(_) => Err(format!(
            "{} did not finish within {} s",
            cmd.program.display(),
            limit.as_secs()
        )),
    }
}

/// `sync` and `reboot(2)`. Returns only on failure.
fn reboot_syscall(mode: PowerMode) -> String {
    use nix::sys::reboot::{RebootMode, reboot};
    nix::unistd::sync();
    let how = match mode {
        PowerMode::Poweroff => RebootMode::RB_POWER_OFF,
        PowerMode::Reboot => RebootMode::RB_AUTOBOOT,
        PowerMode::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    match reboot(how) {
        Ok(never) => match never {},
        Err(e) => format!("reboot(2): {e}"),
    }
}

/// Sends `text` to every terminal with a logged-in user, with `wall` when present.
async fn wall(cfg: &PowerConfig, text: &str) {
    let Some(prog) = cfg.wall_command() else {
        tracing::info!("no wall command; the shutdown message reaches no terminal");
        return;
    };
    let spawn = tokio::process::Command::new(&prog)
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawn {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot run {}", prog.display());
            return;
        }
    };
    // wall reads the message from stdin in both util-linux and busybox.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        tracing::warn!("wall did not finish within 5 s");
    }
}

/// Runs the steps until one works; returns only when every one failed (or the machine has not
/// gone down yet after a command reported success).
async fn run_chain(
    cfg: &PowerConfig,
    mode: PowerMode,
    message: Option<&str>,
    steps: Vec<Step>,
    mut walled: bool,
) {
    let mut failures = Vec::new();
    for step in steps {
        let needs_wall = !matches!(&step, Step::Command(c) if c.method == PowerMethod::Shutdown);
        if needs_wall && !walled {
            if let Some(m) = message {
                wall(cfg, m).await;
            }
            walled = true;
        }
        match step {
            Step::Command(cmd) => {
                tracing::info!(program = %cmd.program.display(), args = ?cmd.args, "{}: running", words(mode));
                match run_command(&cmd, cfg.command_timeout).await {
                    Ok(()) => {
                        tracing::info!(program = %cmd.program.display(), "{} under way", words(mode));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "{} failed; trying the next way", words(mode));
                        failures.push(e);
                    }
                }
            }
            Step::Syscall => {
                tracing::warn!("{}: sync and reboot(2)", words(mode));
                let e = reboot_syscall(mode);
                tracing::error!(error = %e, "{} failed", words(mode));
                failures.push(e);
            }
        }
    }
    tracing::error!(tried = ?failures, "every way to {} failed", words(mode));
}

#[cfg(feature = "dbus")]
async fn logind_now(mode: PowerMode) -> Result<(), String> {
    use crate::actions::logind;
    let conn = logind::connect().await.map_err(|e| e.chain())?;
    let mgr = logind::manager(&conn).await.map_err(|e| e.chain())?;
    let r = match mode {
        PowerMode::Poweroff => logind::call("PowerOff", mgr.power_off(false)).await,
        PowerMode::Reboot => logind::call("Reboot", mgr.reboot(false)).await,
        PowerMode::Halt => logind::call("Halt", mgr.halt(false)).await,
    };
    r.map_err(|e| e.chain())
}

#[cfg(feature = "dbus")]
async fn logind_schedule(
    mode: PowerMode,
    delay: Duration,
    message: Option<&str>,
) -> Result<(), String> {
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::actions::logind;
    let conn = logind::connect().await.map_err(|e| e.chain())?;
    let mgr = logind::manager(&conn).await.map_err(|e| e.chain())?;
    // An empty, disabled message clears one left by an earlier request.
    if let Err(e) = logind::call(
        "SetWallMessage",
        mgr.set_wall_message(message.unwrap_or(""), message.is_some()),
    )
    .await
    {
        tracing::warn!(error = %e.chain(), "logind keeps its default wall message");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = (now + delay).as_micros();
    let at = u64::try_from(at).map_err(|_| "delay too long".to_owned())?;
    logind::call("ScheduleShutdown", mgr.schedule_shutdown(verb(mode), at))
        .await
        .map_err(|e| e.chain())
}

#[cfg(not(feature = "dbus"))]
async fn logind_now(_mode: PowerMode) -> Result<(), String> {
    Err("built without D-Bus support".to_owned())
}

#[cfg(not(feature = "dbus"))]
async fn logind_schedule(
    _mode: PowerMode,
    _delay: Duration,
    _message: Option<&str>,
) -> Result<(), String> {
    Err("built without D-Bus support".to_owned())
}

fn check_message(message: Option<String>) -> Result<Option<String>, ActionError> {
    let Some(m) = message else { return Ok(None) };
    if m.contains('\0') {
        return Err(ActionError::InvalidArgument(
            "The shutdown message contains a NUL byte".to_owned(),
        ));
    }
    if m.len() > MAX_MESSAGE {
        return Err(ActionError::InvalidArgument(format!(
            "The shutdown message is longer than {MAX_MESSAGE} bytes"
        )));
    }
    let m = m.trim().to_owned();
    Ok((!m.is_empty()).then_some(m))
}

impl PowerHandler {
    async fn power(
        &self,
        mode: PowerMode,
        delay: Option<Duration>,
        message: Option<String>,
    ) -> Result<Outcome, ActionError> {
        let message = check_message(message)?;
        let delay = delay.filter(|d| !d.is_zero());
        let use_logind = self.cfg.methods.contains(&PowerMethod::Logind);
        let mut logind_error = None;
        let mut walled = false;

        if use_logind {
            let r = match delay {
                Some(d) => logind_schedule(mode, d, message.as_deref()).await,
                None => {
                    if let Some(m) = &message {
                        wall(&self.cfg, m).await;
                        walled = true;
                    }
                    logind_now(mode).await
                }
            };
            match r {
                Ok(()) => {
                    tracing::info!(?delay, "{} requested from systemd-logind", words(mode));
                    return Ok(match delay {
                        Some(_) => Outcome::Scheduled,
                        None => {
                            self.events.publish(Event::ShuttingDown);
                            Outcome::Done
                        }
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "systemd-logind cannot {}; using the fallbacks", words(mode));
                    logind_error = Some(e);
                }
            }
        }

        let (steps, missing) = self.cfg.fallbacks(mode, message.as_deref());
        if steps.is_empty() {
            let mut why = Vec::new();
            if let Some(e) = logind_error {
                why.push(format!("logind: {e}"));
            }
            why.extend(missing);
            return Err(ActionError::Failed(format!(
                "No way to {} this system: {}",
                words(mode),
                why.join("; ")
            )));
        }

        let cfg = self.cfg.clone();
        let events = self.events.clone();
        match delay {
            None => {
                events.publish(Event::ShuttingDown);
                tokio::spawn(async move {
                    tokio::time::sleep(cfg.grace).await;
                    run_chain(&cfg, mode, message.as_deref(), steps, walled).await;
                });
                Ok(Outcome::Done)
            }
            Some(d) => {
                let notice = format!(
                    "{}The system will {} in {} s.",
                    message
                        .as_deref()
                        .map(|m| format!("{m}\n"))
                        .unwrap_or_default(),
                    words(mode),
                    d.as_secs()
                );
                wall(&self.cfg, &notice).await;
                tracing::info!(
                    delay_s = d.as_secs(),
                    "{} scheduled by the agent",
                    words(mode)
                );
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    // logind may have come up meanwhile; try it first again.
                    if cfg.methods.contains(&PowerMethod::Logind) && logind_now(mode).await.is_ok()
                    {
                        events.publish(Event::ShuttingDown);
                        return;
                    }
                    events.publish(Event::ShuttingDown);
                    // Recompute: the image may have changed during the delay.
                    let (steps, _) = cfg.fallbacks(mode, message.as_deref());
                    // The notice went out when it was scheduled; say it again now.
                    run_chain(&cfg, mode, message.as_deref(), steps, false).await;
                });
                Ok(Outcome::Scheduled)
            }
        }
    }
}

#[async_trait]
impl ActionHandler for PowerHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::Power]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        match action {
            Action::Power {
                mode,
                delay,
                message,
            } => self.power(mode, delay, message).await,
            other => Err(ActionError::InvalidArgument(format!(
                "power handler got {:?}",
                other.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! These run on a fixture root whose commands are scripts that record their arguments; the
    //! logind and reboot(2) ways are never enabled here (this machine must stay up). Those two
    //! are exercised in the QEMU VM tests (tests/power.rs, tests/logind.rs).
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn script(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn handler(root: &Path) -> (PowerHandler, EventBus) {
        let events = EventBus::new(8);
        let cfg = PowerConfig {
            paths: Paths::under(root),
            methods: vec![
                PowerMethod::Shutdown,
                PowerMethod::Systemctl,
                PowerMethod::InitCommand,
            ],
            command_timeout: Duration::from_secs(5),
            grace: Duration::from_millis(10),
        };
        (PowerHandler::new(cfg, events.clone()), events)
    }

    async fn wait_for(p: &Path) -> String {
        for _ in 0..500 {
            if let Ok(s) = std::fs::read_to_string(p)
                && s.ends_with('\n')
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never written", p.display());
    }

    fn record(root: &Path, name: &str) -> String {
        format!(
            "for a in \"$@\"; do printf '[%s]' \"$a\"; done >> {}/{name}.log; echo >> {}/{name}.log",
            root.display(),
            root.display()
        )
    }

    #[tokio::test]
    async fn shutdown_first_with_qemu_ga_flags_and_the_message() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        script(root, "sbin/shutdown", &record(root, "shutdown"));
        script(root, "bin/systemctl", &record(root, "systemctl"));
        let (h, events) = handler(root);
        let mut rx = events.subscribe();
        let out = h
            .run(Action::Power {
                mode: PowerMode::Poweroff,
                delay: None,
                message: Some("bye; $(rm -rf /) 'x'".into()),
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Done);
        assert_eq!(rx.recv().await.unwrap(), Event::ShuttingDown);
        assert_eq!(
            wait_for(&root.join("shutdown.log")).await,
            "[-h][-P][+0][bye; $(rm -rf /) 'x']\n"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !root.join("systemctl.log").exists(),
            "stopped at the first success"
        );

        h.run(Action::Power {
            mode: PowerMode::Reboot,
            delay: None,
            message: None,
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = std::fs::read_to_string(root.join("shutdown.log")).unwrap();
        assert!(
            log.ends_with(&format!("[-r][+0][{DEFAULT_MESSAGE}]\n")),
            "{log}"
        );
    }

    #[tokio::test]
    async fn failing_shutdown_falls_through_to_systemctl_then_init_command() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        script(
            root,
            "sbin/shutdown",
            &format!("{}\nexit 1", record(root, "shutdown")),
        );
        script(
            root,
            "usr/bin/systemctl",
            &format!(
                "{}\necho 'System has not been booted with systemd' >&2; exit 1",
                record(root, "systemctl")
            ),
        );
        script(root, "sbin/halt", &record(root, "halt"));
        let (h, _) = handler(root);
        h.run(Action::Power {
            mode: PowerMode::Halt,
            delay: None,
            message: Some("maintenance".into()),
        })
        .await
        .unwrap();
        assert_eq!(wait_for(&root.join("halt.log")).await, "\n");
        assert_eq!(
            std::fs::read_to_string(root.join("shutdown.log")).unwrap(),
            "[-h][-H][+0][maintenance]\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("systemctl.log")).unwrap(),
            "[halt][--message=maintenance]\n"
        );
    }

    #[tokio::test]
    async fn busybox_only_image_uses_the_applet_and_walls_the_message() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        script(root, "bin/reboot", &record(root, "reboot"));
        script(
            root,
            "usr/bin/wall",
            &format!("cat >> {}/wall.log", root.display()),
        );
        let (h, _) = handler(root);
        h.run(Action::Power {
            mode: PowerMode::Reboot,
            delay: None,
            message: Some("going down".into()),
        })
        .await
        .unwrap();
        assert_eq!(wait_for(&root.join("reboot.log")).await, "\n");
        assert_eq!(
            std::fs::read_to_string(root.join("wall.log")).unwrap(),
            "going down\n"
        );
    }

    #[tokio::test]
    async fn nothing_present_is_an_error_naming_what_was_missing() {
        let d = tempfile::tempdir().unwrap();
        let (h, _) = handler(d.path());
        let e = h
            .run(Action::Power {
                mode: PowerMode::Poweroff,
                delay: None,
                message: None,
            })
            .await
            .unwrap_err();
        let t = e.to_string();
        assert!(t.starts_with("No way to power off this system"), "{t}");
        assert!(
            t.contains("no shutdown command") && t.contains("no poweroff command"),
            "{t}"
        );
    }

    #[tokio::test]
    async fn non_executable_files_do_not_count() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "sbin/poweroff", "exit 0");
        std::fs::set_permissions(
            d.path().join("sbin/poweroff"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let (h, _) = handler(d.path());
        assert!(
            h.run(Action::Power {
                mode: PowerMode::Poweroff,
                delay: None,
                message: None,
            })
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn delay_is_kept_by_the_agent_without_logind() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_owned();
        script(&root, "sbin/shutdown", &record(&root, "shutdown"));
        let (h, events) = handler(&root);
        let mut rx = events.subscribe();
        let out = h
            .run(Action::Power {
                mode: PowerMode::Poweroff,
                delay: Some(Duration::from_secs(2)),
                message: Some("later".into()),
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Scheduled);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "nothing before the delay");
        assert!(!root.join("shutdown.log").exists());
        assert_eq!(rx.recv().await.unwrap(), Event::ShuttingDown);
        assert_eq!(
            wait_for(&root.join("shutdown.log")).await,
            "[-h][-P][+0][later]\n"
        );
    }

    #[tokio::test]
    async fn another_root_never_reaches_logind_or_the_syscall() {
        let d = tempfile::tempdir().unwrap();
        let h = PowerHandler::new(
            PowerConfig {
                paths: Paths::under(d.path()),
                ..PowerConfig::default()
            },
            EventBus::new(1),
        );
        assert_eq!(
            h.cfg.methods,
            [
                PowerMethod::Shutdown,
                PowerMethod::Systemctl,
                PowerMethod::InitCommand
            ]
        );
        // Nothing under the root: an error, and this machine stays up.
        assert!(
            h.run(Action::Power {
                mode: PowerMode::Poweroff,
                delay: None,
                message: None,
            })
            .await
            .is_err()
        );
    }

    #[test]
    fn message_rules() {
        assert!(check_message(Some("a\0b".into())).is_err());
        assert!(check_message(Some("x".repeat(MAX_MESSAGE + 1))).is_err());
        assert_eq!(check_message(Some("  ".into())).unwrap(), None);
        assert_eq!(
            check_message(Some(" hi \n".into())).unwrap().as_deref(),
            Some("hi")
        );
    }
}
