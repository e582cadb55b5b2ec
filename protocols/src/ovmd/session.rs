//! The driver: one connection's life. It watches `to-guest/last-write`, takes messages in
//! order and acknowledges each by removing it, sends queued pairs as numbered messages with
//! `last-write` as the commit, and keeps every step in the parameter store first, so that a
//! restart (or `kill -9`) at any point neither loses nor repeats a message.
//!
//! Inbound, per message `n`: read and reassemble; store the pair **and** the cursor
//! `last_read = n` in one store transaction; then remove `to-guest/<n>`. A restart before the
//! store transaction takes `n` again; after it, finds `n <= last_read` and only removes it,
//! once the stored fingerprint of the last message taken confirms that `to-guest/<n>` is that
//! message and not a new one in a replaced tree (resume, migration, a restarted xenstored).
//!
//! Outbound, per queued pair: record its number `m` in the store; write `from-guest/<m>`,
//! its chunks, then `from-guest/last-write = m`; then drop it from the queue (and keep the
//! pair when asked to). A restart with a numbered entry compares `m` with the
//! `from-guest/last-write` it finds: committed already, or written again from scratch.

use std::sync::Arc;

use guestd_core::Agent;
use guestd_core::contract::{KeyValueStore, KvError, ProtocolError};
use guestd_core::events::Event;
use guestd_core::params::{self, Origin, Outgoing, ParamStore, State, StoreError};
use tracing::{debug, info, warn};

use super::Ovmd;
use super::event::EVENT_NAME;
use super::first_boot::{self, ROOT_PASSWORD};
use super::inbound::{Assembly, Inbound, Reject, fingerprint, plan_scan};
use super::layout::{self, EVENT_VALUE_MAX};
use super::outbound;

/// Store cursor: the last to-guest number taken.
pub const LAST_READ: &str = "ovmd.last_read";
/// Store cursor: the last from-guest number committed.
pub const LAST_WRITE: &str = "ovmd.last_write";
/// Store mark: the boot the cursors belong to.
pub const BOOT_ID: &str = "ovmd.boot_id";
/// Store mark: the domain the cursors belong to.
pub const DOMID: &str = "ovmd.domid";
/// Store mark: the root password arrived and first-boot configuration still has to run.
pub const CONFIGURE: &str = "ovmd.configure";
/// Store mark: `<n>:<fingerprint>` of the last message taken, to tell a leftover of our own
/// from a new message under the same number.
pub const LAST_TAKEN: &str = "ovmd.last_taken";
/// Store mark: the random salt of the fingerprints.
pub const SALT: &str = "ovmd.salt";

enum Fetched {
    Msg(Inbound, bool),
    Skip(String),
}

fn salt(st: &State) -> u64 {
    st.marks
        .get(SALT)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(0)
}

/// `<n>:<fingerprint>`, or `<n>:skip` for a message that was skipped.
fn taken_mark(n: u64, msg: Option<(u64, &Inbound)>) -> String {
    match msg {
        Some((salt, Inbound::Param { key, value })) => {
            format!("{n}:{:08x}", fingerprint(salt, key, value))
        }
        Some((salt, Inbound::Event { value })) => {
            format!("{n}:{:08x}", fingerprint(salt, EVENT_NAME, value))
        }
        None => format!("{n}:skip"),
    }
}

fn store_err(e: StoreError) -> ProtocolError {
    ProtocolError::Other(guestd_core::runtime::display_chain(&e))
}

/// Lost connection: stop and let the runtime reconnect. Anything else is the store's answer
/// about one node, handled where it happens.
fn fatal(e: &KvError) -> bool {
    matches!(e, KvError::Disconnected(_))
}

pub(super) struct Session<'a> {
    pub ovmd: &'a Ovmd,
    pub kv: Arc<dyn KeyValueStore>,
    pub agent: Option<&'a Agent>,
    first_scan: bool,
    warned_rm: bool,
    warned_utf8: bool,
    out_counter: u64,
}

