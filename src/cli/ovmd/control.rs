//! What `ovmd` options do, once, for both paths: the daemon executes a request arriving on
//! its root-only control socket, and the CLI executes it itself when no daemon answers. The
//! daemon renders the exact stdout, so both paths print byte-identical output.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use guestd_core::Agent;
use guestd_core::action::{Action, Outcome};
use guestd_core::events::Event;
use guestd_core::runtime::display_chain;
use guestd_protocols::ovmd::first_boot::{self, TriggerOutcome};
use guestd_protocols::ovmd::{CONFIGURE, Delivery, EventType, Ovmd, SendError, outbound};
use guestd_transports::xenstore::XenstoreTransport;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

/// Longest request line the daemon reads (a pair is at most 255 + 8191 bytes, escaped).
const MAX_REQUEST: u64 = 64 * 1024;

/// One action, as the CLI sends it to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Send to the manager and keep.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Print one value.
    Get {
        /// Key.
        key: String,
    },
    /// Forget one pair locally.
    Delete {
        /// Key.
        key: String,
    },
    /// Forget every pair locally.
    DeleteAll,
    /// Print every pair.
    List,
    /// Post an event.
    Event {
        /// Its name.
        name: String,
    },
    /// Run a script (`cleanup`).
    Script {
        /// Its name.
        name: String,
    },
    /// Arm first-boot configuration.
    EnableInitialConfig,
}

/// The outcome, ready to print.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Exit status.
    pub exit: u8,
    /// Exactly what goes to stdout.
    #[serde(default)]
    pub stdout: String,
    /// A message for stderr, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Response {
    fn ok() -> Self {
        Self::default()
    }
    fn out(stdout: String) -> Self {
        Self {
            stdout,
            ..Self::default()
        }
    }
    fn note(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::default()
        }
    }
    fn fail(message: impl Into<String>) -> Self {
        Self {
            exit: 1,
            stdout: String::new(),
            message: Some(message.into()),
        }
    }
}

/// Where a request is executed.
#[derive(Debug)]
pub enum Mode {
    /// Inside the daemon: sends go through the connected protocol.
    Daemon {
        /// Longest a send waits for its commit before answering "queued".
        wait: Duration,
    },
    /// In the CLI, no daemon: sends connect to xenstore themselves.
    Direct {
        /// The endpoint.
        xenstore: XenstoreTransport,
    },
}

/// What executing needs.
#[derive(Debug)]
pub struct Ctx {
    /// The protocol (and its store).
    pub ovmd: Arc<Ovmd>,
    /// Actions and events.
    pub agent: Agent,
    /// Daemon or direct.
    pub mode: Mode,
}

/// One `--list` line: a compact single-member JSON object (ovmd.md §6 q13).
pub fn list_line(key: &str, value: &str) -> String {
    let mut obj = serde_json::Map::with_capacity(1);
    obj.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
    serde_json::Value::Object(obj).to_string()
}

fn store_failure(e: &guestd_core::params::StoreError) -> Response {
    Response::fail(display_chain(e))
}

/// Execute one request.
pub async fn execute(ctx: &Ctx, req: Request) -> Response {
    let store = ctx.ovmd.params();
    match req {
        Request::Set { key, value } => set(ctx, &key, &value).await,
        Request::Get { key } => match store.load_async().await {
            Ok(st) => match st.get(&key) {
                Some(v) => Response::out(format!("{v}\n")),
                None => Response::fail(format!("no parameter named '{key}'")),
            },
            Err(e) => store_failure(&e),
        },
        Request::Delete { key } => {
            let k = key.clone();
            match store.update_async(move |st| st.remove(&k)).await {
                Ok(true) => Response::ok(),
                Ok(false) => Response::fail(format!("no parameter named '{key}'")),
                Err(e) => store_failure(&e),
            }
        }
        Request::DeleteAll => match store.update_async(|st| st.pairs.clear()).await {
            Ok(()) => Response::ok(),
            Err(e) => store_failure(&e),
        },
        Request::List => match store.load_async().await {
            Ok(st) => Response::out(
                st.pairs
                    .iter()
                    .map(|p| list_line(&p.key, &p.value) + "\n")
                    .collect(),
            ),
            Err(e) => store_failure(&e),
        },
        Request::Event { name } => match EventType::parse(&name) {
            Err(why) => Response::fail(why),
            Ok(t) => match ctx.mode {
                Mode::Daemon { .. } => {
                    info!(event = t.name(), "event posted by a local user");
                    ctx.agent.events.publish(Event::UserEvent {
                        name: t.name().to_owned(),
                    });
                    Response::ok()
                }
                Mode::Direct { .. } => {
                    Response::fail("no guestd ovmd daemon is running to receive the event")
                }
            },
        },
        Request::Script { name } => script(ctx, &name).await,
        Request::EnableInitialConfig => {
            match ctx
                .agent
                .actions
                .dispatch(Action::SetInitialConfig(true))
                .await
            {
                Ok(_) => Response::ok(),
                Err(e) => Response::fail(format!(
                    "cannot arm first-boot configuration: {}",
                    display_chain(&e)
                )),
            }
        }
    }
}

