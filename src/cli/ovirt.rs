//! The oVirt options of `guestd run` and the protocol built from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guestd_core::contract::StreamProtocol;
use guestd_protocols::ovirt::{self, AppFilter, FreeRam, OvirtConfig, OvirtProtocol};
use guestd_transports::ChannelSpec;

/// oVirt settings of `guestd run` (intervals in seconds, fractions allowed).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "oVirt")]
pub struct OvirtArgs {
    /// Heartbeat interval.
    #[arg(long = "ovirt-heartbeat", value_name = "SECS", default_value = "5", value_parser = secs)]
    pub heartbeat: Duration,
    /// Active-user poll interval (sent when it changed; logind events also trigger it).
    #[arg(long = "ovirt-user-interval", value_name = "SECS", default_value = "10", value_parser = secs)]
    pub user: Duration,
    /// number-of-cpus interval (sent when it changed).
    #[arg(long = "ovirt-cpus-interval", value_name = "SECS", default_value = "60", value_parser = secs)]
    pub cpus: Duration,
    /// Interval of applications, containers, host name, OS version, interfaces and FQDN
    /// (each sent when it changed).
    #[arg(long = "ovirt-inventory-interval", value_name = "SECS", default_value = "120", value_parser = secs)]
    pub inventory: Duration,
    /// disks-usage interval (sent when it changed).
    #[arg(long = "ovirt-disks-interval", value_name = "SECS", default_value = "300", value_parser = secs)]
    pub disks: Duration,
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
    /// after_migration, before_hibernation, after_hibernation) run in name order.
    #[arg(
        long = "ovirt-hooks-dir",
        value_name = "DIR",
        default_value = "/etc/ovirt-guest-agent/hooks.d"
    )]
    pub hooks_dir: PathBuf,
    /// Longest all hooks of one lifecycle event may take together; the host waits about 10 s.
    #[arg(long = "ovirt-hooks-deadline", value_name = "SECS", default_value = "8", value_parser = secs)]
    pub hooks_deadline: Duration,
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
    /// The protocol configuration these options describe.
    pub fn config(&self) -> OvirtConfig {
        let mut cfg = OvirtConfig {
            heartbeat: self.heartbeat,
            user: self.user,
            cpus: self.cpus,
            inventory: self.inventory,
            disks: self.disks,
            ..OvirtConfig::default()
        };
        if self.all_applications {
            cfg.applications = AppFilter::All;
        } else if !self.applications.is_empty() {
            cfg.applications = AppFilter::Patterns(self.applications.clone());
        }
        if self.free_ram_available {
            cfg.free_ram = FreeRam::Available;
        }
        cfg
    }

    /// The protocol.
    pub fn protocol(&self) -> Arc<dyn StreamProtocol> {
        Arc::new(OvirtProtocol::new(self.config()))
    }
}

/// `--channel ovirt` without a SPEC: the current port, else the legacy one.
pub fn default_spec() -> ChannelSpec {
    ChannelSpec::Virtio(ovirt::PORT_NAMES.join(","))
}
