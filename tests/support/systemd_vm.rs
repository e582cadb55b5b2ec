//! A Debian 12 guest with systemd as init and a real systemd-logind, under QEMU TCG: the root
//! filesystem from `scripts/systemd-vm-image.sh` (built once, cached) as `/dev/vda`, booted
//! through a small initramfs (the peers' `initrd.sh` plus `systemd-vm-init.sh` as `rdinit`)
//! that brings the static guestd and the guest shell in. QEMU runs with `-snapshot`, so every
//! boot starts from the same image.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::guest_shell::{GuestShell, Qemu, SHELL_PORT, guest_shell_script};
use super::vm::Qmp;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cached root filesystem image, building it when missing; `Err` says why it cannot be
/// had (not root, no mmdebstrap, no mirror).
pub fn image() -> Result<PathBuf, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let out = Command::new(repo().join("scripts/systemd-vm-image.sh"))
                .output()
                .map_err(|e| format!("scripts/systemd-vm-image.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/systemd-vm-image.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
}

/// The boot initramfs (rebuilt once per test run: it carries this build's guestd).
fn initrd() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        let dir = repo().join("target/test-vm/systemd");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("initrd.cpio.gz");
        let st = Command::new(super::peers_dir().join("vm/initrd.sh"))
            .arg(&out)
            .arg("--bin")
            .arg(format!("{}:/usr/bin/guestd", super::static_bin().display()))
            .arg("--file")
            .arg(format!(
                "{}:/bin/guest-shell",
                guest_shell_script().display()
            ))
            .arg("--file")
            .arg(format!(
                "{}:/sbin/guestd-switch-root",
                repo().join("tests/support/systemd-vm-init.sh").display()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "initrd.sh failed");
        out
    })
}

/// A running systemd guest.
pub struct SystemdVm {
    /// QEMU (killed on drop).
    pub qemu: Qemu,
    /// QEMU's events.
    pub qmp: Qmp,
    /// The command channel.
    pub shell: GuestShell,
    /// Host end of the guest's `ovirt-guest-agent.0` port (nothing serves it until the test
    /// starts an agent on it).
    pub ovirt_sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl SystemdVm {
    /// Boots the image and waits until the guest shell answers.
    pub fn boot(image: &Path) -> Self {
        let dir = super::short_tmpdir();
        let sock = dir.path().join("t.sock");
        let qmp_sock = dir.path().join("qmp.sock");
        let console = dir.path().join("console.log");
        let ovirt_sock = dir.path().join("ovirt.sock");
        let qemu = {
            let out = Command::new(super::peers_dir().join("vm/boot.sh"))
                .env("QEMU_EXTRA_ARGS", "-snapshot")
                .arg("--initrd")
                .arg(initrd())
                .arg("--disk")
                .arg(image)
                .arg("--port")
                .arg(format!("{SHELL_PORT}={}", sock.display()))
                .arg("--port")
                .arg(format!("ovirt-guest-agent.0={}", ovirt_sock.display()))
                .arg("--qmp")
                .arg(&qmp_sock)
                .args(["--mem", "512"])
                .args(["--append", "rdinit=/sbin/guestd-switch-root"])
                .args(["--wait-for", "guestd-systemd-vm: ready", "--timeout", "900"])
                .arg("--console")
                .arg(&console)
                .output()
                .expect("run boot.sh");
            assert!(
                out.status.success(),
                "boot.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Qemu {
                pid: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
                console: console.clone(),
            }
        };
        let qmp = Qmp::connect(&qmp_sock);
        let shell = GuestShell::connect(&sock, Duration::from_secs(120));
        SystemdVm {
            qemu,
            qmp,
            shell,
            ovirt_sock,
            _dir: dir,
        }
    }
}
