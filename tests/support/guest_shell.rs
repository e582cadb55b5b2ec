//! Host side of the systemd test VM's helpers (tests/support/systemd_vm.rs): the command channel
//! of `guest-shell.sh` on a virtio-serial port, and a handle on a QEMU started by
//! `../shared/peers/vm/boot.sh` (which returns while QEMU runs) that kills it when dropped.
//! Busybox VMs use tests/support/vm.rs instead.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The guest-side script, to put into an image (`/bin/guest-shell`).
pub fn guest_shell_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/guest-shell.sh")
}

/// The virtio-serial port name the guest shell listens on.
pub const SHELL_PORT: &str = "org.guestd.test.0";

/// A command channel to `guest-shell.sh` in a guest.
pub struct GuestShell {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    sock: PathBuf,
}

impl GuestShell {
    /// Connects to the port's host socket and waits until the guest answers (reconnecting now
    /// and then: what is sent before the guest opened its port can be lost).
    pub fn connect(sock: &Path, limit: Duration) -> Self {
        let start = Instant::now();
        let mut id = 1_000_000u64;
        loop {
            assert!(
                start.elapsed() < limit,
                "guest shell on {} did not answer within {limit:?}",
                sock.display()
            );
            let Ok(stream) = UnixStream::connect(sock) else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let mut sh = GuestShell {
                stream,
                buf: Vec::new(),
                next_id: id,
                sock: sock.to_owned(),
            };
            for _ in 0..3 {
                id += 1;
                sh.next_id = id;
                if let Ok((0, out)) = sh.try_run("echo guest-shell-ready", Duration::from_secs(3))
                    && out.trim() == "guest-shell-ready"
                {
                    return sh;
                }
            }
        }
    }

    fn try_run(&mut self, cmd: &str, limit: Duration) -> Result<(i32, String), String> {
        assert!(!cmd.contains('\n'), "one line per command: {cmd:?}");
        let id = self.next_id;
        self.next_id += 1;
        self.stream
            .write_all(format!("{id} {cmd}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let marker = format!("\n__GUESTD_RC {id} ");
        let start = Instant::now();
        loop {
            if let Some(pos) = find(&self.buf, marker.as_bytes()) {
                let rest = &self.buf[pos + marker.len()..];
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let rc: i32 = String::from_utf8_lossy(&rest[..nl])
                        .trim()
                        .parse()
                        .map_err(|_| "bad status".to_owned())?;
                    // Output of commands answered earlier (stale pings) comes before ours.
                    let mut out_start = 0;
                    while let Some(p) = find(&self.buf[out_start..pos], b"\n__GUESTD_RC ") {
                        let after = out_start + p + 1;
                        match self.buf[after..pos].iter().position(|&b| b == b'\n') {
                            Some(nl2) => out_start = after + nl2 + 1,
                            None => break,
                        }
                    }
                    let out = String::from_utf8_lossy(&self.buf[out_start..pos]).into_owned();
                    self.buf.drain(..pos + marker.len() + nl + 1);
                    return Ok((rc, out));
                }
            }
            let left = limit
                .checked_sub(start.elapsed())
                .ok_or_else(|| format!("no answer to {cmd:?} within {limit:?}"))?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("guest shell socket closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Runs `cmd` with `sh -c` in the guest: its status and output (stdout and stderr).
    pub fn run(&mut self, cmd: &str, limit: Duration) -> (i32, String) {
        self.try_run(cmd, limit)
            .unwrap_or_else(|e| panic!("guest shell ({}): {e}", self.sock.display()))
    }

    /// Runs `cmd` and insists on status 0; returns its output.
    pub fn ok(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd, Duration::from_secs(120));
        assert_eq!(rc, 0, "guest command {cmd:?} failed with {rc}: {out}");
        out
    }

    /// Sends `cmd` without waiting for its answer (for commands that end the machine).
    pub fn send(&mut self, cmd: &str) {
        let id = self.next_id;
        self.next_id += 1;
        self.stream
            .write_all(format!("{id} {cmd}\n").as_bytes())
            .expect("write to the guest shell");
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A QEMU started by boot.sh (not our child: boot.sh returns while it runs). Killed on drop.
pub struct Qemu {
    /// QEMU's pid.
    pub pid: i32,
    /// The serial console log.
    pub console: PathBuf,
}

impl Qemu {
    /// True while the QEMU process exists (and is not a zombie).
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            }
            Err(_) => false,
        }
    }

    /// Waits up to `limit` for QEMU to exit; true when it did.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        !self.alive()
    }

    /// The console log so far.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits up to `limit` until the console shows `text`.
    pub fn wait_console(&self, text: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.console_text().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.alive() {
            // Only the QEMU this handle started, by its pid.
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
        }
    }
}
