//! utmp records, parsed in pure Rust from the bytes: no libc utmpx, which musl does not
//! implement (a static build would see nobody).
//!
//! The layout is glibc's on Linux, the same on 32- and 64-bit (time fields stay 32-bit for
//! compatibility): 384 bytes, native byte order.

use guestd_core::model::{SessionSource, UserSession};

/// Size of one record.
pub const RECORD: usize = 384;

/// `ut_type` values.
pub mod kind {
    /// Empty slot.
    pub const EMPTY: i16 = 0;
    /// Change of run level.
    pub const RUN_LVL: i16 = 1;
    /// Time of system boot.
    pub const BOOT_TIME: i16 = 2;
    /// Process spawned by init.
    pub const INIT_PROCESS: i16 = 5;
    /// getty waiting for a login.
    pub const LOGIN_PROCESS: i16 = 6;
    /// A user's login session.
    pub const USER_PROCESS: i16 = 7;
    /// A session that ended.
    pub const DEAD_PROCESS: i16 = 8;
}

/// One utmp record, strings trimmed at their first NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// `ut_type`.
    pub kind: i16,
    /// `ut_pid`.
    pub pid: i32,
    /// `ut_line`: the tty without `/dev/`.
    pub line: String,
    /// `ut_id`: inittab id or the tty's suffix.
    pub id: String,
    /// `ut_user`.
    pub user: String,
    /// `ut_host`: remote host.
    pub host: String,
    /// `ut_session`.
    pub session: i32,
    /// `ut_tv.tv_sec`.
    pub sec: i32,
    /// `ut_tv.tv_usec`.
    pub usec: i32,
}

impl Record {
    /// The record's bytes, as glibc writes them; for tests and fixtures.
    pub fn to_bytes(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[0..2].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        put(&mut b[8..40], &self.line);
        put(&mut b[40..44], &self.id);
        put(&mut b[44..76], &self.user);
        put(&mut b[76..332], &self.host);
        b[336..340].copy_from_slice(&self.session.to_ne_bytes());
        b[340..344].copy_from_slice(&self.sec.to_ne_bytes());
        b[344..348].copy_from_slice(&self.usec.to_ne_bytes());
        b
    }
}

fn put(dst: &mut [u8], s: &str) {
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_owned()
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses whole records; a trailing partial record (a file being written) is ignored.
pub fn parse(bytes: &[u8]) -> Vec<Record> {
    bytes
        .chunks_exact(RECORD)
        .map(|b| Record {
            kind: i16::from_ne_bytes([b[0], b[1]]),
            pid: i32_at(b, 4),
            line: text(&b[8..40]),
            id: text(&b[40..44]),
            user: text(&b[44..76]),
            host: text(&b[76..332]),
            session: i32_at(b, 336),
            sec: i32_at(b, 340),
            usec: i32_at(b, 344),
        })
        .collect()
}

/// The live login sessions: `USER_PROCESS` records with a user whose process still runs
/// (`alive(pid)`); a crashed login can leave its record behind.
pub fn sessions(records: &[Record], alive: impl Fn(i32) -> bool) -> Vec<UserSession> {
    records
        .iter()
        .filter(|r| r.kind == kind::USER_PROCESS && !r.user.is_empty())
        .filter(|r| r.pid > 0 && alive(r.pid))
        .map(|r| UserSession {
            name: r.user.clone(),
            uid: None,
            session_id: (!r.id.is_empty()).then(|| r.id.clone()),
            seat: None,
            tty: (!r.line.is_empty()).then(|| r.line.clone()),
            remote_host: (!r.host.is_empty()).then(|| r.host.clone()),
            class: None,
            kind: None,
            active: false,
            locked: false,
            login_time: (r.sec > 0).then(|| f64::from(r.sec) + f64::from(r.usec) / 1e6),
            source: SessionSource::Utmp,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: i16, pid: i32, line: &str, user: &str, host: &str, sec: i32) -> Record {
        Record {
            kind,
            pid,
            line: line.into(),
            id: line
                .rsplit('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(4)
                .collect(),
            user: user.into(),
            host: host.into(),
            session: 0,
            sec,
            usec: 250_000,
        }
    }

    #[test]
    fn only_live_user_processes() {
        let records = [
            rec(
                kind::BOOT_TIME,
                0,
                "~",
                "reboot",
                "6.1.0-18-amd64",
                1_700_000_000,
            ),
            rec(
                kind::RUN_LVL,
                53,
                "~",
                "runlevel",
                "6.1.0-18-amd64",
                1_700_000_001,
            ),
            rec(kind::LOGIN_PROCESS, 600, "tty1", "LOGIN", "", 1_700_000_002),
            rec(
                kind::USER_PROCESS,
                1000,
                "pts/0",
                "alice",
                "192.0.2.7",
                1_700_000_100,
            ),
            rec(kind::DEAD_PROCESS, 1001, "pts/1", "", "", 1_700_000_200),
            rec(
                kind::USER_PROCESS,
                1002,
                "pts/2",
                "ghost",
                "",
                1_700_000_300,
            ), // process gone
            rec(kind::USER_PROCESS, 1003, "tty2", "bob", "", 1_700_000_400),
        ];
        let mut bytes: Vec<u8> = records.iter().flat_map(|r| r.to_bytes()).collect();
        bytes.extend_from_slice(&[7, 0, 0]); // a record being written
        let parsed = parse(&bytes);
        assert_eq!(parsed, records);
        let s = sessions(&parsed, |pid| pid != 1002);
        let got: Vec<(&str, Option<&str>, Option<&str>)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.tty.as_deref(), s.remote_host.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("alice", Some("pts/0"), Some("192.0.2.7")),
                ("bob", Some("tty2"), None)
            ]
        );
        assert_eq!(s[0].login_time, Some(1_700_000_100.25));
        assert_eq!(s[0].session_id.as_deref(), Some("0"));
        assert_eq!(s[0].source, SessionSource::Utmp);
    }

    #[test]
    fn long_fields_fill_without_nul() {
        let r = rec(
            kind::USER_PROCESS,
            9,
            "pts/10",
            &"u".repeat(40),
            &"h".repeat(300),
            1,
        );
        let back = &parse(&r.to_bytes())[0];
        assert_eq!(back.user.len(), 32);
        assert_eq!(back.host.len(), 256);
    }
}
