//! A QEMU TCG guest for integration tests, and the host-side clients that talk to it.
//!
//! ```ignore
//! let vm = Vm::boot(VmOptions {
//!     ports: vec!["org.qemu.guest_agent.0".into()],
//!     init_cmd: "exec guestd run --channel qga".into(),
//!     ..VmOptions::default()
//! });
//! let mut qga = QgaClient::connect(vm.port("org.qemu.guest_agent.0"), Duration::from_secs(60))?;
//! assert_eq!(qga.ok("guest-ping", None), json!({}));
//! ```
//!
//! [`Vm::boot`] builds an initramfs with `../shared/peers/vm/initrd.sh` (the static guestd at
//! `/bin/guestd`, plus any binaries and files asked for), optionally an ext4 disk, and boots it
//! with `../shared/peers/vm/boot.sh --foreground`, so QEMU is this process's own child: the
//! test can wait for it to exit, and dropping the [`Vm`] kills exactly that pid. A watchdog
//! process also kills it if the test process dies without dropping it (a `static` shared VM,
//! an abort), so no QEMU outlives a test run.
//!
//! Each boot costs 5 to 10 s under TCG: put several checks into one boot.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where the peers' VM scripts are.
pub fn vm_scripts() -> PathBuf {
    super::peers_dir().join("vm")
}

/// True when a VM can be booted here (QEMU and the peers' scripts); use with
/// [`super::require_peer`].
pub fn vm_available() -> bool {
    vm_scripts().join("boot.sh").exists()
        && vm_scripts().join("initrd.sh").exists()
        && super::have_command("qemu-system-x86_64")
        && super::have_command("cpio")
}

/// A test-only example binary of `package`, built static (musl, release) once per run under a
/// lock, like [`super::static_bin`]. `$GUESTD_STATIC_EXAMPLES` names a directory holding it
/// already built.
pub fn static_example(package: &str, name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("GUESTD_STATIC_EXAMPLES") {
        return PathBuf::from(dir).join(name);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root
        .join("target/x86_64-unknown-linux-musl/release/examples")
        .join(name);
    let lock = root.join("target/.static-build.lock");
    let _ = std::fs::create_dir_all(root.join("target"));
    let status = Command::new("flock")
        .arg(&lock)
        .args([
            "cargo",
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "-p",
            package,
            "--example",
            name,
        ])
        .current_dir(root)
        .status()
        .expect("run cargo build for the static example");
    assert!(status.success(), "static build of example {name} failed");
    out
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// virtio-serial port names; each gets a host socket ([`Vm::port`]).
    pub ports: Vec<String>,
    /// isa-serial lines (the guest's `/dev/ttyS1`, ...), each with a host socket ([`Vm::isa`]).
    pub isa_serials: usize,
    /// An ext4 disk of this many MiB as `/dev/vda` ([`Vm::disk`]); not mounted.
    pub disk_mib: Option<u32>,
    /// Boot without `/dev/virtio-ports` links (`NO_PORT_LINKS=1`): ports are found in sysfs.
    pub no_port_links: bool,
    /// Shell command run once the guest is up (`sh -c`); the guest powers off when it exits.
    /// Empty: the guest idles until killed.
    pub init_cmd: String,
    /// Put the static guestd at `/bin/guestd`.
    pub with_guestd: bool,
    /// More executables: (host path, guest path).
    pub bins: Vec<(PathBuf, String)>,
    /// More files or directories: (host path, guest path).
    pub files: Vec<(PathBuf, String)>,
    /// A QMP monitor socket ([`Vm::qmp`]).
    pub qmp: bool,
    /// A virtio-net NIC on an isolated user network (guest `eth0` 10.0.2.15/24).
    pub net: bool,
    /// Guest host name.
    pub hostname: String,
    /// A Debian 12 `/etc/os-release`.
    pub fake_os_release: bool,
    /// Guest memory in MiB (boot.sh's default when `None`).
    pub mem_mib: Option<u32>,
    /// How long to wait for `guestd-peers: ready`.
    pub boot_timeout: Duration,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            isa_serials: 0,
            disk_mib: None,
            no_port_links: false,
            init_cmd: String::new(),
            with_guestd: true,
            bins: Vec::new(),
            files: Vec::new(),
            qmp: false,
            net: false,
            hostname: "guestd-vm".into(),
            fake_os_release: true,
            mem_mib: None,
            boot_timeout: Duration::from_secs(180),
        }
    }
}

