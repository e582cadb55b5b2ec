//! An independent client: Python `qemu.qmp` (PyPI), the library QEMU's own tooling uses,
//! talking to `guestd run` over a unix socket with greeting and negotiation off (qga.md §4.2,
//! §7.2): legacy and async APIs, errors as `ExecuteError`, a file round trip, exec, and two
//! clients served at once, each with its own session; clients that leave with replies unread
//! do not stop the agent.

// Test helpers outside #[test] functions may panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Guestd(std::process::Child);

impl Drop for Guestd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn qemu_qmp_client_talks_to_guestd() {
    let python = support::venv_python();
    if !support::require_peer(
        python.is_some(),
        "Python venv with qemu.qmp (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    let python = python.unwrap();
    let dir = support::short_tmpdir();
    let sock = dir.path().join("qga.sock");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let _agent = Guestd(
        Command::new(support::guestd_bin())
            .arg("run")
            .arg("--channel")
            .arg(format!("qga=unix-listen:{}", sock.display()))
            .arg("--statedir")
            .arg(dir.path().join("state"))
            .env("GUESTD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "guestd never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // qemu-ga exits when a client leaves with a reply unread (qga.md 2.7); guestd keeps
    // serving: the Python client below must still get answers.
    for _ in 0..3 {
        let mut c = UnixStream::connect(&sock).unwrap();
        c.write_all(b"{\"execute\":\"guest-info\"}{\"execute\":\"guest-ping\"}")
            .unwrap();
        drop(c);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qga_qmp/client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&sock)
        .arg(&scratch)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed\n{stdout}\n{stderr}");
    for check in [
        "legacy sync, ping, info",
        "legacy errors",
        "legacy osinfo and host name",
        "legacy file round trip",
        "legacy exec",
        "two clients at once",
        "async execute and errors",
        "one client leaving does not disturb the other",
    ] {
        assert!(
            stdout.contains(&format!("OK {check}\n")),
            "missing '{check}'\n{stdout}\n{stderr}"
        );
    }
}
