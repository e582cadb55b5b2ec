//! Every key of ovmd.md §1.12 (and guestd's own) mapped to the configuration.

use std::net::{IpAddr, Ipv4Addr};

use guestd_core::actions::instance::{BootProto, DateTime, SelinuxMode};
use guestd_protocols::ovmd::template::{KEYS, ROOT_PASSWORD, map_pairs, render_list};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn oracle_documented_and_automation_keys() {
    let pairs = [
        ("com.oracle.linux.network.hostname", "db01.example.com"),
        (
            "com.oracle.linux.network.host.0",
            "192.0.2.10 db01.example.com db01",
        ),
        ("com.oracle.linux.network.device.0", "eth0"),
        ("com.oracle.linux.network.onboot.0", "yes"),
        ("com.oracle.linux.network.bootproto.0", "static"),
        ("com.oracle.linux.network.ipaddr.0", "192.0.2.10"),
        ("com.oracle.linux.network.netmask.0", "255.255.255.0"),
        ("com.oracle.linux.network.gateway.0", "192.0.2.1"),
        (
            "com.oracle.linux.network.dns-servers.0",
            "192.0.2.53,198.51.100.53",
        ),
        (
            "com.oracle.linux.network.dns-search-domains.0",
            "example.com,corp.example.com",
        ),
        ("com.oracle.linux.network.device.1", "eth1"),
        ("com.oracle.linux.network.bootproto.1", "dhcp"),
        ("com.oracle.linux.network.onboot.1", "no"),
        ("com.oracle.linux.datetime.datetime", "2011-4-7-9-2-42"),
        ("com.oracle.linux.datetime.timezone", "America/New_York"),
        ("com.oracle.linux.datetime.utc", "True"),
        ("com.oracle.linux.datetime.ntp", "False"),
        (
            "com.oracle.linux.datetime.ntp-servers",
            "time.example.com,0.example.pool.ntp.org",
        ),
        (ROOT_PASSWORD, "Welcome!"),
    ];
    let m = map_pairs(pairs);
    assert!(m.unhandled.is_empty(), "{:?}", m.unhandled);
    assert!(m.invalid.is_empty(), "{:?}", m.invalid);
    let c = &m.config;
    assert_eq!(c.hostname.as_deref(), Some("db01.example.com"));
    assert_eq!(c.hosts.len(), 1);
    assert_eq!(c.hosts[0].address, IpAddr::V4(ip("192.0.2.10")));
    assert_eq!(c.hosts[0].names, ["db01.example.com", "db01"]);
    assert_eq!(c.devices.len(), 2);
    let d0 = &c.devices[0];
    assert_eq!(d0.name, "eth0");
    assert_eq!(d0.onboot, Some(true));
    assert_eq!(d0.bootproto, BootProto::Static);
    assert_eq!(d0.ipaddr, Some(ip("192.0.2.10")));
    assert_eq!(d0.netmask, Some(ip("255.255.255.0")));
    assert_eq!(d0.gateway, Some(ip("192.0.2.1")));
    assert_eq!(
        d0.dns_servers,
        [
            IpAddr::V4(ip("192.0.2.53")),
            IpAddr::V4(ip("198.51.100.53"))
        ]
    );
    assert_eq!(d0.dns_search, ["example.com", "corp.example.com"]);
    let d1 = &c.devices[1];
    assert_eq!(
        (d1.name.as_str(), d1.bootproto, d1.onboot),
        ("eth1", BootProto::Dhcp, Some(false))
    );
    assert_eq!(c.datetime, DateTime::new(2011, 4, 7, 9, 2, 42));
    assert_eq!(c.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(c.utc, Some(true));
    assert_eq!(c.ntp_enabled, Some(false));
    assert_eq!(
        c.ntp_servers.as_deref(),
        Some(
            &[
                "time.example.com".to_string(),
                "0.example.pool.ntp.org".to_string()
            ][..]
        )
    );
    let pw = c.root_password.as_ref().unwrap();
    assert_eq!(pw.secret.expose(), "Welcome!");
    assert!(!pw.crypted);
    assert!(
        !format!("{c:?}").contains("Welcome!"),
        "password leaked into Debug"
    );
}

#[test]
fn guestd_keys() {
    let m = map_pairs([
        ("com.oracle.linux.root-password.crypted", "True"),
        (ROOT_PASSWORD, "$6$abcdefgh$0123456789abcdef"),
        ("com.oracle.linux.selinux.mode", "permissive"),
        ("com.oracle.linux.firewall.enabled", "False"),
        ("com.oracle.linux.ssh.regenerate-host-keys", "True"),
        ("com.oracle.linux.user.name.0", "alice"),
        ("com.oracle.linux.user.password.0", "s3cret"),
        ("com.oracle.linux.user.groups.0", "wheel,users"),
        ("com.oracle.linux.user.name.1", "bob"),
        (
            "com.oracle.linux.user.password.1",
            "$6$saltsalt$hashhashhash",
        ),
        ("com.oracle.linux.user.password-crypted.1", "yes"),
        ("com.oracle.linux.network.device.0", "eth0"),
        ("com.oracle.linux.network.hwaddr.0", "52:54:00:AA:BB:CC"),
    ]);
    assert!(m.invalid.is_empty(), "{:?}", m.invalid);
    let c = &m.config;
    assert!(c.root_password.as_ref().unwrap().crypted);
    assert_eq!(c.selinux, Some(SelinuxMode::Permissive));
    assert_eq!(c.firewall, Some(false));
    assert!(c.regenerate_ssh_host_keys);
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[0].name, "alice");
    assert_eq!(c.users[0].groups, ["wheel", "users"]);
    assert!(!c.users[0].password.as_ref().unwrap().crypted);
    assert!(c.users[1].password.as_ref().unwrap().crypted);
    assert_eq!(c.devices[0].hwaddr.as_deref(), Some("52:54:00:aa:bb:cc"));
}

