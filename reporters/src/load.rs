//! Load averages from `/proc/loadavg`.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Load;

use crate::util;

/// Reads the load averages under `paths`.
pub fn read(paths: &Paths) -> Result<Load, FactError> {
    let path = paths.proc("loadavg");
    let text = util::read(&path)?;
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map_while(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [one, five, fifteen] => Ok(Load {
            one: *one,
            five: *five,
            fifteen: *fifteen,
        }),
        _ => Err(util::parse_err(&path, "expected three load averages")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let l = read(&p).unwrap();
        assert_eq!((l.one, l.five, l.fifteen), (0.23, 0.86, 1.5));
    }
}
