//! Alpine's `lib/apk/db/installed`: stanzas of `X:value` lines (`P` name, `V` version, `A`
//! architecture). Every stanza is an installed package.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::{Application, PackageSource};

use crate::util;

/// The installed packages, or `None` when there is no apk database.
pub fn read(paths: &Paths) -> Result<Option<Vec<Application>>, FactError> {
    let path = paths.join("lib/apk/db/installed");
    Ok(util::read_opt(&path)?.map(|t| parse(&t)))
}

/// Parses an installed database.
pub fn parse(text: &str) -> Vec<Application> {
    super::stanzas(text)
        .filter_map(|stanza| {
            let (mut name, mut version, mut arch) = (None, None, None);
            for line in stanza.lines() {
                match line.split_once(':') {
                    Some(("P", v)) => name = Some(v.trim()),
                    Some(("V", v)) => version = Some(v.trim()),
                    Some(("A", v)) => arch = Some(v.trim()),
                    _ => {}
                }
            }
            Some(Application {
                name: name.filter(|n| !n.is_empty())?.to_owned(),
                version: version?.to_owned(),
                arch: arch.filter(|a| !a.is_empty()).map(str::to_owned),
                source: PackageSource::Apk,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_installed_db() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nT:the musl c library\n\
                    F:lib\nR:ld-musl-x86_64.so.1\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:x86_64\n\n\
                    P:\nV:broken\n";
        let apps = parse(text);
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].name, "musl");
        assert_eq!(apps[0].version, "1.2.4-r2");
        assert_eq!(apps[1].arch.as_deref(), Some("x86_64"));
        assert_eq!(apps[1].source, PackageSource::Apk);
    }
}
