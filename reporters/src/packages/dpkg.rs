//! dpkg's `var/lib/dpkg/status`: stanzas of RFC 822 style fields, continuation lines starting
//! with a space or tab. A package counts as installed only when the third word of its
//! `Status` is `installed` (not `half-installed`, `config-files`, `unpacked`, ...).

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::{Application, PackageSource};

use crate::util;

/// The installed packages, or `None` when there is no dpkg database.
pub fn read(paths: &Paths) -> Result<Option<Vec<Application>>, FactError> {
    let path = paths.join("var/lib/dpkg/status");
    Ok(util::read_opt(&path)?.map(|t| parse(&t)))
}

/// Parses a status file.
pub fn parse(text: &str) -> Vec<Application> {
    let mut out = Vec::with_capacity(text.len() / 1500);
    for stanza in super::stanzas(text) {
        let (mut name, mut version, mut arch, mut status) = (None, None, None, None);
        for line in stanza.lines() {
            // Continuation lines (descriptions, conffiles) are never a field we want.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => name = Some(value),
                "Version" => version = Some(value),
                "Architecture" => arch = Some(value),
                "Status" => status = Some(value),
                _ => {}
            }
        }
        let installed = status.is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        if let (true, Some(name), Some(version)) = (installed, name, version) {
            out.push(Application {
                name: name.to_owned(),
                version: version.to_owned(),
                arch: arch.filter(|a| !a.is_empty()).map(str::to_owned),
                source: PackageSource::Dpkg,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_really_installed_and_multiline_fields() {
        let text = "\
Package: bash
Status: install ok installed
Priority: required
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 Version: 9.9 in a continuation line is not a field
 Package: continuation-trap

Package: oldlib
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Conffiles:
 /etc/oldlib.conf 0123456789abcdef

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0-1

Package: unpacked-only
Status: install ok unpacked
Version: 3.0

Package: libc6
Status: hold ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
";
        let apps = parse(text);
        let got: Vec<(&str, &str, Option<&str>)> = apps
            .iter()
            .map(|a| (a.name.as_str(), a.version.as_str(), a.arch.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("bash", "5.2.15-2+b2", Some("amd64")),
                ("libc6", "2.36-9+deb12u4", Some("amd64")),
                ("tzdata", "2024a-0+deb12u1", Some("all")),
            ]
        );
    }

    #[test]
    fn fixture_tree() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let apps = read(&p).unwrap().unwrap();
        assert!(
            apps.iter()
                .any(|a| a.name == "openssh-server" && a.version == "1:9.2p1-2+deb12u2")
        );
        assert!(!apps.iter().any(|a| a.name == "removed-pkg"));
    }

    #[test]
    fn no_database_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&Paths::under(dir.path())).unwrap().is_none());
    }
}
