//! The model of a guest report: what guestd knows about the machine it runs in.
//!
//! Every protocol draws on these types; none of them knows a wire format. The JSON form of
//! [`Report`] is `guestd info --json`'s documented schema (see `docs/info-schema.md`): field
//! names are stable, sizes are bytes, times are seconds since the Unix epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One fact of a report; the names are the top-level keys of `guestd info --json` and the
/// `FACT` arguments of `guestd info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fact {
    /// Short host name.
    Hostname,
    /// Fully qualified domain name.
    Fqdn,
    /// Operating system and kernel.
    Os,
    /// Network interfaces.
    Interfaces,
    /// Installed packages.
    Applications,
    /// Memory and paging statistics.
    Memory,
    /// Logged-in user sessions.
    Users,
    /// Mounted filesystems and the disks behind them.
    Filesystems,
    /// Time zone.
    Timezone,
    /// Online CPU count.
    Cpus,
    /// Load averages.
    Load,
    /// Uptime and boot time.
    Uptime,
}

impl Fact {
    /// Every fact, in report order.
    pub const ALL: [Fact; 12] = [
        Fact::Hostname,
        Fact::Fqdn,
        Fact::Os,
        Fact::Interfaces,
        Fact::Applications,
        Fact::Memory,
        Fact::Users,
        Fact::Filesystems,
        Fact::Timezone,
        Fact::Cpus,
        Fact::Load,
        Fact::Uptime,
    ];

    /// The fact's name, as used on the command line and as a JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Fact::Hostname => "hostname",
            Fact::Fqdn => "fqdn",
            Fact::Os => "os",
            Fact::Interfaces => "interfaces",
            Fact::Applications => "applications",
            Fact::Memory => "memory",
            Fact::Users => "users",
            Fact::Filesystems => "filesystems",
            Fact::Timezone => "timezone",
            Fact::Cpus => "cpus",
            Fact::Load => "load",
            Fact::Uptime => "uptime",
        }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not a fact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Unknown fact '{0}'")]
pub struct UnknownFact(pub String);

impl FromStr for Fact {
    type Err = UnknownFact;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fact::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFact(s.to_owned()))
    }
}

/// A whole report. A fact that could not be collected is `None` (JSON `null`) and its reason
/// is in [`Report::errors`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Short host name (`uname -n` up to the first dot).
    pub hostname: Option<String>,
    /// Fully qualified domain name, or the host name when it resolves to nothing better.
    pub fqdn: Option<String>,
    /// Operating system release and kernel.
    pub os: Option<OsInfo>,
    /// Every network interface, also those without an address.
    pub interfaces: Option<Vec<Interface>>,
    /// Installed packages.
    pub applications: Option<Vec<Application>>,
    /// Memory and paging statistics.
    pub memory: Option<Memory>,
    /// Logged-in user sessions.
    pub users: Option<Vec<UserSession>>,
    /// Mounted filesystems.
    pub filesystems: Option<Vec<Filesystem>>,
    /// Time zone.
    pub timezone: Option<Timezone>,
    /// CPU counts.
    pub cpus: Option<Cpus>,
    /// Load averages.
    pub load: Option<Load>,
    /// Uptime and boot time.
    pub uptime: Option<Uptime>,
    /// Why a fact is missing, by fact name; empty when everything was collected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}

/// Operating system identification: every os-release field plus uname.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `NAME` (e.g. `Debian GNU/Linux`).
    pub name: Option<String>,
    /// `ID` (e.g. `debian`, `ol`, `rhel`).
    pub id: Option<String>,
    /// `ID_LIKE`, split on whitespace.
    #[serde(default)]
    pub id_like: Vec<String>,
    /// `VERSION` (e.g. `12 (bookworm)`).
    pub version: Option<String>,
    /// `VERSION_ID` (e.g. `12`).
    pub version_id: Option<String>,
    /// `VERSION_CODENAME` (e.g. `bookworm`).
    pub version_codename: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// `VARIANT`.
    pub variant: Option<String>,
    /// `VARIANT_ID`.
    pub variant_id: Option<String>,
    /// Kernel release (`uname -r`).
    pub kernel_release: Option<String>,
    /// Kernel version string (`uname -v`).
    pub kernel_version: Option<String>,
    /// Hardware name (`uname -m`, e.g. `x86_64`).
    pub machine: Option<String>,
    /// Which file the release data came from (`/etc/os-release`, `/etc/redhat-release`, ...).
    pub source: Option<String>,
    /// Every field of the os-release file, unquoted and unescaped, in file order by key.
    #[serde(default)]
    pub release_fields: BTreeMap<String, String>,
}

