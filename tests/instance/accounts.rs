//! Root password and users, on both families, checked with shadow-utils (pwck, grpck, useradd)
//! and openssl.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use guestd_core::actions::instance::{
    InstanceConfig, Module, Password, Status, UserSpec, accounts, configure,
};

use super::fixtures::{self, Root};
use crate::support;

fn shadow_field(r: &Root, user: &str) -> Vec<String> {
    r.read("etc/shadow")
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .unwrap_or_else(|| panic!("{user} not in shadow"))
        .split(':')
        .map(str::to_string)
        .collect()
}

/// `openssl passwd -6 -salt <salt> <pw>` must give back the stored hash.
fn assert_hash_matches(hash: &str, pw: &str) {
    assert!(hash.starts_with("$6$"), "{hash}");
    let mut parts = hash.split('$').skip(2);
    let mut salt = parts.next().unwrap();
    let mut rounds = None;
    if let Some(r) = salt.strip_prefix("rounds=") {
        rounds = Some(r.to_string());
        salt = parts.next().unwrap();
    }
    if !support::require_peer(support::have_command("openssl"), "openssl (passwd -6)") {
        return;
    }
    assert!(
        rounds.is_none(),
        "default rounds are implied, as chpasswd writes them: {hash}"
    );
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, pw])
        .output()
        .unwrap();
    assert!(out.status.success());
    let expect = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(hash, expect, "openssl disagrees with our SHA-512 crypt");
}

fn pwck_grpck(r: &Root) {
    if !support::require_peer(support::have_command("pwck"), "pwck/grpck (passwd package)") {
        return;
    }
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .args(["-r", "-R"])
            .arg(r.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{tool} -r -R failed: {text}");
        assert!(!text.contains("no matching"), "{tool}: {text}");
        assert!(!text.contains("invalid"), "{tool}: {text}");
        assert!(!text.contains("duplicate"), "{tool}: {text}");
    }
}

