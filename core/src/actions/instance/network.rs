//! The network module: host name, `/etc/hosts` lines, and per device static or DHCP IPv4 with
//! gateway and DNS, in the format the guest's network stack reads:
//!
//! - Red Hat family: `/etc/sysconfig/network-scripts/ifcfg-<dev>` (`DEVICE`, `ONBOOT`,
//!   `BOOTPROTO`, `IPADDR`, `NETMASK`, `GATEWAY`, `DNS1..n`, `DOMAIN`, `HWADDR`, `PEERDNS=no`
//!   when DHCP gets fixed DNS), read by initscripts and NetworkManager's ifcfg-rh plugin; the
//!   other keys of an existing file (`UUID`, `IPV6INIT`, `MTU`, ...) are kept. From
//!   release 10 (no ifcfg support), or when a keyfile already owns the device and no ifcfg
//!   does, a NetworkManager keyfile instead.
//! - Debian family: an `iface <dev> inet` stanza in `/etc/network/interfaces` (the device's old
//!   `inet` stanzas and `auto`/`allow-*` mentions removed from it and `interfaces.d/*`) when
//!   ifupdown manages the device or no NetworkManager is installed; else a NetworkManager
//!   keyfile `/etc/NetworkManager/system-connections/<dev>.nmconnection` (0600), replacing other
//!   keyfiles bound to the same interface.
//! - DNS also goes to `/etc/resolv.conf` at once when that is a plain file (a symlink means
//!   resolvconf or systemd-resolved owns it: the stanza's `dns-*` lines or NetworkManager feed
//!   those instead).
//! - Host name: `/etc/hostname`; `HOSTNAME=` in `/etc/sysconfig/network` when that file exists
//!   (OL6-style); the `127.0.1.1` line of `/etc/hosts` on Debian. The running kernel's host name
//!   is set too when the root is the running system.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::distro::{Distro, Family};
use super::fsutil::{read_opt, write_atomic};
use super::report::{Module, Report};
use super::validate;
use super::{BootProto, HostsEntry, InstanceConfig, NetDevice};
use crate::paths::Paths;

const HEADER: &str = "# Written by guestd first-boot configuration";

/// Apply the network part of `cfg`.
pub fn configure(cfg: &InstanceConfig, paths: &Paths, distro: &Distro, report: &mut Report) {
    if let Some(h) = &cfg.hostname {
        hostname(h, paths, distro, report);
    }
    if !cfg.hosts.is_empty() {
        match hosts_entries(&cfg.hosts, paths) {
            Ok(()) => report.applied(Module::Network, "/etc/hosts entries"),
            Err(e) => report.failed(Module::Network, "/etc/hosts entries", e),
        }
    }
    for dev in &cfg.devices {
        let item = format!("device {}", dev.name);
        match device(dev, paths, distro) {
            Ok(file) => report.applied(
                Module::Network,
                format!("{item} ({})", inside(paths, &file)),
            ),
            Err(e) => report.failed(Module::Network, item, e),
        }
    }
    resolv_conf(&cfg.devices, paths, report);
}

fn inside(paths: &Paths, p: &Path) -> String {
    Path::new("/")
        .join(p.strip_prefix(paths.root()).unwrap_or(p))
        .display()
        .to_string()
}

