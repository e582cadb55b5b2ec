//! Arming first-boot configuration.
//!
//! guestd keeps its own flag, `/etc/guestd/initial-config`, a shell-variable file holding
//! `INITIAL_CONFIG=yes` or `INITIAL_CONFIG=no` (the format of Oracle's flag, so scripts that
//! read one can read the other). Oracle's own flag, `/etc/sysconfig/ovm-template-initial-config`,
//! is set alongside when it exists (Oracle's `ovm-template-config` package is installed), so
//! that `service ovmd enable-initial-config` keeps meaning what template builders expect
//! whichever agent runs. Configuration is enabled when either flag says `yes`; after a run the
//! caller disarms both with [`disable_initial_config`], so it happens once.

use std::io;
use std::path::PathBuf;

use super::fsutil::{edit_shell_file, get_shell_var, read_opt};
use crate::paths::Paths;

/// The variable both flag files hold.
pub const VAR: &str = "INITIAL_CONFIG";

/// guestd's flag file.
pub fn guestd_flag(paths: &Paths) -> PathBuf {
    paths.etc("guestd/initial-config")
}

/// Oracle's flag file.
pub fn oracle_flag(paths: &Paths) -> PathBuf {
    paths.etc("sysconfig/ovm-template-initial-config")
}

/// Arm configuration for the next boot: `INITIAL_CONFIG=yes` in guestd's flag (created, 0644)
/// and in Oracle's flag when that file exists.
pub fn enable_initial_config(paths: &Paths) -> io::Result<()> {
    set(paths, "yes")
}

/// Disarm: `INITIAL_CONFIG=no` in whichever flag files exist.
pub fn disable_initial_config(paths: &Paths) -> io::Result<()> {
    set(paths, "no")
}

fn set(paths: &Paths, value: &str) -> io::Result<()> {
    let ours = guestd_flag(paths);
    if value == "yes" || ours.exists() {
        edit_shell_file(&ours, &[(VAR, Some(value))], 0o644)?;
    }
    let oracle = oracle_flag(paths);
    if oracle.exists() {
        edit_shell_file(&oracle, &[(VAR, Some(value))], 0o644)?;
    }
    tracing::info!(value, "first-boot configuration flag set");
    Ok(())
}

/// True when either flag says `INITIAL_CONFIG=yes` (case-insensitive).
pub fn initial_config_enabled(paths: &Paths) -> bool {
    [guestd_flag(paths), oracle_flag(paths)].iter().any(|p| {
        read_opt(p)
            .ok()
            .flatten()
            .and_then(|t| get_shell_var(&t, VAR))
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    })
}
