//! The authentication and user modules: the root password and new users, written straight into
//! `/etc/passwd`, `/etc/shadow`, `/etc/group` and `/etc/gshadow` of the root, as shadow-utils
//! does: under `lckpwdf` (`/etc/.pwd.lock`) and the per-file `<file>.lock` links, each file
//! replaced atomically with its old content kept as `<file>-`, group files before shadow before
//! passwd so that a crash never leaves a user whose group or password entry is missing.
//!
//! Plain passwords are hashed with SHA-512 crypt (`$6$`, 16-character random salt, default
//! 5000 rounds) by the pure-Rust `sha-crypt`; crypted ones are stored as given after a format
//! check. Defaults for new users come from the root's `/etc/login.defs` (UID/GID ranges,
//! password ageing, `UMASK`/`HOME_MODE`, `USERGROUPS_ENAB`) and `/etc/default/useradd`
//! (`HOME`, `SHELL`); homes get a copy of `/etc/skel`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha_crypt::{Algorithm, CustomizedPasswordHasher, Params, ShaCrypt};

use super::fsutil::{read_opt, write_atomic};
use super::report::{Module, Report};
use super::validate;
use super::{InstanceConfig, Password, UserSpec};
use crate::paths::Paths;

/// Errors of the account files.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The files are locked by another tool.
    #[error("The password files are locked ({0})")]
    Locked(String),
    /// A file is missing or unreadable.
    #[error("Cannot read {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing failed.
    #[error("Cannot write {path}")]
    Write {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Bad input or inconsistent files.
    #[error("{0}")]
    Invalid(String),
}

/// Hash a plain password with SHA-512 crypt and a fresh random salt.
pub fn hash_password(plain: &str) -> Result<String, AccountError> {
    validate::plain_password(plain).map_err(AccountError::Invalid)?;
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt)
        .map_err(|e| AccountError::Invalid(format!("no random numbers for a salt: {e}")))?;
    let hash = ShaCrypt::SHA512
        .hash_password_customized(
            plain.as_bytes(),
            &salt,
            Some(Algorithm::Sha512Crypt.to_str()),
            None,
            Params::RECOMMENDED,
        )
        .map_err(|e| AccountError::Invalid(format!("hashing failed: {e}")))?;
    // The default round count is implied; spelling it out would differ from what chpasswd,
    // openssl and passwd write.
    Ok(hash.as_str().replacen("$6$rounds=5000$", "$6$", 1))
}

/// What goes into the shadow password field for `p`.
pub fn shadow_field(p: &Password) -> Result<String, AccountError> {
    if p.crypted {
        validate::crypted_password(p.secret.expose()).map_err(AccountError::Invalid)?;
        Ok(p.secret.expose().to_string())
    } else {
        hash_password(p.secret.expose())
    }
}

fn days_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// The four account files of a root, held locked while alive.
pub struct AccountFiles {
    _in_process: std::sync::MutexGuard<'static, ()>,
    paths: Paths,
    _pwd_lock: File,
    file_locks: Vec<PathBuf>,
    /// `/etc/passwd` lines.
    pub passwd: Vec<String>,
    /// `/etc/shadow` lines (`None`: the root has no shadow file).
    pub shadow: Option<Vec<String>>,
    /// `/etc/group` lines.
    pub group: Vec<String>,
    /// `/etc/gshadow` lines (`None`: no gshadow file).
    pub gshadow: Option<Vec<String>>,
    orig: [Option<String>; 4],
}

impl std::fmt::Debug for AccountFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountFiles")
            .field("root", &self.paths.root())
            .finish_non_exhaustive()
    }
}

const NAMES: [&str; 4] = ["passwd", "shadow", "group", "gshadow"];

/// fcntl locks are per process, so threads of guestd (a configure run and a SetPassword) are
/// serialised here before they take the system-wide locks.
static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
const LOCK_WAIT: Duration = Duration::from_secs(15);