fn hostname(h: &str, paths: &Paths, distro: &Distro, report: &mut Report) {
    if let Err(e) = validate::hostname(h) {
        report.failed(Module::Network, "hostname", e);
        return;
    }
    match write_atomic(&paths.etc("hostname"), format!("{h}\n").as_bytes(), 0o644) {
        Ok(()) => report.applied(Module::Network, "hostname (/etc/hostname)"),
        Err(e) => report.failed(Module::Network, "hostname (/etc/hostname)", e),
    }
    let sysconfig = paths.etc("sysconfig/network");
    if distro.family == Family::RedHat && (sysconfig.exists() || distro.is_legacy_redhat()) {
        let r = super::fsutil::edit_shell_file(&sysconfig, &[("HOSTNAME", Some(h))], 0o644);
        match r {
            Ok(()) => report.applied(Module::Network, "hostname (/etc/sysconfig/network)"),
            Err(e) => report.failed(Module::Network, "hostname (/etc/sysconfig/network)", e),
        }
    }
    if distro.family == Family::Debian {
        let short = h.split('.').next().unwrap_or(h);
        let names = if short == h {
            h.to_string()
        } else {
            format!("{h} {short}")
        };
        let r = edit_hosts(paths, |lines| {
            let line = format!("127.0.1.1\t{names}");
            match lines
                .iter()
                .position(|l| l.split_whitespace().next() == Some("127.0.1.1"))
            {
                Some(i) => lines[i] = line,
                None => {
                    let at = lines
                        .iter()
                        .position(|l| l.split_whitespace().next() == Some("127.0.0.1"))
                        .map_or(0, |i| i + 1);
                    lines.insert(at, line);
                }
            }
        });
        match r {
            Ok(()) => report.applied(Module::Network, "hostname (/etc/hosts 127.0.1.1)"),
            Err(e) => report.failed(Module::Network, "hostname (/etc/hosts 127.0.1.1)", e),
        }
    }
    if paths.is_system() {
        match nix::unistd::sethostname(h) {
            Ok(()) => report.applied(Module::Network, "hostname (running kernel)"),
            Err(e) => report.failed(Module::Network, "hostname (running kernel)", e),
        }
    }
}

fn edit_hosts(paths: &Paths, f: impl FnOnce(&mut Vec<String>)) -> io::Result<()> {
    let p = paths.etc("hosts");
    let old = read_opt(&p)?.unwrap_or_default();
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    f(&mut lines);
    let mut new = lines.join("\n");
    new.push('\n');
    if new != old {
        write_atomic(&p, new.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Put each entry in `/etc/hosts`, replacing lines for the same address.
fn hosts_entries(entries: &[HostsEntry], paths: &Paths) -> io::Result<()> {
    for e in entries {
        for n in &e.names {
            validate::hostname(n).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        }
    }
    edit_hosts(paths, |lines| {
        for e in entries {
            let addr_of = |l: &str| {
                l.split_whitespace()
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
            };
            if e.address.is_loopback()
                && let Some(i) = lines.iter().position(|l| addr_of(l) == Some(e.address))
            {
                // Never drop `localhost`: add the names to the loopback line instead.
                for n in &e.names {
                    if !lines[i].split_whitespace().skip(1).any(|w| w == n) {
                        lines[i].push(' ');
                        lines[i].push_str(n);
                    }
                }
                continue;
            }
            lines.retain(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    != Some(e.address)
            });
            lines.push(format!("{}\t{}", e.address, e.names.join(" ")));
        }
    })
}

/// Prefix length of a contiguous netmask.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u32> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Check a device's settings before anything is written.
fn check(dev: &NetDevice) -> io::Result<Option<(Ipv4Addr, u32)>> {
    validate::ifname(&dev.name).map_err(invalid)?;
    if let Some(mac) = &dev.hwaddr {
        validate::mac(mac).map_err(invalid)?;
    }
    for d in &dev.dns_search {
        validate::hostname(d).map_err(invalid)?;
    }
    if dev.bootproto != BootProto::Static {
        return Ok(None);
    }
    let (Some(ip), Some(mask)) = (dev.ipaddr, dev.netmask) else {
        return Err(invalid("static configuration needs ipaddr and netmask"));
    };
    let prefix = prefix_len(mask).ok_or_else(|| invalid("netmask is not contiguous"))?;
    Ok(Some((ip, prefix)))
}

/// Which format a device gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFormat {
    /// `ifcfg-<dev>`.
    Ifcfg,
    /// `/etc/network/interfaces` stanza.
    Ifupdown,
    /// NetworkManager keyfile.
    Keyfile,
}

/// Decide the format for `dev` on this root (see the module documentation).
pub fn format_for(paths: &Paths, distro: &Distro, dev: &str) -> Option<NetFormat> {
    let keyfile_owner = !keyfiles_for(paths, dev).is_empty();
    let nm = paths.etc("NetworkManager").is_dir();
    match distro.family {
        Family::RedHat => {
            let ifcfg = ifcfg_path(paths, dev).exists();
            if distro.major.is_some_and(|m| m >= 10) || (keyfile_owner && !ifcfg) {
                Some(NetFormat::Keyfile)
            } else {
                Some(NetFormat::Ifcfg)
            }
        }
        _ => {
            let interfaces = paths.etc("network/interfaces");
            let stanza = interfaces_files(paths).iter().any(|f| {
                read_opt(f)
                    .ok()
                    .flatten()
                    .is_some_and(|t| mentions(&t, dev))
            });
            if stanza {
                Some(NetFormat::Ifupdown)
            } else if nm {
                Some(NetFormat::Keyfile)
            } else if interfaces.exists() {
                Some(NetFormat::Ifupdown)
            } else if distro.family == Family::Other
                && paths.etc("sysconfig/network-scripts").is_dir()
            {
                Some(NetFormat::Ifcfg)
            } else {
                None
            }
        }
    }
}

fn device(dev: &NetDevice, paths: &Paths, distro: &Distro) -> io::Result<PathBuf> {
    let addr = check(dev)?;
    match format_for(paths, distro, &dev.name) {
        Some(NetFormat::Ifcfg) => {
            let p = ifcfg_path(paths, &dev.name);
            let old = read_opt(&p)?;
            write_atomic(&p, ifcfg(old.as_deref(), dev).as_bytes(), 0o644)?;
            Ok(p)
        }
        Some(NetFormat::Ifupdown) => ifupdown(dev, addr, paths),
        Some(NetFormat::Keyfile) => keyfile(dev, addr, paths),
        None if paths.etc("netplan").is_dir() => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "netplan-only systems are not supported (no ifupdown or NetworkManager configuration)",
        )),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no ifcfg, ifupdown or NetworkManager configuration in this root",
        )),
    }
}

