//! An async xenstore client: one writer task sends whole frames (so a cancelled request never
//! leaves half a frame on the wire), one reader task demultiplexes replies by `req_id` and
//! watch events by token. Works over the daemon's unix socket and over the guest device.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use super::wire::{self, Errno, Frame, MsgType, WireError};

/// How many watch events may wait unread before further ones are coalesced away (an event
/// only means "re-read", so a full queue already says everything).
const WATCH_QUEUE: usize = 256;

/// Which kind of endpoint the client talks to; it changes the payload limit and how WATCH
/// replies are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The daemon's unix socket (dom0 tools, tests).
    Socket,
    /// `/dev/xen/xenbus` in a Linux guest: 4080-byte payloads, WATCH/UNWATCH answered by the
    /// kernel (old kernels zero their `req_id`), some failures reported by `write()`.
    Device,
}

impl Flavor {
    /// Longest payload this endpoint takes.
    pub fn payload_max(self) -> usize {
        match self {
            Flavor::Socket => wire::PAYLOAD_MAX,
            Flavor::Device => wire::DEVICE_PAYLOAD_MAX,
        }
    }
}

/// Why a xenstore request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XsError {
    /// The daemon answered with an error name.
    #[error("{op} {path}: {errno}")]
    Daemon {
        /// The request type.
        op: &'static str,
        /// The path (or other first argument) of the request.
        path: String,
        /// The daemon's error.
        errno: Errno,
    },
    /// Refused locally: the payload would exceed the endpoint's limit.
    #[error("{op} {path}: payload of {len} bytes is over the limit of {max}")]
    TooBig {
        /// The request type.
        op: &'static str,
        /// The path.
        path: String,
        /// Payload length.
        len: usize,
        /// The endpoint's limit.
        max: usize,
    },
    /// Refused locally: a path or token with a NUL byte, or an unusable argument.
    #[error("{op} {path}: {reason}")]
    Invalid {
        /// The request type.
        op: &'static str,
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The connection is gone; open a new client.
    #[error("Connection to xenstore lost: {0}")]
    Disconnected(String),
    /// No reply came in time; the connection was dropped.
    #[error("{op} {path}: no reply within {secs} s")]
    Timeout {
        /// The request type.
        op: &'static str,
        /// The path.
        path: String,
        /// The deadline.
        secs: u64,
    },
    /// The reply made no sense for the request.
    #[error("{op} {path}: unexpected reply: {what}")]
    Protocol {
        /// The request type.
        op: &'static str,
        /// The path.
        path: String,
        /// What was wrong.
        what: String,
    },
}

