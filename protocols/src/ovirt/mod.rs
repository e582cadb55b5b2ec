//! The oVirt guest agent protocol (VDSM's side: `lib/vdsm/virt/guestagent.py`), as described
//! in `../shared/protocols/ovirt.md`.
//!
//! One JSON object per line in both directions, named by `__name__`. The agent reports
//! (`heartbeat`, `host-name`, `applications`, ...) on timers and on request, and performs the
//! host's commands (`lock-screen`, `shutdown`, `lifecycle-event`, ...). There are no replies
//! except `echo`, `completion` and `number-of-cpus`; failures go to the log.
//!
//! - [`frame`]: the bounded line reader, the character filter, the ASCII encoder.
//! - [`command`]: commands, parsed leniently, and the core actions they map to.
//! - [`message`]: messages built from core's model.
//! - [`version`]: API version negotiation.
//! - [`session`]: the [`StreamSession`](guestd_core::contract::StreamSession) with its timers.

pub mod command;
pub mod config;
pub mod frame;
pub mod message;
pub mod session;
pub mod version;

use std::sync::Arc;

use guestd_core::Agent;
use guestd_core::contract::{StreamProtocol, StreamSession};

pub use config::{AppFilter, FreeRam, OvirtConfig};
pub use session::OvirtSession;

/// The port names VDSM uses, in the order to try them (note §1.1): VDSM uses the new one
/// whenever the VM has it.
pub const PORT_NAMES: [&str; 2] = ["ovirt-guest-agent.0", "com.redhat.rhevm.vdsm"];

/// The oVirt protocol with its settings.
#[derive(Debug, Clone, Default)]
pub struct OvirtProtocol {
    cfg: Arc<OvirtConfig>,
}

impl OvirtProtocol {
    /// The protocol with these settings.
    pub fn new(cfg: OvirtConfig) -> Self {
        Self { cfg: Arc::new(cfg) }
    }

    /// Its settings.
    pub fn config(&self) -> &OvirtConfig {
        &self.cfg
    }
}

impl StreamProtocol for OvirtProtocol {
    fn name(&self) -> &'static str {
        "ovirt"
    }

    fn new_session(&self, agent: Agent) -> Box<dyn StreamSession> {
        Box::new(OvirtSession::new(agent, Arc::clone(&self.cfg)))
    }
}

#[cfg(test)]
mod tests;
