//! Session events from systemd-logind's D-Bus signals, for protocols that report them (oVirt's
//! `session-lock`/`-unlock`/`-logon`/`-logoff` and `active-user`).
//!
//! Signals followed (one match rule: every signal logind sends):
//! - `Manager.SessionNew` / `SessionRemoved` → [`Event::SessionNew`] / [`Event::SessionRemoved`];
//! - `Session.Lock` / `Unlock`, and `PropertiesChanged` of `LockedHint` → [`Event::SessionLocked`]
//!   / [`Event::SessionUnlocked`]. Both count, deduplicated per session: many screen lockers never
//!   set `LockedHint`, and the `Lock` signal is all logind knows of them;
//! - `PropertiesChanged` of `Session.Active` and `Seat.ActiveSession` (and every new or removed
//!   session) → [`Event::ActiveUserChanged`] when the active user differs from the last one.
//!
//! Only sessions of class `user` produce events: greeters, lock screens, background jobs and the
//! per-user service manager do not.
//!
//! The active user is the user of the active graphical session, else of seat0's active session,
//! else of any other active user session (a session without a seat, such as ssh, is always
//! active in logind), the lowest session id first; `None` when no user session is left.

#[cfg(feature = "dbus")]
use std::collections::HashMap;

use tokio::task::JoinHandle;

#[cfg(feature = "dbus")]
use crate::actions::logind::LogindSession;
#[cfg(feature = "dbus")]
use crate::events::Event;
use crate::events::EventBus;

/// Starts following logind's signals and publishing session events on `events`. When there is
/// no system bus (busybox images, containers) the task logs that once and ends; when the bus
/// or logind goes away later, it reconnects with back-off and publishes the differences.
pub fn spawn_session_watcher(events: EventBus) -> JoinHandle<()> {
    tokio::spawn(watch(events))
}

#[cfg(not(feature = "dbus"))]
async fn watch(_events: EventBus) {
    tracing::info!("session events are off: built without D-Bus support");
}

