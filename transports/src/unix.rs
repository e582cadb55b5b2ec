//! Unix stream sockets: listen (tests, local tools, qemu-ga's `unix-listen` mode) and connect.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use guestd_core::contract::{ByteStream, ByteTransport, Probe, TransportError};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

/// Listens on a unix socket path; every client is its own host session.
#[derive(Debug)]
pub struct UnixListen {
    path: PathBuf,
    max_clients: usize,
    listener: Mutex<Option<UnixListener>>,
}

impl UnixListen {
    /// Listen on `path` (bound lazily on the first accept), serving up to `max_clients` at once.
    pub fn new(path: impl Into<PathBuf>, max_clients: usize) -> Self {
        Self {
            path: path.into(),
            max_clients: max_clients.max(1),
            listener: Mutex::new(None),
        }
    }

    fn bind(path: &Path) -> Result<UnixListener, TransportError> {
        // A stale socket file from a previous run would make bind fail with EADDRINUSE; remove
        // it only if nothing listens there.
        if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        UnixListener::bind(path).map_err(|source| TransportError::Io {
            what: format!("unix socket {}", path.display()),
            source,
        })
    }
}

#[async_trait]
impl ByteTransport for UnixListen {
    fn describe(&self) -> String {
        format!("unix-listen:{}", self.path.display())
    }

    async fn probe(&self) -> Probe {
        Probe::Present {
            at: self.path.display().to_string(),
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            *guard = Some(Self::bind(&self.path)?);
        }
        let Some(listener) = guard.as_ref() else {
            return Err(TransportError::NotFound(self.describe()));
        };
        match listener.accept().await {
            Ok((stream, _)) => Ok(Box::new(stream)),
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
        if self.path.exists() {
            Probe::Present {
                at: self.path.display().to_string(),
            }
        } else {
            Probe::Absent {
                why: format!("{} does not exist", self.path.display()),
            }
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        match UnixStream::connect(&self.path).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TransportError::NotFound(self.describe()))
            }
            Err(source) => Err(TransportError::Io {
                what: self.describe(),
                source,
            }),
        }
    }
}
