//! The persistent parameter store: key-value pairs exchanged with the host (received and
//! sent, in first-seen order), the cursors a key-value protocol keeps, and the queue of pairs
//! still to send. Shared by the daemon and the command line (`guestd ovmd`), protocol-neutral.
//!
//! Every change is one transaction on disk: take an exclusive `flock` on `params.lock`, read
//! `params.json`, change it, write `params.json.tmp`, `fsync` it, `rename` it over the old
//! file and `fsync` the directory. A reader sees the old or the new state, never a mix, and a
//! `kill -9` at any instant loses nothing that was acknowledged. Each operation rereads the
//! file, so several processes (daemon and CLI) never overwrite each other's changes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

const FILE: &str = "params.json";
const LOCK: &str = "params.lock";
const FORMAT: u32 = 1;
/// A store file larger than this is refused rather than read into memory.
const MAX_FILE: u64 = 64 << 20;

/// Who produced a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The host (manager) sent it.
    Received,
    /// The guest sent it (and kept it).
    Sent,
}

/// One pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Who produced it last.
    pub origin: Origin,
}

/// A pair waiting to be sent to the host, or being sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Unique within this store, for whoever waits for the result.
    pub id: u64,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Keep the pair in the list once sent (Oracle's WRITE_PARAMETER; SEND_MESSAGE does not).
    pub keep: bool,
    /// The message number the protocol assigned when it started writing it; `None` until
    /// then. A restart finding `Some` checks whether the host already has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Everything in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Received and sent pairs, one per key, in first-seen order (an update keeps its place).
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// Named counters of the protocols (`ovmd.last_read`, ...).
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    /// Named markers (boot id, domain, pending work).
    #[serde(default)]
    pub marks: BTreeMap<String, String>,
    /// Pairs to send, oldest first.
    #[serde(default)]
    pub outbox: Vec<Outgoing>,
    /// Next [`Outgoing::id`].
    #[serde(default)]
    pub next_id: u64,
}

