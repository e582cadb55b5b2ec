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
