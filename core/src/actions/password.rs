//! Setting a user's password (QGA `guest-set-user-password`), plain or already crypted.
//!
//! As qemu-ga: `user:password\n` is fed to `chpasswd` on its stdin (`-e` when crypted), so the
//! secret never shows in argv or logs; `\n` in the password or `\n`/`:` in the user name are
//! refused with qemu-ga's texts, and a failing chpasswd gives `child process has failed to set
//! user password`. Beyond qemu-ga:
//! - a NUL in the password is refused (qemu-ga silently cut the password there), and so is `:`
//!   in a crypted one (chpasswd would write it into the shadow file and break the entry);
//! - busybox's chpasswd hashes plain passwords with whatever its build chose (often DES, which
//!   keeps 8 characters), so for busybox we hash with SHA-512 crypt ourselves and pass `-e`
//!   (and on a root other than `/`, which busybox cannot address, edit the files directly);
//! - on a root other than `/`, `chpasswd -R <root>` runs without PAM, so plain passwords are
//!   hashed by chpasswd with the root's `ENCRYPT_METHOD` from `/etc/login.defs` (`-c`);
//! - without any chpasswd, the shadow file is edited directly, under the same locks
//!   shadow-utils takes, replaced atomically (the instance-configuration account code).

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use async_trait::async_trait;

use super::exec::{self, Ended, ExecError, Programs};
use super::instance::{Password, accounts, validate};
use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, Secret};
use crate::paths::Paths;

const CHPASSWD_DEADLINE: Duration = Duration::from_secs(60);
const FAILED: &str = "child process has failed to set user password";

/// qemu-ga's checks of the user name and password.
pub fn check(user: &str, password: &str, crypted: bool) -> Result<(), ActionError> {
    if password.contains('\n') || password.contains('\0') || (crypted && password.contains(':')) {
        return Err(ActionError::InvalidArgument(
            "forbidden characters in raw password".into(),
        ));
    }
    if user.contains('\n') || user.contains(':') {
        return Err(ActionError::InvalidArgument(
            "forbidden characters in username".into(),
        ));
    }
    Ok(())
}

/// `ENCRYPT_METHOD` of a root's `/etc/login.defs`, for `chpasswd -c`.
fn encrypt_method(paths: &Paths) -> String {
    std::fs::read_to_string(paths.etc("login.defs"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("ENCRYPT_METHOD")).then(|| w.next().map(str::to_owned))?
            })
        })
        .filter(|m| m.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "SHA512".into())
}

/// Handles [`Action::SetPassword`].
#[derive(Debug, Clone)]
pub struct PasswordHandler {
    paths: Paths,
    programs: Programs,
}

impl PasswordHandler {
    /// Set passwords in the account files of `paths`, with chpasswd from `programs`.
    pub fn new(paths: Paths, programs: Programs) -> Self {
        Self { paths, programs }
    }

    async fn with_chpasswd(
        &self,
        chpasswd: &std::path::Path,
        user: &str,
        password: &Secret,
        crypted: bool,
    ) -> Result<(), ActionError> {
        let mut args: Vec<OsString> = Vec::new();
        let mut line_password = password.clone();
        let busybox = exec::is_busybox(chpasswd);
        if crypted {
            args.push("-e".into());
        } else if busybox {
            let hash = accounts::hash_password(password.expose())
                .map_err(|e| ActionError::InvalidArgument(e.to_string()))?;
            line_password = Secret::new(hash);
            args.push("-e".into());
        } else if !self.paths.is_system() {
            args.push("-c".into());
            args.push(encrypt_method(&self.paths).into());
        }
        if !self.paths.is_system() {
            args.push("-R".into());
            args.push(self.paths.root().as_os_str().to_owned());
        }
        let mut input = format!("{user}:{}\n", line_password.expose()).into_bytes();
        let argv: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let result = exec::run(chpasswd, &argv, Some(&input), CHPASSWD_DEADLINE).await;
        // Do not leave the secret lying in freed memory longer than needed.
        input.iter_mut().for_each(|b| *b = 0);
        match result {
            Ok(status) => match Ended::from(status) {
                Ended::Success => Ok(()),
                Ended::Status(code) => {
                    tracing::warn!(user, code, chpasswd = %chpasswd.display(), "chpasswd failed");
                    Err(ActionError::Failed(FAILED.into()))
                }
                Ended::Signal(_) => Err(ActionError::Failed(
                    "child process has terminated abnormally".into(),
                )),
            },
            Err(ExecError::Spawn(e)) => Err(ActionError::Failed(format!(
                "failed to create child process: {}",
                e.desc()
            ))),
            Err(ExecError::TimedOut(_)) => Err(ActionError::Timeout("chpasswd".into())),
        }
    }

