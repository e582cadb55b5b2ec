//! The trigger of first-boot template configuration (ovmd.md §6 q9): when the manager's
//! final message, the root password, arrives and configuration is armed, configure once with
//! every pair received. The configuration itself is protocol-neutral
//! (`guestd_core::actions::instance`), reached through the dispatcher; the mapping of the
//! `com.oracle.linux.*` keys is [`super::template`].
//!
//! Everything goes through the dispatcher, so this module does no I/O: whether configuration
//! is armed ([`Action::InitialConfigArmed`]), the configuration itself
//! ([`Action::ConfigureInstance`]), then the clock when the manager sent a date and time
//! ([`Action::SetTime`] with the instant configuration computed in the new zone, after the
//! zone was set), then disarming ([`Action::SetInitialConfig`]).

use guestd_core::action::{Action, ActionError, Outcome};
use guestd_core::actions::instance::{InstanceRequest, Module};
use guestd_core::{Agent, runtime::display_chain};
use tracing::{info, warn};

use super::template;

pub use super::template::ROOT_PASSWORD;

/// The key of the message that tells the manager how first-boot configuration ended. Oracle's
/// key for this is not public (ovmd.md §6), so it is guestd's own; the value is
/// `done: applied N, skipped N, failed N` or `failed: <why>`, never a configured value.
pub const STATUS_KEY: &str = "guestd.initial-config.status";

/// What the trigger did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// Configuration is not armed (or no agent): the pairs stay as received.
    NotArmed,
    /// Configuration ran; the summary of its report.
    Applied(String),
    /// Configuration could not run.
    Failed(String),
}

impl TriggerOutcome {
    /// The value of the [`STATUS_KEY`] message, when configuration ran or failed.
    pub fn status_message(&self) -> Option<String> {
        match self {
            TriggerOutcome::NotArmed => None,
            TriggerOutcome::Applied(summary) => Some(format!("done: {summary}")),
            TriggerOutcome::Failed(why) => Some(format!("failed: {why}")),
        }
    }
}

/// Configure from `received` (every received pair, in arrival order) if configuration is
/// armed; disarm it afterwards, so it happens once.
pub async fn run(agent: Option<&Agent>, received: &[(String, String)]) -> TriggerOutcome {
    let Some(agent) = agent else {
        return TriggerOutcome::NotArmed;
    };
    match agent.actions.dispatch(Action::InitialConfigArmed).await {
        Ok(Outcome::Armed(true)) => {}
        Ok(_) | Err(ActionError::Unsupported) => {
            info!(
                "root password received; first-boot configuration is not armed, so the pairs are only kept"
            );
            return TriggerOutcome::NotArmed;
        }
        Err(e) => {
            warn!(error = %display_chain(&e), "cannot tell whether first-boot configuration is armed; not configuring");
            return TriggerOutcome::NotArmed;
        }
    }
    info!(
        pairs = received.len(),
        "root password received: first-boot configuration starts"
    );
    let outcome = apply(agent, received).await;
    if matches!(outcome, TriggerOutcome::Failed(_)) {
        return outcome;
    }
    if let Err(e) = agent
        .actions
        .dispatch(Action::SetInitialConfig(false))
        .await
    {
        warn!(error = %display_chain(&e), "cannot disarm first-boot configuration");
    }
    outcome
}

/// Configure from `received` now, armed or not (`ovmd -s configure`, and the trigger once it
/// found configuration armed). Never `NotArmed`.
pub async fn apply(agent: &Agent, received: &[(String, String)]) -> TriggerOutcome {
    let mapping = template::map_pairs(received.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let request = InstanceRequest {
        config: mapping.config,
        ovm_list: Some(template::render_list(
            received.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )),
    };
    match agent
        .actions
        .dispatch(Action::ConfigureInstance(Box::new(request)))
        .await
    {
        Ok(Outcome::Instance(mut report)) => {
            if let Some(nanos) = report.set_time.take() {
                let item = "date and time";
                match agent
                    .actions
                    .dispatch(Action::SetTime { nanos: Some(nanos) })
                    .await
                {
                    Ok(_) => report.applied(Module::Datetime, item),
                    Err(e) => report.failed(Module::Datetime, item, display_chain(&e)),
                }
            }
            let summary = report.summary();
            info!(summary = %summary, "first-boot configuration done");
            TriggerOutcome::Applied(summary)
        }
        Ok(other) => TriggerOutcome::Applied(format!("{other:?}")),
        Err(e) => {
            let why = display_chain(&e);
            warn!(error = %why, "first-boot configuration failed");
            TriggerOutcome::Failed(why)
        }
    }
}
