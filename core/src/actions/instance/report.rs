//! What a configure or cleanup run did, item by item. Items name things (a device, a user, a
//! file), never values that could be secret.

use std::fmt;

/// The module an entry belongs to: the names of `ovm-template-config`'s modules, plus cleanup and
/// the delegation to Oracle's own tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    /// Root password.
    Authentication,
    /// Time zone, NTP, hardware clock.
    Datetime,
    /// Firewall on or off.
    Firewall,
    /// Host name, hosts lines, devices, DNS.
    Network,
    /// SELinux mode.
    Selinux,
    /// ssh host keys.
    Ssh,
    /// `ovm-template-config`'s system module (nothing confirmed to map to it).
    System,
    /// Users and groups.
    User,
    /// Template cleanup.
    Cleanup,
    /// First-boot arming.
    InitialConfig,
    /// Handed to Oracle's `ovm-template-config`.
    Delegate,
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Module::Authentication => "authentication",
            Module::Datetime => "datetime",
            Module::Firewall => "firewall",
            Module::Network => "network",
            Module::Selinux => "selinux",
            Module::Ssh => "ssh",
            Module::System => "system",
            Module::User => "user",
            Module::Cleanup => "cleanup",
            Module::InitialConfig => "initial-config",
            Module::Delegate => "delegate",
        };
        f.write_str(s)
    }
}

/// How one item went.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "reason")]
pub enum Status {
    /// Written or done.
    Applied,
    /// Not done, on purpose; the text says why.
    Skipped(String),
    /// Tried and failed; the text says what failed.
    Failed(String),
}

/// One item of a report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Which module.
    pub module: Module,
    /// What (e.g. `hostname`, `device eth0`, `user alice`, `/etc/ssh/ssh_host_rsa_key`).
    pub item: String,
    /// How it went.
    #[serde(flatten)]
    pub status: Status,
}

/// Everything a run did, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The entries, in the order they happened.
    pub entries: Vec<Entry>,
    /// The clock setting the configuration asks for, in nanoseconds since the epoch (the
    /// manager's date and time read in the configured zone), for the caller to dispatch as
    /// [`crate::action::Action::SetTime`]: configuration never sets the running clock itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_time: Option<i64>,
}

impl Report {
    /// Record an applied item.
    pub fn applied(&mut self, module: Module, item: impl Into<String>) {
        self.push(module, item, Status::Applied);
    }

    /// Record a skipped item and why.
    pub fn skipped(&mut self, module: Module, item: impl Into<String>, why: impl Into<String>) {
        self.push(module, item, Status::Skipped(why.into()));
    }

    /// Record a failed item and what failed.
    pub fn failed(&mut self, module: Module, item: impl Into<String>, what: impl fmt::Display) {
        self.push(module, item, Status::Failed(what.to_string()));
    }

    fn push(&mut self, module: Module, item: impl Into<String>, status: Status) {
        let item = item.into();
        match &status {
            Status::Applied => tracing::info!(%module, item = %item, "applied"),
            Status::Skipped(why) => tracing::info!(%module, item = %item, why = %why, "skipped"),
            Status::Failed(what) => tracing::warn!(%module, item = %item, error = %what, "failed"),
        }
        self.entries.push(Entry {
            module,
            item,
            status,
        });
    }

    /// Append another report's entries.
    pub fn extend(&mut self, other: Report) {
        self.entries.extend(other.entries);
        if other.set_time.is_some() {
            self.set_time = other.set_time;
        }
    }

    /// True when nothing failed.
    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed entries.
    pub fn failures(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.status, Status::Failed(_)))
    }

    /// The entry for `module`/`item`, if any (the last one when repeated).
    pub fn find(&self, module: Module, item: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.module == module && e.item == item)
    }

    /// `applied N, skipped N, failed N`: short enough for a message back to the manager.
    pub fn summary(&self) -> String {
        let (mut a, mut s, mut f) = (0, 0, 0);
        for e in &self.entries {
            match e.status {
                Status::Applied => a += 1,
                Status::Skipped(_) => s += 1,
                Status::Failed(_) => f += 1,
            }
        }
        format!("applied {a}, skipped {s}, failed {f}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            match &e.status {
                Status::Applied => writeln!(f, "{}: {}: applied", e.module, e.item)?,
                Status::Skipped(w) => writeln!(f, "{}: {}: skipped: {w}", e.module, e.item)?,
                Status::Failed(w) => writeln!(f, "{}: {}: FAILED: {w}", e.module, e.item)?,
            }
        }
        Ok(())
    }
}
