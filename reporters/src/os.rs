//! Operating system: os-release (every field), the older release files that Oracle Linux 5/6,
//! RHEL/CentOS 5/6 and old Debian/Ubuntu guests have instead, and the kernel (uname).

use std::collections::BTreeMap;

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::OsInfo;

use crate::util;

/// Reads the OS identification under `paths`.
pub fn read(paths: &Paths) -> Result<OsInfo, FactError> {
    let mut info = release(paths)?;
    kernel(paths, &mut info);
    if info.source.is_none() && info.kernel_release.is_none() {
        return Err(FactError::Unavailable(
            "no os-release, no older release file and no kernel information".into(),
        ));
    }
    Ok(info)
}

fn release(paths: &Paths) -> Result<OsInfo, FactError> {
    for rel in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = util::read_opt(&paths.join(rel))? {
            let mut info = from_os_release(&parse_os_release(&text));
            info.source = Some(rel.to_owned());
            return Ok(info);
        }
    }
    // Oracle's file first: Oracle Linux also ships a redhat-release that names RHEL.
    for rel in [
        "/etc/oracle-release",
        "/etc/enterprise-release",
        "/etc/redhat-release",
    ] {
        if let Some(text) = util::read_opt(&paths.join(rel))?
            && let Some(mut info) = from_release_line(&text)
        {
            info.source = Some(rel.to_owned());
            return Ok(info);
        }
    }
    if let Some(text) = util::read_opt(&paths.join("/etc/lsb-release"))? {
        let fields = parse_os_release(&text);
        if fields.contains_key("DISTRIB_ID") {
            let mut info = from_lsb_release(fields);
            info.source = Some("/etc/lsb-release".to_owned());
            return Ok(info);
        }
    }
    if let Some(text) = util::read_opt(&paths.join("/etc/debian_version"))? {
        let v = text.trim().to_owned();
        if !v.is_empty() {
            return Ok(OsInfo {
                name: Some("Debian GNU/Linux".into()),
                id: Some("debian".into()),
                pretty_name: Some(format!("Debian GNU/Linux {v}")),
                version: Some(v.clone()),
                version_id: Some(v),
                source: Some("/etc/debian_version".into()),
                ..OsInfo::default()
            });
        }
    }
    Ok(OsInfo::default())
}

/// Kernel release, version and machine: uname on the running system; for another tree, what
/// its `proc/sys/kernel` says, if it has one.
fn kernel(paths: &Paths, info: &mut OsInfo) {
    if paths.is_system()
        && let Ok(u) = nix::sys::utsname::uname()
    {
        info.kernel_release = Some(u.release().to_string_lossy().into_owned());
        info.kernel_version = Some(u.version().to_string_lossy().into_owned());
        info.machine = Some(u.machine().to_string_lossy().into_owned());
        return;
    }
    info.kernel_release = util::attr(&paths.proc("sys/kernel/osrelease"));
    info.kernel_version = util::attr(&paths.proc("sys/kernel/version"));
}

/// Parses os-release syntax (a subset of shell assignments): `KEY=value`, values optionally
/// in double or single quotes, backslash escapes (`\"`, `\\`, `\$`, `` \` ``) in double
/// quotes and bare values, `#` comment lines. Lines that are not assignments are skipped.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.insert(key.to_owned(), unquote(raw));
    }
    out
}

fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let (mut dq, mut sq) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '\\' if !sq => match chars.next() {
                Some(n) if !dq || matches!(n, '"' | '\\' | '$' | '`') => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => {}
            },
            c if !dq && !sq && c.is_whitespace() => break, // `KEY=a # comment`
            c => out.push(c),
        }
    }
    out
}

fn from_os_release(f: &BTreeMap<String, String>) -> OsInfo {
    let get = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    OsInfo {
        name: get("NAME"),
        id: get("ID"),
        id_like: f
            .get("ID_LIKE")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        version: get("VERSION"),
        version_id: get("VERSION_ID"),
        version_codename: get("VERSION_CODENAME"),
        pretty_name: get("PRETTY_NAME"),
        variant: get("VARIANT"),
        variant_id: get("VARIANT_ID"),
        release_fields: f.clone(),
        ..OsInfo::default()
    }
}

fn from_lsb_release(f: BTreeMap<String, String>) -> OsInfo {
    let get = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    let name = get("DISTRIB_ID");
    let version_id = get("DISTRIB_RELEASE");
    let codename = get("DISTRIB_CODENAME");
    OsInfo {
        id: name.as_ref().map(|n| n.to_ascii_lowercase()),
        pretty_name: get("DISTRIB_DESCRIPTION")
            .or_else(|| Some(format!("{} {}", name.clone()?, version_id.clone()?))),
        version: version_id.as_ref().map(|v| match &codename {
            Some(c) => format!("{v} ({c})"),
            None => v.clone(),
        }),
        name,
        version_id,
        version_codename: codename,
        release_fields: f,
        ..OsInfo::default()
    }
}

/// Parses a one-line release file: `NAME release VERSION (CODENAME)`, e.g. `Oracle Linux
/// Server release 6.10`, `CentOS release 5.11 (Final)`, `Red Hat Enterprise Linux Server
/// release 5.11 (Tikanga)`.
pub fn from_release_line(text: &str) -> Option<OsInfo> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (name, rest) = match line.split_once(" release ") {
        Some((n, r)) => (n.trim(), r.trim()),
        None => (line, ""),
    };
    let version_id = rest.split_whitespace().next().map(str::to_owned);
    let codename = rest
        .split_once('(')
        .and_then(|(_, c)| c.split_once(')'))
        .map(|(c, _)| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    Some(OsInfo {
        id: Some(id_for(name)),
        name: Some(name.to_owned()),
        version: (!rest.is_empty()).then(|| rest.to_owned()),
        version_id,
        version_codename: codename,
        pretty_name: Some(line.to_owned()),
        ..OsInfo::default()
    })
}

