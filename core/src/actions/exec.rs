//! Running helper programs (chpasswd, hwclock, systemctl, pm-utils, hooks) the way qemu-ga
//! does: in a new session (`setsid`), stdio on `/dev/null` (stdin optionally fed from memory and
//! closed), waited for synchronously; plus a deadline after which the program's whole process
//! group gets SIGTERM, then SIGKILL.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Time a program gets between SIGTERM and SIGKILL once its deadline passed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Where helper programs are looked for when no search path is configured, after `$PATH`
/// (services often run with a `$PATH` lacking the sbin directories).
const DEFAULT_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The directories helper programs are looked up in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    dirs: Vec<PathBuf>,
}

impl Programs {
    /// `exec_path` (colon-separated, like `$PATH`), or `$PATH` plus the usual sbin and bin
    /// directories when `None`.
    pub fn new(exec_path: Option<&OsStr>) -> Self {
        let dirs = match exec_path {
            Some(p) => std::env::split_paths(p).collect(),
            None => {
                let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect())
                    .unwrap_or_default();
                for d in DEFAULT_DIRS {
                    let d = PathBuf::from(d);
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                dirs
            }
        };
        Self { dirs }
    }

    /// The first executable regular file called `name` in the search directories.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .filter(|d| d.is_absolute())
            .map(|d| d.join(name))
            .find(|p| is_executable_file(p))
    }

    /// The search path, as configured.
    pub fn search_path(&self) -> OsString {
        std::env::join_paths(&self.dirs).unwrap_or_default()
    }
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when `program` is (a link to) busybox, whose applets differ from the real tools.
pub fn is_busybox(program: &Path) -> bool {
    std::fs::canonicalize(program)
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("busybox"))
        })
        .unwrap_or(false)
}

/// How running a program failed before it could report a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// It could not be started (or waited for).
    #[error("cannot run it: {}", .0.desc())]
    Spawn(Errno),
    /// It ran past its deadline and was killed.
    #[error("it did not finish within {} s and was killed", .0.as_secs_f64())]
    TimedOut(Duration),
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Run `program` with `args` in a new session, stdio on `/dev/null` except `stdin`, which is
/// written to the program and closed; wait for it, at most `deadline`.
pub async fn run(
    program: &Path,
    args: &[&OsStr],
    stdin: Option<&[u8]>,
    deadline: Duration,
) -> Result<ExitStatus, ExecError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| ExecError::Spawn(errno_of(&e)))?;
    // The child leads its own session, so its pid is its process group id.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut input = child.stdin.take();
    let work = async {
        if let (Some(pipe), Some(data)) = (input.as_mut(), stdin) {
            // A program that exits without reading all of it is its own business: its status
            // tells.
            let _ = pipe.write_all(data).await;
            let _ = pipe.shutdown().await;
        }
        drop(input);
        child.wait().await
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(ExecError::Spawn(errno_of(&e))),
        Err(_) => {
            tracing::warn!(program = %program.display(), deadline_s = deadline.as_secs_f64(),
                "program ran past its deadline; killing its process group");
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
            }
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                let _ = child.wait().await;
            }
            Err(ExecError::TimedOut(deadline))
        }
    }
}

/// How a program ended, in qemu-ga's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exit status 0.
    Success,
    /// Another exit status.
    Status(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl From<ExitStatus> for Ended {
    fn from(s: ExitStatus) -> Self {
        match (s.code(), s.signal()) {
            (Some(0), _) => Ended::Success,
            (Some(c), _) => Ended::Status(c),
            (None, sig) => Ended::Signal(sig.unwrap_or(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "").unwrap(); // not executable
        std::fs::write(b.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        let p = Programs::new(Some(&path));
        assert_eq!(p.find("tool"), Some(b.join("tool")));
        assert_eq!(p.find("missing"), None);
        assert_eq!(Programs::new(Some(OsStr::new(""))).find("sh"), None);
        assert!(Programs::new(None).find("sh").is_some());
    }

    #[tokio::test]
    async fn feeds_stdin_and_reports_status() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let script = format!("cat > {}; exit 3", out.display());
        let status = run(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(&script)],
            Some(b"user:secret\n"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(Ended::from(status), Ended::Status(3));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "user:secret\n");
        let e = run(Path::new("/nonexistent"), &[], None, Duration::from_secs(1)).await;
        assert_eq!(e, Err(ExecError::Spawn(Errno::ENOENT)));
    }
}