#[test]
fn every_listed_key_maps() {
    for spec in KEYS {
        let key = if spec.indexed {
            format!("{}.3", spec.key)
        } else {
            spec.key.to_string()
        };
        let value = match spec.key.rsplit('.').next().unwrap() {
            "hostname" => "h1",
            "host" => "192.0.2.1 h1",
            "device" => "eth3",
            "onboot"
            | "utc"
            | "ntp"
            | "crypted"
            | "enabled"
            | "regenerate-host-keys"
            | "password-crypted" => "False",
            "bootproto" => "dhcp",
            "ipaddr" | "netmask" | "gateway" | "dns-servers" => "192.0.2.1",
            "dns-search-domains" => "example.com",
            "hwaddr" => "52:54:00:00:00:01",
            "datetime" => "2020-1-2-3-4-5",
            "timezone" => "UTC",
            "ntp-servers" => "ntp.example.com",
            "root-password" | "password" => "pw",
            "mode" => "enforcing",
            "name" => "carol",
            "groups" => "wheel",
            other => panic!("no sample value for {other}"),
        };
        let m = map_pairs([(key.as_str(), value)]);
        assert!(m.unhandled.is_empty(), "{key} unhandled");
        // Indexed device settings without a device name are reported, by design.
        let only_expected = m.invalid.iter().all(|(k, _)| {
            k.starts_with("com.oracle.linux.network.device.")
                || k.starts_with("com.oracle.linux.user.name.")
        });
        assert!(only_expected, "{key}: {:?}", m.invalid);
    }
}

#[test]
fn unknown_and_system_keys_are_kept_by_name() {
    let m = map_pairs([
        ("com.oracle.linux.system.something", "x"),
        ("org.example.custom", "y"),
        ("com.oracle.linux.network.hostname", "ok"),
        ("com.oracle.linux.network.ipaddr", "192.0.2.1"),
    ]);
    assert_eq!(
        m.unhandled,
        [
            "com.oracle.linux.system.something",
            "org.example.custom",
            "com.oracle.linux.network.ipaddr"
        ]
    );
    assert_eq!(m.config.hostname.as_deref(), Some("ok"));
}

#[test]
fn bad_values_are_refused_without_echoing_them() {
    let m = map_pairs([
        (
            "com.oracle.linux.network.hostname",
            "bad host\nDNS1=6.6.6.6",
        ),
        ("com.oracle.linux.network.ipaddr.0", "300.1.1.1"),
        ("com.oracle.linux.network.device.0", "eth0;rm"),
        ("com.oracle.linux.datetime.timezone", "../../etc/shadow"),
        ("com.oracle.linux.datetime.datetime", "2011-2-30-0-0-0"),
        ("com.oracle.linux.datetime.utc", "maybe"),
        ("com.oracle.linux.user.name.0", "Root:0"),
        ("com.oracle.linux.root-password.crypted", "True"),
        (ROOT_PASSWORD, "not-a-hash"),
    ]);
    let keys: Vec<&str> = m.invalid.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "com.oracle.linux.network.hostname",
        "com.oracle.linux.network.ipaddr.0",
        "com.oracle.linux.network.device.0",
        "com.oracle.linux.datetime.timezone",
        "com.oracle.linux.datetime.datetime",
        "com.oracle.linux.datetime.utc",
        "com.oracle.linux.user.name.0",
        ROOT_PASSWORD,
    ] {
        assert!(keys.contains(&k), "{k} not refused: {keys:?}");
    }
    for (_, why) in &m.invalid {
        assert!(
            !why.contains("not-a-hash") && !why.contains("6.6.6.6"),
            "{why}"
        );
    }
    assert!(m.config.hostname.is_none());
    assert!(m.config.timezone.is_none());
    assert!(m.config.root_password.is_none());
    assert!(m.config.devices.is_empty());
}

#[test]
fn list_format_for_ovm_template_config() {
    let s = render_list([
        ("com.oracle.linux.network.hostname", "db01"),
        ("k", "a \"quoted\" = value\nline2"),
        ("u", "é"),
    ]);
    let text = s.expose();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"com.oracle.linux.network.hostname":"db01"}"#);
    assert_eq!(lines[1], r#"{"k":"a \"quoted\" = value\nline2"}"#);
    assert_eq!(lines[2], "{\"u\":\"é\"}");
    assert!(text.ends_with('\n'));
    assert!(!format!("{s:?}").contains("db01"));
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
}