#[cfg(feature = "dbus")]
async fn watch(events: EventBus) {
    use std::time::Duration;

    use crate::actions::logind;

    let mut tracker = Tracker::default();
    let mut first = true;
    let mut backoff = Duration::from_secs(1);
    loop {
        let conn = match logind::connect().await {
            Ok(c) => c,
            Err(e) if first => {
                tracing::info!(error = %e.chain(), "no system D-Bus: session events are off");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e.chain(), "system D-Bus still away");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        match follow(&conn, &mut tracker, &events, first).await {
            Ok(()) => tracing::warn!("systemd-logind signals ended; reconnecting"),
            Err(e) if first => {
                tracing::info!(error = %e.chain(), "systemd-logind is not available: session events are off");
                return;
            }
            Err(e) => tracing::warn!(error = %e.chain(), "lost systemd-logind; reconnecting"),
        }
        first = false;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Subscribes, takes a snapshot, then turns signals into events until the stream ends.
#[cfg(feature = "dbus")]
async fn follow(
    conn: &zbus::Connection,
    tracker: &mut Tracker,
    events: &EventBus,
    first: bool,
) -> Result<(), crate::actions::logind::LogindError> {
    use futures_util::StreamExt;
    use zbus::message::Type;
    use zbus::zvariant::{OwnedObjectPath, OwnedValue};

    use crate::actions::logind;

    let rule = zbus::MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(logind::SERVICE)?
        .build();
    // Subscribe before the snapshot so nothing falls between the two.
    let mut stream = logind::call(
        "AddMatch",
        zbus::MessageStream::for_match_rule(rule, conn, Some(256)),
    )
    .await?;
    let sessions = logind::list_sessions(conn).await?;
    for ev in tracker.snapshot(sessions, !first) {
        events.publish(ev);
    }
    // From here every change is published; polling for the active user can stop until this
    // function returns (the guard clears the flag however it does).
    let _live = Live::new(events);
    tracing::info!(
        sessions = tracker.sessions.len(),
        active_user = ?tracker.active_user,
        "following systemd-logind session signals"
    );

    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "bad D-Bus message from logind; skipped");
                continue;
            }
        };
        let hdr = msg.header();
        let (Some(iface), Some(member), Some(path)) = (hdr.interface(), hdr.member(), hdr.path())
        else {
            continue;
        };
        let path = path.as_str().to_owned();
        let out = match (iface.as_str(), member.as_str()) {
            (logind::MANAGER_IFACE, "SessionNew") => {
                let Ok((id, spath)) = msg.body().deserialize::<(String, OwnedObjectPath)>() else {
                    continue;
                };
                match logind::session_at(conn, spath.as_str()).await {
                    Ok(mut s) => {
                        if s.id.is_empty() {
                            s.id = id;
                        }
                        tracker.session_new(s)
                    }
                    Err(e) => {
                        // Gone again before we could look: nothing to report.
                        tracing::debug!(session = %id, error = %e.chain(), "new session vanished");
                        Vec::new()
                    }
                }
            }
            (logind::MANAGER_IFACE, "SessionRemoved") => {
                let Ok((id, _)) = msg.body().deserialize::<(String, OwnedObjectPath)>() else {
                    continue;
                };
                tracker.session_removed(&id)
            }
            (logind::SESSION_IFACE, "Lock") => tracker.lock_signal(&path, true),
            (logind::SESSION_IFACE, "Unlock") => tracker.lock_signal(&path, false),
            ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                let Ok((changed_iface, changed, _invalidated)) =
                    msg.body()
                        .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                else {
                    continue;
                };
                let get_bool = |k: &str| match changed.get(k).map(|v| &**v) {
                    Some(zbus::zvariant::Value::Bool(b)) => Some(*b),
                    _ => None,
                };
                match changed_iface.as_str() {
                    logind::SESSION_IFACE => {
                        tracker.session_changed(&path, get_bool("Active"), get_bool("LockedHint"))
                    }
                    // Seat changes come with the sessions' own Active changes; recomputing is
                    // cheap and covers a logind that sends only the seat's.
                    logind::SEAT_IFACE if changed.contains_key("ActiveSession") => {
                        match logind::list_sessions(conn).await {
                            Ok(all) => tracker.snapshot(all, true),
                            Err(e) => {
                                tracing::debug!(error = %e.chain(), "cannot re-read sessions");
                                Vec::new()
                            }
                        }
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        for ev in out {
            events.publish(ev);
        }
    }
    Ok(())
}

/// Marks session events live on the bus for as long as it is held.
#[cfg(feature = "dbus")]
struct Live<'a>(&'a EventBus);

#[cfg(feature = "dbus")]
impl<'a> Live<'a> {
    fn new(events: &'a EventBus) -> Self {
        events.set_session_events_live(true);
        Self(events)
    }
}

#[cfg(feature = "dbus")]
impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.set_session_events_live(false);
    }
}

/// What the watcher knows of logind's sessions; turns changes into events. Pure: no D-Bus.
#[cfg(feature = "dbus")]
#[derive(Debug, Default)]
pub struct Tracker {
    /// The sessions as logind last described them (`locked` is logind's `LockedHint`).
    sessions: HashMap<String, LogindSession>,
    /// Locked as reported, by session id: `LockedHint` changes and `Lock`/`Unlock` signals.
    /// Apart from the hint, because a `Lock` sent to a session whose locker never sets the hint
    /// must not read as "unlocked" at the next re-read of the sessions.
    locked: HashMap<String, bool>,
    active_user: Option<String>,
}

#[cfg(feature = "dbus")]
impl Tracker {
    /// The active user now, by the rule in the module documentation.
    pub fn active_user(&self) -> Option<&str> {
        self.active_user.as_deref()
    }

