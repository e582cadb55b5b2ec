//! Host name, hosts and devices: ifcfg on Oracle Linux (sourced by a shell, as initscripts
//! do), ifupdown stanzas on Debian (parsed by ifquery and ifup --no-act), NetworkManager
//! keyfiles (normalised by nmcli --offline and compared with what nmcli itself writes).

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use guestd_core::actions::instance::{
    BootProto, HostsEntry, InstanceConfig, Module, NetDevice, Status, configure,
};

use super::fixtures::{self, Root};
use crate::support;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn static_eth0() -> NetDevice {
    NetDevice {
        name: "eth0".into(),
        onboot: Some(true),
        bootproto: BootProto::Static,
        ipaddr: Some(ip("192.0.2.10")),
        netmask: Some(ip("255.255.255.0")),
        gateway: Some(ip("192.0.2.1")),
        dns_servers: vec![
            IpAddr::V4(ip("192.0.2.53")),
            IpAddr::V4(ip("198.51.100.53")),
        ],
        dns_search: vec!["example.com".into(), "corp.example.com".into()],
        hwaddr: None,
    }
}

fn dhcp_eth1() -> NetDevice {
    NetDevice {
        name: "eth1".into(),
        onboot: Some(false),
        bootproto: BootProto::Dhcp,
        ..Default::default()
    }
}

fn config() -> InstanceConfig {
    InstanceConfig {
        hostname: Some("db01.example.com".into()),
        hosts: vec![HostsEntry {
            address: IpAddr::V4(ip("192.0.2.10")),
            names: vec!["db01.example.com".into(), "db01".into()],
        }],
        devices: vec![static_eth0(), dhcp_eth1()],
        ..Default::default()
    }
}

