//! Processes started for QGA's `guest-exec`, kept until a `guest-exec-status` reports their
//! exit.
//!
//! qemu-ga's semantics: the program is looked up in the agent's `PATH`; `env`, when given,
//! replaces the whole environment; input data is written to stdin, which is then closed;
//! output is collected only to report it after exit, up to 16 MiB per stream (the rest is
//! read and dropped, and the stream marked truncated); "exited" means the process exited
//! *and* its output pipes reached end of file; the status that reports the exit removes the
//! entry. Every process is reaped by its own task, so none is left a zombie even if the host
//! never asks. The table is bounded: at most [`MAX_PROCESSES`] unreported processes.

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::oserror::strerror;

/// qemu-ga's cap on captured output, per stream.
pub const MAX_OUTPUT: usize = 16 << 20;
/// Most processes kept at once (running, or exited and not yet reported).
pub const MAX_PROCESSES: usize = 256;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which output to collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Capture {
    /// None: stdout and stderr go to `/dev/null`.
    #[default]
    None,
    /// Only stdout.
    Stdout,
    /// Only stderr.
    Stderr,
    /// Both, separately.
    Separated,
    /// Both, merged into the stdout data (stderr is a dup of stdout).
    Merged,
}

/// A process to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program, looked up in `PATH` unless it contains a `/`.
    pub path: String,
    /// Arguments after argv\[0\] (which is `path`).
    pub args: Vec<String>,
    /// The whole environment (`NAME=value` entries), or `None` to inherit the agent's.
    pub env: Option<Vec<String>>,
    /// Written to stdin, which is then closed; without it stdin is `/dev/null`.
    pub input: Option<Vec<u8>>,
    /// Output to collect.
    pub capture: Capture,
}

/// Collected output of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The bytes, at most [`MAX_OUTPUT`].
    pub data: Vec<u8>,
    /// More was written and dropped.
    pub truncated: bool,
}

/// The state of a started process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecStatus {
    /// Exited and its output collected.
    pub exited: bool,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed it.
    pub signal: Option<i32>,
    /// Collected stdout (merged output included), when captured.
    pub stdout: Option<Output>,
    /// Collected stderr, when captured separately.
    pub stderr: Option<Output>,
}

/// Why a process could not be started or asked about; texts as qemu-ga's.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be run.
    #[error(
        "Guest agent command failed, error was 'Failed to execute child process \u{201C}{path}\u{201D} ({})'",
        strerror(.source)
    )]
    Spawn {
        /// The program as asked for.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No process with this pid was started by the agent (or its exit was reported).
    #[error("Invalid parameter 'pid'")]
    NoSuchPid,
    /// Too many processes are kept already.
    #[error(
        "Guest agent command failed, error was 'too many processes started by the agent are still unreported'"
    )]
    TooMany,
}

#[derive(Debug, Default)]
struct Entry {
    status: Option<ExecStatus>,
}

/// The processes started by the agent, shared by every QGA session.
#[derive(Debug)]
pub struct ExecTable {
    procs: Mutex<HashMap<i64, Arc<Mutex<Entry>>>>,
    max_output: usize,
    search_path: Option<String>,
}

impl Default for ExecTable {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExecTable {
    /// An empty table with qemu-ga's output cap, searching the agent's `PATH`.
    pub fn new() -> Self {
        Self {
            procs: Mutex::new(HashMap::new()),
            max_output: MAX_OUTPUT,
            search_path: std::env::var("PATH").ok(),
        }
    }

