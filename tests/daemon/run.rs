//! `guestd run` driven by configuration files, outside a VM: channels on unix sockets, SIGHUP
//! with good and bad files, systemd's readiness protocol, SIGTERM; `guestd probe` on a fixture.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{guestd_bin, short_tmpdir};

/// A `guestd run` child with its stderr collected, a datagram socket standing in for systemd's
/// notify socket, and an empty qemu-ga file (the host's own is never read).
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(dir: &Path, config: &Path) -> Daemon {
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut child = Command::new(guestd_bin())
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .args(["--qemu-ga-config", "/dev/null", "--statedir"])
            .arg(dir.join("state"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("GUESTD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log, notify }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The next notification datagram.
    fn notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification: {e}\n{}", self.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Notifications until one contains `what`.
    fn wait_notification(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let n = self.notification();
            if n.contains(what) {
                return n;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no {what}");
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, what: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.log().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One QGA request on a fresh connection; the reply line.
fn qga(sock: &Path, cmd: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{{\"execute\":\"{cmd}\"}}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) => return Err("closed".into()),
            Ok(_) => out.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
}

fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("guestd.toml");
    // Replace atomically: the daemon may read it at any time.
    let tmp = dir.join("guestd.toml.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

#[test]
fn sighup_with_good_and_bad_files_and_systemd_notifications() {
    let t = short_tmpdir();
    let d = t.path();
    let a = d.join("a.sock");
    let b = d.join("b.sock");
    let cfg = config(
        d,
        &format!(
            "[qga]\nchannel = \"unix-listen:{}\"\n[ovirt]\nenable = false\n[ovmd]\nenable = false\n",
            a.display()
        ),
    );
    let daemon = Daemon::start(d, &cfg);
    let ready = daemon.wait_notification("READY=1");
    assert!(ready.contains("STATUS=serving qga=unix-listen:"), "{ready}");
    assert_eq!(qga(&a, "guest-ping").unwrap(), r#"{"return":{}}"#);

    // A broken file: logged with file and line, and the channel goes on answering.
    config(
        d,
        &format!(
            "[qga]\nchannel = \"unix-listen:{}\"\n\nbogus = 1\n",
            b.display()
        ),
    );
    daemon.signal(Signal::SIGHUP);
    assert!(daemon.notification().contains("RELOADING=1"));
    assert!(daemon.wait_notification("READY=1").contains("READY=1"));
    let want = format!("{}:4:", cfg.display());
    assert!(daemon.wait_log(&want), "{}", daemon.log());
    assert!(daemon.log().contains("configuration not reloaded"));
    assert_eq!(qga(&a, "guest-ping").unwrap(), r#"{"return":{}}"#);
    assert!(!b.exists(), "the broken file's channel was started");

    // A good file: the new channel and command list apply, the old channel is released.
    config(
        d,
        &format!(
            "[qga]\nchannel = \"unix-listen:{}\"\nblock-rpcs = [\"guest-ping\"]\n[ovirt]\nenable = false\n[ovmd]\nenable = false\n",
            b.display()
        ),
    );
    daemon.signal(Signal::SIGHUP);
    let ready = daemon.wait_notification("READY=1");
    assert!(ready.contains(&b.display().to_string()), "{ready}");
    assert_eq!(
        qga(&b, "guest-ping").unwrap(),
        r#"{"error":{"class":"CommandNotFound","desc":"Command guest-ping has been disabled"}}"#
    );
    assert!(qga(&b, "guest-info").unwrap().starts_with(r#"{"return":{"#));
    assert!(
        qga(&a, "guest-ping").is_err(),
        "the old channel still answers"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    let mut daemon = daemon;
    daemon.signal(Signal::SIGTERM);
    daemon.wait_notification("STOPPING=1");
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

#[test]
fn qemu_ga_conf_alone_configures_qga() {
    let t = short_tmpdir();
    let d = t.path();
    let sock = d.join("q.sock");
    let q = d.join("qemu-ga.conf");
    std::fs::write(
        &q,
        format!(
            "[general]\nmethod=unix-listen\npath={}\nblock-rpcs=guest-get-host-name\n",
            sock.display()
        ),
    )
    .unwrap();
    let g = d.join("empty.toml");
    std::fs::write(&g, "[ovirt]\nenable = false\n[ovmd]\nenable = false\n").unwrap();
    let mut child = Command::new(guestd_bin())
        .args(["run", "--config"])
        .arg(&g)
        .arg("--statedir")
        .arg(d.join("state"))
        .env("QGA_CONF", &q)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let reply = loop {
        match qga(&sock, "guest-get-host-name") {
            Ok(r) => break r,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(reply.contains("has been disabled"), "{reply}");
    assert_eq!(qga(&sock, "guest-ping").unwrap(), r#"{"return":{}}"#);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `guestd probe` on a fixture root: which channels would be served, and why not the others.
#[test]
fn probe_explains_each_channel() {
    let t = short_tmpdir();
    let root = t.path();
    let sys = root.join("sys/class/virtio-ports");
    for (node, name) in [
        ("vport1p1", "org.qemu.guest_agent.0"),
        ("vport1p2", "com.redhat.rhevm.vdsm"),
        ("vport1p3", ""),
    ] {
        std::fs::create_dir_all(sys.join(node)).unwrap();
        std::fs::write(sys.join(node).join("name"), format!("{name}\n")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev").join(node), "").unwrap();
    }
    let empty = root.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(guestd_bin())
        .args(["probe", "--config"])
        .arg(&empty)
        .args(["--qemu-ga-config", "/dev/null", "--root"])
        .arg(root)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}");
    let line = |p: &str| {
        so.lines()
            .find(|l| l.trim_start().starts_with(p))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("qga").contains("serve:") && line("qga").contains("vport1p1"),
        "{so}"
    );
    // The legacy oVirt port, since the current one is absent.
    assert!(
        line("ovirt").contains("serve:") && line("ovirt").contains("vport1p2"),
        "{so}"
    );
    assert!(line("ovmd").contains("skip: not a Xen guest"), "{so}");
    assert!(so.contains("vport1p3 (no name yet)"), "{so}");
    assert!(so.contains("decision: no xenstore"), "{so}");
}
