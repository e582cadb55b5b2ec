//! Lock screen and log off through systemd-logind: `LockSession`/`LockSessions` and
//! `TerminateSession`, for the active graphical session (else seat0's active session), every
//! session of a named user, or every user session.
//!
//! Only sessions of class `user` are targets: greeters, lock screens, background jobs and the
//! per-user service manager are never locked or ended by name. Locking asks the session's screen
//! locker (logind emits `Lock` on the session); a plain text console has no locker, so nothing
//! visible happens there, but the request is still made and reported.

use async_trait::async_trait;

use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, SessionTarget};
use crate::actions::logind::{self, LogindError, LogindSession};

/// Handles [`Action::LockScreen`] and [`Action::LogOff`].
#[derive(Debug, Default)]
pub struct SessionHandler;

impl SessionHandler {
    /// A handler talking to the system bus's logind.
    pub fn new() -> Self {
        Self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lock,
    LogOff,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Lock => "lock the screen",
            Op::LogOff => "log off",
        }
    }
}

fn unreachable_logind(op: Op, e: &LogindError) -> ActionError {
    ActionError::Failed(format!(
        "Cannot {}: systemd-logind is needed and not reachable ({})",
        op.verb(),
        e.chain()
    ))
}

/// Picks the sessions `target` names. `seat0_active` is seat0's `ActiveSession`.
/// The result is sorted by id and never empty.
pub fn select<'a>(
    sessions: &'a [LogindSession],
    seat0_active: Option<&str>,
    target: &SessionTarget,
) -> Result<Vec<&'a LogindSession>, ActionError> {
    let users = || sessions.iter().filter(|s| s.is_user_session());
    let mut chosen: Vec<&LogindSession> = match target {
        SessionTarget::Active => {
            let graphical: Vec<_> = users().filter(|s| s.active && s.is_graphical()).collect();
            if graphical.is_empty() {
                users()
                    .filter(|s| seat0_active.is_some_and(|a| a == s.id))
                    .collect()
            } else {
                graphical
            }
        }
        SessionTarget::User(name) => users().filter(|s| &s.user == name).collect(),
        SessionTarget::All => users().collect(),
    };
    if chosen.is_empty() {
        return Err(ActionError::NotFound(match target {
            SessionTarget::Active => {
                "No active session: no active graphical session and no active user session on seat0"
                    .to_owned()
            }
            SessionTarget::User(name) => format!("User {name} has no session"),
            SessionTarget::All => "No user is logged in".to_owned(),
        }));
    }
    chosen.sort_by(|a, b| natural_id(&a.id).cmp(&natural_id(&b.id)));
    Ok(chosen)
}

// logind ids are numbers (`3`, `12`) or `c` + number for sessions without audit ids: sort
// numerically so `2` comes before `10`.
fn natural_id(id: &str) -> (bool, u64, &str) {
    let digits = id.trim_start_matches(|c: char| !c.is_ascii_digit());
    (
        id.starts_with(|c: char| !c.is_ascii_digit()),
        digits.parse().unwrap_or(u64::MAX),
        id,
    )
}