impl<'a> Session<'a> {
    pub fn new(ovmd: &'a Ovmd, kv: Arc<dyn KeyValueStore>, agent: Option<&'a Agent>) -> Self {
        Self {
            ovmd,
            kv,
            agent,
            first_scan: true,
            warned_rm: false,
            warned_utf8: false,
            out_counter: 0,
        }
    }

    fn params(&self) -> &ParamStore {
        &self.ovmd.params
    }

    async fn update<T, F>(&self, f: F) -> Result<T, ProtocolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> T + Send + 'static,
    {
        self.params().update_async(f).await.map_err(store_err)
    }

    fn publish(&self, event: Event) {
        if let Some(a) = self.agent {
            a.events.publish(event);
        }
    }

    /// Cursors belong to one boot of one domain: a new boot (the kernel's counters restart
    /// with it) or a new domain id (a fresh tree) starts reading from 1 again.
    pub async fn check_identity(&mut self) -> Result<(), ProtocolError> {
        let boot = self.agent.and_then(|a| params::boot_id(&a.paths));
        let domid = match self.kv.read("domid").await {
            Ok(v) => Some(String::from_utf8_lossy(&v).trim().to_owned()),
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(_) => None,
        };
        let fresh_salt = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        let changed = self
            .update(move |st| {
                st.marks
                    .entry(SALT.to_owned())
                    .or_insert_with(|| format!("{fresh_salt:016x}"));
                let mut changed = Vec::new();
                for (mark, now) in [(BOOT_ID, boot), (DOMID, domid)] {
                    let Some(now) = now else { continue };
                    if st.marks.get(mark).is_some_and(|old| *old != now) {
                        changed.push(mark);
                    }
                    st.marks.insert(mark.to_owned(), now);
                }
                if !changed.is_empty() {
                    st.cursors.insert(LAST_READ.to_owned(), 0);
                }
                changed
            })
            .await?;
        if !changed.is_empty() {
            info!(changed = ?changed, "new boot or domain: reading manager messages from 1 again");
        }
        Ok(())
    }

    /// Take every committed message not taken yet.
    pub async fn scan(&mut self) -> Result<(), ProtocolError> {
        let raw = match self.kv.read(layout::TO_GUEST_LAST_WRITE).await {
            Ok(v) => v,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(KvError::NotFound(_)) => return Ok(()),
            Err(e) => {
                warn!(error = %e, "cannot read to-guest/last-write");
                return Ok(());
            }
        };
        let Some(last_write) = layout::parse_counter(&raw) else {
            warn!(
                bytes = raw.len(),
                "to-guest/last-write is not a number; ignored"
            );
            return Ok(());
        };
        let st = self.params().load_async().await.map_err(store_err)?;
        let mut last_read = st.cursor(LAST_READ);
        if last_write == last_read && !self.first_scan {
            return Ok(());
        }
        let children = match self.kv.directory(layout::TO_GUEST).await {
            Ok(c) => c,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(KvError::NotFound(_)) => Vec::new(),
            Err(e) => {
                warn!(error = %e, "cannot list to-guest");
                return Ok(());
            }
        };
        let mut plan = plan_scan(last_read, last_write, &children);
        if plan.reset {
            info!(
                last_read,
                last_write,
                "to-guest/last-write went back (resume or migration): numbering restarts"
            );
            last_read = 0;
        } else if self.first_scan && last_read > 0 && plan.taken.contains(&last_read) {
            // The last message taken is still there: a restart between storing and removing
            // it, or a fresh tree whose numbering reached the same point. Its fingerprint
            // tells which.
            let mark = st.marks.get(LAST_TAKEN).cloned();
            let salt = salt(&st);
            let seen = match self.fetch(last_read).await? {
                Fetched::Msg(msg, _) => taken_mark(last_read, Some((salt, &msg))),
                Fetched::Skip(_) => taken_mark(last_read, None),
            };
            if mark.as_deref() != Some(seen.as_str()) {
                info!(
                    n = last_read,
                    "to-guest was replaced under the same numbers (resume, migration or a new xenstore): numbering restarts"
                );
                last_read = 0;
                plan = plan_scan(0, last_write, &children);
            }
        }
        if last_read != st.cursor(LAST_READ) {
            self.update(move |st| {
                st.cursors.insert(LAST_READ.to_owned(), last_read);
            })
            .await?;
        }
        if self.first_scan {
            for n in &plan.taken {
                debug!(n, "removing a message taken before a restart");
                self.acknowledge(*n).await?;
            }
            self.first_scan = false;
        }
        for n in plan.todo {
            self.take(n).await?;
        }
        let target = plan.last_read;
        self.update(move |st| {
            if st.cursor(LAST_READ) < target {
                st.cursors.insert(LAST_READ.to_owned(), target);
            }
        })
        .await?;
        Ok(())
    }