    /// The same with another output cap (tests).
    pub fn with_max_output(max_output: usize) -> Self {
        Self {
            max_output,
            ..Self::new()
        }
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, std::io::Error> {
        if path.contains('/') {
            return Ok(PathBuf::from(path));
        }
        let search = self.search_path.as_deref().unwrap_or(DEFAULT_PATH);
        std::env::split_paths(search)
            .map(|d| d.join(path))
            .find(|p| is_executable(p))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// Start a process; returns its pid.
    pub async fn spawn(&self, req: ExecRequest) -> Result<i64, ExecError> {
        if lock(&self.procs).len() >= MAX_PROCESSES {
            return Err(ExecError::TooMany);
        }
        let spawn_err = |source| ExecError::Spawn {
            path: req.path.clone(),
            source,
        };
        let program = self.resolve(&req.path).map_err(spawn_err)?;
        let mut cmd = std::process::Command::new(&program);
        cmd.arg0(&req.path).args(&req.args);
        if let Some(env) = &req.env {
            cmd.env_clear();
            for entry in env {
                // An entry without `=` cannot be expressed through Command; it is dropped.
                if let Some((k, v)) = entry.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        cmd.stdin(if req.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut merged_reader = None;
        match req.capture {
            Capture::None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Capture::Stdout => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::null());
            }
            Capture::Stderr => {
                cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            }
            Capture::Separated => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Capture::Merged => {
                let (r, w) = std::io::pipe().map_err(spawn_err)?;
                let w2 = w.try_clone().map_err(spawn_err)?;
                cmd.stdout(w).stderr(w2);
                merged_reader = Some(r);
            }
        }
        let mut cmd = tokio::process::Command::from(cmd);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // The Command holds the merged pipe's write ends: drop it so EOF can arrive.
        drop(cmd);
        let pid = i64::from(child.id().unwrap_or(0));

        let stdin = child.stdin.take();
        let out_reader: Option<Box<dyn AsyncRead + Send + Unpin>> = match merged_reader {
            Some(r) => {
                let fd = std::os::fd::OwnedFd::from(r);
                match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                    Ok(rx) => Some(Box::new(rx)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read merged output");
                        None
                    }
                }
            }
            None => child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        };
        let err_reader = child.stderr.take();
        let capture = req.capture;
        let max = self.max_output;
        let input = req.input;

        let entry = Arc::new(Mutex::new(Entry::default()));
        lock(&self.procs).insert(pid, Arc::clone(&entry));
        tracing::debug!(pid, path = %req.path, "process started");

        tokio::spawn(async move {
            let feeder = async move {
                if let (Some(mut stdin), Some(data)) = (stdin, input) {
                    // A child that exits without reading gives EPIPE: not an error here.
                    let _ = stdin.write_all(&data).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let out = collect(out_reader, max);
            let err = collect(err_reader, max);
            let (_, out, err, status) = tokio::join!(feeder, out, err, child.wait());
            let (exit_code, signal) = match status {
                Ok(s) => (s.code(), s.signal()),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "waiting for process failed");
                    (None, None)
                }
            };
            let (stdout, stderr) = match capture {
                Capture::None => (None, None),
                Capture::Stdout | Capture::Merged => (out, None),
                Capture::Stderr => (None, err),
                Capture::Separated => (out, err),
            };
            lock(&entry).status = Some(ExecStatus {
                exited: true,
                exit_code,
                signal,
                stdout,
                stderr,
            });
            tracing::debug!(pid, ?exit_code, ?signal, "process exited");
        });
        Ok(pid)
    }

    /// The state of a process; the answer that reports its exit forgets it.
    pub fn status(&self, pid: i64) -> Result<ExecStatus, ExecError> {
        let mut procs = lock(&self.procs);
        let entry = procs.get(&pid).cloned().ok_or(ExecError::NoSuchPid)?;
        let done = lock(&entry).status.clone();
        match done {
            Some(s) => {
                procs.remove(&pid);
                Ok(s)
            }
            None => Ok(ExecStatus::default()),
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn collect<R: AsyncRead + Unpin>(reader: Option<R>, max: usize) -> Option<Output> {
    let mut r = reader?;
    let mut out = Output::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                let room = max.saturating_sub(out.data.len());
                out.data.extend_from_slice(&chunk[..n.min(room)]);
                if n > room {
                    out.truncated = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wait(t: &ExecTable, pid: i64) -> ExecStatus {
        for _ in 0..500 {
            let s = t.status(pid).unwrap();
            if s.exited {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {pid} did not exit");
    }

    fn sh(script: &str, capture: Capture) -> ExecRequest {
        ExecRequest {
            path: "sh".into(),
            args: vec!["-c".into(), script.into()],
            capture,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn separated_output_exit_code_and_reap() {
        let t = ExecTable::new();
        let pid = t
            .spawn(sh("echo hello; echo err >&2; exit 3", Capture::Separated))
            .await
            .unwrap();
        let s = wait(&t, pid).await;
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(s.stdout.unwrap().data, b"hello\n");
        assert_eq!(s.stderr.unwrap().data, b"err\n");
        assert!(matches!(t.status(pid), Err(ExecError::NoSuchPid)));
    }

    #[tokio::test]
    async fn merged_input_env_signal_and_cap() {
        let t = ExecTable::with_max_output(4);
        let mut req = sh("cat; echo E >&2; echo $A", Capture::Merged);
        req.input = Some(b"in\n".to_vec());
        req.env = Some(vec!["A=1".into()]);
        let s = wait(&t, t.spawn(req).await.unwrap()).await;
        let out = s.stdout.unwrap();
        assert_eq!(out.data, b"in\nE");
        assert!(out.truncated);
        assert!(s.stderr.is_none());

        let s = wait(&t, t.spawn(sh("kill -9 $$", Capture::None)).await.unwrap()).await;
        assert_eq!((s.exit_code, s.signal), (None, Some(9)));
        assert!(s.stdout.is_none());
    }

    #[tokio::test]
    async fn missing_program_text() {
        let t = ExecTable::new();
        let e = t
            .spawn(ExecRequest {
                path: "no-such-program-guestd".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Guest agent command failed, error was 'Failed to execute child process \u{201C}no-such-program-guestd\u{201D} (No such file or directory)'"
        );
    }
}
