//! What the kernel says about a process: resident memory, its peak, context switches, fds.

use std::collections::HashMap;
use std::path::Path;

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, field).map(|kb| kb * 1024)
}

fn status_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size in bytes.
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS").unwrap_or(0)
}

/// Proportional set size in bytes: shared pages divided among the processes mapping them.
pub fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| status_field(&t, "Pss"))
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident set size (since start or the last [`reset_peak`]) in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM").unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux 4.0+); false when the kernel refuses.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Voluntary context switches of each thread of the process (by thread id): each one is a
/// time the thread went to sleep, so their growth over an idle period counts wake-ups.
/// Involuntary switches are left out: they are preemptions of a thread that was running
/// anyway (on a loaded machine, the bench's own oVirt host reader, woken by a heartbeat,
/// preempting the agent that wrote it), not wake-ups. `/proc/PID/status` alone has only the
/// main thread's.
pub fn context_switches(pid: u32) -> HashMap<String, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("status")).ok()?;
            let n = status_field(&s, "voluntary_ctxt_switches").unwrap_or(0);
            Some((t.file_name().to_string_lossy().into_owned(), n))
        })
        .collect()
}

/// Context switches since `before` (from [`context_switches`]), thread by thread: a thread
/// that ended in between (an idle worker leaving) takes its count with it, and summing whole
/// processes would then lose the others' switches against it. Threads started since count
/// from zero; those that ended count nothing (their last switches are not readable).
pub fn context_switches_since(pid: u32, before: &HashMap<String, u64>) -> u64 {
    context_switches(pid)
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// Threads of the process.
pub fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field(&s, "Threads"))
        .unwrap_or(0)
}

/// User plus system CPU time in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After ')': state is field 3, so utime (14) is index 11 and stime (15) index 12.
    num(11) + num(12)
}

/// Size of a file in bytes (0 when missing).
pub fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
