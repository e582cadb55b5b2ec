//! Unix stream sockets: listen (tests, local tools, qemu-ga's `unix-listen` mode) and connect.
//!
//! A listening socket is created with mode 0600 by default: whoever can connect can run
//! commands as the agent (root). The mode is set on the socket before `bind` (Linux gives the
//! new file the socket inode's mode), so no other user can connect in a window before a
//! `chmod`; the `chmod` after `bind` restores bits the umask took away when a wider mode was
//! asked for.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use guestd_core::contract::{ByteStream, ByteTransport, Probe, TransportError};
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::quiet::QuietStream;

/// Default permissions of a listening socket: the owner (root) only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// A bound listener and the identity of the file it created, to remove only that file.
#[derive(Debug)]
struct Bound {
    listener: UnixListener,
    dev: u64,
    ino: u64,
}

/// Listens on a unix socket path; every client is its own host session, several at once.
#[derive(Debug)]
pub struct UnixListen {
    path: PathBuf,
    max_clients: usize,
    mode: u32,
    bound: Mutex<Option<Bound>>,
}

impl UnixListen {
    /// Listen on `path` (bound on the first accept) with mode 0600, serving up to
    /// `max_clients` at once.
    pub fn new(path: impl Into<PathBuf>, max_clients: usize) -> Self {
        Self::with_mode(path, max_clients, DEFAULT_SOCKET_MODE)
    }

    /// Same, with the socket file's permission bits.
    pub fn with_mode(path: impl Into<PathBuf>, max_clients: usize, mode: u32) -> Self {
        Self {
            path: path.into(),
            max_clients: max_clients.max(1),
            mode: mode & 0o777,
            bound: Mutex::new(None),
        }
    }

    /// Bind now unless bound already, so clients can connect as soon as this returns (the
    /// daemon reports readiness after it); `accept` uses the socket bound here.
    pub async fn open_now(&self) -> Result<(), TransportError> {
        let mut guard = self.bound.lock().await;
        if guard.is_none() {
            *guard = Some(self.bind()?);
            info!(path = %self.path.display(), mode = format!("{:o}", self.mode), "listening");
        }
        Ok(())
    }

    fn io(&self, source: impl Into<std::io::Error>) -> TransportError {
        TransportError::Io {
            what: format!("unix socket {}", self.path.display()),
            source: source.into(),
        }
    }

    /// A socket file left by a previous run would make `bind` fail with `EADDRINUSE`: remove
    /// it only when it is a socket nobody listens on. Never remove anything else.
    fn clear_stale(&self) -> Result<(), TransportError> {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(e)),
        };
        if !meta.file_type().is_socket() {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        match std::os::unix::net::UnixStream::connect(&self.path) {
            Ok(_) => Err(TransportError::Busy(format!(
                "unix socket {} (another process listens on it)",
                self.path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                debug!(path = %self.path.display(), "removing stale socket");
                std::fs::remove_file(&self.path).map_err(|e| self.io(e))
            }
            Err(e) => Err(self.io(e)),
        }
    }

    fn bind(&self) -> Result<Bound, TransportError> {
        self.clear_stale()?;
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| self.io(e))?;
        let mode = Mode::from_bits_truncate(self.mode);
        nix::sys::stat::fchmod(&fd, mode).map_err(|e| self.io(e))?;
        let addr = UnixAddr::new(&self.path).map_err(|e| self.io(e))?;
        nix::sys::socket::bind(fd.as_raw_fd(), &addr).map_err(|e| self.io(e))?;
        let meta = std::fs::symlink_metadata(&self.path).map_err(|e| self.io(e))?;
        let bound_as = (meta.dev(), meta.ino());
        let finish = || -> Result<UnixListener, TransportError> {
            // The path is the socket just bound; its directory is the caller's.
            std::fs::set_permissions(
                &self.path,
                std::os::unix::fs::PermissionsExt::from_mode(self.mode),
            )
            .map_err(|e| self.io(e))?;
            let backlog = Backlog::new(64).unwrap_or(Backlog::MAXCONN);
            nix::sys::socket::listen(&fd, backlog).map_err(|e| self.io(e))?;
            let std = std::os::unix::net::UnixListener::from(fd);
            UnixListener::from_std(std).map_err(|e| self.io(e))
        };
        match finish() {
            Ok(listener) => Ok(Bound {
                listener,
                dev: bound_as.0,
                ino: bound_as.1,
            }),
            Err(e) => {
                remove_if_ours(&self.path, bound_as);
                Err(e)
            }
        }
    }
}

