//! Messages to the host (note §3), built from core's model. Every builder yields the fields
//! and JSON types VDSM requires (note §3.3) whatever the model holds.

use std::collections::BTreeMap;
use std::time::Instant;

use guestd_core::model::{
    Application, Container, Cpus, Filesystem, Interface, Memory, OsInfo, PackageSource, Timezone,
    UserSession,
};
use guestd_core::sysfacts::BlockDevice;
use serde_json::{Map, Value, json};

use super::config::{AppFilter, FreeRam, glob_match};

/// What `active-user` carries when nobody is logged in (the old agent's literal).
pub const NO_USER: &str = "None";

/// A message before encoding: its `__name__` and members.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `__name__`.
    pub name: &'static str,
    /// The other members.
    pub body: Map<String, Value>,
}

impl Message {
    fn new(name: &'static str, body: Value) -> Self {
        let body = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Self { name, body }
    }

    /// A message without arguments (`session-*`, `uninstalled`).
    pub fn bare(name: &'static str) -> Self {
        Self {
            name,
            body: Map::new(),
        }
    }

    /// The lowest API version at which the old agent sent it (note §3.1).
    pub fn min_version(&self) -> u8 {
        min_version(self.name)
    }

    /// The list member that may be shortened when the frame is too big.
    pub fn trim_key(&self) -> Option<&'static str> {
        match self.name {
            "applications" => Some("applications"),
            "containers" => Some("list"),
            "network-interfaces" => Some("interfaces"),
            "disks-usage" => Some("disks"),
            _ => None,
        }
    }
}

/// The old agent's send gate per message name (note §3.1).
pub fn min_version(name: &str) -> u8 {
    match name {
        "number-of-cpus" => 1,
        "os-info" | "timezone" => 2,
        "containers" | "completion" => 3,
        _ => 0,
    }
}

/// The 11 `memory-stat` keys, in KiB (counts per second for the four rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// MemTotal.
    pub mem_total: u64,
    /// Free memory by the configured formula.
    pub mem_free: u64,
    /// MemFree.
    pub mem_unused: u64,
    /// Buffers.
    pub mem_buffers: u64,
    /// Cached.
    pub mem_cached: u64,
    /// Pages swapped in per second.
    pub swap_in: u64,
    /// Pages swapped out per second.
    pub swap_out: u64,
    /// Page faults per second.
    pub pageflt: u64,
    /// Major page faults per second.
    pub majflt: u64,
    /// SwapTotal − SwapFree.
    pub swap_usage: u64,
    /// SwapTotal.
    pub swap_total: u64,
}

/// Turns `/proc/vmstat` counters into per-second rates between heartbeats; the first sample
/// gives 0 rates, as the old agent's did.
#[derive(Debug, Clone, Default)]
pub struct MemorySampler {
    prev: Option<(Instant, [u64; 4])>,
}

impl MemorySampler {
    /// Statistics for this sample, remembering its counters for the next.
    pub fn sample(&mut self, mem: &Memory, now: Instant, formula: FreeRam) -> MemoryStat {
        let counters = [mem.swap_in, mem.swap_out, mem.faults, mem.major_faults];
        let rates = match self.prev {
            Some((then, old)) => {
                let secs = now.saturating_duration_since(then).as_secs_f64();
                let mut r = [0u64; 4];
                for i in 0..4 {
                    // Counters that went backwards (a wrapped or reset source) give 0.
                    let delta = counters[i].saturating_sub(old[i]);
                    r[i] = if secs > 0.0 {
                        (delta as f64 / secs) as u64
                    } else {
                        0
                    };
                }
                r
            }
            None => [0; 4],
        };
        self.prev = Some((now, counters));
        let kib = |b: u64| b / 1024;
        MemoryStat {
            mem_total: kib(mem.total),
            mem_free: kib(free_bytes(mem, formula)),
            mem_unused: kib(mem.free),
            mem_buffers: kib(mem.buffers),
            mem_cached: kib(mem.cached),
            swap_in: rates[0],
            swap_out: rates[1],
            pageflt: rates[2],
            majflt: rates[3],
            swap_usage: kib(mem.swap_total.saturating_sub(mem.swap_free)),
            swap_total: kib(mem.swap_total),
        }
    }
}

/// Free memory in bytes by `formula`.
pub fn free_bytes(mem: &Memory, formula: FreeRam) -> u64 {
    match formula {
        FreeRam::Legacy => mem
            .free
            .saturating_add(mem.buffers)
            .saturating_add(mem.cached),
        FreeRam::Available => mem.available,
    }
}