fn lines(text: Option<&String>) -> Vec<String> {
    text.map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

impl AccountFiles {
    /// Lock and read the account files of `paths`. Fails if `/etc/passwd` or `/etc/group` is
    /// missing or the lock cannot be had within 15 s.
    pub fn open(paths: &Paths) -> Result<Self, AccountError> {
        let guard = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let pwd_lock = lckpwdf(&paths.etc(".pwd.lock"))?;
        let mut file_locks = Vec::new();
        let mut orig: [Option<String>; 4] = [None, None, None, None];
        let mut this = |i: usize| -> Result<(), AccountError> {
            let p = paths.etc(NAMES[i]);
            let text = read_opt(&p).map_err(|source| AccountError::Read {
                path: p.clone(),
                source,
            })?;
            if text.is_some() {
                file_locks.push(lock_file(&p)?);
            }
            orig[i] = text;
            Ok(())
        };
        let mut res = Ok(());
        for i in 0..4 {
            res = this(i);
            if res.is_err() {
                break;
            }
        }
        if let Err(e) = res {
            for l in &file_locks {
                let _ = fs::remove_file(l);
            }
            return Err(e);
        }
        let files = AccountFiles {
            _in_process: guard,
            paths: paths.clone(),
            _pwd_lock: pwd_lock,
            file_locks,
            passwd: lines(orig[0].as_ref()),
            shadow: orig[1].as_ref().map(|_| lines(orig[1].as_ref())),
            group: lines(orig[2].as_ref()),
            gshadow: orig[3].as_ref().map(|_| lines(orig[3].as_ref())),
            orig,
        };
        for (i, what) in [(0, "passwd"), (2, "group")] {
            if files.orig[i].is_none() {
                return Err(AccountError::Read {
                    path: paths.etc(what),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
        }
        Ok(files)
    }

    /// Write back the files that changed: group, gshadow, shadow, then passwd.
    pub fn commit(&mut self) -> Result<(), AccountError> {
        let news: [Option<&Vec<String>>; 4] = [
            Some(&self.passwd),
            self.shadow.as_ref(),
            Some(&self.group),
            self.gshadow.as_ref(),
        ];
        for i in [2usize, 3, 1, 0] {
            let Some(new) = news[i] else { continue };
            let mut text = new.join("\n");
            text.push('\n');
            if self.orig[i].as_deref() == Some(text.as_str()) {
                continue;
            }
            let path = self.paths.etc(NAMES[i]);
            let mode = if i % 2 == 1 { 0o000 } else { 0o644 };
            if let Some(old) = &self.orig[i] {
                let backup = self.paths.etc(&format!("{}-", NAMES[i]));
                let _ = fs::remove_file(&backup);
                write_atomic(&backup, old.as_bytes(), mode).map_err(|source| {
                    AccountError::Write {
                        path: backup.clone(),
                        source,
                    }
                })?;
                // The backup takes the live file's mode and owner, as shadow-utils' does.
                if let Ok(m) = fs::metadata(&path) {
                    let _ = fs::set_permissions(&backup, fs::Permissions::from_mode(m.mode()));
                    let _ = std::os::unix::fs::chown(&backup, Some(m.uid()), Some(m.gid()));
                }
            }
            write_atomic(&path, text.as_bytes(), mode).map_err(|source| AccountError::Write {
                path: path.clone(),
                source,
            })?;
            self.orig[i] = Some(text);
        }
        Ok(())
    }

    fn find(lines: &[String], name: &str) -> Option<usize> {
        lines.iter().position(|l| l.split(':').next() == Some(name))
    }

    /// The passwd fields of `name`.
    pub fn user(&self, name: &str) -> Option<Vec<String>> {
        Self::find(&self.passwd, name)
            .map(|i| self.passwd[i].split(':').map(str::to_string).collect())
    }

    /// The group fields of `name`.
    pub fn group_entry(&self, name: &str) -> Option<Vec<String>> {
        Self::find(&self.group, name)
            .map(|i| self.group[i].split(':').map(str::to_string).collect())
    }

    /// Set the shadow password field (and last-change day) of an existing user.
    pub fn set_password(&mut self, name: &str, field: &str) -> Result<(), AccountError> {
        if self.user(name).is_none() {
            return Err(AccountError::Invalid(format!(
                "no user {name} in /etc/passwd"
            )));
        }
        let today = days_since_epoch().to_string();
        match &mut self.shadow {
            Some(shadow) => {
                let Some(i) = Self::find(shadow, name) else {
                    return Err(AccountError::Invalid(format!(
                        "user {name} has no /etc/shadow entry"
                    )));
                };
                let mut f: Vec<String> = shadow[i].split(':').map(str::to_string).collect();
                f.resize(9.max(f.len()), String::new());
                f[1] = field.to_string();
                f[2] = today;
                shadow[i] = f.join(":");
            }
            None => {
                return Err(AccountError::Invalid(
                    "the root has no /etc/shadow; refusing to put a hash in /etc/passwd".into(),
                ));
            }
        }
        Ok(())
    }

    /// Add `user` to the member lists of `group` (group and gshadow).
    pub fn add_member(&mut self, group: &str, user: &str) -> Result<(), AccountError> {
        let Some(i) = Self::find(&self.group, group) else {
            return Err(AccountError::Invalid(format!("no group {group}")));
        };
        self.group[i] = with_member(&self.group[i], 3, user);
        if let Some(gs) = &mut self.gshadow
            && let Some(j) = Self::find(gs, group)
        {
            gs[j] = with_member(&gs[j], 3, user);
        }
        Ok(())
    }
}

impl Drop for AccountFiles {
    fn drop(&mut self) {
        for l in &self.file_locks {
            let _ = fs::remove_file(l);
        }
    }
}

/// `line` with `user` added to the comma-separated list in field `idx`.
fn with_member(line: &str, idx: usize, user: &str) -> String {
    let mut f: Vec<String> = line.split(':').map(str::to_string).collect();
    if f.len() <= idx {
        f.resize(idx + 1, String::new());
    }
    let mut members: Vec<&str> = f[idx].split(',').filter(|m| !m.is_empty()).collect();
    if !members.contains(&user) {
        members.push(user);
    }
    f[idx] = members.join(",");
    f.join(":")
}

/// `lckpwdf(3)`: a write lock on `/etc/.pwd.lock`, waited for up to 15 s.
fn lckpwdf(path: &Path) -> Result<File, AccountError> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| AccountError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLK(&fl)) {
            Ok(_) => return Ok(f),
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN) => {
                if Instant::now() >= deadline {
                    return Err(AccountError::Locked(path.display().to_string()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(AccountError::Write {
                    path: path.to_path_buf(),
                    source: io::Error::from(e),
                });
            }
        }
    }
}

/// shadow-utils' per-file lock: our pid in `<file>.<pid>`, hard-linked to `<file>.lock`. A
/// lock left by a dead process is removed once; a live one is waited for up to 15 s.
fn lock_file(file: &Path) -> Result<PathBuf, AccountError> {
    let pid = std::process::id();
    let lock = PathBuf::from(format!("{}.lock", file.display()));
    // Unique per call: only the lock's content (the pid) is read by other tools.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = PathBuf::from(format!("{}.{pid}.{n}", file.display()));
    let werr = |source: io::Error, path: &Path| AccountError::Write {
        path: path.to_path_buf(),
        source,
    };
    {
        let mut t = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| werr(e, &tmp))?;
        t.write_all(pid.to_string().as_bytes())
            .map_err(|e| werr(e, &tmp))?;
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let result = loop {
        match fs::hard_link(&tmp, &lock) {
            Ok(()) => break Ok(lock.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut s = String::new();
                let holder = File::open(&lock)
                    .and_then(|mut f| f.read_to_string(&mut s))
                    .ok()
                    .and_then(|_| s.trim().parse::<i32>().ok());
                let alive = holder.is_some_and(|p| {
                    p > 0
                        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None)
                            != Err(nix::errno::Errno::ESRCH)
                });
                if !alive {
                    tracing::warn!(lock = %lock.display(), "removing a stale lock");
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if Instant::now() >= deadline {
                    break Err(AccountError::Locked(lock.display().to_string()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => break Err(werr(e, &lock)),
        }
    };
    let _ = fs::remove_file(&tmp);
    result
}

/// Defaults for new accounts, from `login.defs` and `default/useradd` of the root.
#[derive(Debug, Clone)]
struct Defaults {
    uid_min: u32,
    uid_max: u32,
    gid_min: u32,
    gid_max: u32,
    pass_min: String,
    pass_max: String,
    pass_warn: String,
    home_mode: u32,
    usergroups: bool,
    home_base: String,
    shell: String,
}

fn defaults(paths: &Paths) -> Defaults {
    let defs = read_opt(&paths.etc("login.defs"))
        .ok()
        .flatten()
        .unwrap_or_default();
    let get = |k: &str| -> Option<String> {
        defs.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(k))
                .then(|| it.next().map(str::to_string))
                .flatten()
        })
    };
    let num = |k: &str, d: u32| get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let octal = |k: &str| get(k).and_then(|v| u32::from_str_radix(&v, 8).ok());
    let umask = octal("UMASK").unwrap_or(0o022);
    let home_mode = octal("HOME_MODE").unwrap_or(0o777 & !umask);
    let ua = read_opt(&paths.etc("default/useradd"))
        .ok()
        .flatten()
        .unwrap_or_default();
    let home_base = super::fsutil::get_shell_var(&ua, "HOME").unwrap_or_else(|| "/home".into());
    let shell = super::fsutil::get_shell_var(&ua, "SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if paths.join("bin/bash").exists() || paths.join("usr/bin/bash").exists() {
                "/bin/bash".into()
            } else {
                "/bin/sh".into()
            }
        });
    Defaults {
        uid_min: num("UID_MIN", 1000),
        uid_max: num("UID_MAX", 60000),
        gid_min: num("GID_MIN", 1000),
        gid_max: num("GID_MAX", 60000),
        pass_min: get("PASS_MIN_DAYS").unwrap_or_else(|| "0".into()),
        pass_max: get("PASS_MAX_DAYS").unwrap_or_else(|| "99999".into()),
        pass_warn: get("PASS_WARN_AGE").unwrap_or_else(|| "7".into()),
        home_mode,
        usergroups: get("USERGROUPS_ENAB").is_none_or(|v| v.eq_ignore_ascii_case("yes")),
        home_base,
        shell,
    }
}

fn ids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split(':').nth(2).and_then(|v| v.parse().ok()))
        .collect()
}

