//! Commands that report: sync, time, and the facts of the guest converted from core's model
//! to QGA's shapes.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use guestd_core::contract::FactError;
use guestd_core::model::{Disk, Filesystem, Interface};
use guestd_core::oserror::strerror;
use guestd_core::sysfacts::{BlockDevice, Route};
use serde_json::{Map, Value, json};

use super::Success;
use crate::qga::Ctx;
use crate::qga::args::Args;
use crate::qga::error::QgaError;

pub(super) fn no_args(args: &Map<String, Value>) -> Result<(), QgaError> {
    Args::new(args).finish()
}

pub(super) fn sync(args: &Map<String, Value>) -> Result<Value, QgaError> {
    let mut a = Args::new(args);
    let id: i64 = a.req("id")?;
    a.finish()?;
    Ok(Value::from(id))
}

pub(super) fn get_time(args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let ns = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    };
    Ok(Success::Return(Value::from(ns)))
}

fn ret(v: Value) -> Result<Success, QgaError> {
    Ok(Success::Return(v))
}

/// Put `v` under `key` when it is present (QAPI optional members are omitted, never null).
fn put<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

pub(super) async fn host_name(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    // qemu-ga answers "localhost" when the name cannot be had, never an error.
    let name = ctx
        .agent
        .facts
        .node_name()
        .await
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    ret(json!({ "host-name": name }))
}

pub(super) async fn osinfo(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let os = ctx
        .agent
        .facts
        .os()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    let mut m = Map::new();
    put(&mut m, "kernel-release", os.kernel_release);
    put(&mut m, "kernel-version", os.kernel_version);
    put(&mut m, "machine", os.machine);
    put(&mut m, "id", os.id);
    put(&mut m, "name", os.name);
    put(&mut m, "pretty-name", os.pretty_name);
    put(&mut m, "version", os.version);
    put(&mut m, "version-id", os.version_id);
    put(&mut m, "variant", os.variant);
    put(&mut m, "variant-id", os.variant_id);
    ret(Value::Object(m))
}

pub(super) async fn timezone(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let tz = ctx
        .agent
        .facts
        .timezone()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    let mut m = Map::new();
    put(&mut m, "zone", tz.abbreviation);
    m.insert("offset".into(), tz.utc_offset.into());
    ret(Value::Object(m))
}

pub(super) async fn users(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    ret(users_list(sessions_or_none(ctx.agent.facts.users().await)?))
}

/// qemu-ga reads utmp with `getutxent(3)`, which yields no record when the file is missing
/// (initramfs, containers) or cannot be opened, so it answers `[]` then: so do we, when there
/// is neither logind nor utmp ([`FactError::Unavailable`]) or utmp cannot be read
/// ([`FactError::Io`]). A timeout or a platform without the fact stays an error (qemu-ga
/// without utmpx answers `QERR_UNSUPPORTED`).
fn sessions_or_none(
    res: Result<Vec<guestd_core::model::UserSession>, FactError>,
) -> Result<Vec<guestd_core::model::UserSession>, QgaError> {
    match res {
        Ok(s) => Ok(s),
        Err(e @ (FactError::Unavailable(_) | FactError::Io { .. })) => {
            tracing::debug!(error = %e, "guest-get-users: no user records, answering []");
            Ok(Vec::new())
        }
        Err(e) => Err(QgaError::from_fact(&e)),
    }
}

/// One entry per user with the earliest login, in order of first appearance (qemu-ga reads
/// utmp `USER_PROCESS` records the same way).
fn users_list(sessions: Vec<guestd_core::model::UserSession>) -> Value {
    let mut order: Vec<String> = Vec::new();
    let mut earliest: BTreeMap<String, f64> = BTreeMap::new();
    for s in sessions {
        let t = s.login_time.unwrap_or(0.0);
        match earliest.get_mut(&s.name) {
            Some(e) => *e = e.min(t),
            None => {
                order.push(s.name.clone());
                earliest.insert(s.name, t);
            }
        }
    }
    Value::Array(
        order
            .into_iter()
            .map(|u| {
                let t = earliest.get(&u).copied().unwrap_or(0.0);
                json!({ "user": u, "login-time": t })
            })
            .collect(),
    )
}