async fn run(op: Op, target: SessionTarget) -> Result<Outcome, ActionError> {
    let conn = logind::connect()
        .await
        .map_err(|e| unreachable_logind(op, &e))?;
    let sessions = logind::list_sessions(&conn)
        .await
        .map_err(|e| unreachable_logind(op, &e))?;
    let seat0_active = if target == SessionTarget::Active {
        logind::seat0_active_session(&conn)
            .await
            .map_err(|e| unreachable_logind(op, &e))?
    } else {
        None
    };
    let chosen = select(&sessions, seat0_active.as_deref(), &target)?;
    let ids: Vec<String> = chosen.iter().map(|s| s.id.clone()).collect();
    let mgr = logind::manager(&conn)
        .await
        .map_err(|e| unreachable_logind(op, &e))?;
    let mut done = Vec::with_capacity(ids.len());
    let mut errors = Vec::new();
    if op == Op::Lock && target == SessionTarget::All {
        logind::call("LockSessions", mgr.lock_sessions())
            .await
            .map_err(|e| ActionError::Failed(e.chain()))?;
        done = ids;
    } else {
        for s in &chosen {
            let r = match op {
                Op::Lock => logind::call("LockSession", mgr.lock_session(&s.id)).await,
                Op::LogOff => logind::call("TerminateSession", mgr.terminate_session(&s.id)).await,
            };
            match r {
                Ok(()) => done.push(s.id.clone()),
                Err(e) => {
                    tracing::warn!(session = %s.id, user = %s.user, error = %e.chain(), "cannot {}", op.verb());
                    errors.push(format!("session {}: {}", s.id, e.chain()));
                }
            }
        }
    }
    if done.is_empty() {
        return Err(ActionError::Failed(format!(
            "Cannot {}: {}",
            op.verb(),
            errors.join("; ")
        )));
    }
    tracing::info!(sessions = ?done, "{}", match op {
        Op::Lock => "asked screen lockers to lock",
        Op::LogOff => "terminated sessions",
    });
    Ok(Outcome::Sessions(done))
}

#[async_trait]
impl ActionHandler for SessionHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::LockScreen, ActionKind::LogOff]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        match action {
            Action::LockScreen(t) => run(Op::Lock, t).await,
            Action::LogOff(t) => run(Op::LogOff, t).await,
            other => Err(ActionError::InvalidArgument(format!(
                "session handler got {:?}",
                other.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, user: &str, class: &str, kind: &str, active: bool) -> LogindSession {
        LogindSession {
            id: id.into(),
            user: user.into(),
            class: class.into(),
            kind: kind.into(),
            active,
            state: if active { "active" } else { "online" }.into(),
            ..Default::default()
        }
    }

    fn ids(v: Result<Vec<&LogindSession>, ActionError>) -> Vec<String> {
        v.unwrap().iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn active_prefers_graphical_then_seat0() {
        let all = vec![
            s("c1", "gdm", "greeter", "wayland", true),
            s("2", "bob", "user", "tty", true),
            s("10", "alice", "user", "x11", true),
            s("3", "carol", "user", "x11", false),
        ];
        assert_eq!(ids(select(&all, Some("2"), &SessionTarget::Active)), ["10"]);
        let no_gui = vec![
            s("c1", "gdm", "greeter", "wayland", true),
            s("2", "bob", "user", "tty", true),
            s("3", "carol", "user", "x11", false),
        ];
        assert_eq!(
            ids(select(&no_gui, Some("2"), &SessionTarget::Active)),
            ["2"]
        );
        // seat0's active session is a greeter: no user session to act on.
        let e = select(&no_gui, Some("c1"), &SessionTarget::Active).unwrap_err();
        assert!(
            matches!(e, ActionError::NotFound(ref t) if t.contains("No active session")),
            "{e}"
        );
        assert!(select(&no_gui, None, &SessionTarget::Active).is_err());
    }

    #[test]
    fn user_and_all_skip_non_user_classes_and_sort_numerically() {
        let mut closing = s("7", "bob", "user", "tty", false);
        closing.state = "closing".into();
        let all = vec![
            s("10", "bob", "user", "tty", false),
            s("2", "bob", "user", "x11", true),
            s("c3", "bob", "background", "unspecified", false),
            s("4", "alice", "user", "tty", false),
            closing,
        ];
        assert_eq!(
            ids(select(&all, None, &SessionTarget::User("bob".into()))),
            ["2", "10"]
        );
        assert_eq!(
            ids(select(&all, None, &SessionTarget::All)),
            ["2", "4", "10"]
        );
        let e = select(&all, None, &SessionTarget::User("mallory".into())).unwrap_err();
        assert_eq!(e.to_string(), "User mallory has no session");
        let e = select(&[], None, &SessionTarget::All).unwrap_err();
        assert!(matches!(e, ActionError::NotFound(_)));
    }
}
