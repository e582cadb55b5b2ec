//! A host-side checker of agent lines, written from `../shared/protocols/ovirt.md` (§2, §3.2,
//! §3.3, §4.1) and not from guestd's encoder: what VDSM requires to not lose a line or a
//! chunk, plus the field lists and types the note gives for every message.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

/// Lines VDSM always accepts are below 1 MiB; guestd promises 512 KiB.
pub const MAX_LINE: usize = 512 * 1024;

/// The first API version at which the old agent sent each message (§3.1); `None`: a name
/// VDSM does not know.
pub fn min_version(name: &str) -> Option<u8> {
    Some(match name {
        "heartbeat" | "host-name" | "os-version" | "network-interfaces" | "applications"
        | "fqdn" | "active-user" | "disks-usage" | "session-startup" | "session-shutdown"
        | "session-lock" | "session-unlock" | "session-logon" | "session-logoff" | "echo"
        | "memory-stats" | "uninstalled" => 0,
        "number-of-cpus" => 1,
        "os-info" | "timezone" => 2,
        "containers" | "completion" => 3,
        _ => return None,
    })
}

/// Checks a stream of agent lines for one host connection.
#[derive(Debug, Default)]
pub struct Checker {
    /// The API version the agent may use (granted by `api-version`).
    pub version: u8,
    /// `reply_id`s of `lifecycle-event`s sent and not yet completed (as JSON text).
    pub awaiting: HashSet<String>,
}

impl Checker {
    /// A checker for an agent at `version`.
    pub fn at(version: u8) -> Self {
        Self {
            version,
            awaiting: HashSet::new(),
        }
    }

    /// Check one line as read from the channel, *without* its `\n`.
    pub fn check_line(&mut self, line: &[u8]) -> Result<Value, String> {
        if line.len() + 1 > MAX_LINE {
            return Err(format!("line of {} bytes", line.len()));
        }
        if line.is_empty() || line.iter().all(u8::is_ascii_whitespace) {
            return Err("blank line".into());
        }
        if line.starts_with(b"\xEF\xBB\xBF") {
            return Err("byte order mark".into());
        }
        let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}: {text}"))?;
        let name = v
            .get("__name__")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string __name__: {text}"))?
            .to_owned();
        let min = min_version(&name).ok_or_else(|| format!("unknown message {name}"))?;
        if name == "completion" {
            let id = v
                .get("reply_id")
                .map(Value::to_string)
                .ok_or_else(|| format!("completion without reply_id: {text}"))?;
            if !self.awaiting.remove(&id) && min > self.version {
                return Err(format!(
                    "unsolicited completion at version {}",
                    self.version
                ));
            }
        } else if min > self.version {
            return Err(format!(
                "{name} needs API version {min}, agent is at {}: {text}",
                self.version
            ));
        }
        check_message(&v).map_err(|e| format!("{e}: {text}"))?;
        Ok(v)
    }
}