fn interface(i: &Interface) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), i.name.clone().into());
    // qemu-ga asks the kernel for every interface's hardware address; interfaces without
    // one (loopback, tunnels) report zeros.
    let mac = i
        .mac
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "00:00:00:00:00:00".to_owned());
    m.insert("hardware-address".into(), mac.into());
    if !i.ipv4.is_empty() || !i.ipv6.is_empty() {
        let mut addrs: Vec<Value> = i
            .ipv4
            .iter()
            .map(|a| {
                json!({"ip-address": a.address.to_string(), "ip-address-type": "ipv4",
                       "prefix": a.prefix})
            })
            .collect();
        addrs.extend(i.ipv6.iter().map(|a| {
            json!({"ip-address": a.address.to_string(), "ip-address-type": "ipv6",
                   "prefix": a.prefix})
        }));
        m.insert("ip-addresses".into(), Value::Array(addrs));
        if let Some(s) = &i.stats {
            m.insert(
                "statistics".into(),
                json!({
                    "rx-bytes": s.rx_bytes, "rx-packets": s.rx_packets,
                    "rx-errs": s.rx_errors, "rx-dropped": s.rx_dropped,
                    "tx-bytes": s.tx_bytes, "tx-packets": s.tx_packets,
                    "tx-errs": s.tx_errors, "tx-dropped": s.tx_dropped,
                }),
            );
        }
    }
    Value::Object(m)
}

pub(super) async fn interfaces(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .interfaces_without_mtu()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    ret(Value::Array(list.iter().map(interface).collect()))
}

/// QGA's bus-type enum names for the model's bus names.
fn bus_type(bus: Option<&str>) -> &'static str {
    const KNOWN: [&str; 19] = [
        "ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd", "unknown", "ieee1394",
        "ssa", "fibre", "raid", "iscsi", "sas", "mmc", "virtual", "nvme",
    ];
    match bus.map(str::to_ascii_lowercase).as_deref() {
        Some("file-backed-virtual") => "file-backed-virtual",
        Some("ata") => "ide",
        Some("mmc" | "sdio") => "mmc",
        Some(b) => KNOWN
            .iter()
            .find(|k| **k == b)
            .copied()
            .unwrap_or("unknown"),
        None => "unknown",
    }
}

/// A GuestDiskAddress. qemu-ga reports -1 for PCI numbers it could not find.
fn disk_address(d: &Disk) -> Value {
    let mut m = Map::new();
    let pci = match &d.pci {
        Some(p) => {
            json!({"domain": p.domain, "bus": p.bus, "slot": p.slot, "function": p.function})
        }
        None => json!({"domain": -1, "bus": -1, "slot": -1, "function": -1}),
    };
    m.insert("pci-controller".into(), pci);
    m.insert("bus-type".into(), bus_type(d.bus.as_deref()).into());
    let (bus, target, unit) = match &d.scsi {
        Some(s) => (s.channel, s.target, s.lun),
        None => (0, 0, 0),
    };
    m.insert("bus".into(), bus.into());
    m.insert("target".into(), target.into());
    m.insert("unit".into(), unit.into());
    put(&mut m, "serial", d.serial.clone());
    put(&mut m, "dev", d.dev.clone());
    Value::Object(m)
}

/// Only filesystems on block devices appear in guest-get-fsinfo (qemu-ga skips mounts whose
/// device number has major 0: tmpfs, proc, network filesystems).
fn block_backed(f: &Filesystem) -> bool {
    f.device.starts_with("/dev/") && !matches!(f.fstype.as_str(), "devtmpfs" | "tmpfs" | "devpts")
}

/// The kernel's name of a mount source: `vda1` for `/dev/vda1`, and for a device-mapper
/// source the `dm-N` whose alias it is (qemu-ga names filesystems by their sysfs device).
fn kernel_name(device: &str, dm: &[BlockDevice]) -> String {
    if let Some(alias) = device.strip_prefix("/dev/mapper/")
        && let Some(b) = dm.iter().find(|b| b.alias.as_deref() == Some(alias))
    {
        return b.name.trim_start_matches("/dev/").to_owned();
    }
    device.rsplit('/').next().unwrap_or(device).to_owned()
}

fn filesystem(f: &Filesystem, dm: &[BlockDevice]) -> Value {
    let mut m = Map::new();
    let name = kernel_name(&f.device, dm);
    m.insert("name".into(), name.into());
    m.insert("mountpoint".into(), f.mountpoint.clone().into());
    m.insert("type".into(), f.fstype.clone().into());
    if let (Some(used), Some(avail)) = (f.used, f.available) {
        // qemu-ga's total is what an unprivileged user can reach: used + available.
        m.insert("used-bytes".into(), used.into());
        m.insert("total-bytes".into(), (used + avail).into());
    }
    put(&mut m, "total-bytes-privileged", f.total);
    // A disk with neither bus nor controller is a virtual device (loop, ram): qemu-ga
    // reports no address for those.
    let disks = f
        .disks
        .iter()
        .filter(|d| d.bus.is_some() || d.pci.is_some())
        .map(disk_address)
        .collect();
    m.insert("disk".into(), Value::Array(disks));
    Value::Object(m)
}

