//! Sessions from systemd-logind over D-Bus (zbus, pure Rust).
//!
//! [`sessions`] takes a connection so it can be pointed at any bus: the system bus here, a
//! private one in a systemd-booted test environment.

use std::collections::HashMap;
use std::time::Duration;

use guestd_core::contract::FactError;
use guestd_core::model::{SessionSource, UserSession};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

const DEST: &str = "org.freedesktop.login1";
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long we wait for the bus or logind before falling back to utmp.
pub const TIMEOUT: Duration = Duration::from_secs(3);

fn dbus_err(what: &str, e: zbus::Error) -> FactError {
    FactError::Unavailable(format!("systemd-logind: {what}: {e}"))
}

/// Connects to the system bus, within [`TIMEOUT`].
pub async fn system_bus() -> Result<zbus::Connection, FactError> {
    match tokio::time::timeout(TIMEOUT, zbus::Connection::system()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(dbus_err("cannot connect to the system bus", e)),
        Err(_) => Err(FactError::Timeout {
            what: "the system bus".into(),
            seconds: TIMEOUT.as_secs(),
        }),
    }
}

/// Every session logind knows, with its properties.
pub async fn sessions(conn: &zbus::Connection) -> Result<Vec<UserSession>, FactError> {
    let reply = conn
        .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "ListSessions", &())
        .await
        .map_err(|e| dbus_err("ListSessions", e))?;
    let list: Vec<(String, u32, String, String, OwnedObjectPath)> = reply
        .body()
        .deserialize()
        .map_err(|e| dbus_err("ListSessions reply", e))?;
    let mut out = Vec::with_capacity(list.len());
    for (id, uid, user, seat, path) in list {
        let props = conn
            .call_method(
                Some(DEST),
                path.as_str(),
                Some(PROPERTIES),
                "GetAll",
                &(SESSION,),
            )
            .await;
        // A session that ended between the two calls is simply gone.
        let props: HashMap<String, OwnedValue> = match props {
            Ok(m) => match m.body().deserialize() {
                Ok(p) => p,
                Err(e) => return Err(dbus_err("session properties", e)),
            },
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "session vanished");
                continue;
            }
        };
        out.push(session_from(id, uid, user, seat, &props));
    }
    Ok(out)
}

fn session_from(
    id: String,
    uid: u32,
    user: String,
    seat: String,
    p: &HashMap<String, OwnedValue>,
) -> UserSession {
    let s = |k: &str| -> Option<String> {
        let v = p.get(k)?;
        let s: String = v.try_clone().ok()?.try_into().ok()?;
        (!s.is_empty()).then_some(s)
    };
    let b = |k: &str| -> bool {
        p.get(k)
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(false)
    };
    let micros = p.get("Timestamp").and_then(|v| u64::try_from(v).ok());
    UserSession {
        name: user,
        uid: Some(uid),
        session_id: Some(id),
        seat: (!seat.is_empty()).then_some(seat),
        tty: s("TTY"),
        remote_host: s("RemoteHost"),
        class: s("Class"),
        kind: s("Type"),
        active: b("Active"),
        locked: b("LockedHint"),
        login_time: micros.filter(|&m| m > 0).map(|m| m as f64 / 1e6),
        source: SessionSource::Logind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    #[test]
    fn properties_map_to_a_session() {
        let mut p = HashMap::new();
        let mut put = |k: &str, v: Value<'_>| {
            p.insert(k.to_owned(), OwnedValue::try_from(v).unwrap());
        };
        put("TTY", Value::from("pts/0"));
        put("RemoteHost", Value::from("192.0.2.9"));
        put("Class", Value::from("user"));
        put("Type", Value::from("tty"));
        put("Active", Value::from(true));
        put("LockedHint", Value::from(false));
        put("Timestamp", Value::from(1_700_000_000_500_000u64));
        let s = session_from("3".into(), 1000, "alice".into(), String::new(), &p);
        assert_eq!(s.tty.as_deref(), Some("pts/0"));
        assert_eq!(s.remote_host.as_deref(), Some("192.0.2.9"));
        assert_eq!(s.seat, None);
        assert!(s.active && !s.locked);
        assert_eq!(s.login_time, Some(1_700_000_000.5));
        assert_eq!(s.uid, Some(1000));
        assert_eq!(s.source, SessionSource::Logind);
    }
}
