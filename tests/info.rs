//! `guestd info`: the CLI, the documented JSON schema, fixture roots, and cross-checks of the
//! live report against the real tools (`hostname`, `ip -j addr`, `dpkg-query -W`,
//! `/proc/meminfo`, `findmnt -J`, `who`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests may panic

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{have_command, require_peer};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reporters/tests/fixtures/debian12")
}

fn guestd(args: &[&str]) -> Output {
    Command::new(support::guestd_bin())
        .arg("info")
        .args(args)
        .env_remove("GUESTD_LOG")
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = guestd(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The schema of docs/info-schema.md and a validator for the subset of JSON Schema it uses.
// ---------------------------------------------------------------------------------------------

fn schema() -> Value {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/info-schema.md"))
            .unwrap();
    let start = doc
        .find("```json\n")
        .expect("a ```json block in docs/info-schema.md")
        + 8;
    let end = start + doc[start..].find("\n```").unwrap();
    serde_json::from_str(&doc[start..end]).expect("the documented schema is valid JSON")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        other => panic!("schema uses unknown type {other}"),
    }
}

fn check(s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errs.push(format!("{at}: {v} not one of {options:?}"));
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type in schema at {at}"),
        };
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        errs.push(format!("{at}: {n} < {min}"));
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errs.push(format!("{at}: missing required member {r}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            let sub = props.and_then(|p| p.get(k));
            match (sub, s.get("additionalProperties")) {
                (Some(sub), _) => check(sub, val, &format!("{at}.{k}"), errs),
                (None, Some(Value::Bool(false))) => errs.push(format!("{at}: unexpected {k}")),
                (None, Some(extra @ Value::Object(_))) => {
                    check(extra, val, &format!("{at}.{k}"), errs)
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, el) in arr.iter().enumerate() {
            check(items, el, &format!("{at}[{i}]"), errs);
        }
    }
}

fn validate(v: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check(&schema(), v, "$", &mut errs);
    errs
}

#[test]
fn schema_check_can_fail() {
    let good = json(&["--root", fixture().to_str().unwrap()]);
    assert_eq!(validate(&good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["memory"]["total"] = Value::from("lots");
    bad.as_object_mut().unwrap().remove("os");
    bad["interfaces"][0]["ipv4"] = serde_json::json!([{"address": "10.0.0.1"}]);
    bad["applications"][0]["source"] = Value::from("pip");
    let errs = validate(&bad);
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn live_json_validates_against_the_documented_schema() {
    let v = json(&[]);
    assert_eq!(validate(&v), Vec::<String>::new());
    // The required members the issue names are there with values on this machine.
    for k in [
        "hostname",
        "os",
        "interfaces",
        "memory",
        "cpus",
        "load",
        "uptime",
        "timezone",
    ] {
        assert!(!v[k].is_null(), "{k} is null: {:?}", v["errors"]);
    }
    assert!(v["os"]["kernel_release"].is_string());
    assert!(v["memory"]["total"].as_u64().unwrap() > 0);
}

// ---------------------------------------------------------------------------------------------
// The command line.
// ---------------------------------------------------------------------------------------------

#[test]
fn root_on_a_fixture_tree() {
    let root = fixture();
    let v = json(&["--root", root.to_str().unwrap()]);
    assert_eq!(v["hostname"], "guest");
    assert_eq!(v["fqdn"], "guest.example.com");
    assert_eq!(v["os"]["pretty_name"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(v["os"]["kernel_release"], "6.1.0-18-amd64");
    assert_eq!(v["memory"]["total"], 2_030_148u64 * 1024);
    assert_eq!(v["timezone"]["name"], "Europe/Prague");
    assert_eq!(v["cpus"]["online"], 3);
    let apps: Vec<&str> = v["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["adduser", "openssh-server"]);
    let ens4 = v["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "ens4")
        .unwrap();
    assert_eq!(ens4["up"], false);
    assert_eq!(ens4["ipv4"], serde_json::json!([]));
    assert_eq!(v["filesystems"][1]["disks"][0]["scsi"]["lun"], 1);
    // No utmp in the fixture: null, with the reason in errors.
    assert!(v["users"].is_null());
    assert!(v["errors"]["users"].as_str().unwrap().contains("utmp"));

    let out = guestd(&["--root", root.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Memory\n  total        1.9 GiB\n"), "{text}");
    assert!(
        text.contains("\n  ens3  up     52:54:00:12:34:56  "),
        "{text}"
    );
    assert!(text.contains("packages  2 (list them"), "{text}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("guestd: users: "), "{err}");
}

#[test]
fn one_fact() {
    let root = fixture();
    let out = guestd(&["--root", root.to_str().unwrap(), "memory"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Memory\n"), "{text}");
    assert!(!text.contains("Host name"), "{text}");
    let v = json(&["--root", root.to_str().unwrap(), "applications", "load"]);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["applications", "load"]);
    // Asked by name, applications are listed, not counted.
    let out = guestd(&["--root", root.to_str().unwrap(), "applications"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  openssh-server  1:9.2p1-2+deb12u2  amd64  dpkg\n"),
        "{text}"
    );
    // `guestd info users` on this machine: one section, whatever the source says.
    let out = guestd(&["users"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("Users\n")
    );
}

#[test]
fn unknown_fact_is_a_usage_error() {
    let out = guestd(&["memroy"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memroy") && err.contains("possible values"),
        "{err}"
    );
}

#[test]
fn missing_sources_are_reasons_not_failures() {
    let dir = support::short_tmpdir();
    let out = guestd(&["--json", "--root", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(validate(&v), Vec::<String>::new());
    assert!(v["memory"].is_null() && v["os"].is_null());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("guestd: memory: Cannot read"), "{err}");
    // A root that is not there is the caller's mistake: a runtime error.
    let out = guestd(&["--root", "/nonexistent/guestd-root"]);
    assert_eq!(out.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Live cross-checks against the real tools.
// ---------------------------------------------------------------------------------------------

#[test]
fn live_hostname_matches_hostname_tool() {
    if !require_peer(
        have_command("hostname"),
        "hostname (Debian package hostname)",
    ) {
        return;
    }
    let v = json(&["hostname", "fqdn"]);
    let short = tool("hostname", &["-s"]);
    assert_eq!(v["hostname"], short.trim());
    let long = tool("hostname", &["-f"]);
    assert_eq!(v["fqdn"], long.trim());
}

#[test]
fn live_interfaces_match_ip() {
    if !require_peer(have_command("ip"), "ip (Debian package iproute2)") {
        return;
    }
    let v = json(&["interfaces"]);
    let ip: Value = serde_json::from_str(&tool("ip", &["-j", "-s", "addr"])).unwrap();
    let ours = v["interfaces"].as_array().unwrap();
    let names = |a: &[Value], key: &str| -> BTreeSet<String> {
        a.iter()
            .map(|i| i[key].as_str().unwrap().to_owned())
            .collect()
    };
    let theirs = ip.as_array().unwrap();
    assert_eq!(names(ours, "name"), names(theirs, "ifname"));
    for t in theirs {
        let name = t["ifname"].as_str().unwrap();
        let o = ours.iter().find(|i| i["name"] == name).unwrap();
        if let Some(mac) = t["address"]
            .as_str()
            .filter(|m| m.contains(':') && m.len() == 17)
        {
            assert_eq!(o["mac"], mac, "{name}");
        }
        let flags: Vec<&str> = t["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(o["up"], flags.contains(&"UP"), "{name}");
        assert_eq!(o["loopback"], flags.contains(&"LOOPBACK"), "{name}");
        assert_eq!(o["mtu"], t["mtu"], "{name}");
        let mut want: BTreeSet<String> = BTreeSet::new();
        for a in t["addr_info"].as_array().unwrap() {
            want.insert(format!(
                "{}/{}",
                a["local"].as_str().unwrap(),
                a["prefixlen"]
            ));
        }
        let mut got: BTreeSet<String> = BTreeSet::new();
        for fam in ["ipv4", "ipv6"] {
            for a in o[fam].as_array().unwrap() {
                got.insert(format!(
                    "{}/{}",
                    a["address"].as_str().unwrap(),
                    a["prefix"]
                ));
            }
        }
        assert_eq!(got, want, "{name}");
        // Counters only grow: ours were read first.
        if let (Some(st), Some(rx)) = (o["stats"].as_object(), t["stats64"]["rx"].as_object()) {
            assert!(
                st["rx_bytes"].as_u64().unwrap() <= rx["bytes"].as_u64().unwrap(),
                "{name}"
            );
            assert!(st["rx_packets"].as_u64().unwrap() <= rx["packets"].as_u64().unwrap());
        }
    }
}

#[test]
fn live_applications_match_dpkg_query() {
    if !require_peer(
        have_command("dpkg-query"),
        "dpkg-query (Debian package dpkg)",
    ) {
        return;
    }
    let v = json(&["applications"]);
    let ours: BTreeSet<(String, String, String)> = v["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == "dpkg")
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["version"].as_str().unwrap().to_owned(),
                a["arch"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let listing = tool(
        "dpkg-query",
        &[
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ],
    );
    let theirs: BTreeSet<(String, String, String)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            // Second letter of the abbreviation is the state: i = installed.
            (f.len() == 4 && f[0].as_bytes().get(1) == Some(&b'i'))
                .then(|| (f[1].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect();
    assert!(theirs.len() > 50, "dpkg-query listed only {}", theirs.len());
    assert_eq!(ours, theirs);
}

#[test]
fn live_memory_matches_proc_meminfo() {
    let v = json(&["memory"]);
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let m = &v["memory"];
    assert_eq!(m["total"].as_u64().unwrap(), kib("MemTotal") * 1024);
    assert_eq!(m["swap_total"].as_u64().unwrap(), kib("SwapTotal") * 1024);
    // Free memory moves between the two reads: within a tenth of the total.
    let slack = kib("MemTotal") * 1024 / 10;
    for (ours, key) in [("free", "MemFree"), ("available", "MemAvailable")] {
        let a = m[ours].as_u64().unwrap();
        let b = kib(key) * 1024;
        assert!(a.abs_diff(b) <= slack, "{ours}: {a} vs {b}");
    }
}

/// findmnt shows a bind mount's source as `/dev/vda[/sub/dir]`; the device is before `[`.
fn findmnt_source(s: &str) -> String {
    s.split('[').next().unwrap_or(s).to_owned()
}

const PSEUDO_FS: [&str; 20] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// (ours, findmnt's) mounts as sorted `target source type` lines.
fn mount_keys(v: &Value, fm: &Value) -> (Vec<String>, Vec<String>) {
    let key = |t: &str, s: &str, f: &str| format!("{t} {} {f}", findmnt_source(s));
    let mut want: Vec<String> = fm["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !PSEUDO_FS.contains(&f["fstype"].as_str().unwrap_or("")))
        .map(|f| {
            key(
                f["target"].as_str().unwrap(),
                f["source"].as_str().unwrap_or(""),
                f["fstype"].as_str().unwrap(),
            )
        })
        .collect();
    let mut got: Vec<String> = v["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            key(
                f["mountpoint"].as_str().unwrap(),
                f["device"].as_str().unwrap(),
                f["fstype"].as_str().unwrap(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    (got, want)
}

#[test]
fn live_filesystems_match_findmnt() {
    if !require_peer(
        have_command("findmnt"),
        "findmnt (Debian package util-linux)",
    ) {
        return;
    }
    let findmnt = || -> Value {
        serde_json::from_str(&tool(
            "findmnt",
            &["-J", "-l", "-b", "-o", "TARGET,SOURCE,FSTYPE,SIZE,USED"],
        ))
        .unwrap()
    };
    // Other tests on the machine may mount or unmount between the two reads: a differing
    // table is read again, a few times, before it counts as a mismatch.
    let mut attempt = 0;
    let (v, fm) = loop {
        attempt += 1;
        let (v, fm) = (json(&["filesystems"]), findmnt());
        let (got, want) = mount_keys(&v, &fm);
        if got == want || attempt == 3 {
            assert_eq!(got, want);
            break (v, fm);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let ours = v["filesystems"].as_array().unwrap();
    let theirs = fm["filesystems"].as_array().unwrap();
    // Sizes of the root filesystem: the size is fixed, usage moves a little.
    let root_theirs = theirs.iter().rev().find(|f| f["target"] == "/").unwrap();
    let root_ours = ours.iter().rev().find(|f| f["mountpoint"] == "/").unwrap();
    let num = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok()).unwrap();
    assert_eq!(num(&root_ours["total"]), num(&root_theirs["size"]));
    let (a, b) = (num(&root_ours["used"]), num(&root_theirs["used"]));
    assert!(a.abs_diff(b) < 1 << 30, "used: {a} vs {b}");
    // The root filesystem of a disk-backed machine names its disk.
    if root_ours["device"].as_str().unwrap().starts_with("/dev/") {
        assert!(
            !root_ours["disks"].as_array().unwrap().is_empty(),
            "{root_ours}"
        );
    }
}

/// glibc's utmp record, written byte by byte (the reporter parses without libc).
fn utmp_record(
    kind: i16,
    pid: i32,
    line: &str,
    id: &str,
    user: &str,
    host: &str,
    sec: i32,
) -> Vec<u8> {
    let mut b = vec![0u8; 384];
    b[0..2].copy_from_slice(&kind.to_ne_bytes());
    b[4..8].copy_from_slice(&pid.to_ne_bytes());
    let put = |b: &mut [u8], at: usize, max: usize, s: &str| {
        let n = s.len().min(max);
        b[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
    };
    put(&mut b, 8, 32, line);
    put(&mut b, 40, 4, id);
    put(&mut b, 44, 32, user);
    put(&mut b, 76, 256, host);
    b[340..344].copy_from_slice(&sec.to_ne_bytes());
    b
}

#[test]
fn utmp_users_match_who() {
    if !require_peer(have_command("who"), "who (Debian package coreutils)") {
        return;
    }
    let dir = support::short_tmpdir();
    let root = dir.path();
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "alice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    for pid in [4001, 4002] {
        std::fs::create_dir_all(root.join(format!("proc/{pid}"))).unwrap();
    }
    let mut utmp = Vec::new();
    utmp.extend(utmp_record(
        2,
        0,
        "~",
        "~~",
        "reboot",
        "6.1.0-18-amd64",
        1_700_000_000,
    )); // BOOT_TIME
    utmp.extend(utmp_record(
        6,
        700,
        "tty1",
        "tty1",
        "LOGIN",
        "",
        1_700_000_010,
    )); // LOGIN_PROCESS
    utmp.extend(utmp_record(
        7,
        4001,
        "pts/0",
        "ts/0",
        "alice",
        "192.0.2.7",
        1_700_000_100,
    ));
    utmp.extend(utmp_record(8, 4003, "pts/1", "ts/1", "", "", 1_700_000_200)); // DEAD_PROCESS
    utmp.extend(utmp_record(
        7,
        4002,
        "tty2",
        "tty2",
        "bob",
        "",
        1_700_000_300,
    ));
    let file = root.join("run/utmp");
    std::fs::write(&file, &utmp).unwrap();

    let v = json(&["--root", root.to_str().unwrap(), "users"]);
    let ours: Vec<(String, String, String)> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_owned(),
                u["tty"].as_str().unwrap_or("").to_owned(),
                u["remote_host"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let out = Command::new("who")
        .arg(&file)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let theirs: Vec<(String, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let host = l
                .rsplit_once('(')
                .map(|(_, h)| h.trim_end_matches(')').to_owned())
                .unwrap_or_default();
            (f[0].to_owned(), f[1].to_owned(), host)
        })
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(v["users"][0]["uid"], 1000);
    assert_eq!(v["users"][0]["login_time"], 1_700_000_100.0);
    assert_eq!(v["users"][0]["source"], "utmp");

    // A USER_PROCESS whose process has gone is not a live session; `who FILE` does not look.
    std::fs::remove_dir(root.join("proc/4002")).unwrap();
    let v = json(&["--root", root.to_str().unwrap(), "users"]);
    assert_eq!(v["users"].as_array().unwrap().len(), 1);
}

#[test]
fn live_users_match_who_when_utmp_exists() {
    let utmp = ["/run/utmp", "/var/run/utmp"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let logind = Path::new("/run/systemd/system").exists();
    if utmp.is_none() || logind || !have_command("who") {
        // The fixture test above covers utmp; logind is tested in the systemd VM (README).
        eprintln!("note: no utmp-only live system here; live users cross-check not applicable");
        return;
    }
    let v = json(&["users"]);
    let ours: BTreeSet<String> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    let theirs: BTreeSet<String> = tool("who", &[])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(ours, theirs);
}

/// Builds `count` small rpm packages (descriptions from a few bytes to tens of KiB, so headers
/// span SQLite overflow pages and the table needs interior pages) and registers them in a
/// database under `root` with the given rpm backend.
fn rpm_tree(root: &Path, backend: &str, count: usize) {
    let top = root.join("build");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    let mut spec = String::from(
        "Name: gdt\nVersion: 1.0\nRelease: 1.el9\nEpoch: 2\nSummary: guestd test\nLicense: MIT\n\
         BuildArch: noarch\n%description\nmain\n%files\n",
    );
    for i in 0..count {
        let words = if i % 7 == 0 { 4000 } else { 1 + i * 13 % 300 };
        spec.push_str(&format!(
            "%package -n gdt-sub-{i}\nSummary: sub {i}\n%description -n gdt-sub-{i}\n{}\n%files -n gdt-sub-{i}\n",
            "lorem ipsum dolor ".repeat(words)
        ));
    }
    std::fs::write(top.join("SPECS/gdt.spec"), spec).unwrap();
    let st = Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", top.display()))
        .arg(top.join("SPECS/gdt.spec"))
        .status()
        .unwrap();
    assert!(st.success());
    let rpms: Vec<PathBuf> = std::fs::read_dir(top.join("RPMS/noarch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let rpm = |extra: &[&str]| {
        let out = Command::new("rpm")
            .arg("--root")
            .arg(root)
            .args(["--dbpath", "/var/lib/rpm", "--define"])
            .arg(format!("_db_backend {backend}"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "rpm {extra:?}: {out:?}");
    };
    rpm(&["--initdb"]);
    let mut install = vec!["-i", "--justdb", "--nodeps", "--noscripts", "--ignorearch"];
    let paths: Vec<String> = rpms.iter().map(|p| p.display().to_string()).collect();
    install.extend(paths.iter().map(String::as_str));
    rpm(&install);
}

fn rpm_qa(root: &Path) -> Vec<(String, String)> {
    tool(
        "rpm",
        &[
            "--root",
            root.to_str().unwrap(),
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\n",
        ],
    )
    .lines()
    .map(|l| {
        let (n, v) = l.split_once('\t').unwrap();
        (n.to_owned(), v.to_owned())
    })
    .collect::<Vec<_>>()
    .sorted()
}

trait Sorted {
    fn sorted(self) -> Self;
}

impl<T: Ord> Sorted for Vec<T> {
    fn sorted(mut self) -> Self {
        self.sort();
        self
    }
}

fn our_rpms(root: &Path) -> (Vec<(String, String)>, String) {
    let out = Command::new(support::guestd_bin())
        .args(["--log-level", "debug", "info", "--json", "--root"])
        .arg(root)
        .arg("applications")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps = v["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == "rpm")
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect::<Vec<_>>()
        .sorted();
    (apps, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn rpm_databases_match_rpm_qa() {
    if !require_peer(
        have_command("rpm") && have_command("rpmbuild"),
        "rpm and rpmbuild (Debian package rpm)",
    ) {
        return;
    }
    // SQLite (RHEL 9): read directly, no program run.
    let dir = support::short_tmpdir();
    rpm_tree(dir.path(), "sqlite", 150);
    let want = rpm_qa(dir.path());
    assert_eq!(want.len(), 151);
    assert!(want.contains(&("gdt-sub-7".to_owned(), "2:1.0-1.el9".to_owned())));
    let (got, log) = our_rpms(dir.path());
    assert!(log.contains("read rpmdb.sqlite directly"), "{log}");
    assert_eq!(got, want);

    // rpm running (its write-ahead log not merged yet): the main file alone may be stale, so
    // the guest's `rpm -qa` answers. Leave a WAL behind with one more row in it (a copy:
    // rpm checks header digests, so it must be a header rpm wrote).
    let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
    let py = format!(
        "import sqlite3, os\nc = sqlite3.connect({db:?})\nc.execute('PRAGMA wal_autocheckpoint=0')\n\
         b = [r[0] for r in c.execute('SELECT blob FROM Packages') if b'gdt-sub-3\\0' in r[0]][0]\n\
         c.execute('INSERT INTO Packages (blob) VALUES (?)', (b,))\nc.commit()\nos._exit(0)\n",
        db = db.display().to_string()
    );
    let out = Command::new("python3").args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let wal = dir.path().join("var/lib/rpm/rpmdb.sqlite-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "no WAL left behind"
    );
    let want = rpm_qa(dir.path());
    assert_eq!(
        want.iter().filter(|(n, _)| n == "gdt-sub-3").count(),
        2,
        "rpm misses the WAL row"
    );
    let (got, log) = our_rpms(dir.path());
    assert!(!log.contains("directly"), "{log}");
    assert_eq!(got, want);
}
