//! The host end of an oVirt channel, playing VDSM's side as the protocol note describes it
//! (§1.4, §4.2): it writes commands as VDSM's Python `json.dumps` does (the note's golden
//! vectors), reads the agent's lines, checks each with [`Checker`], and answers heartbeats by
//! VDSM's version rules.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checker::Checker;
use crate::support;

/// VDSM's `refresh`, byte for byte.
pub const REFRESH: &str = r#"{"apiVersion": 3, "__name__": "refresh"}"#;
/// `refresh` of a VDSM from before API versioning.
pub const REFRESH_UNVERSIONED: &str = r#"{"__name__": "refresh"}"#;

/// One host connection.
pub struct Host {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Checks every line read.
    pub checker: Checker,
    /// VDSM's `effective` API version, when this host negotiates like VDSM.
    pub vdsm: Option<u8>,
    /// The `api-version` values this host sent.
    pub api_versions_sent: Vec<u8>,
    /// A `refresh` without `apiVersion` was sent: the agent drops to 0 at its next
    /// `session-startup` (the first line of the refresh batch).
    downgrade_at_startup: bool,
    /// Everything read, in order.
    pub seen: Vec<Value>,
}

impl Host {
    /// Wrap a connected stream; `vdsm` is VDSM's starting `effective` version (None: a host
    /// that does not negotiate), `agent_version` the version the agent is known to be at.
    pub fn new(stream: UnixStream, vdsm: Option<u8>, agent_version: u8) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set read timeout");
        Self {
            stream,
            buf: Vec::new(),
            checker: Checker::at(agent_version),
            vdsm,
            api_versions_sent: Vec::new(),
            downgrade_at_startup: false,
            seen: Vec::new(),
        }
    }

    /// Write one command line (a `\n` is added).
    pub fn send(&mut self, line: &str) {
        if line.contains(r#""__name__": "refresh""#) && !line.contains("apiVersion") {
            self.downgrade_at_startup = true;
        }
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && v["__name__"] == "lifecycle-event"
            && let Some(id) = v.get("reply_id")
        {
            self.checker.awaiting.insert(id.to_string());
        }
        self.write_raw(format!("{line}\n").as_bytes());
    }

    /// Write raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to agent");
    }

    /// The next message, or `None` when `deadline` passes or the agent closed the channel.
    pub fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                let v = self
                    .checker
                    .check_line(line)
                    .unwrap_or_else(|e| panic!("agent line fails the checker: {e}"));
                self.after_message(&v);
                self.seen.push(v.clone());
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from agent: {e}"),
            }
        }
    }

    fn after_message(&mut self, v: &Value) {
        match v["__name__"].as_str() {
            Some("session-startup") if self.downgrade_at_startup => {
                self.downgrade_at_startup = false;
                self.checker.version = 0;
            }
            Some("heartbeat") => {
                let Some(effective) = self.vdsm else { return };
                // §4.2, VDSM steps 2 and 3.
                let common = match v.get("apiVersion") {
                    Some(a) => a.as_i64().unwrap_or(0).clamp(0, 3) as u8,
                    None => {
                        self.vdsm = Some(0);
                        return;
                    }
                };
                if common != effective {
                    self.vdsm = Some(common);
                    if common > 0 {
                        self.send(&format!(
                            r#"{{"apiVersion": {common}, "__name__": "api-version"}}"#
                        ));
                        self.api_versions_sent.push(common);
                        // The agent may use it from now on.
                        self.checker.version = common;
                    }
                }
            }
            _ => {}
        }
    }

    /// Messages up to and including the first named `name`; panics after `timeout`.
    pub fn until(&mut self, name: &str, timeout: Duration) -> Vec<Value> {
        self.until_match(|v| v["__name__"] == name, timeout)
            .unwrap_or_else(|got| panic!("no {name} within {timeout:?}; got {}", names(&got)))
    }

    /// Messages up to and including the first matching `pred`, or all read by the deadline.
    pub fn until_match(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Value>, Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while let Some(v) = self.next(deadline) {
            let hit = pred(&v);
            got.push(v);
            if hit {
                return Ok(got);
            }
        }
        Err(got)
    }

    /// Everything read during `d`.
    pub fn read_for(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Some(v) = self.next(deadline) {
            got.push(v);
        }
        got
    }
}

/// The names of messages, for assertions and failure output.
pub fn names(msgs: &[Value]) -> String {
    msgs.iter()
        .map(|m| m["__name__"].as_str().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Names of messages as a vector.
pub fn name_list(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["__name__"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A running `guestd run` serving oVirt on a unix socket.
pub struct AgentProcess {
    child: Child,
    /// The socket path.
    pub sock: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// For `unix-connect`: the host's listening socket.
    pub listener: Option<UnixListener>,
}

/// Heartbeat and report intervals short enough for tests.
pub const FAST: &[&str] = &[
    "--ovirt-heartbeat",
    "0.3",
    "--ovirt-user-interval",
    "0.5",
    "--ovirt-cpus-interval",
    "0.5",
    "--ovirt-inventory-interval",
    "0.7",
    "--ovirt-disks-interval",
    "0.9",
];

impl AgentProcess {
    /// `guestd run --channel ovirt=unix-listen:SOCK`, or `unix-connect` to a socket this
    /// test listens on (a port-like channel: one session across host reconnects).
    pub fn start(connect: bool, extra: &[&str]) -> Self {
        let dir = support::short_tmpdir();
        let sock = dir.path().join("ovirt.sock");
        let log = dir.path().join("guestd.log");
        let listener = connect.then(|| {
            let l = UnixListener::bind(&sock).expect("bind host socket");
            l.set_nonblocking(true).expect("nonblocking listener");
            l
        });
        let kind = if connect {
            "unix-connect"
        } else {
            "unix-listen"
        };
        let child = Command::new(support::guestd_bin())
            .arg("--log-level")
            .arg("debug")
            .arg("run")
            .arg("--statedir")
            .arg(dir.path().join("state"))
            .arg("--channel")
            .arg(format!("ovirt={kind}:{}", sock.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start guestd");
        Self {
            child,
            sock,
            log,
            _dir: dir,
            listener,
        }
    }

    /// Connect to a `unix-listen` agent (waiting for its socket).
    pub fn connect(&mut self) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => return s,
                Err(e) if Instant::now() < deadline => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        panic!("guestd exited ({st}) before listening: {e}\n{}", self.log());
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
                Err(e) => panic!(
                    "cannot connect to {}: {e}\n{}",
                    self.sock.display(),
                    self.log()
                ),
            }
        }
    }

    /// Accept the agent's next connection on a `unix-connect` channel.
    pub fn accept(&mut self) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(20);
        let l = self.listener.as_ref().expect("a unix-connect agent");
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).expect("blocking stream");
                    return s;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("agent did not connect: {e}\n{}", self.log()),
            }
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("guestd did not stop on SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
