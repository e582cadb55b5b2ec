//! Running hook scripts: one program, or every program in a directory, with a deadline.
//!
//! The rules follow qemu-ga's fsfreeze hook, which image builders already write scripts for:
//! the hook must be executable (checked first, so a missing hook gives a clear error instead of
//! a spawn failure), it runs synchronously in a new session (`setsid`) with stdin, stdout and
//! stderr on `/dev/null` and its arguments as given, exit status 0 is success, any other status
//! or a signal is a failure. What qemu-ga lacks and we add: a deadline, after which the hook's
//! whole process group gets SIGTERM, then SIGKILL, so a hung hook cannot hang the agent.
//!
//! A directory of hooks is run the way Debian's `/etc/qemu/fsfreeze-hook` runs
//! `fsfreeze-hook.d/`: every executable regular file, in byte order of the names, skipping
//! editor and package-manager leftovers (`*~`, `*.bak`, `*.orig`, `*.rpm*`, `*.sample`,
//! `*.dpkg-*`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::{AccessFlags, access};

use super::exec::{self, Ended, ExecError};

/// How to run a hook.
#[derive(Clone, Debug)]
pub struct HookSpec {
    /// What the hook is called in error texts (`fsfreeze hook`).
    pub what: String,
    /// Longest time the hook may run before it is killed.
    pub deadline: Duration,
}

impl HookSpec {
    /// A hook named `what` in error texts, killed after `deadline`.
    pub fn new(what: impl Into<String>, deadline: Duration) -> Self {
        Self {
            what: what.into(),
            deadline,
        }
    }
}

/// Why a hook did not succeed. The texts are qemu-ga's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The hook is missing or not executable.
    #[error("can't access {what} '{}': {}", path.display(), errno.desc())]
    NotAccessible {
        /// What the hook is.
        what: String,
        /// Its path.
        path: PathBuf,
        /// Why `access(X_OK)` refused.
        errno: Errno,
    },
    /// It could not be started.
    #[error("failed to execute {what} '{}': {}", path.display(), errno.desc())]
    Spawn {
        /// What the hook is.
        what: String,
        /// Its path.
        path: PathBuf,
        /// Why it could not be started.
        errno: Errno,
    },
    /// It exited with a non-zero status.
    #[error("{what} has failed with status {status}")]
    Failed {
        /// What the hook is.
        what: String,
        /// The exit status.
        status: i32,
    },
    /// It was killed by a signal (not ours).
    #[error("{what} has terminated abnormally")]
    Signaled {
        /// What the hook is.
        what: String,
        /// The signal number.
        signal: i32,
    },
    /// It ran past its deadline and was killed.
    #[error("{what} did not finish within {} s and was killed", deadline.as_secs_f64())]
    TimedOut {
        /// What the hook is.
        what: String,
        /// The deadline it ran past.
        deadline: Duration,
    },
}

/// Run `path` with `args` under `spec`'s rules; `Ok` when it exited with status 0.
pub async fn run_hook(path: &Path, args: &[&OsStr], spec: &HookSpec) -> Result<(), HookError> {
    if let Err(errno) = access(path, AccessFlags::X_OK) {
        return Err(HookError::NotAccessible {
            what: spec.what.clone(),
            path: path.to_owned(),
            errno,
        });
    }
    match exec::run(path, args, None, spec.deadline).await {
        Ok(status) => match Ended::from(status) {
            Ended::Success => Ok(()),
            Ended::Status(status) => Err(HookError::Failed {
                what: spec.what.clone(),
                status,
            }),
            Ended::Signal(signal) => Err(HookError::Signaled {
                what: spec.what.clone(),
                signal,
            }),
        },
        Err(ExecError::Spawn(errno)) => Err(HookError::Spawn {
            what: spec.what.clone(),
            path: path.to_owned(),
            errno,
        }),
        Err(ExecError::TimedOut(deadline)) => Err(HookError::TimedOut {
            what: spec.what.clone(),
            deadline,
        }),
    }
}

/// The result of one script of a hook directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirHookResult {
    /// The script.
    pub path: PathBuf,
    /// How it went.
    pub result: Result<(), HookError>,
}

/// True for names Debian's hook runner skips: backups and package-manager leftovers.
fn skipped_name(name: &OsStr) -> bool {
    let n = name.as_bytes();
    let contains = |needle: &[u8]| n.windows(needle.len()).any(|w| w == needle);
    n.starts_with(b".")
        || n.ends_with(b"~")
        || n.ends_with(b".bak")
        || n.ends_with(b".orig")
        || n.ends_with(b".sample")
        || contains(b".rpm")
        || contains(b".dpkg-")
}

