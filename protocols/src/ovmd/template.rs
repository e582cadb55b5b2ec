//! The `com.oracle.linux.*` keys of Oracle VM template configuration (ovmd.md §1.12) mapped to
//! guestd's protocol-neutral [`InstanceConfig`]. Pure: no I/O. The caller (the ovmd session,
//! when `com.oracle.linux.root-password` arrives and configuration is enabled) hands every
//! received pair to [`map_pairs`], then dispatches
//! `Action::ConfigureInstance(InstanceRequest { config, ovm_list })` with
//! `ovm_list = Some(render_list(pairs))` so that the handler can delegate to Oracle's
//! `ovm-template-config --stdin configure` when that is installed in the guest.
//!
//! The keys, where they come from, and what guestd does with each are in [`KEYS`]. Keys that
//! map to nothing (other namespaces, the `system` module, typos) are returned by name in
//! [`Mapping::unhandled`] and logged by name only; values that do not parse are returned in
//! [`Mapping::invalid`] with the reason, never the value. Nothing is dropped from the
//! caller's store: this only reads.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use guestd_core::action::Secret;
use guestd_core::actions::instance::{
    BootProto, DateTime, HostsEntry, InstanceConfig, InstanceRequest, Module, NetDevice, Password,
    SelinuxMode, UserSpec, validate,
};

/// The key whose arrival triggers configuration; automation always sends it last.
pub const ROOT_PASSWORD: &str = "com.oracle.linux.root-password";

/// Where a key's name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Oracle's documentation (`ovm-template-config --enumerate` output quoted there).
    Oracle,
    /// Consistent across public automation (OVM CLI scripts, REST clients, Terraform, Ansible).
    Automation,
    /// Not confirmed from Oracle: guestd's own name for what the module does. Renamed to
    /// Oracle's once seen on a real guest (`ovm-template-config --enumerate configure`).
    Guestd,
}

/// One known key. `indexed` keys end in `.N` (the NIC or user index).
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// The key, without the `.N` suffix when indexed.
    pub key: &'static str,
    /// Takes a `.N` suffix.
    pub indexed: bool,
    /// Which module applies it.
    pub module: Module,
    /// Where the name comes from.
    pub origin: Origin,
    /// Value format and effect.
    pub description: &'static str,
}

const fn k(
    key: &'static str,
    indexed: bool,
    module: Module,
    origin: Origin,
    description: &'static str,
) -> KeySpec {
    KeySpec {
        key,
        indexed,
        module,
        origin,
        description,
    }
}