fn ifcfg_path(paths: &Paths, dev: &str) -> PathBuf {
    paths
        .etc("sysconfig/network-scripts")
        .join(format!("ifcfg-{dev}"))
}

/// Keys of an ifcfg file this module owns: set when configured, removed otherwise. Others
/// (`UUID`, `IPV6INIT`, `MTU`, `ZONE`, `NM_CONTROLLED`, ...) are kept as they were.
const IFCFG_OWNED: &[&str] = &[
    "DEVICE",
    "NAME",
    "TYPE",
    "ONBOOT",
    "BOOTPROTO",
    "IPADDR",
    "NETMASK",
    "PREFIX",
    "IPADDR0",
    "NETMASK0",
    "PREFIX0",
    "GATEWAY",
    "GATEWAY0",
    "DNS1",
    "DNS2",
    "DNS3",
    "DNS4",
    "DNS5",
    "DNS6",
    "DOMAIN",
    "PEERDNS",
    "HWADDR",
    "MACADDR",
];

/// The ifcfg text for `dev`, starting from the device's `old` file when there is one.
pub fn ifcfg(old: Option<&str>, dev: &NetDevice) -> String {
    let mut want: Vec<(&str, String)> = vec![
        ("DEVICE", dev.name.clone()),
        ("NAME", dev.name.clone()),
        ("TYPE", "Ethernet".into()),
        (
            "ONBOOT",
            if dev.onboot.unwrap_or(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
        ),
        (
            "BOOTPROTO",
            match dev.bootproto {
                BootProto::Dhcp => "dhcp",
                BootProto::Static => "static",
                BootProto::None => "none",
            }
            .into(),
        ),
    ];
    if dev.bootproto == BootProto::Static {
        if let Some(ip) = dev.ipaddr {
            want.push(("IPADDR", ip.to_string()));
        }
        if let Some(m) = dev.netmask {
            want.push(("NETMASK", m.to_string()));
        }
    }
    if let Some(g) = dev.gateway {
        want.push(("GATEWAY", g.to_string()));
    }
    const DNS: [&str; 6] = ["DNS1", "DNS2", "DNS3", "DNS4", "DNS5", "DNS6"];
    for (k, d) in DNS.iter().zip(&dev.dns_servers) {
        want.push((k, d.to_string()));
    }
    if !dev.dns_search.is_empty() {
        want.push(("DOMAIN", dev.dns_search.join(" ")));
    }
    if dev.bootproto == BootProto::Dhcp && !dev.dns_servers.is_empty() {
        want.push(("PEERDNS", "no".into()));
    }
    if let Some(mac) = &dev.hwaddr {
        want.push(("HWADDR", mac.clone()));
    }
    let vars: Vec<(&str, Option<&str>)> = IFCFG_OWNED
        .iter()
        .map(|k| {
            let v = want.iter().find(|(w, _)| w == k).map(|(_, v)| v.as_str());
            (*k, v)
        })
        .collect();
    let base = match old {
        Some(t) => t.to_string(),
        None => format!("{HEADER}\n"),
    };
    super::fsutil::set_shell_vars(&base, &vars)
}

/// `/etc/network/interfaces` and the regular files of `interfaces.d`.
fn interfaces_files(paths: &Paths) -> Vec<PathBuf> {
    let mut v = vec![paths.etc("network/interfaces")];
    if let Ok(rd) = fs::read_dir(paths.etc("network/interfaces.d")) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        more.sort();
        v.extend(more);
    }
    v
}