/// A running guest. Dropping it kills its QEMU (by pid) and removes its directory.
pub struct Vm {
    /// Sockets, console log, disk and initramfs live here.
    pub dir: tempfile::TempDir,
    qemu: Child,
    watchdog: Option<Child>,
    ports: Vec<(String, PathBuf)>,
    isa: Vec<PathBuf>,
    /// The serial console log.
    pub console: PathBuf,
    qmp_sock: Option<PathBuf>,
    disk: Option<PathBuf>,
    exited: Option<ExitStatus>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("pid", &self.qemu.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Vm {
    /// Boots the guest and waits until its `/init` is ready; panics with the console's end
    /// on failure.
    pub fn boot(opts: VmOptions) -> Vm {
        Self::try_boot(opts).unwrap_or_else(|e| panic!("VM boot failed: {e}"))
    }

    /// Same, returning the failure.
    pub fn try_boot(opts: VmOptions) -> Result<Vm, String> {
        let dir = super::short_tmpdir();
        let d = dir.path().to_owned();
        let initrd = d.join("initrd.cpio.gz");
        let mut cmd = Command::new(vm_scripts().join("initrd.sh"));
        cmd.arg(&initrd).arg("--hostname").arg(&opts.hostname);
        if opts.fake_os_release {
            cmd.arg("--fake-os-release");
        }
        if opts.with_guestd {
            cmd.arg("--bin")
                .arg(format!("{}:/bin/guestd", super::static_bin().display()));
        }
        for (src, dest) in &opts.bins {
            cmd.arg("--bin").arg(format!("{}:{dest}", src.display()));
        }
        for (src, dest) in &opts.files {
            cmd.arg("--file").arg(format!("{}:{dest}", src.display()));
        }
        if !opts.init_cmd.is_empty() {
            cmd.arg("--init-cmd").arg(&opts.init_cmd);
        }
        // The links choice is made at boot (boot.sh passes it on the kernel command line).
        cmd.env_remove("NO_PORT_LINKS");
        run(&mut cmd, "initrd.sh")?;

        let console = d.join("console.log");
        let mut boot = Command::new(vm_scripts().join("boot.sh"));
        boot.arg("--foreground")
            .arg("--initrd")
            .arg(&initrd)
            .arg("--console")
            .arg(&console);
        let mut ports = Vec::new();
        for (i, name) in opts.ports.iter().enumerate() {
            let sock = d.join(format!("p{i}.sock"));
            boot.arg("--port").arg(format!("{name}={}", sock.display()));
            ports.push((name.clone(), sock));
        }
        let mut isa = Vec::new();
        for i in 0..opts.isa_serials {
            let sock = d.join(format!("s{}.sock", i + 1));
            boot.arg("--isa-serial").arg(&sock);
            isa.push(sock);
        }
        let disk = match opts.disk_mib {
            Some(mib) => {
                let img = d.join("disk.img");
                let f = std::fs::File::create(&img).map_err(|e| format!("disk image: {e}"))?;
                f.set_len(u64::from(mib) << 20)
                    .map_err(|e| format!("disk image: {e}"))?;
                run(
                    Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img),
                    "mkfs.ext4",
                )?;
                boot.arg("--disk").arg(&img);
                Some(img)
            }
            None => None,
        };
        let qmp_sock = opts.qmp.then(|| d.join("qmp.sock"));
        if let Some(q) = &qmp_sock {
            boot.arg("--qmp").arg(q);
        }
        if opts.net {
            boot.arg("--net");
        }
        if let Some(m) = opts.mem_mib {
            boot.arg("--mem").arg(m.to_string());
        }
        if opts.no_port_links {
            boot.env("NO_PORT_LINKS", "1");
        } else {
            boot.env_remove("NO_PORT_LINKS");
        }
        // QEMU's own account of the virtio-serial traffic (host connects, bytes handed to the
        // guest, bytes the guest wrote, throttling) goes to qemu.log: when a reply never comes,
        // it tells on which side of the device it stopped.
        let mut extra = std::env::var("QEMU_EXTRA_ARGS").unwrap_or_default();
        for ev in [
            "virtio_console_chr_read",
            "virtio_console_chr_event",
            "virtio_console_flush_buf",
            "virtio_serial_throttle_port",
            "virtio_serial_send_control_event",
            "virtio_serial_handle_control_message_port",
        ] {
            extra.push_str(" -trace ");
            extra.push_str(ev);
        }
        boot.env("QEMU_EXTRA_ARGS", extra.trim_start());
        let qemu_log =
            std::fs::File::create(d.join("qemu.log")).map_err(|e| format!("qemu.log: {e}"))?;
        let qemu_err = qemu_log.try_clone().map_err(|e| e.to_string())?;
        boot.stdin(Stdio::null())
            .stdout(Stdio::from(qemu_log))
            .stderr(Stdio::from(qemu_err));
        let qemu = boot.spawn().map_err(|e| format!("boot.sh: {e}"))?;
        let watchdog = spawn_watchdog(qemu.id());
        let mut vm = Vm {
            dir,
            qemu,
            watchdog,
            ports,
            isa,
            console,
            qmp_sock,
            disk,
            exited: None,
        };
        let start = Instant::now();
        loop {
            if vm.console_text().contains("guestd-peers: ready") {
                return Ok(vm);
            }
            if vm.has_exited() {
                return Err(format!(
                    "QEMU exited ({:?}) before the guest was ready\n{}",
                    vm.exited,
                    vm.diagnostics()
                ));
            }
            if start.elapsed() > opts.boot_timeout {
                return Err(format!(
                    "guest not ready after {:?}\n{}",
                    opts.boot_timeout,
                    vm.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.qemu.id()
    }

    /// The host socket of the virtio-serial port `name`.
    pub fn port(&self, name: &str) -> &Path {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
            .unwrap_or_else(|| panic!("the VM has no port named {name}"))
    }

    /// The host socket of isa-serial line `n` (1 for the guest's `/dev/ttyS1`).
    pub fn isa(&self, n: usize) -> &Path {
        &self.isa[n - 1]
    }

    /// The disk image, when one was asked for.
    pub fn disk(&self) -> Option<&Path> {
        self.disk.as_deref()
    }

    /// A new QMP connection (the VM must have been booted with `qmp: true`).
    pub fn qmp(&self) -> Qmp {
        Qmp::connect(self.qmp_sock.as_deref().expect("VM booted without qmp"))
    }

    /// The console log so far.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits up to `limit` until the console shows `text`.
    pub fn wait_console(&self, text: &str, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.console_text().contains(text) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True once QEMU has exited (reaping it).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.qemu.try_wait().ok().flatten();
        }
        self.exited.is_some()
    }

    /// Waits up to `limit` for QEMU to exit on its own; its status when it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.has_exited() {
                return self.exited;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The end of the console log and QEMU's own messages, for failure messages.
    pub fn diagnostics(&self) -> String {
        let tail = |p: &Path, n: usize| {
            let t = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        // The CPU sampler's lines would crowd the agent's log out of the tail.
        let console =
            String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = console
            .lines()
            .filter(|l| !l.starts_with("cpu-sample "))
            .collect();
        format!(
            "--- console ({}, without cpu-sample lines) ---\n{}\n--- qemu ---\n{}",
            self.console.display(),
            lines[lines.len().saturating_sub(80)..].join("\n"),
            tail(&self.dir.path().join("qemu.log"), 60)
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The watchdog first, so it never acts on a pid that is no longer QEMU's.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if !self.has_exited() {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
            if std::env::var_os("GUESTD_KEEP_VM").is_some() {
                let dir = std::mem::replace(&mut self.dir, super::short_tmpdir());
                eprintln!("VM directory kept: {}", dir.keep().display());
            }
        }
    }
}

/// A process that kills QEMU (pid `qemu`) when this test process dies: it waits for EOF on a
/// pipe only we hold. Dropping a [`Vm`] kills the watchdog first.
fn spawn_watchdog(qemu: u32) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"read _ignored
               [ "$(cat /proc/$1/comm 2>/dev/null)" = qemu-system-x86 ] && kill -9 "$1"
               exit 0"#,
        )
        .arg("sh")
        .arg(qemu.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Host-side clients
// ---------------------------------------------------------------------------------------------

/// Connects to a unix socket, retrying while it does not exist or nobody listens yet.
pub fn connect_retry(path: &Path, limit: Duration) -> Result<UnixStream, String> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > limit => {
                return Err(format!("connect {}: {e}", path.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Reads into `buf` until `done(buf)` finds what it wants or `deadline` passes. `Ok(false)`:
/// deadline. `Err`: EOF or error.
fn read_until(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<bool, String> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if done(buf) {
            return Ok(true);
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(false);
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(5))))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed by the other end".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(done(buf));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A line-oriented client of a port whose guest end echoes lines (`port_echo`).
pub struct LineClient {
    path: PathBuf,
    stream: UnixStream,
    buf: Vec<u8>,
}

impl LineClient {
    /// Connects and synchronises: sends `#sync-N` lines (reconnecting now and then, as bytes
    /// sent before the guest opened its port can be lost) until one comes back.
    pub fn connect(path: &Path, limit: Duration) -> Result<Self, String> {
        let start = Instant::now();
        let mut c = LineClient {
            path: path.to_owned(),
            stream: connect_retry(path, limit)?,
            buf: Vec::new(),
        };
        let mut attempt = 0u32;
        while start.elapsed() < limit {
            attempt += 1;
            if attempt.is_multiple_of(4) {
                c.stream = connect_retry(path, limit)?;
            }
            let token = format!("#sync-{}-{attempt}\n", std::process::id());
            c.buf.clear();
            if c.stream.write_all(token.as_bytes()).is_err() {
                std::thread::sleep(Duration::from_millis(200));
                c.stream = connect_retry(path, limit)?;
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            let tok = token.as_bytes().to_vec();
            match read_until(&mut c.stream, &mut c.buf, deadline, |b| {
                b.windows(tok.len()).any(|w| w == tok.as_slice())
            }) {
                Ok(true) => {
                    // Drop everything up to and including our token (older syncs, stale lines).
                    let pos = c
                        .buf
                        .windows(tok.len())
                        .position(|w| w == tok.as_slice())
                        .unwrap_or(0);
                    c.buf.drain(..pos + tok.len());
                    return Ok(c);
                }
                Ok(false) => {}
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(200));
                    c.stream = connect_retry(path, limit)?;
                }
            }
        }
        Err(format!("no echo on {} within {limit:?}", c.path.display()))
    }

    /// Connects without synchronising (the guest end is known to be serving).
    pub fn raw(path: &Path) -> Result<Self, String> {
        Ok(LineClient {
            path: path.to_owned(),
            stream: connect_retry(path, Duration::from_secs(30))?,
            buf: Vec::new(),
        })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// The next line (with its newline), within `limit`.
    pub fn read_line(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + limit;
        if !read_until(&mut self.stream, &mut self.buf, deadline, |b| {
            b.contains(&b'\n')
        })? {
            return Err(format!(
                "no line within {limit:?} (have {} bytes)",
                self.buf.len()
            ));
        }
        let nl = self.buf.iter().position(|&b| b == b'\n').unwrap_or(0);
        Ok(self.buf.drain(..=nl).collect())
    }

    /// Sends `line` (a newline is added) and returns the next line received, without newline.
    pub fn ask(&mut self, line: &str, limit: Duration) -> Result<String, String> {
        self.send(format!("{line}\n").as_bytes())?;
        let l = self.read_line(limit)?;
        Ok(String::from_utf8_lossy(&l[..l.len() - 1]).into_owned())
    }

    /// The underlying socket.
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

/// A QGA client over a port's host socket, as a hypervisor would be: synchronises with
/// `guest-sync-delimited` (0xFF resync, retries, a fresh connection after three tries, as
/// `../shared/peers/vm/qga_client.py` does), then one request at a time.
pub struct QgaClient {
    path: PathBuf,
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

/// What a QGA exchange gave.
pub type QgaResult = Result<Value, String>;

impl QgaClient {
    /// Connects and synchronises within `limit`.
    pub fn connect(path: &Path, limit: Duration) -> Result<Self, String> {
        let mut c = QgaClient {
            path: path.to_owned(),
            stream: connect_retry(path, limit)?,
            buf: Vec::new(),
            next_id: u64::from(std::process::id()) * 1000,
        };
        c.sync(limit)?;
        Ok(c)
    }

    /// The host socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connection (the guest sees the host leave); [`QgaClient::reconnect`] opens
    /// a new one.
    pub fn disconnect(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.buf.clear();
    }

    /// Closes the connection and opens a new one, synchronised.
    pub fn reconnect(&mut self, limit: Duration) -> Result<(), String> {
        self.stream = connect_retry(&self.path, limit)?;
        self.buf.clear();
        self.sync(limit)
    }

    /// `guest-sync-delimited` until the agent answers with our id.
    pub fn sync(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut attempt = 0;
        while start.elapsed() < limit {
            attempt += 1;
            if attempt > 3 && attempt % 3 == 1 {
                // Bytes sent before the guest opened its port can leave the channel stuck.
                self.stream = connect_retry(&self.path, limit)?;
            }
            self.next_id += 1;
            let id = self.next_id;
            self.buf.clear();
            let mut req = vec![0xFF];
            req.extend_from_slice(
                json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                    .to_string()
                    .as_bytes(),
            );
            req.push(b'\n');
            if self.stream.write_all(&req).is_err() {
                std::thread::sleep(Duration::from_millis(100));
                self.stream = connect_retry(&self.path, limit)?;
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                // Everything before the last 0xFF is stale; the reply follows it.
                let got = read_until(&mut self.stream, &mut self.buf, deadline, |b| {
                    b.iter()
                        .rposition(|&x| x == 0xFF)
                        .is_some_and(|i| parse_one(&b[i + 1..]).is_some())
                });
                match got {
                    Ok(true) => {
                        let i = self.buf.iter().rposition(|&x| x == 0xFF).unwrap_or(0);
                        self.buf.drain(..=i);
                        if let Some((v, used)) = parse_one(&self.buf) {
                            self.buf.drain(..used);
                            if v.get("return") == Some(&json!(id)) {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                    Ok(false) => break,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        self.stream = connect_retry(&self.path, limit)?;
                        break;
                    }
                }
            }
        }
        Err(format!(
            "no answer to guest-sync-delimited on {} within {limit:?}",
            self.path.display()
        ))
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// The next JSON value from the agent within `limit`; `None` on timeout or EOF.
    pub fn recv(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        let ok = read_until(&mut self.stream, &mut self.buf, deadline, |b| {
            parse_one(b).is_some()
        });
        if !matches!(ok, Ok(true)) {
            return None;
        }
        let (v, used) = parse_one(&self.buf)?;
        self.buf.drain(..used);
        Some(v)
    }

    /// Sends a command and returns the whole reply (`{"return":..}` or `{"error":..}`).
    pub fn execute(&mut self, cmd: &str, args: Option<Value>, limit: Duration) -> QgaResult {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        self.send_raw(&line)?;
        match self.recv(limit) {
            Some(v) => Ok(v),
            None => Err(self.no_reply(cmd, limit)),
        }
    }

    /// Why a reply did not come: what the client holds, and whether the agent answers a
    /// second request (a lost message) or not (a stuck agent).
    fn no_reply(&mut self, cmd: &str, limit: Duration) -> String {
        let held = String::from_utf8_lossy(&self.buf)
            .escape_debug()
            .to_string();
        let held_bytes = self.buf.len();
        self.buf.clear();
        let probe = match self.send_raw(b"{\"execute\":\"guest-ping\"}\n") {
            Err(e) => format!("could not send a second guest-ping: {e}"),
            Ok(()) => match self.recv(Duration::from_secs(10)) {
                Some(v) => format!("a second guest-ping got {v}"),
                None => format!(
                    "a second guest-ping got no reply either (client holds {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            },
        };
        format!(
            "no reply to {cmd} within {limit:?}; the client held {held_bytes} unparsed bytes \
             {held:?}; {probe}"
        )
    }

    /// Sends a command and returns its `return` value; any error is a test failure.
    pub fn ok(&mut self, cmd: &str, args: Option<Value>) -> Value {
        let reply = self
            .execute(cmd, args, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        match reply.get("return") {
            Some(v) => v.clone(),
            None => panic!("{cmd} failed: {reply}"),
        }
    }

    /// Sends a command that answers nothing on success (`guest-shutdown`): `None` when no
    /// reply came within `limit` (or the connection closed), else the reply.
    pub fn execute_no_reply(
        &mut self,
        cmd: &str,
        args: Option<Value>,
        limit: Duration,
    ) -> Option<Value> {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        self.send_raw(&line).ok()?;
        self.recv(limit)
    }
}

/// One JSON value at the start of `b` (after whitespace and 0xFF), and the bytes it used.
fn parse_one(b: &[u8]) -> Option<(Value, usize)> {
    let skip = b
        .iter()
        .position(|&x| !matches!(x, b' ' | b'\t' | b'\r' | b'\n' | 0xFF))?;
    let mut it = serde_json::Deserializer::from_slice(&b[skip..]).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => Some((v, skip + it.byte_offset())),
        _ => None,
    }
}

/// A QMP monitor connection with arguments and events.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events seen so far.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects and leaves capabilities negotiation.
    pub fn connect(sock: &Path) -> Self {
        let stream = connect_retry(sock, Duration::from_secs(30)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = q.read_value().expect("QMP greeting");
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        q.execute("qmp_capabilities", None).unwrap();
        q
    }

    fn read_value(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&line).ok(),
        }
    }

    /// Runs a command: `Ok(return)` or `Err(error)`.
    pub fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, Value> {
        let mut req = json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        writeln!(self.writer, "{req}").unwrap();
        loop {
            let v = self.read_value().expect("QMP answer");
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            return Err(v.get("error").cloned().unwrap_or(v));
        }
    }

    /// Waits for event `name` (or finds it among those seen) within `limit`.
    pub fn wait_event(&mut self, name: &str, limit: Duration) -> Option<Value> {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return Some(self.events.remove(i));
        }
        let start = Instant::now();
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let found = loop {
            if start.elapsed() > limit {
                break None;
            }
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => break None,
                Ok(_) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["event"] == name {
                            break Some(v);
                        }
                        if v.get("event").is_some() {
                            self.events.push(v);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break None,
            }
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        found
    }

    /// Hot-plugs a virtio-serial port `name` whose host end is the unix socket `sock`.
    pub fn add_port(&mut self, id: &str, name: &str, sock: &Path) -> Result<(), Value> {
        self.execute(
            "chardev-add",
            Some(json!({
                "id": format!("{id}-chr"),
                "backend": {"type": "socket", "data": {
                    "addr": {"type": "unix", "data": {"path": sock.display().to_string()}},
                    "server": true, "wait": false
                }}
            })),
        )?;
        self.execute(
            "device_add",
            Some(json!({
                "driver": "virtserialport", "bus": "vser0.0", "id": id,
                "chardev": format!("{id}-chr"), "name": name
            })),
        )?;
        Ok(())
    }

    /// Unplugs a port added with [`Qmp::add_port`] and removes its chardev.
    pub fn remove_port(&mut self, id: &str) -> Result<(), Value> {
        self.execute("device_del", Some(json!({ "id": id })))?;
        // The chardev is free once the device is gone.
        let _ = self.wait_event("DEVICE_DELETED", Duration::from_secs(30));
        self.execute("chardev-remove", Some(json!({ "id": format!("{id}-chr") })))?;
        Ok(())
    }
}
