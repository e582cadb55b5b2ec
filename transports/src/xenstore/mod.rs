//! xenstore: our own async client of its wire protocol (no libxenstore, no GPL crate), the
//! endpoint rules of a Xen guest and of dom0 tools, Xen detection, and the key-value store
//! contract of `guestd-core` on top.
//!
//! - [`wire`]: the pure frame codec and error names.
//! - [`client`]: the async client ([`XsClient`]): requests, watches, transactions.
//! - [`detect`]: is this a Xen guest, and through which endpoint.
//! - [`XenstoreTransport`] / [`XsStore`]: [`KeyValueTransport`] and [`KeyValueStore`].

pub mod client;
pub mod detect;
mod device;
pub mod wire;

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use guestd_core::Paths;
use guestd_core::contract::{
    KeyValueStore, KeyValueTransport, KvError, Probe, TransportError, Watch,
};

pub use client::{Access, Flavor, Perm, Transaction, XsClient, XsError, XsWatch};
pub use wire::Errno;

/// The guest devices, in the order libxenstore tries them.
pub const GUEST_DEVICES: [&str; 2] = ["dev/xen/xenbus", "proc/xen/xenbus"];
/// The daemon's socket when neither `XENSTORED_PATH` nor `XENSTORED_RUNDIR` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";

/// Where a client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A xenstored unix socket (clients are dom0, or a guest through the test bridge).
    Socket(PathBuf),
    /// The guest kernel's device.
    Device(PathBuf),
}

impl Endpoint {
    /// An explicit path: a socket if it is one (or will be: any path outside `/dev` and
    /// `/proc`), else the device.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_socket() => Endpoint::Socket(path),
            Ok(m) if m.file_type().is_char_device() => Endpoint::Device(path),
            _ if path.starts_with("/dev") || path.starts_with("/proc") => Endpoint::Device(path),
            _ => Endpoint::Socket(path),
        }
    }

    /// The endpoint's path.
    pub fn path(&self) -> &Path {
        match self {
            Endpoint::Socket(p) | Endpoint::Device(p) => p,
        }
    }

    /// Find the endpoint as libxenstore would, with guestd's fallbacks: `$XENSTORED_PATH`;
    /// else the guest device (`/dev/xen/xenbus`, `/proc/xen/xenbus`) when present; else the
    /// daemon's socket `$XENSTORED_RUNDIR/socket` or `/run/xenstored/socket` when present.
    /// `Err` says why nothing was found.
    pub fn discover(paths: &Paths) -> Result<Self, String> {
        Self::discover_with(paths, |k| std::env::var_os(k))
    }

    /// [`Endpoint::discover`] with an injected environment.
    pub fn discover_with(
        paths: &Paths,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, String> {
        if let Some(p) = env("XENSTORED_PATH").filter(|p| !p.is_empty()) {
            return Ok(Endpoint::Socket(PathBuf::from(p)));
        }
        for dev in GUEST_DEVICES {
            let p = paths.join(dev);
            if p.exists() {
                return Ok(Endpoint::Device(p));
            }
        }
        let socket = match env("XENSTORED_RUNDIR").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("socket"),
            None => paths.join(DEFAULT_SOCKET),
        };
        if socket.exists() {
            return Ok(Endpoint::Socket(socket));
        }
        Err(format!(
            "no xenstore: neither {} nor {} nor {} exists (not a Xen guest?)",
            paths.join(GUEST_DEVICES[0]).display(),
            paths.join(GUEST_DEVICES[1]).display(),
            socket.display()
        ))
    }

    /// Connect a client.
    pub async fn connect(&self) -> io::Result<XsClient> {
        match self {
            Endpoint::Socket(p) => XsClient::connect_socket(p).await,
            Endpoint::Device(p) => XsClient::open_device(p),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "xenstore:{}", self.path().display())
    }
}

/// The key-value transport for `--channel ovmd=xenstore[:PATH]`.
#[derive(Clone, Debug)]
pub struct XenstoreTransport {
    explicit: Option<Endpoint>,
    paths: Paths,
    base: Option<String>,
}

impl XenstoreTransport {
    /// The endpoint found by [`Endpoint::discover`] at each connect.
    pub fn discover(paths: Paths) -> Self {
        Self {
            explicit: None,
            paths,
            base: None,
        }
    }