pub(super) async fn fsinfo(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .filesystems()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    // Device-mapper sources need the block device list to find their dm-N name.
    let dm = if list.iter().any(|f| f.device.starts_with("/dev/mapper/")) {
        ctx.agent.facts.block_devices().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    ret(Value::Array(
        list.iter()
            .filter(|f| block_backed(f))
            .map(|f| filesystem(f, &dm))
            .collect(),
    ))
}

fn block_device(b: &BlockDevice) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), b.name.clone().into());
    m.insert("partition".into(), b.partition.into());
    m.insert(
        "dependencies".into(),
        Value::Array(b.dependencies.iter().cloned().map(Value::from).collect()),
    );
    if let Some(a) = &b.address {
        m.insert("address".into(), disk_address(a));
    }
    put(&mut m, "alias", b.alias.clone());
    Value::Object(m)
}

pub(super) async fn disks(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .block_devices()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    ret(Value::Array(list.iter().map(block_device).collect()))
}

pub(super) async fn vcpus(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .vcpus()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    ret(Value::Array(
        list.iter()
            .map(|v| json!({"logical-id": v.logical_id, "online": v.online, "can-offline": v.can_offline}))
            .collect(),
    ))
}

pub(super) async fn memory_blocks(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = memory_blocks_as_qemu_ga(ctx.agent.facts.memory_blocks().await)?;
    ret(Value::Array(
        list.iter()
            .map(|b| json!({"phys-index": b.phys_index, "online": b.online, "can-offline": b.can_offline}))
            .collect(),
    ))
}

/// qemu-ga's answers without blocks: `[]` when `/sys/devices/system/memory` does not exist (no
/// memory hotplug), its `opendir` error when it cannot be read, and an error when the
/// directory holds no block.
fn memory_blocks_as_qemu_ga(
    res: Result<Vec<guestd_core::sysfacts::MemoryBlock>, FactError>,
) -> Result<Vec<guestd_core::sysfacts::MemoryBlock>, QgaError> {
    match res {
        Ok(list) if list.is_empty() => Err(QgaError::generic("guest reported zero memory blocks!")),
        Ok(list) => Ok(list),
        Err(FactError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        Err(FactError::Io { source, .. }) => Err(QgaError::generic(format!(
            "Can't open directory\"/sys/devices/system/memory/\": {}",
            strerror(&source)
        ))),
        Err(e) => Err(QgaError::from_fact(&e)),
    }
}

pub(super) async fn memory_block_info(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let size = block_size_as_qemu_ga(ctx.agent.facts.memory_block_size().await)?;
    ret(json!({ "size": size }))
}

/// qemu-ga's texts when the block size cannot be read: the directory's `open` error, or the
/// sysfs file's.
fn block_size_as_qemu_ga(res: Result<u64, FactError>) -> Result<u64, QgaError> {
    match res {
        Ok(size) => Ok(size),
        Err(FactError::Io { path, source }) if path.ends_with("block_size_bytes") => {
            Err(QgaError::generic(format!(
                "open sysfs file \"block_size_bytes\": {}",
                strerror(&source)
            )))
        }
        Err(FactError::Io { source, .. }) => Err(QgaError::generic(format!(
            "open(\"/sys/devices/system/memory/\"): {}",
            strerror(&source)
        ))),
        Err(e) => Err(QgaError::from_fact(&e)),
    }
}

pub(super) async fn diskstats(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .disk_stats()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    let out = list
        .iter()
        .map(|d| {
            let mut s = Map::new();
            put(&mut s, "read-sectors", d.read_sectors);
            put(&mut s, "read-ios", d.read_ios);
            put(&mut s, "read-merges", d.read_merges);
            put(&mut s, "write-sectors", d.write_sectors);
            put(&mut s, "write-ios", d.write_ios);
            put(&mut s, "write-merges", d.write_merges);
            put(&mut s, "discard-sectors", d.discard_sectors);
            put(&mut s, "discard-ios", d.discard_ios);
            put(&mut s, "discard-merges", d.discard_merges);
            put(&mut s, "flush-ios", d.flush_ios);
            put(&mut s, "read-ticks", d.read_ticks);
            put(&mut s, "write-ticks", d.write_ticks);
            put(&mut s, "discard-ticks", d.discard_ticks);
            put(&mut s, "flush-ticks", d.flush_ticks);
            put(&mut s, "ios-pgr", d.ios_pgr);
            put(&mut s, "total-ticks", d.total_ticks);
            put(&mut s, "weight-ticks", d.weight_ticks);
            json!({"name": d.name, "major": d.major, "minor": d.minor, "stats": s})
        })
        .collect();
    ret(Value::Array(out))
}

pub(super) async fn cpustats(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .cpu_stats()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    let out = list
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("type".into(), "linux".into());
            m.insert("cpu".into(), c.cpu.into());
            m.insert("user".into(), c.user.into());
            m.insert("nice".into(), c.nice.into());
            m.insert("system".into(), c.system.into());
            m.insert("idle".into(), c.idle.into());
            put(&mut m, "iowait", c.iowait);
            put(&mut m, "irq", c.irq);
            put(&mut m, "softirq", c.softirq);
            put(&mut m, "steal", c.steal);
            put(&mut m, "guest", c.guest);
            put(&mut m, "guestnice", c.guest_nice);
            Value::Object(m)
        })
        .collect();
    ret(Value::Array(out))
}

