//! The channel grammar shared by the CLI and the configuration file:
//! `virtio:NAME`, `serial:PATH`, `unix-listen:PATH`, `unix-connect:PATH`, `vsock-listen:PORT`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use guestd_core::contract::ByteTransport;

use crate::unix::{UnixConnect, UnixListen};

/// Where a byte-stream protocol is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelSpec {
    /// A virtio-serial port found by name.
    Virtio(String),
    /// A serial line (isa-serial `/dev/ttyS1`, or any tty).
    Serial(PathBuf),
    /// A listening unix socket.
    UnixListen(PathBuf),
    /// A unix socket to connect to.
    UnixConnect(PathBuf),
    /// A listening vsock port (any CID).
    VsockListen(u32),
}

/// A channel specification that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid channel '{0}': expected virtio:NAME, serial:PATH, unix-listen:PATH, unix-connect:PATH or vsock-listen:PORT"
)]
pub struct BadSpec(pub String);

impl FromStr for ChannelSpec {
    type Err = BadSpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSpec(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "virtio" | "virtio-serial" => ChannelSpec::Virtio(rest.to_owned()),
            "serial" | "isa-serial" => ChannelSpec::Serial(rest.into()),
            "unix-listen" => ChannelSpec::UnixListen(rest.into()),
            "unix-connect" => ChannelSpec::UnixConnect(rest.into()),
            "vsock-listen" => {
                // qemu-ga writes `<cid>:<port>`; the CID is ignored (we listen on any).
                let port = rest.rsplit(':').next().unwrap_or(rest);
                ChannelSpec::VsockListen(port.parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for ChannelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelSpec::Virtio(n) => write!(f, "virtio:{n}"),
            ChannelSpec::Serial(p) => write!(f, "serial:{}", p.display()),
            ChannelSpec::UnixListen(p) => write!(f, "unix-listen:{}", p.display()),
            ChannelSpec::UnixConnect(p) => write!(f, "unix-connect:{}", p.display()),
            ChannelSpec::VsockListen(p) => write!(f, "vsock-listen:{p}"),
        }
    }
}

/// Options that shape transports built from a spec.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Root for device lookups (`/dev/virtio-ports`, `/sys/class/virtio-ports`).
    pub paths: guestd_core::Paths,
    /// Clients served at once on listening sockets.
    pub max_clients: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            paths: guestd_core::Paths::system(),
            max_clients: 16,
        }
    }
}

/// Why a transport could not be built from a spec.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport is not built yet in this version or build.
    #[error("Channel kind of '{0}' is not available in this build")]
    Unavailable(String),
}

/// Build the transport a spec names.
pub fn build(
    spec: &ChannelSpec,
    opts: &TransportOptions,
) -> Result<Arc<dyn ByteTransport>, BuildError> {
    Ok(match spec {
        ChannelSpec::UnixListen(p) => Arc::new(UnixListen::new(p.clone(), opts.max_clients)),
        ChannelSpec::UnixConnect(p) => Arc::new(UnixConnect::new(p.clone())),
        other => return Err(BuildError::Unavailable(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            "virtio:org.qemu.guest_agent.0".parse(),
            Ok(ChannelSpec::Virtio("org.qemu.guest_agent.0".into()))
        );
        assert_eq!(
            "serial:/dev/ttyS1".parse(),
            Ok(ChannelSpec::Serial("/dev/ttyS1".into()))
        );
        assert_eq!(
            "unix-listen:/tmp/q.sock".parse(),
            Ok(ChannelSpec::UnixListen("/tmp/q.sock".into()))
        );
        assert_eq!(
            "vsock-listen:3:1234".parse(),
            Ok(ChannelSpec::VsockListen(1234))
        );
        assert_eq!(
            "vsock-listen:1234".parse(),
            Ok(ChannelSpec::VsockListen(1234))
        );
        assert!("bogus:x".parse::<ChannelSpec>().is_err());
        assert!("virtio:".parse::<ChannelSpec>().is_err());
        assert!("noseparator".parse::<ChannelSpec>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "virtio:a.b",
            "serial:/dev/ttyS1",
            "unix-listen:/x",
            "unix-connect:/y",
            "vsock-listen:5",
        ] {
            assert_eq!(s.parse::<ChannelSpec>().unwrap().to_string(), s);
        }
    }
}
