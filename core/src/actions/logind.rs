//! systemd-logind (`org.freedesktop.login1`) over the system D-Bus, in pure Rust (zbus), for the
//! power, lock, log-off and session-event code and for the users reporter.
//!
//! Only what guestd uses is declared. Every call has a deadline (a wedged logind must never
//! hang the agent), and session properties are read with one `GetAll` each and decoded by hand,
//! so a property an older logind lacks (`LockedHint` came in systemd 230) just stays unset.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::model::{SessionSource, UserSession};

/// logind's bus name.
pub const SERVICE: &str = "org.freedesktop.login1";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";
/// The manager interface.
pub const MANAGER_IFACE: &str = "org.freedesktop.login1.Manager";
/// The session interface.
pub const SESSION_IFACE: &str = "org.freedesktop.login1.Session";
/// The seat interface.
pub const SEAT_IFACE: &str = "org.freedesktop.login1.Seat";
/// The object of seat0, the seat of the local console and display.
pub const SEAT0_PATH: &str = "/org/freedesktop/login1/seat/seat0";

/// Deadline of every D-Bus call and of connecting.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `org.freedesktop.login1.Manager`: the calls guestd makes.
#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1",
    gen_blocking = false
)]
pub trait Manager {
    /// Power off now.
    fn power_off(&self, interactive: bool) -> zbus::Result<()>;
    /// Reboot now.
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
    /// Halt now.
    fn halt(&self, interactive: bool) -> zbus::Result<()>;
    /// Schedule `kind` (`poweroff`, `reboot`, `halt`) at `usec` (CLOCK_REALTIME, µs).
    fn schedule_shutdown(&self, kind: &str, usec: u64) -> zbus::Result<()>;
    /// Set the message logind walls to users while a shutdown is scheduled.
    fn set_wall_message(&self, wall_message: &str, enable: bool) -> zbus::Result<()>;
    /// Every session: id, uid, user name, seat id, object path.
    fn list_sessions(&self) -> zbus::Result<Vec<(String, u32, String, String, OwnedObjectPath)>>;
    /// Ask the session's screen locker to lock.
    fn lock_session(&self, session_id: &str) -> zbus::Result<()>;
    /// Ask every session's screen locker to lock.
    fn lock_sessions(&self) -> zbus::Result<()>;
    /// End a session (its processes are killed).
    fn terminate_session(&self, session_id: &str) -> zbus::Result<()>;
    /// A session was created.
    #[zbus(signal)]
    fn session_new(&self, session_id: String, object_path: OwnedObjectPath) -> zbus::Result<()>;
    /// A session was removed.
    #[zbus(signal)]
    fn session_removed(&self, session_id: String, object_path: OwnedObjectPath)
    -> zbus::Result<()>;
}

/// Why talking to logind failed.
#[derive(Debug, thiserror::Error)]
pub enum LogindError {
    /// No system bus, or logind did not answer.
    #[error("Cannot reach systemd-logind on the system D-Bus")]
    Connect(#[source] zbus::Error),
    /// A call failed (logind's own error text is in the source).
    #[error("systemd-logind {call} failed")]
    Call {
        /// The method.
        call: &'static str,
        /// logind's answer.
        #[source]
        source: zbus::Error,
    },
    /// A call or connect did not finish in time.
    #[error("systemd-logind {0} timed out")]
    Timeout(&'static str),
}

impl LogindError {
    /// The whole chain on one line, for error replies and logs.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

/// Runs `fut` with [`CALL_TIMEOUT`], naming `call` in the error.
pub async fn call<T>(
    call: &'static str,
    fut: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T, LogindError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(LogindError::Call { call, source }),
        Err(_) => Err(LogindError::Timeout(call)),
    }
}

/// A connection to the system bus with a method deadline. Fails fast when there is no bus
/// (busybox images, containers), which callers take as "no logind here".
pub async fn connect() -> Result<zbus::Connection, LogindError> {
    let build = async {
        zbus::connection::Builder::system()?
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
    };
    match tokio::time::timeout(CALL_TIMEOUT, build).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(LogindError::Connect(e)),
        Err(_) => Err(LogindError::Timeout("connect")),
    }
}

/// The manager proxy on `conn`.
pub async fn manager(conn: &zbus::Connection) -> Result<ManagerProxy<'static>, LogindError> {
    call("proxy", ManagerProxy::new(conn)).await
}

