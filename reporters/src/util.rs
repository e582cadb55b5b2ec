//! Small helpers every reporter shares: reading files into [`FactError`]s, and running work
//! that may block off the async runtime with a deadline.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
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

/// Runs `f` on a fact thread and waits at most `limit` for it, without blocking the async
/// runtime. Fact threads rather than `spawn_blocking`: a call stuck in the kernel (statvfs on
/// a dead NFS server) must not keep a runtime from shutting down, which waits for its blocking
/// pool. The stuck thread is left behind and ends whenever the kernel lets it.
pub(crate) async fn off_runtime<T, F>(what: &str, limit: Duration, f: F) -> Result<T, FactError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_job(Box::new(move || {
        let _ = tx.send(f());
    }))
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

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Fact threads waiting for a job, each with an id so it can take itself off the list.
static IDLE: Mutex<Vec<(u64, mpsc::Sender<Job>)>> = Mutex::new(Vec::new());
static NEXT_WORKER: AtomicU64 = AtomicU64::new(0);
/// Idle threads kept at most; more than one fact is read at once only for full reports.
const MAX_IDLE: usize = 4;
/// An idle thread leaves after this long, so a quiet agent holds no extra threads.
const IDLE_FOR: Duration = Duration::from_secs(30);

fn idle_list() -> std::sync::MutexGuard<'static, Vec<(u64, mpsc::Sender<Job>)>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `job` on an idle fact thread, or on a new one. Starting a thread for every fact cost
/// more than reading most facts; a thread that is stuck never comes back to the idle list,
/// so it cannot delay later jobs.
fn spawn_job(mut job: Job) -> std::io::Result<()> {
    loop {
        let Some((_, tx)) = idle_list().pop() else {
            break;
        };
        match tx.send(job) {
            Ok(()) => return Ok(()),
            // Cannot happen while the worker holds its receiver; take the job back anyway.
            Err(mpsc::SendError(j)) => job = j,
        }
    }
    let id = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("guestd-fact".into())
        .spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                job();
                {
                    let mut idle = idle_list();
                    if idle.len() >= MAX_IDLE {
                        return;
                    }
                    idle.push((id, tx.clone()));
                }
                next = match rx.recv_timeout(IDLE_FOR) {
                    Ok(j) => Some(j),
                    Err(_) => {
                        let mut idle = idle_list();
                        match idle.iter().position(|(i, _)| *i == id) {
                            Some(p) => {
                                idle.remove(p);
                                None
                            }
                            // Taken off the list by a caller: its job is on the way.
                            None => {
                                drop(idle);
                                rx.recv().ok()
                            }
                        }
                    }
                };
            }
        })?;
    Ok(())
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
        let spawned = spawn_job(Box::new(move || {
            let _ = tx.send((i, job()));
        }));
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
    fn fact_threads_are_reused_and_a_stuck_one_delays_nothing() {
        let run = |f: Box<dyn FnOnce() -> std::thread::ThreadId + Send>| {
            let (tx, rx) = mpsc::channel();
            spawn_job(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
            rx.recv_timeout(Duration::from_secs(5)).unwrap()
        };
        // Other tests run jobs at the same time, so look for reuse over a few rounds.
        let ids: Vec<_> = (0..20)
            .map(|_| run(Box::new(|| std::thread::current().id())))
            .collect();
        let mut distinct = ids.clone();
        distinct.sort_by_key(|i| format!("{i:?}"));
        distinct.dedup();
        assert!(distinct.len() < ids.len(), "no thread was reused: {ids:?}");
        assert!(ids.iter().all(|i| *i != std::thread::current().id()));

        let (stuck_tx, stuck_rx) = mpsc::channel::<()>();
        spawn_job(Box::new(move || {
            let _ = stuck_rx.recv_timeout(Duration::from_secs(10));
        }))
        .unwrap();
        let start = std::time::Instant::now();
        for _ in 0..10 {
            run(Box::new(|| std::thread::current().id()));
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(stuck_tx);
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
