//! The datetime module (being built).
use super::InstanceConfig;
use super::distro::Distro;
use super::report::Report;
use crate::paths::Paths;

/// Time zone, NTP, hardware clock.
pub fn configure(_cfg: &InstanceConfig, _paths: &Paths, _distro: &Distro, _report: &mut Report) {}

/// Offset of `zone` from UTC at `unix` seconds, from the root's zoneinfo.
pub fn utc_offset_at(_paths: &Paths, _zone: &str, _unix: i64) -> Option<i64> {
    None
}
