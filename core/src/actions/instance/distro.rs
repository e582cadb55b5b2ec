//! Which family of distribution a root holds: the file formats to write follow from it.

use crate::paths::Paths;

/// Distribution family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Oracle Linux, RHEL, CentOS, Rocky, Alma, Fedora: sysconfig and ifcfg files.
    RedHat,
    /// Debian, Ubuntu and derivatives: ifupdown or NetworkManager keyfiles, `/etc/timezone`.
    Debian,
    /// Anything else: only the formats common to all (passwd, hostname, hosts, localtime).
    Other,
}

/// What [`detect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distro {
    /// Family.
    pub family: Family,
    /// `ID` from os-release (`ol`, `debian`), or what the release file suggested.
    pub id: String,
    /// Major version (`7` of `7.9`), when known.
    pub major: Option<u32>,
}

impl Distro {
    /// Pre-systemd Red Hat releases (OL/RHEL 5 and 6) keep the host name in
    /// `/etc/sysconfig/network` and the zone in `/etc/sysconfig/clock`.
    pub fn is_legacy_redhat(&self) -> bool {
        self.family == Family::RedHat && self.major.is_some_and(|m| m < 7)
    }
}

const REDHAT_IDS: &[&str] = &[
    "ol",
    "rhel",
    "centos",
    "fedora",
    "rocky",
    "almalinux",
    "scientific",
    "amzn",
];
const DEBIAN_IDS: &[&str] = &["debian", "ubuntu", "raspbian", "linuxmint", "devuan"];

/// Read `<root>/etc/os-release` (else `<root>/usr/lib/os-release`), falling back to the old
/// release files: `/etc/oracle-release`, `/etc/redhat-release`, `/etc/centos-release`,
/// `/etc/system-release` (Red Hat family) and `/etc/debian_version` (Debian family).
pub fn detect(paths: &Paths) -> Distro {
    for rel in ["etc/os-release", "usr/lib/os-release"] {
        if let Ok(text) = std::fs::read_to_string(paths.join(rel)) {
            return from_os_release(&text);
        }
    }
    for rel in [
        "etc/oracle-release",
        "etc/redhat-release",
        "etc/centos-release",
        "etc/system-release",
    ] {
        if let Ok(text) = std::fs::read_to_string(paths.join(rel)) {
            let id = if rel.contains("oracle") { "ol" } else { "rhel" };
            return Distro {
                family: Family::RedHat,
                id: id.into(),
                major: release_major(&text),
            };
        }
    }
    if let Ok(text) = std::fs::read_to_string(paths.join("etc/debian_version")) {
        return Distro {
            family: Family::Debian,
            id: "debian".into(),
            major: text.trim().split('.').next().and_then(|m| m.parse().ok()),
        };
    }
    Distro {
        family: Family::Other,
        id: String::new(),
        major: None,
    }
}

/// Parse os-release text.
pub fn from_os_release(text: &str) -> Distro {
    let mut id = String::new();
    let mut like = String::new();
    let mut version = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = super::fsutil::unquote_shell(v.trim());
        match k.trim() {
            "ID" => id = v.to_ascii_lowercase(),
            "ID_LIKE" => like = v.to_ascii_lowercase(),
            "VERSION_ID" => version = v,
            _ => {}
        }
    }
    let words: Vec<&str> = std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .collect();
    let family = if words.iter().any(|w| REDHAT_IDS.contains(w)) {
        Family::RedHat
    } else if words.iter().any(|w| DEBIAN_IDS.contains(w)) {
        Family::Debian
    } else {
        Family::Other
    };
    Distro {
        family,
        id,
        major: version.split('.').next().and_then(|m| m.parse().ok()),
    }
}

/// `Oracle Linux Server release 6.10` -> 6.
fn release_major(text: &str) -> Option<u32> {
    let after = text.split("release").nth(1)?;
    let num: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    num.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_families() {
        let ol = from_os_release(
            "NAME=\"Oracle Linux Server\"\nID=\"ol\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"7.9\"\n",
        );
        assert_eq!(ol.family, Family::RedHat);
        assert_eq!(ol.major, Some(7));
        let deb = from_os_release("ID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(deb.family, Family::Debian);
        assert_eq!(deb.major, Some(12));
        let mint = from_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(mint.family, Family::Debian);
        let alpine = from_os_release("ID=alpine\n");
        assert_eq!(alpine.family, Family::Other);
    }

    #[test]
    fn release_files() {
        assert_eq!(release_major("Oracle Linux Server release 6.10\n"), Some(6));
        assert_eq!(release_major("CentOS release 5.11 (Final)"), Some(5));
    }
}
