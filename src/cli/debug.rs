//! `guestd debug` (hidden): runs one action or watches session events straight through core,
//! without a protocol. The VM tests use it where no protocol can ask for the action (a QGA host
//! cannot lock a screen), and an image builder can use it to check which fallbacks an image has.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use guestd_core::action::{Action, Outcome, PowerMode, SessionTarget};
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_core::{Event, EventBus};

/// Arguments of `guestd debug`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Power off, reboot or halt as the agent would, then wait for the machine to go down.
    Power {
        /// poweroff, reboot or halt.
        #[arg(long, default_value = "poweroff", value_parser = ["poweroff", "reboot", "halt"])]
        mode: String,
        /// Delay in seconds.
        #[arg(long)]
        delay: Option<u64>,
        /// Message to logged-in users.
        #[arg(long)]
        message: Option<String>,
    },
    /// Lock the screen of the active session, a user's sessions, or all.
    Lock(Target),
    /// Log off the active session, a user's sessions, or all.
    LogOff(Target),
    /// Print session events as JSON lines.
    SessionEvents {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Print logind's sessions as the users reporter's model, as JSON.
    #[cfg(feature = "dbus")]
    Sessions,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Only this user's sessions.
    #[arg(long, conflicts_with = "all")]
    user: Option<String>,
    /// Every user session.
    #[arg(long)]
    all: bool,
}

impl Target {
    fn target(self) -> SessionTarget {
        match (self.user, self.all) {
            (Some(u), _) => SessionTarget::User(u),
            (None, true) => SessionTarget::All,
            (None, false) => SessionTarget::Active,
        }
    }
}

fn event_json(ev: &Event) -> serde_json::Value {
    use serde_json::json;
    match ev {
        Event::SessionNew { session, user } => {
            json!({"event": "session-new", "session": session, "user": user})
        }
        Event::SessionRemoved { session, user } => {
            json!({"event": "session-removed", "session": session, "user": user})
        }
        Event::SessionLocked { session } => json!({"event": "session-locked", "session": session}),
        Event::SessionUnlocked { session } => {
            json!({"event": "session-unlocked", "session": session})
        }
        Event::ActiveUserChanged { user } => json!({"event": "active-user", "user": user}),
        other => json!({"event": format!("{other:?}")}),
    }
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args.what))
}

async fn run_async(what: What) -> anyhow::Result<ExitCode> {
    let events = EventBus::default();
    let actions = default_dispatcher(&ActionsConfig::default(), &events);
    let action = match what {
        What::Power {
            mode,
            delay,
            message,
        } => Action::Power {
            mode: match mode.as_str() {
                "reboot" => PowerMode::Reboot,
                "halt" => PowerMode::Halt,
                _ => PowerMode::Poweroff,
            },
            delay: delay.map(Duration::from_secs),
            message,
        },
        What::Lock(t) => Action::LockScreen(t.target()),
        What::LogOff(t) => Action::LogOff(t.target()),
        What::SessionEvents { count } => {
            let mut rx = events.subscribe();
            let watcher = guestd_core::actions::session_events::spawn_session_watcher(events);
            let mut seen = 0;
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) => {
                            println!("{}", event_json(&ev));
                            seen += 1;
                            if count.is_some_and(|c| seen >= c) {
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            eprintln!("guestd: lost {n} events");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            return Ok(ExitCode::SUCCESS);
                        }
                    },
                    _ = wait_finished(&watcher) => {
                        anyhow::bail!("the session watcher stopped (see the log)");
                    }
                }
            }
        }
        #[cfg(feature = "dbus")]
        What::Sessions => {
            use guestd_core::actions::logind;
            let conn = logind::connect()
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let sessions = logind::list_sessions(&conn)
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let users: Vec<_> = sessions.iter().map(|s| s.to_user_session()).collect();
            println!("{}", serde_json::to_string(&users)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let power_delay = match &action {
        Action::Power { delay, .. } => Some(delay.unwrap_or_default()),
        _ => None,
    };
    let outcome = actions
        .dispatch(action)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match &outcome {
        Outcome::Sessions(ids) => println!("{}", serde_json::json!({ "sessions": ids })),
        other => println!("{}", serde_json::json!({ "outcome": format!("{other:?}") })),
    }
    if let Some(delay) = power_delay {
        // The fallbacks run in a spawned task: stay alive until they have ended the machine.
        tokio::time::sleep(delay + Duration::from_secs(120)).await;
        anyhow::bail!("the machine is still up 120 s after the power action");
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_finished(h: &tokio::task::JoinHandle<()>) {
    while !h.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
