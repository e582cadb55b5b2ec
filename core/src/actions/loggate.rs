//! The log gate: while filesystems are frozen, log lines must not reach a file on a frozen
//! filesystem (a log file, or journald's, whose pipe would fill), or the agent would block in
//! `write` and stop answering, the thaw included. Lines are held in memory instead and written
//! once the last freeze is undone.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many freezers are in frozen state (one in an agent; tests run several).
static FROZEN_FREEZERS: AtomicUsize = AtomicUsize::new(0);
/// Log bytes kept while frozen, written out after the thaw; beyond this size they are counted
/// and dropped.
const HELD_LOG_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
struct HeldLogs {
    buf: Vec<u8>,
    dropped: usize,
}

impl HeldLogs {
    const fn new() -> Self {
        Self {
            buf: Vec::new(),
            dropped: 0,
        }
    }
}

static HELD: Mutex<HeldLogs> = Mutex::new(HeldLogs::new());

/// True while filesystems are frozen: log output must not reach a file on a frozen
/// filesystem (journald's or a log file's), or the agent would block in `write`.
pub fn logging_held() -> bool {
    FROZEN_FREEZERS.load(Ordering::SeqCst) > 0
}

pub(crate) fn hold_logs() {
    FROZEN_FREEZERS.fetch_add(1, Ordering::SeqCst);
}

pub(crate) fn release_logs() {
    let before = FROZEN_FREEZERS
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(1))
        })
        .unwrap_or(0);
    if before <= 1 {
        let _ = flush_held_logs(&HELD, &mut std::io::stderr());
    }
}

fn hold_bytes(store: &Mutex<HeldLogs>, buf: &[u8]) {
    if let Ok(mut held) = store.lock() {
        if held.buf.len() + buf.len() <= HELD_LOG_LIMIT {
            held.buf.extend_from_slice(buf);
        } else {
            held.dropped += buf.len();
        }
    }
}

fn flush_held_logs(store: &Mutex<HeldLogs>, out: &mut dyn Write) -> std::io::Result<()> {
    let (buf, dropped) = {
        let Ok(mut held) = store.lock() else {
            return Ok(());
        };
        (
            std::mem::take(&mut held.buf),
            std::mem::take(&mut held.dropped),
        )
    };
    if !buf.is_empty() {
        out.write_all(&buf)?;
    }
    if dropped > 0 {
        writeln!(
            out,
            "guestd: {dropped} bytes of log output were dropped while filesystems were frozen"
        )?;
    }
    Ok(())
}

/// Standard error behind the freeze gate: while frozen, lines are held in memory (up to
/// 64 KiB) and written after the thaw. The binary's log subscriber writes through this
/// (`with_writer(|| LogGate)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogGate;

impl Write for LogGate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if logging_held() {
            hold_bytes(&HELD, buf);
            return Ok(buf.len());
        }
        let mut err = std::io::stderr().lock();
        flush_held_logs(&HELD, &mut err)?;
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if logging_held() {
            return Ok(());
        }
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_logs_are_bounded_and_flushed() {
        let store = Mutex::new(HeldLogs::new());
        hold_bytes(&store, b"held line\n");
        hold_bytes(&store, &vec![b'x'; HELD_LOG_LIMIT]);
        let mut out = Vec::new();
        flush_held_logs(&store, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "held line\nguestd: {HELD_LOG_LIMIT} bytes of log output were dropped while \
                 filesystems were frozen\n"
            )
        );
        let mut out = Vec::new();
        flush_held_logs(&store, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