/// Next free id as useradd picks it: one above the highest in range, else the lowest free.
fn next_id(used: &[u32], min: u32, max: u32, prefer: Option<u32>) -> Option<u32> {
    if let Some(p) = prefer
        && (min..=max).contains(&p)
        && !used.contains(&p)
    {
        return Some(p);
    }
    let top = used.iter().filter(|&&u| (min..=max).contains(&u)).max();
    match top {
        None => Some(min),
        Some(&t) if t < max => Some(t + 1),
        Some(_) => (min..=max).find(|i| !used.contains(i)),
    }
}

/// The authentication module: the root password, when given.
pub fn configure_root(cfg: &InstanceConfig, paths: &Paths, report: &mut Report) {
    let Some(pw) = &cfg.root_password else {
        return;
    };
    match set_password(paths, "root", pw) {
        Ok(()) => report.applied(Module::Authentication, "root password"),
        Err(e) => report.failed(Module::Authentication, "root password", display_chain(&e)),
    }
}

/// Set `user`'s password in the root's shadow file.
pub fn set_password(paths: &Paths, user: &str, pw: &Password) -> Result<(), AccountError> {
    let field = shadow_field(pw)?;
    let mut files = AccountFiles::open(paths)?;
    files.set_password(user, &field)?;
    files.commit()
}