/// The scripts of a hook directory, in the order they run. A missing directory has none.
pub fn list_hook_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if skipped_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as `[ -x ]` in a shell runner does.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Run every script of `dir` (see [`list_hook_dir`]) with `args`, one after the other, each
/// under `spec`'s deadline. All run even when one fails; the results come in run order.
pub async fn run_hook_dir(
    dir: &Path,
    args: &[&OsStr],
    spec: &HookSpec,
) -> std::io::Result<Vec<DirHookResult>> {
    let mut results = Vec::new();
    for path in list_hook_dir(dir)? {
        let result = run_hook(&path, args, spec).await;
        if let Err(e) = &result {
            tracing::warn!(hook = %path.display(), error = %e, "hook failed");
        }
        results.push(DirHookResult { path, result });
    }
    Ok(results)
}

/// Run `path` as one hook, or, when it is a directory, every hook in it; the first failure is
/// the result (all scripts of a directory still run).
pub async fn run_hook_or_dir(
    path: &Path,
    args: &[&OsStr],
    spec: &HookSpec,
) -> Result<(), HookError> {
    if path.is_dir() {
        let results =
            run_hook_dir(path, args, spec)
                .await
                .map_err(|e| HookError::NotAccessible {
                    what: spec.what.clone(),
                    path: path.to_owned(),
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
        results
            .into_iter()
            .map(|r| r.result)
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    } else {
        run_hook(path, args, spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "#!/bin/sh\n{body}").unwrap();
        drop(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn spec(secs: u64) -> HookSpec {
        HookSpec::new("fsfreeze hook", Duration::from_secs(secs))
    }

    #[tokio::test]
    async fn exit_codes_and_texts() {
        let d = tempfile::tempdir().unwrap();
        let ok = script(d.path(), "ok", "exit 0");
        let seven = script(d.path(), "seven", "exit 7");
        let killed = script(d.path(), "killed", "kill -9 $$");
        assert_eq!(run_hook(&ok, &[], &spec(10)).await, Ok(()));
        let e = run_hook(&seven, &[], &spec(10)).await.unwrap_err();
        assert_eq!(e.to_string(), "fsfreeze hook has failed with status 7");
        let e = run_hook(&killed, &[], &spec(10)).await.unwrap_err();
        assert_eq!(e.to_string(), "fsfreeze hook has terminated abnormally");
        assert!(matches!(e, HookError::Signaled { signal: 9, .. }));
        let missing = d.path().join("missing");
        let e = run_hook(&missing, &[], &spec(10)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "can't access fsfreeze hook '{}': No such file or directory",
                missing.display()
            )
        );
        let noexec = d.path().join("noexec");
        std::fs::write(&noexec, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
        // root passes access(X_OK) only when some execute bit is set.
        let e = run_hook(&noexec, &[], &spec(10)).await.unwrap_err();
        assert!(
            matches!(
                e,
                HookError::NotAccessible {
                    errno: Errno::EACCES,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn arguments_stdio_and_session() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        // Records its arguments, whether stdin is /dev/null, and whether it leads its session.
        let h = script(
            d.path(),
            "h",
            &format!(
                "echo \"$@\" > {o}\nreadlink /proc/self/fd/0 >> {o}\n\
                 echo \"sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$\" >> {o}\necho noise; echo err >&2",
                o = out.display()
            ),
        );
        run_hook(&h, &[OsStr::new("freeze"), OsStr::new("x y")], &spec(10))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "freeze x y");
        assert_eq!(lines[1], "/dev/null");
        let (sid, pid) = lines[2].split_once(' ').unwrap();
        assert_eq!(
            sid.trim_start_matches("sid="),
            pid.trim_start_matches("pid=")
        );
    }

    #[tokio::test]
    async fn deadline_kills_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("bg.pid");
        // A background child that would outlive its parent, and a parent that hangs.
        let h = script(
            d.path(),
            "hang",
            &format!("sleep 300 &\necho $! > {}\nsleep 300", pidfile.display()),
        );
        let spec = HookSpec::new("fsfreeze hook", Duration::from_millis(500));
        let e = run_hook(&h, &[], &spec).await.unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e:?}");
        let bg: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep got SIGTERM with its group; give the kernel a moment to reap.
        let mut gone = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{bg}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "background child {bg} survived the deadline");
    }

    #[tokio::test]
    async fn directory_order_skips_and_first_failure() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = d.path().join("hook.d");
        std::fs::create_dir(&hooks).unwrap();
        for name in [
            "20-b",
            "10-a",
            "30-c.dpkg-old",
            "40-d~",
            "50-e.bak",
            "60-f.sample",
        ] {
            script(
                &hooks,
                name,
                &format!("echo {name} $1 >> {}", log.display()),
            );
        }
        script(
            &hooks,
            "25-fail",
            &format!("echo 25-fail >> {}\nexit 3", log.display()),
        );
        std::fs::write(hooks.join("15-notexec"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(hooks.join("17-dir")).unwrap();
        let names: Vec<String> = list_hook_dir(&hooks)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a", "20-b", "25-fail"]);
        let r = run_hook_or_dir(&hooks, &[OsStr::new("thaw")], &spec(10)).await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "fsfreeze hook has failed with status 3"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "10-a thaw\n20-b thaw\n25-fail\n"
        );
        assert!(list_hook_dir(&d.path().join("none")).unwrap().is_empty());
    }
}
