//! Network interfaces: every one the kernel has, with or without addresses.
//!
//! Names, MAC, flags and MTU come from `/sys/class/net`; counters from `/proc/net/dev` (one
//! read for every interface, the figures qemu-ga reports; `statistics/` in sysfs where that
//! file lacks an interface); addresses from if-addrs
//! (getifaddrs) on the running system. if-addrs alone cannot serve: it gives no MAC, no
//! flags or counters, and it lists only interfaces that have an address, so a down or
//! unconfigured NIC would vanish. For a tree that is not running, IPv6 addresses come from its
//! `proc/net/if_inet6` (IPv4 has no such file).

use std::net::{IpAddr, Ipv6Addr};

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::{Interface, InterfaceStats, IpPrefix};

use crate::util;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// One address of one interface, as a source of addresses gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrEntry {
    /// Interface name (`eth0`, or an IPv4 alias label `eth0:1`).
    pub name: String,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Reads the interfaces under `paths`, with addresses from the live system or the tree.
pub fn read(paths: &Paths) -> Result<Vec<Interface>, FactError> {
    let addrs = if paths.is_system() {
        match live_addresses() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "getifaddrs failed; IPv6 from /proc only");
                if_inet6(paths)?
            }
        }
    } else {
        if_inet6(paths)?
    };
    read_with(paths, &addrs)
}

