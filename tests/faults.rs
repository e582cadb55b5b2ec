//! Faults under a running `guestd run` that serves QGA and Oracle VM messaging at once.
//!
//! - `bad_input_oversize_and_disconnects_never_stop_the_agent`: garbage, invalid UTF-8, wrong
//!   types, deep nesting, an over-size request and hosts leaving mid-message on QGA and oVirt
//!   (served together); every bad QGA request gets its error, oVirt skips bad lines, both keep
//!   serving, nothing panics.
//! - `xenstored_restarts_under_guestd_run`: the real xenstored goes away and comes back with
//!   an empty tree; QGA answers throughout, Oracle VM messaging reconnects and carries
//!   messages on the new tree.
//! - `state_disk_full`: the state directory and the ovmd store sit on a full tmpfs; the agent
//!   keeps serving, reports clear errors, loses and corrupts nothing, and catches up once
//!   there is room again.
//!
//! Covered elsewhere, and not repeated here:
//! - guestd killed with -9 in the middle of Oracle VM messages (nothing lost, nothing twice):
//!   `tests/ovmd.rs` `killed_mid_inbound_batch_nothing_lost_nothing_twice`,
//!   `killed_mid_outbound_queue_nothing_lost_nothing_twice` and
//!   `restart_at_each_crash_point_of_a_send` (the same daemon code `guestd run` runs);
//! - a crash while frozen and a restart that thaws: `tests/actions.rs`
//!   `guestd_run_over_qga_kill_restart_watchdog_and_sigterm` (through `guestd run` over QGA)
//!   and `a_killed_agents_freeze_is_thawed_by_the_next_agent`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guestd_core::params::ParamStore;
use serde_json::{Value, json};
use support::xenstored::{self, Xenstored};

const HOME: &str = "/local/domain/1/control/oracle-vmapi";
const CONNECTED: &str = "Oracle VM messaging connected";