pub(super) async fn load(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let l = ctx
        .agent
        .facts
        .load()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    ret(json!({"load1m": l.one, "load5m": l.five, "load15m": l.fifteen}))
}

fn route(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("iface".into(), r.iface.clone().into());
    m.insert("destination".into(), r.destination.clone().into());
    m.insert("metric".into(), r.metric.into());
    m.insert("version".into(), r.version.into());
    // qemu-ga always fills the addresses of its table rows, with the unspecified address
    // where the kernel has none.
    if r.version == 6 {
        let prefix = |p: Option<u8>| p.unwrap_or(0).to_string();
        let addr = |a: &Option<String>| a.clone().unwrap_or_else(|| "::".into());
        m.insert("desprefixlen".into(), prefix(r.destination_prefix).into());
        m.insert("source".into(), addr(&r.source).into());
        m.insert("srcprefixlen".into(), prefix(r.source_prefix).into());
        m.insert("nexthop".into(), addr(&r.gateway).into());
    } else {
        let addr = |a: &Option<String>| a.clone().unwrap_or_else(|| "0.0.0.0".into());
        m.insert("gateway".into(), addr(&r.gateway).into());
        m.insert("mask".into(), addr(&r.mask).into());
        put(&mut m, "irtt", r.irtt);
        put(&mut m, "window", r.window);
        put(&mut m, "mtu", r.mtu);
    }
    put(&mut m, "flags", r.flags);
    put(&mut m, "refcnt", r.refcnt);
    put(&mut m, "use", r.use_count);
    Value::Object(m)
}