    fn compute_active_user(&self) -> Option<String> {
        let mut users: Vec<&LogindSession> = self
            .sessions
            .values()
            .filter(|s| s.is_user_session())
            .collect();
        users.sort_by(|a, b| id_key(&a.id).cmp(&id_key(&b.id)));
        let pick = users
            .iter()
            .find(|s| s.active && s.is_graphical())
            .or_else(|| users.iter().find(|s| s.active && s.seat == "seat0"))
            .or_else(|| users.iter().find(|s| s.active))
            .or_else(|| users.first());
        pick.map(|s| s.user.clone())
    }

    fn active_user_event(&mut self) -> Option<Event> {
        let now = self.compute_active_user();
        (now != self.active_user).then(|| {
            self.active_user = now.clone();
            Event::ActiveUserChanged { user: now }
        })
    }

    /// Replaces the state with `sessions` (a fresh `ListSessions`), returning the differences
    /// as events when `emit` (after a reconnect), or none (the first snapshot).
    pub fn snapshot(&mut self, sessions: Vec<LogindSession>, emit: bool) -> Vec<Event> {
        let new: HashMap<String, LogindSession> =
            sessions.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut out = Vec::new();
        if emit {
            let mut gone: Vec<&LogindSession> = self
                .sessions
                .values()
                .filter(|s| s.is_user_session() && !new.contains_key(&s.id))
                .collect();
            gone.sort_by(|a, b| id_key(&a.id).cmp(&id_key(&b.id)));
            out.extend(gone.into_iter().map(|s| Event::SessionRemoved {
                session: s.id.clone(),
                user: s.user.clone(),
            }));
            let mut ids: Vec<&String> = new.keys().collect();
            ids.sort_by(|a, b| id_key(a).cmp(&id_key(b)));
            for id in ids {
                let s = &new[id];
                if !s.is_user_session() {
                    continue;
                }
                let now = self.combined_lock(s);
                match self.sessions.get(id) {
                    None => {
                        out.push(Event::SessionNew {
                            session: s.id.clone(),
                            user: s.user.clone(),
                        });
                        if now {
                            out.push(Event::SessionLocked {
                                session: s.id.clone(),
                            });
                        }
                    }
                    Some(_) if self.locked.get(id).copied().unwrap_or(false) != now => {
                        out.push(lock_event(&s.id, now));
                    }
                    Some(_) => {}
                }
            }
        }
        self.locked = new
            .values()
            .map(|s| (s.id.clone(), self.combined_lock(s)))
            .collect();
        self.sessions = new;
        if emit {
            out.extend(self.active_user_event());
        } else {
            self.active_user = self.compute_active_user();
        }
        out
    }

    /// The locked state of `s` (a fresh description from logind): what the signals said,
    /// unless logind's hint changed since.
    fn combined_lock(&self, s: &LogindSession) -> bool {
        match (self.sessions.get(&s.id), self.locked.get(&s.id)) {
            (Some(old), Some(&reported)) if old.locked == s.locked => reported,
            _ => s.locked,
        }
    }

    /// A session appeared.
    pub fn session_new(&mut self, s: LogindSession) -> Vec<Event> {
        let mut out = Vec::new();
        if s.is_user_session() && !self.sessions.contains_key(&s.id) {
            out.push(Event::SessionNew {
                session: s.id.clone(),
                user: s.user.clone(),
            });
            if s.locked {
                out.push(Event::SessionLocked {
                    session: s.id.clone(),
                });
            }
        }
        self.locked.insert(s.id.clone(), s.locked);
        self.sessions.insert(s.id.clone(), s);
        out.extend(self.active_user_event());
        out
    }

    /// A session ended.
    pub fn session_removed(&mut self, id: &str) -> Vec<Event> {
        let mut out = Vec::new();
        self.locked.remove(id);
        if let Some(s) = self.sessions.remove(id)
            && s.class == "user"
        {
            out.push(Event::SessionRemoved {
                session: s.id,
                user: s.user,
            });
        }
        out.extend(self.active_user_event());
        out
    }

