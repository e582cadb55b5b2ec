//! Power off, reboot and halt in the QEMU TCG VM (busybox initramfs, ../shared/peers/vm), through
//! guestd as the VM's agent (`guestd run --channel qga=virtio:org.qemu.guest_agent.0`, QGA
//! `guest-shutdown`), each ending in what QEMU reports: the QMP SHUTDOWN event (reason
//! `guest-shutdown` for a power off, `guest-reset` for a reboot under `-no-reboot`), QEMU exiting,
//! or the kernel's "System halted".
//!
//! Every way but logind is exercised here by taking commands out of the image before the agent
//! starts: `/sbin/shutdown` (the peers' shim), busybox `reboot`, and `reboot(2)` with no command
//! left. logind's ways are in tests/logind.rs. A delay (which QGA cannot ask for; oVirt can) is
//! run through `guestd debug power`, started with QGA's `guest-exec`.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::vm::{QgaClient, Qmp, Vm, VmOptions};

const QGA: &str = "org.qemu.guest_agent.0";

/// Boots with `prep` run first, then guestd serving QGA; returns the VM, QMP and a synced client.
fn boot(prep: &str) -> Option<(Vm, Qmp, QgaClient)> {
    if !support::require_peer(
        support::vm::vm_available(),
        "QEMU and ../shared/peers/vm (scripts/install-test-deps.sh)",
    ) {
        return None;
    }
    let vm = Vm::boot(VmOptions {
        ports: vec![QGA.into()],
        qmp: true,
        hostname: "power-vm".into(),
        init_cmd: format!("{prep} NO_COLOR=1 exec guestd run --channel qga=virtio:{QGA}"),
        ..VmOptions::default()
    });
    let qmp = vm.qmp();
    let mut qga = QgaClient::connect(vm.port(QGA), Duration::from_secs(120)).unwrap();
    qga.sync(Duration::from_secs(120)).unwrap();
    Some((vm, qmp, qga))
}

/// `guest-shutdown`: qemu-ga's contract is no reply on success.
fn shutdown(qga: &mut QgaClient, mode: &str) {
    let reply = qga.execute_no_reply(
        "guest-shutdown",
        Some(json!({ "mode": mode })),
        Duration::from_secs(15),
    );
    assert!(reply.is_none(), "guest-shutdown answered {reply:?}");
}

fn expect_shutdown_event(vm: &mut Vm, qmp: &mut Qmp, reason: &str) -> Value {
    let ev = qmp
        .wait_event("SHUTDOWN", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no SHUTDOWN event\n{}", vm.diagnostics()));
    assert_eq!(ev["data"]["guest"], true, "{ev}");
    assert_eq!(ev["data"]["reason"], reason, "{ev}");
    assert!(
        vm.wait_exit(Duration::from_secs(60)).is_some(),
        "QEMU still running after {ev}"
    );
    ev
}

const NO_COMMANDS: &str = "rm /sbin/shutdown /sbin/poweroff /sbin/reboot /sbin/halt &&";

#[test]
fn powerdown_runs_sbin_shutdown_like_qemu_ga() {
    let Some((mut vm, mut qmp, mut qga)) = boot("") else {
        return;
    };
    shutdown(&mut qga, "powerdown");
    expect_shutdown_event(&mut vm, &mut qmp, "guest-shutdown");
    let console = vm.console_text();
    assert!(
        console.contains("guestd-peers: shutdown -h -P +0 hypervisor initiated shutdown"),
        "{console}"
    );
}

#[test]
fn reboot_without_sbin_shutdown_uses_busybox_reboot() {
    let Some((mut vm, mut qmp, mut qga)) = boot("rm /sbin/shutdown &&") else {
        return;
    };
    shutdown(&mut qga, "reboot");
    expect_shutdown_event(&mut vm, &mut qmp, "guest-reset");
    let console = vm.console_text();
    assert!(!console.contains("guestd-peers: shutdown"), "{console}");
    assert!(
        console
            .lines()
            .any(|l| l.contains("running") && l.contains("/sbin/reboot")),
        "{console}"
    );
}

#[test]
fn powerdown_with_no_command_left_uses_the_reboot_syscall() {
    let Some((mut vm, mut qmp, mut qga)) = boot(NO_COMMANDS) else {
        return;
    };
    shutdown(&mut qga, "powerdown");
    expect_shutdown_event(&mut vm, &mut qmp, "guest-shutdown");
    let console = vm.console_text();
    assert!(console.contains("sync and reboot(2)"), "{console}");
}

#[test]
fn reboot_with_no_command_left_uses_the_reboot_syscall() {
    let Some((mut vm, mut qmp, mut qga)) = boot(NO_COMMANDS) else {
        return;
    };
    shutdown(&mut qga, "reboot");
    expect_shutdown_event(&mut vm, &mut qmp, "guest-reset");
    assert!(vm.console_text().contains("sync and reboot(2)"));
}

#[test]
fn halt_with_no_command_left_halts_the_cpu() {
    let Some((mut vm, mut qmp, mut qga)) = boot(NO_COMMANDS) else {
        return;
    };
    shutdown(&mut qga, "halt");
    assert!(
        vm.wait_console("System halted", Duration::from_secs(120)),
        "{}",
        vm.diagnostics()
    );
    // Halted, not powered off: QEMU stays up and reports no SHUTDOWN.
    assert!(qmp.wait_event("SHUTDOWN", Duration::from_secs(3)).is_none());
    assert!(!vm.has_exited());
}

#[test]
fn a_delayed_reboot_with_a_message_is_kept_by_the_agent_without_logind() {
    let Some((mut vm, mut qmp, mut qga)) = boot("") else {
        return;
    };
    let pid = qga.ok(
        "guest-exec",
        Some(json!({
            "path": "/bin/guestd",
            "arg": ["debug", "power", "--mode", "reboot", "--delay", "10", "--message", "later"],
        })),
    );
    assert!(pid["pid"].as_u64().is_some(), "{pid}");
    // Nothing happens at once: the agent keeps the delay itself (no logind here).
    assert_eq!(qga.ok("guest-ping", None), json!({}));
    assert!(!vm.console_text().contains("guestd-peers: shutdown"));
    expect_shutdown_event(&mut vm, &mut qmp, "guest-reset");
    let console = vm.console_text();
    assert!(
        console.contains("guestd-peers: shutdown -r +0 later"),
        "{console}"
    );
}
