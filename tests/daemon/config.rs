//! `guestd check-config` and how `guestd run` treats a configuration it cannot use.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{guestd_bin, short_tmpdir};

fn check(args: &[&str]) -> Output {
    Command::new(guestd_bin())
        .arg("check-config")
        .args(args)
        .env_remove("GUESTD_CONFIG")
        .env_remove("QGA_CONF")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// The package's default configuration (everything commented out) is valid.
#[test]
fn shipped_default_config_is_valid() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/guestd.toml");
    let t = short_tmpdir();
    let none = write(t.path(), "none.conf", "");
    let out = check(&[shipped.to_str().unwrap(), "--qemu-ga-config", &none]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("guestd.toml: OK"));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn good_file_is_ok_and_dump_merges_qemu_ga_conf() {
    let t = short_tmpdir();
    let f = write(
        t.path(),
        "g.toml",
        r#"
log-level = "debug"
[qga]
block-rpcs = ["guest-exec"]
[ovirt]
heartbeat = 2.5
applications = ["kernel*", "guestd"]
[ovmd]
enable = false
"#,
    );
    let q = write(
        t.path(),
        "qga.conf",
        "[general]\nmethod=isa-serial\npath=/dev/ttyS1\nblock-rpcs=guest-file-open;guest-file-write\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n",
    );
    let out = check(&[&f, "--qemu-ga-config", &q, "--dump"]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.contains(&format!("{f}: OK")), "{so}");
    assert!(so.contains(&format!("{q}: OK")), "{so}");
    // qemu-ga's channel and hook, both files' lists (they accumulate, as qemu-ga's do).
    assert!(so.contains("channel = [\"serial:/dev/ttyS1\"]"), "{so}");
    assert!(
        so.contains("block-rpcs = [\"guest-file-open\", \"guest-file-write\", \"guest-exec\"]"),
        "{so}"
    );
    assert!(so.contains("hook = \"/etc/qemu/fsfreeze-hook\""), "{so}");
    assert!(so.contains("heartbeat = 2.5"), "{so}");
    assert!(so.contains("log-level = \"debug\""), "{so}");
    let ovmd = so.split("[ovmd]").nth(1).unwrap();
    assert!(ovmd.contains("enable = false"), "{so}");
}

#[test]
fn broken_files_name_file_and_line() {
    let t = short_tmpdir();
    let none = write(t.path(), "none.conf", "");
    let cases: &[(&str, &str, &str)] = &[
        // (file contents, expected "file:line:" suffix, expected words)
        ("[qga]\nenable = true\nchannel = \n", ":3:", "string"),
        ("[qga]\nenable = yes\n", ":2:", "quoted"),
        ("\n\n[ovirt]\nhearbeat = 5\n", ":4:", "hearbeat"),
        ("[qga]\nchannel = \"virtio:\"\n", ":2:", "Invalid channel"),
        ("[ovirt]\nheartbeat = 0\n", ":2:", "out of range"),
        ("[freeze]\nhook = \"relative/hook\"\n", ":2:", "absolute"),
        ("log-level = \"info,,=x[\"\n", ":1:", "log level"),
        (
            "[qga]\nblock-rpcs = [\"guest-exec\"]\nallow-rpcs = [\"guest-ping\"]\n",
            ":2:",
            "both",
        ),
    ];
    for (i, (body, at, words)) in cases.iter().enumerate() {
        let f = write(t.path(), &format!("c{i}.toml"), body);
        let out = check(&[&f, "--qemu-ga-config", &none]);
        let se = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {se}");
        assert!(
            se.contains(&format!("{f}{at}")),
            "case {i}: want {f}{at} in {se}"
        );
        assert!(se.contains(words), "case {i}: want '{words}' in {se}");
    }
    // Several problems: every one is reported, in line order.
    let f = write(
        t.path(),
        "many.toml",
        "statedir = \"run\"\n[ovirt]\nheartbeat = -1\nfree-ram = \"lots\"\n",
    );
    let out = check(&[&f, "--qemu-ga-config", &none]);
    let se = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let l1 = se.find(&format!("{f}:1:")).expect(&se);
    let l3 = se.find(&format!("{f}:3:")).expect(&se);
    let l4 = se.find(&format!("{f}:4:")).expect(&se);
    assert!(l1 < l3 && l3 < l4, "{se}");
    assert!(se.contains("3 errors"), "{se}");
}

#[test]
fn broken_qemu_ga_conf_names_file_and_line() {
    let t = short_tmpdir();
    let g = write(t.path(), "g.toml", "");
    let q = write(
        t.path(),
        "qga.conf",
        "[general]\n# comment\nmethod=virtio-serial\nnot a pair\nverbose=perhaps\n",
    );
    let out = check(&[&g, "--qemu-ga-config", &q]);
    let se = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains(&format!("{q}:4: ")), "{se}");
    assert!(se.contains(&format!("{q}:5: verbose")), "{se}");
    // guestd.toml can name qemu-ga's file itself.
    let g = write(t.path(), "g2.toml", &format!("qemu-ga-config = \"{q}\"\n"));
    let out = check(&[&g]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("{q}:4: ")));
    // Warnings do not fail the check.
    let q2 = write(
        t.path(),
        "warn.conf",
        "[general]\ndaemon=true\nlogfile=/var/log/x\n",
    );
    let out = check(&[
        t.path().join("g.toml").to_str().unwrap(),
        "--qemu-ga-config",
        &q2,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let se = text(&out.stderr);
    assert!(se.contains(&format!("{q2}:2: warning: daemon")), "{se}");
    assert!(se.contains(&format!("{q2}:3: warning: logfile")), "{se}");
}

#[test]
fn missing_files() {
    let t = short_tmpdir();
    let missing = t.path().join("nope.toml").display().to_string();
    let out = check(&[&missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("{missing}: cannot read")));
    let g = write(t.path(), "g.toml", "");
    let out = check(&[&g, "--qemu-ga-config", &missing]);
    assert_eq!(out.status.code(), Some(1));
    // Usage errors are clap's exit 2.
    let out = check(&["a", "b"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_refuses_a_bad_config_with_exit_6() {
    let t = short_tmpdir();
    let f = write(t.path(), "bad.toml", "[qga]\nchannel = 5\n");
    let out = Command::new(guestd_bin())
        .args(["run", "--config", &f, "--qemu-ga-config", "/dev/null"])
        .output()
        .unwrap();
    let se = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{se}");
    assert!(se.contains(&format!("{f}:2:")), "{se}");
}

#[test]
fn version_lists_the_protocols() {
    let out = Command::new(guestd_bin())
        .arg("--version")
        .output()
        .unwrap();
    let so = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        so.starts_with(&format!("guestd {}", env!("CARGO_PKG_VERSION"))),
        "{so}"
    );
    for p in ["qga", "ovirt", "ovmd"] {
        assert!(so.contains(p), "{so}");
    }
}
