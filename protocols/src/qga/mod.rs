//! The QEMU Guest Agent protocol, wire-compatible with qemu-ga.
//!
//! - [`json`]: QEMU's JSON stream dialect: the incremental [`Framer`] (fuzzable:
//!   `Framer::parse(&mut BytesMut)`), the parser with QEMU's error texts, the ASCII writer.
//! - [`args`]: argument checking with the QAPI visitor's error texts.
//! - [`error`]: the one place that maps core errors to QGA's classes and texts.
//! - `commands`: the 44 commands of the current schema.
//! - [`QgaProtocol`] / [`QgaSession`]: the [`StreamProtocol`] the runtime drives.
//!
//! Requests are handled strictly in order, one at a time, and each reply is one line.

pub mod args;
pub mod b64;
mod commands;
pub mod error;
pub mod json;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::BytesMut;
use guestd_core::Agent;
use guestd_core::contract::{StreamProtocol, StreamSession};
use guestd_core::events::Event;
use guestd_core::exec::ExecTable;
use guestd_core::files::FileHandles;
use serde_json::{Map, Value};

pub use commands::{COMMANDS, Command, FROZEN_ALLOWED, PLATFORM_DISABLED, Success};
pub use error::{Disabled, ErrorClass, QgaError};
pub use json::{FrameError, Framer};

/// The version `guest-info` reports: the qemu-ga schema level guestd implements.
pub const SCHEMA_VERSION: &str = "10.0.0";

/// The byte `guest-sync-delimited` writes before its reply.
pub const DELIMITER: u8 = 0xFF;

/// Why a command list could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Both lists given (qemu-ga refuses this too).
    #[error("--allow-rpcs and --block-rpcs are mutually exclusive")]
    BothLists,
}

/// How the agent restricts commands, qemu-ga's `--block-rpcs` / `--allow-rpcs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CommandFilter {
    /// Every command enabled.
    #[default]
    All,
    /// These are disabled ("has been disabled"); unknown names are ignored, as by qemu-ga.
    Block(BTreeSet<String>),
    /// Only these are enabled; the rest answer "...: the command is not allowed".
    Allow(BTreeSet<String>),
}

impl CommandFilter {
    /// From the two optional lists of the command line.
    pub fn from_lists(
        block: Option<Vec<String>>,
        allow: Option<Vec<String>>,
    ) -> Result<Self, ConfigError> {
        match (block, allow) {
            (Some(_), Some(_)) => Err(ConfigError::BothLists),
            (Some(b), None) => Ok(Self::Block(b.into_iter().collect())),
            (None, Some(a)) => Ok(Self::Allow(a.into_iter().collect())),
            (None, None) => Ok(Self::All),
        }
    }

    fn disabled(&self, name: &str) -> Option<Disabled> {
        if PLATFORM_DISABLED.contains(&name) {
            return Some(Disabled::Blocked);
        }
        match self {
            Self::All => None,
            Self::Block(b) => b.contains(name).then_some(Disabled::Blocked),
            Self::Allow(a) => (!a.contains(name)).then_some(Disabled::NotAllowed),
        }
    }
}

/// Settings of the QGA protocol.
#[derive(Clone, Debug)]
pub struct QgaConfig {
    /// Command restrictions.
    pub filter: CommandFilter,
    /// Longest request accepted, in bytes; a longer one gets `JSON token size limit exceeded`
    /// and is skipped. qemu-ga's limit is 64 MiB.
    pub max_request: usize,
    /// `guest-info`'s `version`.
    pub version: String,
}

impl Default for QgaConfig {
    fn default() -> Self {
        Self {
            filter: CommandFilter::All,
            max_request: json::DEFAULT_MAX_MESSAGE,
            version: SCHEMA_VERSION.to_owned(),
        }
    }
}

/// What every session of one agent shares: configuration, open files, started processes.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: QgaConfig,
    /// `guest-file-*` handles.
    pub files: Arc<FileHandles>,
    /// `guest-exec` processes.
    pub exec: Arc<ExecTable>,
}

/// The QGA protocol for the runtime.
#[derive(Debug, Clone)]
pub struct QgaProtocol {
    shared: Arc<Shared>,
}

impl QgaProtocol {
    /// A protocol with these settings and services.
    pub fn new(config: QgaConfig, files: Arc<FileHandles>, exec: Arc<ExecTable>) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                files,
                exec,
            }),
        }
    }

    /// A session not tied to the runtime (tests, tools).
    pub fn session(&self, agent: Agent) -> QgaSession {
        QgaSession {
            framer: Framer::new(self.shared.config.max_request),
            shared: Arc::clone(&self.shared),
            agent,
        }
    }
}

impl StreamProtocol for QgaProtocol {
    fn name(&self) -> &'static str {
        "qga"
    }

    fn new_session(&self, agent: Agent) -> Box<dyn StreamSession> {
        Box::new(self.session(agent))
    }
}

/// What a command handler gets.
pub(crate) struct Ctx<'a> {
    pub agent: &'a Agent,
    pub shared: &'a Shared,
    pub cmd: &'a str,
    frozen: bool,
}

