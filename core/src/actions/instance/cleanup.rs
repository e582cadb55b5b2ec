//! Template cleanup (being built).
use super::report::Report;
use crate::paths::Paths;

/// Remove instance state.
pub fn cleanup(_paths: &Paths) -> Report {
    Report::default()
}
