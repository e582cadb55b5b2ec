//! The contracts the other crates implement: reporters (`guestd-reporters`), byte-stream and
//! key-value transports (`guestd-transports`), protocols (`guestd-protocols`). The runtime
//! ([`crate::runtime`]) and the binary only ever see these traits.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::events::Event;
use crate::model::*;
use crate::sysfacts::*;

// ---------------------------------------------------------------------------------------------
// Reporters
// ---------------------------------------------------------------------------------------------

/// Why a fact could not be collected. The `Display` text is what `guestd info` prints on
/// stderr and what protocols put into their error replies.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    /// A file or directory could not be read.
    #[error("Cannot read {path}")]
    Io {
        /// The path (already joined with the root).
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A source was read but made no sense.
    #[error("Cannot parse {path}: {reason}")]
    Parse {
        /// The path or source name.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// No source for this fact exists on this system (e.g. no package database at all).
    #[error("{0}")]
    Unavailable(String),
    /// The source did not answer in time (dead NFS mount, stuck D-Bus peer).
    #[error("{what} timed out after {seconds} s")]
    Timeout {
        /// What was being read.
        what: String,
        /// The deadline that passed.
        seconds: u64,
    },
    /// This platform or build cannot collect the fact.
    #[error("{0} is not supported on this system")]
    Unsupported(&'static str),
}

/// One collector of one fact, reading through an injectable root.
#[async_trait]
pub trait Reporter: Send + Sync + Debug {
    /// What it produces.
    type Output: Send;
    /// Which fact it serves.
    fn fact(&self) -> Fact;
    /// Collect the fact now.
    async fn collect(&self) -> Result<Self::Output, FactError>;
}

/// Everything the protocols may ask about the guest. `guestd-reporters` implements it for
/// Linux; the protocols receive it as `Arc<dyn Facts>` inside [`Agent`].
#[async_trait]
pub trait Facts: Send + Sync + Debug {
    /// Short host name.
    async fn hostname(&self) -> Result<String, FactError>;
    /// The kernel's node name as set (`uname -n`), dots and all: what QGA's
    /// `guest-get-host-name` reports. Defaults to [`Facts::hostname`].
    async fn node_name(&self) -> Result<String, FactError> {
        self.hostname().await
    }
    /// Fully qualified domain name.
    async fn fqdn(&self) -> Result<String, FactError>;
    /// Operating system and kernel.
    async fn os(&self) -> Result<OsInfo, FactError>;
    /// Every network interface.
    async fn interfaces(&self) -> Result<Vec<Interface>, FactError>;
    /// Every network interface, the MTU possibly left out (`None`): for reports that do not
    /// show it (QGA, oVirt), so a collector may skip what costs it a read per interface.
    /// Defaults to [`Facts::interfaces`].
    async fn interfaces_without_mtu(&self) -> Result<Vec<Interface>, FactError> {
        self.interfaces().await
    }
    /// Installed packages from every database present.
    async fn applications(&self) -> Result<Vec<Application>, FactError>;
    /// Memory and paging statistics.
    async fn memory(&self) -> Result<Memory, FactError>;
    /// Logged-in user sessions.
    async fn users(&self) -> Result<Vec<UserSession>, FactError>;
    /// Mounted filesystems with usage and disks.
    async fn filesystems(&self) -> Result<Vec<Filesystem>, FactError>;
    /// Time zone.
    async fn timezone(&self) -> Result<Timezone, FactError>;
    /// CPU counts.
    async fn cpus(&self) -> Result<Cpus, FactError>;
    /// Load averages.
    async fn load(&self) -> Result<Load, FactError>;
    /// Uptime and boot time.
    async fn uptime(&self) -> Result<Uptime, FactError>;

    /// Logical CPUs with their online state (QGA `guest-get-vcpus`).
    async fn vcpus(&self) -> Result<Vec<Vcpu>, FactError>;
    /// Memory blocks (QGA `guest-get-memory-blocks`).
    async fn memory_blocks(&self) -> Result<Vec<MemoryBlock>, FactError>;
    /// Size of one memory block in bytes.
    async fn memory_block_size(&self) -> Result<u64, FactError>;
    /// Block devices and partitions (QGA `guest-get-disks`).
    async fn block_devices(&self) -> Result<Vec<BlockDevice>, FactError>;
    /// `/proc/diskstats`.
    async fn disk_stats(&self) -> Result<Vec<DiskStats>, FactError>;
    /// `/proc/stat` per CPU, in milliseconds.
    async fn cpu_stats(&self) -> Result<Vec<CpuStats>, FactError>;
    /// IPv4 and IPv6 routes.
    async fn routes(&self) -> Result<Vec<Route>, FactError>;

    /// Containers of a local container engine (Docker), running or not. The default says the
    /// build has no collector; an engine that is not running is `Ok` with no containers.
    async fn containers(&self) -> Result<Vec<Container>, FactError> {
        Err(FactError::Unsupported("containers"))
    }

    /// The facts asked for, collected concurrently; a failing fact is `None` with its reason
    /// in [`Report::errors`].
    async fn report(&self, which: &[Fact]) -> Report;
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/// A connected byte stream: a host session on a port or an accepted socket client.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + Debug> ByteStream for T {}

/// Whether a transport's endpoint exists, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The endpoint is there (e.g. the port's device node exists).
    Present {
        /// Where it was found (`/dev/vport1p1`).
        at: String,
    },
    /// It is not, and why.
    Absent {
        /// The reason, for `guestd probe` and the log.
        why: String,
    },
}

/// Why a transport could not give a session.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The endpoint does not exist (yet): a state to wait in, not a failure.
    #[error("{0} not found")]
    NotFound(String),
    /// Another process holds the endpoint (a second agent on a virtio port).
    #[error("{0} is busy: another process has it open")]
    Busy(String),
    /// The endpoint went away for good (port hot-unplugged).
    #[error("{0} was removed")]
    Gone(String),
    /// An I/O error on the endpoint.
    #[error("I/O error on {what}")]
    Io {
        /// The endpoint.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The transport cannot work on this system or build.
    #[error("{0}")]
    Unsupported(String),
}

/// A byte channel to the host: virtio-serial, isa-serial, unix socket, vsock.
#[async_trait]
pub trait ByteTransport: Send + Sync + Debug {
    /// Describes the endpoint for logs (`virtio:org.qemu.guest_agent.0`).
    fn describe(&self) -> String;
    /// Cheap and side-effect free: never opens the endpoint (a virtio port has one opener).
    async fn probe(&self) -> Probe;
    /// Wait for the next host session. A port is opened once and kept open; the stream given
    /// for it ends (EOF) when the host disconnects, and the next `accept` waits, without
    /// spinning, until a host is back. A listening socket returns its next client.
    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError>;
    /// How many sessions may be served at once: 1 for ports, more for listening sockets.
    fn max_sessions(&self) -> usize {
        1
    }
}

/// An error from a key-value store (xenstore), already mapped from the daemon's error names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// `ENOENT`.
    #[error("{0}: no such node")]
    NotFound(String),
    /// `EACCES` / `EPERM`.
    #[error("{0}: permission denied")]
    PermissionDenied(String),
    /// `ENOSPC`: a quota of the daemon.
    #[error("{0}: quota exceeded")]
    NoSpace(String),
    /// `EAGAIN`: a transaction conflicted; retry it.
    #[error("transaction conflict")]
    Again,
    /// `E2BIG` or a payload over the frame limit, refused locally or by the daemon.
    #[error("{0}: too big")]
    TooBig(String),
    /// `EINVAL`: a bad path or request.
    #[error("{0}: invalid")]
    Invalid(String),
    /// Another error name from the daemon.
    #[error("{path}: {name}")]
    Other {
        /// The path involved.
        path: String,
        /// The daemon's error name (`EIO`, ...).
        name: String,
    },
    /// The connection to the store was lost; reconnect.
    #[error("connection to the store lost: {0}")]
    Disconnected(String),
}

/// A registered watch: each item is the path that changed (an event means "re-read").
#[derive(Debug)]
pub struct Watch {
    /// Changed paths, as the store reports them.
    pub events: mpsc::Receiver<String>,
}

/// A hierarchical key-value store shared with the host (xenstore).
#[async_trait]
pub trait KeyValueStore: Send + Sync + Debug {
    /// Describes the endpoint for logs.
    fn describe(&self) -> String;
    /// Read a node's value.
    async fn read(&self, path: &str) -> Result<Vec<u8>, KvError>;
    /// Write a node's value, creating missing parents.
    async fn write(&self, path: &str, value: &[u8]) -> Result<(), KvError>;
    /// The names of a node's children.
    async fn directory(&self, path: &str) -> Result<Vec<String>, KvError>;
    /// Remove a node and its subtree.
    async fn remove(&self, path: &str) -> Result<(), KvError>;
    /// Watch a node and everything below it; fires once at registration.
    async fn watch(&self, path: &str) -> Result<Watch, KvError>;
}

/// Opens a key-value store (and reopens it after the store restarted).
#[async_trait]
pub trait KeyValueTransport: Send + Sync + Debug {
    /// Describes the endpoint for logs.
    fn describe(&self) -> String;
    /// Cheap and side-effect free.
    async fn probe(&self) -> Probe;
    /// Connect.
    async fn connect(&self) -> Result<Arc<dyn KeyValueStore>, TransportError>;
}

// ---------------------------------------------------------------------------------------------
// Protocols
// ---------------------------------------------------------------------------------------------

/// Why a protocol stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The store or channel failed underneath.
    #[error("Key-value store failed")]
    Kv(#[from] KvError),
    /// The transport failed.
    #[error("Transport failed")]
    Transport(#[from] TransportError),
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

/// A protocol spoken over a byte stream (QGA, oVirt). Pure: it never reads or writes itself;
/// the runtime feeds it bytes, ticks and events, and writes what it returns.
pub trait StreamProtocol: Send + Sync + Debug {
    /// Short name for logs and configuration (`qga`, `ovirt`).
    fn name(&self) -> &'static str;
    /// A new session. Ports keep one session for their whole life (host sessions come and go
    /// through [`StreamSession::on_connect`]); listening sockets make one per client.
    fn new_session(&self, agent: Agent) -> Box<dyn StreamSession>;
}

/// The state of one protocol endpoint.
#[async_trait]
pub trait StreamSession: Send + Debug {
    /// A host is connected: write what must be sent unprompted (oVirt's start batch).
    async fn on_connect(&mut self, out: &mut Vec<u8>);
    /// The host went away; partial input has been discarded by the runtime.
    async fn on_disconnect(&mut self);
    /// Bytes arrived. Consume every complete message from `input`, leaving a partial one;
    /// append the replies to `out`. Must make progress or leave `input` untouched.
    async fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<u8>);
    /// When the session next wants [`StreamSession::on_timer`] (heartbeats), if ever.
    fn next_deadline(&self) -> Option<Instant>;
    /// A deadline passed.
    async fn on_timer(&mut self, out: &mut Vec<u8>);
    /// Something happened in the guest (session locked, address changed, ...).
    async fn on_event(&mut self, event: &Event, out: &mut Vec<u8>);
    /// The agent is stopping: write any goodbye (oVirt `session-shutdown`).
    async fn on_shutdown(&mut self, out: &mut Vec<u8>);
    /// Longest a partial message may grow before the session discards it; the runtime never
    /// buffers more than this.
    fn max_input(&self) -> usize;
}

/// A protocol spoken over a key-value store (Oracle VM messaging over xenstore). It drives
/// its own watch loop through the [`KeyValueStore`] contract and returns when the store is
/// lost (the runtime reconnects) or on shutdown.
#[async_trait]
pub trait KvProtocol: Send + Sync + Debug {
    /// Short name for logs and configuration (`ovmd`).
    fn name(&self) -> &'static str;
    /// Serve until the store fails or `shutdown` fires.
    async fn run(
        &self,
        store: Arc<dyn KeyValueStore>,
        agent: Agent,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProtocolError>;
}