/// An IP address with its prefix length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpPrefix<A> {
    /// The address.
    pub address: A,
    /// Prefix length in bits (netmask bits for IPv4).
    pub prefix: u8,
}

/// Traffic counters of an interface, since it came up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Outgoing packets dropped.
    pub tx_dropped: u64,
}

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Kernel name (`eth0`).
    pub name: String,
    /// Hardware address, lower case `aa:bb:cc:dd:ee:ff`; `None` for interfaces without one.
    pub mac: Option<String>,
    /// IPv4 addresses.
    pub ipv4: Vec<IpPrefix<Ipv4Addr>>,
    /// IPv6 addresses (link-local included).
    pub ipv6: Vec<IpPrefix<Ipv6Addr>>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Loopback (`IFF_LOOPBACK`).
    pub loopback: bool,
    /// MTU in bytes, when known.
    pub mtu: Option<u32>,
    /// Traffic counters, when known.
    pub stats: Option<InterfaceStats>,
}

/// Which package database an application came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    /// `var/lib/dpkg/status`.
    Dpkg,
    /// The rpm database.
    Rpm,
    /// `lib/apk/db/installed`.
    Apk,
}

/// An installed package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Package name.
    pub name: String,
    /// Full version as the package manager prints it (dpkg `[epoch:]upstream-revision`, rpm
    /// `[epoch:]version-release`, apk `version-rN`).
    pub version: String,
    /// Architecture (`amd64`, `x86_64`, `noarch`, ...), when recorded.
    pub arch: Option<String>,
    /// The database it was read from.
    pub source: PackageSource,
}

