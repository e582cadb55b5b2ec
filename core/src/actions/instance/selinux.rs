//! The selinux module: `SELINUX=` in `/etc/selinux/config`.

use super::fsutil::{edit_shell_file, get_shell_var, read_opt};
use super::report::{Module, Report};
use super::{InstanceConfig, SelinuxMode};
use crate::paths::Paths;

/// Set the mode for the next boot. Leaving `disabled` for another mode also creates
/// `/.autorelabel`, since files created while SELinux was off carry no labels. A root without
/// `/etc/selinux/config` (SELinux not installed, as on most Debian systems) is skipped.
pub fn configure(cfg: &InstanceConfig, paths: &Paths, report: &mut Report) {
    let Some(mode) = cfg.selinux else { return };
    let item = "SELINUX";
    let path = paths.etc("selinux/config");
    let old = match read_opt(&path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            report.skipped(
                Module::Selinux,
                item,
                "SELinux is not installed (no /etc/selinux/config)",
            );
            return;
        }
        Err(e) => {
            report.failed(
                Module::Selinux,
                item,
                format!("cannot read {}: {e}", path.display()),
            );
            return;
        }
    };
    let was = get_shell_var(&old, "SELINUX");
    if let Err(e) = edit_shell_file(&path, &[("SELINUX", Some(mode.as_str()))], 0o644) {
        report.failed(
            Module::Selinux,
            item,
            format!("cannot write {}: {e}", path.display()),
        );
        return;
    }
    if was.as_deref() == Some("disabled") && mode != SelinuxMode::Disabled {
        if let Err(e) = std::fs::write(paths.join(".autorelabel"), b"") {
            report.failed(Module::Selinux, "/.autorelabel", e);
        } else {
            report.applied(Module::Selinux, "/.autorelabel");
        }
    }
    report.applied(Module::Selinux, item);
}