impl XsError {
    /// The daemon's error name, when it sent one.
    pub fn errno(&self) -> Option<&Errno> {
        match self {
            XsError::Daemon { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// True for `EAGAIN` (a transaction conflict).
    pub fn is_again(&self) -> bool {
        self.errno() == Some(&Errno::EAGAIN)
    }

    /// True for `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(&Errno::ENOENT)
    }
}

/// Access a permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

/// One permission entry, `<letter><domid>`. The first entry of a list names the owner and
/// the default for unlisted domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// What is granted.
    pub access: Access,
    /// To which domain.
    pub domid: u32,
}

impl Perm {
    /// Parse `r1`, `n0`, ...
    pub fn parse(s: &str) -> Option<Self> {
        let mut chars = s.chars();
        let access = match chars.next()? {
            'n' => Access::None,
            'r' => Access::Read,
            'w' => Access::Write,
            'b' => Access::Both,
            _ => return None,
        };
        let domid = chars.as_str().parse().ok()?;
        Some(Self { access, domid })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        write!(f, "{c}{}", self.domid)
    }
}

/// Where the writer task sends frames.
#[async_trait]
pub trait FrameSink: Send {
    /// Send one whole frame.
    async fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> FrameSink for W {
    async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.write_all(frame).await?;
        self.flush().await
    }
}

/// What the reader hands a waiting request.
#[derive(Debug)]
enum Failure {
    Disconnected(String),
    /// The device refused the frame in `write()` with this errno.
    WriteErrno(i32),
}

struct Pending {
    ty: MsgType,
    reply: oneshot::Sender<Result<Frame, Failure>>,
}

#[derive(Default)]
struct State {
    next_req: u32,
    pending: HashMap<u32, Pending>,
    /// WATCH/UNWATCH requests in the order sent, for the device, whose kernel may answer
    /// them with a zero `req_id`.
    watch_order: VecDeque<u32>,
    /// token -> (watched path, events).
    watches: HashMap<Vec<u8>, (String, mpsc::Sender<String>)>,
    next_token: u64,
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    out: mpsc::UnboundedSender<(u32, Vec<u8>)>,
    flavor: Flavor,
    describe: String,
    timeout: Duration,
    lost: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("describe", &self.describe)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

/// Stops the reader and writer tasks when the last client handle goes.
#[derive(Debug)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A connected xenstore client. Cheap to clone; every clone shares the connection.
#[derive(Clone, Debug)]
pub struct XsClient {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// A registered watch. Each event is the path that changed, as the daemon reports it (an
/// event means "re-read", never a count; the first one comes at registration). Dropping it
/// removes the watch from the daemon the next time it fires; [`XsClient::unwatch`] does so now.
#[derive(Debug)]
pub struct XsWatch {
    /// The path watched.
    pub path: String,
    /// This watch's token, unique on the connection.
    pub token: String,
    /// Changed paths; ends when the connection is lost.
    pub events: mpsc::Receiver<String>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters more than losing the connection would; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl XsClient {
    /// A client over any byte stream pair (a unix socket's halves, the device, a test pipe).
    pub fn from_parts<R, S>(reader: R, sink: S, flavor: Flavor, describe: String) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        S: FrameSink + 'static,
    {
        let (out, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_req: 1,
                ..State::default()
            }),
            out,
            flavor,
            describe,
            timeout: Duration::from_secs(30),
            lost: AtomicBool::new(false),
        });
        let r = tokio::spawn(read_loop(Arc::clone(&shared), reader));
        let w = tokio::spawn(write_loop(Arc::clone(&shared), sink, out_rx));
        Self {
            shared,
            _tasks: Arc::new(Tasks(vec![r, w])),
        }
    }

    /// Connect to a xenstored unix socket (every client there is dom0).
    pub async fn connect_socket(path: &std::path::Path) -> io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (r, w) = stream.into_split();
        Ok(Self::from_parts(
            r,
            w,
            Flavor::Socket,
            format!("xenstore:{}", path.display()),
        ))
    }

    /// Open the guest device (`/dev/xen/xenbus`, `/proc/xen/xenbus`).
    pub fn open_device(path: &std::path::Path) -> io::Result<Self> {
        let (r, w) = super::device::open(path)?;
        Ok(Self::from_parts(
            r,
            w,
            Flavor::Device,
            format!("xenstore:{}", path.display()),
        ))
    }

    /// Describes the endpoint for logs.
    pub fn describe(&self) -> &str {
        &self.shared.describe
    }

    /// The endpoint kind.
    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    /// False once the connection is lost.
    pub fn is_connected(&self) -> bool {
        !self.shared.lost.load(Ordering::Relaxed)
    }