/// Check one decoded message's fields and types.
pub fn check_message(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    check_strings(v)?;
    let name = o
        .get("__name__")
        .and_then(Value::as_str)
        .ok_or("no __name__")?;
    match name {
        "heartbeat" => {
            // VDSM: int(args['free-ram']): int, float or an integer string; never null.
            match o.get("free-ram") {
                Some(Value::Number(_)) => {}
                Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {}
                other => return Err(format!("free-ram {other:?}")),
            }
            // guestd's promise beyond VDSM: an integer number of MiB.
            uint(o, "free-ram")?;
            if let Some(ms) = o.get("memory-stat") {
                let ms = ms.as_object().ok_or("memory-stat not an object")?;
                for k in [
                    "mem_total",
                    "mem_free",
                    "mem_unused",
                    "mem_buffers",
                    "mem_cached",
                    "swap_in",
                    "swap_out",
                    "pageflt",
                    "majflt",
                    "swap_usage",
                    "swap_total",
                ] {
                    uint(ms, k)?;
                }
            }
            if let Some(a) = o.get("apiVersion") {
                let a = a.as_u64().ok_or(format!("apiVersion {a}"))?;
                // The agent's own maximum is 3; the first heartbeat says 0 (§4.2).
                if a != 0 && a != 3 {
                    return Err(format!("apiVersion {a}"));
                }
            }
        }
        "host-name" | "active-user" => string(o, "name")?,
        "os-version" => string(o, "version")?,
        "fqdn" => string(o, "fqdn")?,
        "network-interfaces" => {
            let list = o
                .get("interfaces")
                .and_then(Value::as_array)
                .ok_or("interfaces not a list")?;
            for i in list {
                let i = i.as_object().ok_or("interface not an object")?;
                string(i, "name")?;
                let hw = i.get("hw").and_then(Value::as_str).ok_or("hw")?;
                // Colon-separated lowercase hex octets (6 for Ethernet, 20 for InfiniBand).
                let octets: Vec<&str> = hw.split(':').collect();
                if octets.len() < 6
                    || octets
                        .iter()
                        .any(|x| x.len() != 2 || u8::from_str_radix(x, 16).is_err())
                    || hw != hw.to_ascii_lowercase()
                {
                    return Err(format!("hw {hw}"));
                }
                for (k, v6) in [("inet", false), ("inet6", true)] {
                    if let Some(l) = i.get(k) {
                        for a in l.as_array().ok_or(format!("{k} not a list"))? {
                            let a = a.as_str().ok_or(format!("{k} entry {a}"))?;
                            let ok = if v6 {
                                a.parse::<Ipv6Addr>().is_ok()
                            } else {
                                a.parse::<Ipv4Addr>().is_ok()
                            };
                            if !ok {
                                return Err(format!("{k} entry {a}"));
                            }
                        }
                    }
                }
            }
        }
        "applications" => {
            for a in o
                .get("applications")
                .and_then(Value::as_array)
                .ok_or("applications not a list")?
            {
                a.as_str().ok_or(format!("application {a}"))?;
            }
        }
        "disks-usage" => {
            for d in o
                .get("disks")
                .and_then(Value::as_array)
                .ok_or("disks not a list")?
            {
                let d = d.as_object().ok_or("disk not an object")?;
                string(d, "path")?;
                string(d, "fs")?;
                let total = uint(d, "total")?;
                let used = uint(d, "used")?;
                if used > total {
                    return Err(format!("used {used} > total {total}"));
                }
            }
            if let Some(m) = o.get("mapping") {
                for (_, dev) in m.as_object().ok_or("mapping not an object")? {
                    let dev = dev.as_object().ok_or("mapping value not an object")?;
                    string(dev, "name")?;
                }
            }
        }
        "number-of-cpus" => {
            let c = o.get("count").ok_or("no count")?;
            let n = c.as_i64().ok_or(format!("count {c}"))?;
            if n < 1 && n != -1 {
                return Err(format!("count {n}"));
            }
        }
        "os-info" => {
            for k in [
                "version",
                "distribution",
                "codename",
                "arch",
                "type",
                "kernel",
            ] {
                string(o, k)?;
            }
            for k in ["arch", "version", "type"] {
                if o[k].as_str().is_some_and(str::is_empty) {
                    return Err(format!("empty {k}"));
                }
            }
            let arch = o["arch"].as_str().unwrap_or_default();
            if ["i386", "i486", "i586", "i686"].contains(&arch) {
                return Err(format!("arch {arch} should be x86"));
            }
        }
        "timezone" => {
            string(o, "zone")?;
            let off = o
                .get("offset")
                .and_then(Value::as_i64)
                .ok_or("offset not an integer")?;
            if !(-14 * 60..=14 * 60).contains(&off) {
                return Err(format!("offset {off}"));
            }
        }
        "containers" => {
            for c in o
                .get("list")
                .and_then(Value::as_array)
                .ok_or("list not a list")?
            {
                let c = c.as_object().ok_or("container not an object")?;
                for k in ["id", "image", "command", "status"] {
                    string(c, k)?;
                }
                for n in c
                    .get("names")
                    .and_then(Value::as_array)
                    .ok_or("names not a list")?
                {
                    n.as_str().ok_or("name not a string")?;
                }
            }
        }
        "completion" => {
            if o.get("reply_id").is_none() {
                return Err("no reply_id".into());
            }
            if let Some(d) = o.get("done") {
                d.as_bool().ok_or("done not a boolean")?;
            }
        }
        "session-startup" | "session-shutdown" | "session-lock" | "session-unlock"
        | "session-logon" | "session-logoff" | "uninstalled" => {
            if o.len() != 1 {
                return Err(format!("{name} carries arguments"));
            }
        }
        "echo" | "memory-stats" => {}
        other => return Err(format!("unknown message {other}")),
    }
    Ok(())
}

