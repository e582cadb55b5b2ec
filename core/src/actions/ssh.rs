//! A user's `~/.ssh/authorized_keys` (QGA `guest-ssh-get/add/remove-authorized-keys`).
//!
//! As qemu-ga: the user comes from the password database (`<root>/etc/passwd`, then NSS on the
//! live system), missing users give `failed to lookup user 'x': Success` (sic), keys starting
//! with `#` or holding a newline are refused, `get` lists the non-empty, non-comment lines and
//! fails on a missing file, `add` skips keys already present (or replaces everything with
//! `reset`), `remove` of an absent key or from a missing file is fine; `~/.ssh` is created
//! 0700 and the file written 0600, both owned by the user.
//!
//! Beyond qemu-ga: the agent runs as root in a directory the user controls, so nothing is
//! followed by name: `~/.ssh` and the file are opened relative to directory descriptors with
//! `O_NOFOLLOW` (a symlink planted as `~/.ssh` or `authorized_keys` is refused, never written
//! through), the new file is written beside the old one and renamed over it (a crash leaves one
//! or the other), and it ends with a newline so that tools appending to it do not glue two
//! keys together.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, SshKeysOp};
use crate::paths::Paths;

/// What the password database says about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory as written in the database (on the agent's root).
    pub home: String,
}

/// Look `name` up in `<root>/etc/passwd`, then (live system only) through NSS.
pub fn lookup_user(paths: &Paths, name: &str) -> Option<UserEntry> {
    if let Ok(text) = std::fs::read_to_string(paths.etc("passwd")) {
        let found = text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && f[0] == name).then(|| {
                Some(UserEntry {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_owned(),
                })
            })?
        });
        if found.is_some() {
            return found;
        }
    }
    if paths.is_system()
        && let Ok(Some(u)) = nix::unistd::User::from_name(name)
    {
        return Some(UserEntry {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir.to_string_lossy().into_owned(),
        });
    }
    None
}

fn check_key(key: &str) -> Result<(), ActionError> {
    if key.starts_with('#') || key.contains('\n') || key.trim().is_empty() {
        return Err(ActionError::InvalidArgument(format!(
            "invalid OpenSSH public key: '{key}'"
        )));
    }
    Ok(())
}

/// The keys in an authorized_keys text: trimmed lines that are neither empty nor comments.
pub fn keys_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

struct Target {
    user: UserEntry,
    /// `~/.ssh/authorized_keys` as the guest names it, for messages.
    shown: String,
    home: PathBuf,
}

fn errno_text(e: Errno) -> &'static str {
    e.desc()
}

