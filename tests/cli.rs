//! The command line itself: help, version, usage errors.

mod support;

use std::process::Command;

#[test]
fn version_names_the_protocols() {
    let out = Command::new(support::guestd_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("guestd "), "{s}");
    assert!(
        s.contains("qga") && s.contains("ovirt") && s.contains("ovmd"),
        "{s}"
    );
}

#[test]
fn usage_error_exits_2() {
    let out = Command::new(support::guestd_bin())
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(support::guestd_bin())
        .args(["info", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_subcommands() {
    let out = Command::new(support::guestd_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for sub in ["info", "run", "ovmd"] {
        assert!(s.contains(sub), "{sub} missing from --help: {s}");
    }
}

#[test]
fn run_qga_options() {
    // qemu-ga's `-b help`: the command list, exit 0.
    let out = Command::new(support::guestd_bin())
        .args(["run", "--block-rpcs", "help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.lines().count(), 44, "{s}");
    assert!(s.lines().any(|l| l == "guest-sync-delimited"), "{s}");

    // Both lists: refused like qemu-ga refuses them, before anything starts.
    let out = Command::new(support::guestd_bin())
        .args([
            "run",
            "--block-rpcs",
            "guest-exec",
            "--allow-rpcs",
            "guest-ping",
        ])
        .output()
        .unwrap();
    // qemu-ga exits 1 here; guestd checks both lists with the rest of the configuration and
    // exits 6 (LSB "not configured"), which the systemd unit does not restart on.
    assert_eq!(out.status.code(), Some(6));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("block-rpcs and allow-rpcs cannot both be given"),
        "{e}"
    );

    for bad in ["nope=virtio:x", "qga=bogus:x", "qga=virtio:"] {
        let out = Command::new(support::guestd_bin())
            .args(["run", "--channel", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(!out.stderr.is_empty(), "{bad}");
    }

    // --fsfreeze-hook takes its path only attached, as qemu-ga's -F.
    let out = Command::new(support::guestd_bin())
        .args(["run", "--fsfreeze-hook", "/x", "--block-rpcs", "help"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a detached hook path is a stray argument"
    );
}