    /// Read a node's value, verbatim.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_tx(0, path).await
    }

    /// Write a node's value, creating missing parents.
    pub async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_tx(0, path, value).await
    }

    /// Create a node (empty value) if missing.
    pub async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.simple_tx(0, MsgType::Mkdir, path).await
    }

    /// Remove a node and its subtree; a missing node is fine if its parent exists.
    pub async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.simple_tx(0, MsgType::Rm, path).await
    }

    /// The names of a node's children (DIRECTORY, or DIRECTORY_PART slices when the list is
    /// too long for one reply).
    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_tx(0, path).await
    }

    /// A node's permissions, owner first.
    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>, XsError> {
        self.get_perms_tx(0, path).await
    }

    /// Set a node's permissions; the first entry names the owner.
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.set_perms_tx(0, path, perms).await
    }

    /// `/local/domain/<domid>` as the daemon names it.
    pub async fn get_domain_path(&self, domid: u32) -> Result<String, XsError> {
        let id = domid.to_string();
        let payload = nul_payload(MsgType::GetDomainPath, &id, &[id.as_bytes()])?;
        let reply = self
            .request(MsgType::GetDomainPath, 0, payload, &id)
            .await?;
        Ok(String::from_utf8_lossy(wire::strip_nul(&reply)).into_owned())
    }

    /// The caller's home: `/local/domain/<domid>` read through the relative `domid` node a
    /// toolstack writes into every guest's home.
    pub async fn home(&self) -> Result<String, XsError> {
        let raw = self.read("domid").await?;
        let text = String::from_utf8_lossy(&raw);
        let domid: u32 = text.trim().parse().map_err(|_| XsError::Protocol {
            op: "READ",
            path: "domid".into(),
            what: format!("not a domain id: {text:?}"),
        })?;
        self.get_domain_path(domid).await
    }

    /// Watch `path` and everything below it with a fresh token.
    pub async fn watch(&self, path: &str) -> Result<XsWatch, XsError> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let token = {
            let mut st = lock(&self.shared.state);
            st.next_token += 1;
            let token = format!("guestd{}", st.next_token);
            // Registered before the request: the first event may beat the reply.
            st.watches
                .insert(token.clone().into_bytes(), (path.to_owned(), tx));
            token
        };
        let payload = match nul_payload(MsgType::Watch, path, &[path.as_bytes(), token.as_bytes()])
        {
            Ok(p) => p,
            Err(e) => {
                lock(&self.shared.state).watches.remove(token.as_bytes());
                return Err(e);
            }
        };
        if let Err(e) = self.request(MsgType::Watch, 0, payload, path).await {
            lock(&self.shared.state).watches.remove(token.as_bytes());
            return Err(e);
        }
        Ok(XsWatch {
            path: path.to_owned(),
            token,
            events: rx,
        })
    }

    /// Remove a watch now.
    pub async fn unwatch(&self, watch: XsWatch) -> Result<(), XsError> {
        lock(&self.shared.state)
            .watches
            .remove(watch.token.as_bytes());
        let payload = nul_payload(
            MsgType::Unwatch,
            &watch.path,
            &[watch.path.as_bytes(), watch.token.as_bytes()],
        )?;
        self.request(MsgType::Unwatch, 0, payload, &watch.path)
            .await
            .map(drop)
    }

    /// Start a transaction. End it with [`Transaction::commit`] or [`Transaction::abort`];
    /// one dropped unended is aborted.
    pub async fn transaction(&self) -> Result<Transaction, XsError> {
        let reply = self
            .request(MsgType::TransactionStart, 0, vec![0], "")
            .await?;
        let text = String::from_utf8_lossy(wire::strip_nul(&reply)).into_owned();
        let id = text
            .parse::<u32>()
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| XsError::Protocol {
                op: "TRANSACTION_START",
                path: String::new(),
                what: format!("bad transaction id {text:?}"),
            })?;
        Ok(Transaction {
            client: self.clone(),
            id,
            ended: false,
        })
    }

    /// Run `f` in a transaction and commit it, redoing it all on `EAGAIN` (a conflict, at
    /// commit or inside) up to `attempts` times in total.
    pub async fn with_transaction<T, F>(&self, attempts: u32, mut f: F) -> Result<T, XsError>
    where
        F: AsyncFnMut(&Transaction) -> Result<T, XsError>,
    {
        let attempts = attempts.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            let tx = self.transaction().await?;
            match f(&tx).await {
                Ok(v) => match tx.commit().await {
                    Ok(()) => return Ok(v),
                    Err(e) if e.is_again() => {
                        debug!(attempt, "transaction conflicted; redoing it");
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                },
                Err(e) if e.is_again() => {
                    let _ = tx.abort().await;
                    last = Some(e);
                }
                Err(e) => {
                    let _ = tx.abort().await;
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or(XsError::Daemon {
            op: "TRANSACTION_END",
            path: String::new(),
            errno: Errno::EAGAIN,
        }))
    }

    /// A raw request, for tests and tools: the reply payload or the daemon's error.
    pub async fn raw(&self, ty: MsgType, tx_id: u32, payload: Vec<u8>) -> Result<Bytes, XsError> {
        self.request(ty, tx_id, payload, "").await
    }

    async fn read_tx(&self, tx: u32, path: &str) -> Result<Vec<u8>, XsError> {
        let payload = nul_payload(MsgType::Read, path, &[path.as_bytes()])?;
        Ok(self
            .request(MsgType::Read, tx, payload, path)
            .await?
            .to_vec())
    }

    async fn write_tx(&self, tx: u32, path: &str, value: &[u8]) -> Result<(), XsError> {
        let payload = wire::path_value(path.as_bytes(), value).map_err(|e| XsError::Invalid {
            op: "WRITE",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        self.request(MsgType::Write, tx, payload, path)
            .await
            .map(drop)
    }

    async fn simple_tx(&self, tx: u32, ty: MsgType, path: &str) -> Result<(), XsError> {
        let payload = nul_payload(ty, path, &[path.as_bytes()])?;
        self.request(ty, tx, payload, path).await.map(drop)
    }

    async fn directory_tx(&self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        let payload = nul_payload(MsgType::Directory, path, &[path.as_bytes()])?;
        match self.request(MsgType::Directory, tx, payload, path).await {
            Ok(reply) => Ok(names(&reply)),
            Err(e) if e.errno() == Some(&Errno::E2BIG) => self.directory_part(tx, path).await,
            Err(e) => Err(e),
        }
    }

    /// The listing in slices: `gen\0` then the bytes of the full `name\0` list from the
    /// offset asked for; the last slice ends with an extra NUL. A moving generation means
    /// the node changed under us: start again.
    async fn directory_part(&self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        const RESTARTS: usize = 8;
        // 1000 nodes per domain by default: a listing can be at most a few hundred KiB.
        const MAX_LISTING: usize = 4 << 20;
        'restart: for _ in 0..RESTARTS {
            let mut listing = Vec::new();
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let off = listing.len().to_string();
                let payload = nul_payload(
                    MsgType::DirectoryPart,
                    path,
                    &[path.as_bytes(), off.as_bytes()],
                )?;
                let reply = self
                    .request(MsgType::DirectoryPart, tx, payload, path)
                    .await?;
                let bad = |what: &str| XsError::Protocol {
                    op: "DIRECTORY_PART",
                    path: path.to_owned(),
                    what: what.to_owned(),
                };
                let split = reply
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| bad("no generation"))?;
                let (generation_now, rest) = (&reply[..split], &reply[split + 1..]);
                match &generation {
                    None => generation = Some(generation_now.to_vec()),
                    Some(g) if g != generation_now => continue 'restart,
                    Some(_) => {}
                }
                if rest.is_empty() {
                    return Err(bad("empty slice"));
                }
                let last = rest == [0] || rest.ends_with(&[0, 0]);
                listing.extend_from_slice(rest);
                if last {
                    return Ok(names(&listing));
                }
                if listing.len() > MAX_LISTING {
                    return Err(bad("listing too long"));
                }
            }
        }
        Err(XsError::Protocol {
            op: "DIRECTORY_PART",
            path: path.to_owned(),
            what: "the node kept changing while it was listed".into(),
        })
    }

    async fn get_perms_tx(&self, tx: u32, path: &str) -> Result<Vec<Perm>, XsError> {
        let payload = nul_payload(MsgType::GetPerms, path, &[path.as_bytes()])?;
        let reply = self.request(MsgType::GetPerms, tx, payload, path).await?;
        wire::split_nul(&reply)
            .into_iter()
            .map(|p| {
                let s = String::from_utf8_lossy(p);
                Perm::parse(&s).ok_or_else(|| XsError::Protocol {
                    op: "GET_PERMS",
                    path: path.to_owned(),
                    what: format!("bad permission {s:?}"),
                })
            })
            .collect()
    }

    async fn set_perms_tx(&self, tx: u32, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        if perms.is_empty() {
            return Err(XsError::Invalid {
                op: "SET_PERMS",
                path: path.to_owned(),
                reason: "no permissions given".into(),
            });
        }
        let texts: Vec<String> = perms.iter().map(Perm::to_string).collect();
        let mut parts: Vec<&[u8]> = vec![path.as_bytes()];
        parts.extend(texts.iter().map(|t| t.as_bytes()));
        let payload = nul_payload(MsgType::SetPerms, path, &parts)?;
        self.request(MsgType::SetPerms, tx, payload, path)
            .await
            .map(drop)
    }

    /// Send a request and wait for its reply. ERROR replies become [`XsError::Daemon`].
    async fn request(
        &self,
        ty: MsgType,
        tx_id: u32,
        payload: Vec<u8>,
        path: &str,
    ) -> Result<Bytes, XsError> {
        let op = ty.name();
        let max = self.shared.flavor.payload_max();
        let (reply_tx, reply_rx) = oneshot::channel();
        let req_id = {
            let mut st = lock(&self.shared.state);
            if let Some(why) = &st.closed {
                return Err(XsError::Disconnected(why.clone()));
            }
            let req_id = next_req_id(&mut st);
            let frame = wire::encode(ty, req_id, tx_id, &payload, max).map_err(|e| match e {
                WireError::PayloadTooBig { len, max } => XsError::TooBig {
                    op,
                    path: path.to_owned(),
                    len,
                    max,
                },
                other => XsError::Invalid {
                    op,
                    path: path.to_owned(),
                    reason: other.to_string(),
                },
            })?;
            st.pending.insert(
                req_id,
                Pending {
                    ty,
                    reply: reply_tx,
                },
            );
            if matches!(ty, MsgType::Watch | MsgType::Unwatch) {
                st.watch_order.push_back(req_id);
            }
            // Queued under the lock so frames leave in req_id order.
            if self.shared.out.send((req_id, frame)).is_err() {
                st.pending.remove(&req_id);
                return Err(XsError::Disconnected("writer stopped".into()));
            }
            req_id
        };
        trace!(op, path, req_id, "request");
        let reply = match tokio::time::timeout(self.shared.timeout, reply_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(XsError::Disconnected("connection closed".into())),
            Err(_) => {
                {
                    let mut st = lock(&self.shared.state);
                    st.pending.remove(&req_id);
                    st.watch_order.retain(|r| *r != req_id);
                }
                // A daemon that stops answering one request cannot be trusted with the
                // next; dropping the connection makes the owner reconnect.
                close(&self.shared, format!("{op} {path}: no reply"));
                return Err(XsError::Timeout {
                    op,
                    path: path.to_owned(),
                    secs: self.shared.timeout.as_secs(),
                });
            }
        };
        let frame = match reply {
            Ok(f) => f,
            Err(Failure::Disconnected(why)) => return Err(XsError::Disconnected(why)),
            Err(Failure::WriteErrno(errno)) => {
                return Err(XsError::Daemon {
                    op,
                    path: path.to_owned(),
                    errno: Errno::from_os(errno),
                });
            }
        };
        match frame.msg_type() {
            Some(MsgType::Error) => Err(XsError::Daemon {
                op,
                path: path.to_owned(),
                errno: Errno::parse(&frame.payload),
            }),
            Some(t) if t == ty => Ok(frame.payload),
            other => Err(XsError::Protocol {
                op,
                path: path.to_owned(),
                what: format!("reply of type {other:?} ({})", frame.header.ty),
            }),
        }
    }

    /// Queue a request whose reply nobody waits for (abort of a dropped transaction,
    /// unwatch of a dropped watch).
    fn fire_and_forget(&self, ty: MsgType, tx_id: u32, payload: Vec<u8>) {
        send_detached(&self.shared, ty, tx_id, payload);
    }
}

