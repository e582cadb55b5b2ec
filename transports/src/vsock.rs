//! A listening vsock port (qemu-ga's `vsock-listen`), any CID, through tokio-vsock.
//!
//! The host connects from CID 2 to the guest's CID at this port; each connection is its own
//! session, so several clients are served at once. End-to-end tests need `/dev/vhost-vsock` on
//! the host (`-device vhost-vsock-pci`), which the test machines lack: only binding and the
//! local semantics are tested here (see the README).

use std::path::PathBuf;

use async_trait::async_trait;
use guestd_core::Paths;
use guestd_core::contract::{ByteStream, ByteTransport, Probe, TransportError};
use tokio::sync::Mutex;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener};
use tracing::info;

/// Listens on a vsock port.
#[derive(Debug)]
pub struct VsockListen {
    port: u32,
    max_clients: usize,
    dev: PathBuf,
    listener: Mutex<Option<VsockListener>>,
}

impl VsockListen {
    /// Listen on `port` (bound on the first accept), serving up to `max_clients` at once.
    pub fn new(port: u32, paths: &Paths, max_clients: usize) -> Self {
        Self {
            port,
            max_clients: max_clients.max(1),
            dev: paths.dev("vsock"),
            listener: Mutex::new(None),
        }
    }

    /// The port listened on.
    pub fn port(&self) -> u32 {
        self.port
    }

    fn bind(&self) -> Result<VsockListener, TransportError> {
        VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, self.port)).map_err(|source| {
            match source.raw_os_error() {
                // No AF_VSOCK in this kernel (vsock module not loaded).
                Some(libc::EAFNOSUPPORT) => TransportError::Unsupported(format!(
                    "{}: this kernel has no vsock support",
                    self.describe()
                )),
                // No transport yet (vmw_vsock_virtio_transport not loaded): wait for it.
                Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV) => {
                    TransportError::NotFound(self.describe())
                }
                _ => TransportError::Io {
                    what: self.describe(),
                    source,
                },
            }
        })
    }
}

#[async_trait]
impl ByteTransport for VsockListen {
    fn describe(&self) -> String {
        format!("vsock-listen:{}", self.port)
    }

    async fn probe(&self) -> Probe {
        if self.dev.exists() {
            Probe::Present {
                at: format!("vsock port {}", self.port),
            }
        } else {
            Probe::Absent {
                why: format!("{} does not exist (no vsock transport)", self.dev.display()),
            }
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            *guard = Some(self.bind()?);
            info!(port = self.port, "listening on vsock");
        }
        let Some(listener) = guard.as_ref() else {
            return Err(TransportError::NotFound(self.describe()));
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                info!(
                    cid = peer.cid(),
                    port = peer.port(),
                    "vsock client connected"
                );
                Ok(Box::new(stream))
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A port unlikely to be taken by anything else on the machine, per test.
    fn port(n: u32) -> u32 {
        40_000 + (std::process::id() % 10_000) * 4 + n
    }

    #[tokio::test]
    async fn probe_looks_for_the_device_only() {
        let t = tempfile::tempdir().unwrap();
        let v = VsockListen::new(5, &Paths::under(t.path()), 4);
        match v.probe().await {
            Probe::Absent { why } => assert!(why.contains("dev/vsock"), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::write(t.path().join("dev/vsock"), "").unwrap();
        assert!(matches!(v.probe().await, Probe::Present { .. }));
        assert!(v.listener.lock().await.is_none(), "probe must not bind");
        assert_eq!(v.describe(), "vsock-listen:5");
        assert_eq!(v.max_sessions(), 4);
    }

    /// Binding, and a client round trip where the kernel can loop vsock back (vsock_loopback,
    /// CID 1). Without AF_VSOCK at all the test says so and checks the error is `Unsupported`.
    #[tokio::test]
    async fn binds_and_serves_over_loopback_when_available() {
        let v = std::sync::Arc::new(VsockListen::new(port(0), &Paths::system(), 4));
        let v2 = std::sync::Arc::clone(&v);
        let server = tokio::spawn(async move {
            let mut s = v2.accept().await?;
            let mut b = [0u8; 5];
            s.read_exact(&mut b)
                .await
                .map_err(|source| TransportError::Io {
                    what: "read".into(),
                    source,
                })?;
            s.write_all(&b).await.map_err(|source| TransportError::Io {
                what: "write".into(),
                source,
            })?;
            Ok::<_, TransportError>(b)
        });
        // Let the listener bind: accept holds the lock once it is bound and waiting.
        for _ in 0..100 {
            if v.listener.try_lock().is_err() || server.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if server.is_finished() {
            match server.await.unwrap() {
                Err(TransportError::Unsupported(w)) => {
                    eprintln!("no AF_VSOCK on this machine: {w}");
                    return;
                }
                other => panic!("accept ended early: {other:?}"),
            }
        }
        // Bound: a second listener on the same port must fail to bind.
        let again = VsockListen::new(port(0), &Paths::system(), 1);
        assert!(
            tokio::time::timeout(Duration::from_secs(2), again.accept())
                .await
                .is_ok_and(|r| r.is_err()),
            "a second bind on the same port succeeded"
        );
        // Without a loopback transport the connect never completes: give up after a while.
        let connect = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_vsock::VsockStream::connect(VsockAddr::new(
                tokio_vsock::VMADDR_CID_LOCAL,
                port(0),
            )),
        )
        .await;
        let Ok(Ok(mut c)) = connect else {
            eprintln!(
                "vsock loopback (CID 1) is not available here: bind checked, round trip skipped"
            );
            server.abort();
            return;
        };
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(&server.await.unwrap().unwrap(), b"hello");
    }
}