const STANZA_WORDS: &[&str] = &[
    "iface",
    "mapping",
    "auto",
    "source",
    "source-directory",
    "rename",
    "no-auto-down",
    "no-scripts",
];

fn is_stanza_start(first: &str) -> bool {
    STANZA_WORDS.contains(&first) || first.starts_with("allow-")
}

fn mentions(text: &str, dev: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first() {
            Some(&"iface") => w.get(1) == Some(&dev),
            Some(f) if *f == "auto" || f.starts_with("allow-") => w[1..].contains(&dev),
            _ => false,
        }
    })
}

/// `text` without the `iface <dev> inet ...` stanzas and with `dev` removed from `auto` and
/// `allow-*` lines.
pub fn remove_ifupdown_device(text: &str, dev: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let first = w.first().copied().unwrap_or("");
        if is_stanza_start(first) {
            skipping = first == "iface" && w.get(1) == Some(&dev) && w.get(2) == Some(&"inet");
            if skipping {
                continue;
            }
            if first == "auto" || first.starts_with("allow-") {
                let rest: Vec<&str> = w[1..].iter().copied().filter(|n| *n != dev).collect();
                if rest.len() != w.len() - 1 {
                    if !rest.is_empty() {
                        out.push(format!("{first} {}", rest.join(" ")));
                    }
                    continue;
                }
            }
            out.push(line.to_string());
        } else if skipping && !first.starts_with('#') && !first.is_empty() {
            // ifupdown attaches option lines to the last stanza even across blank lines.
            continue;
        } else {
            out.push(line.to_string());
        }
    }
    let mut s = out.join("\n");
    while s.ends_with("\n\n") {
        s.pop();
    }
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The ifupdown stanza for `dev`.
pub fn ifupdown_stanza(dev: &NetDevice) -> String {
    let mut s = format!("{HEADER}\n");
    if dev.onboot.unwrap_or(true) {
        let _ = writeln!(s, "auto {}", dev.name);
    }
    let method = match dev.bootproto {
        BootProto::Dhcp => "dhcp",
        BootProto::Static => "static",
        BootProto::None => "manual",
    };
    let _ = writeln!(s, "iface {} inet {method}", dev.name);
    if dev.bootproto == BootProto::Static {
        if let Some(ip) = dev.ipaddr {
            let _ = writeln!(s, "\taddress {ip}");
        }
        if let Some(m) = dev.netmask {
            let _ = writeln!(s, "\tnetmask {m}");
        }
    }
    if let Some(g) = dev.gateway
        && dev.bootproto == BootProto::Static
    {
        let _ = writeln!(s, "\tgateway {g}");
    }
    if !dev.dns_servers.is_empty() {
        let l: Vec<String> = dev.dns_servers.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "\tdns-nameservers {}", l.join(" "));
    }
    if !dev.dns_search.is_empty() {
        let _ = writeln!(s, "\tdns-search {}", dev.dns_search.join(" "));
    }
    s
}

fn ifupdown(dev: &NetDevice, _addr: Option<(Ipv4Addr, u32)>, paths: &Paths) -> io::Result<PathBuf> {
    if dev.bootproto != BootProto::Static && dev.gateway.is_some() {
        tracing::info!(dev = %dev.name, "gateway ignored: ifupdown takes it from DHCP");
    }
    let main = paths.etc("network/interfaces");
    for f in interfaces_files(paths) {
        let Some(old) = read_opt(&f)? else { continue };
        let new = remove_ifupdown_device(&old, &dev.name);
        if f != main && new != old {
            write_atomic(&f, new.as_bytes(), 0o644)?;
        }
    }
    let old = read_opt(&main)?.unwrap_or_else(|| "auto lo\niface lo inet loopback\n".into());
    let mut new = remove_ifupdown_device(&old, &dev.name);
    if !new.is_empty() {
        new.push('\n');
    }
    new.push_str(&ifupdown_stanza(dev));
    write_atomic(&main, new.as_bytes(), 0o644)?;
    Ok(main)
}

