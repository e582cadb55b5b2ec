//! CPU counts, the per-CPU online state (QGA's vCPUs) and per-CPU times from `/proc/stat`.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Cpus;
use guestd_core::sysfacts::{CpuStats, Vcpu};

use crate::util;

/// Online and present logical CPUs from `sys/devices/system/cpu/{online,present}`.
pub fn read(paths: &Paths) -> Result<Cpus, FactError> {
    let list = |name: &str| -> Result<u32, FactError> {
        let path = paths.sys("devices/system/cpu").join(name);
        let text = util::read(&path)?;
        let cpus = util::parse_cpu_list(&text).ok_or_else(|| util::parse_err(&path, "bad list"))?;
        Ok(cpus.len() as u32)
    };
    let online = list("online")?;
    let present = list("present").unwrap_or(online);
    Ok(Cpus { online, present })
}

/// Every `cpuN` with its online state; `can_offline` when its `online` file is writable (cpu0
/// usually has none).
pub fn vcpus(paths: &Paths) -> Result<Vec<Vcpu>, FactError> {
    let dir = paths.sys("devices/system/cpu");
    let entries = std::fs::read_dir(&dir).map_err(|e| util::io_err(&dir, e))?;
    let mut out: Vec<Vcpu> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let id: u32 = name.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            let online_file = e.path().join("online");
            let (online, can_offline) = match std::fs::metadata(&online_file) {
                Ok(md) => (
                    util::attr(&online_file).as_deref() != Some("0"),
                    md.permissions().mode() & 0o200 != 0,
                ),
                Err(_) => (true, false),
            };
            Some(Vcpu {
                logical_id: id,
                online,
                can_offline,
            })
        })
        .collect();
    out.sort_by_key(|v| v.logical_id);
    Ok(out)
}

use std::os::unix::fs::PermissionsExt;

/// Per-CPU times from `proc/stat`, converted from clock ticks to milliseconds.
pub fn cpu_stats(paths: &Paths) -> Result<Vec<CpuStats>, FactError> {
    let path = paths.proc("stat");
    Ok(parse_stat(&util::read(&path)?, clock_ticks()))
}

/// `USER_HZ`, the unit of `/proc/stat`; 100 on every Linux we know, asked anyway.
fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Parses the `cpuN` lines of `/proc/stat` (not the `cpu` total).
pub fn parse_stat(text: &str, ticks_per_sec: u64) -> Vec<CpuStats> {
    let ms = |t: u64| t.saturating_mul(1000) / ticks_per_sec.max(1);
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let cpu: u32 = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
            let opt = |i: usize| v.get(i).map(|&t| ms(t));
            Some(CpuStats {
                cpu,
                user: ms(*v.first()?),
                nice: ms(*v.get(1)?),
                system: ms(*v.get(2)?),
                idle: ms(*v.get(3)?),
                iowait: opt(4),
                irq: opt(5),
                softirq: opt(6),
                steal: opt(7),
                guest: opt(8),
                guest_nice: opt(9),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Paths {
        Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ))
    }

    #[test]
    fn counts() {
        assert_eq!(
            read(&fixture()).unwrap(),
            Cpus {
                online: 3,
                present: 4
            }
        );
    }

    #[test]
    fn vcpus_from_sysfs() {
        let v = vcpus(&fixture()).unwrap();
        let ids: Vec<(u32, bool)> = v.iter().map(|c| (c.logical_id, c.online)).collect();
        assert_eq!(ids, [(0, true), (1, true), (2, true), (3, false)]);
        assert!(!v[0].can_offline, "cpu0 has no online file");
    }

    #[test]
    fn stat_in_ms() {
        let s = parse_stat(
            "cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 25241 3 6789 74516 659 0 58 378 0 0\n\
             cpu1 10 20 30 40\nintr 1 2 3\nbtime 1700000000\n",
            100,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].user, 252_410);
        assert_eq!(s[0].nice, 30);
        assert_eq!(s[0].steal, Some(3780));
        assert_eq!(s[1].iowait, None, "old kernels have four columns");
    }
}