    fn by_path(&mut self, path: &str) -> Option<&mut LogindSession> {
        self.sessions.values_mut().find(|s| s.path == path)
    }

    /// `Lock` (`true`) or `Unlock` (`false`) was sent to the session at `path`.
    pub fn lock_signal(&mut self, path: &str, locked: bool) -> Vec<Event> {
        self.set_locked(path, locked).into_iter().collect()
    }

    fn set_locked(&mut self, path: &str, locked: bool) -> Option<Event> {
        let s = self.by_path(path)?;
        let (id, user_session) = (s.id.clone(), s.is_user_session());
        let before = self.locked.insert(id.clone(), locked).unwrap_or(false);
        (user_session && before != locked).then(|| lock_event(&id, locked))
    }

    /// `PropertiesChanged` on the session at `path`.
    pub fn session_changed(
        &mut self,
        path: &str,
        active: Option<bool>,
        locked_hint: Option<bool>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(l) = locked_hint {
            if let Some(s) = self.by_path(path) {
                s.locked = l;
            }
            out.extend(self.set_locked(path, l));
        }
        if let Some(a) = active {
            if let Some(s) = self.by_path(path) {
                s.active = a;
                if s.state != "closing" {
                    s.state = if a { "active" } else { "online" }.to_owned();
                }
            }
            out.extend(self.active_user_event());
        }
        out
    }
}

#[cfg(feature = "dbus")]
fn lock_event(id: &str, locked: bool) -> Event {
    let session = id.to_owned();
    if locked {
        Event::SessionLocked { session }
    } else {
        Event::SessionUnlocked { session }
    }
}

#[cfg(feature = "dbus")]
fn id_key(id: &str) -> (bool, u64, &str) {
    let digits = id.trim_start_matches(|c: char| !c.is_ascii_digit());
    (
        id.starts_with(|c: char| !c.is_ascii_digit()),
        digits.parse().unwrap_or(u64::MAX),
        id,
    )
}

#[cfg(all(test, feature = "dbus"))]
mod tests {
    use super::*;

    fn s(id: &str, user: &str, kind: &str, seat: &str, active: bool) -> LogindSession {
        LogindSession {
            id: id.into(),
            path: format!("/org/freedesktop/login1/session/_3{id}"),
            user: user.into(),
            class: "user".into(),
            kind: kind.into(),
            seat: seat.into(),
            active,
            state: if active { "active" } else { "online" }.into(),
            ..Default::default()
        }
    }

    #[test]
    fn logon_vt_switch_lock_and_logoff() {
        let mut t = Tracker::default();
        assert!(t.snapshot(vec![], false).is_empty());
        assert_eq!(t.active_user(), None);

        let alice = s("1", "alice", "tty", "seat0", true);
        let alice_path = alice.path.clone();
        assert_eq!(
            t.session_new(alice),
            [
                Event::SessionNew {
                    session: "1".into(),
                    user: "alice".into()
                },
                Event::ActiveUserChanged {
                    user: Some("alice".into())
                },
            ]
        );
        // bob logs in on another VT: not active, alice stays the active user.
        let bob = s("2", "bob", "tty", "seat0", false);
        let bob_path = bob.path.clone();
        assert_eq!(
            t.session_new(bob),
            [Event::SessionNew {
                session: "2".into(),
                user: "bob".into()
            }]
        );
        // VT switch: logind flips both sessions' Active.
        assert!(t.session_changed(&alice_path, Some(false), None).is_empty());
        assert_eq!(
            t.session_changed(&bob_path, Some(true), None),
            [Event::ActiveUserChanged {
                user: Some("bob".into())
            }]
        );

        // Lock signal, then the locker's LockedHint: one event.
        assert_eq!(
            t.lock_signal(&bob_path, true),
            [Event::SessionLocked {
                session: "2".into()
            }]
        );
        assert!(t.session_changed(&bob_path, None, Some(true)).is_empty());
        assert_eq!(
            t.session_changed(&bob_path, None, Some(false)),
            [Event::SessionUnlocked {
                session: "2".into()
            }]
        );
        assert!(t.lock_signal(&bob_path, false).is_empty());
        assert!(t.lock_signal("/no/such/session", true).is_empty());

        assert_eq!(
            t.session_removed("2"),
            [
                Event::SessionRemoved {
                    session: "2".into(),
                    user: "bob".into()
                },
                Event::ActiveUserChanged {
                    user: Some("alice".into())
                },
            ]
        );
        assert_eq!(
            t.session_removed("1"),
            [
                Event::SessionRemoved {
                    session: "1".into(),
                    user: "alice".into()
                },
                Event::ActiveUserChanged { user: None },
            ]
        );
        assert!(t.session_removed("1").is_empty());
    }

