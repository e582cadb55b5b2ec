//! Every parser of the reporters takes whatever bytes a file holds (a corrupt database, a
//! truncated zone file, a hostile fixture) and returns something or an error: never a panic,
//! never a hang.

use guestd_reporters::packages::{apk, dpkg, rpm};
use guestd_reporters::users::utmp;
use guestd_reporters::{
    cpus, disks, diskstats, filesystems, hostname, interfaces, memory, os, routes, timezone,
};
use proptest::prelude::*;

/// Text made of the characters these formats care about, so the parsers get past their first
/// checks more often than with uniform noise.
fn formatty() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\n".to_owned()),
            Just("\n\n".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("=".to_owned()),
            Just(":".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("\\".to_owned()),
            Just("#".to_owned()),
            Just(" - ".to_owned()),
            Just("Package: x\n".to_owned()),
            Just("Status: install ok installed\n".to_owned()),
            Just("Version: 1\n".to_owned()),
            Just("P:x\nV:1\n".to_owned()),
            Just("MemTotal: 1 kB\n".to_owned()),
            Just("cpu0 1 2 3 4".to_owned()),
            Just("\\040".to_owned()),
            Just("\\0".to_owned()),
            Just("ffffffff".to_owned()),
            Just("0-3,".to_owned()),
            Just("M3.5.0/".to_owned()),
            Just("<+05>".to_owned()),
            Just("release ".to_owned()),
            Just("(".to_owned()),
            "[a-z0-9]{0,6}",
            any::<char>().prop_map(String::from),
        ],
        0..64,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    // Generation dominates the time of these cases in debug builds: keep them few.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn text_parsers_never_panic(s in formatty()) {
        let _ = os::parse_os_release(&s);
        let _ = os::from_release_line(&s);
        let _ = dpkg::parse(&s);
        let _ = apk::parse(&s);
        let _ = rpm::parse(&s);
        let _ = memory::parse_meminfo(&s);
        let mut m = guestd_core::model::Memory::default();
        memory::apply_vmstat(&mut m, &s);
        let _ = filesystems::parse_mountinfo(&s);
        let _ = interfaces::parse_if_inet6(&s);
        let _ = routes::parse_v4(&s);
        let _ = routes::parse_v6(&s);
        let _ = diskstats::parse(&s);
        let _ = cpus::parse_stat(&s, 100);
        let _ = cpus::parse_stat(&s, 0);
        let _ = hostname::fqdn_from_hosts(&s, "x");
        let _ = guestd_reporters::users::uid_of(&s, "x");
        let _ = disks::parse_pci(&s);
        let _ = disks::parse_scsi(&s);
        if let Some(tz) = timezone::PosixTz::parse(&s) {
            for t in [-(1i64 << 40), -1, 0, 1 << 40] {
                let _ = tz.at(t);
            }
        }
    }

    #[test]
    fn tzif_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..512), t in any::<i64>()) {
        // Half the inputs start like a zone file, to reach the counts and tables.
        if b.len() > 5 && b[0] % 2 == 0 {
            b[..5].copy_from_slice(b"TZif2");
        }
        if let Ok(tz) = timezone::Tzif::parse(&b) {
            let _ = tz.at(t.clamp(-(1 << 40), 1 << 40));
        }
    }

    #[test]
    fn utmp_never_panics(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let recs = utmp::parse(&b);
        prop_assert_eq!(recs.len(), b.len() / utmp::RECORD);
        let _ = utmp::sessions(&recs, |_| true);
    }
}
