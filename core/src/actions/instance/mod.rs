//! First-boot instance configuration: what Oracle's `ovm-template-config` and its modules do,
//! described without any protocol.
//!
//! A protocol turns what the manager sent into an [`InstanceConfig`] (the Oracle VM mapping of
//! `com.oracle.linux.*` keys is `guestd_protocols::ovmd::template`), then:
//!
//! - [`configure`] writes the guest's native files under a [`Paths`] root and returns a
//!   [`Report`] of what was applied, skipped and failed;
//! - [`cleanup`] removes instance state (ssh host keys, machine id, DHCP leases, persistent net
//!   rules, logs, shell history) so the VM can become a template;
//! - [`enable_initial_config`] / [`disable_initial_config`] / [`initial_config_enabled`] arm
//!   and disarm configuration at the next boot.
//!
//! The same are reachable through the dispatcher as [`Action::ConfigureInstance`],
//! [`Action::CleanupInstance`], [`Action::SetInitialConfig`] and [`Action::InitialConfigArmed`]
//! (see [`InstanceHandler`]), which is how a protocol session that does no I/O of its own gets
//! them done.
//!
//! Every module works on an injectable root and writes the format of the guest's family
//! (detected from `<root>/etc/os-release`, see [`distro`]):
//!
//! | module | Oracle Linux / RHEL family | Debian family |
//! |---|---|---|
//! | authentication, user | `/etc/passwd`, `shadow`, `group`, `gshadow` (SHA-512 crypt), locked, atomic | same |
//! | datetime | `/etc/localtime`, `/etc/sysconfig/clock`, `/etc/adjtime`, `chrony.conf` or `ntp.conf` | `/etc/localtime`, `/etc/timezone`, `/etc/adjtime`, `chrony/chrony.conf`, `ntpsec/ntp.conf` or `timesyncd.conf` |
//! | firewall | `firewalld` or `iptables` unit enablement | `ufw.conf` `ENABLED=`, else `firewalld`/`nftables` units |
//! | network | `/etc/hostname`, `sysconfig/network`, `hosts`, `network-scripts/ifcfg-<dev>`, `resolv.conf` | `/etc/hostname`, `hosts`, `network/interfaces` stanza or a NetworkManager keyfile, `resolv.conf` |
//! | selinux | `/etc/selinux/config` `SELINUX=` | same, when SELinux is installed |
//! | ssh | host keys removed, `ssh-keygen -A -f <root>`, else a boot-time unit | same |
//!
//! Setting the clock itself is not done here: when the manager sent a date and time,
//! [`configure`] converts it to an instant in the (new) zone, after the zone is set, and hands
//! it back in [`Report::set_time`]; the caller dispatches it as the action layer's
//! [`Action::SetTime`] and records how that went in the report (`datetime: date and time`).

pub mod accounts;
pub mod cleanup;
pub mod datetime;
pub mod delegate;
pub mod distro;
pub mod firewall;
pub mod fsutil;
pub mod initial;
pub mod network;
pub mod report;
pub mod selinux;
pub mod ssh;
pub mod validate;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;

use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, Secret};
use crate::calendar;
use crate::paths::Paths;

pub use cleanup::cleanup;
pub use delegate::{delegate_to_ovm_template_config, ovm_template_config};
pub use distro::{Distro, Family};
pub use initial::{disable_initial_config, enable_initial_config, initial_config_enabled};
pub use report::{Entry, Module, Report, Status};

/// A password as the manager sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Password {
    /// The password, or its crypt(3) hash when `crypted`.
    pub secret: Secret,
    /// `secret` is already a crypt(3) hash (`$6$...`) to store as is.
    pub crypted: bool,
}

impl Password {
    /// A plain password, hashed with SHA-512 crypt when written.
    pub fn plain(s: impl Into<String>) -> Self {
        Self {
            secret: Secret::new(s),
            crypted: false,
        }
    }

    /// An already crypted password.
    pub fn crypted(s: impl Into<String>) -> Self {
        Self {
            secret: Secret::new(s),
            crypted: true,
        }
    }
}

/// One `/etc/hosts` line: an address and its names (canonical first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsEntry {
    /// Address.
    pub address: IpAddr,
    /// Names, canonical name first, then aliases.
    pub names: Vec<String>,
}

/// How a device gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BootProto {
    /// DHCP.
    #[default]
    Dhcp,
    /// The static `ipaddr`/`netmask`/`gateway` of the device.
    Static,
    /// No IPv4 configuration (`BOOTPROTO=none` without an address; `manual` on Debian).
    None,
}