/// One logind session, as guestd needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogindSession {
    /// Session id (`3`, `c1`).
    pub id: String,
    /// Object path.
    pub path: String,
    /// User name.
    pub user: String,
    /// User id.
    pub uid: Option<u32>,
    /// Seat id (`seat0`), empty for none.
    pub seat: String,
    /// Terminal (`tty1`, `pts/0`), empty for none.
    pub tty: String,
    /// X11 display, empty for none.
    pub display: String,
    /// Remote host of a remote login, empty for none.
    pub remote_host: String,
    /// Remote login.
    pub remote: bool,
    /// `user`, `greeter`, `lock-screen`, `background`, `manager`, ...
    pub class: String,
    /// `tty`, `x11`, `wayland`, `mir`, `unspecified`, ...
    pub kind: String,
    /// `online`, `active`, `closing`.
    pub state: String,
    /// The active session of its seat.
    pub active: bool,
    /// The session's locker says it is locked.
    pub locked: bool,
    /// VT number, 0 for none.
    pub vtnr: u32,
    /// Login time, µs since the epoch (0 for unknown).
    pub timestamp_usec: u64,
}

impl LogindSession {
    /// True for a session of a person: class `user` (not a greeter, lock screen, background
    /// job or the per-user service manager) that is not closing.
    pub fn is_user_session(&self) -> bool {
        self.class == "user" && self.state != "closing"
    }

    /// True for an X11, Wayland or Mir session.
    pub fn is_graphical(&self) -> bool {
        matches!(self.kind.as_str(), "x11" | "wayland" | "mir")
    }

    /// The report model's view of this session.
    pub fn to_user_session(&self) -> UserSession {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        UserSession {
            name: self.user.clone(),
            uid: self.uid,
            session_id: opt(&self.id),
            seat: opt(&self.seat),
            tty: opt(&self.tty).or_else(|| opt(&self.display)),
            remote_host: opt(&self.remote_host),
            class: opt(&self.class),
            kind: opt(&self.kind),
            active: self.active,
            locked: self.locked,
            login_time: (self.timestamp_usec > 0).then(|| self.timestamp_usec as f64 / 1e6),
            source: SessionSource::Logind,
        }
    }

    /// Fills the fields found in a `GetAll` answer of the Session interface.
    pub fn apply_properties(&mut self, props: &HashMap<String, OwnedValue>) {
        for (name, value) in props {
            let v: &Value<'_> = value;
            match name.as_str() {
                "Id" => set_str(&mut self.id, v),
                "Name" => set_str(&mut self.user, v),
                "User" => {
                    if let Some(uid) = struct_field(v, 0).and_then(as_u32) {
                        self.uid = Some(uid);
                    }
                }
                "Seat" => {
                    if let Some(seat) = struct_field(v, 0).and_then(as_str) {
                        self.seat = seat.to_owned();
                    }
                }
                "TTY" => set_str(&mut self.tty, v),
                "Display" => set_str(&mut self.display, v),
                "RemoteHost" => set_str(&mut self.remote_host, v),
                "Remote" => set_bool(&mut self.remote, v),
                "Class" => set_str(&mut self.class, v),
                "Type" => set_str(&mut self.kind, v),
                "State" => set_str(&mut self.state, v),
                "Active" => set_bool(&mut self.active, v),
                "LockedHint" => set_bool(&mut self.locked, v),
                "VTNr" => {
                    if let Some(n) = as_u32(v) {
                        self.vtnr = n;
                    }
                }
                "Timestamp" => {
                    if let Value::U64(t) = v {
                        self.timestamp_usec = *t;
                    }
                }
                _ => {}
            }
        }
    }
}

fn set_str(dst: &mut String, v: &Value<'_>) {
    if let Some(s) = as_str(v) {
        s.clone_into(dst);
    }
}

fn set_bool(dst: &mut bool, v: &Value<'_>) {
    if let Value::Bool(b) = v {
        *dst = *b;
    }
}

fn as_str<'a>(v: &'a Value<'_>) -> Option<&'a str> {
    match v {
        Value::Str(s) => Some(s.as_str()),
        Value::ObjectPath(p) => Some(p.as_str()),
        Value::Value(inner) => as_str(inner),
        _ => None,
    }
}

fn as_u32(v: &Value<'_>) -> Option<u32> {
    match v {
        Value::U32(n) => Some(*n),
        Value::Value(inner) => as_u32(inner),
        _ => None,
    }
}

fn struct_field<'a>(v: &'a Value<'a>, i: usize) -> Option<&'a Value<'a>> {
    match v {
        Value::Structure(s) => s.fields().get(i),
        Value::Value(inner) => struct_field(inner, i),
        _ => None,
    }
}

/// Every property of the Session interface of the session at `path`.
pub async fn session_properties(
    conn: &zbus::Connection,
    path: &str,
) -> Result<HashMap<String, OwnedValue>, LogindError> {
    let props = call(
        "Properties",
        zbus::fdo::PropertiesProxy::builder(conn)
            .destination(SERVICE)?
            .path(path.to_owned())?
            .build(),
    )
    .await?;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(SESSION_IFACE);
    call("GetAll", async {
        props.get_all(iface).await.map_err(zbus::Error::from)
    })
    .await
}

