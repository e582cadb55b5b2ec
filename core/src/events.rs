//! The typed event stream: things that happened in the guest, for protocols that report
//! changes (oVirt session events, address changes). Logs are separate (`tracing`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;

/// Something that happened in the guest.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A user session started.
    SessionNew {
        /// Session id.
        session: String,
        /// User name.
        user: String,
    },
    /// A user session ended.
    SessionRemoved {
        /// Session id.
        session: String,
        /// User name.
        user: String,
    },
    /// A session was locked.
    SessionLocked {
        /// Session id.
        session: String,
    },
    /// A session was unlocked.
    SessionUnlocked {
        /// Session id.
        session: String,
    },
    /// The active user (of the active graphical or console session) changed; `None` when
    /// nobody is logged in.
    ActiveUserChanged {
        /// The new active user.
        user: Option<String>,
    },
    /// An address was added to an interface.
    AddressAdded {
        /// Interface name.
        iface: String,
        /// The address.
        addr: IpAddr,
    },
    /// An address was removed from an interface.
    AddressRemoved {
        /// Interface name.
        iface: String,
        /// The address.
        addr: IpAddr,
    },
    /// Filesystems were frozen (`true`) or thawed (`false`).
    FreezeChanged {
        /// Frozen now.
        frozen: bool,
    },
    /// The freeze watchdog thawed because no thaw came in time.
    FreezeWatchdogFired,
    /// The number of online CPUs changed.
    CpusChanged {
        /// Online CPUs now.
        online: u32,
    },
    /// The agent is about to power off or reboot the guest.
    ShuttingDown,
    /// A key-value pair arrived from the host (Oracle VM messaging) and was stored.
    ParamReceived {
        /// Its key (never the value: it may be a password).
        key: String,
    },
    /// The host sent an event the agent does not interpret (Oracle VM `VMAPIEvent`).
    HostEvent {
        /// Its payload, verbatim.
        value: String,
    },
    /// A local user posted an event (`ovmd -e NAME`).
    UserEvent {
        /// The event's name.
        name: String,
    },
}

/// Fan-out of [`Event`]s to every subscriber. Slow subscribers lose old events (and are told
/// so by `RecvError::Lagged`), never block the publisher.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    /// Session events are being published as they happen (see [`EventBus::session_events_live`]).
    session_events: Arc<AtomicBool>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(256)
    }
}

impl EventBus {
    /// A bus keeping up to `capacity` unread events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            session_events: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while a watcher follows the session manager and publishes every logon, logoff and
    /// active-user change as it happens: a protocol that would poll for the active user
    /// needs no poll then (an idle agent should not wake for nothing).
    pub fn session_events_live(&self) -> bool {
        self.session_events.load(Ordering::Relaxed)
    }

    /// Set by the session watcher when it starts and stops following.
    pub fn set_session_events_live(&self, live: bool) {
        self.session_events.store(live, Ordering::Relaxed);
    }

    /// Publish; fine when nobody listens.
    pub fn publish(&self, event: Event) {
        tracing::debug!(?event, "event");
        let _ = self.tx.send(event);
    }

    /// A new subscriber, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_published_after_they_subscribe() {
        let bus = EventBus::new(4);
        bus.publish(Event::ShuttingDown); // nobody listening: dropped, no error
        let mut rx = bus.subscribe();
        bus.publish(Event::FreezeChanged { frozen: true });
        assert_eq!(
            rx.recv().await.unwrap(),
            Event::FreezeChanged { frozen: true }
        );
    }

    #[test]
    fn session_events_flag_is_shared_by_clones() {
        let bus = EventBus::default();
        let seen_by_a_session = bus.clone();
        assert!(!seen_by_a_session.session_events_live());
        bus.set_session_events_live(true);
        assert!(seen_by_a_session.session_events_live());
        bus.set_session_events_live(false);
        assert!(!seen_by_a_session.session_events_live());
    }
}