    /// Remove `to-guest/<n>`, as Oracle's driver acknowledges a message.
    async fn acknowledge(&mut self, n: u64) -> Result<(), ProtocolError> {
        match self.kv.remove(&layout::to_guest(n)).await {
            Ok(()) | Err(KvError::NotFound(_)) => Ok(()),
            Err(e) if fatal(&e) => Err(e.into()),
            Err(e) => {
                if !self.warned_rm {
                    warn!(error = %e, "cannot remove taken manager messages; relying on the stored cursor");
                    self.warned_rm = true;
                }
                Ok(())
            }
        }
    }

    async fn skip(&mut self, n: u64, why: &str) -> Result<(), ProtocolError> {
        warn!(n, reason = why, "manager message skipped");
        let mark = taken_mark(n, None);
        self.update(move |st| {
            st.cursors.insert(LAST_READ.to_owned(), n);
            st.marks.insert(LAST_TAKEN.to_owned(), mark);
        })
        .await?;
        self.acknowledge(n).await
    }

    /// Read and reassemble message `n`, as the driver does: the key, the number of chunks
    /// from a listing, then chunks `0..count` by index.
    async fn fetch(&mut self, n: u64) -> Result<Fetched, ProtocolError> {
        let node = layout::to_guest(n);
        let key = match self.kv.read(&node).await {
            Ok(k) => k,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => return Ok(Fetched::Skip(format!("cannot read it: {e}"))),
        };
        let mut asm = match Assembly::new(&key) {
            Ok(a) => a,
            Err(r) => return Ok(Fetched::Skip(r.to_string())),
        };
        let count = match self.kv.directory(&node).await {
            Ok(c) => c.len(),
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => return Ok(Fetched::Skip(format!("cannot list its chunks: {e}"))),
        };
        if let Err(r) = asm.expect_chunks(count) {
            return Ok(Fetched::Skip(r.to_string()));
        }
        for index in 0..count {
            let chunk = match self.kv.read(&layout::to_guest_chunk(n, index)).await {
                Ok(c) => c,
                Err(e) if fatal(&e) => return Err(e.into()),
                Err(KvError::NotFound(_)) => {
                    let r = Reject::MissingChunk { index, count };
                    return Ok(Fetched::Skip(r.to_string()));
                }
                Err(e) => return Ok(Fetched::Skip(format!("cannot read chunk {index}: {e}"))),
            };
            if let Err(r) = asm.push(&chunk) {
                return Ok(Fetched::Skip(r.to_string()));
            }
        }
        let (msg, lossy) = asm.finish();
        Ok(Fetched::Msg(msg, lossy))
    }