fn keyfile_dir(paths: &Paths) -> PathBuf {
    paths.etc("NetworkManager/system-connections")
}

/// Keyfiles whose `interface-name=` is `dev`.
fn keyfiles_for(paths: &Paths, dev: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(keyfile_dir(paths)) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            read_opt(p).ok().flatten().is_some_and(|t| {
                t.lines()
                    .any(|l| l.trim() == format!("interface-name={dev}"))
            })
        })
        .collect()
}

fn uuid_v4() -> io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The NetworkManager keyfile for `dev`.
pub fn keyfile_text(dev: &NetDevice, addr: Option<(Ipv4Addr, u32)>, uuid: &str) -> String {
    let mut s = format!(
        "{HEADER}\n[connection]\nid={}\nuuid={uuid}\ntype=ethernet\ninterface-name={}\n",
        dev.name, dev.name
    );
    if !dev.onboot.unwrap_or(true) {
        s.push_str("autoconnect=false\n");
    }
    s.push_str("\n[ethernet]\n");
    if let Some(mac) = &dev.hwaddr {
        let _ = writeln!(s, "mac-address={}", mac.to_ascii_uppercase());
    }
    s.push_str("\n[ipv4]\n");
    match (dev.bootproto, addr) {
        (BootProto::Static, Some((ip, prefix))) => {
            let _ = writeln!(s, "method=manual");
            match dev.gateway {
                Some(g) => {
                    let _ = writeln!(s, "address1={ip}/{prefix},{g}");
                }
                None => {
                    let _ = writeln!(s, "address1={ip}/{prefix}");
                }
            }
        }
        (BootProto::None, _) => {
            let _ = writeln!(s, "method=disabled");
        }
        _ => {
            let _ = writeln!(s, "method=auto");
        }
    }
    let v4: Vec<String> = dev
        .dns_servers
        .iter()
        .filter(|a| a.is_ipv4())
        .map(ToString::to_string)
        .collect();
    if !v4.is_empty() {
        let _ = writeln!(s, "dns={};", v4.join(";"));
        if dev.bootproto == BootProto::Dhcp {
            let _ = writeln!(s, "ignore-auto-dns=true");
        }
    }
    if !dev.dns_search.is_empty() {
        let _ = writeln!(s, "dns-search={};", dev.dns_search.join(";"));
    }
    // What nmcli writes for a new profile (absent means eui64, kept for old profiles only).
    s.push_str("\n[ipv6]\naddr-gen-mode=default\nmethod=auto\n");
    s
}

fn keyfile(dev: &NetDevice, addr: Option<(Ipv4Addr, u32)>, paths: &Paths) -> io::Result<PathBuf> {
    let target = keyfile_dir(paths).join(format!("{}.nmconnection", dev.name));
    let uuid = read_opt(&target)?
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("uuid=").map(str::to_string))
        })
        .map_or_else(uuid_v4, Ok)?;
    for other in keyfiles_for(paths, &dev.name) {
        if other != target {
            fs::remove_file(&other)?;
        }
    }
    let text = keyfile_text(dev, addr, &uuid);
    write_atomic(&target, text.as_bytes(), 0o600)?;
    // NetworkManager ignores keyfiles that others can read.
    fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(target)
}