/// Every key guestd maps.
pub const KEYS: &[KeySpec] = &[
    k(
        "com.oracle.linux.network.hostname",
        false,
        Module::Network,
        Origin::Automation,
        "host name (FQDN or short)",
    ),
    k(
        "com.oracle.linux.network.host",
        true,
        Module::Network,
        Origin::Automation,
        "an /etc/hosts line: '<ip> <fqdn> <alias>...'",
    ),
    k(
        "com.oracle.linux.network.device",
        true,
        Module::Network,
        Origin::Oracle,
        "interface name of NIC N, e.g. eth0",
    ),
    k(
        "com.oracle.linux.network.onboot",
        true,
        Module::Network,
        Origin::Automation,
        "yes/no: bring NIC N up at boot",
    ),
    k(
        "com.oracle.linux.network.bootproto",
        true,
        Module::Network,
        Origin::Automation,
        "dhcp, static or none",
    ),
    k(
        "com.oracle.linux.network.ipaddr",
        true,
        Module::Network,
        Origin::Automation,
        "IPv4 address (static)",
    ),
    k(
        "com.oracle.linux.network.netmask",
        true,
        Module::Network,
        Origin::Automation,
        "IPv4 netmask (static)",
    ),
    k(
        "com.oracle.linux.network.gateway",
        true,
        Module::Network,
        Origin::Automation,
        "IPv4 default gateway",
    ),
    k(
        "com.oracle.linux.network.dns-servers",
        true,
        Module::Network,
        Origin::Automation,
        "DNS servers, comma-separated",
    ),
    k(
        "com.oracle.linux.network.dns-search-domains",
        true,
        Module::Network,
        Origin::Automation,
        "DNS search domains, comma-separated",
    ),
    k(
        "com.oracle.linux.network.hwaddr",
        true,
        Module::Network,
        Origin::Guestd,
        "MAC address to bind NIC N's configuration to",
    ),
    k(
        "com.oracle.linux.datetime.datetime",
        false,
        Module::Datetime,
        Origin::Oracle,
        "year-month-day-hour-minute-second, unpadded (2011-4-7-9-2-42); set through SetTime",
    ),
    k(
        "com.oracle.linux.datetime.timezone",
        false,
        Module::Datetime,
        Origin::Oracle,
        "time zone, e.g. America/New_York",
    ),
    k(
        "com.oracle.linux.datetime.utc",
        false,
        Module::Datetime,
        Origin::Oracle,
        "True/False: hardware clock in UTC",
    ),
    k(
        "com.oracle.linux.datetime.ntp",
        false,
        Module::Datetime,
        Origin::Oracle,
        "True/False: enable the NTP service",
    ),
    k(
        "com.oracle.linux.datetime.ntp-servers",
        false,
        Module::Datetime,
        Origin::Oracle,
        "NTP servers, comma-separated (name cut off in Oracle's text)",
    ),
    k(
        "com.oracle.linux.root-password",
        false,
        Module::Authentication,
        Origin::Oracle,
        "root password, plain; sent last, triggers configuration",
    ),
    k(
        "com.oracle.linux.root-password.crypted",
        false,
        Module::Authentication,
        Origin::Guestd,
        "True: root-password is a crypt(3) hash",
    ),
    k(
        "com.oracle.linux.selinux.mode",
        false,
        Module::Selinux,
        Origin::Guestd,
        "enforcing, permissive or disabled",
    ),
    k(
        "com.oracle.linux.firewall.enabled",
        false,
        Module::Firewall,
        Origin::Guestd,
        "True/False: firewall service on or off",
    ),
    k(
        "com.oracle.linux.ssh.regenerate-host-keys",
        false,
        Module::Ssh,
        Origin::Guestd,
        "True: new ssh host keys",
    ),
    k(
        "com.oracle.linux.user.name",
        true,
        Module::User,
        Origin::Guestd,
        "login name of user N to add",
    ),
    k(
        "com.oracle.linux.user.password",
        true,
        Module::User,
        Origin::Guestd,
        "password of user N",
    ),
    k(
        "com.oracle.linux.user.password-crypted",
        true,
        Module::User,
        Origin::Guestd,
        "True: password of user N is a crypt(3) hash",
    ),
    k(
        "com.oracle.linux.user.groups",
        true,
        Module::User,
        Origin::Guestd,
        "supplementary groups of user N, comma-separated",
    ),
];

/// What [`map_pairs`] made of the pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// The configuration to apply.
    pub config: InstanceConfig,
    /// Keys that map to nothing, by name, in arrival order.
    pub unhandled: Vec<String>,
    /// Keys whose value was refused, with the reason (never the value).
    pub invalid: Vec<(String, String)>,
}

impl Mapping {
    /// The action payload: this configuration, plus the pairs for delegation (see
    /// [`render_list`]).
    pub fn into_request(self, ovm_list: Option<Secret>) -> InstanceRequest {
        InstanceRequest {
            config: self.config,
            ovm_list,
        }
    }
}

/// `True`/`False` as Oracle writes them, and the usual yes/no/on/off/1/0.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "n" => Some(false),
        _ => None,
    }
}

/// `2011-4-7-9-2-42` (padding allowed).
pub fn parse_datetime(v: &str) -> Option<DateTime> {
    let n: Vec<&str> = v.trim().split('-').collect();
    if n.len() != 6 {
        return None;
    }
    let u = |i: usize| n[i].parse::<u32>().ok();
    DateTime::new(n[0].parse().ok()?, u(1)?, u(2)?, u(3)?, u(4)?, u(5)?)
}

fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Default)]
struct UserParts {
    name: Option<String>,
    password: Option<String>,
    crypted: bool,
    groups: Vec<String>,
}

/// Map received pairs (in arrival order; a later value for a key wins) to an
/// [`InstanceConfig`].
pub fn map_pairs<I, K, V>(pairs: I) -> Mapping
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut m = Mapping::default();
    let mut devices: BTreeMap<u32, (Option<String>, NetDevice)> = BTreeMap::new();
    let mut hosts: BTreeMap<u32, HostsEntry> = BTreeMap::new();
    let mut users: BTreeMap<u32, UserParts> = BTreeMap::new();
    let mut root_pw: Option<String> = None;
    let mut root_crypted = false;

    for (key, value) in pairs {
        let (key, v) = (key.as_ref(), value.as_ref());
        let mut bad = |why: String| m.invalid.push((key.to_string(), why));
        let (base, index) = match key.rsplit_once('.') {
            Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                (b, n.parse::<u32>().ok())
            }
            _ => (key, None),
        };
        let cfg = &mut m.config;
        match (base, index) {
            ("com.oracle.linux.network.hostname", None) => match validate::hostname(v.trim()) {
                Ok(()) => cfg.hostname = Some(v.trim().to_string()),
                Err(e) => bad(e),
            },
            ("com.oracle.linux.network.host", Some(n)) => {
                let mut words = v.split_whitespace();
                match (words.next().map(str::parse::<IpAddr>), words.clone().next()) {
                    (Some(Ok(address)), Some(_)) => {
                        let names: Vec<String> = words.map(str::to_string).collect();
                        match names.iter().try_for_each(|n| validate::hostname(n)) {
                            Ok(()) => {
                                hosts.insert(n, HostsEntry { address, names });
                            }
                            Err(e) => bad(e),
                        }
                    }
                    _ => bad("expected '<ip> <name> [<alias>...]'".into()),
                }
            }
            ("com.oracle.linux.network.device", Some(n)) => match validate::ifname(v.trim()) {
                Ok(()) => devices.entry(n).or_default().0 = Some(v.trim().to_string()),
                Err(e) => bad(e),
            },
            ("com.oracle.linux.network.onboot", Some(n)) => match parse_bool(v) {
                Some(b) => devices.entry(n).or_default().1.onboot = Some(b),
                None => bad("expected yes or no".into()),
            },
            ("com.oracle.linux.network.bootproto", Some(n)) => {
                let p = match v.trim().to_ascii_lowercase().as_str() {
                    "dhcp" | "bootp" => Some(BootProto::Dhcp),
                    "static" => Some(BootProto::Static),
                    "none" | "" => Some(BootProto::None),
                    _ => None,
                };
                match p {
                    Some(p) => devices.entry(n).or_default().1.bootproto = p,
                    None => bad("expected dhcp, static or none".into()),
                }
            }
            ("com.oracle.linux.network.ipaddr", Some(n))
            | ("com.oracle.linux.network.netmask", Some(n))
            | ("com.oracle.linux.network.gateway", Some(n)) => match v.trim().parse::<Ipv4Addr>() {
                Ok(a) => {
                    let d = &mut devices.entry(n).or_default().1;
                    match base.rsplit('.').next() {
                        Some("ipaddr") => d.ipaddr = Some(a),
                        Some("netmask") => d.netmask = Some(a),
                        _ => d.gateway = Some(a),
                    }
                }
                Err(_) => bad("expected an IPv4 address".into()),
            },
            ("com.oracle.linux.network.dns-servers", Some(n)) => {
                let parsed: Result<Vec<IpAddr>, _> = list(v).iter().map(|s| s.parse()).collect();
                match parsed {
                    Ok(s) => devices.entry(n).or_default().1.dns_servers = s,
                    Err(_) => bad("expected comma-separated IP addresses".into()),
                }
            }
            ("com.oracle.linux.network.dns-search-domains", Some(n)) => {
                let l = list(v);
                match l.iter().try_for_each(|d| validate::hostname(d)) {
                    Ok(()) => devices.entry(n).or_default().1.dns_search = l,
                    Err(e) => bad(e),
                }
            }
            ("com.oracle.linux.network.hwaddr", Some(n)) => {
                let mac = v.trim().to_ascii_lowercase();
                match validate::mac(&mac) {
                    Ok(()) => devices.entry(n).or_default().1.hwaddr = Some(mac),
                    Err(e) => bad(e),
                }
            }
            ("com.oracle.linux.datetime.datetime", None) => match parse_datetime(v) {
                Some(dt) => cfg.datetime = Some(dt),
                None => bad("expected year-month-day-hour-minute-second".into()),
            },
            ("com.oracle.linux.datetime.timezone", None) => match validate::timezone(v.trim()) {
                Ok(()) => cfg.timezone = Some(v.trim().to_string()),
                Err(e) => bad(e),
            },
            ("com.oracle.linux.datetime.utc", None) => match parse_bool(v) {
                Some(b) => cfg.utc = Some(b),
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.datetime.ntp", None) => match parse_bool(v) {
                Some(b) => cfg.ntp_enabled = Some(b),
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.datetime.ntp-servers", None) => {
                let l = list(v);
                match l.iter().try_for_each(|s| validate::ntp_server(s)) {
                    Ok(()) => cfg.ntp_servers = Some(l),
                    Err(e) => bad(e),
                }
            }
            (ROOT_PASSWORD, None) => root_pw = Some(v.to_string()),
            ("com.oracle.linux.root-password.crypted", None) => match parse_bool(v) {
                Some(b) => root_crypted = b,
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.selinux.mode", None) => {
                match v.trim().to_ascii_lowercase().as_str() {
                    "enforcing" => cfg.selinux = Some(SelinuxMode::Enforcing),
                    "permissive" => cfg.selinux = Some(SelinuxMode::Permissive),
                    "disabled" => cfg.selinux = Some(SelinuxMode::Disabled),
                    _ => bad("expected enforcing, permissive or disabled".into()),
                }
            }
            ("com.oracle.linux.firewall.enabled", None) => match parse_bool(v) {
                Some(b) => cfg.firewall = Some(b),
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.ssh.regenerate-host-keys", None) => match parse_bool(v) {
                Some(b) => cfg.regenerate_ssh_host_keys = b,
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.user.name", Some(n)) => match validate::account_name(v.trim()) {
                Ok(()) => users.entry(n).or_default().name = Some(v.trim().to_string()),
                Err(e) => bad(e),
            },
            ("com.oracle.linux.user.password", Some(n)) => {
                users.entry(n).or_default().password = Some(v.to_string());
            }
            ("com.oracle.linux.user.password-crypted", Some(n)) => match parse_bool(v) {
                Some(b) => users.entry(n).or_default().crypted = b,
                None => bad("expected True or False".into()),
            },
            ("com.oracle.linux.user.groups", Some(n)) => {
                let l = list(v);
                match l.iter().try_for_each(|g| validate::account_name(g)) {
                    Ok(()) => users.entry(n).or_default().groups = l,
                    Err(e) => bad(e),
                }
            }
            _ => m.unhandled.push(key.to_string()),
        }
    }

    let cfg = &mut m.config;
    cfg.hosts = hosts.into_values().collect();
    for (n, (name, mut dev)) in devices {
        match name {
            Some(name) => {
                dev.name = name;
                cfg.devices.push(dev);
            }
            None => m.invalid.push((
                format!("com.oracle.linux.network.device.{n}"),
                "settings for NIC {n} but no device name".replace("{n}", &n.to_string()),
            )),
        }
    }
    if let Some(pw) = root_pw {
        let check = if root_crypted {
            validate::crypted_password(&pw)
        } else {
            validate::plain_password(&pw)
        };
        match check {
            Ok(()) => {
                cfg.root_password = Some(Password {
                    secret: Secret::new(pw),
                    crypted: root_crypted,
                })
            }
            Err(e) => m.invalid.push((ROOT_PASSWORD.to_string(), e)),
        }
    }
    for (n, u) in users {
        let Some(name) = u.name else {
            m.invalid.push((
                format!("com.oracle.linux.user.name.{n}"),
                format!("settings for user {n} but no name"),
            ));
            continue;
        };
        let password = match u.password {
            None => None,
            Some(p) => {
                let check = if u.crypted {
                    validate::crypted_password(&p)
                } else {
                    validate::plain_password(&p)
                };
                if let Err(e) = check {
                    m.invalid
                        .push((format!("com.oracle.linux.user.password.{n}"), e));
                    continue;
                }
                Some(Password {
                    secret: Secret::new(p),
                    crypted: u.crypted,
                })
            }
        };
        cfg.users.push(UserSpec {
            name,
            password,
            groups: u.groups,
        });
    }
    for key in &m.unhandled {
        tracing::info!(key = %key, "template configuration: key not handled, kept");
    }
    for (key, why) in &m.invalid {
        tracing::warn!(key = %key, reason = %why, "template configuration: value refused");
    }
    m
}

