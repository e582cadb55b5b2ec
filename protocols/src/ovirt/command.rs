//! Host commands (note §5), parsed leniently: numbers as integers, floats or numeric strings,
//! booleans as JSON booleans or `"True"`/`"False"` in any case.

use std::time::Duration;

use guestd_core::action::{Action, PowerMode, Secret, SessionTarget, SuspendMode};
use serde_json::{Map, Value};

use super::frame::RawCommand;

/// The lifecycle events VDSM announces (note §5.3). Hooks run only for these names, so a
/// host cannot make the agent look up arbitrary directories.
pub use guestd_core::action::LifecycleEvent;

/// Suspend target of `hibernate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HibernateState {
    /// `disk` (the default).
    Disk,
    /// `mem`.
    Mem,
    /// Anything else: logged and ignored.
    Other(String),
}

/// A command from the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `refresh`: send everything. `api_version_present` is false for pre-2013 hosts, which
    /// resets the agent to version 0.
    Refresh {
        /// The command carried an `apiVersion` member.
        api_version_present: bool,
    },
    /// `api-version`: the common version; `None` when not an integer (ignored).
    ApiVersion {
        /// The version offered.
        version: Option<i64>,
    },
    /// `lock-screen`.
    LockScreen,
    /// `log-off`.
    LogOff,
    /// `login` (single sign-on).
    Login {
        /// `user` or `user@domain`.
        username: String,
        /// Never logged.
        password: Secret,
    },
    /// `shutdown`.
    Shutdown {
        /// Grace delay in seconds.
        timeout: u64,
        /// Wall message.
        message: String,
        /// Reboot instead of power off.
        reboot: bool,
    },
    /// `hibernate`.
    Hibernate(HibernateState),
    /// `set-number-of-cpus` (v1).
    SetNumberOfCpus {
        /// Requested count; 0 when missing or not a number.
        count: i64,
    },
    /// `lifecycle-event` (v3).
    LifecycleEvent {
        /// The `type` member as sent.
        kind: Option<String>,
        /// The `reply_id` member, echoed back unchanged in `completion`.
        reply_id: Option<Value>,
        /// `failure: true` (the operation failed); informational.
        failure: bool,
    },
    /// `echo`: reply with the same arguments.
    Echo(Map<String, Value>),
    /// Anything else: logged and ignored.
    Unknown(String),
}

/// Old defaults for a `shutdown` without arguments (note §5.3).
pub const DEFAULT_SHUTDOWN_MESSAGE: &str = "System is going down";

impl Command {
    /// Interpret a frame. Never fails: missing or mistyped arguments take the old agent's
    /// defaults.
    pub fn from_raw(raw: RawCommand) -> Command {
        let RawCommand { name, mut args } = raw;
        match name.as_str() {
            "refresh" => Command::Refresh {
                api_version_present: args.contains_key("apiVersion"),
            },
            "api-version" => Command::ApiVersion {
                version: args.get("apiVersion").and_then(lenient_int),
            },
            "lock-screen" => Command::LockScreen,
            "log-off" => Command::LogOff,
            "login" => Command::Login {
                username: args
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                password: Secret::new(
                    args.get("password")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
            },
            "shutdown" => Command::Shutdown {
                timeout: args
                    .get("timeout")
                    .and_then(lenient_int)
                    .map(|t| t.max(0) as u64)
                    .unwrap_or(0),
                message: args
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_SHUTDOWN_MESSAGE)
                    .to_owned(),
                reboot: args.get("reboot").and_then(lenient_bool).unwrap_or(false),
            },
            "hibernate" => Command::Hibernate(
                match args.get("state").and_then(Value::as_str).unwrap_or("disk") {
                    "disk" => HibernateState::Disk,
                    "mem" => HibernateState::Mem,
                    other => HibernateState::Other(other.to_owned()),
                },
            ),
            "set-number-of-cpus" => Command::SetNumberOfCpus {
                count: args.get("count").and_then(lenient_int).unwrap_or(0),
            },
            "lifecycle-event" => Command::LifecycleEvent {
                kind: args.get("type").and_then(Value::as_str).map(str::to_owned),
                reply_id: args.remove("reply_id"),
                failure: args.get("failure").and_then(lenient_bool).unwrap_or(false),
            },
            "echo" => Command::Echo(args),
            _ => Command::Unknown(name),
        }
    }