/// One network device to configure.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NetDevice {
    /// Interface name (`eth0`).
    pub name: String,
    /// Bring it up at boot (`ONBOOT`, `auto`, `autoconnect`); `None` keeps the default (yes).
    pub onboot: Option<bool>,
    /// DHCP or static.
    pub bootproto: BootProto,
    /// Static address.
    pub ipaddr: Option<Ipv4Addr>,
    /// Static netmask (contiguous).
    pub netmask: Option<Ipv4Addr>,
    /// Default gateway through this device.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, in order.
    pub dns_servers: Vec<IpAddr>,
    /// DNS search domains, in order.
    pub dns_search: Vec<String>,
    /// MAC address to bind the configuration to.
    pub hwaddr: Option<String>,
}

/// SELinux mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelinuxMode {
    /// enforcing
    Enforcing,
    /// permissive
    Permissive,
    /// disabled
    Disabled,
}

impl SelinuxMode {
    /// The word in `/etc/selinux/config`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelinuxMode::Enforcing => "enforcing",
            SelinuxMode::Permissive => "permissive",
            SelinuxMode::Disabled => "disabled",
        }
    }
}

/// A user to add (or, when it exists, to update: password and groups).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Password; `None` leaves the account locked (`!`) when created, untouched when it exists.
    pub password: Option<Password>,
    /// Supplementary groups; each must exist.
    pub groups: Vec<String>,
}

/// A wall-clock date and time as the manager sends it (`2011-4-7-9-2-42`), in the guest's
/// (new) time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Year.
    pub year: i32,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-60.
    pub second: u32,
}

impl DateTime {
    /// Checked constructor.
    pub fn new(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Self> {
        let dim = calendar::days_in_month(i64::from(year), month)?;
        (day >= 1 && day <= dim && hour < 24 && minute < 60 && second <= 60).then_some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Seconds since the epoch when this wall-clock time is read at `utc_offset` seconds east
    /// of UTC (see [`datetime::utc_offset_at`] for the offset of a zone).
    pub fn unix_seconds(&self, utc_offset: i64) -> i64 {
        let days = calendar::days_from_civil(i64::from(self.year), self.month, self.day);
        days * calendar::SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - utc_offset
    }
}

/// Everything first-boot configuration can set. `None` or empty means "leave as it is".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InstanceConfig {
    /// Host name (FQDN or short).
    pub hostname: Option<String>,
    /// Lines to put in `/etc/hosts` (replacing lines with the same address).
    pub hosts: Vec<HostsEntry>,
    /// Root password.
    pub root_password: Option<Password>,
    /// Time zone (`America/New_York`).
    pub timezone: Option<String>,
    /// Enable or disable the NTP service.
    pub ntp_enabled: Option<bool>,
    /// NTP servers, replacing the configured ones.
    pub ntp_servers: Option<Vec<String>>,
    /// Hardware clock in UTC (`true`) or local time.
    pub utc: Option<bool>,
    /// Date and time the manager asked to set; converted by [`configure`] into
    /// [`Report::set_time`] and applied by the caller through [`Action::SetTime`].
    pub datetime: Option<DateTime>,
    /// Firewall on or off.
    pub firewall: Option<bool>,
    /// Network devices.
    pub devices: Vec<NetDevice>,
    /// SELinux mode.
    pub selinux: Option<SelinuxMode>,
    /// Remove the ssh host keys and generate new ones.
    pub regenerate_ssh_host_keys: bool,
    /// Users to add.
    pub users: Vec<UserSpec>,
}

impl InstanceConfig {
    /// True when nothing is to be configured.
    pub fn is_empty(&self) -> bool {
        *self == InstanceConfig::default()
    }
}

/// Apply `cfg` to the system under `paths`, module by module, in `ovm-template-config`'s order
/// (network, datetime, firewall, selinux, user, ssh, and authentication last). A failing item
/// never stops the others; the report says what happened to each. When `paths` is the running
/// system, the kernel host name is set too; services are not restarted (the files take effect
/// at the next boot or service restart, which is when first-boot configuration runs).
pub fn configure(cfg: &InstanceConfig, paths: &Paths) -> Report {
    let distro = distro::detect(paths);
    tracing::info!(family = ?distro.family, id = %distro.id, "first-boot configuration");
    let mut report = Report::default();
    network::configure(cfg, paths, &distro, &mut report);
    datetime::configure(cfg, paths, &distro, &mut report);
    // After the zone is set: the manager's wall-clock time is read in the new zone.
    report.set_time = datetime::set_time_nanos(cfg, paths);
    firewall::configure(cfg, paths, &distro, &mut report);
    selinux::configure(cfg, paths, &mut report);
    accounts::configure_users(cfg, paths, &mut report);
    ssh::configure(cfg, paths, &mut report);
    accounts::configure_root(cfg, paths, &mut report);
    report
}

/// What a protocol asks for when the manager triggers first-boot configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRequest {
    /// The configuration, natively applicable.
    pub config: InstanceConfig,
    /// Every received pair rendered in `ovmd --list` format (one `{"key":"value"}` per line),
    /// for delegation to Oracle's `ovm-template-config --stdin configure` when it is installed
    /// in the guest. `None` never delegates.
    pub ovm_list: Option<Secret>,
}