/// One `ovmd --list` line: a compact single-member JSON object, no newline.
pub fn list_line(key: &str, value: &str) -> String {
    let mut obj = serde_json::Map::with_capacity(1);
    obj.insert(
        key.to_string(),
        serde_json::Value::String(value.to_string()),
    );
    serde_json::Value::Object(obj).to_string()
}

/// The pairs in `ovmd --list` format, one object per line, each line ending in `\n`: what
/// `ovm-template-config --stdin configure` reads. A [`Secret`], since it holds the root
/// password.
pub fn render_list<I, K, V>(pairs: I) -> Secret
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&list_line(k.as_ref(), v.as_ref()));
        out.push('\n');
    }
    Secret::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        let known: Vec<String> = KEYS
            .iter()
            .map(|k| {
                if k.indexed {
                    format!("{}.0", k.key)
                } else {
                    k.key.to_string()
                }
            })
            .collect();
        prop_oneof![proptest::sample::select(known), any::<String>()]
    }

    proptest! {
        /// Whatever the manager sends, mapping never panics and nothing with a control
        /// character, quote or `$` reaches a field that ends up in a configuration file.
        #[test]
        fn arbitrary_pairs_are_safe(pairs in proptest::collection::vec((key(), any::<String>()), 0..24)) {
            let m = map_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let c = &m.config;
            let unsafe_chars = |s: &str| s.chars().any(|ch| ch.is_control() || "\"'$`\\ ;".contains(ch));
            let mut fields: Vec<&str> = Vec::new();
            fields.extend(c.hostname.as_deref());
            fields.extend(c.timezone.as_deref());
            for h in &c.hosts { fields.extend(h.names.iter().map(String::as_str)); }
            for d in &c.devices {
                fields.push(&d.name);
                fields.extend(d.dns_search.iter().map(String::as_str));
                fields.extend(d.hwaddr.as_deref());
            }
            for s in c.ntp_servers.iter().flatten() { fields.push(s); }
            for u in &c.users {
                fields.push(&u.name);
                fields.extend(u.groups.iter().map(String::as_str));
            }
            for f in fields {
                prop_assert!(!unsafe_chars(f), "unsafe value reached the config: {f:?}");
            }
            for (k, _) in &m.invalid {
                prop_assert!(pairs.iter().any(|(pk, _)| pk == k) || k.starts_with("com.oracle.linux."));
            }
        }
    }

    #[test]
    fn datetimes() {
        assert_eq!(
            parse_datetime("2011-4-7-9-2-42"),
            DateTime::new(2011, 4, 7, 9, 2, 42)
        );
        assert_eq!(
            parse_datetime("2011-04-07-09-02-42"),
            DateTime::new(2011, 4, 7, 9, 2, 42)
        );
        assert!(parse_datetime("2011-4-7").is_none());
        assert!(parse_datetime("2011-4-31-0-0-0").is_none());
        assert!(parse_datetime("x-4-7-9-2-42").is_none());
    }
}