/// `heartbeat`: `free-ram` in MiB (integer), `memory-stat` when known, `apiVersion`.
pub fn heartbeat(free_ram_mib: u64, stat: Option<&MemoryStat>, api_version: u8) -> Message {
    let mut body = json!({
        "free-ram": free_ram_mib,
        "apiVersion": api_version,
    });
    if let (Some(s), Some(obj)) = (stat, body.as_object_mut()) {
        obj.insert(
            "memory-stat".into(),
            json!({
                "mem_total": s.mem_total,
                "mem_free": s.mem_free,
                "mem_unused": s.mem_unused,
                "mem_buffers": s.mem_buffers,
                "mem_cached": s.mem_cached,
                "swap_in": s.swap_in,
                "swap_out": s.swap_out,
                "pageflt": s.pageflt,
                "majflt": s.majflt,
                "swap_usage": s.swap_usage,
                "swap_total": s.swap_total,
            }),
        );
    }
    Message::new("heartbeat", body)
}

/// `host-name`.
pub fn host_name(name: &str) -> Message {
    Message::new("host-name", json!({ "name": name }))
}

/// `fqdn`.
pub fn fqdn(fqdn: &str) -> Message {
    Message::new("fqdn", json!({ "fqdn": fqdn }))
}

/// `os-version`: the kernel release (`uname -r`).
pub fn os_version(version: &str) -> Message {
    Message::new("os-version", json!({ "version": version }))
}

/// `active-user`: a name, or `"None"`.
pub fn active_user(name: Option<&str>) -> Message {
    Message::new("active-user", json!({ "name": name.unwrap_or(NO_USER) }))
}

/// `os-info` (v2): six strings; `arch`, `version` and `type` never empty.
pub fn os_info(os: &OsInfo) -> Message {
    let s = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_owned();
    let arch = match os.machine.as_deref().map(str::trim) {
        Some("i386" | "i486" | "i586" | "i686") => "x86".to_owned(),
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => match std::env::consts::ARCH {
            "x86" => "x86".to_owned(),
            "powerpc64" => "ppc64".to_owned(),
            other => other.to_owned(),
        },
    };
    let version = [&os.version_id, &os.version, &os.kernel_release]
        .into_iter()
        .map(s)
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Message::new(
        "os-info",
        json!({
            "version": version,
            "distribution": s(&os.name),
            // VDSM's QGA path maps os-release VARIANT here; keep both sources consistent.
            "codename": s(&os.variant),
            "arch": arch,
            "type": "linux",
            "kernel": s(&os.kernel_release),
        }),
    )
}

/// `timezone` (v2): the zone name and the standard offset in minutes east of UTC.
pub fn timezone(tz: &Timezone) -> Message {
    Message::new(
        "timezone",
        json!({
            "zone": tz.name.clone().unwrap_or_default(),
            "offset": tz.std_offset / 60,
        }),
    )
}

/// `number-of-cpus` (v1): online CPUs, or −1 when unknown.
pub fn number_of_cpus(cpus: Option<&Cpus>) -> Message {
    let count: i64 = cpus
        .filter(|c| c.online > 0)
        .map(|c| i64::from(c.online))
        .unwrap_or(-1);
    Message::new("number-of-cpus", json!({ "count": count }))
}