impl Target {
    fn open_home(&self) -> Result<OwnedFd, ActionError> {
        nix::fcntl::open(
            &self.home,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            ActionError::Failed(format!(
                "failed to open home directory '{}': {}",
                self.user.home,
                errno_text(e)
            ))
        })
    }

    fn ssh_dir_shown(&self) -> String {
        format!("{}/.ssh", self.user.home.trim_end_matches('/'))
    }

    /// `~/.ssh`, created 0700 and owned by the user when missing.
    fn open_ssh_dir(&self, home: &OwnedFd, create: bool) -> Result<Option<OwnedFd>, ActionError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(home.as_fd(), ".ssh", flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) if create => {
                mkdirat(home.as_fd(), ".ssh", Mode::from_bits_truncate(0o700)).map_err(|e| {
                    ActionError::Failed(format!(
                        "failed to create directory '{}': {}",
                        self.ssh_dir_shown(),
                        errno_text(e)
                    ))
                })?;
                let fd = openat(home.as_fd(), ".ssh", flags, Mode::empty()).map_err(|e| {
                    ActionError::Failed(format!(
                        "failed to open '{}': {}",
                        self.ssh_dir_shown(),
                        errno_text(e)
                    ))
                })?;
                fchown(
                    fd.as_fd(),
                    Some(Uid::from_raw(self.user.uid)),
                    Some(Gid::from_raw(self.user.gid)),
                )
                .map_err(|e| {
                    ActionError::Failed(format!(
                        "failed to set ownership of directory '{}': {}",
                        self.ssh_dir_shown(),
                        errno_text(e)
                    ))
                })?;
                fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700)).map_err(|e| {
                    ActionError::Failed(format!(
                        "failed to set permissions of directory '{}': {}",
                        self.ssh_dir_shown(),
                        errno_text(e)
                    ))
                })?;
                Ok(Some(fd))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(ActionError::Failed(format!(
                "failed to open '{}': {}",
                self.ssh_dir_shown(),
                errno_text(e)
            ))),
        }
    }

    /// The file's text; `Err(errno)` when it cannot be read.
    fn read(&self, ssh: Option<&OwnedFd>) -> Result<String, Errno> {
        let Some(ssh) = ssh else {
            return Err(Errno::ENOENT);
        };
        let fd = openat(
            ssh.as_fd(),
            "authorized_keys",
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| io_errno(&e))?;
        if !meta.is_file() {
            return Err(Errno::EINVAL);
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| io_errno(&e))?;
        Ok(text)
    }

    fn read_error(&self, e: Errno) -> ActionError {
        // GLib's wording, which qemu-ga passes through.
        ActionError::Failed(format!(
            "failed to read '{s}': Failed to open file \u{201c}{s}\u{201d}: {}",
            errno_text(e),
            s = self.shown
        ))
    }

    /// Write `lines` as the new file: beside the old one, owned by the user, 0600, renamed over.
    fn write(&self, ssh: &OwnedFd, lines: &[String]) -> Result<(), ActionError> {
        let fail = |what: &str, e: Errno| {
            ActionError::Failed(format!(
                "failed to {what} '{}': {}",
                self.shown,
                errno_text(e)
            ))
        };
        let tmp = format!(".authorized_keys.guestd-{}", std::process::id());
        let _ = nix::unistd::unlinkat(
            ssh.as_fd(),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let fd = openat(
            ssh.as_fd(),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| fail("write to", e))?;
        let result = (|| {
            let mut body = lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            let mut file = std::fs::File::from(fd);
            std::io::Write::write_all(&mut file, body.as_bytes())
                .map_err(|e| fail("write to", io_errno(&e)))?;
            fchown(
                file.as_fd(),
                Some(Uid::from_raw(self.user.uid)),
                Some(Gid::from_raw(self.user.gid)),
            )
            .map_err(|e| fail("set ownership of", e))?;
            fchmod(file.as_fd(), Mode::from_bits_truncate(0o600))
                .map_err(|e| fail("set permissions of", e))?;
            file.sync_all()
                .map_err(|e| fail("write to", io_errno(&e)))?;
            renameat(ssh.as_fd(), tmp.as_str(), ssh.as_fd(), "authorized_keys")
                .map_err(|e| fail("write to", e))
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                ssh.as_fd(),
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Do `op` on `user`'s authorized keys under `paths`.
pub fn authorized_keys(paths: &Paths, user: &str, op: &SshKeysOp) -> Result<Outcome, ActionError> {
    if let SshKeysOp::Add { keys, .. } | SshKeysOp::Remove { keys } = op {
        keys.iter().try_for_each(|k| check_key(k))?;
    }
    let Some(entry) = lookup_user(paths, user) else {
        return Err(ActionError::NotFound(format!(
            "failed to lookup user '{user}': Success"
        )));
    };
    let home = paths.join(Path::new(&entry.home));
    let t = Target {
        shown: format!("{}/.ssh/authorized_keys", entry.home.trim_end_matches('/')),
        user: entry,
        home,
    };
    match op {
        SshKeysOp::Get => {
            let home = t.open_home().map_err(|_| t.read_error(Errno::ENOENT))?;
            let ssh = t.open_ssh_dir(&home, false)?;
            let text = t.read(ssh.as_ref()).map_err(|e| t.read_error(e))?;
            Ok(Outcome::Keys(keys_of(&text)))
        }
        SshKeysOp::Add { keys, reset } => {
            let home = t.open_home()?;
            let ssh = t.open_ssh_dir(&home, true)?.ok_or_else(|| {
                ActionError::Failed(format!("failed to open '{}'", t.ssh_dir_shown()))
            })?;
            let mut lines: Vec<String> = if *reset {
                Vec::new()
            } else {
                match t.read(Some(&ssh)) {
                    Ok(text) => text.lines().map(str::to_owned).collect(),
                    Err(Errno::ENOENT) => Vec::new(),
                    Err(e) => return Err(t.read_error(e)),
                }
            };
            for k in keys {
                let k = k.trim();
                if !lines.iter().any(|l| l.trim() == k) {
                    lines.push(k.to_owned());
                }
            }
            t.write(&ssh, &lines)?;
            Ok(Outcome::Done)
        }
        SshKeysOp::Remove { keys } => {
            let Ok(home) = t.open_home() else {
                return Ok(Outcome::Done);
            };
            let Some(ssh) = t.open_ssh_dir(&home, false)? else {
                return Ok(Outcome::Done);
            };
            let text = match t.read(Some(&ssh)) {
                Ok(text) => text,
                Err(Errno::ENOENT) => return Ok(Outcome::Done),
                Err(e) => return Err(t.read_error(e)),
            };
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !keys.iter().any(|k| k.trim() == l.trim()))
                .map(str::to_owned)
                .collect();
            if lines.len() != text.lines().count() {
                t.write(&ssh, &lines)?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// Handles [`Action::SshKeys`].
#[derive(Debug, Clone)]
pub struct SshKeysHandler {
    paths: Paths,
}

impl SshKeysHandler {
    /// Manage keys of the users of `paths`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }
}

#[async_trait]
impl ActionHandler for SshKeysHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::SshKeys]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::SshKeys { user, op } = action else {
            return Err(ActionError::Unsupported);
        };
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || authorized_keys(&paths, &user, &op))
            .await
            .map_err(|e| ActionError::Failed(format!("ssh keys task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@h";
    const K2: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQTwo two@h";

    fn root() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("home/alice")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4343:Alice:/home/alice:/bin/sh\n",
        )
        .unwrap();
        let p = Paths::under(d.path());
        (d, p)
    }

    fn add(keys: &[&str], reset: bool) -> SshKeysOp {
        SshKeysOp::Add {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            reset,
        }
    }

    #[test]
    fn add_get_remove_with_owner_and_modes() {
        let (d, p) = root();
        let e = authorized_keys(&p, "alice", &SshKeysOp::Get).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to read '/home/alice/.ssh/authorized_keys': Failed to open file \
             \u{201c}/home/alice/.ssh/authorized_keys\u{201d}: No such file or directory"
        );
        authorized_keys(&p, "alice", &add(&[K1, K2, K1], false)).unwrap();
        let ssh = d.path().join("home/alice/.ssh");
        let file = ssh.join("authorized_keys");
        let (dm, fm) = (
            std::fs::metadata(&ssh).unwrap(),
            std::fs::metadata(&file).unwrap(),
        );
        assert_eq!(dm.permissions().mode() & 0o7777, 0o700);
        assert_eq!(fm.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            (dm.uid(), dm.gid(), fm.uid(), fm.gid()),
            (4242, 4343, 4242, 4343)
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{K1}\n{K2}\n")
        );
        assert_eq!(
            authorized_keys(&p, "alice", &SshKeysOp::Get).unwrap(),
            Outcome::Keys(vec![K1.into(), K2.into()])
        );
        // Comments and blank lines survive an add; get skips them.
        std::fs::write(&file, format!("# mine\n\n{K1}\n")).unwrap();
        authorized_keys(&p, "alice", &add(&[K2], false)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("# mine\n\n{K1}\n{K2}\n")
        );
        assert_eq!(
            authorized_keys(&p, "alice", &SshKeysOp::Get).unwrap(),
            Outcome::Keys(vec![K1.into(), K2.into()])
        );
        authorized_keys(
            &p,
            "alice",
            &SshKeysOp::Remove {
                keys: vec![K1.into(), "ssh-dss absent".into()],
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("# mine\n\n{K2}\n")
        );
        authorized_keys(&p, "alice", &add(&[K1], true)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{K1}\n"));
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 4242);
        let leftovers: Vec<_> = std::fs::read_dir(&ssh).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
    }

    #[test]
    fn errors_and_refusals() {
        let (d, p) = root();
        assert_eq!(
            authorized_keys(&p, "nobody", &SshKeysOp::Get)
                .unwrap_err()
                .to_string(),
            "failed to lookup user 'nobody': Success"
        );
        // Keys are checked before the user is looked up, as qemu-ga does.
        assert_eq!(
            authorized_keys(&p, "nobody", &add(&["#x"], false))
                .unwrap_err()
                .to_string(),
            "invalid OpenSSH public key: '#x'"
        );
        assert!(authorized_keys(&p, "alice", &add(&["a\nb"], false)).is_err());
        // Removing from a missing file (and a missing ~/.ssh) is fine.
        authorized_keys(
            &p,
            "alice",
            &SshKeysOp::Remove {
                keys: vec![K1.into()],
            },
        )
        .unwrap();
        // A symlink planted as ~/.ssh is never written through.
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("home/alice/.ssh")).unwrap();
        assert!(authorized_keys(&p, "alice", &add(&[K1], false)).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        std::fs::remove_file(d.path().join("home/alice/.ssh")).unwrap();
        // Nor one planted as the file.
        std::fs::create_dir(d.path().join("home/alice/.ssh")).unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("home/alice/.ssh/authorized_keys"))
            .unwrap();
        assert!(authorized_keys(&p, "alice", &add(&[K1], false)).is_err());
        assert!(authorized_keys(&p, "alice", &SshKeysOp::Get).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        // With reset the old file is not read, and the link is replaced, not followed.
        authorized_keys(&p, "alice", &add(&[K1], true)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(
            !std::fs::symlink_metadata(d.path().join("home/alice/.ssh/authorized_keys"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
