//! The channel grammar shared by the CLI and the configuration file:
//!
//! | SPEC | transport |
//! |---|---|
//! | `virtio:NAME[,NAME...]` (also `virtio-serial:`) | virtio-serial port found by the first NAME that exists; a NAME containing `/` is a device path |
//! | `serial:PATH` (also `isa-serial:`) | a tty in raw mode (`/dev/ttyS1`) |
//! | `unix-listen:PATH` | listening unix socket, mode 0600, several clients at once |
//! | `unix-connect:PATH` | unix socket the agent connects to |
//! | `vsock-listen:PORT` or `vsock-listen:CID:PORT` | listening vsock port, any CID (the CID is ignored, as qemu-ga's) |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use guestd_core::contract::ByteTransport;

use crate::serial::SerialLine;
use crate::unix::{UnixConnect, UnixListen};
use crate::virtio::{VirtioOptions, VirtioPort};
use crate::vsock::VsockListen;

/// Where a byte-stream protocol is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelSpec {
    /// A virtio-serial port found by name: one name, or several separated by `,` in
    /// preference order (see [`ChannelSpec::virtio_names`]).
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
            "virtio" | "virtio-serial" => {
                if rest.split(',').any(str::is_empty) {
                    return Err(bad());
                }
                ChannelSpec::Virtio(rest.to_owned())
            }
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

impl ChannelSpec {
    /// A virtio-serial channel found by the first of `names` that exists.
    pub fn virtio_any(names: &[&str]) -> Self {
        ChannelSpec::Virtio(names.join(","))
    }

    /// The candidate port names of a virtio channel, in preference order.
    pub fn virtio_names(&self) -> Option<Vec<String>> {
        match self {
            ChannelSpec::Virtio(list) => Some(
                list.split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => None,
        }
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
    /// Permission bits of a listening unix socket.
    pub socket_mode: u32,
    /// Speed of a serial line.
    pub serial_baud: u32,
    /// virtio-serial tunables.
    pub virtio: VirtioOptions,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            paths: guestd_core::Paths::system(),
            max_clients: 16,
            socket_mode: crate::unix::DEFAULT_SOCKET_MODE,
            serial_baud: crate::serial::DEFAULT_BAUD,
            virtio: VirtioOptions::default(),
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

/// Build the transport a spec names. Nothing is opened or bound until its first `accept`.
pub fn build(
    spec: &ChannelSpec,
    opts: &TransportOptions,
) -> Result<Arc<dyn ByteTransport>, BuildError> {
    Ok(match spec {
        ChannelSpec::Virtio(_) => Arc::new(VirtioPort::with_options(
            spec.virtio_names().unwrap_or_default(),
            opts.paths.clone(),
            opts.virtio.clone(),
        )),
        ChannelSpec::Serial(p) => {
            Arc::new(SerialLine::new(p.clone(), &opts.paths, opts.serial_baud))
        }
        ChannelSpec::UnixListen(p) => Arc::new(UnixListen::with_mode(
            p.clone(),
            opts.max_clients,
            opts.socket_mode,
        )),
        ChannelSpec::UnixConnect(p) => Arc::new(UnixConnect::new(p.clone())),
        ChannelSpec::VsockListen(port) => {
            Arc::new(VsockListen::new(*port, &opts.paths, opts.max_clients))
        }
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
        assert_eq!(
            "virtio:ovirt-guest-agent.0,com.redhat.rhevm.vdsm"
                .parse::<ChannelSpec>()
                .unwrap()
                .virtio_names(),
            Some(vec![
                "ovirt-guest-agent.0".to_owned(),
                "com.redhat.rhevm.vdsm".to_owned()
            ])
        );
        assert_eq!(
            "isa-serial:/dev/ttyS2".parse(),
            Ok(ChannelSpec::Serial("/dev/ttyS2".into()))
        );
        assert!("virtio:a,,b".parse::<ChannelSpec>().is_err());
        assert!("virtio:a,".parse::<ChannelSpec>().is_err());
        assert!("vsock-listen:x".parse::<ChannelSpec>().is_err());
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
            "virtio:a,b",
        ] {
            assert_eq!(s.parse::<ChannelSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            ChannelSpec::virtio_any(&["a", "b"]).to_string(),
            "virtio:a,b"
        );
    }

    /// Every kind builds, describes itself as its spec, and probing opens nothing.
    #[tokio::test]
    async fn every_kind_builds_and_probes_without_opening() {
        use guestd_core::contract::Probe;
        let t = tempfile::tempdir().unwrap();
        let opts = TransportOptions {
            paths: guestd_core::Paths::under(t.path()),
            ..TransportOptions::default()
        };
        let sock = t.path().join("l.sock");
        for s in [
            "virtio:org.qemu.guest_agent.0".to_owned(),
            "virtio:a,b".to_owned(),
            "serial:/dev/ttyS1".to_owned(),
            format!("unix-listen:{}", sock.display()),
            format!("unix-connect:{}", t.path().join("c.sock").display()),
            "vsock-listen:1234".to_owned(),
        ] {
            let spec: ChannelSpec = s.parse().unwrap();
            let tr = build(&spec, &opts).unwrap();
            assert_eq!(tr.describe(), s);
            let probe = tr.probe().await;
            if s.starts_with("unix-listen") {
                assert!(matches!(probe, Probe::Present { .. }), "{s}: {probe:?}");
            } else {
                // Nothing exists under the empty fixture root.
                assert!(matches!(probe, Probe::Absent { .. }), "{s}: {probe:?}");
            }
        }
        assert!(!sock.exists(), "probe bound the socket");
        let many = build(&ChannelSpec::UnixListen(sock), &opts).unwrap();
        assert_eq!(many.max_sessions(), 16);
        let port = build(&"virtio:x".parse().unwrap(), &opts).unwrap();
        assert_eq!(port.max_sessions(), 1);
    }
}
