//! Every text parser of the reporters on arbitrary bytes (as a corrupt /proc, sysfs or package
//! database file would give them): never panics. The first byte picks the parser, so the
//! fuzzer can specialise its inputs.
#![no_main]
use libfuzzer_sys::fuzz_target;

use guestd_reporters::packages::{apk, dpkg, rpm};
use guestd_reporters::{cpus, diskstats, filesystems, hostname, interfaces, memory, os, routes, timezone};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let s = String::from_utf8_lossy(rest);
    match which % 14 {
        0 => drop(os::parse_os_release(&s)),
        1 => drop(os::from_release_line(&s)),
        2 => drop(dpkg::parse(&s)),
        3 => drop(apk::parse(&s)),
        4 => drop(rpm::parse(&s)),
        5 => drop(memory::parse_meminfo(&s)),
        6 => drop(filesystems::parse_mountinfo(&s)),
        7 => drop(interfaces::parse_if_inet6(&s)),
        8 => drop(routes::parse_v4(&s)),
        9 => drop(routes::parse_v6(&s)),
        10 => drop(diskstats::parse(&s)),
        11 => drop(cpus::parse_stat(&s, 100)),
        12 => drop(hostname::fqdn_from_hosts(&s, "guest")),
        _ => {
            if let Some(tz) = timezone::PosixTz::parse(&s) {
                for t in [-(1i64 << 40), 0, 1_700_000_000, 1 << 40] {
                    let _ = tz.at(t);
                }
            }
        }
    }
});