fn root_password_on(r: &Root) {
    let before = fs::metadata(r.p("etc/shadow")).unwrap();
    let cfg = InstanceConfig {
        root_password: Some(Password::plain("Welcome! to 'guestd' $x")),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(
        rep.find(Module::Authentication, "root password")
            .unwrap()
            .status,
        Status::Applied
    );
    let f = shadow_field(r, "root");
    assert_hash_matches(&f[1], "Welcome! to 'guestd' $x");
    assert_eq!(f.len(), 9, "shadow line keeps its 9 fields");
    assert!(f[2].parse::<u64>().unwrap() > 19000, "last change updated");
    let after = fs::metadata(r.p("etc/shadow")).unwrap();
    assert_eq!(before.mode() & 0o7777, after.mode() & 0o7777, "mode kept");
    assert_eq!((before.uid(), before.gid()), (after.uid(), after.gid()));
    assert!(
        r.read("etc/shadow-").starts_with("root:*:"),
        "backup of the old file"
    );
    assert!(!r.exists("etc/shadow.lock"), "lock released");
    assert!(!r.exists("etc/passwd.lock"));
    pwck_grpck(r);

    // Already crypted: stored verbatim.
    let crypted = "$6$abcdefgh$3Q1Bx2E5n0jHkJ0q7m7G1Y0jv2p3uQm1o7GqJ8d5v1mYb4hS7mQ9qGgO0m7yT1kZy9sR6jQ3bV8cL2nW5xP4a/";
    let cfg = InstanceConfig {
        root_password: Some(Password::crypted(crypted)),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(shadow_field(r, "root")[1], crypted);

    // A "crypted" value that is not a hash is refused and nothing changes.
    let cfg = InstanceConfig {
        root_password: Some(Password::crypted("plain:text")),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(!rep.is_success());
    assert_eq!(shadow_field(r, "root")[1], crypted);
    assert!(
        !format!("{rep}").contains("plain:text"),
        "value echoed: {rep}"
    );
}

#[test]
fn root_password_oracle_linux() {
    root_password_on(&fixtures::oracle_linux());
}

#[test]
fn root_password_debian() {
    root_password_on(&fixtures::debian());
}

fn users_on(r: &Root, expect_shell: &str, expect_home_mode: u32) {
    let cfg = InstanceConfig {
        users: vec![
            UserSpec {
                name: "alice".into(),
                password: Some(Password::plain("alice-pw")),
                groups: vec!["wheel".into(), "users".into()],
            },
            UserSpec {
                name: "bob".into(),
                password: None,
                groups: vec!["nosuchgroup".into()],
            },
        ],
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert_eq!(
        rep.find(Module::User, "user alice").unwrap().status,
        Status::Applied,
        "{rep}"
    );
    assert_eq!(
        rep.find(Module::User, "user bob").unwrap().status,
        Status::Applied
    );
    assert!(matches!(
        rep.find(Module::User, "user bob groups").unwrap().status,
        Status::Failed(_)
    ));

    let passwd = r.read("etc/passwd");
    let alice: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("alice:"))
        .unwrap()
        .split(':')
        .collect();
    assert_eq!(alice[1], "x");
    assert_eq!(alice[2], "1000");
    assert_eq!(alice[3], "1000");
    assert_eq!(alice[5], "/home/alice");
    assert_eq!(alice[6], expect_shell);
    let bob: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("bob:"))
        .unwrap()
        .split(':')
        .collect();
    assert_eq!((bob[2], bob[3]), ("1001", "1001"));
    let group = r.read("etc/group");
    assert!(group.lines().any(|l| l == "alice:x:1000:"), "{group}");
    assert!(group.lines().any(|l| l == "wheel:x:10:alice"), "{group}");
    assert!(group.lines().any(|l| l == "users:x:100:alice"), "{group}");
    let gshadow = r.read("etc/gshadow");
    assert!(gshadow.lines().any(|l| l == "alice:!::"), "{gshadow}");
    assert!(gshadow.lines().any(|l| l == "wheel:*::alice"), "{gshadow}");
    assert_hash_matches(&shadow_field(r, "alice")[1], "alice-pw");
    assert_eq!(shadow_field(r, "bob")[1], "!", "no password: locked");

    // Home with the skeleton, owned by the user.
    let home = r.p("home/alice");
    let m = fs::metadata(&home).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(m.mode() & 0o7777, expect_home_mode);
    assert_eq!(
        fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# skel bashrc\n"
    );
    assert_eq!(fs::metadata(home.join(".profile")).unwrap().uid(), 1000);
    pwck_grpck(r);

    // Again: an existing user gets a new password and more groups, no duplicate.
    let cfg = InstanceConfig {
        users: vec![UserSpec {
            name: "bob".into(),
            password: Some(Password::plain("bob-pw")),
            groups: vec!["wheel".into()],
        }],
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(r.read("etc/passwd").matches("\nbob:").count(), 1);
    assert!(
        r.read("etc/group")
            .lines()
            .any(|l| l == "wheel:x:10:alice,bob")
    );
    assert_hash_matches(&shadow_field(r, "bob")[1], "bob-pw");
    pwck_grpck(r);
}

#[test]
fn users_oracle_linux() {
    users_on(&fixtures::oracle_linux(), "/bin/bash", 0o700);
}

#[test]
fn users_debian() {
    users_on(&fixtures::debian(), "/bin/sh", 0o700);
}

/// shadow-utils' own useradd on a twin root makes the same passwd, group and home.
#[test]
fn same_as_useradd() {
    if !support::require_peer(support::have_command("useradd"), "useradd (passwd package)") {
        return;
    }
    for make in [fixtures::oracle_linux as fn() -> Root, fixtures::debian] {
        let ours = make();
        let theirs = make();
        let cfg = InstanceConfig {
            users: vec![UserSpec {
                name: "carol".into(),
                password: None,
                groups: vec!["wheel".into()],
            }],
            ..Default::default()
        };
        assert!(configure(&cfg, &ours.paths()).is_success());
        let st = Command::new("useradd")
            .arg("-P")
            .arg(theirs.path())
            .args(["-m", "-G", "wheel", "carol"])
            .status()
            .unwrap();
        assert!(st.success());
        for f in ["etc/passwd", "etc/group", "etc/gshadow"] {
            assert_eq!(ours.read(f), theirs.read(f), "{f} differs from useradd's");
        }
        let line = |r: &Root| -> Vec<String> {
            r.read("etc/shadow")
                .lines()
                .find(|l| l.starts_with("carol:"))
                .unwrap()
                .split(':')
                .map(str::to_string)
                .collect()
        };
        let (a, b) = (line(&ours), line(&theirs));
        assert_eq!(a[1], b[1], "locked password field");
        assert_eq!(a[3..], b[3..], "ageing fields");
        let (ma, mb) = (
            fs::metadata(ours.p("home/carol")).unwrap(),
            fs::metadata(theirs.p("home/carol")).unwrap(),
        );
        assert_eq!(ma.mode(), mb.mode(), "home mode");
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()));
        for f in [".bashrc", ".profile"] {
            let (a, b) = (
                fs::metadata(ours.p("home/carol").join(f)).unwrap(),
                fs::metadata(theirs.p("home/carol").join(f)).unwrap(),
            );
            assert_eq!(
                (a.mode(), a.uid(), a.gid()),
                (b.mode(), b.uid(), b.gid()),
                "{f}"
            );
        }
    }
}

#[test]
fn stale_lock_is_taken_over_and_live_lock_is_respected() {
    let r = fixtures::debian();
    // A lock left by a process that no longer exists.
    r.write("etc/passwd.lock", "999999999");
    accounts::set_password(&r.paths(), "root", &Password::plain("x")).unwrap();
    assert!(!r.exists("etc/passwd.lock"));
    // A lock held by a live process (ourselves stands in for another tool).
    let files = accounts::AccountFiles::open(&r.paths()).unwrap();
    assert!(r.exists("etc/shadow.lock"));
    drop(files);
    assert!(!r.exists("etc/shadow.lock"));
}

#[test]
fn missing_files_fail_clearly() {
    let r = fixtures::debian();
    fs::remove_file(r.p("etc/passwd")).unwrap();
    let cfg = InstanceConfig {
        root_password: Some(Password::plain("x")),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    let e = rep.find(Module::Authentication, "root password").unwrap();
    match &e.status {
        Status::Failed(m) => assert!(m.contains("passwd"), "{m}"),
        s => panic!("{s:?}"),
    }
}

#[test]
fn concurrent_adds_all_land() {
    let r = fixtures::debian();
    let paths = r.paths();
    std::thread::scope(|s| {
        for i in 0..8 {
            let paths = paths.clone();
            s.spawn(move || {
                let spec = UserSpec {
                    name: format!("user{i}"),
                    password: Some(Password::plain(format!("pw{i}"))),
                    groups: vec!["users".into()],
                };
                accounts::add_user(&paths, &spec).unwrap();
            });
        }
    });
    let passwd = r.read("etc/passwd");
    for i in 0..8 {
        assert_eq!(
            passwd.matches(&format!("\nuser{i}:")).count(),
            1,
            "{passwd}"
        );
    }
    let users = r.read("etc/group");
    let members = users.lines().find(|l| l.starts_with("users:")).unwrap();
    assert_eq!(
        members.split(':').nth(3).unwrap().split(',').count(),
        8,
        "{members}"
    );
    pwck_grpck(&r);
}

#[test]
fn waits_for_a_lock_held_by_another_process() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let r = fixtures::oracle_linux();
    let mut holder = Command::new("sleep").arg("30").spawn().unwrap();
    r.write("etc/shadow.lock", &holder.id().to_string());
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            released.store(true, Ordering::SeqCst);
            fs::remove_file(r.p("etc/shadow.lock")).unwrap();
        });
        accounts::set_password(&r.paths(), "root", &Password::plain("after-wait")).unwrap();
        assert!(
            released.load(Ordering::SeqCst),
            "wrote while another process held the lock"
        );
    });
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_hash_matches(&shadow_field(&r, "root")[1], "after-wait");
}
