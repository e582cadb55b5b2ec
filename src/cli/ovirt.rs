//! The oVirt options of `guestd run` and the protocol built from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guestd_core::contract::StreamProtocol;
use guestd_protocols::ovirt::{self, AppFilter, FreeRam, OvirtConfig, OvirtProtocol};
use guestd_transports::ChannelSpec;

use crate::config::{Ovirt, OvirtLayer};

/// oVirt settings of `guestd run` (intervals in seconds, fractions allowed).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "oVirt")]
pub struct OvirtArgs {
    /// Heartbeat interval [default: 5].
    #[arg(long = "ovirt-heartbeat", value_name = "SECS", value_parser = secs)]
    pub heartbeat: Option<Duration>,
    /// Active-user poll interval (sent when it changed; logind events also trigger it)
    /// [default: 10].
    #[arg(long = "ovirt-user-interval", value_name = "SECS", value_parser = secs)]
    pub user: Option<Duration>,
    /// number-of-cpus interval (sent when it changed) [default: 60].
    #[arg(long = "ovirt-cpus-interval", value_name = "SECS", value_parser = secs)]
    pub cpus: Option<Duration>,
    /// Interval of applications, containers, host name, OS version, interfaces and FQDN
    /// (each sent when it changed) [default: 120].
    #[arg(long = "ovirt-inventory-interval", value_name = "SECS", value_parser = secs)]
    pub inventory: Option<Duration>,
    /// disks-usage interval (sent when it changed) [default: 300].
    #[arg(long = "ovirt-disks-interval", value_name = "SECS", value_parser = secs)]
    pub disks: Option<Duration>,
    /// Report these packages (exact names or globs, comma-separated or repeated) instead of
    /// the old agent's list.
    #[arg(
        long = "ovirt-application",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub applications: Vec<String>,
    /// Report every installed package.
    #[arg(long = "ovirt-all-applications", conflicts_with = "applications")]
    pub all_applications: bool,
    /// Count free memory as MemAvailable instead of MemFree + Buffers + Cached.
    #[arg(long = "ovirt-free-ram-available")]
    pub free_ram_available: bool,
    /// Lifecycle-event hooks: the executables in DIR/<event>/ (before_migration,
    /// after_migration, before_hibernation, after_hibernation) run in name order
    /// [default: /etc/ovirt-guest-agent/hooks.d].
    #[arg(long = "ovirt-hooks-dir", value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,
    /// Longest all hooks of one lifecycle event may take together; the host waits about 10 s
    /// [default: 8].
    #[arg(long = "ovirt-hooks-deadline", value_name = "SECS", value_parser = secs)]
    pub hooks_deadline: Option<Duration>,
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&v) {
        return Err(format!("'{s}' is out of range (0.01 to 86400 seconds)"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl OvirtArgs {
    /// The options given, as a configuration layer (the files supply the rest).
    pub fn layer(&self) -> OvirtLayer {
        OvirtLayer {
            heartbeat: self.heartbeat,
            user: self.user,
            cpus: self.cpus,
            inventory: self.inventory,
            disks: self.disks,
            applications: (!self.applications.is_empty()).then(|| self.applications.clone()),
            all_applications: self.all_applications.then_some(true),
            free_ram_available: self.free_ram_available.then_some(true),
            hooks_dir: self.hooks_dir.clone(),
            hooks_deadline: self.hooks_deadline,
            ..OvirtLayer::default()
        }
    }
}

/// The protocol configuration the effective settings describe.
pub fn config(s: &Ovirt) -> OvirtConfig {
    let mut cfg = OvirtConfig {
        heartbeat: s.heartbeat,
        user: s.user,
        cpus: s.cpus,
        inventory: s.inventory,
        disks: s.disks,
        ..OvirtConfig::default()
    };
    if s.all_applications {
        cfg.applications = AppFilter::All;
    } else if let Some(a) = s.applications.as_ref().filter(|a| !a.is_empty()) {
        cfg.applications = AppFilter::Patterns(a.clone());
    }
    if s.free_ram_available {
        cfg.free_ram = FreeRam::Available;
    }
    cfg
}

/// The protocol.
pub fn protocol(s: &Ovirt) -> Arc<dyn StreamProtocol> {
    Arc::new(OvirtProtocol::new(config(s)))
}

/// `--channel ovirt` without a SPEC: the current port, else the legacy one.
pub fn default_spec() -> ChannelSpec {
    ChannelSpec::Virtio(ovirt::PORT_NAMES.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's default oVirt ports are the protocol's, in its order.
    #[test]
    fn default_ports_agree_with_the_protocol() {
        assert_eq!(crate::config::OVIRT_PORTS, ovirt::PORT_NAMES);
        assert_eq!(
            default_spec(),
            ChannelSpec::virtio_any(&crate::config::OVIRT_PORTS)
        );
    }

    /// Without options and files, the protocol's own defaults apply.
    #[test]
    fn defaults_are_the_protocols() {
        let s = crate::config::Settings::default();
        let want = OvirtConfig::default();
        let got = config(&s.ovirt);
        assert_eq!(got.heartbeat, want.heartbeat);
        assert_eq!(got.user, want.user);
        assert_eq!(got.cpus, want.cpus);
        assert_eq!(got.inventory, want.inventory);
        assert_eq!(got.disks, want.disks);
        assert_eq!(got.applications, want.applications);
        assert_eq!(got.free_ram, want.free_ram);
    }
}
