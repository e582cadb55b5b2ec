//! Checks on every value that ends up in a configuration file. Values come from the manager and
//! are written into shell-sourced files (ifcfg, sysconfig) and line-oriented files (passwd,
//! hosts, chrony.conf): a newline, quote or `$` would let a value become configuration of its
//! own, so anything outside a narrow alphabet is refused.

/// A host name or FQDN: RFC 1123 labels of `A-Za-z0-9-`, 1-63 bytes each, 253 in all.
pub fn hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("host name must be 1 to 253 characters".into());
    }
    for label in s.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("host name has an empty or over-long label".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("host name label starts or ends with '-'".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("host name may contain only letters, digits, '-' and '.'".into());
        }
    }
    Ok(())
}

/// A time zone name as found under `/usr/share/zoneinfo` (`Europe/Paris`, `UTC`, `Etc/GMT+5`).
pub fn timezone(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 || s.starts_with('/') || s.ends_with('/') {
        return Err("time zone must be a relative zoneinfo name".into());
    }
    if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("time zone has an empty, '.' or '..' component".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
    {
        return Err("time zone may contain only letters, digits and / _ - +".into());
    }
    Ok(())
}

/// A network interface name: what the kernel accepts (1-15 bytes, no '/', no space), further
/// restricted to `A-Za-z0-9_.-` because it becomes part of file names and shell values.
pub fn ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 || s == "." || s == ".." {
        return Err("device name must be 1 to 15 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("device name may contain only letters, digits and _ . -".into());
    }
    Ok(())
}

/// A user or group name as shadow-utils accepts by default: `[a-z_][a-z0-9_-]*[$]?`, at most
/// 32 bytes.
pub fn account_name(s: &str) -> Result<(), String> {
    let body = s.strip_suffix('$').unwrap_or(s);
    let mut bytes = body.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok
        || s.len() > 32
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("account name must match [a-z_][a-z0-9_-]*[$]? and be at most 32 bytes".into());
    }
    Ok(())
}

/// A crypt(3) hash that can be stored in the password field of shadow: no `:` or newline, and
/// of a known form (`$id$...`, or the traditional 13-character DES form).
pub fn crypted_password(s: &str) -> Result<(), String> {
    if s.bytes()
        .any(|b| b == b':' || b.is_ascii_control() || b == b' ')
    {
        return Err("crypted password contains ':', a space or a control character".into());
    }
    let known_prefix = [
        "$1$", "$2a$", "$2b$", "$2y$", "$5$", "$6$", "$y$", "$7$", "$gy$",
    ];
    if known_prefix.iter().any(|p| s.starts_with(p)) && s.len() > 8 {
        return Ok(());
    }
    if s.len() == 13
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Ok(());
    }
    Err("not a crypt(3) hash of a known form".into())
}

/// A plain password to hash: anything but NUL (crypt(3) stops there) and at most 4096 bytes.
pub fn plain_password(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("password contains a NUL byte".into());
    }
    if s.len() > 4096 {
        return Err("password longer than 4096 bytes".into());
    }
    Ok(())
}

/// An NTP server: a host name or an IP address.
pub fn ntp_server(s: &str) -> Result<(), String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    hostname(s)
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err("MAC address must be six ':'-separated hex pairs".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(hostname("db01").is_ok());
        assert!(hostname("db01.example.com").is_ok());
        assert!(hostname("").is_err());
        assert!(hostname("a b").is_err());
        assert!(hostname("x\nDNS1=1.2.3.4").is_err());
        assert!(hostname("-a").is_err());
        assert!(hostname(&"a".repeat(64)).is_err());
    }

    #[test]
    fn timezones() {
        assert!(timezone("America/New_York").is_ok());
        assert!(timezone("Etc/GMT+5").is_ok());
        assert!(timezone("UTC").is_ok());
        assert!(timezone("../../etc/shadow").is_err());
        assert!(timezone("/etc/passwd").is_err());
        assert!(timezone("Europe/Paris\n").is_err());
    }

    #[test]
    fn names() {
        assert!(ifname("eth0").is_ok());
        assert!(ifname("enp0s3").is_ok());
        assert!(ifname("eth0/../x").is_err());
        assert!(ifname("averyveryverylongname").is_err());
        assert!(account_name("alice").is_ok());
        assert!(account_name("_svc-1").is_ok());
        assert!(account_name("host$").is_ok());
        assert!(account_name("Alice").is_err());
        assert!(account_name("a:b").is_err());
        assert!(account_name("").is_err());
    }

    #[test]
    fn crypted() {
        assert!(crypted_password("$6$salt$abcdefghijklmnop").is_ok());
        assert!(crypted_password("$6$salt$abc:def").is_err());
        assert!(crypted_password("plaintext").is_err());
        assert!(crypted_password("abcdefghijklm").is_ok());
    }

    #[test]
    fn macs() {
        assert!(mac("52:54:00:12:34:56").is_ok());
        assert!(mac("52:54:00:12:34").is_err());
    }
}
