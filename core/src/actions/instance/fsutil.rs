//! File helpers shared by the modules: atomic replace that keeps owner, mode and SELinux label,
//! shell-variable files (sysconfig, ifcfg), and systemd unit enablement done the way
//! `systemctl --root` does it (symlinks), so it works on a root that is not running.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::paths::Paths;

/// Read a file, `None` when it does not exist.
pub fn read_opt(path: &Path) -> io::Result<Option<String>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replace `path` with `contents` atomically: a temporary file in the same directory, written,
/// given the old file's mode, owner and SELinux label (or `mode` for a new file), fsynced,
/// renamed over the old one, and the directory fsynced. Missing parent directories are created
/// (0755). A crash leaves either the old or the new file, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let old = fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".guestd-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        let perm_mode = old.as_ref().map_or(mode, |m| m.mode() & 0o7777);
        if let Some(m) = &old {
            // Best effort: only root may give a file away, and tests run as anyone.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
            copy_selinux_label(path, &tmp);
        }
        f.set_permissions(fs::Permissions::from_mode(perm_mode))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync a directory so a rename in it is durable; errors are not fatal (some filesystems
/// refuse to fsync directories).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

const SELINUX_XATTR: &[u8] = b"security.selinux\0";

/// Give `to` the SELinux label of `from`, so that a replaced `/etc/shadow` keeps `shadow_t`
/// instead of inheriting `etc_t` from its temporary file. Silently does nothing where there
/// are no labels.
fn copy_selinux_label(from: &Path, to: &Path) {
    let (Ok(from_c), Ok(to_c)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return;
    };
    let mut buf = [0u8; 512];
    // SAFETY: both paths are NUL-terminated C strings that live across the call, the name is a
    // NUL-terminated static, and `buf` is writable for the length passed.
    let n = unsafe {
        libc::lgetxattr(
            from_c.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Ok(n) = usize::try_from(n) else {
        return;
    };
    // SAFETY: as above; `buf[..n]` was filled by lgetxattr.
    unsafe {
        libc::lsetxattr(
            to_c.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            buf.as_ptr().cast(),
            n,
            0,
        );
    }
}

/// Remove surrounding shell quotes of a simple value (`"x"`, `'x'`), undoing `\"`, `\\`, `\$`
/// and `` \` `` inside double quotes.
pub fn unquote_shell(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_string()
}

/// Quote a value for a shell-sourced file: bare when it is made of safe characters, else in
/// double quotes with `"`, `\`, `$` and `` ` `` escaped.
pub fn quote_shell(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:,+-@%".contains(&b))
    {
        return v.to_string();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The value of `key` in shell-variable text (the last assignment wins, as when sourced).
pub fn get_shell_var(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let l = line.trim_start();
        let l = l.strip_prefix("export ").unwrap_or(l);
        if let Some((k, v)) = l.split_once('=')
            && k == key
        {
            found = Some(unquote_shell(v));
        }
    }
    found
}

/// Set `KEY=value` assignments in shell-variable text: the first assignment of each key is
/// replaced in place, later ones removed, missing keys appended; comments and other lines stay.
/// A `None` value removes the key.
pub fn set_shell_vars(text: &str, vars: &[(&str, Option<&str>)]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut done = vec![false; vars.len()];
    for line in text.lines() {
        let l = line.trim_start();
        let l = l.strip_prefix("export ").unwrap_or(l);
        let hit = l
            .split_once('=')
            .and_then(|(k, _)| vars.iter().position(|(key, _)| *key == k));
        match hit {
            Some(i) => {
                if !done[i] {
                    done[i] = true;
                    if let Some(v) = vars[i].1 {
                        out.push_str(&format!("{}={}\n", vars[i].0, quote_shell(v)));
                    }
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in vars.iter().enumerate() {
        if let (false, Some(v)) = (done[i], v) {
            out.push_str(&format!("{k}={}\n", quote_shell(v)));
        }
    }
    out
}

/// Edit a shell-variable file in place (atomically), creating it with `mode` if missing.
pub fn edit_shell_file(path: &Path, vars: &[(&str, Option<&str>)], mode: u32) -> io::Result<()> {
    let old = read_opt(path)?.unwrap_or_default();
    let new = set_shell_vars(&old, vars);
    if new != old || !path.exists() {
        write_atomic(path, new.as_bytes(), mode)?;
    }
    Ok(())
}

/// Where unit files live, most specific first.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The unit file of `unit` under the root, if installed.
pub fn find_unit(paths: &Paths, unit: &str) -> Option<PathBuf> {
    UNIT_DIRS
        .iter()
        .map(|d| paths.join(d).join(unit))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file() || m.is_symlink()))
}

/// True when `unit` is installed under the root.
pub fn unit_installed(paths: &Paths, unit: &str) -> bool {
    find_unit(paths, unit).is_some()
}

struct InstallSection {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
}

fn install_section(text: &str) -> InstallSection {
    let mut s = InstallSection {
        wanted_by: vec![],
        required_by: vec![],
        alias: vec![],
    };
    let mut in_install = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let list: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            match k.trim() {
                "WantedBy" => s.wanted_by.extend(list),
                "RequiredBy" => s.required_by.extend(list),
                "Alias" => s.alias.extend(list),
                _ => {}
            }
        }
    }
    s
}

/// Follow symlinks of `p` inside the root: an absolute target means `<root>/<target>`, not the
/// host's file. Gives up after 16 hops and returns the last path.
pub fn resolve_in_root(paths: &Paths, p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    for _ in 0..16 {
        let Ok(target) = fs::read_link(&cur) else {
            return cur;
        };
        cur = if target.is_absolute() {
            paths.join(&target)
        } else {
            cur.parent().map_or(target.clone(), |d| d.join(&target))
        };
    }
    cur
}

/// Path of the unit file as seen from inside the root (`/usr/lib/systemd/system/x.service`).
fn inside(paths: &Paths, p: &Path) -> PathBuf {
    Path::new("/").join(p.strip_prefix(paths.root()).unwrap_or(p))
}

/// Enable `unit` as `systemctl --root=<root> enable` would: a symlink per `WantedBy=` in
/// `/etc/systemd/system/<target>.wants/` (`.requires/` for `RequiredBy=`) and one per
/// `Alias=`, all pointing at the unit file. Returns `Ok(false)` when the unit is not installed.
pub fn enable_unit(paths: &Paths, unit: &str) -> io::Result<bool> {
    let Some(file) = find_unit(paths, unit) else {
        return Ok(false);
    };
    let real = resolve_in_root(paths, &file);
    let text = fs::read_to_string(&real)?;
    let target = inside(paths, &real);
    let install = install_section(&text);
    let etc = paths.join("etc/systemd/system");
    let mut links: Vec<PathBuf> = Vec::new();
    for t in &install.wanted_by {
        links.push(etc.join(format!("{t}.wants")).join(unit));
    }
    for t in &install.required_by {
        links.push(etc.join(format!("{t}.requires")).join(unit));
    }
    for a in &install.alias {
        links.push(etc.join(a));
    }
    for link in links {
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(true)
}

/// Disable `unit` as `systemctl --root=<root> disable` would: remove every symlink under
/// `/etc/systemd/system` (one level of `*.wants`/`*.requires` directories) named `unit` or
/// one of its aliases. Returns `Ok(false)` when the unit is not installed.
pub fn disable_unit(paths: &Paths, unit: &str) -> io::Result<bool> {
    let Some(file) = find_unit(paths, unit) else {
        return Ok(false);
    };
    let real = resolve_in_root(paths, &file);
    let text = fs::read_to_string(&real).unwrap_or_default();
    let install = install_section(&text);
    let mut names = vec![unit.to_string()];
    names.extend(install.alias.iter().cloned());
    let etc = paths.join("etc/systemd/system");
    let mut dirs = vec![etc.clone()];
    if let Ok(rd) = fs::read_dir(&etc) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if (n.ends_with(".wants") || n.ends_with(".requires"))
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                dirs.push(e.path());
            }
        }
    }
    for d in dirs {
        for n in &names {
            let p = d.join(n);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_symlink()) {
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(true)
}

/// True when `unit` has a symlink in some `*.wants`/`*.requires` directory of the root.
pub fn unit_enabled(paths: &Paths, unit: &str) -> bool {
    let etc = paths.join("etc/systemd/system");
    let Ok(rd) = fs::read_dir(&etc) else {
        return false;
    };
    rd.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        (n.ends_with(".wants") || n.ends_with(".requires"))
            && fs::symlink_metadata(e.path().join(unit)).is_ok()
    })
}

/// A program inside the root (`usr/bin/ssh-keygen`, ...), found in the usual directories.
pub fn find_program(paths: &Paths, name: &str) -> Option<PathBuf> {
    [
        "usr/bin",
        "usr/sbin",
        "bin",
        "sbin",
        "usr/local/bin",
        "usr/local/sbin",
    ]
    .iter()
    .map(|d| paths.join(d).join(name))
    .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_vars_roundtrip() {
        let text = "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\nSELINUX=permissive\n";
        let out = set_shell_vars(text, &[("SELINUX", Some("disabled")), ("NEW", Some("a b"))]);
        assert_eq!(
            out,
            "# comment\nSELINUX=disabled\nSELINUXTYPE=targeted\nNEW=\"a b\"\n"
        );
        assert_eq!(get_shell_var(&out, "NEW").as_deref(), Some("a b"));
        assert_eq!(get_shell_var(&out, "SELINUX").as_deref(), Some("disabled"));
        let removed = set_shell_vars(&out, &[("NEW", None)]);
        assert!(!removed.contains("NEW"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_shell("eth0"), "eth0");
        assert_eq!(quote_shell("a\"b$c"), "\"a\\\"b\\$c\"");
        assert_eq!(unquote_shell("\"a\\\"b\\$c\""), "a\"b$c");
        assert_eq!(quote_shell(""), "\"\"");
    }

    #[test]
    fn atomic_write_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let q = d.path().join("sub/g");
        write_atomic(&q, b"x", 0o600).unwrap();
        assert_eq!(fs::metadata(&q).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2, "no temp left");
    }
}
