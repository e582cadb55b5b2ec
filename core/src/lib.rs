//! guestd's core: the model of what a guest reports, the contracts that transports,
//! protocols and reporters implement, the runtime that ties a protocol to a transport,
//! the action handlers and the typed event stream.
//!
//! `core` knows no protocol and no transport: a new one is a new implementation of a
//! trait from [`contract`], registered by the binary.

pub mod action;
pub mod actions;
pub mod agent;
pub mod alarm;
pub mod calendar;
pub mod contract;
pub mod events;
pub mod exec;
pub mod files;
pub mod model;
pub mod oserror;
pub mod params;
pub mod paths;
pub mod runtime;
pub mod sysfacts;

pub use action::{Action, ActionError, Outcome};
pub use agent::Agent;
pub use events::{Event, EventBus};
pub use model::*;
pub use paths::Paths;
pub use sysfacts::*;
