//! The .deb built by `packaging/build-deb.sh`, in a clean Debian 12 root: the cached mmdebstrap
//! image that tests/logind.rs boots, mounted under a throw-away overlay. The package installs
//! there and enables its unit, whose file passes `systemd-analyze verify`; the static binary, the
//! `ovmd` symlink and the default configuration work; it removes and purges cleanly. Then that
//! root, with the package installed, boots under QEMU with systemd and the agent serving.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A writable copy of the cached Debian 12 systemd image of tests/logind.rs
/// (`scripts/systemd-vm-image.sh`, built once): the image loop-mounted read-only under an
/// overlay whose upper layer is a fresh directory, so nothing is copied and the cache is never
/// written. Unmounted (lazily, so a failed test never leaves it behind busy) when dropped.
#[derive(Debug)]
struct DebianRoot {
    dir: tempfile::TempDir,
}

impl DebianRoot {
    fn mount(image: &Path) -> Result<DebianRoot, String> {
        let dir = tempfile::Builder::new()
            .prefix("gddeb")
            .tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .map_err(|e| e.to_string())?;
        for d in ["lower", "upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(d)).map_err(|e| e.to_string())?;
        }
        let root = DebianRoot { dir };
        let p = root.dir.path();
        let (ok, out) = run(Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(image)
            .arg(p.join("lower")));
        if !ok {
            return Err(format!("loop mount of {}: {out}", image.display()));
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            p.join("lower").display(),
            p.join("upper").display(),
            p.join("work").display()
        );
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(p.join("root")));
        if !ok {
            return Err(format!("overlay mount: {out}"));
        }
        Ok(root)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        for d in ["root", "lower"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path().join(d))
                .output();
        }
    }
}

/// The package, built once per test process (both tests here use it).
fn build_deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(build_deb_now).clone()
}

fn build_deb_now() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = run(Command::new(root.join("packaging/build-deb.sh"))
        .env("GUESTD_STATIC_BIN", support::static_bin()));
    assert!(ok, "build-deb.sh failed: {out}");
    let deb = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(deb.exists(), "no package at {}: {out}", deb.display());
    deb
}

#[test]
fn deb_installs_in_a_clean_debian_root() {
    let root_user = nix::unistd::Uid::effective().is_root();
    let tools = support::have_command("mmdebstrap") && support::have_command("dpkg-deb");
    if !support::require_peer(
        root_user && tools,
        "root with mmdebstrap and dpkg-deb (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    let image = support::systemd_vm::image();
    if !support::require_peer(image.is_ok(), &format!("the Debian 12 image: {image:?}")) {
        return;
    }
    let mounted = DebianRoot::mount(&image.unwrap_or_default());
    if !support::require_peer(
        mounted.is_ok(),
        &format!("loop and overlay mounts: {mounted:?}"),
    ) {
        return;
    }
    let deb = build_deb();
    let mounted = mounted.unwrap_or_else(|e| panic!("{e}"));
    let root = mounted.path();
    let r = root.as_path();

    // What dpkg-deb recorded.
    let (ok, info) = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(ok, "{info}");
    assert!(
        info.contains("Package: guestd") && info.contains("Architecture: amd64"),
        "{info}"
    );
    let (ok, contents) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(ok, "{contents}");
    for f in [
        "./usr/sbin/guestd",
        "./usr/sbin/ovmd -> guestd",
        "./lib/systemd/system/guestd.service",
        "./lib/udev/rules.d/60-guestd.rules",
        "./etc/guestd/guestd.toml",
        "./usr/share/man/man8/guestd.8.gz",
        "./usr/share/man/man8/guestd-run.8.gz",
        "./usr/share/man/man8/guestd-check-config.8.gz",
        "./usr/share/man/man8/ovmd.8.gz",
        "./usr/share/man/man5/guestd.toml.5.gz",
    ] {
        assert!(contents.contains(f), "{f} missing:\n{contents}");
    }
    assert!(
        contents.lines().all(|l| l.contains("root/root")),
        "{contents}"
    );

    // Install inside the root, as on a fresh image.
    std::fs::copy(&deb, r.join("tmp/guestd.deb")).unwrap();
    let chroot = |args: &[&str]| run(Command::new("chroot").arg(r).args(args));
    let (ok, out) = chroot(&["dpkg", "-i", "/tmp/guestd.deb"]);
    assert!(ok, "dpkg -i failed: {out}");
    let (_, status) = chroot(&["dpkg-query", "-W", "-f=${Status}", "guestd"]);
    assert_eq!(status, "install ok installed");
    let wants = r.join("etc/systemd/system/multi-user.target.wants/guestd.service");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the unit was not enabled"
    );

    // The static binary and the symlink run in the root; the shipped configuration is valid.
    let (ok, v) = chroot(&["/usr/sbin/guestd", "--version"]);
    assert!(ok && v.contains("protocols: qga, ovirt, ovmd"), "{v}");
    let (ok, v) = chroot(&["/usr/sbin/ovmd", "--version"]);
    assert!(ok && v.contains("ovmd (guestd)"), "{v}");
    let (ok, v) = chroot(&["/usr/sbin/guestd", "check-config"]);
    assert!(ok && v.contains("/etc/guestd/guestd.toml: OK"), "{v}");

    // The unit as systemd reads it, with the root's own systemd.
    let (ok, v) = chroot(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/lib/systemd/system/guestd.service",
    ]);
    assert!(ok, "systemd-analyze verify: {v}");
    assert!(
        !v.contains("guestd.service:"),
        "warnings about the unit: {v}"
    );

    // Upgrade in place (same version again), then remove and purge.
    let (ok, out) = chroot(&["dpkg", "-i", "/tmp/guestd.deb"]);
    assert!(ok, "reinstall: {out}");
    assert!(std::fs::symlink_metadata(&wants).is_ok());
    let (ok, out) = chroot(&["dpkg", "-r", "guestd"]);
    assert!(ok, "dpkg -r: {out}");
    assert!(!r.join("usr/sbin/guestd").exists());
    assert!(!r.join("usr/sbin/ovmd").exists());
    assert!(
        r.join("etc/guestd/guestd.toml").exists(),
        "conffile removed by -r"
    );
    let (ok, out) = chroot(&["dpkg", "-P", "guestd"]);
    assert!(ok, "dpkg -P: {out}");
    assert!(!r.join("etc/guestd/guestd.toml").exists());
    assert!(std::fs::symlink_metadata(&wants).is_err());
}