/// Remove `path` only if it is still the socket file we created.
fn remove_if_ours(path: &Path, (dev, ino): (u64, u64)) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for UnixListen {
    fn drop(&mut self) {
        if let Some(b) = self.bound.get_mut().take() {
            drop(b.listener);
            remove_if_ours(&self.path, (b.dev, b.ino));
        }
    }
}

#[async_trait]
impl ByteTransport for UnixListen {
    fn describe(&self) -> String {
        format!("unix-listen:{}", self.path.display())
    }

    async fn probe(&self) -> Probe {
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if parent.is_dir() {
            Probe::Present {
                at: self.path.display().to_string(),
            }
        } else {
            Probe::Absent {
                why: format!("directory {} does not exist", parent.display()),
            }
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        let mut guard = self.bound.lock().await;
        if guard.is_none() {
            *guard = Some(self.bind()?);
            info!(path = %self.path.display(), mode = format!("{:o}", self.mode), "listening");
        }
        let Some(bound) = guard.as_ref() else {
            return Err(TransportError::NotFound(self.describe()));
        };
        match bound.listener.accept().await {
            Ok((stream, _)) => Ok(Box::new(quiet(stream, &self.describe())?)),
            Err(source) => Err(TransportError::Io {
                what: self.describe(),
                source,
            }),
        }
    }

    fn max_sessions(&self) -> usize {
        self.max_clients
    }
}

/// The session's stream, registered for write readiness only while a write waits: an idle
/// agent is not woken each time the host reads what it sent (see [`crate::quiet`]).
fn quiet(s: UnixStream, what: &str) -> Result<QuietStream, TransportError> {
    QuietStream::from_unix(s).map_err(|source| TransportError::Io {
        what: what.to_owned(),
        source,
    })
}

/// Connects to a unix socket (a host end that listens); reconnects for each session.
#[derive(Debug)]
pub struct UnixConnect {
    path: PathBuf,
}

impl UnixConnect {
    /// Connect to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl ByteTransport for UnixConnect {
    fn describe(&self) -> String {
        format!("unix-connect:{}", self.path.display())
    }