    /// The wire name, for logs.
    pub fn name(&self) -> &str {
        match self {
            Command::Refresh { .. } => "refresh",
            Command::ApiVersion { .. } => "api-version",
            Command::LockScreen => "lock-screen",
            Command::LogOff => "log-off",
            Command::Login { .. } => "login",
            Command::Shutdown { .. } => "shutdown",
            Command::Hibernate(_) => "hibernate",
            Command::SetNumberOfCpus { .. } => "set-number-of-cpus",
            Command::LifecycleEvent { .. } => "lifecycle-event",
            Command::Echo(_) => "echo",
            Command::Unknown(n) => n,
        }
    }

    /// The core action this command asks for, if it maps to one.
    pub fn action(&self) -> Option<Action> {
        Some(match self {
            Command::LockScreen => Action::LockScreen(SessionTarget::Active),
            Command::LogOff => Action::LogOff(SessionTarget::Active),
            Command::Shutdown {
                timeout,
                message,
                reboot,
            } => Action::Power {
                mode: if *reboot {
                    PowerMode::Reboot
                } else {
                    PowerMode::Poweroff
                },
                delay: Some(Duration::from_secs(*timeout)),
                message: Some(message.clone()),
            },
            Command::Hibernate(HibernateState::Disk) => Action::Suspend(SuspendMode::Disk),
            Command::Hibernate(HibernateState::Mem) => Action::Suspend(SuspendMode::Ram),
            Command::LifecycleEvent {
                kind: Some(kind),
                failure,
                ..
            } => Action::LifecycleHooks {
                event: LifecycleEvent::from_wire(kind)?,
                failure: *failure,
            },
            _ => return None,
        })
    }
}