/// Handles [`Action::ConfigureInstance`], [`Action::CleanupInstance`],
/// [`Action::SetInitialConfig`] and [`Action::InitialConfigArmed`] on a root.
#[derive(Debug, Clone)]
pub struct InstanceHandler {
    paths: Paths,
}

impl InstanceHandler {
    /// A handler acting on `paths`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// As a trait object for [`crate::action::Dispatcher::register`].
    pub fn arc(paths: Paths) -> Arc<dyn ActionHandler> {
        Arc::new(Self::new(paths))
    }
}

/// Configure natively, or hand everything to Oracle's tool when it is installed in the running
/// system and the request carries the pairs for it (ovmd.md §6 q2).
pub fn run_request(req: &InstanceRequest, paths: &Paths) -> Report {
    if let (Some(list), Some(tool)) = (&req.ovm_list, ovm_template_config(paths))
        && paths.is_system()
    {
        return delegate_to_ovm_template_config(&tool, list);
    }
    configure(&req.config, paths)
}

/// guestd's cleanup, then Oracle's `ovm-template-config cleanup` when it is installed in the
/// running system (its modules may keep state of their own).
pub fn run_cleanup(paths: &Paths) -> Report {
    let mut report = cleanup(paths);
    if let Some(tool) = ovm_template_config(paths)
        && paths.is_system()
    {
        report.extend(delegate::delegate_cleanup_to_ovm_template_config(&tool));
    }
    report
}

#[async_trait]
impl ActionHandler for InstanceHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[
            ActionKind::ConfigureInstance,
            ActionKind::CleanupInstance,
            ActionKind::SetInitialConfig,
            ActionKind::InitialConfigArmed,
        ]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let paths = self.paths.clone();
        if matches!(action, Action::InitialConfigArmed) {
            return tokio::task::spawn_blocking(move || initial_config_enabled(&paths))
                .await
                .map(Outcome::Armed)
                .map_err(|e| ActionError::Failed(format!("flag read task failed: {e}")));
        }
        let work = move || -> Result<Report, ActionError> {
            match action {
                Action::ConfigureInstance(req) => Ok(run_request(&req, &paths)),
                Action::CleanupInstance => Ok(run_cleanup(&paths)),
                Action::SetInitialConfig(on) => {
                    let mut r = Report::default();
                    let res = if on {
                        enable_initial_config(&paths)
                    } else {
                        disable_initial_config(&paths)
                    };
                    match res {
                        Ok(()) => {
                            r.applied(Module::InitialConfig, if on { "armed" } else { "disarmed" })
                        }
                        Err(e) => {
                            return Err(ActionError::Io {
                                what: "cannot change the first-boot configuration flag".into(),
                                source: e,
                            });
                        }
                    }
                    Ok(r)
                }
                _ => Err(ActionError::Unsupported),
            }
        };
        let report = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ActionError::Failed(format!("configuration task failed: {e}")))??;
        Ok(Outcome::Instance(Box::new(report)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let dt = DateTime::new(2011, 4, 7, 9, 2, 42).unwrap();
        assert_eq!(dt.unix_seconds(0), 1_302_166_962);
        assert_eq!(dt.unix_seconds(-4 * 3600), 1_302_166_962 + 4 * 3600);
        assert_eq!(
            DateTime::new(1970, 1, 1, 0, 0, 0).unwrap().unix_seconds(0),
            0
        );
        assert!(DateTime::new(2023, 2, 29, 0, 0, 0).is_none());
        assert!(DateTime::new(2024, 2, 29, 0, 0, 0).is_some());
        assert!(DateTime::new(2024, 13, 1, 0, 0, 0).is_none());
    }

    #[test]
    fn password_debug_hides_secret() {
        let p = Password::plain("hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