    async fn direct(&self, user: &str, password: Secret, crypted: bool) -> Result<(), ActionError> {
        if crypted {
            validate::crypted_password(password.expose()).map_err(ActionError::InvalidArgument)?;
        }
        let paths = self.paths.clone();
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || {
            let pw = Password {
                secret: password,
                crypted,
            };
            accounts::set_password(&paths, &user, &pw).map_err(|e| {
                tracing::warn!(user, error = %e, "setting the password in the shadow file failed");
                ActionError::Failed(FAILED.into())
            })
        })
        .await
        .map_err(|e| ActionError::Failed(format!("password task failed: {e}")))?
    }
}

#[async_trait]
impl ActionHandler for PasswordHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::SetPassword]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::SetPassword {
            user,
            password,
            crypted,
        } = action
        else {
            return Err(ActionError::Unsupported);
        };
        check(&user, password.expose(), crypted)?;
        // busybox's chpasswd cannot work on another root (no `-R`): edit the files there.
        let chpasswd = self
            .programs
            .find("chpasswd")
            .filter(|p| self.paths.is_system() || !exec::is_busybox(p));
        match chpasswd {
            Some(chpasswd) => {
                self.with_chpasswd(&chpasswd, &user, &password, crypted)
                    .await?
            }
            None => {
                tracing::debug!("no chpasswd: editing the shadow file directly");
                self.direct(&user, password, crypted).await?
            }
        }
        tracing::info!(user, crypted, "password set");
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_qemu_ga_refuses() {
        let e = |u: &str, p: &str, c: bool| check(u, p, c).unwrap_err().to_string();
        assert_eq!(e("a:b", "x", false), "forbidden characters in username");
        assert_eq!(e("a\nb", "x", false), "forbidden characters in username");
        assert_eq!(
            e("alice", "a\nb", false),
            "forbidden characters in raw password"
        );
        assert_eq!(
            e("alice", "a\0b", false),
            "forbidden characters in raw password"
        );
        assert_eq!(
            e("alice", "$6$a:b", true),
            "forbidden characters in raw password"
        );
        // qemu-ga checks the password first.
        assert_eq!(
            e("a:b", "a\nb", false),
            "forbidden characters in raw password"
        );
        assert!(check("alice", "pass:word with spaces", false).is_ok());
    }

    #[tokio::test]
    async fn busybox_chpasswd_gets_our_sha512_hash() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Stands in for busybox: records its arguments and what chpasswd would read.
        let record = d.path().join("record");
        std::fs::write(
            bin.join("busybox"),
            format!(
                "#!/bin/sh\necho \"$*\" > {r}\ncat >> {r}\n",
                r = record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(bin.join("busybox"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("busybox", bin.join("chpasswd")).unwrap();
        // The live root: the fake only writes its record, the handler touches no file itself.
        let h = PasswordHandler::new(Paths::system(), Programs::new(Some(bin.as_os_str())));
        let action = Action::SetPassword {
            user: "alice".into(),
            password: Secret::new("longer than eight"),
            crypted: false,
        };
        assert_eq!(h.run(action).await.unwrap(), Outcome::Done);
        let text = std::fs::read_to_string(&record).unwrap();
        let (args, line) = text.split_once('\n').unwrap();
        assert_eq!(args, "-e");
        let hash = line.trim_end().strip_prefix("alice:").unwrap();
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(
            !text.contains("longer than eight"),
            "the plain password went to chpasswd"
        );
        use sha_crypt::{PasswordVerifier, ShaCrypt};
        let parsed = sha_crypt::PasswordHash::new(hash).unwrap();
        assert!(
            ShaCrypt::default()
                .verify_password(b"longer than eight", &parsed)
                .is_ok()
        );
    }

    #[test]
    fn encrypt_method_from_login_defs() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        assert_eq!(encrypt_method(&paths), "SHA512");
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/login.defs"),
            "# ENCRYPT_METHOD DES\nENCRYPT_METHOD YESCRYPT\n",
        )
        .unwrap();
        assert_eq!(encrypt_method(&paths), "YESCRYPT");
    }
}