impl From<zbus::Error> for LogindError {
    fn from(source: zbus::Error) -> Self {
        LogindError::Call {
            call: "proxy",
            source,
        }
    }
}

/// Reads one session's properties from its object path.
pub async fn session_at(conn: &zbus::Connection, path: &str) -> Result<LogindSession, LogindError> {
    let props = session_properties(conn, path).await?;
    let mut s = LogindSession {
        path: path.to_owned(),
        ..Default::default()
    };
    s.apply_properties(&props);
    Ok(s)
}

/// Every session logind knows, with its properties. A session that vanishes between the list
/// and the property read is left out.
pub async fn list_sessions(conn: &zbus::Connection) -> Result<Vec<LogindSession>, LogindError> {
    let mgr = manager(conn).await?;
    let listed = call("ListSessions", mgr.list_sessions()).await?;
    let mut out = Vec::with_capacity(listed.len());
    for (id, uid, user, seat, path) in listed {
        let mut s = LogindSession {
            id,
            path: path.as_str().to_owned(),
            user,
            uid: Some(uid),
            seat,
            ..Default::default()
        };
        match session_properties(conn, path.as_str()).await {
            Ok(props) => s.apply_properties(&props),
            Err(e) => {
                tracing::debug!(session = %s.id, error = %e.chain(), "session vanished while listing");
                continue;
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// The id of seat0's active session, if seat0 exists and has one.
pub async fn seat0_active_session(conn: &zbus::Connection) -> Result<Option<String>, LogindError> {
    let props = call(
        "Properties",
        zbus::fdo::PropertiesProxy::builder(conn)
            .destination(SERVICE)?
            .path(SEAT0_PATH)?
            .build(),
    )
    .await?;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(SEAT_IFACE);
    let value = match call("Get ActiveSession", async {
        props
            .get(iface, "ActiveSession")
            .await
            .map_err(zbus::Error::from)
    })
    .await
    {
        Ok(v) => v,
        // No seat0 (a headless guest without logind's seat): no active session.
        Err(LogindError::Call { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: &Value<'_> = &value;
    Ok(struct_field(v, 0)
        .and_then(as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{ObjectPath, StructureBuilder};

    fn ov(v: Value<'_>) -> OwnedValue {
        OwnedValue::try_from(v).unwrap()
    }

    #[test]
    fn decodes_session_properties() {
        let mut props = HashMap::new();
        props.insert("Id".to_owned(), ov(Value::from("3")));
        props.insert("Name".to_owned(), ov(Value::from("alice")));
        let user = StructureBuilder::new()
            .add_field(1000u32)
            .add_field(ObjectPath::try_from("/org/freedesktop/login1/user/_1000").unwrap())
            .build()
            .unwrap();
        props.insert("User".to_owned(), ov(Value::Structure(user)));
        let seat = StructureBuilder::new()
            .add_field("seat0")
            .add_field(ObjectPath::try_from("/org/freedesktop/login1/seat/seat0").unwrap())
            .build()
            .unwrap();
        props.insert("Seat".to_owned(), ov(Value::Structure(seat)));
        props.insert("TTY".to_owned(), ov(Value::from("tty1")));
        props.insert("Class".to_owned(), ov(Value::from("user")));
        props.insert("Type".to_owned(), ov(Value::from("x11")));
        props.insert("State".to_owned(), ov(Value::from("active")));
        props.insert("Active".to_owned(), ov(Value::Bool(true)));
        props.insert("LockedHint".to_owned(), ov(Value::Bool(true)));
        props.insert("VTNr".to_owned(), ov(Value::U32(1)));
        props.insert(
            "Timestamp".to_owned(),
            ov(Value::U64(1_700_000_000_500_000)),
        );
        props.insert("Unknown".to_owned(), ov(Value::U8(1)));
        let mut s = LogindSession::default();
        s.apply_properties(&props);
        assert_eq!(s.id, "3");
        assert_eq!(s.user, "alice");
        assert_eq!(s.uid, Some(1000));
        assert_eq!(s.seat, "seat0");
        assert!(s.active && s.locked && s.is_graphical() && s.is_user_session());
        let u = s.to_user_session();
        assert_eq!(u.name, "alice");
        assert_eq!(u.session_id.as_deref(), Some("3"));
        assert_eq!(u.tty.as_deref(), Some("tty1"));
        assert_eq!(u.login_time, Some(1_700_000_000.5));
        assert_eq!(u.source, SessionSource::Logind);
        assert_eq!(u.remote_host, None);
    }

    #[test]
    fn wrong_types_are_ignored() {
        let mut props = HashMap::new();
        props.insert("Active".to_owned(), ov(Value::from("yes")));
        props.insert("User".to_owned(), ov(Value::U32(5)));
        let mut s = LogindSession::default();
        s.apply_properties(&props);
        assert!(!s.active);
        assert_eq!(s.uid, None);
    }
}
