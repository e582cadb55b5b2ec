//! The logind collector over a real D-Bus: a private `dbus-daemon`, and on it a service that
//! exports systemd-logind's interfaces (`org.freedesktop.login1.Manager.ListSessions`,
//! `org.freedesktop.login1.Session` properties) with the names and signatures logind uses.
//! This checks our calls, signatures and property decoding on the wire; the real
//! systemd-logind is exercised in the systemd-booted VM (see README).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use guestd_core::model::SessionSource;
use guestd_reporters::users::logind;
use zbus::zvariant::OwnedObjectPath;

struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bus() -> Option<Bus> {
    if !std::path::Path::new("/usr/bin/dbus-daemon").exists() {
        if std::env::var("GUESTD_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!("required test peer missing: dbus-daemon (Debian package dbus-daemon)");
        }
        eprintln!(
            "\n*** SKIPPED: test peer missing: dbus-daemon (Debian package dbus-daemon) ***\n"
        );
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("gdbus")
        .tempdir_in("/tmp")
        .unwrap();
    let sock = dir.path().join("bus");
    let conf = dir.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n\
             <type>session</type>\n<listen>unix:path={}</listen>\n<auth>EXTERNAL</auth>\n\
             <policy context=\"default\"><allow send_destination=\"*\"/><allow own=\"*\"/>\
             <allow receive_sender=\"*\"/></policy>\n</busconfig>\n",
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sock.exists(), "dbus-daemon did not create its socket");
    Some(Bus {
        child,
        address: format!("unix:path={}", sock.display()),
        _dir: dir,
    })
}

struct Manager {
    sessions: Vec<(String, u32, String, String, OwnedObjectPath)>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    async fn list_sessions(&self) -> Vec<(String, u32, String, String, OwnedObjectPath)> {
        self.sessions.clone()
    }
}

struct Session {
    tty: String,
    remote_host: String,
    class: String,
    kind: String,
    active: bool,
    locked: bool,
    timestamp: u64,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property, name = "TTY")]
    fn tty(&self) -> String {
        self.tty.clone()
    }
    #[zbus(property, name = "RemoteHost")]
    fn remote_host(&self) -> String {
        self.remote_host.clone()
    }
    #[zbus(property, name = "Class")]
    fn class(&self) -> String {
        self.class.clone()
    }
    #[zbus(property, name = "Type")]
    fn kind(&self) -> String {
        self.kind.clone()
    }
    #[zbus(property, name = "Active")]
    fn active(&self) -> bool {
        self.active
    }
    #[zbus(property, name = "LockedHint")]
    fn locked_hint(&self) -> bool {
        self.locked
    }
    #[zbus(property, name = "Timestamp")]
    fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

fn path(s: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_a_real_bus() {
    let Some(bus) = start_bus() else { return };
    let s3 = "/org/freedesktop/login1/session/_33";
    let c1 = "/org/freedesktop/login1/session/c1";
    let gone = "/org/freedesktop/login1/session/_34";
    let _service = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.login1")
        .unwrap()
        .serve_at(
            "/org/freedesktop/login1",
            Manager {
                sessions: vec![
                    ("3".into(), 1000, "alice".into(), "seat0".into(), path(s3)),
                    ("c1".into(), 0, "root".into(), String::new(), path(c1)),
                    // Listed, then closed before its properties were asked: skipped.
                    ("4".into(), 1001, "bob".into(), String::new(), path(gone)),
                ],
            },
        )
        .unwrap()
        .serve_at(
            s3,
            Session {
                tty: "tty1".into(),
                remote_host: String::new(),
                class: "user".into(),
                kind: "x11".into(),
                active: true,
                locked: true,
                timestamp: 1_700_000_000_250_000,
            },
        )
        .unwrap()
        .serve_at(
            c1,
            Session {
                tty: "pts/0".into(),
                remote_host: "192.0.2.50".into(),
                class: "user".into(),
                kind: "tty".into(),
                active: false,
                locked: false,
                timestamp: 1_700_000_100_000_000,
            },
        )
        .unwrap()
        .build()
        .await
        .unwrap();

    let client = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let got = tokio::time::timeout(logind::TIMEOUT, logind::sessions(&client))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 2, "{got:#?}");
    let a = &got[0];
    assert_eq!(a.name, "alice");
    assert_eq!(a.uid, Some(1000));
    assert_eq!(a.session_id.as_deref(), Some("3"));
    assert_eq!(a.seat.as_deref(), Some("seat0"));
    assert_eq!(a.tty.as_deref(), Some("tty1"));
    assert_eq!(a.remote_host, None);
    assert_eq!(a.kind.as_deref(), Some("x11"));
    assert!(a.active && a.locked);
    assert_eq!(a.login_time, Some(1_700_000_000.25));
    assert_eq!(a.source, SessionSource::Logind);
    let r = &got[1];
    assert_eq!((r.name.as_str(), r.seat.as_deref()), ("root", None));
    assert_eq!(r.remote_host.as_deref(), Some("192.0.2.50"));
    assert!(!r.active && !r.locked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_logind_on_the_bus_is_an_error() {
    let Some(bus) = start_bus() else { return };
    let client = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let r = tokio::time::timeout(logind::TIMEOUT, logind::sessions(&client))
        .await
        .unwrap();
    let e = r.unwrap_err();
    assert!(e.to_string().contains("systemd-logind"), "{e}");
}