/// `guestd run` with QGA on a unix socket and Oracle VM messaging as guest domain 1.
struct Agent {
    child: Child,
    sock: PathBuf,
    store: PathBuf,
    control: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(x: &Xenstored, dir: &Path, state: &Path) -> Self {
        let sock = dir.join("qga.sock");
        let log = dir.join("guestd.log");
        let store = state.join("ovmd");
        let control = dir.join("ovmd.sock");
        let child = Command::new(support::guestd_bin())
            .arg("run")
            .arg(format!("--channel=qga=unix-listen:{}", sock.display()))
            .arg(format!(
                "--channel=ovmd=xenstore:{}",
                x.guest_socket(1).display()
            ))
            .arg(format!("--statedir={}", state.join("run").display()))
            .env("GUESTD_OVMD_STORE", &store)
            .env("GUESTD_OVMD_SOCKET", &control)
            .env("GUESTD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let a = Self {
            child,
            sock,
            store,
            control,
            log,
        };
        a.wait("Oracle VM messaging to connect", || {
            a.log_text().contains(CONNECTED)
        });
        a
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}\n--- guestd log ---\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn qga(&self) -> Qga {
        let start = Instant::now();
        let s = loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(30), "connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Qga {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// `guestd ovmd ARGS` against this agent's store and control socket.
    fn ovmd(&self, args: &[&str]) -> Output {
        Command::new(support::guestd_bin())
            .arg("ovmd")
            .arg(format!("--store={}", self.store.display()))
            .arg(format!("--control-socket={}", self.control.display()))
            .args(args)
            .output()
            .unwrap()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("guestd exited ({st}):\n{}", self.log_text());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Qga {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Qga {
    fn cmd(&mut self, cmd: &str, args: Value) -> Value {
        let req = json!({"execute": cmd, "arguments": args});
        self.w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn ping(&mut self) {
        assert_eq!(self.cmd("guest-ping", json!({})), json!({"return": {}}));
    }
}

/// The manager writes message `n` and commits it, as Oracle VM Manager does.
fn manager_sends(x: &Xenstored, n: u64, key: &str, value: &str) {
    let out = x.tool(
        "xenstore-write",
        &[
            &format!("{HOME}/to-guest/{n}"),
            key,
            &format!("{HOME}/to-guest/{n}/0"),
            value,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    x.write(&format!("{HOME}/to-guest/last-write"), &n.to_string());
}

fn taken(x: &Xenstored, n: u64) -> bool {
    x.read(&format!("{HOME}/to-guest/{n}")).is_none()
}

fn listed(a: &Agent) -> String {
    let out = a.ovmd(&["-l"]);
    assert!(
        out.status.success(),
        "ovmd -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn xenstored_restarts_under_guestd_run() {
    if !support::require_peer(xenstored::available(), xenstored::PEER) {
        return;
    }
    let mut x = Xenstored::start(&[1], &[]);
    let dir = support::short_tmpdir();
    let mut a = Agent::start(&x, dir.path(), &dir.path().join("state"));
    manager_sends(&x, 1, "before", "1");
    a.wait("message 1", || taken(&x, 1));

    // QGA keeps answering, from another thread, all through the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let pings = Arc::new(AtomicUsize::new(0));
    let pinger = {
        let (stop, pings) = (Arc::clone(&stop), Arc::clone(&pings));
        let mut q = a.qga();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                q.ping();
                pings.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    x.stop();
    let during = pings.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    a.assert_alive();
    assert!(
        pings.load(Ordering::Relaxed) > during,
        "QGA stopped answering while xenstored was down"
    );
    x.restart();
    a.wait("Oracle VM messaging to reconnect", || {
        a.log_text().matches(CONNECTED).count() >= 2
    });
    // The new daemon has an empty tree: numbering starts again.
    manager_sends(&x, 1, "after", "2");
    a.wait("message 1 on the new tree", || taken(&x, 1));
    stop.store(true, Ordering::Relaxed);
    pinger
        .join()
        .expect("QGA failed during the xenstored restart");
    let l = listed(&a);
    assert!(
        l.contains("before") && l.contains("after"),
        "both messages kept: {l}"
    );
    a.assert_alive();
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }

    /// Fills it to the last byte; the filler file.
    fn fill(&self) -> PathBuf {
        let f = self.0.join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let block = vec![0x5au8; 4096];
        while file.write_all(&block).is_ok() {}
        // The last partial block.
        while file.write_all(&[0x5a]).is_ok() {}
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn state_disk_full() {
    if !support::require_peer(xenstored::available(), xenstored::PEER) {
        return;
    }
    let dir = support::short_tmpdir();
    let Some(fs) = Tmpfs::mount(&dir.path().join("state"), "512k") else {
        support::require_peer(false, "root, to mount a small tmpfs");
        return;
    };
    let x = Xenstored::start(&[1], &[]);
    let mut a = Agent::start(&x, dir.path(), &fs.0);
    let mut q = a.qga();
    let outside = dir.path().join("file.txt");
    let state = fs.0.join("run/qga.state");

    // Before: a handle, a stored message.
    let h1 = q.cmd("guest-file-open", json!({"path": outside, "mode": "w"}))["return"]
        .as_i64()
        .unwrap();
    q.cmd("guest-file-close", json!({ "handle": h1 }));
    let counter = std::fs::read_to_string(&state).unwrap();
    manager_sends(&x, 1, "kept", "before the disk filled");
    a.wait("message 1", || taken(&x, 1));

    let filler = fs.fill();

    // QGA: still serving; a command that must write state says why it cannot.
    q.ping();
    let r = q.cmd("guest-file-open", json!({"path": outside, "mode": "w"}));
    let desc = r["error"]["desc"].as_str().unwrap_or_default().to_owned();
    // qemu-ga's words for it (the cause goes to the log).
    assert!(
        desc.contains("failed to commit persistent state to disk")
            || desc.contains("No space left on device"),
        "file open on a full state disk: {r}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        counter,
        "the handle counter file changed on a full disk"
    );
    q.ping();

    // ovmd: a message that cannot be stored stays with the manager, the agent says why.
    manager_sends(&x, 2, "late", "arrives on a full disk");
    std::thread::sleep(Duration::from_secs(2));
    a.assert_alive();
    assert!(
        !taken(&x, 2),
        "a message was taken that could not be stored"
    );
    assert!(
        a.log_text().contains("No space left on device"),
        "no clear error in the log:\n{}",
        a.log_text()
    );
    let out = a.ovmd(&["-p", "out=1"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "ovmd -p on a full disk: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing corrupt: the store reads back with what it had.
    let st = ParamStore::new(&a.store).load().unwrap();
    assert_eq!(st.pairs.len(), 1, "{st:?}");
    q.ping();

    // Room again: everything catches up without a restart.
    std::fs::remove_file(&filler).unwrap();
    a.wait("message 2 once there is room", || taken(&x, 2));
    let l = listed(&a);
    assert!(l.contains("kept") && l.contains("late"), "{l}");
    let out = a.ovmd(&["-p", "out=2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h2 = q.cmd("guest-file-open", json!({"path": outside, "mode": "w"}))["return"]
        .as_i64()
        .unwrap_or_else(|| panic!("file open with room again failed"));
    assert!(h2 > h1, "handle numbers went back: {h1} then {h2}");
    q.cmd("guest-file-close", json!({ "handle": h2 }));
    a.assert_alive();
}

/// Bad input, over-size requests and hosts that leave mid-message, on QGA and oVirt at once:
/// every bad request gets its error (or is skipped, for oVirt, which has no error replies),
/// nothing panics or hangs, and both protocols keep serving the next host.
#[test]
fn bad_input_oversize_and_disconnects_never_stop_the_agent() {
    let dir = support::short_tmpdir();
    let qsock = dir.path().join("qga.sock");
    let osock = dir.path().join("ovirt.sock");
    let log = dir.path().join("guestd.log");
    let mut child = Command::new(support::guestd_bin())
        .arg("run")
        .arg(format!("--channel=qga=unix-listen:{}", qsock.display()))
        .arg(format!("--channel=ovirt=unix-listen:{}", osock.display()))
        .arg("--qga-max-request=65536")
        .arg(format!("--statedir={}", dir.path().join("state").display()))
        .env("GUESTD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let connect = |p: &Path| {
        let start = Instant::now();
        loop {
            match UnixStream::connect(p) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    return s;
                }
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(30), "connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    };
    let qga = |s: UnixStream| Qga {
        w: s.try_clone().unwrap(),
        r: BufReader::new(s),
    };
    let line = |q: &mut Qga| {
        let mut l = Vec::new();
        q.r.read_until(b'\n', &mut l).unwrap();
        let start = l.iter().position(|&b| b != 0xFF).unwrap_or(0);
        serde_json::from_slice::<Value>(&l[start..]).unwrap_or_else(|e| panic!("{e}: {l:?}"))
    };

    // QGA: each bad request is answered with errors (a stray token each, as qemu-ga), then
    // a guest-sync-delimited, as a host resynchronises, gets its answer.
    let resync = |q: &mut Qga, id: u64| -> Vec<Value> {
        // 0xFF resets a parser left inside an unfinished value, as hosts do.
        let mut req = vec![0xFF];
        req.extend_from_slice(
            format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n")
                .as_bytes(),
        );
        q.w.write_all(&req).unwrap();
        let mut before = Vec::new();
        loop {
            let v = line(q);
            if v == json!({ "return": id }) {
                return before;
            }
            assert!(
                before.len() < 100,
                "no answer to guest-sync {id}: {before:?}"
            );
            before.push(v);
        }
    };
    let mut q = qga(connect(&qsock));
    let bad: [&[u8]; 8] = [
        b"garbage}\n",
        b"\xff\xfe\xfd\n",
        b"{\"execute\": 1}\n",
        b"{\"execute\": \"no-such-command\"}\n",
        b"{\"execute\": \"guest-file-read\", \"arguments\": {\"handle\": \"x\"}}\n",
        b"[1, 2, 3]\n",
        b"{\"execute\": \"guest-ping\", \"arguments\": {\"x\": \"\xc3\x28\"}}\n",
        b"{\"execute\": \"guest-exec-status\", \"arguments\": {\"pid\": -1}}\n",
    ];
    // Nesting deeper than qemu-ga's limit.
    let mut deep = "[".repeat(2000).into_bytes();
    deep.extend_from_slice(b"]\n");
    for (id, req) in bad.iter().copied().chain([&deep[..]]).enumerate() {
        q.w.write_all(req).unwrap();
        let errs = resync(&mut q, id as u64);
        assert!(
            !errs.is_empty() && errs.iter().all(|r| r.get("error").is_some()),
            "{:?}: {errs:?}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
        q.ping();
    }
    // A request over --qga-max-request.
    let mut big = b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 1, \"pad\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200_000));
    big.extend_from_slice(b"\"}}\n");
    q.w.write_all(&big).unwrap();
    let r = line(&mut q);
    assert!(
        r.get("error").is_some(),
        "an over-size request was answered: {r}"
    );
    // Whatever follows the over-size request in the stream is served again.
    let mut seen_pong = false;
    for _ in 0..8 {
        q.w.write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":77}}\n")
            .unwrap();
        if line(&mut q) == json!({"return": 77}) {
            seen_pong = true;
            break;
        }
    }
    assert!(
        seen_pong,
        "QGA stopped answering after an over-size request"
    );
    // Hosts leaving: mid-request, mid-string, with a large reply unread, right after 0xFF.
    for leave in [
        &b"{\"execute\":\"guest-pi"[..],
        b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"abc",
        b"{\"execute\":\"guest-info\"}\n{\"execute\":\"guest-get-osinfo\"}\n",
        b"\xff",
    ] {
        let mut s = connect(&qsock);
        s.write_all(leave).unwrap();
        drop(s);
    }
    drop(q);
    let mut q = qga(connect(&qsock));
    q.ping();

    // oVirt: bad lines are skipped (there are no error replies), a too-long line too; the
    // session answers the echo that follows each.
    let echo = |s: &mut UnixStream, r: &mut BufReader<UnixStream>, n: usize| {
        s.write_all(format!("{{\"__name__\":\"echo\",\"n\":{n}}}\n").as_bytes())
            .unwrap();
        let start = Instant::now();
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "oVirt closed the session");
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            if v["__name__"] == "echo" && v["n"] == n {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no echo {n}");
        }
    };
    let mut o = connect(&osock);
    let mut or = BufReader::new(o.try_clone().unwrap());
    let mut long = vec![b'{'; 70_000];
    long.push(b'\n');
    let bad: [&[u8]; 7] = [
        b"not json\n",
        b"\xff\xfe\n",
        b"[1]\n",
        b"{\"__name__\": 5}\n",
        b"{\"__name__\": \"no-such-command\"}\n",
        b"{\"__name__\": \"set-number-of-cpus\", \"count\": \"many\"}\n",
        &long,
    ];
    for (n, l) in bad.iter().enumerate() {
        o.write_all(l).unwrap();
        echo(&mut o, &mut or, n);
    }
    o.write_all(b"{\"__name__\":\"echo\",\"n\":").unwrap();
    drop((o, or));
    let mut o = connect(&osock);
    let mut or = BufReader::new(o.try_clone().unwrap());
    echo(&mut o, &mut or, 99);

    q.ping();
    if let Ok(Some(st)) = child.try_wait() {
        panic!(
            "guestd exited ({st}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}
