//! The firewall module: the firewall service on or off for the next boot.
//!
//! On: `ufw` where it is configured (`ENABLED=yes` in `/etc/ufw/ufw.conf`, its unit enabled),
//! else `firewalld`, else `iptables` (and `ip6tables`), else `nftables`: the first installed
//! is enabled. Off: `ENABLED=no` for ufw and every one of those units disabled. Enablement is
//! the `systemctl --root` symlinks, so it works on a root that is not running.

use super::InstanceConfig;
use super::distro::Distro;
use super::fsutil::{disable_unit, edit_shell_file, enable_unit, unit_installed};
use super::report::{Module, Report};
use crate::paths::Paths;

const UNITS: &[&str] = &[
    "firewalld.service",
    "iptables.service",
    "ip6tables.service",
    "nftables.service",
    "ufw.service",
];

/// Apply the firewall switch of `cfg`.
pub fn configure(cfg: &InstanceConfig, paths: &Paths, _distro: &Distro, report: &mut Report) {
    let Some(on) = cfg.firewall else { return };
    let ufw_conf = paths.etc("ufw/ufw.conf");
    let ufw = ufw_conf.exists();
    if ufw {
        let v = if on { "yes" } else { "no" };
        match edit_shell_file(&ufw_conf, &[("ENABLED", Some(v))], 0o644) {
            Ok(()) => report.applied(Module::Firewall, format!("ufw ENABLED={v}")),
            Err(e) => report.failed(Module::Firewall, "ufw", e),
        }
    }
    if on {
        let pick: Vec<&str> = if ufw {
            vec!["ufw.service"]
        } else if unit_installed(paths, "firewalld.service") {
            vec!["firewalld.service"]
        } else if unit_installed(paths, "iptables.service") {
            vec!["iptables.service", "ip6tables.service"]
        } else {
            vec!["nftables.service"]
        };
        let mut any = false;
        for u in pick {
            match enable_unit(paths, u) {
                Ok(true) => {
                    any = true;
                    report.applied(Module::Firewall, format!("{u} enabled"));
                }
                Ok(false) => {}
                Err(e) => {
                    any = true;
                    report.failed(Module::Firewall, format!("{u} enabled"), e);
                }
            }
        }
        if !any && !ufw {
            report.skipped(
                Module::Firewall,
                "firewall on",
                "no firewall service installed",
            );
        }
    } else {
        let mut any = ufw;
        for u in UNITS {
            match disable_unit(paths, u) {
                Ok(true) => {
                    any = true;
                    report.applied(Module::Firewall, format!("{u} disabled"));
                }
                Ok(false) => {}
                Err(e) => report.failed(Module::Firewall, format!("{u} disabled"), e),
            }
        }
        if !any {
            report.skipped(
                Module::Firewall,
                "firewall off",
                "no firewall service installed",
            );
        }
    }
}
