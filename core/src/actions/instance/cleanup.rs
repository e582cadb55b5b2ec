//! Template cleanup (`ovmd -s cleanup`): remove what belongs to one instance so that clones of
//! the VM do not share it. What is removed, and why:
//!
//! | what | how | why |
//! |---|---|---|
//! | `/etc/ssh/ssh_host_*` | removed; regeneration at next boot arranged (see [`super::ssh`]) | clones must not share host keys |
//! | `/etc/machine-id` | emptied (systemd makes a new one at boot); `/var/lib/dbus/machine-id` removed when a plain file | journal, DHCP DUID and D-Bus identity |
//! | `/var/lib/systemd/random-seed` | removed | clones must not start from one seed |
//! | DHCP leases | `/var/lib/dhclient/*`, `/var/lib/dhcp/*.leases`, `/var/lib/NetworkManager/*.lease` removed | stale addresses |
//! | udev persistent rules | `/etc/udev/rules.d/70-persistent-net.rules`, `70-persistent-cd.rules` removed | a new MAC would become eth1 |
//! | `HWADDR=` in `ifcfg-*`, `mac-address=` in NetworkManager keyfiles | removed | configuration bound to the template's MAC |
//! | logs | every regular file under `/var/log` emptied, rotated ones (`*.gz`, `*.[0-9]`, `*-YYYYMMDD`, `*.old`) and `/var/log/journal/*` removed | the template's history |
//! | shell history | `/root/.bash_history` and `/home/*/.bash_history` emptied; `.lesshst`, `.viminfo` of root removed | same |
//!
//! Not touched: `/tmp` and `/var/tmp` (running programs keep sockets there), users and
//! passwords, `/etc/resolv.conf`, the package caches. guestd's own ovmd parameter store is
//! cleared by the caller (`ovmd -s cleanup`), which knows where it is.

use std::fs;
use std::io;
use std::path::Path;

use super::fsutil::{read_opt, set_shell_vars, write_atomic};
use super::report::{Module, Report};
use crate::paths::Paths;

/// Remove instance state under `paths`.
pub fn cleanup(paths: &Paths) -> Report {
    let mut r = Report::default();
    let mut keys = Report::default();
    super::ssh::remove_host_keys(paths, &mut keys);
    let removed_keys = !keys.entries.is_empty();
    for e in keys.entries {
        r.entries.push(super::report::Entry {
            module: Module::Cleanup,
            ..e
        });
    }
    if removed_keys || paths.etc("ssh").is_dir() {
        let mut at_boot = Report::default();
        super::ssh::arrange_regeneration_at_boot(paths, &mut at_boot);
        for e in at_boot.entries {
            r.entries.push(super::report::Entry {
                module: Module::Cleanup,
                ..e
            });
        }
    }
    machine_id(paths, &mut r);
    for rel in [
        "var/lib/systemd/random-seed",
        "etc/udev/rules.d/70-persistent-net.rules",
        "etc/udev/rules.d/70-persistent-cd.rules",
    ] {
        remove(paths, rel, &mut r);
    }
    remove_matching(paths, "var/lib/dhclient", |_| true, &mut r);
    remove_matching(
        paths,
        "var/lib/dhcp",
        |n| n.ends_with(".leases") || n.ends_with(".lease"),
        &mut r,
    );
    remove_matching(
        paths,
        "var/lib/NetworkManager",
        |n| n.ends_with(".lease"),
        &mut r,
    );
    unbind_macs(paths, &mut r);
    logs(paths, &mut r);
    history(paths, &mut r);
    r
}

fn rel_display(rel: &str) -> String {
    format!("/{}", rel.trim_start_matches('/'))
}

fn remove(paths: &Paths, rel: &str, r: &mut Report) {
    let p = paths.join(rel);
    match fs::remove_file(&p) {
        Ok(()) => r.applied(Module::Cleanup, format!("removed {}", rel_display(rel))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => r.failed(Module::Cleanup, format!("removed {}", rel_display(rel)), e),
    }
}

fn remove_matching(paths: &Paths, dir: &str, pred: impl Fn(&str) -> bool, r: &mut Report) {
    let Ok(rd) = fs::read_dir(paths.join(dir)) else {
        return;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| pred(n))
        .collect();
    names.sort();
    for n in names {
        remove(paths, &format!("{dir}/{n}"), r);
    }
}

fn machine_id(paths: &Paths, r: &mut Report) {
    let p = paths.etc("machine-id");
    if p.exists() {
        // Empty, not removed: systemd treats an empty file as "generate at boot" and a missing
        // one on a read-only /etc as fatal.
        match write_atomic(&p, b"", 0o444) {
            Ok(()) => r.applied(Module::Cleanup, "emptied /etc/machine-id"),
            Err(e) => r.failed(Module::Cleanup, "emptied /etc/machine-id", e),
        }
    }
    let dbus = paths.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus).is_ok_and(|m| m.is_file()) {
        remove(paths, "var/lib/dbus/machine-id", r);
    }
}

