//! Small helpers every reporter shares: reading files into [`FactError`]s, and running work
//! that may block off the async runtime with a deadline.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use guestd_core::contract::FactError;

/// The whole file as text (lossy: /proc and package databases are not always UTF-8).
pub(crate) fn read(path: &Path) -> Result<String, FactError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        Err(source) => Err(io_err(path, source)),
    }
}

/// Like [`read`], but a file that does not exist is `None`.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, FactError> {
    match read(path) {
        Ok(s) => Ok(Some(s)),
        Err(FactError::Io { source, .. }) if is_absent(&source) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first line, trimmed; `None` when the file is missing, unreadable or empty. For sysfs
/// attributes, where a missing or refusing attribute just means "not known".
pub(crate) fn attr(path: &Path) -> Option<String> {
    let s = std::fs::read(path).ok()?;
    let s = String::from_utf8_lossy(&s);
    let line = s.lines().next().unwrap_or("").trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// A sysfs attribute parsed as a number.
pub(crate) fn attr_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    attr(path)?.parse().ok()
}

/// The file or directory is not there (as opposed to unreadable).
pub(crate) fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> FactError {
    FactError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn parse_err(path: &Path, reason: impl Into<String>) -> FactError {
    FactError::Parse {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Runs `f` on a thread of its own and waits at most `limit` for it, without blocking the
/// async runtime. A plain thread rather than `spawn_blocking`: a call stuck in the kernel
/// (statvfs on a dead NFS server) must not keep a runtime from shutting down, which waits
/// for its blocking pool. The stuck thread is left behind and ends whenever the kernel
/// lets it.
pub(crate) async fn off_runtime<T, F>(what: &str, limit: Duration, f: F) -> Result<T, FactError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("guestd-fact".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|source| FactError::Io {
            path: format!("a thread for {what}"),
            source,
        })?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(FactError::Unavailable(format!(
            "{what} failed (thread died)"
        ))),
        Err(_) => Err(FactError::Timeout {
            what: what.to_owned(),
            seconds: limit.as_secs().max(1),
        }),
    }
}

/// The synchronous form of [`off_runtime`] for code already on a worker thread: run each
/// job on its own thread and give back, in order, what finished before `limit`.
pub(crate) fn each_with_deadline<T, F>(jobs: Vec<F>, limit: Duration) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let mut out: Vec<Option<T>> = Vec::with_capacity(jobs.len());
    let mut started = 0usize;
    for (i, job) in jobs.into_iter().enumerate() {
        out.push(None);
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("guestd-fact".into())
            .spawn(move || {
                let _ = tx.send((i, job()));
            });
        if spawned.is_ok() {
            started += 1;
        }
    }
    drop(tx);
    let deadline = std::time::Instant::now() + limit;
    for _ in 0..started {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, v)) => {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(v);
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Parses a kernel CPU list (`0-3,5,7-8`) into its members.
pub(crate) fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5\n"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn deadline_leaves_slow_jobs_behind() {
        let jobs: Vec<Box<dyn FnOnce() -> u32 + Send>> = vec![
            Box::new(|| 1),
            Box::new(|| {
                std::thread::sleep(Duration::from_secs(5));
                2
            }),
            Box::new(|| 3),
        ];
        let got = each_with_deadline(jobs, Duration::from_millis(300));
        assert_eq!(got, vec![Some(1), None, Some(3)]);
    }

    #[tokio::test]
    async fn off_runtime_times_out() {
        let r = off_runtime("sleepy", Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(3))
        })
        .await;
        assert!(matches!(r, Err(FactError::Timeout { .. })), "{r:?}");
        assert_eq!(
            off_runtime("quick", Duration::from_secs(5), || 7)
                .await
                .ok(),
            Some(7)
        );
    }
}
