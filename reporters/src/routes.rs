//! Routes of the main table from `/proc/net/route` and `/proc/net/ipv6_route`.
//!
//! Every hex field is read as unsigned. qemu-ga scans IPv6 metric and flags into a signed int
//! and widens it, so a metric of 0xffffffff (unreachable routes) came out as -1; here it is
//! 4294967295, as the kernel means it. A kernel without IPv6 has no `ipv6_route`: IPv4 alone.

use std::net::{Ipv4Addr, Ipv6Addr};

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::sysfacts::Route;

use crate::util;

/// Reads IPv4 and IPv6 routes under `paths`.
pub fn read(paths: &Paths) -> Result<Vec<Route>, FactError> {
    let v4 = util::read_opt(&paths.proc("net/route"))?;
    let v6 = util::read_opt(&paths.proc("net/ipv6_route"))?;
    if v4.is_none() && v6.is_none() {
        return Err(FactError::Unavailable(
            "no /proc/net/route nor /proc/net/ipv6_route".into(),
        ));
    }
    let mut out = v4.map(|t| parse_v4(&t)).unwrap_or_default();
    out.extend(v6.map(|t| parse_v6(&t)).unwrap_or_default());
    Ok(out)
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// The kernel prints an IPv4 address as the hex of its in-memory (network order) u32.
fn v4_addr(s: &str) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(hex_u32(s)?.to_ne_bytes()))
}

/// Parses `/proc/net/route` (header line first).
pub fn parse_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 11 {
                return None;
            }
            let gw = v4_addr(f[2])?;
            Some(Route {
                iface: f[0].to_owned(),
                destination: v4_addr(f[1])?.to_string(),
                version: 4,
                metric: f[6].parse().ok()?,
                gateway: (!gw.is_unspecified()).then(|| gw.to_string()),
                mask: Some(v4_addr(f[7])?.to_string()),
                flags: hex_u32(f[3]).map(u64::from),
                refcnt: f[4].parse().ok(),
                use_count: f[5].parse().ok(),
                mtu: f[8].parse().ok(),
                window: f[9].parse().ok(),
                irtt: f[10].parse().ok(),
                ..Route::default()
            })
        })
        .collect()
}

fn v6_addr(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32).then_some(())?;
    Some(Ipv6Addr::from(u128::from_str_radix(s, 16).ok()?))
}

/// Parses `/proc/net/ipv6_route`: destination, prefix, source, prefix, next hop, metric,
/// refcnt, use, flags (hex), interface.
pub fn parse_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let gw = v6_addr(f[4])?;
            Some(Route {
                iface: f[9].to_owned(),
                destination: v6_addr(f[0])?.to_string(),
                version: 6,
                destination_prefix: u8::from_str_radix(f[1], 16).ok(),
                source: Some(v6_addr(f[2])?.to_string()),
                source_prefix: u8::from_str_radix(f[3], 16).ok(),
                gateway: (!gw.is_unspecified()).then(|| gw.to_string()),
                metric: hex_u32(f[5])?,
                refcnt: hex_u32(f[6]).map(u64::from),
                use_count: hex_u32(f[7]).map(u64::from),
                flags: hex_u32(f[8]).map(u64::from),
                ..Route::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_little_endian_hex() {
        let r = parse_v4(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        if cfg!(target_endian = "little") {
            assert_eq!(r[0].gateway.as_deref(), Some("192.0.2.1"));
            assert_eq!(r[1].destination, "192.0.2.0");
            assert_eq!(r[1].mask.as_deref(), Some("255.255.255.0"));
        }
        assert_eq!(r[0].metric, 100);
        assert_eq!(r[0].flags, Some(3));
        assert_eq!(r[1].gateway, None);
    }

    #[test]
    fn ipv6_metric_is_unsigned() {
        let r = parse_v6(
            "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
             00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
             00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
             00000000000000000000000000000000 ffffffff 00000001 00000000 80200001       lo\n\
             00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
             fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n",
        );
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].destination, "fd00::");
        assert_eq!(r[0].destination_prefix, Some(64));
        assert_eq!(r[0].metric, 256);
        assert_eq!(r[1].metric, u32::MAX);
        assert_eq!(r[1].flags, Some(0x8020_0001));
        assert_eq!(r[2].gateway.as_deref(), Some("fd00::1"));
    }

    #[test]
    fn no_ipv6_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(
            dir.path().join("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        )
        .unwrap();
        let r = read(&Paths::under(dir.path())).unwrap();
        assert_eq!(r.len(), 1);
        assert!(read(&Paths::under(dir.path().join("nothing"))).is_err());
    }
}