async fn set(ctx: &Ctx, key: &str, value: &str) -> Response {
    send_pair(ctx, key, value, true).await
}

/// Send `key=value` to the manager, kept in the list when `keep`.
async fn send_pair(ctx: &Ctx, key: &str, value: &str, keep: bool) -> Response {
    if let Err(e) = outbound::validate(key, value) {
        return Response::fail(format!("invalid parameter: {e}"));
    }
    let queued = "queued: xenstore is not reachable now; the parameter is sent as soon as it is";
    match &ctx.mode {
        Mode::Daemon { wait } => match ctx.ovmd.send(key, value, keep, *wait).await {
            Ok(Delivery::Sent { .. }) => Response::ok(),
            Ok(Delivery::Queued) => Response::note(queued),
            Err(SendError::Failed(why)) => Response::fail(why),
            Err(e) => Response::fail(display_chain(&e)),
        },
        Mode::Direct { xenstore } => {
            let (k, v) = (key.to_owned(), value.to_owned());
            let id = match ctx
                .ovmd
                .params()
                .update_async(move |st| st.enqueue(&k, &v, keep))
                .await
            {
                Ok(id) => id,
                Err(e) => return store_failure(&e),
            };
            let kv = match guestd_core::contract::KeyValueTransport::connect(xenstore).await {
                Ok(kv) => kv,
                Err(e) => {
                    debug!(error = %display_chain(&e), "no xenstore");
                    return Response::note(queued);
                }
            };
            let mut rx = ctx.ovmd.wait_for(id);
            if let Err(e) = ctx.ovmd.flush_outbox(kv).await {
                debug!(error = %display_chain(&e), "sending failed");
            }
            match rx.try_recv() {
                Ok(Ok(_)) => Response::ok(),
                Ok(Err(why)) => Response::fail(why),
                Err(_) => Response::note(queued),
            }
        }
    }
}

async fn script(ctx: &Ctx, name: &str) -> Response {
    match name {
        "cleanup" => cleanup(ctx).await,
        "configure" => configure(ctx).await,
        _ => Response::fail(format!(
            "unknown script '{name}': guestd knows 'cleanup' and 'configure'"
        )),
    }
}

/// `-s configure`: first-boot configuration now, from every pair received so far, whether or
/// not it is armed (which it leaves as it is). The manager is told the outcome as after the
/// automatic trigger.
async fn configure(ctx: &Ctx) -> Response {
    let st = match ctx.ovmd.params().load_async().await {
        Ok(st) => st,
        Err(e) => return store_failure(&e),
    };
    let received = st.received();
    drop(st);
    if received.is_empty() {
        return Response::fail("nothing received from the manager yet: nothing to configure");
    }
    info!(
        pairs = received.len(),
        "configuration asked for by ovmd -s configure"
    );
    let outcome = first_boot::apply(&ctx.agent, &received).await;
    drop(received);
    if matches!(outcome, TriggerOutcome::Applied(_)) {
        // Used: not kept any longer than needed, as after the automatic trigger.
        if let Err(e) = ctx
            .ovmd
            .params()
            .update_async(|st| {
                st.remove(first_boot::ROOT_PASSWORD);
            })
            .await
        {
            return store_failure(&e);
        }
    }
    if let Some(status) = outcome.status_message() {
        let sent = send_pair(ctx, first_boot::STATUS_KEY, &status, false).await;
        if sent.exit != 0 {
            warn!("cannot report the configuration's outcome to the manager");
        }
    }
    match outcome {
        TriggerOutcome::Applied(summary) => Response::note(format!("configured: {summary}")),
        TriggerOutcome::Failed(why) => Response::fail(format!("configuration failed: {why}")),
        TriggerOutcome::NotArmed => Response::ok(),
    }
}

