//! Starting and stopping the agents under test, and the peers guestd's other protocols need.

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::{Client, request};

/// Which agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Guestd,
    QemuGa,
}

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Bins {
    pub guestd: PathBuf,
    pub qemu_ga: PathBuf,
}

/// A running agent, killed (by its pid) when dropped.
#[derive(Debug)]
pub struct Agent {
    pub kind: Kind,
    pub child: Child,
    pub sock: PathBuf,
    pub dir: PathBuf,
}

/// guestd's extra channels for the "all protocols live" run.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// `--channel` arguments beyond the QGA one.
    pub channels: Vec<String>,
    /// Environment for them.
    pub env: Vec<(String, PathBuf)>,
}

impl Agent {
    /// Starts `kind` with its QGA socket and state in `dir` (created).
    pub fn spawn(kind: Kind, bins: &Bins, dir: &Path, extra: &Extra) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let sock = dir.join("qga.sock");
        let _ = std::fs::remove_file(&sock);
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let log = File::create(dir.join("agent.log"))?;
        let mut cmd = match kind {
            Kind::QemuGa => {
                let mut c = Command::new(&bins.qemu_ga);
                // -f: without it qemu-ga would take the system's pid file.
                c.args(["-m", "unix-listen", "-p"])
                    .arg(&sock)
                    .arg("-t")
                    .arg(&state)
                    .arg("-f")
                    .arg(dir.join("qemu-ga.pid"));
                c
            }
            Kind::Guestd => {
                let mut c = Command::new(&bins.guestd);
                c.arg("run")
                    .arg(format!("--channel=qga=unix-listen:{}", sock.display()))
                    .arg(format!("--statedir={}", state.display()));
                for ch in &extra.channels {
                    c.arg(format!("--channel={ch}"));
                }
                for (k, v) in &extra.env {
                    c.env(k, v);
                }
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {kind:?}"))?;
        Ok(Self {
            kind,
            child,
            sock,
            dir: dir.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects and pings until the first answer; the time since `since`.
    pub fn first_answer(&mut self, since: Instant, limit: Duration) -> anyhow::Result<Duration> {
        let ping = request("guest-ping");
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                bail!(
                    "{:?} exited ({st}) before answering: {}",
                    self.kind,
                    self.log()
                );
            }
            if since.elapsed() > limit {
                bail!("{:?} did not answer within {limit:?}", self.kind);
            }
            let Ok(mut c) = Client::connect(&self.sock) else {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            };
            if c.round_trip(&ping).is_ok() {
                return Ok(since.elapsed());
            }
        }
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(self.child.id(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Sends `sig` to a process this program started.
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Debian's xenstored run by `../shared/peers/xenstored/start.sh`, with guest domain 1.
#[derive(Debug)]
pub struct Xenstored {
    kit: PathBuf,
    dir: PathBuf,
    /// The socket where a client is guest domain 1.
    pub guest_socket: PathBuf,
}

impl Xenstored {
    pub fn start(peers: &Path, dir: &Path) -> anyhow::Result<Self> {
        let kit = peers.join("xenstored");
        std::fs::create_dir_all(dir)?;
        let out = Command::new(kit.join("start.sh"))
            .arg(dir)
            .args(["--domid", "1", "--no-trace"])
            .output()
            .context("run xenstored/start.sh")?;
        if !out.status.success() {
            bail!(
                "xenstored/start.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let guest_socket = stdout
            .lines()
            .find_map(|l| l.strip_prefix("XENSTORED_PATH_DOM1="))
            .map(PathBuf::from)
            .context("start.sh printed no XENSTORED_PATH_DOM1")?;
        Ok(Self {
            kit,
            dir: dir.to_owned(),
            guest_socket,
        })
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        let _ = Command::new(self.kit.join("stop.sh"))
            .arg(&self.dir)
            .output();
    }
}

/// The host end of guestd's oVirt channel: connects and reads (and drops) whatever the
/// agent sends, as VDSM would while it has nothing to ask. Ends when the agent closes.
pub fn ovirt_host(sock: PathBuf) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut s = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return 0,
            }
        };
        let mut total = 0u64;
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    })
}
