//! The ssh module: new host keys for a new instance.
//!
//! The old keys (`/etc/ssh/ssh_host_*`, certificates included) are removed, then new ones are
//! made at once with `ssh-keygen -A -f <root>` when the root has `ssh-keygen`. Otherwise the
//! next boot makes them: Red Hat's `sshd-keygen` units already do; elsewhere guestd installs
//! and enables its own one-shot unit, `guestd-ssh-keygen.service`, ordered before the ssh
//! daemon (Debian's `ssh.service` refuses to start without keys and regenerates none).

use std::fs;
use std::io;

use super::InstanceConfig;
use super::delegate::run;
use super::fsutil::{enable_unit, find_program, unit_installed, write_atomic};
use super::report::{Module, Report};
use crate::paths::Paths;

/// The unit guestd installs where the distribution has no key generation at boot.
pub const REGEN_UNIT: &str = "guestd-ssh-keygen.service";

const REGEN_UNIT_TEXT: &str = "\
[Unit]
Description=Generate missing ssh host keys (guestd first-boot configuration)
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

/// Regenerate host keys when asked.
pub fn configure(cfg: &InstanceConfig, paths: &Paths, report: &mut Report) {
    if !cfg.regenerate_ssh_host_keys {
        return;
    }
    if !paths.etc("ssh").is_dir() {
        report.skipped(
            Module::Ssh,
            "host keys",
            "no /etc/ssh (OpenSSH not installed)",
        );
        return;
    }
    remove_host_keys(paths, report);
    match find_program(paths, "ssh-keygen") {
        Some(keygen) => {
            let root = paths.root().to_string_lossy().into_owned();
            match run(&keygen, &["-A", "-f", &root], None) {
                Ok(0) => report.applied(Module::Ssh, "host keys generated"),
                Ok(code) => report.failed(
                    Module::Ssh,
                    "host keys generated",
                    format!("ssh-keygen -A exited with {code}"),
                ),
                Err(e) => report.failed(Module::Ssh, "host keys generated", e),
            }
        }
        None => arrange_regeneration_at_boot(paths, report),
    }
}

/// Remove `/etc/ssh/ssh_host_*`, one report entry per file.
pub fn remove_host_keys(paths: &Paths, report: &mut Report) {
    let dir = paths.etc("ssh");
    let Ok(rd) = fs::read_dir(&dir) else { return };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    names.sort();
    for n in names {
        let item = format!("/etc/ssh/{n}");
        match fs::remove_file(dir.join(&n)) {
            Ok(()) => report.applied(Module::Ssh, format!("removed {item}")),
            Err(e) => report.failed(Module::Ssh, format!("removed {item}"), e),
        }
    }
}

/// Make sure the next boot generates host keys.
pub fn arrange_regeneration_at_boot(paths: &Paths, report: &mut Report) {
    let item = "host keys at next boot";
    if unit_installed(paths, "sshd-keygen.service") || unit_installed(paths, "sshd-keygen@.service")
    {
        report.applied(Module::Ssh, format!("{item} (sshd-keygen)"));
        return;
    }
    let res = (|| -> io::Result<bool> {
        write_atomic(
            &paths.etc("systemd/system").join(REGEN_UNIT),
            REGEN_UNIT_TEXT.as_bytes(),
            0o644,
        )?;
        enable_unit(paths, REGEN_UNIT)
    })();
    match res {
        Ok(true) => report.applied(Module::Ssh, format!("{item} ({REGEN_UNIT})")),
        Ok(false) => report.failed(Module::Ssh, item, "unit not found after writing it"),
        Err(e) => report.failed(Module::Ssh, item, e),
    }
}
