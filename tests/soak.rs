//! Soak: many host disconnects and reconnects, and many mixed requests, with guestd's memory,
//! descriptors and CPU watched from `/proc` (tests/support/procstat.rs).
//!
//! - 1000 reconnects on a listening unix socket (a client per connection) and 1000 on a
//!   connecting one (one session that outlives its hosts, as on a virtio-serial port), with
//!   hosts that leave cleanly, mid-request, with a reply unread, or after a delimited sync;
//! - 100 reconnects over a real virtio-serial port in the QEMU TCG guest;
//! - 100 000 mixed requests (cheap and expensive commands, errors, garbage, 0xFF, file
//!   handles, processes) on one connection.
//!
//! After each: open descriptors are back to what they were after a warm-up, RSS has not
//! grown by more than allocator noise, and the agent is idle (no CPU, no wake-ups).
//! `GUESTD_SOAK_LONG=1` multiplies the counts by ten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::procstat;
use support::vm::{QgaClient, Vm, VmOptions};

/// More than allocator noise: a leak of a few dozen bytes per cycle or request shows.
const RSS_SLACK: u64 = 1 << 20;

fn scale() -> usize {
    if std::env::var("GUESTD_SOAK_LONG").is_ok_and(|v| v == "1") {
        10
    } else {
        1
    }
}

/// guestd run with one QGA channel, killed when dropped.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start(channel: impl FnOnce(&Path) -> String) -> Self {
        let dir = support::short_tmpdir();
        let spec = channel(dir.path());
        let log = std::fs::File::create(dir.path().join("guestd.log")).unwrap();
        let child = Command::new(support::guestd_bin())
            .arg("run")
            .arg(format!("--channel=qga={spec}"))
            .arg(format!("--statedir={}", dir.path().join("state").display()))
            .env("GUESTD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("guestd.log")).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("guestd exited ({st}):\n{}", self.log());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(path: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return s;
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("connect {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> Value {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).unwrap();
    assert!(line.ends_with(b"\n"), "no reply line: {line:?}");
    let start = line.iter().position(|&b| b != 0xFF).unwrap_or(0);
    serde_json::from_slice(&line[start..]).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// One host visit; how it leaves depends on `i`. Checks every reply it reads.
fn visit(s: UnixStream, i: usize) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // Whatever the previous host left half-sent must not be glued onto this request.
    w.write_all(
        format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{i}}}}}\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(read_reply(&mut r), json!({ "return": i }), "visit {i}");
    match i % 4 {
        0 => {
            w.write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
            assert_eq!(read_reply(&mut r), json!({"return": {}}));
        }
        // Leaves in the middle of a request.
        1 => w.write_all(b"{\"execute\":\"guest-pi").unwrap(),
        // Leaves with a large reply unread.
        2 => w.write_all(b"{\"execute\":\"guest-info\"}\n").unwrap(),
        _ => {
            let mut req = vec![0xFF];
            req.extend_from_slice(
                format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{i}}}}}\n")
                    .as_bytes(),
            );
            w.write_all(&req).unwrap();
            // As qemu-ga: a 0xFF between messages is a stray byte, answered with an error.
            let stray = read_reply(&mut r);
            assert!(
                stray["error"]["desc"]
                    .as_str()
                    .is_some_and(|d| d.contains("stray")),
                "{stray}"
            );
            let mut b = [0u8; 1];
            r.read_exact(&mut b).unwrap();
            assert_eq!(b[0], 0xFF, "delimited reply starts with 0xFF");
            assert_eq!(read_reply(&mut r), json!({ "return": i }));
        }
    }
}