/// Source a shell-variable file the way initscripts do and print the variables.
fn source(file: &std::path::Path, vars: &[&str]) -> Vec<String> {
    let script = vars
        .iter()
        .map(|v| format!("printf '%s\\n' \"${v}\""))
        .collect::<Vec<_>>()
        .join("; ");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$1\" && {{ {script}; }}"))
        .arg("sh")
        .arg(file)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn oracle_linux_ifcfg() {
    let r = fixtures::oracle_linux();
    r.write(
        "etc/sysconfig/network-scripts/ifcfg-eth0",
        "# installer\nTYPE=Ethernet\nUUID=1e6c1d42-0b5c-4e1a-9d8c-0a1b2c3d4e5f\nIPV6INIT=yes\nDEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=no\nHWADDR=52:54:00:aa:bb:cc\nDNS3=10.9.9.9\n",
    );
    let rep = configure(&config(), &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(r.read("etc/hostname"), "db01.example.com\n");
    let net = source(&r.p("etc/sysconfig/network"), &["NETWORKING", "HOSTNAME"]);
    assert_eq!(net, ["yes", "db01.example.com"]);
    let hosts = r.read("etc/hosts");
    assert!(
        hosts.contains("192.0.2.10\tdb01.example.com db01\n"),
        "{hosts}"
    );
    assert!(hosts.starts_with("127.0.0.1   localhost"), "{hosts}");

    let eth0 = r.p("etc/sysconfig/network-scripts/ifcfg-eth0");
    let v = source(
        &eth0,
        &[
            "DEVICE",
            "ONBOOT",
            "BOOTPROTO",
            "IPADDR",
            "NETMASK",
            "GATEWAY",
            "DNS1",
            "DNS2",
            "DOMAIN",
            "HWADDR",
        ],
    );
    assert_eq!(
        v,
        [
            "eth0",
            "yes",
            "static",
            "192.0.2.10",
            "255.255.255.0",
            "192.0.2.1",
            "192.0.2.53",
            "198.51.100.53",
            "example.com corp.example.com",
            ""
        ]
    );
    // What the manager did not set is kept; stale owned keys (MAC, third DNS) are gone.
    assert_eq!(
        source(&eth0, &["UUID", "IPV6INIT", "DNS3"]),
        ["1e6c1d42-0b5c-4e1a-9d8c-0a1b2c3d4e5f", "yes", ""]
    );
    assert!(
        r.read("etc/sysconfig/network-scripts/ifcfg-eth0")
            .starts_with("# installer\n")
    );
    let eth1 = r.p("etc/sysconfig/network-scripts/ifcfg-eth1");
    assert!(
        r.read("etc/sysconfig/network-scripts/ifcfg-eth1")
            .starts_with("# Written by guestd")
    );
    assert_eq!(
        source(&eth1, &["DEVICE", "ONBOOT", "BOOTPROTO", "IPADDR"]),
        ["eth1", "no", "dhcp", ""]
    );
    assert_eq!(
        fs::metadata(&eth1).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let resolv = r.read("etc/resolv.conf");
    assert_eq!(
        resolv,
        "search example.com corp.example.com\nnameserver 192.0.2.53\nnameserver 198.51.100.53\n"
    );
}

fn ifquery(file: &std::path::Path, dev: &str) -> Option<String> {
    let out = Command::new("ifquery")
        .arg("-i")
        .arg(file)
        .arg(dev)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

#[test]
fn debian_ifupdown() {
    if !support::require_peer(
        support::have_command("ifquery"),
        "ifquery (ifupdown package)",
    ) {
        return;
    }
    let r = fixtures::debian();
    // An old stanza for eth0 in interfaces.d too: it must go, or ifup sees two.
    r.write(
        "etc/network/interfaces.d/eth0-old",
        "allow-hotplug eth0\niface eth0 inet dhcp\n",
    );
    let rep = configure(&config(), &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(r.read("etc/hostname"), "db01.example.com\n");
    let hosts = r.read("etc/hosts");
    assert!(
        hosts.contains("127.0.1.1\tdb01.example.com db01\n"),
        "{hosts}"
    );
    assert!(!hosts.contains("\tdebian"), "{hosts}");
    assert!(
        hosts.contains("192.0.2.10\tdb01.example.com db01\n"),
        "{hosts}"
    );
    assert!(!r.read("etc/network/interfaces.d/eth0-old").contains("eth0"));

    let file = r.p("etc/network/interfaces");
    let text = r.read("etc/network/interfaces");
    assert_eq!(text.matches("iface eth0 inet").count(), 1, "{text}");
    let q = ifquery(&file, "eth0").expect("ifquery eth0");
    assert!(q.contains("address: 192.0.2.10\n"), "{q}");
    assert!(q.contains("netmask: 255.255.255.0\n"), "{q}");
    assert!(q.contains("gateway: 192.0.2.1\n"), "{q}");
    assert!(
        q.contains("dns-nameservers: 192.0.2.53 198.51.100.53\n"),
        "{q}"
    );
    assert!(
        q.contains("dns-search: example.com corp.example.com\n"),
        "{q}"
    );
    assert!(ifquery(&file, "eth1").is_some(), "eth1 has a stanza");
    assert!(ifquery(&file, "lo").is_some(), "loopback kept");
    let list = Command::new("ifquery")
        .arg("-i")
        .arg(&file)
        .arg("--list")
        .output()
        .unwrap();
    let auto = String::from_utf8(list.stdout).unwrap();
    assert!(auto.lines().any(|l| l == "eth0"), "eth0 is auto: {auto}");
    assert!(!auto.lines().any(|l| l == "eth1"), "eth1 onboot=no: {auto}");
    // What ifup would run, without running it.
    let out = Command::new("ifup")
        .args(["--no-act", "--force", "-i"])
        .arg(&file)
        .arg("eth0")
        .output()
        .unwrap();
    let plan = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{plan}");
    assert!(plan.contains("192.0.2.10/255.255.255.0"), "{plan}");
    assert!(plan.contains("default via 192.0.2.1"), "{plan}");
    // Run twice: still one stanza.
    assert!(configure(&config(), &r.paths()).is_success());
    assert_eq!(
        r.read("etc/network/interfaces")
            .matches("iface eth0 inet")
            .count(),
        1
    );
}

/// Normalise a keyfile through nmcli's own reader and writer.
fn nm_normalise(text: &str) -> String {
    let mut child = Command::new("nmcli")
        .args([
            "--offline",
            "connection",
            "modify",
            "ipv4.dns-priority",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nmcli refused the keyfile: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn nm_reference(args: &[&str]) -> String {
    let out = Command::new("nmcli")
        .args(["--offline", "connection", "add"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn without_uuid(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("uuid="))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn debian_networkmanager_keyfile() {
    let r = fixtures::debian();
    fs::remove_file(r.p("etc/network/interfaces")).unwrap();
    r.mkdir("etc/NetworkManager/system-connections");
    r.write_mode(
        "etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
        "[connection]\nid=Wired connection 1\ntype=ethernet\ninterface-name=eth0\n",
        0o600,
    );
    let mut cfg = config();
    cfg.devices[0].hwaddr = Some("52:54:00:aa:bb:cc".into());
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert!(
        !r.exists("etc/NetworkManager/system-connections/Wired connection 1.nmconnection"),
        "old profile for eth0 replaced"
    );
    let p = r.p("etc/NetworkManager/system-connections/eth0.nmconnection");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ours = r.read("etc/NetworkManager/system-connections/eth0.nmconnection");
    let eth1 = r.read("etc/NetworkManager/system-connections/eth1.nmconnection");
    if !support::require_peer(
        support::have_command("nmcli"),
        "nmcli (network-manager package)",
    ) {
        return;
    }
    let ours_n = nm_normalise(&ours);
    let reference = nm_reference(&[
        "type",
        "ethernet",
        "con-name",
        "eth0",
        "ifname",
        "eth0",
        "ethernet.mac-address",
        "52:54:00:AA:BB:CC",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        "192.0.2.10/24",
        "ipv4.gateway",
        "192.0.2.1",
        "ipv4.dns",
        "192.0.2.53,198.51.100.53",
        "ipv4.dns-search",
        "example.com,corp.example.com",
    ]);
    // nmcli writes the gateway as `gateway=` or folds it into address1 depending on version:
    // compare after its own normalisation of both.
    assert_eq!(
        without_uuid(&ours_n),
        without_uuid(&nm_normalise(&reference))
    );
    let eth1_n = nm_normalise(&eth1);
    let reference1 = nm_reference(&[
        "type",
        "ethernet",
        "con-name",
        "eth1",
        "ifname",
        "eth1",
        "connection.autoconnect",
        "no",
        "ipv4.method",
        "auto",
    ]);
    assert_eq!(
        without_uuid(&eth1_n),
        without_uuid(&nm_normalise(&reference1))
    );
    // The uuid survives a second run (NetworkManager would otherwise see a new profile).
    let uuid = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("uuid="))
            .unwrap()
            .to_string()
    };
    assert!(configure(&cfg, &r.paths()).is_success());
    assert_eq!(
        uuid(&ours),
        uuid(&r.read("etc/NetworkManager/system-connections/eth0.nmconnection"))
    );
}

#[test]
fn bad_device_settings_fail_that_device_only() {
    let r = fixtures::oracle_linux();
    let mut cfg = config();
    cfg.devices[0].netmask = Some(ip("255.0.255.0"));
    cfg.devices[1].name = "../../etc/x".into();
    let rep = configure(&cfg, &r.paths());
    assert!(
        matches!(
            rep.find(Module::Network, "device eth0").unwrap().status,
            Status::Failed(_)
        ),
        "{rep}"
    );
    assert!(rep.failures().count() == 2, "{rep}");
    assert_eq!(
        rep.find(Module::Network, "hostname (/etc/hostname)")
            .unwrap()
            .status,
        Status::Applied
    );
    // The old eth0 file is untouched.
    assert!(
        r.read("etc/sysconfig/network-scripts/ifcfg-eth0")
            .contains("BOOTPROTO=dhcp")
    );
    assert!(!r.exists("etc/x"));
}

#[test]
fn resolv_conf_symlink_is_left_alone() {
    let r = fixtures::debian();
    fs::remove_file(r.p("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        r.p("etc/resolv.conf"),
    )
    .unwrap();
    let rep = configure(&config(), &r.paths());
    assert!(matches!(
        rep.find(Module::Network, "/etc/resolv.conf")
            .unwrap()
            .status,
        Status::Skipped(_)
    ));
    assert!(
        fs::symlink_metadata(r.p("etc/resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn hostname_refused_when_invalid() {
    let r: Root = fixtures::debian();
    let cfg = InstanceConfig {
        hostname: Some("bad name\nx".into()),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(!rep.is_success());
    assert_eq!(r.read("etc/hostname"), "debian\n");
}

/// OL6-style: no os-release, only /etc/oracle-release; host name and zone in sysconfig.
#[test]
fn oracle_linux_6_legacy_files() {
    let r = fixtures::oracle_linux();
    fs::remove_file(r.p("etc/os-release")).unwrap();
    r.write("etc/oracle-release", "Oracle Linux Server release 6.10\n");
    fs::remove_file(r.p("etc/sysconfig/clock")).unwrap();
    let cfg = InstanceConfig {
        hostname: Some("ol6.example.com".into()),
        timezone: Some("Europe/Paris".into()),
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(
        source(&r.p("etc/sysconfig/network"), &["HOSTNAME"]),
        ["ol6.example.com"]
    );
    assert_eq!(
        source(&r.p("etc/sysconfig/clock"), &["ZONE"]),
        ["Europe/Paris"]
    );
    assert!(!r.exists("etc/timezone"));
}