/// Write the devices' DNS servers and search domains to `/etc/resolv.conf` when it is a plain
/// file, keeping its other lines (`options`, comments).
fn resolv_conf(devices: &[NetDevice], paths: &Paths, report: &mut Report) {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    for d in devices {
        for s in &d.dns_servers {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        for s in &d.dns_search {
            if !search.contains(s) {
                search.push(s.clone());
            }
        }
    }
    if servers.is_empty() && search.is_empty() {
        return;
    }
    let item = "/etc/resolv.conf";
    let p = paths.etc("resolv.conf");
    if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        report.skipped(
            Module::Network,
            item,
            "a symlink: managed by resolvconf or systemd-resolved, fed from the device configuration",
        );
        return;
    }
    let old = match read_opt(&p) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            report.failed(Module::Network, item, e);
            return;
        }
    };
    let mut s = String::new();
    if !search.is_empty() {
        let _ = writeln!(s, "search {}", search.join(" "));
    }
    for n in servers.iter().take(3) {
        let _ = writeln!(s, "nameserver {n}");
    }
    for l in old.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        let replaced = matches!(first, "nameserver")
            || (!search.is_empty() && matches!(first, "search" | "domain"));
        if !replaced {
            s.push_str(l);
            s.push('\n');
        }
    }
    match write_atomic(&p, s.as_bytes(), 0o644) {
        Ok(()) => report.applied(Module::Network, item),
        Err(e) => report.failed(Module::Network, item, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    fn root(os_release: &str) -> (tempfile::TempDir, Paths, Distro) {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let distro = super::super::distro::from_os_release(os_release);
        (d, paths, distro)
    }

    #[test]
    fn formats_by_family_and_owner() {
        let (_d, p, ol7) = root("ID=ol\nVERSION_ID=7.9\n");
        assert_eq!(format_for(&p, &ol7, "eth0"), Some(NetFormat::Ifcfg));
        // OL9 with a keyfile owning eth0 and no ifcfg: keep NetworkManager's format.
        let (_d, p, ol9) = root("ID=ol\nVERSION_ID=9.3\n");
        let dir = p.etc("NetworkManager/system-connections");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("x.nmconnection"),
            "[connection]\ninterface-name=eth0\n",
        )
        .unwrap();
        assert_eq!(format_for(&p, &ol9, "eth0"), Some(NetFormat::Keyfile));
        assert_eq!(format_for(&p, &ol9, "eth1"), Some(NetFormat::Ifcfg));
        let (_d, p, ol10) = root("ID=ol\nVERSION_ID=10\n");
        assert_eq!(format_for(&p, &ol10, "eth0"), Some(NetFormat::Keyfile));
        // Debian: ifupdown when it mentions the device or no NetworkManager, else keyfile.
        let (_d, p, deb) = root("ID=debian\n");
        assert_eq!(format_for(&p, &deb, "eth0"), None);
        fs::create_dir_all(p.etc("network")).unwrap();
        fs::write(
            p.etc("network/interfaces"),
            "auto lo\niface lo inet loopback\n",
        )
        .unwrap();
        assert_eq!(format_for(&p, &deb, "eth0"), Some(NetFormat::Ifupdown));
        fs::create_dir_all(p.etc("NetworkManager")).unwrap();
        assert_eq!(format_for(&p, &deb, "eth0"), Some(NetFormat::Keyfile));
        fs::write(
            p.etc("network/interfaces"),
            "allow-hotplug eth0\niface eth0 inet dhcp\n",
        )
        .unwrap();
        assert_eq!(format_for(&p, &deb, "eth0"), Some(NetFormat::Ifupdown));
    }

    #[test]
    fn hosts_loopback_keeps_localhost() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::under(d.path());
        fs::create_dir_all(p.etc("")).unwrap();
        fs::write(p.etc("hosts"), "127.0.0.1 localhost\n10.0.0.5 old\n").unwrap();
        let e = |a: &str, n: &[&str]| HostsEntry {
            address: a.parse().unwrap(),
            names: n.iter().map(|s| s.to_string()).collect(),
        };
        hosts_entries(
            &[
                e("127.0.0.1", &["db01", "localhost"]),
                e("10.0.0.5", &["new"]),
            ],
            &p,
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(p.etc("hosts")).unwrap(),
            "127.0.0.1 localhost db01\n10.0.0.5\tnew\n"
        );
    }

    #[test]
    fn stanza_removal() {
        let text = "source /etc/network/interfaces.d/*\n\nauto lo eth0\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n\thwaddress ether 00:11:22:33:44:55\n\n# note\n\tmtu 1400\niface eth0 inet6 auto\n\nauto eth1\niface eth1 inet dhcp\n";
        let out = remove_ifupdown_device(text, "eth0");
        assert_eq!(
            out,
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n\n# note\niface eth0 inet6 auto\n\nauto eth1\niface eth1 inet dhcp\n"
        );
    }
}