    async fn take(&mut self, n: u64) -> Result<(), ProtocolError> {
        let (msg, lossy) = match self.fetch(n).await? {
            Fetched::Msg(m, lossy) => (m, lossy),
            Fetched::Skip(why) => return self.skip(n, &why).await,
        };
        if lossy && !self.warned_utf8 {
            warn!(
                n,
                "manager message is not UTF-8; invalid bytes replaced by U+FFFD"
            );
            self.warned_utf8 = true;
        }
        let salt = salt(&self.params().load_async().await.map_err(store_err)?);
        let mark = taken_mark(n, Some((salt, &msg)));
        match msg {
            Inbound::Param { key, value } => {
                let trigger = key == ROOT_PASSWORD;
                let k = key.clone();
                self.update(move |st| {
                    st.set(&k, &value, Origin::Received);
                    st.cursors.insert(LAST_READ.to_owned(), n);
                    st.marks.insert(LAST_TAKEN.to_owned(), mark);
                    if trigger {
                        st.marks.insert(CONFIGURE.to_owned(), "pending".into());
                    }
                })
                .await?;
                // Never the value: it may be a password.
                info!(n, key = %key, "parameter received");
                self.acknowledge(n).await?;
                self.publish(Event::ParamReceived { key });
                if trigger {
                    self.configure().await?;
                }
            }
            Inbound::Event { value } => {
                self.update(move |st| {
                    st.cursors.insert(LAST_READ.to_owned(), n);
                    st.marks.insert(LAST_TAKEN.to_owned(), mark);
                })
                .await?;
                self.acknowledge(n).await?;
                if value.len() > EVENT_VALUE_MAX {
                    warn!(
                        n,
                        bytes = value.len(),
                        "VMAPIEvent larger than Oracle's driver can deliver; dropped"
                    );
                } else {
                    // Its format is not public: log and pass it on, act on nothing.
                    info!(n, bytes = value.len(), "VMAPIEvent received");
                    self.publish(Event::HostEvent { value });
                }
            }
        }
        Ok(())
    }

    /// Run first-boot configuration if the root password arrived and it has not run yet.
    pub async fn configure(&mut self) -> Result<(), ProtocolError> {
        let st = self.params().load_async().await.map_err(store_err)?;
        if st.marks.get(CONFIGURE).map(String::as_str) != Some("pending") {
            return Ok(());
        }
        let received = st.received();
        let outcome = first_boot::run(self.agent, &received).await;
        drop(received);
        let applied = matches!(outcome, first_boot::TriggerOutcome::Applied(_));
        let status = outcome.status_message();
        let queued = status.is_some();
        // One store transaction: the mark goes with the status queued, so a crash in between
        // neither reports twice nor never.
        self.update(move |st| {
            st.marks.remove(CONFIGURE);
            if applied {
                // Used: the password is not kept any longer than needed (ovmd.md §6 q9).
                st.remove(ROOT_PASSWORD);
            }
            if let Some(v) = status {
                // Like Oracle's SEND_MESSAGE: sent, not kept in the list.
                st.enqueue(first_boot::STATUS_KEY, &v, false);
            }
        })
        .await?;
        if queued {
            self.ovmd.kick.notify_one();
        }
        Ok(())
    }

    /// After (re)connecting: the outbound counter from the tree, and numbered entries of the
    /// queue settled against it.
    pub async fn recover_outbox(&mut self) -> Result<(), ProtocolError> {
        let committed = match self.kv.read(layout::FROM_GUEST_LAST_WRITE).await {
            Ok(v) => layout::parse_counter(&v),
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(_) => None,
        };
        let st = self.params().load_async().await.map_err(store_err)?;
        if committed.is_none() && st.cursor(LAST_WRITE) > 0 {
            info!(
                was = st.cursor(LAST_WRITE),
                "from-guest/last-write is gone (reset or cleared by the manager): numbering restarts at 1"
            );
        }
        // Never below what the manager may not have read yet (ovmd.md §6 q5).
        self.out_counter = committed.unwrap_or(0);
        let counter = self.out_counter;
        let done: Vec<Outgoing> = self
            .update(move |st| {
                let (done, rest): (Vec<Outgoing>, Vec<Outgoing>) = std::mem::take(&mut st.outbox)
                    .into_iter()
                    .partition(|o| o.seq.is_some_and(|m| m <= counter && committed.is_some()));
                st.outbox = rest;
                for o in &done {
                    if o.keep {
                        st.set(&o.key, &o.value, Origin::Sent);
                    }
                }
                st.cursors.insert(LAST_WRITE.to_owned(), counter);
                done
            })
            .await?;
        for o in done {
            info!(m = ?o.seq, key = %o.key, "message committed before a restart");
            self.ovmd.complete(o.id, Ok(o.seq.unwrap_or(0)));
        }
        Ok(())
    }

