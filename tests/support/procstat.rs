//! What the kernel says about a process under test: resident memory, open descriptors, CPU
//! time and context switches (summed over its threads), for soak and fault tests.

/// A `kB` field of `/proc/PID/status` in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| field_of(&t, field))
        .map_or(0, |kb| kb * 1024)
}

fn field_of(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `VmRSS` in bytes.
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// Open file descriptors.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The targets of its open descriptors (for a readable failure message).
pub fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// User plus system CPU time, in clock ticks, of all its threads.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Voluntary and involuntary context switches of all its threads: their growth while the
/// process should be idle counts its wake-ups.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            field_of(&s, "voluntary_ctxt_switches").unwrap_or(0)
                + field_of(&s, "nonvoluntary_ctxt_switches").unwrap_or(0)
        })
        .sum()
}

/// CPU ticks and wake-ups over `secs` seconds of doing nothing to the process.
pub fn idle_activity(pid: u32, secs: u64) -> (u64, u64) {
    let (t0, c0) = (cpu_ticks(pid), context_switches(pid));
    std::thread::sleep(std::time::Duration::from_secs(secs));
    (
        cpu_ticks(pid).saturating_sub(t0),
        context_switches(pid).saturating_sub(c0),
    )
}
