//! The binary formats the reporters read: TZif zone files, utmp records, and SQLite rpm
//! databases (written to a file, since the reader works with pread). Never panics, never
//! loops.
#![no_main]
use libfuzzer_sys::fuzz_target;

use guestd_reporters::packages::rpm;
use guestd_reporters::timezone::Tzif;
use guestd_reporters::users::utmp;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(tz) = Tzif::parse(rest) {
                let _ = tz.at(1_700_000_000);
            }
        }
        1 => {
            let recs = utmp::parse(rest);
            assert_eq!(recs.len(), rest.len() / utmp::RECORD);
            let _ = utmp::sessions(&recs, |_| true);
        }
        _ => {
            let path = std::env::temp_dir().join(format!("guestd-fuzz-rpmdb-{}", std::process::id()));
            if std::fs::write(&path, rest).is_ok() {
                let _ = rpm::read_sqlite(&path);
            }
        }
    }
});
