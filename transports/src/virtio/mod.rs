//! virtio-serial ports found by name.
//!
//! A port is a character device (`/dev/vportNpM`), not a tty: tokio-serial cannot open it (it
//! insists on termios), and `tokio::fs::File` would hold a blocking thread per read and never
//! see `POLLHUP`. So the port is opened `O_RDWR | O_NONBLOCK | O_CLOEXEC` and driven with
//! tokio's `AsyncFd` (see [`port`] for the details of host connect and disconnect).
//!
//! The port is opened once and kept open for the agent's life: the host sees the guest side
//! open and close (`VSERPORT_CHANGE`; libvirt connects only while the guest holds it), and a
//! second opener gets `EBUSY`. Only an unplug ([`TransportError::Gone`]) or
//! [`VirtioPort::release`] closes it; the next `accept` then finds the port by name again.

pub mod discover;
pub mod port;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use async_trait::async_trait;
use guestd_core::Paths;
use guestd_core::contract::{ByteStream, ByteTransport, Probe, TransportError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::sync::Mutex;
use tracing::{debug, info};

pub use discover::{Found, PortEntry, Via};
pub use port::{HostState, MAX_WRITE, PortStream};

use port::HostWaiter;

/// Tunables of a [`VirtioPort`].
#[derive(Clone, Debug)]
pub struct VirtioOptions {
    /// While no host is connected the port is watched for wake-ups; this is the longest time
    /// between two checks even without one (lost wake-ups, unplug detection).
    pub recheck: Duration,
}

impl Default for VirtioOptions {
    fn default() -> Self {
        Self {
            recheck: Duration::from_secs(2),
        }
    }
}

/// The open port, kept for the agent's life.
#[derive(Debug)]
struct OpenPort {
    found: Found,
    fd: OwnedFd,
}

/// A virtio-serial port found by one of several names, in preference order (oVirt:
/// `ovirt-guest-agent.0`, then `com.redhat.rhevm.vdsm`). A candidate containing `/` is a device
/// path opened as is.
#[derive(Debug)]
pub struct VirtioPort {
    names: Vec<String>,
    paths: Paths,
    opts: VirtioOptions,
    open: Mutex<Option<OpenPort>>,
}

impl VirtioPort {
    /// A port found by the first of `names` that exists, under `paths`.
    pub fn new(names: Vec<String>, paths: Paths) -> Self {
        Self::with_options(names, paths, VirtioOptions::default())
    }

    /// Same, with tunables.
    pub fn with_options(names: Vec<String>, paths: Paths, opts: VirtioOptions) -> Self {
        Self {
            names,
            paths,
            opts,
            open: Mutex::new(None),
        }
    }

    /// The candidate names, in preference order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The port currently held open, if any.
    pub async fn current(&self) -> Option<Found> {
        self.open.lock().await.as_ref().map(|p| p.found.clone())
    }

    /// Open the port now, without waiting for a host, unless it is open already: the host sees
    /// the guest side open at once (libvirt connects only then), and the daemon can report
    /// readiness once its ports are really open. `accept` uses the port opened here.
    pub async fn open_now(&self) -> Result<Found, TransportError> {
        let mut guard = self.open.lock().await;
        if let Some(p) = guard.as_ref() {
            return Ok(p.found.clone());
        }
        let port = self.open_port()?;
        let found = port.found.clone();
        *guard = Some(port);
        Ok(found)
    }

    /// Close the port (the host sees the guest side close). The next `accept` finds it by
    /// name again. Cancel a pending `accept` first: it holds the port while it waits.
    pub async fn release(&self) {
        if let Some(p) = self.open.lock().await.take() {
            info!(port = %p.found.dev.display(), "releasing virtio-serial port");
        }
    }

    fn open_port(&self) -> Result<OpenPort, TransportError> {
        let found = discover::find(&self.paths, &self.names)
            .map_err(|why| TransportError::NotFound(format!("{} ({why})", self.describe())))?;
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = nix::fcntl::open(&found.dev, flags, Mode::empty())
            .map_err(|e| open_error(&found, e))?;
        info!(
            port = %found.dev.display(),
            name = %found.name,
            via = ?found.via,
            "opened virtio-serial port"
        );
        Ok(OpenPort { found, fd })
    }
}

/// What an `open()` failure means for the agent.
fn open_error(found: &Found, e: Errno) -> TransportError {
    let what = format!("virtio-serial port {}", found.dev.display());
    match e {
        Errno::ENOENT => TransportError::NotFound(what),
        // A second opener of a port: another agent (qemu-ga, ovirt-guest-agent) holds it.
        Errno::EBUSY => TransportError::Busy(what),
        Errno::ENODEV | Errno::ENXIO => TransportError::Gone(what),
        other => TransportError::Io {
            what,
            source: other.into(),
        },
    }
}

/// A port's sysfs directory (and its node) disappear when it is unplugged.
fn still_there(found: &Found) -> bool {
    match &found.sysfs {
        Some(dir) => dir.is_dir(),
        None => found.dev.exists(),
    }
}

#[async_trait]
impl ByteTransport for VirtioPort {
    fn describe(&self) -> String {
        format!("virtio:{}", self.names.join(","))
    }

    async fn probe(&self) -> Probe {
        match discover::find(&self.paths, &self.names) {
            Ok(f) => Probe::Present {
                at: f.dev.display().to_string(),
            },
            Err(why) => Probe::Absent { why },
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        let mut guard = self.open.lock().await;
        if guard.is_none() {
            *guard = Some(self.open_port()?);
        }
        let Some(port) = guard.as_ref() else {
            return Err(TransportError::NotFound(self.describe()));
        };
        let found = port.found.clone();
        let what = found.dev.display().to_string();
        // A watcher only for this wait: it must not outlive it into the session (see
        // `port`'s notes on polls that swallow an input's wake-up).
        let waited = match HostWaiter::new(&port.fd) {
            Ok(waiter) => {
                waiter
                    .wait_for_host(&port.fd, self.opts.recheck, || still_there(&found))
                    .await
            }
            Err(e) => Err(e),
        };
        match waited {
            Ok(true) => {}
            Ok(false) => {
                *guard = None;
                info!(port = %what, "virtio-serial port was removed; closed it");
                return Err(TransportError::Gone(format!("virtio-serial port {what}")));
            }
            Err(source) => {
                // Unknown state: close it so the next attempt starts from discovery.
                *guard = None;
                return Err(TransportError::Io {
                    what: format!("virtio-serial port {what}"),
                    source,
                });
            }
        }
        let dup = port
            .fd
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| PortStream::new(fd, what.clone()));
        match dup {
            Ok(s) => {
                debug!(port = %what, "host connected");
                Ok(Box::new(s))
            }
            Err(source) => Err(TransportError::Io {
                what: format!("virtio-serial port {what}"),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
