//! Uptime from `/proc/uptime` and boot time from the `btime` line of `/proc/stat`.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Uptime;

use crate::util;

/// Reads uptime and boot time under `paths`.
pub fn read(paths: &Paths) -> Result<Uptime, FactError> {
    let path = paths.proc("uptime");
    let text = util::read(&path)?;
    let seconds: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| util::parse_err(&path, "no uptime"))?;
    let stat = paths.proc("stat");
    let boot_time = util::read_opt(&stat)?
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or_else(|| {
            // No btime (a tree without /proc/stat): derive it from the clock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            (now - seconds).max(0.0) as u64
        });
    Ok(Uptime { seconds, boot_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let u = read(&p).unwrap();
        assert_eq!(u.seconds, 1080.11);
        assert_eq!(u.boot_time, 1_717_171_717);
    }
}
