//! Open file handles for QGA's `guest-file-*` commands.
//!
//! Handles are integers from 1000 up, as qemu-ga hands them out; the next one is saved in
//! `<statedir>/qga.state` (`[global]` `fd_counter=N`, qemu-ga's format) on every open, so a
//! restarted agent never reuses a handle a host may still hold. Files are opened
//! non-blocking, like qemu-ga's, so a FIFO without a writer answers `EAGAIN` instead of
//! hanging the agent; all I/O runs on the blocking pool.
//!
//! Unlike qemu-ga (which creates files `0666` whatever the umask), new files get `0666`
//! minus the agent's umask, as `fopen(3)` would: a host-written file is not world-writable
//! unless the guest's umask says so.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::oserror::strerror;

/// The first handle qemu-ga gives out, and where the counter restarts after wrapping.
pub const FIRST_HANDLE: i64 = 1000;

/// Why a file operation failed; the `Display` texts are qemu-ga's.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No open file has this handle.
    #[error("handle '{0}' has not been found")]
    NoSuchHandle(i64),
    /// The mode is not one of `fopen(3)`'s.
    #[error("invalid file open mode '{0}'")]
    InvalidMode(String),
    /// `open(2)` failed.
    #[error("failed to open file '{path}' (mode: '{mode}'): {}", strerror(.source))]
    Open {
        /// The path.
        path: String,
        /// The mode asked for.
        mode: String,
        /// Why.
        source: io::Error,
    },
    /// The handle counter could not be saved.
    #[error("failed to commit persistent state to disk")]
    SaveState(#[source] io::Error),
    /// Reading failed.
    #[error("failed to read file: {}", strerror(.0))]
    Read(io::Error),
    /// Writing failed.
    #[error("failed to write to file: {}", strerror(.0))]
    Write(io::Error),
    /// Seeking failed.
    #[error("failed to seek file: {}", strerror(.0))]
    Seek(io::Error),
    /// The blocking task was lost (the runtime is shutting down).
    #[error("failed to run the file operation")]
    Lost,
}

/// Where a seek counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// From the start.
    Set,
    /// From the current position.
    Cur,
    /// From the end.
    End,
}

/// What a read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The bytes.
    pub data: Vec<u8>,
    /// The read stopped at end of file.
    pub eof: bool,
}

/// Where a seek ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeekResult {
    /// The new position.
    pub position: u64,
    /// Always false after a successful seek (it clears the end-of-file state).
    pub eof: bool,
}

/// `open(2)` flags for an `fopen(3)` mode string, as qemu-ga accepts them.
fn open_options(mode: &str) -> Option<OpenOptions> {
    let mut o = OpenOptions::new();
    match mode {
        "r" | "rb" => o.read(true),
        "w" | "wb" => o.write(true).create(true).truncate(true),
        "a" | "ab" => o.append(true).create(true),
        "r+" | "rb+" | "r+b" => o.read(true).write(true),
        "w+" | "wb+" | "w+b" => o.read(true).write(true).create(true).truncate(true),
        "a+" | "ab+" | "a+b" => o.read(true).append(true).create(true),
        _ => return None,
    };
    o.mode(0o666)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    Some(o)
}

#[derive(Debug)]
struct Inner {
    next: i64,
    open: HashMap<i64, Arc<Mutex<File>>>,
}

/// The table of open handles, shared by every QGA session of the agent.
#[derive(Debug)]
pub struct FileHandles {
    state_file: PathBuf,
    inner: Mutex<Inner>,
}

