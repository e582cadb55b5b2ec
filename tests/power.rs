//! Power off, reboot and halt in the QEMU TCG VM (busybox initramfs, ../shared/peers/vm), each
//! ending in what QEMU reports: the QMP SHUTDOWN event (reason `guest-shutdown` for a power off,
//! `guest-reset` for a reboot under `-no-reboot`), QEMU exiting, or the kernel's "System halted".
//!
//! Every way but logind is exercised here, by taking commands out of the image: `/sbin/shutdown`
//! (the peers' shim), busybox `poweroff`, and `reboot(2)` with no command left. logind's way is
//! in tests/logind.rs. The action is started through `guestd debug power` in the guest (a test
//! hook running the same core action the protocols call), driven over a test-only shell on a
//! virtio-serial port.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use support::guest_shell::{GuestShell, Qemu, Qmp, SHELL_PORT, guest_shell_script};

fn peers_ok() -> bool {
    support::require_peer(
        support::peers_dir().join("vm/boot.sh").exists()
            && support::have_command("qemu-system-x86_64"),
        "QEMU and ../shared/peers/vm (scripts/install-test-deps.sh)",
    )
}

/// One initramfs for every test here: busybox, the static guestd, the guest shell.
fn initrd() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-vm/power");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("initrd.cpio.gz");
        let bin = support::static_bin();
        let st = Command::new(support::peers_dir().join("vm/initrd.sh"))
            .arg(&out)
            .arg("--bin")
            .arg(format!("{}:/usr/bin/guestd", bin.display()))
            .arg("--file")
            .arg(format!(
                "{}:/bin/guest-shell",
                guest_shell_script().display()
            ))
            .args(["--fake-os-release", "--hostname", "power-vm"])
            .args(["--init-cmd", &format!("/bin/guest-shell {SHELL_PORT}")])
            .status()
            .unwrap();
        assert!(st.success(), "initrd.sh failed");
        out
    })
}

struct Vm {
    _dir: tempfile::TempDir,
    qemu: Qemu,
    qmp: Qmp,
    shell: GuestShell,
}

fn boot() -> Vm {
    let dir = support::short_tmpdir();
    let sock = dir.path().join("t.sock");
    let qmp_sock = dir.path().join("qmp.sock");
    let console = dir.path().join("console.log");
    let qemu = Qemu::boot(
        &[
            "--initrd",
            initrd().to_str().unwrap(),
            "--port",
            &format!("{SHELL_PORT}={}", sock.display()),
            "--qmp",
            qmp_sock.to_str().unwrap(),
            "--wait-for",
            "guestd-peers: ready",
            "--timeout",
            "180",
        ],
        &console,
    );
    let qmp = Qmp::connect(&qmp_sock);
    let shell = GuestShell::connect(&sock, Duration::from_secs(120));
    Vm {
        _dir: dir,
        qemu,
        qmp,
        shell,
    }
}

/// Starts `guestd debug power ARGS` in the background, its output on the console.
fn power(vm: &mut Vm, args: &str) {
    vm.shell.ok(&format!(
        "NO_COLOR=1 guestd debug power {args} >/dev/console 2>&1 &"
    ));
}

fn expect_shutdown_event(vm: &mut Vm, reason: &str) {
    let ev = vm
        .qmp
        .wait_event("SHUTDOWN", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no SHUTDOWN event; console:\n{}", vm.qemu.console_text()));
    assert_eq!(ev["data"]["guest"], true, "{ev}");
    assert_eq!(ev["data"]["reason"], reason, "{ev}");
    assert!(
        vm.qemu.wait_exit(Duration::from_secs(60)),
        "QEMU still running after {ev}"
    );
}

#[test]
fn poweroff_runs_sbin_shutdown_with_the_message() {
    if !peers_ok() {
        return;
    }
    let mut vm = boot();
    power(&mut vm, "--mode poweroff --message 'bye now'");
    expect_shutdown_event(&mut vm, "guest-shutdown");
    let console = vm.qemu.console_text();
    assert!(
        console.contains("guestd-peers: shutdown -h -P +0 bye now"),
        "{console}"
    );
}

#[test]
fn reboot_after_a_delay_runs_sbin_shutdown() {
    if !peers_ok() {
        return;
    }
    let mut vm = boot();
    power(&mut vm, "--mode reboot --delay 3 --message later");
    assert!(
        vm.qemu.wait_console("Scheduled", Duration::from_secs(60)),
        "{}",
        vm.qemu.console_text()
    );
    // The agent keeps the delay itself here (no logind): nothing happens at once.
    assert!(!vm.qemu.console_text().contains("guestd-peers: shutdown"));
    expect_shutdown_event(&mut vm, "guest-reset");
    let console = vm.qemu.console_text();
    assert!(
        console.contains("guestd-peers: shutdown -r +0 later"),
        "{console}"
    );
}

#[test]
fn poweroff_without_sbin_shutdown_uses_busybox_poweroff() {
    if !peers_ok() {
        return;
    }
    let mut vm = boot();
    vm.shell.ok("rm /sbin/shutdown");
    power(&mut vm, "--mode poweroff");
    expect_shutdown_event(&mut vm, "guest-shutdown");
    let console = vm.qemu.console_text();
    assert!(!console.contains("guestd-peers: shutdown"), "{console}");
    assert!(
        console
            .lines()
            .any(|l| l.contains("running") && l.contains("/sbin/poweroff")),
        "{console}"
    );
}

#[test]
fn reboot_with_no_command_left_uses_the_reboot_syscall() {
    if !peers_ok() {
        return;
    }
    let mut vm = boot();
    vm.shell
        .ok("rm /sbin/shutdown /sbin/poweroff /sbin/reboot /sbin/halt");
    power(&mut vm, "--mode reboot");
    expect_shutdown_event(&mut vm, "guest-reset");
    let console = vm.qemu.console_text();
    assert!(console.contains("sync and reboot(2)"), "{console}");
}

#[test]
fn halt_with_no_command_left_halts_the_cpu() {
    if !peers_ok() {
        return;
    }
    let mut vm = boot();
    vm.shell
        .ok("rm /sbin/shutdown /sbin/poweroff /sbin/reboot /sbin/halt");
    power(&mut vm, "--mode halt");
    assert!(
        vm.qemu
            .wait_console("System halted", Duration::from_secs(120)),
        "{}",
        vm.qemu.console_text()
    );
    // Halted, not powered off: QEMU stays up and reports no SHUTDOWN.
    assert!(
        vm.qmp
            .wait_event("SHUTDOWN", Duration::from_secs(3))
            .is_none()
    );
    assert!(vm.qemu.alive());
}