/// `network-interfaces`: up, non-loopback interfaces not matching `ignored`, each once.
pub fn network_interfaces(ifaces: &[Interface], ignored: &[String]) -> Message {
    let mut seen = std::collections::HashSet::new();
    let list: Vec<Value> = ifaces
        .iter()
        .filter(|i| i.up && !i.loopback)
        .filter(|i| !ignored.iter().any(|p| glob_match(p, &i.name)))
        .filter(|i| seen.insert(i.name.clone()))
        .map(|i| {
            json!({
                "name": i.name,
                "hw": i.mac.as_deref().map(str::trim).filter(|m| !m.is_empty())
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| "00:00:00:00:00:00".to_owned()),
                "inet": i.ipv4.iter().map(|a| a.address.to_string()).collect::<Vec<_>>(),
                "inet6": i.ipv6.iter().map(|a| a.address.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Message::new("network-interfaces", json!({ "interfaces": list }))
}

/// One package as the old agent named it: rpm `name-version-release` (no epoch), apt
/// `name-version` (apt's version string, epoch included).
pub fn package_label(app: &Application) -> String {
    let version = match app.source {
        PackageSource::Rpm => app
            .version
            .split_once(':')
            .filter(|(e, _)| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, v)| v)
            .unwrap_or(&app.version),
        PackageSource::Dpkg | PackageSource::Apk => &app.version,
    };
    format!("{}-{}", app.name, version)
}

/// `applications`: the matching packages, sorted, each once.
pub fn applications(apps: &[Application], filter: &AppFilter) -> Message {
    let mut list: Vec<String> = apps
        .iter()
        .filter(|a| filter.matches(&a.name))
        .map(package_label)
        .collect();
    list.sort();
    list.dedup();
    Message::new("applications", json!({ "applications": list }))
}

/// `disks-usage`: mounted filesystems with sizes in bytes, and the serial → device mapping.
pub fn disks_usage(
    fss: &[Filesystem],
    block: &[BlockDevice],
    ignored_fs: &[String],
    ignore_zero: bool,
) -> Message {
    let mut disks = Vec::new();
    // Bind mounts and repeated mounts of one filesystem show the same device and sizes; keep
    // the first (shortest) mount point only.
    let mut sorted: Vec<&Filesystem> = fss.iter().collect();
    sorted.sort_by(|a, b| {
        (a.mountpoint.len(), &a.mountpoint).cmp(&(b.mountpoint.len(), &b.mountpoint))
    });
    let mut seen = std::collections::HashSet::new();
    for fs in sorted {
        if ignored_fs.iter().any(|t| t == &fs.fstype) {
            continue;
        }
        let Some(total) = fs.total else { continue };
        let used = fs.used.unwrap_or(0).min(total);
        if ignore_zero && total == 0 && used == 0 {
            continue;
        }
        if fs.device.starts_with('/') && !seen.insert((fs.device.clone(), total, used)) {
            continue;
        }
        disks.push(json!({
            "path": fs.mountpoint,
            "fs": fs.fstype,
            "total": total,
            "used": used,
        }));
    }
    let mut mapping = BTreeMap::new();
    let disk_nodes = fss.iter().flat_map(|f| f.disks.iter()).chain(
        block
            .iter()
            .filter(|b| !b.partition)
            .filter_map(|b| b.address.as_ref()),
    );
    for d in disk_nodes {
        let Some(serial) = d.serial.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            continue;
        };
        let node = d.dev.clone().unwrap_or_else(|| format!("/dev/{}", d.name));
        mapping
            .entry(serial.to_owned())
            .or_insert_with(|| json!({ "name": node }));
    }
    Message::new("disks-usage", json!({ "disks": disks, "mapping": mapping }))
}

/// `containers` (v3).
pub fn containers(list: &[Container]) -> Message {
    let list: Vec<Value> = list
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "names": c.names,
                "image": c.image,
                "command": c.command,
                "status": c.status,
            })
        })
        .collect();
    Message::new("containers", json!({ "list": list }))
}

/// `completion` (v3): the reply to a `lifecycle-event` with a `reply_id`.
pub fn completion(reply_id: &Value) -> Message {
    Message::new("completion", json!({ "reply_id": reply_id, "done": true }))
}

/// `echo`: the command's own arguments.
pub fn echo(args: &Map<String, Value>) -> Message {
    let mut body = args.clone();
    body.remove("__name__");
    Message { name: "echo", body }
}