/// Runs `cmd` in the guest until it prints `want` (trimmed), or panics after `limit`.
fn wait_guest(sh: &mut support::guest_shell::GuestShell, cmd: &str, want: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let (_, out) = sh.run(cmd, Duration::from_secs(60));
        if out.trim() == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{cmd:?} still prints {out:?} (want {want:?}) after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The fresh-image story end to end: the package installed in the clean Debian 12 root, that
/// root booted under QEMU TCG with systemd as init and the oVirt port present. With no
/// configuration and nothing run by hand, the unit enabled by the package starts at boot, is
/// `active` only after guestd's `READY=1`, serves oVirt from the packaged binary, picks up a
/// QGA port hot-plugged over QMP under the unit's sandboxing, survives `systemctl reload`, and
/// on `systemctl stop` thaws the filesystems it froze and exits cleanly. Then, with the agent
/// stopped, a QGA port plugged in starts it again through the package's udev rule.
#[test]
fn deb_installed_image_boots_with_the_agent_serving() {
    use serde_json::json;

    use crate::support::systemd_vm::SystemdVm;
    use crate::support::vm::QgaClient;
    use crate::vm::{OvirtHost, QGA, VM_T, names};

    let root_user = nix::unistd::Uid::effective().is_root();
    if !support::require_peer(
        root_user && support::have_command("dpkg-deb") && support::have_command("mkfs.ext4"),
        "root with dpkg-deb and mkfs.ext4 (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    if !support::require_peer(support::vm::vm_available(), "QEMU and ../shared/peers/vm") {
        return;
    }
    let image = support::systemd_vm::image();
    if !support::require_peer(image.is_ok(), &format!("the Debian 12 image: {image:?}")) {
        return;
    }
    let mounted = DebianRoot::mount(&image.unwrap_or_default());
    if !support::require_peer(
        mounted.is_ok(),
        &format!("loop and overlay mounts: {mounted:?}"),
    ) {
        return;
    }
    let deb = build_deb();
    let mounted = mounted.unwrap_or_else(|e| panic!("{e}"));
    let r = mounted.path();
    std::fs::copy(&deb, r.join("tmp/guestd.deb")).unwrap();
    let (ok, out) = run(Command::new("chroot")
        .arg(&r)
        .args(["dpkg", "-i", "/tmp/guestd.deb"]));
    assert!(ok, "dpkg -i failed: {out}");
    std::fs::remove_file(r.join("tmp/guestd.deb")).unwrap();

    // The installed root as a disk image (what the VM boots; QEMU's -snapshot keeps it as is).
    let disk = mounted.dir.path().join("rootfs.ext4");
    let (ok, out) = run(Command::new("du").args(["-sm"]).arg(&r));
    assert!(ok, "{out}");
    let mb: u64 = out
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0)
        + 160;
    let (ok, out) = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "guestd-root", "-d"])
        .arg(&r)
        .arg(&disk)
        .arg(format!("{mb}M")));
    assert!(ok, "mkfs.ext4: {out}");

    let mut vm = SystemdVm::boot(&disk);
    let sh = &mut vm.shell;
    assert_eq!(sh.ok("cat /proc/1/comm").trim(), "systemd");
    // Type=notify: `active` only once guestd said READY=1.
    wait_guest(sh, "systemctl is-active guestd", "active", VM_T);
    let pid = sh.ok("systemctl show -p MainPID --value guestd");
    assert_eq!(
        sh.ok(&format!("readlink /proc/{}/exe", pid.trim())).trim(),
        "/usr/sbin/guestd"
    );
    let status = sh.ok("systemctl show -p StatusText --value guestd");
    assert!(
        status.contains("serving") && status.contains("ovirt"),
        "{status}"
    );

    // oVirt on its port, with no configuration.
    let mut ovirt = OvirtHost::connect(&vm.ovirt_sock);
    ovirt.send(r#"{"apiVersion": 3, "__name__": "refresh"}"#);
    let got = ovirt
        .until("host-name", VM_T)
        .unwrap_or_else(|g| panic!("no oVirt report: {}", names(&g)));
    assert!(
        got.iter()
            .any(|m| m["__name__"] == "host-name" && m["name"] == "guestd-systemd-vm"),
        "{got:?}"
    );

    // A QGA port hot-plugged while the unit runs is served too.
    let qga_sock = mounted.dir.path().join("qga.sock");
    vm.qmp
        .add_port("hpqga", QGA, &qga_sock)
        .unwrap_or_else(|e| panic!("hot-plug: {e}"));
    let mut qga = QgaClient::connect(&qga_sock, VM_T).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(qga.ok("guest-ping", None), json!({}));
    assert_eq!(
        qga.ok("guest-get-host-name", None)["host-name"],
        json!("guestd-systemd-vm")
    );
    let sh = &mut vm.shell;
    wait_guest(
        sh,
        "systemctl show -p StatusText --value guestd | grep -c qga",
        "1",
        VM_T,
    );

    // Reload (SIGHUP): the agent stays, with its channels.
    sh.ok("systemctl reload guestd");
    assert_eq!(
        sh.ok("systemctl show -p MainPID --value guestd").trim(),
        pid.trim()
    );
    assert_eq!(sh.ok("systemctl is-active guestd").trim(), "active");
    ovirt.send(r#"{"__name__": "echo", "n": 1}"#);
    assert_eq!(ovirt.until("echo", VM_T).unwrap().last().unwrap()["n"], 1);
    assert_eq!(qga.ok("guest-ping", None), json!({}));

    // Stop while the filesystems are frozen: guestd gets SIGTERM alone (KillMode=mixed), thaws
    // them, and exits cleanly (not `failed`).
    let n = qga.ok("guest-fsfreeze-freeze", None);
    assert!(n.as_u64().is_some_and(|n| n >= 1), "froze {n}");
    assert_eq!(qga.ok("guest-fsfreeze-status", None), json!("frozen"));
    drop(qga);
    sh.ok("systemctl stop guestd");
    // A write to the root filesystem would block forever had it stayed frozen.
    sh.ok("touch /var/tmp/written-after-stop");
    assert_eq!(
        sh.run("systemctl is-active guestd", Duration::from_secs(60))
            .1
            .trim(),
        "inactive"
    );
    assert_eq!(
        sh.ok("systemctl show -p Result --value guestd").trim(),
        "success"
    );
    let journal = sh.ok("journalctl -b -u guestd --no-pager -o cat");
    assert!(!journal.is_empty(), "nothing in the journal");

    // The package's udev rule: with the agent stopped, a QGA port that appears starts it.
    vm.qmp
        .remove_port("hpqga")
        .unwrap_or_else(|e| panic!("unplug: {e}"));
    let sh = &mut vm.shell;
    wait_guest(
        sh,
        "grep -lx org.qemu.guest_agent.0 /sys/class/virtio-ports/*/name | wc -l",
        "0",
        VM_T,
    );
    assert_eq!(
        sh.ok("systemctl is-active guestd || true").trim(),
        "inactive"
    );
    let qga_sock = mounted.dir.path().join("qga-udev.sock");
    vm.qmp
        .add_port("udevqga", QGA, &qga_sock)
        .unwrap_or_else(|e| panic!("hot-plug: {e}"));
    let sh = &mut vm.shell;
    wait_guest(sh, "systemctl is-active guestd", "active", VM_T);
    let mut qga = QgaClient::connect(&qga_sock, VM_T).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(qga.ok("guest-ping", None), json!({}));
}
