//! Logged-in users: systemd-logind over D-Bus where it runs (feature `dbus`), else the live
//! `USER_PROCESS` records of utmp.

#[cfg(feature = "dbus")]
pub mod logind;
pub mod utmp;

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::UserSession;

/// The utmp files tried, in order.
pub const UTMP_FILES: [&str; 2] = ["/run/utmp", "/var/run/utmp"];

/// Sessions from the first utmp file present under `paths`, with uids from its `etc/passwd`.
pub fn from_utmp(paths: &Paths) -> Result<Vec<UserSession>, FactError> {
    for rel in UTMP_FILES {
        let path = paths.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let passwd = crate::util::read_opt(&paths.etc("passwd"))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let mut sessions = utmp::sessions(&utmp::parse(&bytes), |pid| {
                    paths.proc(&pid.to_string()).exists()
                });
                for s in &mut sessions {
                    s.uid = uid_of(&passwd, &s.name);
                }
                return Ok(sessions);
            }
            Err(e) if crate::util::is_absent(&e) => continue,
            Err(e) => return Err(crate::util::io_err(&path, e)),
        }
    }
    Err(FactError::Unavailable(
        "no systemd-logind and no utmp file (/run/utmp, /var/run/utmp)".into(),
    ))
}

/// The uid of `name` in a passwd text.
pub fn uid_of(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utmp_in_a_tree() {
        use utmp::{Record, kind};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/run")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("proc/4242")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "alice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        let p = Paths::under(root);
        assert!(matches!(from_utmp(&p), Err(FactError::Unavailable(_))));
        let recs = [
            Record {
                kind: kind::BOOT_TIME,
                user: "reboot".into(),
                line: "~".into(),
                sec: 5,
                ..Record::default()
            },
            Record {
                kind: kind::USER_PROCESS,
                pid: 4242,
                user: "alice".into(),
                line: "pts/3".into(),
                host: "10.0.0.9".into(),
                sec: 1_700_000_000,
                ..Record::default()
            },
            Record {
                kind: kind::USER_PROCESS,
                pid: 4243,
                user: "gone".into(),
                line: "pts/4".into(),
                sec: 1_700_000_001,
                ..Record::default()
            },
            Record {
                kind: kind::DEAD_PROCESS,
                pid: 4244,
                line: "pts/5".into(),
                ..Record::default()
            },
        ];
        let bytes: Vec<u8> = recs.iter().flat_map(|r| r.to_bytes()).collect();
        // Only /var/run/utmp: the second place is found too.
        std::fs::write(root.join("var/run/utmp"), bytes).unwrap();
        let s = from_utmp(&p).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "alice");
        assert_eq!(s[0].uid, Some(1000));
        assert_eq!(s[0].remote_host.as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn passwd_lookup() {
        let pw = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbad\n";
        assert_eq!(uid_of(pw, "alice"), Some(1000));
        assert_eq!(uid_of(pw, "root"), Some(0));
        assert_eq!(uid_of(pw, "bob"), None);
    }
}