    /// A fixed endpoint.
    pub fn at(endpoint: Endpoint) -> Self {
        Self {
            explicit: Some(endpoint),
            paths: Paths::system(),
            base: None,
        }
    }

    /// From the part after `xenstore` in a channel spec: empty or `:PATH`.
    pub fn from_spec(rest: &str, paths: Paths) -> Result<Self, String> {
        match rest.strip_prefix(':') {
            None if rest.is_empty() => Ok(Self::discover(paths)),
            Some(p) if !p.is_empty() => Ok(Self::at(Endpoint::from_path(p))),
            _ => Err(format!(
                "invalid xenstore channel 'xenstore{rest}': expected xenstore or xenstore:PATH"
            )),
        }
    }

    /// Resolve relative paths under `base` (e.g. `/local/domain/5`), for dom0 tools acting
    /// on a guest's tree; a guest needs none (its relative paths are its home).
    pub fn with_base(mut self, base: impl Into<String>) -> Self {
        self.base = Some(base.into());
        self
    }

    fn endpoint(&self) -> Result<Endpoint, String> {
        match &self.explicit {
            Some(e) => Ok(e.clone()),
            None => Endpoint::discover(&self.paths),
        }
    }

    /// Connect and return the native client.
    pub async fn connect_client(&self) -> Result<XsClient, TransportError> {
        let ep = self.endpoint().map_err(TransportError::NotFound)?;
        ep.connect().await.map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                TransportError::NotFound(ep.to_string())
            }
            _ => TransportError::Io {
                what: ep.to_string(),
                source,
            },
        })
    }
}

#[async_trait]
impl KeyValueTransport for XenstoreTransport {
    fn describe(&self) -> String {
        match &self.explicit {
            Some(e) => e.to_string(),
            None => "xenstore".into(),
        }
    }

    async fn probe(&self) -> Probe {
        match self.endpoint() {
            Ok(ep) if ep.path().exists() => Probe::Present {
                at: ep.path().display().to_string(),
            },
            Ok(ep) => Probe::Absent {
                why: format!("{} does not exist", ep.path().display()),
            },
            Err(why) => Probe::Absent { why },
        }
    }

    async fn connect(&self) -> Result<Arc<dyn KeyValueStore>, TransportError> {
        let client = self.connect_client().await?;
        Ok(Arc::new(XsStore {
            client,
            base: self.base.clone(),
        }))
    }
}

/// [`KeyValueStore`] over one xenstore connection.
#[derive(Clone, Debug)]
pub struct XsStore {
    client: XsClient,
    base: Option<String>,
}

impl XsStore {
    /// Wrap a connected client; relative paths go under `base` when given.
    pub fn new(client: XsClient, base: Option<String>) -> Self {
        Self { client, base }
    }

    /// The native client.
    pub fn client(&self) -> &XsClient {
        &self.client
    }

    fn full(&self, path: &str) -> String {
        match &self.base {
            Some(b) if !path.starts_with('/') => format!("{}/{path}", b.trim_end_matches('/')),
            _ => path.to_owned(),
        }
    }
}

/// The contract's error for a client error.
pub fn kv_error(e: XsError) -> KvError {
    match e {
        XsError::Daemon { path, errno, op } => match errno {
            Errno::ENOENT => KvError::NotFound(path),
            Errno::EACCES | Errno::EPERM => KvError::PermissionDenied(path),
            Errno::ENOSPC => KvError::NoSpace(path),
            Errno::EAGAIN => KvError::Again,
            Errno::E2BIG => KvError::TooBig(path),
            Errno::EINVAL => KvError::Invalid(path),
            other => KvError::Other {
                path: format!("{op} {path}"),
                name: other.name().to_owned(),
            },
        },
        XsError::TooBig { path, .. } => KvError::TooBig(path),
        XsError::Invalid { path, .. } => KvError::Invalid(path),
        other @ (XsError::Disconnected(_) | XsError::Timeout { .. } | XsError::Protocol { .. }) => {
            KvError::Disconnected(other.to_string())
        }
    }
}