impl Ctx<'_> {
    fn enabled(&self, name: &str) -> bool {
        command_state(&self.shared.config.filter, self.frozen, name).is_none()
    }

    /// `guest-info`'s answer.
    pub fn guest_info(&self) -> Value {
        let cmds: Vec<Value> = COMMANDS
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "enabled": self.enabled(c.name),
                    "success-response": c.success_response,
                })
            })
            .collect();
        serde_json::json!({
            "version": self.shared.config.version,
            "supported_commands": cmds,
        })
    }
}

/// Why command `name` may not run now, if it may not: frozen state overrides the
/// configured reason, except for the commands allowed while frozen.
fn command_state(filter: &CommandFilter, frozen: bool, name: &str) -> Option<Disabled> {
    if frozen && !FROZEN_ALLOWED.contains(&name) {
        return Some(Disabled::Frozen);
    }
    filter.disabled(name)
}

/// One reply, ready for the wire.
fn encode_reply(out: &mut Vec<u8>, result: Result<Success, QgaError>, id: Option<&Value>) {
    let (delimited, body) = match result {
        Ok(Success::NoReply) => return,
        Ok(Success::Return(v)) => (false, ("return", v)),
        Ok(Success::Delimited(v)) => (true, ("return", v)),
        Err(e) => {
            let mut m = Map::new();
            m.insert("class".into(), e.class.as_str().into());
            m.insert("desc".into(), e.desc.into());
            (false, ("error", Value::Object(m)))
        }
    };
    if delimited {
        out.push(DELIMITER);
    }
    out.push(b'{');
    json::write_str(out, body.0);
    out.push(b':');
    json::write_value(out, &body.1);
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        json::write_value(out, id);
    }
    out.extend_from_slice(b"}\n");
}

/// The state of one QGA endpoint: its parser and the agent's services.
#[derive(Debug)]
pub struct QgaSession {
    framer: Framer,
    shared: Arc<Shared>,
    agent: Agent,
}

impl QgaSession {
    /// Handle one parsed message; append its reply (if any) to `out`.
    pub async fn handle(&mut self, msg: Value, out: &mut Vec<u8>) {
        let Value::Object(mut obj) = msg else {
            encode_reply(
                out,
                Err(QgaError::generic("QMP input must be a JSON object")),
                None,
            );
            return;
        };
        // Taken out (an allowed member, never judged) so the arguments can be taken apart.
        let id = obj.remove("id");
        let result = self.dispatch(&mut obj).await;
        encode_reply(out, result, id.as_ref());
    }

    async fn dispatch(&self, obj: &mut Map<String, Value>) -> Result<Success, QgaError> {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        for key in json::qdict_order(&keys) {
            let v = &obj[key];
            match key {
                "execute" if !v.is_string() => {
                    return Err(QgaError::generic(
                        "QMP input member 'execute' must be a string",
                    ));
                }
                "arguments" if !v.is_object() => {
                    return Err(QgaError::generic(
                        "QMP input member 'arguments' must be an object",
                    ));
                }
                "execute" | "arguments" | "id" => {}
                other => {
                    return Err(QgaError::generic(format!(
                        "QMP input member '{other}' is unexpected"
                    )));
                }
            }
        }
        let Some(name) = obj.get("execute").and_then(Value::as_str) else {
            return Err(QgaError::generic("QMP input lacks member 'execute'"));
        };
        let Some(cmd) = commands::find(name) else {
            tracing::debug!(command = name, "unknown command");
            return Err(QgaError::not_found(name));
        };
        let filter = &self.shared.config.filter;
        let frozen = commands::actions_is_frozen(&self.agent);
        if let Some(why) = command_state(filter, frozen, name) {
            tracing::debug!(command = name, ?why, "disabled command");
            return Err(QgaError::disabled(name, why));
        }
        let mut empty = Map::new();
        let args = obj
            .get_mut("arguments")
            .and_then(Value::as_object_mut)
            .unwrap_or(&mut empty);
        tracing::debug!(command = cmd.name, "running command");
        let ctx = Ctx {
            agent: &self.agent,
            shared: &self.shared,
            cmd: cmd.name,
            frozen,
        };
        let r = commands::run(&ctx, cmd.name, args).await;
        if let Err(e) = &r {
            tracing::debug!(command = cmd.name, error = %e.desc, "command failed");
        }
        r
    }

    /// Parse and answer everything complete in `input`.
    pub async fn feed(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) {
        loop {
            match self.framer.parse(input) {
                Ok(None) => return,
                Ok(Some(msg)) => self.handle(msg, out).await,
                Err(e) => {
                    tracing::debug!(error = %e, "bad input");
                    encode_reply(out, Err(e.into()), None);
                }
            }
        }
    }
}

#[async_trait]
impl StreamSession for QgaSession {
    async fn on_connect(&mut self, _out: &mut Vec<u8>) {
        // The agent never speaks first.
    }

    async fn on_disconnect(&mut self) {
        // Unlike qemu-ga, a half-sent request of a previous host is not glued onto the next
        // host's first one.
        self.framer.reset();
    }

    async fn on_input(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) {
        self.feed(input, out).await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    async fn on_timer(&mut self, _out: &mut Vec<u8>) {}

    async fn on_event(&mut self, _event: &Event, _out: &mut Vec<u8>) {
        // QGA has no events: never write anything unsolicited.
    }

    async fn on_shutdown(&mut self, _out: &mut Vec<u8>) {}

    fn max_input(&self) -> usize {
        self.framer.max_message()
    }
}