/// The interfaces of `sys/class/net` under `paths`, with `addrs` attached by name.
pub fn read_with(paths: &Paths, addrs: &[AddrEntry]) -> Result<Vec<Interface>, FactError> {
    let dir = paths.sys("class/net");
    let counters = util::read_opt(&paths.proc("net/dev"))
        .ok()
        .flatten()
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default();
    let mut found: Vec<(u32, Interface)> = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let base = dir.join(&name);
                if !base.join("flags").exists() {
                    continue; // bonding_masters and other files that are not interfaces
                }
                let index = util::attr_num(&base.join("ifindex")).unwrap_or(u32::MAX);
                let mut iface = from_sysfs(&base, name);
                iface.stats = counters
                    .get(&iface.name)
                    .copied()
                    .or_else(|| sysfs_stats(&base));
                found.push((index, iface));
            }
        }
        Err(e) if util::is_absent(&e) && !addrs.is_empty() => {}
        Err(e) => return Err(util::io_err(&dir, e)),
    }
    found.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let mut out: Vec<Interface> = found.into_iter().map(|(_, i)| i).collect();
    for a in addrs {
        let pos = match out.iter().position(|i| i.name == a.name) {
            Some(p) => Some(p),
            None => {
                let base = a.name.split(':').next().unwrap_or(&a.name);
                out.iter().position(|i| i.name == base)
            }
        };
        let iface = match pos {
            Some(p) => &mut out[p],
            None => {
                out.push(Interface {
                    name: a.name.clone(),
                    ..Interface::default()
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        match a.addr {
            IpAddr::V4(v4) => {
                let e = IpPrefix {
                    address: v4,
                    prefix: a.prefix,
                };
                if !iface.ipv4.contains(&e) {
                    iface.ipv4.push(e);
                }
            }
            IpAddr::V6(v6) => {
                let e = IpPrefix {
                    address: v6,
                    prefix: a.prefix,
                };
                if !iface.ipv6.contains(&e) {
                    iface.ipv6.push(e);
                }
            }
        }
    }
    Ok(out)
}

/// `/proc/net/dev`: per interface, receive then transmit columns (bytes, packets, errs, drop,
/// fifo, frame or colls, compressed, multicast or carrier).
pub fn parse_net_dev(text: &str) -> std::collections::HashMap<String, InterfaceStats> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = rest
            .split_whitespace()
            .map_while(|f| f.parse().ok())
            .collect();
        if v.len() < 12 {
            continue; // the two header lines, or a line cut short
        }
        out.insert(
            name.trim().to_owned(),
            InterfaceStats {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

fn sysfs_stats(base: &std::path::Path) -> Option<InterfaceStats> {
    let stat = |n: &str| util::attr_num::<u64>(&base.join("statistics").join(n));
    stat("rx_bytes").map(|rx_bytes| InterfaceStats {
        rx_bytes,
        rx_packets: stat("rx_packets").unwrap_or(0),
        rx_errors: stat("rx_errors").unwrap_or(0),
        rx_dropped: stat("rx_dropped").unwrap_or(0),
        tx_bytes: stat("tx_bytes").unwrap_or(0),
        tx_packets: stat("tx_packets").unwrap_or(0),
        tx_errors: stat("tx_errors").unwrap_or(0),
        tx_dropped: stat("tx_dropped").unwrap_or(0),
    })
}

fn from_sysfs(base: &std::path::Path, name: String) -> Interface {
    let flags = util::attr(&base.join("flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let addr_len: u32 = util::attr_num(&base.join("addr_len")).unwrap_or(0);
    let mac = if addr_len > 0 {
        util::attr(&base.join("address")).map(|m| m.to_ascii_lowercase())
    } else {
        None
    };
    Interface {
        name,
        mac,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
        mtu: util::attr_num(&base.join("mtu")),
        stats: None,
    }
}

fn live_addresses() -> std::io::Result<Vec<AddrEntry>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| {
            let (addr, prefix) = match i.addr {
                if_addrs::IfAddr::V4(a) => (IpAddr::V4(a.ip), a.prefixlen),
                if_addrs::IfAddr::V6(a) => (IpAddr::V6(a.ip), a.prefixlen),
            };
            AddrEntry {
                name: i.name,
                addr,
                prefix,
            }
        })
        .collect())
}

/// `proc/net/if_inet6`: `address ifindex prefix scope flags name`, all hex but the name.
pub fn parse_if_inet6(text: &str) -> Vec<AddrEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [hex, _idx, prefix, _scope, _flags, name] = f.as_slice() else {
                return None;
            };
            let raw = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some(AddrEntry {
                name: (*name).to_owned(),
                addr: IpAddr::V6(Ipv6Addr::from(raw)),
                prefix: u8::from_str_radix(prefix, 16).ok()?,
            })
        })
        .collect()
}

fn if_inet6(paths: &Paths) -> Result<Vec<AddrEntry>, FactError> {
    Ok(util::read_opt(&paths.proc("net/if_inet6"))?
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Paths {
        Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ))
    }

    #[test]
    fn proc_net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
ens3:123456789 98765 1 7 0 0 0 12 55555 4321 2 3 0 0 0 0\n\
veth-a-very-long:5 6 7 8 0 0 0 0 9 10 11 12 0 0 0 0\n\
cut: 1 2 3\n";
        let m = parse_net_dev(text);
        assert_eq!(m.len(), 3, "{m:?}");
        let e = m["ens3"];
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (123456789, 98765, 1, 7)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (55555, 4321, 2, 3)
        );
        assert_eq!(m["veth-a-very-long"].tx_dropped, 12);
        assert_eq!(m["lo"].rx_packets, 10);
    }

    #[test]
    fn sysfs_and_if_inet6() {
        let ifs = read(&fixture()).unwrap();
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo", "ens3", "ens4"]);
        let lo = &ifs[0];
        assert!(lo.up && lo.loopback);
        assert_eq!(lo.mac.as_deref(), Some("00:00:00:00:00:00"));
        assert_eq!(lo.ipv6[0].address, Ipv6Addr::LOCALHOST);
        assert_eq!(lo.ipv6[0].prefix, 128);
        let ens3 = &ifs[1];
        assert_eq!(ens3.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert!(ens3.up && !ens3.loopback);
        assert_eq!(ens3.mtu, Some(1500));
        let st = ens3.stats.unwrap();
        assert_eq!(
            (st.rx_bytes, st.tx_packets, st.rx_dropped),
            (123456789, 4321, 7)
        );
        assert_eq!(ens3.ipv6.len(), 2);
        assert_eq!(ens3.ipv6[1].address.to_string(), "fe80::5054:ff:fe12:3456");
        assert_eq!(ens3.ipv6[1].prefix, 64);
        // Down and without any address, yet listed.
        let ens4 = &ifs[2];
        assert!(!ens4.up);
        assert!(ens4.ipv4.is_empty() && ens4.ipv6.is_empty());
        assert_eq!(ens4.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    }

    #[test]
    fn addresses_attach_by_name_and_alias() {
        let addrs = vec![
            AddrEntry {
                name: "ens3".into(),
                addr: "192.0.2.10".parse().unwrap(),
                prefix: 24,
            },
            AddrEntry {
                name: "ens3:1".into(),
                addr: "192.0.2.11".parse().unwrap(),
                prefix: 32,
            },
            AddrEntry {
                name: "wg0".into(),
                addr: "10.9.0.1".parse().unwrap(),
                prefix: 24,
            },
        ];
        let ifs = read_with(&fixture(), &addrs).unwrap();
        let ens3 = ifs.iter().find(|i| i.name == "ens3").unwrap();
        let v4: Vec<String> = ens3
            .ipv4
            .iter()
            .map(|a| format!("{}/{}", a.address, a.prefix))
            .collect();
        assert_eq!(v4, ["192.0.2.10/24", "192.0.2.11/32"]);
        // An address whose interface sysfs does not show still gets reported.
        assert!(ifs.iter().any(|i| i.name == "wg0" && i.ipv4.len() == 1));
    }

    #[test]
    fn no_sysfs_no_addresses_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&Paths::under(dir.path())).is_err());
    }
}
