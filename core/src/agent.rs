//! What a protocol session gets to work with: the facts, the actions, the events.

use std::sync::Arc;

use crate::action::Dispatcher;
use crate::contract::Facts;
use crate::events::EventBus;
use crate::paths::Paths;

/// The services of a running agent, cheap to clone into every session.
#[derive(Clone, Debug)]
pub struct Agent {
    /// The root the agent reads and acts on.
    pub paths: Paths,
    /// Facts about the guest.
    pub facts: Arc<dyn Facts>,
    /// Actions on the guest.
    pub actions: Arc<Dispatcher>,
    /// Events from the guest.
    pub events: EventBus,
}