/// Memory and paging statistics. Sizes in bytes, counters as totals since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable`; estimated as free + buffers + cached on kernels before 3.14.
    pub available: u64,
    /// True when `available` was estimated because the kernel has no `MemAvailable`.
    pub available_estimated: bool,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached`.
    pub cached: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
    /// Bytes paged in from disk (`pgpgin`, KiB in `/proc/vmstat`, here bytes).
    pub page_in: u64,
    /// Bytes paged out to disk (`pgpgout`, in bytes).
    pub page_out: u64,
    /// Pages swapped in (`pswpin`).
    pub swap_in: u64,
    /// Pages swapped out (`pswpout`).
    pub swap_out: u64,
    /// Page faults (`pgfault`).
    pub faults: u64,
    /// Major page faults (`pgmajfault`).
    pub major_faults: u64,
}

/// Where a user session was learned from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionSource {
    /// systemd-logind over D-Bus.
    Logind,
    /// A live `USER_PROCESS` record of utmp.
    Utmp,
}

/// A logged-in user session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserSession {
    /// User name.
    pub name: String,
    /// Numeric user id, when known.
    pub uid: Option<u32>,
    /// logind session id (`3`, `c1`); the utmp id field otherwise.
    pub session_id: Option<String>,
    /// Seat (`seat0`), for local graphical and console sessions.
    pub seat: Option<String>,
    /// Terminal (`pts/0`, `tty1`).
    pub tty: Option<String>,
    /// Remote host of an ssh or telnet login.
    pub remote_host: Option<String>,
    /// logind class (`user`, `greeter`, `lock-screen`, ...).
    pub class: Option<String>,
    /// Session type (`tty`, `x11`, `wayland`, ...).
    pub kind: Option<String>,
    /// The active session of its seat.
    pub active: bool,
    /// The session is locked (logind `LockedHint`).
    pub locked: bool,
    /// Login time, seconds since the epoch with sub-second precision.
    pub login_time: Option<f64>,
    /// Where this record came from.
    pub source: SessionSource,
}

/// A disk behind a filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`vda`, `sda`, `nvme0n1`).
    pub name: String,
    /// Device node (`/dev/vda`).
    pub dev: Option<String>,
    /// Serial number, from sysfs or the device's identify data.
    pub serial: Option<String>,
    /// Bus type (`virtio`, `scsi`, `sata`, `nvme`, `xen`, `ide`, `usb`, ...).
    pub bus: Option<String>,
    /// PCI address `domain:bus:slot.function` of the controller, when on PCI.
    pub pci: Option<PciAddress>,
    /// SCSI host/channel/target/lun, when on SCSI.
    pub scsi: Option<ScsiAddress>,
}

/// A PCI function address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciAddress {
    /// PCI domain.
    pub domain: u32,
    /// Bus number.
    pub bus: u32,
    /// Slot (device) number.
    pub slot: u32,
    /// Function number.
    pub function: u32,
}

/// A SCSI address (`host:channel:target:lun`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScsiAddress {
    /// Host adapter number.
    pub host: u32,
    /// Channel (bus).
    pub channel: u32,
    /// Target id.
    pub target: u32,
    /// Logical unit.
    pub lun: u32,
}

/// A mounted filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// Mount point.
    pub mountpoint: String,
    /// Source device as mounted (`/dev/vda1`, `server:/export`, `tmpfs`).
    pub device: String,
    /// Filesystem type (`ext4`).
    pub fstype: String,
    /// Size in bytes; `None` when `statvfs` failed or timed out (dead network mount).
    pub total: Option<u64>,
    /// Used bytes (total minus free), when known.
    pub used: Option<u64>,
    /// Bytes available to unprivileged users, when known.
    pub available: Option<u64>,
    /// Mounted read-only.
    pub read_only: bool,
    /// Disks behind it (partitions resolved to their disk, device-mapper and md to members).
    pub disks: Vec<Disk>,
}

/// Time zone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timezone {
    /// IANA name (`Europe/Prague`), when known.
    pub name: Option<String>,
    /// Abbreviation in force (`CET`, `CEST`).
    pub abbreviation: Option<String>,
    /// Current offset east of UTC in seconds, DST included.
    pub utc_offset: i32,
    /// Standard-time offset east of UTC in seconds (DST ignored).
    pub std_offset: i32,
    /// Daylight saving time is in force.
    pub dst: bool,
}

/// CPU counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpus {
    /// Online logical CPUs.
    pub online: u32,
    /// Logical CPUs present (online or not).
    pub present: u32,
}

/// A container of a local container engine (Docker's `GET /containers/json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Container id (Docker's `Id`).
    pub id: String,
    /// Names, each with its leading `/` as Docker gives them.
    pub names: Vec<String>,
    /// Image reference (`redis:7`).
    pub image: String,
    /// Command line.
    pub command: String,
    /// Human-readable status (`Up 3 days`).
    pub status: String,
}

/// Load averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// One-minute load average.
    pub one: f64,
    /// Five-minute load average.
    pub five: f64,
    /// Fifteen-minute load average.
    pub fifteen: f64,
}

/// Uptime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Uptime {
    /// Seconds since boot.
    pub seconds: f64,
    /// Boot time, seconds since the epoch.
    pub boot_time: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_names_round_trip() {
        for f in Fact::ALL {
            assert_eq!(f.name().parse::<Fact>(), Ok(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
        }
        assert!("nope".parse::<Fact>().is_err());
    }

    #[test]
    fn empty_report_has_every_key() {
        let v = serde_json::to_value(Report::default()).unwrap();
        for f in Fact::ALL {
            assert!(v.get(f.name()).is_some(), "missing {f}");
        }
    }
}