fn send_detached(shared: &Shared, ty: MsgType, tx_id: u32, payload: Vec<u8>) {
    let mut st = lock(&shared.state);
    if st.closed.is_some() {
        return;
    }
    let req_id = next_req_id(&mut st);
    let Ok(frame) = wire::encode(ty, req_id, tx_id, &payload, shared.flavor.payload_max()) else {
        return;
    };
    let (reply, _) = oneshot::channel();
    st.pending.insert(req_id, Pending { ty, reply });
    if matches!(ty, MsgType::Watch | MsgType::Unwatch) {
        st.watch_order.push_back(req_id);
    }
    let _ = shared.out.send((req_id, frame));
}

fn next_req_id(st: &mut State) -> u32 {
    loop {
        let id = st.next_req;
        st.next_req = st.next_req.wrapping_add(1).max(1);
        if !st.pending.contains_key(&id) {
            return id;
        }
    }
}

fn nul_payload(ty: MsgType, path: &str, parts: &[&[u8]]) -> Result<Vec<u8>, XsError> {
    wire::nul_list(parts).map_err(|e| XsError::Invalid {
        op: ty.name(),
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn names(payload: &[u8]) -> Vec<String> {
    wire::split_nul(payload)
        .into_iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Mark the connection lost: fail every waiting request, end every watch.
fn close(shared: &Shared, why: String) {
    let (pending, watches) = {
        let mut st = lock(&shared.state);
        if st.closed.is_none() {
            st.closed = Some(why.clone());
        }
        st.watch_order.clear();
        (
            std::mem::take(&mut st.pending),
            std::mem::take(&mut st.watches),
        )
    };
    if !shared.lost.swap(true, Ordering::Relaxed) {
        debug!(endpoint = %shared.describe, reason = %why, "xenstore connection closed");
    }
    for (_, p) in pending {
        let _ = p.reply.send(Err(Failure::Disconnected(why.clone())));
    }
    drop(watches);
}

async fn write_loop<S: FrameSink>(
    shared: Arc<Shared>,
    mut sink: S,
    mut rx: mpsc::UnboundedReceiver<(u32, Vec<u8>)>,
) {
    while let Some((req_id, frame)) = rx.recv().await {
        if let Err(e) = sink.send(&frame).await {
            let per_request = shared.flavor == Flavor::Device
                && e.raw_os_error().is_some_and(device_request_errno);
            if let (true, Some(errno)) = (per_request, e.raw_os_error()) {
                // The device refused this one frame (failed WATCH, oversized request);
                // the connection itself is fine.
                let p = {
                    let mut st = lock(&shared.state);
                    st.watch_order.retain(|r| *r != req_id);
                    st.pending.remove(&req_id)
                };
                if let Some(p) = p {
                    let _ = p.reply.send(Err(Failure::WriteErrno(errno)));
                }
                continue;
            }
            close(&shared, format!("write failed: {e}"));
            return;
        }
    }
}

fn device_request_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINVAL
            | libc::E2BIG
            | libc::EILSEQ
            | libc::ESRCH
            | libc::EEXIST
            | libc::ENOENT
            | libc::ENOSPC
            | libc::EACCES
            | libc::EPERM
            | libc::ENOMEM
    )
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut reader: R) {
    let mut buf = BytesMut::with_capacity(2 * (wire::HEADER_LEN + wire::PAYLOAD_MAX));
    let why = loop {
        loop {
            match wire::decode(&mut buf) {
                Ok(Some(frame)) => dispatch(&shared, frame),
                Ok(None) => break,
                Err(e) => {
                    warn!(endpoint = %shared.describe, error = %e, "corrupt xenstore stream; dropping the connection");
                    close(&shared, e.to_string());
                    return;
                }
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => break "closed by the daemon".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    close(&shared, why);
}

fn dispatch(shared: &Shared, frame: Frame) {
    let ty = frame.msg_type();
    if ty == Some(MsgType::WatchEvent) {
        watch_event(shared, &frame.payload);
        return;
    }
    let mut st = lock(&shared.state);
    let req_id = frame.header.req_id;
    let matches_request = st
        .pending
        .get(&req_id)
        .is_some_and(|p| Some(p.ty) == ty || ty == Some(MsgType::Error));
    let key = if matches_request {
        Some(req_id)
    } else if shared.flavor == Flavor::Device
        && matches!(ty, Some(MsgType::Watch | MsgType::Unwatch))
    {
        // The kernel answered a WATCH/UNWATCH itself, possibly with a zeroed req_id: it
        // answers them in order.
        st.watch_order
            .iter()
            .copied()
            .find(|r| st.pending.get(r).is_some_and(|p| Some(p.ty) == ty))
    } else {
        None
    };
    let Some(key) = key else {
        debug!(endpoint = %shared.describe, req_id, ty = frame.header.ty, "reply to no pending request; ignored");
        return;
    };
    st.watch_order.retain(|r| *r != key);
    if let Some(p) = st.pending.remove(&key) {
        drop(st);
        let _ = p.reply.send(Ok(frame));
    }
}

fn watch_event(shared: &Shared, payload: &[u8]) {
    let parts = wire::split_nul(payload);
    let (Some(path), Some(token)) = (parts.first(), parts.get(1)) else {
        debug!(endpoint = %shared.describe, "malformed watch event; ignored");
        return;
    };
    let path = String::from_utf8_lossy(path).into_owned();
    let mut st = lock(&shared.state);
    let Some((watched, tx)) = st.watches.get(*token) else {
        trace!(endpoint = %shared.describe, "event for an unknown token; ignored");
        return;
    };
    match tx.try_send(path) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            trace!(endpoint = %shared.describe, "watch queue full; event coalesced");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            // Its owner dropped the watch: remove it from the daemon too.
            let token = token.to_vec();
            let watched = watched.clone();
            st.watches.remove(&token);
            drop(st);
            let mut p = watched.into_bytes();
            p.push(0);
            p.extend_from_slice(&token);
            p.push(0);
            send_detached(shared, MsgType::Unwatch, 0, p);
        }
    }
}

/// A transaction: its requests see a snapshot and take effect together at commit.
#[derive(Debug)]
pub struct Transaction {
    client: XsClient,
    id: u32,
    ended: bool,
}

impl Transaction {
    /// Its id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Read inside the transaction.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.client.read_tx(self.id, path).await
    }

    /// Write inside the transaction.
    pub async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.client.write_tx(self.id, path, value).await
    }

    /// Create a node inside the transaction.
    pub async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.client.simple_tx(self.id, MsgType::Mkdir, path).await
    }

    /// Remove a subtree inside the transaction.
    pub async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.client.simple_tx(self.id, MsgType::Rm, path).await
    }

    /// List children inside the transaction.
    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.client.directory_tx(self.id, path).await
    }

    /// Permissions inside the transaction.
    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>, XsError> {
        self.client.get_perms_tx(self.id, path).await
    }

    /// Set permissions inside the transaction.
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.client.set_perms_tx(self.id, path, perms).await
    }

    /// Commit; `EAGAIN` means it conflicted and nothing happened: redo it.
    pub async fn commit(mut self) -> Result<(), XsError> {
        self.ended = true;
        self.client
            .request(MsgType::TransactionEnd, self.id, b"T\0".to_vec(), "")
            .await
            .map(drop)
    }

    /// Abort: nothing it did takes effect.
    pub async fn abort(mut self) -> Result<(), XsError> {
        self.ended = true;
        self.client
            .request(MsgType::TransactionEnd, self.id, b"F\0".to_vec(), "")
            .await
            .map(drop)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.ended {
            // Guests may hold only a few transactions open: never leak one.
            self.client
                .fire_and_forget(MsgType::TransactionEnd, self.id, b"F\0".to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Demultiplexing rules on a scripted peer. The daemon itself is exercised in
    //! `tests/xenstore.rs`; these cover what it never does (the guest kernel's synthesised
    //! WATCH replies, out-of-order replies, a corrupt stream).
    use super::*;
    use crate::xenstore::wire::Header;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    async fn next_frame(peer: &mut DuplexStream) -> Frame {
        let mut h = [0u8; wire::HEADER_LEN];
        peer.read_exact(&mut h).await.unwrap();
        let header = Header::parse(&h);
        let mut payload = vec![0; header.len as usize];
        peer.read_exact(&mut payload).await.unwrap();
        Frame {
            header,
            payload: payload.into(),
        }
    }

    async fn reply(peer: &mut DuplexStream, ty: u32, req_id: u32, payload: &[u8]) {
        let h = Header {
            ty,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        };
        peer.write_all(&h.to_bytes()).await.unwrap();
        peer.write_all(payload).await.unwrap();
    }

    fn client(flavor: Flavor) -> (XsClient, DuplexStream) {
        let (ours, peer) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(ours);
        (XsClient::from_parts(r, w, flavor, "test".into()), peer)
    }

    #[tokio::test]
    async fn device_watch_reply_with_zero_req_id_and_garbage_event_ids() {
        let (c, mut peer) = client(Flavor::Device);
        let kernel = tokio::spawn(async move {
            let f = next_frame(&mut peer).await;
            assert_eq!(f.msg_type(), Some(MsgType::Watch));
            let parts = wire::split_nul(&f.payload);
            assert_eq!(parts[0], b"control/x");
            let token = parts[1].to_vec();
            // An old kernel: the event first, with an uninitialised req_id, then the OK
            // with req_id zeroed.
            let mut ev = b"control/x\0".to_vec();
            ev.extend_from_slice(&token);
            ev.push(0);
            reply(&mut peer, MsgType::WatchEvent as u32, 0xdead_beef, &ev).await;
            reply(&mut peer, MsgType::Watch as u32, 0, b"OK\0").await;
            peer
        });
        let mut w = c.watch("control/x").await.unwrap();
        assert_eq!(w.events.recv().await.unwrap(), "control/x");
        assert!(w.token.starts_with("guestd"));
        drop(kernel.await.unwrap());
    }

    #[tokio::test]
    async fn replies_out_of_order_reach_their_requests() {
        let (c, mut peer) = client(Flavor::Socket);
        let daemon = tokio::spawn(async move {
            let a = next_frame(&mut peer).await;
            let b = next_frame(&mut peer).await;
            for f in [&b, &a] {
                let path = wire::split_nul(&f.payload)[0].to_vec();
                let mut v = b"value of ".to_vec();
                v.extend_from_slice(&path);
                reply(&mut peer, MsgType::Read as u32, f.header.req_id, &v).await;
            }
            let e = next_frame(&mut peer).await;
            reply(
                &mut peer,
                MsgType::Error as u32,
                e.header.req_id,
                b"EACCES\0",
            )
            .await;
            peer
        });
        let (a, b) = tokio::join!(c.read("a"), c.read("b"));
        assert_eq!(a.unwrap(), b"value of a");
        assert_eq!(b.unwrap(), b"value of b");
        let e = c.write("c", b"x").await.unwrap_err();
        assert_eq!(e.errno(), Some(&Errno::EACCES));
        assert_eq!(e.to_string(), "WRITE c: EACCES");
        drop(daemon.await.unwrap());
    }

    #[tokio::test]
    async fn oversized_incoming_frame_drops_the_connection() {
        let (c, mut peer) = client(Flavor::Socket);
        let daemon = tokio::spawn(async move {
            let f = next_frame(&mut peer).await;
            let h = Header {
                ty: MsgType::Read as u32,
                req_id: f.header.req_id,
                tx_id: 0,
                len: 5000,
            };
            peer.write_all(&h.to_bytes()).await.unwrap();
            peer
        });
        let e = c.read("a").await.unwrap_err();
        assert!(matches!(e, XsError::Disconnected(_)), "{e:?}");
        assert!(!c.is_connected());
        assert!(matches!(c.read("b").await, Err(XsError::Disconnected(_))));
        drop(daemon.await.unwrap());
    }

    #[tokio::test]
    async fn payload_limits_are_enforced_locally() {
        let (dev, _peer) = client(Flavor::Device);
        let v = vec![b'x'; 4080 - "p".len()];
        let e = dev.write("p", &v).await.unwrap_err();
        assert!(
            matches!(
                e,
                XsError::TooBig {
                    len: 4081,
                    max: 4080,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = dev.read("a\0b").await.unwrap_err();
        assert!(matches!(e, XsError::Invalid { .. }), "{e:?}");
    }

    #[test]
    fn perms_parse_and_print() {
        let p = Perm::parse("r5").unwrap();
        assert_eq!(
            p,
            Perm {
                access: Access::Read,
                domid: 5
            }
        );
        assert_eq!(p.to_string(), "r5");
        assert_eq!(Perm::parse("b0").unwrap().access, Access::Both);
        assert!(Perm::parse("x1").is_none());
        assert!(Perm::parse("r").is_none());
    }
}
