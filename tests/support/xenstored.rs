//! A real xenstored (Debian's 4.17, run without Xen by `../shared/peers/xenstored/`) owned by
//! one test: its dom0 socket, one socket per guest domain, its trace, the `xenstore-*` tools.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{have_command, peers_dir, short_tmpdir};

/// True when the kit, the daemon and xenstore-utils are here.
pub fn available() -> bool {
    let kit = peers_dir().join("xenstored/start.sh");
    let daemon = std::fs::read_dir("/usr/lib")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("xen-")
                    && e.path().join("bin/xenstored").exists()
            })
        })
        .unwrap_or(false);
    kit.exists() && daemon && have_command("xenstore-write") && have_command("python3")
}

/// What a missing peer is called in the skip/fail message.
pub const PEER: &str = "xenstored (../shared/peers/xenstored, xen-utils-4.17, xenstore-utils)";

/// A running daemon; stopped when dropped.
#[derive(Debug)]
pub struct Xenstored {
    dir: tempfile::TempDir,
    domids: Vec<u32>,
    extra: Vec<String>,
    /// The dom0 socket: the manager's side.
    pub socket: PathBuf,
    guests: HashMap<u32, PathBuf>,
}

impl Xenstored {
    /// Start a daemon with these guest domains and extra daemon arguments.
    pub fn start(domids: &[u32], extra: &[&str]) -> Self {
        let dir = short_tmpdir();
        let mut x = Self {
            socket: dir.path().join("socket"),
            dir,
            domids: domids.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            guests: HashMap::new(),
        };
        x.run_start();
        x
    }

    fn run_start(&mut self) {
        let mut cmd = Command::new(peers_dir().join("xenstored/start.sh"));
        cmd.arg(self.dir.path());
        for d in &self.domids {
            cmd.args(["--domid", &d.to_string()]);
        }
        if !self.extra.is_empty() {
            cmd.arg("--").args(&self.extra);
        }
        let out = cmd.output().expect("run xenstored/start.sh");
        assert!(
            out.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k == "XENSTORED_PATH" {
                self.socket = PathBuf::from(v);
            } else if let Some(d) = k.strip_prefix("XENSTORED_PATH_DOM") {
                self.guests.insert(d.parse().unwrap(), PathBuf::from(v));
            }
        }
    }

    /// Stop the daemon (and bridges).
    pub fn stop(&self) {
        let _ = Command::new(peers_dir().join("xenstored/stop.sh"))
            .arg(self.dir.path())
            .output();
    }

    /// Stop, then start again in the same directory (same socket paths, empty store).
    pub fn restart(&mut self) {
        self.stop();
        self.run_start();
    }

    /// The socket where a client is guest domain `domid`.
    pub fn guest_socket(&self, domid: u32) -> &Path {
        &self.guests[&domid]
    }

    /// The daemon's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon traced so far (requests and replies, in order).
    pub fn trace(&self) -> String {
        // Values are bytes: the trace may hold any of them.
        std::fs::read(self.dir.path().join("trace.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Run a `xenstore-*` tool as dom0.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .env("XENSTORED_PATH", &self.socket)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// `xenstore-read` as dom0; `None` when it fails.
    pub fn read(&self, path: &str) -> Option<String> {
        let out = self.tool("xenstore-read", &[path]);
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_owned()
        })
    }

    /// `xenstore-write` as dom0, asserting success.
    pub fn write(&self, path: &str, value: &str) {
        let out = self.tool("xenstore-write", &[path, value]);
        assert!(
            out.status.success(),
            "xenstore-write {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        self.stop();
    }
}
