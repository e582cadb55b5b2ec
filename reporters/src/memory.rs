//! Memory from `/proc/meminfo` and paging counters from `/proc/vmstat`, in bytes.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Memory;

use crate::util;

/// Reads memory and paging statistics under `paths`.
pub fn read(paths: &Paths) -> Result<Memory, FactError> {
    let path = paths.proc("meminfo");
    let mut mem = parse_meminfo(&util::read(&path)?).map_err(|r| util::parse_err(&path, r))?;
    // Counters are a bonus: a kernel or tree without vmstat still has a memory report.
    if let Some(text) = util::read_opt(&paths.proc("vmstat")).ok().flatten() {
        apply_vmstat(&mut mem, &text);
    }
    Ok(mem)
}

/// Parses meminfo; `MemAvailable` (Linux 3.14+) is estimated as free + buffers + cached on
/// kernels without it, as `free` did before.
pub fn parse_meminfo(text: &str) -> Result<Memory, String> {
    let mut mem = Memory::default();
    let (mut total, mut available) = (None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        };
        match key {
            "MemTotal" => total = Some(bytes),
            "MemFree" => mem.free = bytes,
            "MemAvailable" => available = Some(bytes),
            "Buffers" => mem.buffers = bytes,
            "Cached" => mem.cached = bytes,
            "SwapTotal" => mem.swap_total = bytes,
            "SwapFree" => mem.swap_free = bytes,
            _ => {}
        }
    }
    mem.total = total.ok_or("no MemTotal")?;
    match available {
        Some(a) => mem.available = a,
        None => {
            mem.available = (mem.free + mem.buffers + mem.cached).min(mem.total);
            mem.available_estimated = true;
        }
    }
    Ok(mem)
}

/// Adds the vmstat counters; `pgpgin`/`pgpgout` count KiB, the rest pages or events.
pub fn apply_vmstat(mem: &mut Memory, text: &str) {
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "pgpgin" => mem.page_in = n.saturating_mul(1024),
            "pgpgout" => mem.page_out = n.saturating_mul(1024),
            "pswpin" => mem.swap_in = n,
            "pswpout" => mem.swap_out = n,
            "pgfault" => mem.faults = n,
            "pgmajfault" => mem.major_faults = n,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_fixture() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let m = read(&p).unwrap();
        assert_eq!(m.total, 2_030_148 * 1024);
        assert_eq!(m.available, 1_612_340 * 1024);
        assert!(!m.available_estimated);
        assert_eq!(m.swap_total, 998_396 * 1024);
        assert_eq!(m.page_in, 512_345 * 1024);
        assert_eq!(m.major_faults, 2_211);
        assert_eq!(m.swap_out, 12);
    }

    #[test]
    fn old_kernel_without_memavailable() {
        let m = parse_meminfo(
            "MemTotal:        1021500 kB\nMemFree:          100000 kB\nBuffers:           20000 kB\n\
             Cached:           300000 kB\nSwapCached:            0 kB\nSwapTotal:       2097148 kB\n\
             SwapFree:        2097148 kB\n",
        )
        .unwrap();
        assert!(m.available_estimated);
        assert_eq!(m.available, 420_000 * 1024);
        assert_eq!(m.buffers, 20_000 * 1024);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_meminfo("nonsense\nMemFree: x kB\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(&Paths::under(dir.path())),
            Err(FactError::Io { .. })
        ));
    }
}
