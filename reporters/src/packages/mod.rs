//! Installed applications from every package database present: dpkg, rpm, apk.

pub mod apk;
pub mod dpkg;
pub mod rpm;
pub mod sqlite;

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Application;

/// Every installed package of every database found under `paths`, sorted by name.
pub fn read(paths: &Paths) -> Result<Vec<Application>, FactError> {
    let mut all = Vec::new();
    let mut found_any = false;
    if let Some(mut d) = dpkg::read(paths)? {
        found_any = true;
        all.append(&mut d);
    }
    if let Some(mut r) = rpm::read(paths)? {
        found_any = true;
        all.append(&mut r);
    }
    if let Some(mut a) = apk::read(paths)? {
        found_any = true;
        all.append(&mut a);
    }
    if !found_any {
        return Err(FactError::Unavailable(
            "no package database found (dpkg, rpm, apk)".into(),
        ));
    }
    all.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    Ok(all)
}

/// Splits a control-file style database (dpkg status, apk installed) into stanzas separated
/// by blank lines, without copying.
pub(crate) fn stanzas(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").filter(|s| !s.trim().is_empty())
}
