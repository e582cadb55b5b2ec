//! Network interfaces: every one the kernel has, with or without addresses.
//!
//! On the running system one `getifaddrs()` (nix) gives names, flags, IPv4 and IPv6 addresses
//! with their netmasks, and, in its `AF_PACKET` entries (one per link, addresses or not), the
//! interface index and hardware address; one read of `/proc/net/dev` gives the counters (the
//! figures qemu-ga reports). That is what qemu-ga does too. sysfs is read only for what
//! getifaddrs cannot give: the MTU, and only for callers that show it
//! ([`read`], not [`read_without_mtu`]); a hardware address longer than `sockaddr_ll` holds
//! (InfiniBand's 20 bytes); counters of an interface `/proc/net/dev` lacks.
//!
//! if-addrs, the design card's crate, no longer serves here: it gives no MAC, no flags or
//! counters, lists only interfaces that have an address (a down or unconfigured NIC would
//! vanish), and asks `if_nametoindex` (a socket and an ioctl) for every address, so with it
//! each interface cost several sysfs reads on top.
//!
//! For a tree that is not running (fixtures), links come from its `sys/class/net` and IPv6
//! addresses from its `proc/net/if_inet6` (IPv4 has no such file).

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

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

/// One interface as a source of links gives it, before counters and addresses are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    /// Kernel index: the order interfaces are listed in (`ip addr`, qemu-ga).
    index: u32,
    name: String,
    /// `IFF_*` flags.
    flags: u32,
    mac: Mac,
}

/// A hardware address as far as the link source knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mac {
    /// The interface has none (`addr_len` 0: WireGuard, some tunnels).
    None,
    /// Lower-case colon-separated hex.
    Known(String),
    /// Longer than the source could carry: read `address` in sysfs.
    InSysfs,
}

/// Reads the interfaces under `paths`, with the MTU.
pub fn read(paths: &Paths) -> Result<Vec<Interface>, FactError> {
    read_opts(paths, true)
}

/// Reads the interfaces under `paths` with `mtu: None`, for reports that do not show it
/// (QGA, oVirt): on the running system that saves one sysfs read per interface.
pub fn read_without_mtu(paths: &Paths) -> Result<Vec<Interface>, FactError> {
    read_opts(paths, false)
}

fn read_opts(paths: &Paths, mtu: bool) -> Result<Vec<Interface>, FactError> {
    if paths.is_system() {
        match live() {
            Ok((links, addrs)) => return Ok(assemble(paths, links, &addrs, mtu)),
            Err(e) => {
                tracing::debug!(error = %e, "getifaddrs failed; links from sysfs, IPv6 from /proc only");
            }
        }
    }
    let addrs = if_inet6(paths)?;
    from_files(paths, &addrs, mtu)
}

/// The interfaces of `sys/class/net` under `paths`, with `addrs` attached by name.
pub fn read_with(paths: &Paths, addrs: &[AddrEntry]) -> Result<Vec<Interface>, FactError> {
    from_files(paths, addrs, true)
}

fn from_files(paths: &Paths, addrs: &[AddrEntry], mtu: bool) -> Result<Vec<Interface>, FactError> {
    let links = match sysfs_links(paths) {
        Ok(l) => l,
        Err(e) if util::is_absent(&e) && !addrs.is_empty() => Vec::new(),
        Err(e) => return Err(util::io_err(&paths.sys("class/net"), e)),
    };
    Ok(assemble(paths, links, addrs, mtu))
}