    #[test]
    fn active_user_prefers_graphical_then_seat0_then_remote() {
        let mut t = Tracker::default();
        let mut ssh = s("7", "carol", "tty", "", true);
        ssh.remote = true;
        t.snapshot(vec![ssh, s("3", "bob", "tty", "seat0", false)], false);
        assert_eq!(t.active_user(), Some("carol"));
        t.snapshot(
            vec![
                s("7", "carol", "tty", "", true),
                s("3", "bob", "tty", "seat0", true),
            ],
            false,
        );
        assert_eq!(t.active_user(), Some("bob"));
        t.snapshot(
            vec![
                s("7", "carol", "tty", "", true),
                s("3", "bob", "tty", "seat0", true),
                s("9", "dave", "wayland", "seat1", true),
            ],
            false,
        );
        assert_eq!(t.active_user(), Some("dave"));
    }

    #[test]
    fn non_user_classes_make_no_events() {
        let mut t = Tracker::default();
        let mut greeter = s("c1", "gdm", "wayland", "seat0", true);
        greeter.class = "greeter".into();
        let path = greeter.path.clone();
        assert!(t.session_new(greeter).is_empty());
        assert!(t.lock_signal(&path, true).is_empty());
        assert!(t.session_removed("c1").is_empty());
        assert_eq!(t.active_user(), None);
    }

    #[test]
    fn a_lock_signal_survives_a_reread_with_an_unchanged_hint() {
        let mut t = Tracker::default();
        let bob = s("2", "bob", "tty", "seat0", false);
        let path = bob.path.clone();
        t.snapshot(vec![bob.clone()], false);
        assert_eq!(
            t.lock_signal(&path, true),
            [Event::SessionLocked {
                session: "2".into()
            }]
        );
        // Re-read (seat0's active session changed): logind's hint is still false.
        assert!(t.snapshot(vec![bob.clone()], true).is_empty());
        // The hint moving is news, either way.
        let mut hinted = bob.clone();
        hinted.locked = true;
        assert!(t.snapshot(vec![hinted], true).is_empty());
        assert_eq!(
            t.snapshot(vec![bob], true),
            [Event::SessionUnlocked {
                session: "2".into()
            }]
        );
    }

    #[test]
    fn resnapshot_reports_differences() {
        let mut t = Tracker::default();
        t.snapshot(
            vec![
                s("1", "alice", "tty", "seat0", true),
                s("2", "bob", "tty", "seat0", false),
            ],
            false,
        );
        let mut bob = s("2", "bob", "tty", "seat0", true);
        bob.locked = true;
        let ev = t.snapshot(vec![bob, s("4", "erin", "tty", "", true)], true);
        assert_eq!(
            ev,
            [
                Event::SessionRemoved {
                    session: "1".into(),
                    user: "alice".into()
                },
                Event::SessionLocked {
                    session: "2".into()
                },
                Event::SessionNew {
                    session: "4".into(),
                    user: "erin".into()
                },
                Event::ActiveUserChanged {
                    user: Some("bob".into())
                },
            ]
        );
    }
}
