//! The .deb built by `packaging/build-deb.sh` installs in a clean Debian 12 root (the cached
//! mmdebstrap image tests/logind.rs boots, mounted under a throw-away overlay), enables its unit, whose file passes
//! `systemd-analyze verify`, works there (the static binary, the `ovmd` symlink, the default
//! configuration), and removes and purges cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn build_deb() -> PathBuf {
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
