//! Host name and fully qualified domain name.

use guestd_core::Paths;
use guestd_core::contract::FactError;

use crate::util;

/// The kernel's node name as set (`proc/sys/kernel/hostname`, else `etc/hostname` for trees
/// that are not running).
pub fn node_name(paths: &Paths) -> Result<String, FactError> {
    let kernel = paths.proc("sys/kernel/hostname");
    if let Some(name) = util::attr(&kernel) {
        return Ok(name);
    }
    let etc = paths.etc("hostname");
    match util::read_opt(&etc)? {
        Some(text) => text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| util::parse_err(&etc, "empty")),
        None => Err(FactError::Unavailable(format!(
            "no host name: neither {} nor {} exists",
            kernel.display(),
            etc.display()
        ))),
    }
}

/// The short host name: the node name up to its first dot.
pub fn hostname(paths: &Paths) -> Result<String, FactError> {
    Ok(short(&node_name(paths)?))
}

fn short(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_owned()
}

/// The fully qualified name. A node name with a dot already is one. Otherwise, on the running
/// system, the resolver's canonical name (`hostname -f` does the same), else the first name
/// with a dot on the host's line of `etc/hosts`, else the node name.
pub fn fqdn(paths: &Paths) -> Result<String, FactError> {
    let name = node_name(paths)?;
    if name.contains('.') {
        return Ok(name);
    }
    if paths.is_system()
        && let Some(canon) = canonical_name(&name)
    {
        return Ok(canon);
    }
    let hosts = util::read_opt(&paths.etc("hosts"))?.unwrap_or_default();
    Ok(fqdn_from_hosts(&hosts, &name).unwrap_or(name))
}

/// Looks `name` up in an `/etc/hosts` text: the line naming it gives its canonical name (the
/// first) when that, or an alias of the form `name.domain`, has a dot.
pub fn fqdn_from_hosts(hosts: &str, name: &str) -> Option<String> {
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(_addr) = words.next() else { continue };
        let names: Vec<&str> = words.collect();
        let hit = names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name) || short(n).eq_ignore_ascii_case(name));
        if !hit {
            continue;
        }
        if let Some(first) = names.first().filter(|n| n.contains('.')) {
            return Some((*first).to_owned());
        }
        let prefix = format!("{name}.");
        if let Some(long) = names.iter().find(|n| n.starts_with(&prefix)) {
            return Some((*long).to_owned());
        }
    }
    None
}

/// `getaddrinfo(name, AI_CANONNAME)`, as `hostname -f` does: honours nsswitch, /etc/hosts and
/// DNS. glibc's and musl's resolvers both provide it, so static builds keep it. It may block
/// on DNS: callers run it off the runtime with a deadline.
fn canonical_name(name: &str) -> Option<String> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; we then set plain fields.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `cname` is a valid C string, `hints` a valid addrinfo, `res` a valid out pointer.
    let rc = unsafe { libc::getaddrinfo(cname.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo succeeded, so `res` points to a list it allocated; the canonical
    // name, when set, is a NUL-terminated string owned by the first entry.
    let canon = unsafe {
        let p = (*res).ai_canonname;
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    // SAFETY: `res` came from getaddrinfo and is freed exactly once.
    unsafe { libc::freeaddrinfo(res) };
    canon.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lookup() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.1 web.example.org web\n\
                     127.0.1.1\tguest.example.com guest # ours\n10.1.1.1 db db.lan\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "guest").as_deref(),
            Some("guest.example.com")
        );
        assert_eq!(fqdn_from_hosts(hosts, "db").as_deref(), Some("db.lan"));
        assert_eq!(fqdn_from_hosts(hosts, "web"), None);
        assert_eq!(fqdn_from_hosts(hosts, "localhost"), None);
    }

    #[test]
    fn from_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::under(dir.path());
        assert!(matches!(hostname(&p), Err(FactError::Unavailable(_))));
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/hostname"),
            "# set by installer\nguest\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/hosts"),
            "127.0.1.1 guest.example.com guest\n",
        )
        .unwrap();
        assert_eq!(hostname(&p).unwrap(), "guest");
        assert_eq!(fqdn(&p).unwrap(), "guest.example.com");
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            dir.path().join("proc/sys/kernel/hostname"),
            "node.corp.lan\n",
        )
        .unwrap();
        assert_eq!(hostname(&p).unwrap(), "node");
        assert_eq!(fqdn(&p).unwrap(), "node.corp.lan");
    }
}