/// Links, counters and addresses into the report's interfaces, in index order.
fn assemble(paths: &Paths, mut links: Vec<Link>, addrs: &[AddrEntry], mtu: bool) -> Vec<Interface> {
    let dir = paths.sys("class/net");
    let counters = util::read_opt(&paths.proc("net/dev"))
        .ok()
        .flatten()
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default();
    links.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    let mut out: Vec<Interface> = links
        .into_iter()
        .map(|l| {
            let base = dir.join(&l.name);
            let mac = match l.mac {
                Mac::None => None,
                Mac::Known(m) => Some(m),
                Mac::InSysfs => util::attr(&base.join("address")).map(|m| m.to_ascii_lowercase()),
            };
            let stats = counters
                .get(&l.name)
                .copied()
                .or_else(|| sysfs_stats(&base));
            Interface {
                mac,
                ipv4: Vec::new(),
                ipv6: Vec::new(),
                up: l.flags & IFF_UP != 0,
                loopback: l.flags & IFF_LOOPBACK != 0,
                mtu: if mtu {
                    util::attr_num(&base.join("mtu"))
                } else {
                    None
                },
                stats,
                name: l.name,
            }
        })
        .collect();
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
    out
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

fn sysfs_stats(base: &Path) -> Option<InterfaceStats> {
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

/// The links of `sys/class/net` under `paths`: the fixture trees' source.
fn sysfs_links(paths: &Paths) -> std::io::Result<Vec<Link>> {
    let dir = paths.sys("class/net");
    let mut links = Vec::new();
    for e in std::fs::read_dir(&dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let base = dir.join(&name);
        let Some(flags) = util::attr(&base.join("flags")) else {
            continue; // bonding_masters and other files that are not interfaces
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
        let addr_len: u32 = util::attr_num(&base.join("addr_len")).unwrap_or(0);
        links.push(Link {
            index: util::attr_num(&base.join("ifindex")).unwrap_or(u32::MAX),
            name,
            flags,
            mac: if addr_len > 0 {
                Mac::InSysfs
            } else {
                Mac::None
            },
        });
    }
    Ok(links)
}

/// Links and addresses of the running system from one `getifaddrs()`.
fn live() -> nix::Result<(Vec<Link>, Vec<AddrEntry>)> {
    let mut links = Vec::new();
    let mut addrs = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else {
            continue;
        };
        if let Some(ll) = addr.as_link_addr() {
            let raw: &libc::sockaddr_ll = ll.as_ref();
            let len = ll.halen();
            let mac = if len == 0 {
                Mac::None
            } else {
                match raw.sll_addr.get(..len) {
                    Some(bytes) => Mac::Known(hex_colon(bytes)),
                    // nix copies a plain sockaddr_ll (8 address bytes) out of glibc's longer one.
                    None => Mac::InSysfs,
                }
            };
            links.push(Link {
                index: u32::try_from(ll.ifindex()).unwrap_or(u32::MAX),
                name: ifa.interface_name,
                flags: u32::try_from(ifa.flags.bits()).unwrap_or(0),
                mac,
            });
        } else if let Some(v4) = addr.as_sockaddr_in() {
            // getifaddrs gives the netmask, not its length; none counts as 0, as with if-addrs.
            let bits = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(0, |m| m.ip().to_bits().count_ones());
            addrs.push(AddrEntry {
                name: ifa.interface_name,
                addr: IpAddr::V4(v4.ip()),
                prefix: u8::try_from(bits).unwrap_or(0),
            });
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            // getifaddrs gives the netmask, not its length; none counts as 0, as with if-addrs.
            let bits = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(0, |m| m.ip().to_bits().count_ones());
            addrs.push(AddrEntry {
                name: ifa.interface_name,
                addr: IpAddr::V6(v6.ip()),
                prefix: u8::try_from(bits).unwrap_or(0),
            });
        }
    }
    Ok((links, addrs))
}

/// `52:54:00:12:34:56`, the form sysfs and `ip` print.
fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
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
    fn without_mtu_is_the_same_but_the_mtu() {
        let full = read(&fixture()).unwrap();
        let brief = read_without_mtu(&fixture()).unwrap();
        assert_eq!(full[1].mtu, Some(1500));
        let stripped: Vec<Interface> = full
            .into_iter()
            .map(|i| Interface { mtu: None, ..i })
            .collect();
        assert_eq!(brief, stripped);
    }

    #[test]
    fn hardware_addresses_print_as_sysfs_does() {
        assert_eq!(
            hex_colon(&[0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
            "52:54:00:ab:cd:ef"
        );
        assert_eq!(hex_colon(&[0, 0, 0, 0]), "00:00:00:00");
        assert_eq!(hex_colon(&[]), "");
    }

    /// getifaddrs on this machine gives the links, flags and MACs its sysfs shows, and the
    /// IPv6 addresses of `/proc/net/if_inet6`.
    #[test]
    fn live_getifaddrs_matches_sysfs() {
        let sys = Paths::system();
        let (mut links, addrs) = live().unwrap();
        assert!(!links.is_empty());
        links.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
        let mut files = sysfs_links(&sys).unwrap();
        files.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
        let key = |l: &Link| (l.index, l.name.clone(), l.flags & (IFF_UP | IFF_LOOPBACK));
        assert_eq!(
            links.iter().map(key).collect::<Vec<_>>(),
            files.iter().map(key).collect::<Vec<_>>()
        );
        let live_ifs = read(&sys).unwrap();
        let file_ifs = from_files(&sys, &if_inet6(&sys).unwrap(), true).unwrap();
        for (l, f) in live_ifs.iter().zip(&file_ifs) {
            assert_eq!((&l.name, &l.mac, l.mtu), (&f.name, &f.mac, f.mtu));
            let mut a = l.ipv6.clone();
            let mut b = f.ipv6.clone();
            a.sort_by_key(|p| (p.address, p.prefix));
            b.sort_by_key(|p| (p.address, p.prefix));
            assert_eq!(a, b, "{}", l.name);
        }
        // Every live address belongs to a listed interface (aliases by their base name).
        for a in &addrs {
            let base = a.name.split(':').next().unwrap_or(&a.name);
            assert!(live_ifs.iter().any(|i| i.name == base), "{a:?}");
        }
    }

    #[test]
    fn no_sysfs_no_addresses_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&Paths::under(dir.path())).is_err());
    }
}
