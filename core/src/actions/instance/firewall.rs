//! The firewall module (being built).
use super::InstanceConfig;
use super::distro::Distro;
use super::report::Report;
use crate::paths::Paths;

/// Firewall on or off.
pub fn configure(_cfg: &InstanceConfig, _paths: &Paths, _distro: &Distro, _report: &mut Report) {}