/// The os-release `ID` the distribution uses on its newer releases.
fn id_for(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    let known = [
        ("oracle linux", "ol"),
        ("enterprise linux", "ol"), // Oracle Enterprise Linux 5
        ("red hat enterprise linux", "rhel"),
        ("centos", "centos"),
        ("scientific linux", "scientific"),
        ("fedora", "fedora"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
    ];
    known
        .iter()
        .find(|(prefix, _)| n.starts_with(prefix))
        .map(|(_, id)| (*id).to_owned())
        .unwrap_or_else(|| n.split_whitespace().next().unwrap_or("linux").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let paths = Paths::under(dir.path());
        (dir, paths)
    }

    #[test]
    fn quotes_escapes_and_comments() {
        let f = parse_os_release(
            "# a comment\n\
             NAME=\"Debian GNU/Linux\"\n\
             \n   # indented comment\n\
             ID=debian\n\
             PRETTY_NAME='Single $quoted \\n'\n\
             VERSION=\"12 (\\\"book\\\\worm\\\" \\$HOME \\`x\\`)\"\n\
             BARE=a\\ b\n\
             TRAIL=value # comment after\n\
             not an assignment\n\
             bad-key=x\n\
             EMPTY=\n",
        );
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["PRETTY_NAME"], "Single $quoted \\n");
        assert_eq!(f["VERSION"], "12 (\"book\\worm\" $HOME `x`)");
        assert_eq!(f["BARE"], "a b");
        assert_eq!(f["TRAIL"], "value");
        assert_eq!(f["EMPTY"], "");
        assert!(!f.contains_key("bad-key"));
        assert_eq!(f.len(), 7);
    }

    #[test]
    fn debian12_fixture() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/debian12");
        let os = read(&Paths::under(root)).unwrap();
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os.release_fields["HOME_URL"], "https://www.debian.org/");
        assert_eq!(os.source.as_deref(), Some("/etc/os-release"));
        assert_eq!(os.kernel_release.as_deref(), Some("6.1.0-18-amd64"));
    }

    #[test]
    fn usr_lib_os_release_when_etc_has_none() {
        let (_d, p) = tree(&[(
            "usr/lib/os-release",
            "NAME=\"Oracle Linux Server\"\nID=\"ol\"\nID_LIKE=\"fedora rhel\"\nVERSION_ID=\"9.3\"\n",
        )]);
        let os = read(&p).unwrap();
        assert_eq!(os.id.as_deref(), Some("ol"));
        assert_eq!(os.id_like, vec!["fedora", "rhel"]);
        assert_eq!(os.source.as_deref(), Some("/usr/lib/os-release"));
    }

    #[test]
    fn oracle_linux_6_without_os_release() {
        let (_d, p) = tree(&[
            ("etc/oracle-release", "Oracle Linux Server release 6.10\n"),
            (
                "etc/redhat-release",
                "Red Hat Enterprise Linux Server release 6.10 (Santiago)\n",
            ),
        ]);
        let os = read(&p).unwrap();
        assert_eq!(os.name.as_deref(), Some("Oracle Linux Server"));
        assert_eq!(os.id.as_deref(), Some("ol"));
        assert_eq!(os.version_id.as_deref(), Some("6.10"));
        assert_eq!(os.source.as_deref(), Some("/etc/oracle-release"));
    }

    #[test]
    fn rhel5_and_centos_lines() {
        let os =
            from_release_line("Red Hat Enterprise Linux Server release 5.11 (Tikanga)").unwrap();
        assert_eq!(os.id.as_deref(), Some("rhel"));
        assert_eq!(os.version_id.as_deref(), Some("5.11"));
        assert_eq!(os.version_codename.as_deref(), Some("Tikanga"));
        let os = from_release_line("CentOS Linux release 7.9.2009 (Core)\n").unwrap();
        assert_eq!(os.id.as_deref(), Some("centos"));
        assert_eq!(os.version_id.as_deref(), Some("7.9.2009"));
    }

    #[test]
    fn lsb_then_debian_version() {
        let (_d, p) = tree(&[(
            "etc/lsb-release",
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=12.04\nDISTRIB_CODENAME=precise\n\
             DISTRIB_DESCRIPTION=\"Ubuntu 12.04.5 LTS\"\n",
        )]);
        let os = read(&p).unwrap();
        assert_eq!(os.id.as_deref(), Some("ubuntu"));
        assert_eq!(os.version_id.as_deref(), Some("12.04"));
        assert_eq!(os.pretty_name.as_deref(), Some("Ubuntu 12.04.5 LTS"));

        let (_d, p) = tree(&[("etc/debian_version", "6.0.10\n")]);
        let os = read(&p).unwrap();
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("6.0.10"));
        assert_eq!(os.source.as_deref(), Some("/etc/debian_version"));
    }

    #[test]
    fn nothing_at_all_is_an_error_not_a_panic() {
        let (_d, p) = tree(&[]);
        assert!(matches!(read(&p), Err(FactError::Unavailable(_))));
    }
}