/// The user the host should see: the user of the active session on a seat (the desktop or
/// console in front of the VM), else the first logged-in user by name (the old agent's
/// `users | head -1`), else nobody. Greeter and lock-screen pseudo-sessions never count.
pub fn pick_active_user(sessions: &[UserSession]) -> Option<String> {
    let real: Vec<&UserSession> = sessions
        .iter()
        .filter(|s| !s.name.is_empty())
        .filter(|s| !matches!(s.class.as_deref(), Some("greeter" | "lock-screen")))
        .collect();
    if let Some(s) = real.iter().find(|s| s.active && s.seat.is_some()) {
        return Some(s.name.clone());
    }
    real.iter().map(|s| s.name.clone()).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::model::{Disk, IpPrefix, SessionSource};
    use std::time::Duration;

    fn body(m: &Message) -> Value {
        Value::Object(m.body.clone())
    }

    #[test]
    fn heartbeat_has_every_key_in_kib_and_rates() {
        let mut mem = Memory {
            total: 8 << 30,
            free: 1 << 30,
            available: 3 << 30,
            buffers: 4 << 20,
            cached: 1 << 30,
            swap_total: 4 << 30,
            swap_free: 3 << 30,
            swap_in: 100,
            faults: 1000,
            ..Memory::default()
        };
        let mut s = MemorySampler::default();
        let t0 = Instant::now();
        let first = s.sample(&mem, t0, FreeRam::Legacy);
        assert_eq!(first.swap_in, 0);
        assert_eq!(first.mem_total, 8 << 20);
        assert_eq!(first.mem_unused, 1 << 20);
        assert_eq!(first.mem_free, (1 << 20) + 4096 + (1 << 20));
        assert_eq!(first.swap_usage, 1 << 20);
        mem.swap_in = 150;
        mem.faults = 2000;
        let second = s.sample(&mem, t0 + Duration::from_secs(5), FreeRam::Legacy);
        assert_eq!(second.swap_in, 10);
        assert_eq!(second.pageflt, 200);
        let hb = heartbeat(free_bytes(&mem, FreeRam::Legacy) >> 20, Some(&second), 3);
        let v = body(&hb);
        assert_eq!(v["free-ram"], 2052);
        assert_eq!(v["apiVersion"], 3);
        assert_eq!(v["memory-stat"].as_object().unwrap().len(), 11);
        let avail = s.sample(&mem, t0 + Duration::from_secs(6), FreeRam::Available);
        assert_eq!(avail.mem_free, 3 << 20);
    }

    #[test]
    fn rpm_labels_drop_the_epoch_apt_keeps_its_version() {
        let rpm = Application {
            name: "kernel".into(),
            version: "5.14.0-427.13.1.el9_4".into(),
            arch: Some("x86_64".into()),
            source: PackageSource::Rpm,
        };
        assert_eq!(package_label(&rpm), "kernel-5.14.0-427.13.1.el9_4");
        let rpm_e = Application {
            version: "1:2.3-4.el9".into(),
            ..rpm.clone()
        };
        assert_eq!(package_label(&rpm_e), "kernel-2.3-4.el9");
        let deb = Application {
            name: "cloud-init".into(),
            version: "1:22.4.2-1".into(),
            arch: None,
            source: PackageSource::Dpkg,
        };
        assert_eq!(package_label(&deb), "cloud-init-1:22.4.2-1");
        let bash = Application {
            name: "bash".into(),
            ..deb.clone()
        };
        let m = applications(
            &[deb.clone(), rpm.clone(), bash.clone(), rpm.clone()],
            &super::super::config::OvirtConfig::default().applications,
        );
        assert_eq!(
            body(&m)["applications"],
            json!(["cloud-init-1:22.4.2-1", "kernel-5.14.0-427.13.1.el9_4"])
        );
        let all = applications(&[bash], &AppFilter::All);
        assert_eq!(body(&all)["applications"], json!(["bash-1:22.4.2-1"]));
    }

    #[test]
    fn interfaces_filtered_and_shaped() {
        let eth = Interface {
            name: "ens3".into(),
            mac: Some("52:54:00:12:34:AB".into()),
            ipv4: vec![IpPrefix {
                address: "198.51.100.7".parse().unwrap(),
                prefix: 24,
            }],
            ipv6: vec![IpPrefix {
                address: "fe80::1".parse().unwrap(),
                prefix: 64,
            }],
            up: true,
            ..Interface::default()
        };
        let lo = Interface {
            name: "lo".into(),
            up: true,
            loopback: true,
            ..Interface::default()
        };
        let veth = Interface {
            name: "veth1234".into(),
            up: true,
            ..Interface::default()
        };
        let down = Interface {
            name: "ens4".into(),
            ..Interface::default()
        };
        let m = network_interfaces(
            &[eth.clone(), lo, veth, down, eth],
            &["docker0".into(), "veth*".into()],
        );
        assert_eq!(
            body(&m),
            json!({"interfaces": [{"name": "ens3", "hw": "52:54:00:12:34:ab",
                "inet": ["198.51.100.7"], "inet6": ["fe80::1"]}]})
        );
    }

    #[test]
    fn disks_filtered_deduplicated_and_mapped() {
        let vda = Disk {
            name: "vda".into(),
            dev: Some("/dev/vda".into()),
            serial: Some("a1b2c3d4-e5f6-4a7b-8".into()),
            ..Disk::default()
        };
        let root = Filesystem {
            mountpoint: "/".into(),
            device: "/dev/vda1".into(),
            fstype: "ext4".into(),
            total: Some(1000),
            used: Some(400),
            disks: vec![vda],
            ..Filesystem::default()
        };
        let bind = Filesystem {
            mountpoint: "/srv/bind".into(),
            ..root.clone()
        };
        let tmp = Filesystem {
            mountpoint: "/tmp".into(),
            device: "tmpfs".into(),
            fstype: "tmpfs".into(),
            total: Some(10),
            used: Some(0),
            ..Filesystem::default()
        };
        let zero = Filesystem {
            mountpoint: "/z".into(),
            device: "z".into(),
            fstype: "fuse.z".into(),
            total: Some(0),
            used: Some(0),
            ..Filesystem::default()
        };
        let dead = Filesystem {
            mountpoint: "/nfs".into(),
            device: "srv:/x".into(),
            fstype: "nfs".into(),
            total: None,
            ..Filesystem::default()
        };
        let sdb = BlockDevice {
            name: "/dev/sda".into(),
            address: Some(Disk {
                name: "sda".into(),
                serial: Some("0QEMU_QEMU_HARDDISK_7f3e9a10".into()),
                ..Disk::default()
            }),
            ..BlockDevice::default()
        };
        let cfg = super::super::config::OvirtConfig::default();
        let m = disks_usage(
            &[bind, root, tmp, zero.clone(), dead],
            &[sdb],
            &cfg.ignored_fs,
            true,
        );
        assert_eq!(
            body(&m),
            json!({"disks": [{"path": "/", "fs": "ext4", "total": 1000, "used": 400}],
                "mapping": {"a1b2c3d4-e5f6-4a7b-8": {"name": "/dev/vda"},
                    "0QEMU_QEMU_HARDDISK_7f3e9a10": {"name": "/dev/sda"}}})
        );
        let m = disks_usage(&[zero], &[], &[], false);
        assert_eq!(body(&m)["disks"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn os_info_and_timezone_follow_the_note() {
        let os = OsInfo {
            name: Some("Debian GNU/Linux".into()),
            version_id: Some("12".into()),
            machine: Some("i686".into()),
            kernel_release: Some("6.1.0-18-686".into()),
            ..OsInfo::default()
        };
        assert_eq!(
            body(&os_info(&os)),
            json!({"version": "12", "distribution": "Debian GNU/Linux", "codename": "",
                "arch": "x86", "type": "linux", "kernel": "6.1.0-18-686"})
        );
        let empty = body(&os_info(&OsInfo::default()));
        for k in ["arch", "version", "type"] {
            assert!(!empty[k].as_str().unwrap().is_empty(), "{k}");
        }
        let tz = Timezone {
            name: Some("Europe/Prague".into()),
            utc_offset: 7200,
            std_offset: 3600,
            dst: true,
            ..Timezone::default()
        };
        assert_eq!(
            body(&timezone(&tz)),
            json!({"zone": "Europe/Prague", "offset": 60})
        );
        let ny = Timezone {
            std_offset: -18000,
            ..Timezone::default()
        };
        assert_eq!(body(&timezone(&ny)), json!({"zone": "", "offset": -300}));
        assert_eq!(body(&number_of_cpus(None)), json!({"count": -1}));
    }

    #[test]
    fn active_user_prefers_the_seat() {
        let s = |name: &str, active: bool, seat: Option<&str>, class: &str| UserSession {
            name: name.into(),
            uid: None,
            session_id: None,
            seat: seat.map(Into::into),
            tty: None,
            remote_host: None,
            class: Some(class.into()),
            kind: None,
            active,
            locked: false,
            login_time: None,
            source: SessionSource::Logind,
        };
        assert_eq!(pick_active_user(&[]), None);
        assert_eq!(
            pick_active_user(&[s("zed", true, None, "user"), s("bob", false, None, "user")]),
            Some("bob".into())
        );
        assert_eq!(
            pick_active_user(&[
                s("amy", true, None, "user"),
                s("zed", true, Some("seat0"), "user")
            ]),
            Some("zed".into())
        );
        assert_eq!(
            pick_active_user(&[s("gdm", true, Some("seat0"), "greeter")]),
            None
        );
        assert_eq!(body(&active_user(None)), json!({"name": "None"}));
    }

    #[test]
    fn gates_match_the_old_agent() {
        assert_eq!(min_version("heartbeat"), 0);
        assert_eq!(min_version("number-of-cpus"), 1);
        assert_eq!(min_version("os-info"), 2);
        assert_eq!(min_version("timezone"), 2);
        assert_eq!(min_version("containers"), 3);
        assert_eq!(min_version("completion"), 3);
        assert_eq!(min_version("session-lock"), 0);
    }
}