fn string(o: &Map<String, Value>, k: &str) -> Result<(), String> {
    match o.get(k) {
        Some(Value::String(_)) => Ok(()),
        other => Err(format!("{k}: {other:?} is not a string")),
    }
}

fn uint(o: &Map<String, Value>, k: &str) -> Result<u64, String> {
    o.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{k}: {:?} is not a non-negative integer", o.get(k)))
}

/// Every string, key or value, is free of the characters VDSM's XML filter replaces (§2.1).
fn check_strings(v: &Value) -> Result<(), String> {
    fn bad(s: &str) -> Option<char> {
        s.chars().find(|&c| {
            matches!(c as u32,
                0x00..=0x08 | 0x0B..=0x0C | 0x0E..=0x1F | 0x7F..=0x84 | 0x86..=0x9F
                | 0xD800..=0xDFFF | 0xFFFE..=0xFFFF)
        })
    }
    match v {
        Value::String(s) => match bad(s) {
            Some(c) => Err(format!("character U+{:04X} in {s:?}", c as u32)),
            None => Ok(()),
        },
        Value::Array(a) => a.iter().try_for_each(check_strings),
        Value::Object(o) => o.iter().try_for_each(|(k, v)| {
            if let Some(c) = bad(k) {
                return Err(format!("character U+{:04X} in key {k:?}", c as u32));
            }
            check_strings(v)
        }),
        _ => Ok(()),
    }
}

#[test]
fn checker_rejects_what_vdsm_would_choke_on() {
    let mut c = Checker::at(0);
    assert!(c.check_line(b"").is_err());
    assert!(
        c.check_line(b"\xEF\xBB\xBF{\"__name__\":\"echo\"}")
            .is_err()
    );
    assert!(
        c.check_line(br#"{"__name__":"heartbeat","free-ram":null}"#)
            .is_err()
    );
    assert!(
        c.check_line(br#"{"__name__":"heartbeat","free-ram":"12.5"}"#)
            .is_err()
    );
    assert!(c.check_line(br#"{"__name__":"host-name"}"#).is_err());
    assert!(
        c.check_line(br#"{"__name__":"applications","applications":"abc"}"#)
            .is_err()
    );
    assert!(
        c.check_line(br#"{"__name__":"timezone","zone":"UTC","offset":0}"#)
            .is_err()
    );
    assert!(
        c.check_line(br#"{"__name__":"completion","reply_id":"x"}"#)
            .is_err()
    );
    assert!(c.check_line(br#"{"__name__":"bogus"}"#).is_err());
    assert!(
        c.check_line(br#"{"__name__":"active-user","name":"a\u0001"}"#)
            .is_err()
    );
    // The note's own examples pass.
    c.version = 3;
    for ex in [
        r#"{"__name__": "heartbeat", "free-ram": 2871, "memory-stat": {"mem_total": 8008052, "mem_free": 2940124, "mem_unused": 1312400, "mem_buffers": 4176, "mem_cached": 1623548, "swap_in": 0, "swap_out": 0, "pageflt": 88, "majflt": 0, "swap_usage": 0, "swap_total": 4194300}, "apiVersion": 3}"#,
        r#"{"__name__": "network-interfaces", "interfaces": [{"name": "ens3", "hw": "52:54:00:12:34:56", "inet": ["198.51.100.7"], "inet6": ["2001:db8:5::7", "fe80::5054:ff:fe12:3456"]}]}"#,
        r#"{"__name__": "disks-usage", "disks": [{"path": "/", "fs": "ext4", "total": 32107536384, "used": 7516192768}], "mapping": {"a1b2c3d4-e5f6-4a7b-8": {"name": "/dev/vda"}}}"#,
        r#"{"__name__": "os-info", "version": "12", "distribution": "Debian GNU/Linux", "codename": "bookworm", "arch": "x86_64", "type": "linux", "kernel": "6.1.0-18-amd64"}"#,
        r#"{"__name__": "timezone", "zone": "America/New_York", "offset": -300}"#,
        r#"{"__name__": "containers", "list": [{"id": "9c1e04b2aa70", "names": ["/cache"], "image": "redis:7", "command": "docker-entrypoint.sh redis-server", "status": "Up 3 days"}]}"#,
        r#"{"__name__": "number-of-cpus", "count": 4}"#,
    ] {
        c.check_line(ex.as_bytes()).unwrap();
    }
}
