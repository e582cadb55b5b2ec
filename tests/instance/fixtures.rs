//! Fixture roots: small Oracle Linux-like and Debian-like trees made in a temporary directory.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use guestd_core::Paths;

/// A fixture root, removed when dropped.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn paths(&self) -> Paths {
        Paths::under(self.dir.path())
    }
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }
    pub fn write_mode(&self, rel: &str, text: &str, mode: u32) {
        self.write(rel, text);
        fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    pub fn mkdir(&self, rel: &str) {
        fs::create_dir_all(self.p(rel)).unwrap();
    }
    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.p(rel)).is_ok()
    }
}

fn base() -> Root {
    let dir = tempfile::Builder::new()
        .prefix("gd-inst")
        .tempdir()
        .unwrap();
    Root { dir }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

fn accounts(r: &Root, shadow_gid_name: Option<&str>) {
    r.write_mode("etc/passwd", PASSWD, 0o644);
    r.write_mode(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        if shadow_gid_name.is_some() { 0o640 } else { 0o000 },
    );
    let shadow_group = shadow_gid_name
        .map(|n| format!("{n}:x:42:\n"))
        .unwrap_or_default();
    let group = format!(
        "root:x:0:\ndaemon:x:1:\nbin:x:2:\nwheel:x:10:\nusers:x:100:\n{shadow_group}nogroup:x:65534:\n"
    );
    r.write_mode("etc/group", &group, 0o644);
    let gshadow: String = group
        .lines()
        .map(|l| format!("{}:*::\n", l.split(':').next().unwrap()))
        .collect();
    r.write_mode(
        "etc/gshadow",
        &gshadow,
        if shadow_gid_name.is_some() {
            0o640
        } else {
            0o000
        },
    );
    r.write("etc/skel/.bashrc", "# skel bashrc\n");
    r.write("etc/skel/.profile", "# skel profile\n");
    // pwck counts a missing home as an error, even /nonexistent.
    for d in ["root", "usr/sbin", "bin", "home", "nonexistent"] {
        r.mkdir(d);
    }
    r.write_mode("bin/bash", "", 0o755);
    r.write_mode("usr/sbin/nologin", "", 0o755);
}

/// Oracle Linux 7-like.
pub fn oracle_linux() -> Root {
    let r = base();
    r.write(
        "etc/os-release",
        "NAME=\"Oracle Linux Server\"\nVERSION=\"7.9\"\nID=\"ol\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"7.9\"\n",
    );
    r.write("etc/oracle-release", "Oracle Linux Server release 7.9\n");
    accounts(&r, None);
    r.write(
        "etc/login.defs",
        "MAIL_DIR /var/spool/mail\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nCREATE_HOME yes\nUMASK 077\nUSERGROUPS_ENAB yes\nENCRYPT_METHOD SHA512\n",
    );
    r.write(
        "etc/default/useradd",
        "GROUP=100\nHOME=/home\nSHELL=/bin/bash\nSKEL=/etc/skel\n",
    );
    r.write("etc/hostname", "localhost.localdomain\n");
    r.write("etc/hosts", "127.0.0.1   localhost localhost.localdomain\n::1         localhost localhost.localdomain\n");
    r.write(
        "etc/sysconfig/network",
        "NETWORKING=yes\nHOSTNAME=localhost.localdomain\n",
    );
    r.write(
        "etc/sysconfig/network-scripts/ifcfg-eth0",
        "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nHWADDR=52:54:00:aa:bb:cc\nTYPE=Ethernet\n",
    );
    r.write("etc/sysconfig/clock", "ZONE=\"America/Los_Angeles\"\n");
    r.write(
        "etc/selinux/config",
        "# This file controls the state of SELinux\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
    );
    r.write("etc/chrony.conf", "# Use public servers from the pool.ntp.org project.\nserver 0.rhel.pool.ntp.org iburst\nserver 1.rhel.pool.ntp.org iburst\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\n");
    r.write("etc/resolv.conf", "nameserver 10.0.0.1\n");
    r.mkdir("etc/ssh");
    zoneinfo(&r);
    r
}

/// Debian 12-like.
pub fn debian() -> Root {
    let r = base();
    r.write(
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    );
    r.write("etc/debian_version", "12.5\n");
    accounts(&r, Some("shadow"));
    r.write(
        "etc/login.defs",
        "MAIL_DIR /var/mail\nUMASK 022\nHOME_MODE 0700\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\nENCRYPT_METHOD SHA512\n",
    );
    r.write("etc/default/useradd", "SHELL=/bin/sh\n");
    r.write_mode("bin/sh", "", 0o755);
    r.write("etc/hostname", "debian\n");
    r.write(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n::1     localhost ip6-localhost ip6-loopback\n",
    );
    r.write(
        "etc/network/interfaces",
        "# The loopback network interface\nsource /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n# The primary network interface\nallow-hotplug eth0\niface eth0 inet dhcp\n",
    );
    r.mkdir("etc/network/interfaces.d");
    r.write("etc/timezone", "Etc/UTC\n");
    r.write("etc/chrony/chrony.conf", "# Use Debian vendor zone.\npool 2.debian.pool.ntp.org iburst\n\nkeyfile /etc/chrony/chrony.keys\ndriftfile /var/lib/chrony/chrony.drift\n");
    r.write("etc/resolv.conf", "nameserver 10.0.0.1\n");
    r.mkdir("etc/ssh");
    zoneinfo(&r);
    r
}

/// Copy a few zones from the host's zoneinfo (tzdata is on every Debian), else fake them.
fn zoneinfo(r: &Root) {
    for z in [
        "America/New_York",
        "Europe/Paris",
        "UTC",
        "Etc/UTC",
        "America/Los_Angeles",
    ] {
        let dst = r.p(&format!("usr/share/zoneinfo/{z}"));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let src = Path::new("/usr/share/zoneinfo").join(z);
        if fs::copy(&src, &dst).is_err() {
            fs::write(&dst, b"TZif").unwrap();
        }
    }
}
