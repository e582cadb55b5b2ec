//! Oracle VM messaging (ovmd) over xenstore `control/oracle-vmapi/` (ovmd.md): what UEK's
//! `ovmapi` driver and Oracle's `ovmd` do, through the key-value store contract.
//!
//! - [`layout`]: the keys and Oracle's limits.
//! - [`inbound`] / [`outbound`]: pure message rules (reassembly and acknowledgement; 2048-byte
//!   chunks with `last-write` as the commit).
//! - [`event`]: `VMAPIEvent` and the event names of `ovmd -e`.
//! - [`first_boot`]: where first-boot template configuration is triggered.
//! - [`template`]: the `com.oracle.linux.*` keys mapped to protocol-neutral instance
//!   configuration.
//! - [`Ovmd`]: the [`KvProtocol`]; it keeps pairs, cursors and the send queue in the
//!   persistent parameter store ([`guestd_core::params`]).

pub mod event;
pub mod first_boot;
pub mod inbound;
pub mod layout;
pub mod outbound;
mod session;
pub mod template;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use guestd_core::Agent;
use guestd_core::contract::{KeyValueStore, KvError, KvProtocol, ProtocolError};
use guestd_core::params::{ParamStore, StoreError};
use tokio::sync::{Notify, oneshot};
use tracing::info;

pub use event::{EVENT_NAME, EventType};
pub use outbound::Invalid;
pub use session::{BOOT_ID, CONFIGURE, DOMID, LAST_READ, LAST_WRITE};

/// Settings of the protocol.
#[derive(Clone, Debug)]
pub struct OvmdConfig {
    /// Outbound chunk size: 2048 as UEK writes (ovmd.md §6 q4: a smaller one fits C
    /// xenstored's default node quota).
    pub chunk_size: usize,
}

impl Default for OvmdConfig {
    fn default() -> Self {
        Self {
            chunk_size: layout::CHUNK,
        }
    }
}

/// What became of a pair given to [`Ovmd::send`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Committed as message `seq`.
    Sent {
        /// Its number under `from-guest`.
        seq: u64,
    },
    /// Safely queued; it goes out once xenstore is reachable.
    Queued,
}

/// Why a pair was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The pair breaks Oracle's rules.
    #[error("Invalid parameter: {0}")]
    Invalid(#[from] Invalid),
    /// It could not be queued.
    #[error("Cannot queue the parameter")]
    Store(#[from] StoreError),
    /// xenstore refused it.
    #[error("{0}")]
    Failed(String),
}

type SendResult = Result<u64, String>;

/// Who waits for which queued entry, and results nobody waited for yet (a send can finish
/// between being queued and its sender registering).
#[derive(Debug, Default)]
struct Completions {
    waiters: HashMap<u64, oneshot::Sender<SendResult>>,
    unclaimed: VecDeque<(u64, SendResult)>,
}

type Waiters = std::sync::Mutex<Completions>;

/// The ovmd protocol. Shared (`Arc`) by the runtime, which calls [`KvProtocol::run`] for
/// each xenstore connection, and the local control socket, which calls [`Ovmd::send`].
#[derive(Debug)]
pub struct Ovmd {
    params: ParamStore,
    cfg: OvmdConfig,
    kick: Notify,
    waiters: Waiters,
    connected: AtomicBool,
}

impl Ovmd {
    /// The protocol over a parameter store.
    pub fn new(params: ParamStore, cfg: OvmdConfig) -> Self {
        Self {
            params,
            cfg,
            kick: Notify::new(),
            waiters: Waiters::default(),
            connected: AtomicBool::new(false),
        }
    }

    /// The parameter store.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// True while a xenstore connection is being served.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Send `key=value` to the manager (and keep it in the list when `keep`, as Oracle's
    /// WRITE_PARAMETER does). The pair is queued on disk first; the answer comes once it is
    /// committed, or [`Delivery::Queued`] when that takes longer than `wait` or xenstore is
    /// not connected.
    pub async fn send(
        &self,
        key: &str,
        value: &str,
        keep: bool,
        wait: Duration,
    ) -> Result<Delivery, SendError> {
        outbound::validate(key, value)?;
        let (k, v) = (key.to_owned(), value.to_owned());
        let id = self
            .params
            .update_async(move |st| st.enqueue(&k, &v, keep))
            .await?;
        let rx = self.wait_for(id);
        self.kick.notify_one();
        if !self.is_connected() {
            return Ok(Delivery::Queued);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(seq))) => Ok(Delivery::Sent { seq }),
            Ok(Ok(Err(why))) => Err(SendError::Failed(why)),
            Ok(Err(_)) | Err(_) => {
                self.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiters
                    .remove(&id);
                Ok(Delivery::Queued)
            }
        }
    }

    fn complete(&self, id: u64, result: SendResult) {
        const UNCLAIMED: usize = 64;
        let mut c = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        match c.waiters.remove(&id) {
            Some(w) => {
                let _ = w.send(result);
            }
            None => {
                if c.unclaimed.len() >= UNCLAIMED {
                    c.unclaimed.pop_front();
                }
                c.unclaimed.push_back((id, result));
            }
        }
    }

    /// Without a daemon (the CLI on its own): settle and send the queue through `kv` once.
    pub async fn flush_outbox(&self, kv: Arc<dyn KeyValueStore>) -> Result<(), ProtocolError> {
        let mut s = session::Session::new(self, kv, None);
        s.recover_outbox().await?;
        s.drain_outbox().await
    }

    /// The result of queued entry `id`, whenever it is settled (at once if it already was).
    pub fn wait_for(&self, id: u64) -> oneshot::Receiver<SendResult> {
        let (tx, rx) = oneshot::channel();
        let mut c = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        match c.unclaimed.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                if let Some((_, r)) = c.unclaimed.remove(at) {
                    let _ = tx.send(r);
                }
            }
            None => {
                c.waiters.insert(id, tx);
            }
        }
        rx
    }
}

/// Clears the connected flag however `run` ends.
struct Connected<'a>(&'a AtomicBool);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[async_trait]
impl KvProtocol for Ovmd {
    fn name(&self) -> &'static str {
        "ovmd"
    }

    async fn run(
        &self,
        store: Arc<dyn KeyValueStore>,
        agent: Agent,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProtocolError> {
        let mut s = session::Session::new(self, Arc::clone(&store), Some(&agent));
        s.check_identity().await?;
        // Before anything else, so no commit goes unseen; it fires at once, which takes
        // whatever is pending.
        let mut watch = store.watch(layout::TO_GUEST_LAST_WRITE).await?;
        self.connected.store(true, Ordering::Relaxed);
        let _connected = Connected(&self.connected);
        info!(store = %store.describe(), "Oracle VM messaging connected");
        s.recover_outbox().await?;
        s.configure().await?;
        s.drain_outbox().await?;
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
                ev = watch.events.recv() => match ev {
                    Some(_) => s.scan().await?,
                    None => {
                        return Err(KvError::Disconnected("the watch on to-guest/last-write ended".into()).into());
                    }
                },
                _ = self.kick.notified() => s.drain_outbox().await?,
            }
        }
    }
}