async fn cleanup(ctx: &Ctx) -> Response {
    let cleared = ctx
        .ovmd
        .params()
        .update_async(|st| {
            st.pairs.clear();
            st.outbox.clear();
            st.marks.remove(CONFIGURE);
        })
        .await;
    if let Err(e) = cleared {
        return store_failure(&e);
    }
    match ctx.agent.actions.dispatch(Action::CleanupInstance).await {
        Ok(Outcome::Instance(report)) if report.is_success() => {
            info!(summary = %report.summary(), "instance cleanup done");
            Response::ok()
        }
        Ok(Outcome::Instance(report)) => Response::fail(format!(
            "instance cleanup incomplete ({}):\n{report}",
            report.summary()
        )),
        Ok(_) => Response::ok(),
        Err(e) => Response::fail(format!("instance cleanup failed: {}", display_chain(&e))),
    }
}

/// Ask the daemon at `socket`. `Ok(None)`: no daemon there.
pub async fn call(socket: &Path, req: &Request) -> Result<Option<Response>, String> {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "cannot reach the daemon at {}: permission denied (ovmd must run as root)",
                socket.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the daemon at {}: {e}",
                socket.display()
            ));
        }
    };
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let exchange = async {
        stream.write_all(&line).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    // A send waits up to its own deadline for the manager's side; give it room.
    let reply = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| "the daemon did not answer within 60 s".to_owned())?
        .map_err(|e| format!("talking to the daemon: {e}"))?;
    serde_json::from_slice(&reply)
        .map(Some)
        .map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// Bind the control socket: its directory 0700, the socket 0600. A socket a live daemon
/// answers on is an error; a stale one is replaced.
pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!(
                "another ovmd daemon is already running (control socket {})",
                socket.display()
            );
        }
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve requests until `shutdown`; removes the socket at the end.
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    ctx: Arc<Ctx>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Root-only: the socket's mode already says so; the peer's uid confirms it.
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == me => {}
            Ok(c) => {
                warn!(
                    uid = c.uid(),
                    "control request from an unprivileged user refused"
                );
                continue;
            }
            Err(e) => {
                warn!(error = %e, "cannot identify a control client; refused");
                continue;
            }
        }
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &ctx).await {
                debug!(error = %e, "control client failed");
            }
        });
    }
    let _ = std::fs::remove_file(&socket);
}

async fn handle(stream: UnixStream, ctx: &Ctx) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    BufReader::new(r.take(MAX_REQUEST))
        .read_until(b'\n', &mut line)
        .await?;
    let resp = match serde_json::from_slice::<Request>(&line) {
        Ok(req) => execute(ctx, req).await,
        Err(e) => Response::fail(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines_are_compact_json_objects() {
        assert_eq!(
            list_line("com.oracle.linux.network.hostname", "db01"),
            r#"{"com.oracle.linux.network.hostname":"db01"}"#
        );
        assert_eq!(list_line("k", "a=b"), r#"{"k":"a=b"}"#);
        assert_eq!(list_line("k", ""), r#"{"k":""}"#);
        assert_eq!(
            list_line("q\"uote", "line\nbreak\ttab\\ é ✓"),
            r#"{"q\"uote":"line\nbreak\ttab\\ é ✓"}"#
        );
        assert_eq!(list_line("c", "\u{1}"), r#"{"c":"\u0001"}"#);
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Set {
                key: "k".into(),
                value: "v=w".into(),
            },
            Request::List,
            Request::DeleteAll,
            Request::Script {
                name: "cleanup".into(),
            },
        ] {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::List).unwrap(),
            r#"{"op":"list"}"#
        );
    }
}