pub(super) async fn routes(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    no_args(args)?;
    let list = ctx
        .agent
        .facts
        .routes()
        .await
        .map_err(|e| QgaError::from_fact(&e))?;
    ret(Value::Array(list.iter().map(route).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::model::{InterfaceStats, IpPrefix, PciAddress};

    #[test]
    fn interface_shapes() {
        let lo = Interface {
            name: "lo".into(),
            mac: Some("00:00:00:00:00:00".into()),
            ipv4: vec![IpPrefix {
                address: "127.0.0.1".parse().unwrap(),
                prefix: 8,
            }],
            ipv6: vec![IpPrefix {
                address: "::1".parse().unwrap(),
                prefix: 128,
            }],
            stats: Some(InterfaceStats {
                rx_bytes: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = interface(&lo);
        assert_eq!(v["ip-addresses"][1]["ip-address-type"], "ipv6");
        assert_eq!(v["ip-addresses"][0]["prefix"], 8);
        assert_eq!(v["statistics"]["rx-bytes"], 1);
        let bare = Interface {
            name: "ifb0".into(),
            mac: Some("d2:94:18:68:82:d7".into()),
            stats: Some(InterfaceStats::default()),
            ..Default::default()
        };
        assert_eq!(
            interface(&bare),
            json!({"name": "ifb0", "hardware-address": "d2:94:18:68:82:d7"})
        );
    }

    #[test]
    fn users_once_each_with_earliest_login() {
        let s = |name: &str, t: f64| guestd_core::model::UserSession {
            name: name.into(),
            uid: None,
            session_id: None,
            seat: None,
            tty: None,
            remote_host: None,
            class: None,
            kind: None,
            active: false,
            locked: false,
            login_time: Some(t),
            source: guestd_core::model::SessionSource::Utmp,
        };
        assert_eq!(
            users_list(vec![s("bob", 20.5), s("root", 10.0), s("bob", 5.25)]),
            json!([{"user": "bob", "login-time": 5.25}, {"user": "root", "login-time": 10.0}])
        );
    }

    #[test]
    fn users_without_logind_or_utmp_is_an_empty_list() {
        let none = |e: FactError| sessions_or_none(Err(e)).map(users_list);
        assert_eq!(
            none(FactError::Unavailable(
                "no systemd-logind and no utmp file".into()
            ))
            .unwrap(),
            json!([])
        );
        assert_eq!(
            none(FactError::Io {
                path: "/run/utmp".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            })
            .unwrap(),
            json!([])
        );
        assert!(
            none(FactError::Timeout {
                what: "users".into(),
                seconds: 5
            })
            .is_err()
        );
        assert!(none(FactError::Unsupported("here")).is_err());
    }

    #[test]
    fn memory_block_errors_as_qemu_ga() {
        let io = |path: &str, code: i32| FactError::Io {
            path: path.into(),
            source: std::io::Error::from_raw_os_error(code),
        };
        let desc = |e: QgaError| e.desc;
        // No memory hotplug directory: no blocks, as qemu-ga.
        assert!(
            memory_blocks_as_qemu_ga(Err(io("/sys/devices/system/memory", 2)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            desc(memory_blocks_as_qemu_ga(Err(io("/sys/devices/system/memory", 13))).unwrap_err()),
            "Can't open directory\"/sys/devices/system/memory/\": Permission denied"
        );
        assert_eq!(
            desc(memory_blocks_as_qemu_ga(Ok(Vec::new())).unwrap_err()),
            "guest reported zero memory blocks!"
        );
        assert_eq!(
            desc(block_size_as_qemu_ga(Err(io("/sys/devices/system/memory", 2))).unwrap_err()),
            "open(\"/sys/devices/system/memory/\"): No such file or directory"
        );
        assert_eq!(
            desc(
                block_size_as_qemu_ga(Err(io("/sys/devices/system/memory/block_size_bytes", 2)))
                    .unwrap_err()
            ),
            "open sysfs file \"block_size_bytes\": No such file or directory"
        );
        assert_eq!(block_size_as_qemu_ga(Ok(1 << 27)).unwrap(), 1 << 27);
    }

    #[test]
    fn routes_fill_unspecified_addresses() {
        let v4 = Route {
            iface: "eth0".into(),
            destination: "192.0.2.0".into(),
            version: 4,
            mask: Some("255.255.255.0".into()),
            flags: Some(1),
            ..Default::default()
        };
        assert_eq!(
            route(&v4),
            json!({"iface": "eth0", "destination": "192.0.2.0", "metric": 0, "version": 4,
                   "gateway": "0.0.0.0", "mask": "255.255.255.0", "flags": 1})
        );
        let v6 = Route {
            iface: "eth0".into(),
            destination: "fd00::".into(),
            version: 6,
            metric: 256,
            destination_prefix: Some(64),
            ..Default::default()
        };
        assert_eq!(
            route(&v6),
            json!({"iface": "eth0", "destination": "fd00::", "metric": 256, "version": 6,
                   "desprefixlen": "64", "source": "::", "srcprefixlen": "0", "nexthop": "::"})
        );
    }

    #[test]
    fn fsinfo_shape() {
        let f = Filesystem {
            mountpoint: "/".into(),
            device: "/dev/vda".into(),
            fstype: "ext4".into(),
            total: Some(100),
            used: Some(30),
            available: Some(60),
            read_only: false,
            disks: vec![Disk {
                name: "vda".into(),
                dev: Some("/dev/vda".into()),
                bus: Some("virtio".into()),
                pci: Some(PciAddress {
                    domain: 0,
                    bus: 0,
                    slot: 2,
                    function: 0,
                }),
                ..Default::default()
            }],
        };
        let dm = [BlockDevice {
            name: "/dev/dm-0".into(),
            alias: Some("vg-root".into()),
            ..Default::default()
        }];
        assert_eq!(kernel_name("/dev/mapper/vg-root", &dm), "dm-0");
        assert_eq!(kernel_name("/dev/vda1", &dm), "vda1");
        assert_eq!(
            filesystem(&f, &[]),
            json!({"name": "vda", "mountpoint": "/", "type": "ext4", "used-bytes": 30,
                   "total-bytes": 90, "total-bytes-privileged": 100,
                   "disk": [{"pci-controller": {"domain": 0, "bus": 0, "slot": 2, "function": 0},
                             "bus-type": "virtio", "bus": 0, "target": 0, "unit": 0,
                             "dev": "/dev/vda"}]})
        );
    }
}
