//! `/proc/diskstats`: 14 fields up to Linux 4.17, 18 with discards, 20 with flushes (5.5).

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::sysfacts::DiskStats;

use crate::util;

/// Reads the I/O counters of every block device under `paths`.
pub fn read(paths: &Paths) -> Result<Vec<DiskStats>, FactError> {
    Ok(parse(&util::read(&paths.proc("diskstats"))?))
}

/// Parses diskstats; lines with fewer than the classic 14 fields are skipped.
pub fn parse(text: &str) -> Vec<DiskStats> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            Some(DiskStats {
                major: n(0)?,
                minor: n(1)?,
                name: f[2].to_owned(),
                read_ios: n(3),
                read_merges: n(4),
                read_sectors: n(5),
                read_ticks: n(6),
                write_ios: n(7),
                write_merges: n(8),
                write_sectors: n(9),
                write_ticks: n(10),
                ios_pgr: n(11),
                total_ticks: n(12),
                weight_ticks: n(13),
                discard_ios: n(14),
                discard_merges: n(15),
                discard_sectors: n(16),
                discard_ticks: n(17),
                flush_ios: n(18),
                flush_ticks: n(19),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_layouts() {
        let s = parse(
            "   7       0 loop0 147 0 4273 9 12 0 4105 11 0 12 27 0 0 0 0 11 6\n\
             254 0 vda 1 2 3 4 5 6 7 8 9 10 11\n\
             8 0 sda 1 2 3\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "loop0");
        assert_eq!(s[0].read_sectors, Some(4273));
        assert_eq!(s[0].flush_ios, Some(11));
        assert_eq!(s[0].flush_ticks, Some(6));
        assert_eq!(s[1].weight_ticks, Some(11));
        assert_eq!(s[1].discard_ios, None);
    }
}