impl State {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// Set `key`, keeping its place when it exists.
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) {
        match self.pairs.iter_mut().find(|p| p.key == key) {
            Some(p) => {
                p.value = value.to_owned();
                p.origin = origin;
            }
            None => self.pairs.push(Pair {
                key: key.to_owned(),
                value: value.to_owned(),
                origin,
            }),
        }
    }

    /// Every pair received from the manager, in arrival order.
    pub fn received(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter(|p| p.origin == Origin::Received)
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    }

    /// Forget `key`; true when it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.pairs.len();
        self.pairs.retain(|p| p.key != key);
        self.pairs.len() != before
    }

    /// A cursor, 0 when unset.
    pub fn cursor(&self, name: &str) -> u64 {
        self.cursors.get(name).copied().unwrap_or(0)
    }

    /// Queue a pair to send; returns its id.
    pub fn enqueue(&mut self, key: &str, value: &str, keep: bool) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.outbox.push(Outgoing {
            id,
            key: key.to_owned(),
            value: value.to_owned(),
            keep,
            seq: None,
        });
        id
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("Parameter store {path}: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a store this version can read.
    #[error("Parameter store {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The store in one directory (`/var/lib/guestd/ovmd` by default; 0700, files 0600: it may
/// hold a root password until first-boot configuration has used it).
#[derive(Clone, Debug)]
pub struct ParamStore {
    dir: PathBuf,
}

impl ParamStore {
    /// Where the daemon and the CLI keep it unless told otherwise.
    pub const DEFAULT_DIR: &'static str = "/var/lib/guestd/ovmd";

    /// The store in `dir`; the directory is created on first change.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn io(&self, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.display().to_string();
        move |source| StoreError::Io { what, path, source }
    }

    fn ensure_dir(&self) -> Result<(), StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(self.io("cannot create directory", &self.dir))
    }

    fn lock(&self, exclusive: bool) -> Result<Option<Flock<File>>, StoreError> {
        let path = self.dir.join(LOCK);
        if !exclusive && !self.dir.exists() {
            return Ok(None); // nothing stored yet: nothing to read under a lock
        }
        if exclusive {
            self.ensure_dir()?;
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            // A reader without write access to the directory still reads consistently:
            // every change is an atomic rename.
            Err(e) if !exclusive && e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
            Err(e) => return Err(self.io("cannot open lock", &path)(e)),
        };
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map(Some)
            .map_err(|(_, errno)| self.io("cannot lock", &path)(io::Error::from(errno)))
    }

    fn read_state(&self) -> Result<State, StoreError> {
        let path = self.file();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(self.io("cannot open", &path)(e)),
        };
        let mut text = Vec::new();
        (&mut file)
            .take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(self.io("cannot read", &path))?;
        if text.len() as u64 > MAX_FILE {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                reason: format!("larger than {MAX_FILE} bytes"),
            });
        }
        let disk: Disk = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if disk.format != FORMAT {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                reason: format!("format {} (this guestd reads {FORMAT})", disk.format),
            });
        }
        Ok(disk.state)
    }

    fn write_state(&self, state: &State) -> Result<(), StoreError> {
        let path = self.file();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec(&DiskRef {
            format: FORMAT,
            state,
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(self.io("cannot create", &tmp))?;
        f.write_all(&text).map_err(self.io("cannot write", &tmp))?;
        f.sync_all().map_err(self.io("cannot sync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(self.io("cannot replace", &path))?;
        // The rename itself must reach the disk before the change counts as made.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("cannot sync directory", &self.dir))
    }

    /// The current state.
    pub fn load(&self) -> Result<State, StoreError> {
        let _lock = self.lock(false)?;
        self.read_state()
    }

    /// Change the state in one transaction; `f`'s result is returned once the change is on
    /// disk. Nothing is written when `f` changes nothing.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let _lock = self.lock(true)?;
        let before = self.read_state()?;
        let mut state = before.clone();
        let out = f(&mut state);
        if state != before {
            self.write_state(&state)?;
        }
        Ok(out)
    }

    /// [`ParamStore::update`] off the async runtime (it blocks on `fsync`).
    pub async fn update_async<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> T + Send + 'static,
    {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.update(f)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Io {
                what: "update task failed",
                path: self.file().display().to_string(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    /// [`ParamStore::load`] off the async runtime.
    pub async fn load_async(&self) -> Result<State, StoreError> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.load()).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Io {
                what: "load task failed",
                path: self.file().display().to_string(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    /// A store file that cannot be read is moved aside (kept for inspection, named in the
    /// returned path) so the agent can go on with an empty store.
    pub fn quarantine(&self) -> Result<PathBuf, StoreError> {
        let _lock = self.lock(true)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = self.dir.join(format!("{FILE}.corrupt-{stamp}"));
        std::fs::rename(self.file(), &aside).map_err(self.io("cannot move aside", &aside))?;
        Ok(aside)
    }
}

/// The identity of the running boot (`/proc/sys/kernel/random/boot_id`): cursors kept in the
/// store belong to one boot, as the kernel's counters do.
pub fn boot_id(paths: &crate::Paths) -> Option<String> {
    std::fs::read_to_string(paths.proc("sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct Disk {
    format: u32,
    #[serde(flatten)]
    state: State,
}

#[derive(Serialize)]
struct DiskRef<'a> {
    format: u32,
    #[serde(flatten)]
    state: &'a State,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_first_seen_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParamStore::new(dir.path().join("st"));
        assert_eq!(s.load().unwrap(), State::default());
        s.update(|st| {
            st.set("a", "1", Origin::Received);
            st.set("b", "2", Origin::Sent);
            st.set("a", "3", Origin::Sent);
        })
        .unwrap();
        let again = ParamStore::new(dir.path().join("st")).load().unwrap();
        let keys: Vec<_> = again
            .pairs
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(keys, [("a", "3"), ("b", "2")]);
        assert_eq!(again.pairs[0].origin, Origin::Sent);
        assert_eq!(again.get("b"), Some("2"));
        assert!(s.update(|st| st.remove("a")).unwrap());
        assert!(!s.update(|st| st.remove("a")).unwrap());
        assert_eq!(s.load().unwrap().pairs.len(), 1);
    }

    #[test]
    fn files_are_private_and_replaced_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = ParamStore::new(dir.path().join("st"));
        s.update(|st| st.set("k", "v", Origin::Received)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.dir()), 0o700);
        assert_eq!(mode(&s.dir().join(FILE)), 0o600);
        assert!(!s.dir().join(format!("{FILE}.tmp")).exists());
        // A leftover temporary file from a killed writer changes nothing.
        std::fs::write(s.dir().join(format!("{FILE}.tmp")), b"{garbage").unwrap();
        assert_eq!(s.load().unwrap().get("k"), Some("v"));
        s.update(|st| st.set("k2", "v2", Origin::Received)).unwrap();
        assert_eq!(s.load().unwrap().pairs.len(), 2);
    }

    #[test]
    fn outbox_ids_and_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParamStore::new(dir.path());
        let (a, b) = s
            .update(|st| (st.enqueue("k", "v", true), st.enqueue("k2", "", false)))
            .unwrap();
        assert_ne!(a, b);
        s.update(|st| {
            st.outbox[0].seq = Some(7);
            st.cursors.insert("x.last_read".into(), 3);
        })
        .unwrap();
        let st = s.load().unwrap();
        assert_eq!(st.outbox[0].seq, Some(7));
        assert_eq!(st.outbox[1].seq, None);
        assert_eq!(st.cursor("x.last_read"), 3);
        assert_eq!(st.cursor("unset"), 0);
    }

    #[test]
    fn corrupt_file_is_reported_and_can_be_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParamStore::new(dir.path());
        std::fs::write(dir.path().join(FILE), b"{\"format\":1,\"pairs\":[{").unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
        let aside = s.quarantine().unwrap();
        assert!(aside.exists());
        assert_eq!(s.load().unwrap(), State::default());
        std::fs::write(dir.path().join(FILE), b"{\"format\":99}").unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = ParamStore::new(dir.path());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        s.update(|st| {
                            st.set(&format!("t{t}-{i}"), "v", Origin::Sent);
                            let n = st.cursor("n");
                            st.cursors.insert("n".into(), n + 1);
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let st = s.load().unwrap();
        assert_eq!(st.pairs.len(), 100);
        assert_eq!(st.cursor("n"), 100);
    }
}