/// The user module: each user added (or updated when it exists).
pub fn configure_users(cfg: &InstanceConfig, paths: &Paths, report: &mut Report) {
    for u in &cfg.users {
        let item = format!("user {}", u.name);
        match add_user(paths, u) {
            Ok(missing) if missing.is_empty() => report.applied(Module::User, item),
            Ok(missing) => {
                report.applied(Module::User, item.clone());
                report.failed(
                    Module::User,
                    format!("{item} groups"),
                    format!("no such group: {}", missing.join(", ")),
                );
            }
            Err(e) => report.failed(Module::User, item, display_chain(&e)),
        }
    }
}

fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Add `spec` (or update its password and groups when it exists); returns the supplementary
/// groups that do not exist (the user is still added).
pub fn add_user(paths: &Paths, spec: &UserSpec) -> Result<Vec<String>, AccountError> {
    validate::account_name(&spec.name).map_err(AccountError::Invalid)?;
    for g in &spec.groups {
        validate::account_name(g).map_err(AccountError::Invalid)?;
    }
    let field = spec.password.as_ref().map(shadow_field).transpose()?;
    let d = defaults(paths);
    let mut files = AccountFiles::open(paths)?;
    let mut created_home: Option<(PathBuf, u32, u32)> = None;
    if files.user(&spec.name).is_some() {
        if let Some(f) = &field {
            files.set_password(&spec.name, f)?;
        }
    } else {
        let used_uids = ids(&files.passwd);
        let used_gids = ids(&files.group);
        let uid = next_id(&used_uids, d.uid_min, d.uid_max, None)
            .ok_or_else(|| AccountError::Invalid("no free UID".into()))?;
        let gid = if d.usergroups {
            if files.group_entry(&spec.name).is_some() {
                return Err(AccountError::Invalid(format!(
                    "group {} exists; not making it the user's group",
                    spec.name
                )));
            }
            let gid = next_id(&used_gids, d.gid_min, d.gid_max, Some(uid))
                .ok_or_else(|| AccountError::Invalid("no free GID".into()))?;
            files.group.push(format!("{}:x:{gid}:", spec.name));
            if let Some(gs) = &mut files.gshadow {
                gs.push(format!("{}:!::", spec.name));
            }
            gid
        } else {
            files
                .group_entry("users")
                .and_then(|g| g.get(2).and_then(|v| v.parse().ok()))
                .unwrap_or(100)
        };
        let home = format!("{}/{}", d.home_base.trim_end_matches('/'), spec.name);
        files
            .passwd
            .push(format!("{}:x:{uid}:{gid}::{home}:{}", spec.name, d.shell));
        let pw = field.clone().unwrap_or_else(|| "!".into());
        let today = days_since_epoch();
        match &mut files.shadow {
            Some(sh) => sh.push(format!(
                "{}:{pw}:{today}:{}:{}:{}:::",
                spec.name, d.pass_min, d.pass_max, d.pass_warn
            )),
            None => {
                return Err(AccountError::Invalid("the root has no /etc/shadow".into()));
            }
        }
        created_home = Some((paths.join(&home), uid, gid));
    }
    let mut missing = Vec::new();
    for g in &spec.groups {
        if files.group_entry(g).is_some() {
            files.add_member(g, &spec.name)?;
        } else {
            missing.push(g.clone());
        }
    }
    files.commit()?;
    drop(files);
    if let Some((home, uid, gid)) = created_home
        && !home.exists()
    {
        make_home(&paths.etc("skel"), &home, uid, gid, d.home_mode).map_err(|source| {
            AccountError::Write {
                path: home.clone(),
                source,
            }
        })?;
    }
    Ok(missing)
}