impl FileHandles {
    /// A table whose counter lives in `<state_dir>/qga.state`; a missing or unreadable file
    /// starts at 1000.
    pub fn new(state_dir: &Path) -> Self {
        let state_file = state_dir.join("qga.state");
        let next = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|s| parse_counter(&s))
            .filter(|&n| n >= FIRST_HANDLE)
            .unwrap_or(FIRST_HANDLE);
        Self {
            state_file,
            inner: Mutex::new(Inner {
                next,
                open: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, handle: i64) -> Result<Arc<Mutex<File>>, FileError> {
        self.lock()
            .open
            .get(&handle)
            .cloned()
            .ok_or(FileError::NoSuchHandle(handle))
    }

    /// Fails unless `handle` is open (qemu-ga checks the handle before anything else).
    pub fn check(&self, handle: i64) -> Result<(), FileError> {
        self.get(handle).map(|_| ())
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// True when no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open `path` with an `fopen(3)` mode (default `r`) and return its new handle.
    pub async fn open(&self, path: &str, mode: Option<&str>) -> Result<i64, FileError> {
        let mode = mode.unwrap_or("r").to_owned();
        let opts = open_options(&mode).ok_or_else(|| FileError::InvalidMode(mode.clone()))?;
        let p = path.to_owned();
        let file = blocking(move || opts.open(&p))
            .await?
            .map_err(|source| FileError::Open {
                path: path.to_owned(),
                mode: mode.clone(),
                source,
            })?;
        let (handle, next) = {
            let mut inner = self.lock();
            let handle = inner.next;
            inner.next = if handle == i64::MAX {
                FIRST_HANDLE
            } else {
                handle + 1
            };
            (handle, inner.next)
        };
        let state = self.state_file.clone();
        blocking(move || save_counter(&state, next))
            .await?
            .map_err(FileError::SaveState)?;
        self.lock().open.insert(handle, Arc::new(Mutex::new(file)));
        tracing::debug!(handle, "file opened");
        Ok(handle)
    }

    /// Close a handle.
    pub async fn close(&self, handle: i64) -> Result<(), FileError> {
        let file = self
            .lock()
            .open
            .remove(&handle)
            .ok_or(FileError::NoSuchHandle(handle))?;
        // Closing may flush to a slow device: not on the runtime's threads.
        blocking(move || drop(file)).await
    }

    /// Read up to `count` bytes. Like `fread(3)`, it keeps reading until `count` bytes or
    /// end of file; an error (`EAGAIN` on an empty FIFO included) fails the whole read.
    pub async fn read(&self, handle: i64, count: usize) -> Result<ReadResult, FileError> {
        let file = self.get(handle)?;
        blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let mut data = Vec::with_capacity(count.min(1 << 20));
            let mut eof = false;
            while data.len() < count {
                let want = (count - data.len()).min(1 << 20);
                let at = data.len();
                data.resize(at + want, 0);
                match f.read(&mut data[at..]) {
                    Ok(0) => {
                        data.truncate(at);
                        eof = true;
                        break;
                    }
                    Ok(n) => data.truncate(at + n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => data.truncate(at),
                    Err(e) => return Err(FileError::Read(e)),
                }
            }
            Ok(ReadResult { data, eof })
        })
        .await?
    }

    /// Write all of `data`; returns the count written.
    pub async fn write(&self, handle: i64, data: Vec<u8>) -> Result<usize, FileError> {
        let file = self.get(handle)?;
        blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&data).map_err(FileError::Write)?;
            Ok(data.len())
        })
        .await?
    }

    /// Seek, returning the new position.
    pub async fn seek(
        &self,
        handle: i64,
        offset: i64,
        whence: Whence,
    ) -> Result<SeekResult, FileError> {
        let file = self.get(handle)?;
        blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let pos = match whence {
                Whence::Set => match u64::try_from(offset) {
                    Ok(o) => SeekFrom::Start(o),
                    Err(_) => {
                        return Err(FileError::Seek(io::Error::from_raw_os_error(libc::EINVAL)));
                    }
                },
                Whence::Cur => SeekFrom::Current(offset),
                Whence::End => SeekFrom::End(offset),
            };
            let position = f.seek(pos).map_err(FileError::Seek)?;
            Ok(SeekResult {
                position,
                eof: false,
            })
        })
        .await?
    }

    /// Flush. guestd keeps no user-space buffer, so this only checks the handle.
    pub async fn flush(&self, handle: i64) -> Result<(), FileError> {
        self.check(handle)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| FileError::Lost)
}

fn parse_counter(s: &str) -> Option<i64> {
    let mut in_global = false;
    for line in s.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_global = line == "[global]";
        } else if in_global && let Some(v) = line.strip_prefix("fd_counter=") {
            return v.trim().parse().ok();
        }
    }
    None
}

fn save_counter(path: &Path, next: i64) -> io::Result<()> {
    let tmp = path.with_extension("state.tmp");
    {
        let mut f = File::create(&tmp)?;
        write!(f, "[global]\nfd_counter={next}\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handles_from_1000_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        let p = path.to_str().unwrap();
        let t = FileHandles::new(dir.path());
        let h = t.open(p, Some("w+")).await.unwrap();
        assert_eq!(h, 1000);
        assert_eq!(t.write(h, b"hello world".to_vec()).await.unwrap(), 11);
        let s = t.seek(h, 6, Whence::Set).await.unwrap();
        assert_eq!(s.position, 6);
        let r = t.read(h, 4096).await.unwrap();
        assert_eq!(
            r,
            ReadResult {
                data: b"world".to_vec(),
                eof: true
            }
        );
        t.close(h).await.unwrap();
        assert!(matches!(
            t.close(h).await,
            Err(FileError::NoSuchHandle(1000))
        ));
        let state = std::fs::read_to_string(dir.path().join("qga.state")).unwrap();
        assert_eq!(state, "[global]\nfd_counter=1001\n");
        // A new table (a restarted agent) continues from the saved counter.
        let t2 = FileHandles::new(dir.path());
        assert_eq!(t2.open(p, None).await.unwrap(), 1001);
    }

    #[tokio::test]
    async fn errors_have_qemu_texts() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileHandles::new(dir.path());
        assert_eq!(
            t.open("/nonexistent/x", None)
                .await
                .unwrap_err()
                .to_string(),
            "failed to open file '/nonexistent/x' (mode: 'r'): No such file or directory"
        );
        assert_eq!(
            t.open("/x", Some("zz")).await.unwrap_err().to_string(),
            "invalid file open mode 'zz'"
        );
        let f = dir.path().join("ro");
        std::fs::write(&f, b"abc").unwrap();
        let h = t.open(f.to_str().unwrap(), Some("r")).await.unwrap();
        assert_eq!(
            t.write(h, b"x".to_vec()).await.unwrap_err().to_string(),
            "failed to write to file: Bad file descriptor"
        );
        assert_eq!(
            t.seek(h, -100, Whence::Set).await.unwrap_err().to_string(),
            "failed to seek file: Invalid argument"
        );
        let r = t.read(h, 0).await.unwrap();
        assert_eq!(
            r,
            ReadResult {
                data: vec![],
                eof: false
            }
        );
        let r = t.read(h, 2).await.unwrap();
        assert_eq!(
            r,
            ReadResult {
                data: b"ab".to_vec(),
                eof: false
            }
        );
    }
}