    async fn probe(&self) -> Probe {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() => Probe::Present {
                at: self.path.display().to_string(),
            },
            Ok(_) => Probe::Absent {
                why: format!("{} is not a socket", self.path.display()),
            },
            Err(_) => Probe::Absent {
                why: format!("{} does not exist", self.path.display()),
            },
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        match UnixStream::connect(&self.path).await {
            Ok(s) => Ok(Box::new(quiet(s, &self.describe())?)),
            // Nobody listens yet (or any more): a state to wait in.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(TransportError::NotFound(self.describe()))
            }
            Err(source) => Err(TransportError::Io {
                what: self.describe(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    async fn accept_bg(l: &Arc<UnixListen>) -> tokio::task::JoinHandle<Box<dyn ByteStream>> {
        let l = Arc::clone(l);
        tokio::spawn(async move { l.accept().await.unwrap() })
    }

    async fn wait_for(path: &Path) {
        for _ in 0..200 {
            if path.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never appeared", path.display());
    }

    #[tokio::test]
    async fn socket_is_owner_only_by_default_and_removed_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("q.sock");
        let l = Arc::new(UnixListen::new(&path, 4));
        let pending = accept_bg(&l).await;
        wait_for(&path).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _c = UnixStream::connect(&path).await.unwrap();
        drop(pending.await.unwrap());
        drop(Arc::into_inner(l).unwrap());
        assert!(!path.exists(), "socket file left behind");
    }

    #[tokio::test]
    async fn requested_mode_is_applied_despite_umask() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("q.sock");
        let l = Arc::new(UnixListen::with_mode(&path, 1, 0o666));
        let pending = accept_bg(&l).await;
        wait_for(&path).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        pending.abort();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_other_files_are_not() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("q.sock");
        // A socket whose listener is gone: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = Arc::new(UnixListen::new(&path, 1));
        let pending = accept_bg(&l).await;
        let mut c = None;
        for _ in 0..200 {
            if let Ok(s) = UnixStream::connect(&path).await {
                c = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(c.is_some(), "could not connect after stale socket removal");
        drop(pending.await.unwrap());

        // A regular file at the path is left alone, with a clear error.
        let file = t.path().join("data");
        std::fs::write(&file, "keep me").unwrap();
        let l2 = UnixListen::new(&file, 1);
        let err = l2.accept().await.unwrap_err();
        assert!(
            crate::tests::chain(&err).contains("not a socket"),
            "{}",
            crate::tests::chain(&err)
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

        // A live listener is not stolen from.
        let live = t.path().join("live.sock");
        let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let l3 = UnixListen::new(&live, 1);
        assert!(matches!(l3.accept().await, Err(TransportError::Busy(_))));
        assert!(live.exists());
    }

    /// Several clients at once, each with its own stream: interleaved lines never cross.
    #[tokio::test]
    async fn several_clients_are_served_at_once() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("q.sock");
        let l = Arc::new(UnixListen::new(&path, 8));
        assert_eq!(l.max_sessions(), 8);
        // Server: accept five clients, echo each line prefixed with the session number.
        let server = {
            let l = Arc::clone(&l);
            tokio::spawn(async move {
                for n in 0..5u32 {
                    let s = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let (r, mut w) = tokio::io::split(s);
                        let mut lines = BufReader::new(r).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            w.write_all(format!("{n}:{line}\n").as_bytes())
                                .await
                                .unwrap();
                        }
                    });
                }
            })
        };
        wait_for(&path).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(UnixStream::connect(&path).await.unwrap());
        }
        // All five connected before any spoke; now talk to them in reverse order, twice.
        for round in 0..2 {
            for (i, c) in clients.iter_mut().enumerate().rev() {
                c.write_all(format!("r{round}c{i}\n").as_bytes())
                    .await
                    .unwrap();
            }
        }
        let mut seen_sessions = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let mut r = BufReader::new(c);
            for round in 0..2 {
                let mut line = String::new();
                tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
                    .await
                    .unwrap()
                    .unwrap();
                let (sess, rest) = line.trim_end().split_once(':').unwrap();
                assert_eq!(rest, format!("r{round}c{i}"));
                if round == 0 {
                    seen_sessions.push(sess.to_owned());
                } else {
                    assert_eq!(
                        sess, seen_sessions[i],
                        "a client's lines went to two sessions"
                    );
                }
            }
        }
        seen_sessions.sort();
        seen_sessions.dedup();
        assert_eq!(seen_sessions.len(), 5, "clients shared a session");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_waits_for_a_listener() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("host.sock");
        let c = UnixConnect::new(&path);
        assert!(matches!(c.probe().await, Probe::Absent { .. }));
        assert!(matches!(c.accept().await, Err(TransportError::NotFound(_))));
        // A stale socket file with no listener: still "not there yet".
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(matches!(c.probe().await, Probe::Present { .. }));
        assert!(matches!(c.accept().await, Err(TransportError::NotFound(_))));
        std::fs::remove_file(&path).unwrap();
        let host = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut s = c.accept().await.unwrap();
        let (mut h, _) = host.accept().unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        std::io::Read::read_exact(&mut h, &mut b).unwrap();
        assert_eq!(&b, b"hi");
    }

    #[tokio::test]
    async fn probe_checks_the_directory_only() {
        let t = tempfile::tempdir().unwrap();
        let l = UnixListen::new(t.path().join("q.sock"), 1);
        assert!(matches!(l.probe().await, Probe::Present { .. }));
        assert!(!t.path().join("q.sock").exists(), "probe must not bind");
        let l = UnixListen::new(t.path().join("nodir/q.sock"), 1);
        assert!(matches!(l.probe().await, Probe::Absent { .. }));
    }
}