fn unbind_macs(paths: &Paths, r: &mut Report) {
    let dir = paths.etc("sysconfig/network-scripts");
    if let Ok(rd) = fs::read_dir(&dir) {
        let mut files: Vec<_> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ifcfg-"))
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            edit(&f, r, |t| {
                t.lines()
                    .any(|l| l.trim_start().starts_with("HWADDR="))
                    .then(|| set_shell_vars(t, &[("HWADDR", None)]))
            });
        }
    }
    let nm = paths.etc("NetworkManager/system-connections");
    if let Ok(rd) = fs::read_dir(&nm) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            edit(&f, r, |t| {
                t.lines()
                    .any(|l| l.trim_start().starts_with("mac-address="))
                    .then(|| {
                        let mut s: String = t
                            .lines()
                            .filter(|l| !l.trim_start().starts_with("mac-address="))
                            .collect::<Vec<_>>()
                            .join("\n");
                        s.push('\n');
                        s
                    })
            });
        }
    }
}

fn edit(f: &Path, r: &mut Report, change: impl FnOnce(&str) -> Option<String>) {
    let item = format!(
        "unbound MAC in {}",
        f.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    );
    match read_opt(f) {
        Ok(Some(t)) => {
            if let Some(new) = change(&t) {
                match write_atomic(f, new.as_bytes(), 0o644) {
                    Ok(()) => r.applied(Module::Cleanup, item),
                    Err(e) => r.failed(Module::Cleanup, item, e),
                }
            }
        }
        Ok(None) => {}
        Err(e) => r.failed(Module::Cleanup, item, e),
    }
}

fn rotated(name: &str) -> bool {
    if name.ends_with(".gz")
        || name.ends_with(".xz")
        || name.ends_with(".bz2")
        || name.ends_with(".old")
    {
        return true;
    }
    if let Some((_, ext)) = name.rsplit_once('.')
        && !ext.is_empty()
        && ext.bytes().all(|b| b.is_ascii_digit())
    {
        return true;
    }
    if let Some((_, date)) = name.rsplit_once('-')
        && date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
    {
        return true;
    }
    false
}

fn logs(paths: &Paths, r: &mut Report) {
    let root = paths.join("var/log");
    if !root.is_dir() {
        return;
    }
    let (mut emptied, mut removed, mut failed) = (0u32, 0u32, Vec::new());
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if t.is_dir() {
                if dir == root && name == "journal" {
                    match fs::read_dir(&p) {
                        Ok(j) => {
                            for sub in j.flatten() {
                                let sp = sub.path();
                                let res = if sub.file_type().is_ok_and(|t| t.is_dir()) {
                                    fs::remove_dir_all(&sp)
                                } else {
                                    fs::remove_file(&sp)
                                };
                                match res {
                                    Ok(()) => removed += 1,
                                    Err(e) => failed.push(format!("{}: {e}", sp.display())),
                                }
                            }
                        }
                        Err(e) => failed.push(format!("{}: {e}", p.display())),
                    }
                } else {
                    stack.push(p);
                }
            } else if t.is_file() {
                if rotated(&name) {
                    match fs::remove_file(&p) {
                        Ok(()) => removed += 1,
                        Err(e) => failed.push(format!("{}: {e}", p.display())),
                    }
                } else {
                    match fs::OpenOptions::new().write(true).truncate(true).open(&p) {
                        Ok(_) => emptied += 1,
                        Err(e) => failed.push(format!("{}: {e}", p.display())),
                    }
                }
            }
        }
    }
    r.applied(
        Module::Cleanup,
        format!("/var/log: {emptied} files emptied, {removed} removed"),
    );
    if !failed.is_empty() {
        r.failed(Module::Cleanup, "/var/log", failed.join("; "));
    }
}

fn history(paths: &Paths, r: &mut Report) {
    let mut homes = vec![paths.join("root")];
    if let Ok(rd) = fs::read_dir(paths.join("home")) {
        homes.extend(rd.flatten().map(|e| e.path()));
    }
    for h in homes {
        let shown = format!("/{}", h.strip_prefix(paths.root()).unwrap_or(&h).display());
        let hist = h.join(".bash_history");
        if fs::symlink_metadata(&hist).is_ok_and(|m| m.is_file()) {
            match fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&hist)
            {
                Ok(_) => r.applied(Module::Cleanup, format!("emptied {shown}/.bash_history")),
                Err(e) => r.failed(Module::Cleanup, format!("emptied {shown}/.bash_history"), e),
            }
        }
    }
    for rel in ["root/.lesshst", "root/.viminfo", "root/.python_history"] {
        remove(paths, rel, r);
    }
}

#[cfg(test)]
mod tests {
    use super::rotated;

    #[test]
    fn rotated_names() {
        for n in ["syslog.1", "messages-20240101", "dpkg.log.2.gz", "x.old"] {
            assert!(rotated(n), "{n}");
        }
        for n in ["syslog", "messages", "dpkg.log", "boot.log"] {
            assert!(!rotated(n), "{n}");
        }
    }
}