/// Create `home` with a copy of `skel`, everything owned by `uid:gid`.
fn make_home(skel: &Path, home: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    if let Some(parent) = home.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::DirBuilder::new().mode(0o700).create(home)?;
    if skel.is_dir() {
        copy_tree(skel, home, uid, gid)?;
    }
    std::os::unix::fs::lchown(home, Some(uid), Some(gid))?;
    fs::set_permissions(home, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for e in fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let m = fs::symlink_metadata(&src)?;
        if m.is_dir() {
            fs::DirBuilder::new().mode(m.mode() & 0o7777).create(&dst)?;
            copy_tree(&src, &dst, uid, gid)?;
        } else if m.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if m.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(uid), Some(gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha_crypt::PasswordVerifier;

    #[test]
    fn hashes_verify() {
        let h = hash_password("Welcome!").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        ShaCrypt::SHA512
            .verify_password(b"Welcome!", h.as_str())
            .unwrap();
        assert!(
            ShaCrypt::SHA512
                .verify_password(b"wrong", h.as_str())
                .is_err()
        );
        assert_ne!(h, hash_password("Welcome!").unwrap(), "salt is random");
    }

    #[test]
    fn member_lists() {
        assert_eq!(with_member("wheel:x:10:", 3, "bob"), "wheel:x:10:bob");
        assert_eq!(with_member("wheel:x:10:al", 3, "bob"), "wheel:x:10:al,bob");
        assert_eq!(with_member("wheel:x:10:bob", 3, "bob"), "wheel:x:10:bob");
        assert_eq!(with_member("wheel:!:", 3, "bob"), "wheel:!::bob");
    }

    #[test]
    fn ids_like_useradd() {
        assert_eq!(next_id(&[0, 1, 65534], 1000, 60000, None), Some(1000));
        assert_eq!(next_id(&[0, 1000, 1001], 1000, 60000, None), Some(1002));
        assert_eq!(next_id(&[0, 1000], 1000, 60000, Some(1005)), Some(1005));
        assert_eq!(next_id(&[1000, 1001], 1000, 1001, None), None);
    }
}
