//! datetime, firewall and selinux on both families: the zone checked by glibc reading the new
//! /etc/localtime, the NTP configuration by chronyd's own parser, unit enablement against
//! `systemctl --root`.

use std::fs;
use std::path::Path;
use std::process::Command;

use guestd_core::actions::instance::{InstanceConfig, Module, SelinuxMode, Status, configure};

use super::fixtures::{self, Root};
use crate::support;

fn unit(r: &Root, rel: &str, install: &str) {
    r.write(
        rel,
        &format!(
            "[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/true\n\n[Install]\n{install}\n"
        ),
    );
}

/// Every symlink under etc/systemd/system, as `path -> target`, sorted.
fn links(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("etc/systemd/system")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push(format!(
                    "{} -> {}",
                    p.strip_prefix(root).unwrap().display(),
                    fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `systemctl --root` on a twin root must leave the same symlinks as ours.
fn same_as_systemctl(ours: &Root, twin: &Root, verb: &str, units: &[&str]) {
    if !support::require_peer(support::have_command("systemctl"), "systemctl (--root)") {
        return;
    }
    let st = Command::new("systemctl")
        .arg(format!("--root={}", twin.path().display()))
        .arg(verb)
        .args(units)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        links(ours.path()),
        links(twin.path()),
        "systemctl {verb} {units:?}"
    );
}

fn date_in(localtime: &Path, unix: i64) -> String {
    let out = Command::new("date")
        .env("TZ", format!(":{}", localtime.display()))
        .args(["-d", &format!("@{unix}"), "+%Z %z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn chronyd_parses(conf: &Path) -> Option<String> {
    if !support::require_peer(
        support::have_command("chronyd") || Path::new("/usr/sbin/chronyd").exists(),
        "chronyd (chrony package)",
    ) {
        return None;
    }
    let out = Command::new("/usr/sbin/chronyd")
        .arg("-p")
        .arg("-f")
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chronyd -p: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn datetime_cfg() -> InstanceConfig {
    InstanceConfig {
        timezone: Some("America/New_York".into()),
        utc: Some(true),
        ntp_servers: Some(vec!["time.example.com".into(), "192.0.2.123".into()]),
        ntp_enabled: Some(true),
        datetime: guestd_core::actions::instance::DateTime::new(2011, 4, 7, 9, 2, 42),
        ..Default::default()
    }
}

#[test]
fn datetime_oracle_linux() {
    let make = || {
        let r = fixtures::oracle_linux();
        unit(
            &r,
            "usr/lib/systemd/system/chronyd.service",
            "WantedBy=multi-user.target",
        );
        unit(
            &r,
            "usr/lib/systemd/system/ntpd.service",
            "WantedBy=multi-user.target",
        );
        r
    };
    let r = make();
    let rep = configure(&datetime_cfg(), &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(
        fs::read_link(r.p("etc/localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/America/New_York")
    );
    let zone = date_in(&r.p("etc/localtime"), 1_302_166_962);
    if Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        assert_eq!(zone, "EDT -0400", "glibc reads the new zone");
    }
    assert!(
        r.read("etc/sysconfig/clock")
            .contains("ZONE=America/New_York\n")
    );
    assert!(r.read("etc/sysconfig/clock").contains("UTC=true\n"));
    assert!(!r.exists("etc/timezone"), "no Debian file on Oracle Linux");
    assert_eq!(r.read("etc/adjtime").lines().nth(2), Some("UTC"));
    let chrony = r.read("etc/chrony.conf");
    assert!(!chrony.contains("rhel.pool"), "{chrony}");
    assert!(chrony.contains("server time.example.com iburst\nserver 192.0.2.123 iburst\n"));
    assert!(
        chrony.contains("driftfile /var/lib/chrony/drift"),
        "other lines kept"
    );
    if let Some(parsed) = chronyd_parses(&r.p("etc/chrony.conf")) {
        assert!(
            parsed.contains("server time.example.com iburst"),
            "{parsed}"
        );
        assert!(!parsed.contains("rhel.pool"), "{parsed}");
    }
    // The clock is not set by configuration: the instant, in the new zone, is handed back.
    assert!(rep.find(Module::Datetime, "date and time").is_none());
    let want = if Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        1_302_166_962 + 4 * 3600 // 2011-04-07 09:02:42 EDT
    } else {
        1_302_166_962
    };
    assert_eq!(rep.set_time, Some(want * 1_000_000_000));
    let twin = make();
    same_as_systemctl(&r, &twin, "enable", &["chronyd.service"]);

    // Off disables every NTP unit.
    let off = InstanceConfig {
        ntp_enabled: Some(false),
        utc: Some(false),
        ..Default::default()
    };
    assert!(configure(&off, &r.paths()).is_success());
    assert!(links(r.path()).is_empty(), "{:?}", links(r.path()));
    assert_eq!(r.read("etc/adjtime").lines().nth(2), Some("LOCAL"));
    assert!(r.read("etc/sysconfig/clock").contains("UTC=false\n"));
}

#[test]
fn datetime_debian() {
    let make = || {
        let r = fixtures::debian();
        unit(
            &r,
            "lib/systemd/system/chrony.service",
            "WantedBy=multi-user.target\nAlias=chronyd.service",
        );
        unit(
            &r,
            "lib/systemd/system/systemd-timesyncd.service",
            "WantedBy=sysinit.target\nAlias=dbus-org.freedesktop.timesync1.service",
        );
        r
    };
    let r = make();
    let rep = configure(&datetime_cfg(), &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(r.read("etc/timezone"), "America/New_York\n");
    assert!(!r.exists("etc/sysconfig/clock"));
    assert_eq!(r.read("etc/adjtime"), "0.0 0 0.0\n0\nUTC\n");
    let chrony = r.read("etc/chrony/chrony.conf");
    assert!(!chrony.contains("pool 2.debian"), "{chrony}");
    if let Some(parsed) = chronyd_parses(&r.p("etc/chrony/chrony.conf")) {
        assert!(parsed.contains("server 192.0.2.123 iburst"), "{parsed}");
    }
    let twin = make();
    same_as_systemctl(&r, &twin, "enable", &["chrony.service"]);
    // An unknown zone is refused and the old link stays.
    let bad = InstanceConfig {
        timezone: Some("Mars/Olympus_Mons".into()),
        ..Default::default()
    };
    assert!(!configure(&bad, &r.paths()).is_success());
    assert_eq!(r.read("etc/timezone"), "America/New_York\n");
}

#[test]
fn timesyncd_when_no_ntp_daemon() {
    let r = fixtures::debian();
    fs::remove_file(r.p("etc/chrony/chrony.conf")).unwrap();
    r.write(
        "etc/systemd/timesyncd.conf",
        "[Time]\n#NTP=\n#FallbackNTP=0.debian.pool.ntp.org\n",
    );
    let rep = configure(&datetime_cfg(), &r.paths());
    assert!(
        rep.find(
            Module::Datetime,
            "NTP servers (/etc/systemd/timesyncd.conf)"
        )
        .is_some(),
        "{rep}"
    );
    assert_eq!(
        r.read("etc/systemd/timesyncd.conf"),
        "[Time]\nNTP=time.example.com 192.0.2.123\n#FallbackNTP=0.debian.pool.ntp.org\n"
    );
}

#[test]
fn firewall_oracle_linux_firewalld() {
    let make = || {
        let r = fixtures::oracle_linux();
        unit(
            &r,
            "usr/lib/systemd/system/firewalld.service",
            "WantedBy=multi-user.target\nAlias=dbus-org.fedoraproject.FirewallD1.service",
        );
        unit(
            &r,
            "usr/lib/systemd/system/iptables.service",
            "WantedBy=basic.target",
        );
        r
    };
    let r = make();
    let on = InstanceConfig {
        firewall: Some(true),
        ..Default::default()
    };
    let rep = configure(&on, &r.paths());
    assert!(rep.is_success(), "{rep}");
    let twin = make();
    same_as_systemctl(&r, &twin, "enable", &["firewalld.service"]);
    let off = InstanceConfig {
        firewall: Some(false),
        ..Default::default()
    };
    assert!(configure(&off, &r.paths()).is_success());
    same_as_systemctl(&r, &twin, "disable", &["firewalld.service"]);
    assert!(links(r.path()).is_empty());
}

#[test]
fn firewall_oracle_linux_iptables() {
    let r = fixtures::oracle_linux();
    unit(
        &r,
        "usr/lib/systemd/system/iptables.service",
        "WantedBy=basic.target",
    );
    unit(
        &r,
        "usr/lib/systemd/system/ip6tables.service",
        "WantedBy=basic.target",
    );
    let on = InstanceConfig {
        firewall: Some(true),
        ..Default::default()
    };
    assert!(configure(&on, &r.paths()).is_success());
    assert!(r.exists("etc/systemd/system/basic.target.wants/iptables.service"));
    assert!(r.exists("etc/systemd/system/basic.target.wants/ip6tables.service"));
}

#[test]
fn firewall_debian_ufw() {
    let r = fixtures::debian();
    r.write(
        "etc/ufw/ufw.conf",
        "# /etc/ufw/ufw.conf\n#\nENABLED=no\nLOGLEVEL=low\n",
    );
    unit(
        &r,
        "lib/systemd/system/ufw.service",
        "WantedBy=multi-user.target",
    );
    let on = InstanceConfig {
        firewall: Some(true),
        ..Default::default()
    };
    assert!(configure(&on, &r.paths()).is_success());
    assert_eq!(
        r.read("etc/ufw/ufw.conf"),
        "# /etc/ufw/ufw.conf\n#\nENABLED=yes\nLOGLEVEL=low\n"
    );
    assert!(r.exists("etc/systemd/system/multi-user.target.wants/ufw.service"));
    let off = InstanceConfig {
        firewall: Some(false),
        ..Default::default()
    };
    assert!(configure(&off, &r.paths()).is_success());
    assert!(r.read("etc/ufw/ufw.conf").contains("ENABLED=no\n"));
}

#[test]
fn firewall_none_installed_is_skipped() {
    let r = fixtures::debian();
    let on = InstanceConfig {
        firewall: Some(true),
        ..Default::default()
    };
    let rep = configure(&on, &r.paths());
    assert!(matches!(
        rep.find(Module::Firewall, "firewall on").unwrap().status,
        Status::Skipped(_)
    ));
}

#[test]
fn selinux_both_families() {
    let r = fixtures::oracle_linux();
    let cfg = InstanceConfig {
        selinux: Some(SelinuxMode::Disabled),
        ..Default::default()
    };
    assert!(configure(&cfg, &r.paths()).is_success());
    assert_eq!(
        r.read("etc/selinux/config"),
        "# This file controls the state of SELinux\nSELINUX=disabled\nSELINUXTYPE=targeted\n"
    );
    assert!(!r.exists(".autorelabel"));
    let cfg = InstanceConfig {
        selinux: Some(SelinuxMode::Enforcing),
        ..Default::default()
    };
    assert!(configure(&cfg, &r.paths()).is_success());
    assert!(
        r.read("etc/selinux/config")
            .contains("\nSELINUX=enforcing\n")
    );
    assert!(r.exists(".autorelabel"), "relabel after disabled");

    let d = fixtures::debian();
    let rep = configure(&cfg, &d.paths());
    assert!(matches!(
        rep.find(Module::Selinux, "SELINUX").unwrap().status,
        Status::Skipped(_)
    ));
    assert!(!d.exists("etc/selinux/config"));
}