/// Waits (up to 10 s) for the descriptor count to come back to `want`: the agent closes a
/// departed host's socket asynchronously.
fn settle_fds(pid: u32, want: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = procstat::fds(pid);
        if n <= want || start.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent must be idle: within 3 s, no CPU tick and at most a couple of wake-ups
/// (a stray timer of the runtime may fire once).
fn assert_idle(a: &Agent) {
    std::thread::sleep(Duration::from_millis(500));
    let (ticks, wakeups) = procstat::idle_activity(a.pid(), 3);
    assert!(
        ticks <= 1 && wakeups <= 3,
        "guestd not idle: {ticks} CPU ticks and {wakeups} wake-ups in 3 s"
    );
}

struct Baseline {
    rss: u64,
    fds: usize,
    fd_list: Vec<String>,
}

impl Baseline {
    fn take(pid: u32) -> Self {
        Self {
            rss: procstat::rss(pid),
            fds: procstat::fds(pid),
            fd_list: procstat::fd_targets(pid),
        }
    }

    fn check(&self, pid: u32, what: &str) {
        // A stream holds a second descriptor for its socket only while a write waits for
        // space (unix streams watch write space only then), so a sample can catch one more
        // than at rest: the count must not grow, and may be lower than a busy baseline.
        let fds = settle_fds(pid, self.fds);
        assert!(
            fds <= self.fds,
            "{what}: open descriptors grew from {} to {fds}\nbefore: {:?}\nafter: {:?}",
            self.fds,
            self.fd_list,
            procstat::fd_targets(pid)
        );
        let rss = procstat::rss(pid);
        eprintln!(
            "{what}: RSS {} KiB after warm-up, {} KiB at the end; {fds} descriptors",
            self.rss / 1024,
            rss / 1024
        );
        assert!(
            rss <= self.rss + RSS_SLACK,
            "{what}: RSS grew from {} KiB to {} KiB",
            self.rss / 1024,
            rss / 1024
        );
    }
}

#[test]
fn reconnects_on_a_listening_unix_socket() {
    let cycles = 1000 * scale();
    let mut a = Agent::start(|d| format!("unix-listen:{}", d.join("qga.sock").display()));
    let sock = a.path("qga.sock");
    let mut base = None;
    for i in 0..cycles {
        visit(connect(&sock), i);
        if i == 99 {
            std::thread::sleep(Duration::from_millis(300));
            base = Some(Baseline::take(a.pid()));
        }
    }
    a.assert_alive();
    visit(connect(&sock), 0);
    base.unwrap()
        .check(a.pid(), &format!("{cycles} unix-listen reconnects"));
    assert_idle(&a);
}

#[test]
fn reconnects_on_a_connecting_unix_socket() {
    // The host listens and guestd connects: one session for every host, as on a port.
    let cycles = 1000 * scale();
    let dir = support::short_tmpdir();
    let sock = dir.path().join("host.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut a = Agent::start(|_| format!("unix-connect:{}", sock.display()));
    let mut base = None;
    for i in 0..cycles {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        visit(s, i);
        if i == 99 {
            std::thread::sleep(Duration::from_millis(300));
            base = Some(Baseline::take(a.pid()));
        }
    }
    a.assert_alive();
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    visit(s, 0);
    // Keep the last host attached: its socket is one of the baseline's descriptors.
    let (last, _) = listener.accept().unwrap();
    base.unwrap()
        .check(a.pid(), &format!("{cycles} unix-connect reconnects"));
    assert_idle(&a);
    drop(last);
}

/// One batch of pipelined requests, each answered by exactly one line; what each reply must be.
fn batch(n: usize, first: usize) -> (Vec<u8>, Vec<&'static str>) {
    let mut out = Vec::new();
    let mut want = Vec::new();
    for k in first..first + n {
        let (req, kind): (String, &str) = match k % 100 {
            0 => (r#"{"execute":"guest-info"}"#.into(), "return"),
            1 => (r#"{"execute":"guest-get-osinfo"}"#.into(), "return"),
            2 => (
                r#"{"execute":"guest-network-get-interfaces"}"#.into(),
                "return",
            ),
            3 => (r#"{"execute":"guest-get-host-name"}"#.into(), "return"),
            4 => (r#"{"execute":"guest-get-time"}"#.into(), "return"),
            5 => (r#"{"execute":"guest-nonexistent"}"#.into(), "error"),
            6 => (
                r#"{"execute":"guest-ping","arguments":{"x":1}}"#.into(),
                "error",
            ),
            7 => (r#"{"a":tru}"#.into(), "error"),
            8 => ("\u{ff}".into(), "error"),
            9 => (r#"[1,2]"#.into(), "error"),
            10 => (r#"{"execute":"guest-get-fsinfo"}"#.into(), "return"),
            11..=40 => (
                format!(r#"{{"execute":"guest-sync","arguments":{{"id":{k}}},"id":"r{k}"}}"#),
                "return",
            ),
            _ => (r#"{"execute":"guest-ping"}"#.into(), "return"),
        };
        // 0xFF is written raw: it is not valid UTF-8 text.
        if req == "\u{ff}" {
            out.push(0xFF);
        } else {
            out.extend_from_slice(req.as_bytes());
        }
        out.push(b'\n');
        want.push(kind);
    }
    (out, want)
}

/// Opens, writes, reads back and closes a file; runs a process to its end.
fn handles_and_processes(w: &mut UnixStream, r: &mut impl BufRead, file: &Path, k: usize) {
    let mut call = |cmd: &str, args: Value| -> Value {
        let req = json!({"execute": cmd, "arguments": args});
        w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let reply = read_reply(r);
        reply
            .get("return")
            .cloned()
            .unwrap_or_else(|| panic!("{cmd}: {reply}"))
    };
    let h = call("guest-file-open", json!({"path": file, "mode": "w+"}));
    let data = format!("soak {k}");
    call(
        "guest-file-write",
        json!({"handle": h, "buf-b64": base64(data.as_bytes())}),
    );
    call(
        "guest-file-seek",
        json!({"handle": h, "offset": 0, "whence": "set"}),
    );
    let back = call("guest-file-read", json!({"handle": h, "count": 100}));
    assert_eq!(back["buf-b64"], json!(base64(data.as_bytes())));
    call("guest-file-close", json!({ "handle": h }));
    let pid = call(
        "guest-exec",
        json!({"path": "/bin/echo", "arg": [k.to_string()], "capture-output": true}),
    )["pid"]
        .clone();
    let start = Instant::now();
    loop {
        let st = call("guest-exec-status", json!({ "pid": pid }));
        if st["exited"] == json!(true) {
            assert_eq!(st["exitcode"], json!(0));
            assert_eq!(st["out-data"], json!(base64(format!("{k}\n").as_bytes())));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "exec never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn mixed_requests_keep_memory_and_descriptors_flat() {
    let total = 100_000 * scale();
    let per_batch = 100;
    let mut a = Agent::start(|d| format!("unix-listen:{}", d.join("qga.sock").display()));
    let s = connect(&a.path("qga.sock"));
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let file = a.path("soak.txt");
    let mut base = None;
    let mut errors = 0;
    for b in 0..total / per_batch {
        let (bytes, want) = batch(per_batch, b * per_batch);
        // A writer thread: the replies of a batch can outgrow the socket buffers.
        let mut ww = w.try_clone().unwrap();
        let writer = std::thread::spawn(move || ww.write_all(&bytes));
        for (i, kind) in want.iter().enumerate() {
            let reply = read_reply(&mut r);
            assert!(
                reply.get(kind).is_some(),
                "request {} of batch {b}: want {kind}, got {reply}",
                i
            );
            if *kind == "error" {
                errors += 1;
            }
        }
        writer.join().unwrap().unwrap();
        if b % 10 == 0 {
            handles_and_processes(&mut w, &mut r, &file, b);
        }
        if b == 99 {
            std::thread::sleep(Duration::from_millis(300));
            base = Some(Baseline::take(a.pid()));
        }
    }
    a.assert_alive();
    assert_eq!(errors, total / 100 * 5);
    base.unwrap()
        .check(a.pid(), &format!("{total} mixed requests"));
    assert_idle(&a);
}

#[test]
fn reconnects_over_virtio_serial_in_the_vm() {
    if !support::require_peer(
        support::vm::vm_available(),
        "QEMU TCG VM (../shared/peers/vm)",
    ) {
        return;
    }
    let cycles = 100 * scale();
    let port = "org.qemu.guest_agent.0";
    let vm = Vm::boot(VmOptions {
        ports: vec![port.into()],
        init_cmd: "exec /bin/guestd run --channel qga".into(),
        ..VmOptions::default()
    });
    let limit = Duration::from_secs(90);
    let mut c = QgaClient::connect(vm.port(port), limit)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    // The agent's own view of itself, through guest-exec.
    let stats = |c: &mut QgaClient| -> (u64, usize) {
        let script =
            "p=$(pidof guestd); awk '/^VmRSS/{print $2}' /proc/$p/status; ls /proc/$p/fd | wc -l";
        let pid = c.ok(
            "guest-exec",
            Some(json!({"path": "/bin/sh", "arg": ["-c", script], "capture-output": true})),
        )["pid"]
            .clone();
        let start = Instant::now();
        loop {
            let st = c.ok("guest-exec-status", Some(json!({ "pid": pid })));
            if st["exited"] == json!(true) {
                let out = st["out-data"].as_str().map(decode64).unwrap_or_default();
                let mut l = out.lines();
                let rss: u64 = l.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                let fds: usize = l.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                assert!(rss > 0 && fds > 0, "no stats from the guest: {out:?}");
                return (rss * 1024, fds);
            }
            assert!(start.elapsed() < limit, "guest-exec never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut base = None;
    for i in 0..cycles {
        c.reconnect(limit)
            .unwrap_or_else(|e| panic!("reconnect {i}: {e}"));
        let reply = c.execute("guest-ping", None, limit).unwrap();
        assert_eq!(reply, json!({"return": {}}), "cycle {i}");
        if i % 3 == 1 {
            // Leave mid-request: the next host must not see it glued to its own.
            c.send_raw(b"{\"execute\":\"guest-pi").unwrap();
        }
        if i == 9 {
            base = Some(stats(&mut c));
        }
    }
    let (rss0, fds0) = base.unwrap();
    let (rss, fds) = stats(&mut c);
    eprintln!(
        "VM: RSS {} KiB after 10 reconnects, {} KiB after {cycles}; fds {fds0} then {fds}",
        rss0 / 1024,
        rss / 1024
    );
    assert_eq!(fds, fds0, "descriptors grew in the guest");
    assert!(
        rss <= rss0 + RSS_SLACK,
        "RSS grew in the guest: {rss0} -> {rss}"
    );
}

fn decode64(s: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