/// An integer from a JSON number (floats truncated) or a string holding one.
pub fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// A boolean from JSON `true`/`false`, a string `true`/`false` in any case (VDSM sends
/// Python's `"True"`/`"False"`), or a number (non-zero is true).
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => None,
        },
        Value::Number(_) => lenient_int(v).map(|i| i != 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::parse_line;
    use super::*;
    use serde_json::json;

    fn cmd(line: &str) -> Command {
        Command::from_raw(parse_line(line.as_bytes()).unwrap())
    }

    #[test]
    fn golden_vectors_from_vdsm() {
        assert_eq!(
            cmd(r#"{"apiVersion": 3, "__name__": "refresh"}"#),
            Command::Refresh {
                api_version_present: true
            }
        );
        assert_eq!(
            cmd(r#"{"__name__": "refresh"}"#),
            Command::Refresh {
                api_version_present: false
            }
        );
        assert_eq!(
            cmd(r#"{"apiVersion": 3, "__name__": "api-version"}"#),
            Command::ApiVersion { version: Some(3) }
        );
        let c = cmd(
            r#"{"timeout": 30, "message": "System going down", "reboot": "False", "__name__": "shutdown"}"#,
        );
        assert_eq!(
            c,
            Command::Shutdown {
                timeout: 30,
                message: "System going down".into(),
                reboot: false
            }
        );
        assert_eq!(
            c.action(),
            Some(Action::Power {
                mode: PowerMode::Poweroff,
                delay: Some(Duration::from_secs(30)),
                message: Some("System going down".into())
            })
        );
        let c = cmd(
            r#"{"timeout": 30, "message": "Scheduled reboot on disconnect", "reboot": "True", "__name__": "shutdown"}"#,
        );
        assert!(matches!(
            c.action(),
            Some(Action::Power {
                mode: PowerMode::Reboot,
                ..
            })
        ));
        let c =
            cmd(r#"{"username": "alice@example.org", "password": "s3cret", "__name__": "login"}"#);
        assert_eq!(
            c,
            Command::Login {
                username: "alice@example.org".into(),
                password: Secret::new("s3cret")
            }
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            cmd(r#"{"__name__": "lock-screen"}"#).action(),
            Some(Action::LockScreen(SessionTarget::Active))
        );
        assert_eq!(
            cmd(r#"{"__name__": "log-off"}"#).action(),
            Some(Action::LogOff(SessionTarget::Active))
        );
        let c = cmd(
            r#"{"type": "before_migration", "reply_id": "abc", "__name__": "lifecycle-event"}"#,
        );
        assert_eq!(
            c,
            Command::LifecycleEvent {
                kind: Some("before_migration".into()),
                reply_id: Some(json!("abc")),
                failure: false
            }
        );
        assert_eq!(
            c.action(),
            Some(Action::LifecycleHooks {
                event: LifecycleEvent::BeforeMigration,
                failure: false
            })
        );
        let c =
            cmd(r#"{"type": "after_migration", "failure": true, "__name__": "lifecycle-event"}"#);
        assert_eq!(
            c.action(),
            Some(Action::LifecycleHooks {
                event: LifecycleEvent::AfterMigration,
                failure: true
            })
        );
        assert_eq!(
            cmd(r#"{"count": 2, "__name__": "set-number-of-cpus"}"#),
            Command::SetNumberOfCpus { count: 2 }
        );
        assert_eq!(
            cmd(r#"{"__name__": "hibernate"}"#).action(),
            Some(Action::Suspend(SuspendMode::Disk))
        );
    }

    #[test]
    fn lenient_arguments_and_old_defaults() {
        assert_eq!(
            cmd(r#"{"__name__": "shutdown"}"#),
            Command::Shutdown {
                timeout: 0,
                message: DEFAULT_SHUTDOWN_MESSAGE.into(),
                reboot: false
            }
        );
        assert_eq!(
            cmd(r#"{"__name__": "shutdown", "timeout": "45", "reboot": true, "message": 7}"#),
            Command::Shutdown {
                timeout: 45,
                message: DEFAULT_SHUTDOWN_MESSAGE.into(),
                reboot: true
            }
        );
        assert_eq!(
            cmd(r#"{"__name__": "shutdown", "timeout": -5, "reboot": "TRUE"}"#),
            Command::Shutdown {
                timeout: 0,
                message: DEFAULT_SHUTDOWN_MESSAGE.into(),
                reboot: true
            }
        );
        assert_eq!(
            cmd(r#"{"__name__": "api-version", "apiVersion": "2"}"#),
            Command::ApiVersion { version: Some(2) }
        );
        assert_eq!(
            cmd(r#"{"__name__": "api-version", "apiVersion": "x"}"#),
            Command::ApiVersion { version: None }
        );
        assert_eq!(
            cmd(r#"{"__name__": "api-version"}"#),
            Command::ApiVersion { version: None }
        );
        assert_eq!(
            cmd(r#"{"__name__": "hibernate", "state": "mem"}"#).action(),
            Some(Action::Suspend(SuspendMode::Ram))
        );
        let c = cmd(r#"{"__name__": "hibernate", "state": "bogus"}"#);
        assert_eq!(c.action(), None);
        assert_eq!(
            cmd(r#"{"__name__": "lifecycle-event", "type": "../../etc", "reply_id": 1}"#).action(),
            None
        );
        assert_eq!(
            cmd(r#"{"__name__": "frobnicate", "x": 1}"#),
            Command::Unknown("frobnicate".into())
        );
        assert_eq!(lenient_int(&json!(2.9)), Some(2));
        assert_eq!(lenient_int(&json!(" 12 ")), Some(12));
        assert_eq!(lenient_int(&json!("12.5")), Some(12));
        assert_eq!(lenient_int(&json!(null)), None);
        assert_eq!(lenient_int(&json!(true)), None);
        assert_eq!(lenient_bool(&json!("False")), Some(false));
        assert_eq!(lenient_bool(&json!(1)), Some(true));
        assert_eq!(lenient_bool(&json!([])), None);
    }

    #[test]
    fn echo_keeps_its_arguments() {
        let c = cmd(r#"{"__name__": "echo", "a": [1, {"b": null}], "c": "d"}"#);
        let Command::Echo(args) = c else {
            panic!("not echo")
        };
        assert_eq!(
            Value::Object(args),
            json!({"a": [1, {"b": null}], "c": "d"})
        );
    }
}