#[async_trait]
impl KeyValueStore for XsStore {
    fn describe(&self) -> String {
        self.client.describe().to_owned()
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, KvError> {
        self.client.read(&self.full(path)).await.map_err(kv_error)
    }

    async fn write(&self, path: &str, value: &[u8]) -> Result<(), KvError> {
        self.client
            .write(&self.full(path), value)
            .await
            .map_err(kv_error)
    }

    async fn directory(&self, path: &str) -> Result<Vec<String>, KvError> {
        self.client
            .directory(&self.full(path))
            .await
            .map_err(kv_error)
    }

    async fn remove(&self, path: &str) -> Result<(), KvError> {
        self.client.rm(&self.full(path)).await.map_err(kv_error)
    }

    async fn watch(&self, path: &str) -> Result<Watch, KvError> {
        let w = self
            .client
            .watch(&self.full(path))
            .await
            .map_err(kv_error)?;
        Ok(Watch { events: w.events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let none = |_: &str| None;
        assert!(Endpoint::discover_with(&paths, none).is_err());

        let env = |k: &str| (k == "XENSTORED_PATH").then(|| OsString::from("/x/sock"));
        assert_eq!(
            Endpoint::discover_with(&paths, env),
            Ok(Endpoint::Socket("/x/sock".into()))
        );

        std::fs::create_dir_all(dir.path().join("run/xenstored")).unwrap();
        std::fs::write(dir.path().join("run/xenstored/socket"), "").unwrap();
        assert_eq!(
            Endpoint::discover_with(&paths, none),
            Ok(Endpoint::Socket(dir.path().join("run/xenstored/socket")))
        );
        let rundir = |k: &str| (k == "XENSTORED_RUNDIR").then(|| OsString::from("/elsewhere"));
        assert!(Endpoint::discover_with(&paths, rundir).is_err());

        std::fs::create_dir_all(dir.path().join("proc/xen")).unwrap();
        std::fs::write(dir.path().join("proc/xen/xenbus"), "").unwrap();
        assert_eq!(
            Endpoint::discover_with(&paths, none),
            Ok(Endpoint::Device(dir.path().join("proc/xen/xenbus")))
        );
        std::fs::create_dir_all(dir.path().join("dev/xen")).unwrap();
        std::fs::write(dir.path().join("dev/xen/xenbus"), "").unwrap();
        assert_eq!(
            Endpoint::discover_with(&paths, none),
            Ok(Endpoint::Device(dir.path().join("dev/xen/xenbus")))
        );
        // XENSTORED_PATH still wins, as in libxenstore.
        assert_eq!(
            Endpoint::discover_with(&paths, env),
            Ok(Endpoint::Socket("/x/sock".into()))
        );
    }

    #[test]
    fn spec_forms() {
        let p = Paths::system();
        assert!(XenstoreTransport::from_spec("", p.clone()).is_ok());
        let t = XenstoreTransport::from_spec(":/tmp/xs.sock", p.clone()).unwrap();
        assert_eq!(t.describe(), "xenstore:/tmp/xs.sock");
        let t = XenstoreTransport::from_spec(":/dev/xen/xenbus", p.clone()).unwrap();
        assert_eq!(t.explicit, Some(Endpoint::Device("/dev/xen/xenbus".into())));
        assert!(XenstoreTransport::from_spec(":", p.clone()).is_err());
        assert!(XenstoreTransport::from_spec("x", p).is_err());
    }

    #[test]
    fn errors_map_to_the_contract() {
        let d = |errno| XsError::Daemon {
            op: "WRITE",
            path: "a".into(),
            errno,
        };
        assert_eq!(kv_error(d(Errno::ENOENT)), KvError::NotFound("a".into()));
        assert_eq!(
            kv_error(d(Errno::EACCES)),
            KvError::PermissionDenied("a".into())
        );
        assert_eq!(kv_error(d(Errno::ENOSPC)), KvError::NoSpace("a".into()));
        assert_eq!(kv_error(d(Errno::EAGAIN)), KvError::Again);
        assert_eq!(kv_error(d(Errno::E2BIG)), KvError::TooBig("a".into()));
        assert!(matches!(
            kv_error(d(Errno::EIO)),
            KvError::Other { name, .. } if name == "EIO"
        ));
        assert!(matches!(
            kv_error(XsError::Disconnected("x".into())),
            KvError::Disconnected(_)
        ));
    }
}