    /// Send every queued pair, oldest first.
    pub async fn drain_outbox(&mut self) -> Result<(), ProtocolError> {
        loop {
            let st = self.params().load_async().await.map_err(store_err)?;
            let Some(next) = st.outbox.first().cloned() else {
                return Ok(());
            };
            self.send_one(next).await?;
        }
    }

    async fn send_one(&mut self, o: Outgoing) -> Result<(), ProtocolError> {
        let m = self.out_counter + 1;
        let id = o.id;
        let retry = o.seq.is_some();
        self.update(move |st| {
            if let Some(e) = st.outbox.iter_mut().find(|e| e.id == id) {
                e.seq = Some(m);
            }
        })
        .await?;
        if retry {
            // Written in part before a restart and never committed: start it clean so no
            // stale chunk of a longer value survives.
            match self.kv.remove(&layout::from_guest(m)).await {
                Ok(()) | Err(KvError::NotFound(_)) => {}
                Err(e) if fatal(&e) => return Err(e.into()),
                Err(e) => debug!(error = %e, "cannot clear an unfinished message"),
            }
        }
        for w in outbound::plan(m, &o.key, &o.value, self.ovmd.cfg.chunk_size) {
            match self.kv.write(&w.path, &w.value).await {
                Ok(()) => {}
                Err(e) if fatal(&e) => return Err(e.into()),
                Err(e) => return self.fail(o, m, &w.path, &e).await,
            }
        }
        self.out_counter = m;
        let (key, value, keep) = (o.key.clone(), o.value, o.keep);
        self.update(move |st| {
            st.outbox.retain(|e| e.id != id);
            if keep {
                st.set(&key, &value, Origin::Sent);
            }
            st.cursors.insert(LAST_WRITE.to_owned(), m);
        })
        .await?;
        info!(m, key = %o.key, "message sent to the manager");
        self.ovmd.complete(id, Ok(m));
        Ok(())
    }

    /// A write the store refused (quota, permissions): that send fails, `last-write` stays
    /// where it was, the partial message is removed, serving goes on (ovmd.md §6 q4).
    async fn fail(
        &mut self,
        o: Outgoing,
        m: u64,
        path: &str,
        e: &KvError,
    ) -> Result<(), ProtocolError> {
        let why = match e {
            KvError::NoSpace(_) => format!(
                "xenstore refused {path}: the guest's node quota is exceeded (ENOSPC; C xenstored \
                 takes records below 2048 bytes by default: lower the chunk size or raise the \
                 daemon's -S)"
            ),
            KvError::TooBig(_) => format!("xenstore refused {path}: too big"),
            KvError::PermissionDenied(_) => {
                format!("xenstore refused {path}: permission denied (EACCES)")
            }
            other => format!("xenstore refused {path}: {other}"),
        };
        warn!(m, key = %o.key, reason = %why, "message to the manager failed");
        match self.kv.remove(&layout::from_guest(m)).await {
            Ok(()) | Err(KvError::NotFound(_)) => {}
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => debug!(error = %e, "cannot remove the partial message"),
        }
        let id = o.id;
        self.update(move |st| st.outbox.retain(|e| e.id != id))
            .await?;
        self.ovmd.complete(id, Err(why));
        Ok(())
    }
}
