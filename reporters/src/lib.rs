//! One collector per fact, reading `/proc`, `/sys`, utmp, package databases and D-Bus through
//! an injectable root ([`Paths`]), so every parser runs on fixture trees in tests.
//!
//! Each module reads one fact synchronously from files; [`SystemFacts`] runs them off the
//! async runtime, each on its own thread with a deadline, so a slow or stuck source (a dead
//! NFS mount, a hung `rpm`) costs that one fact, never the agent.
//!
//! sysinfo, the design card's system-information crate, is not used: it reads only the live
//! `/proc` (no injectable root, so no fixture tests), refreshes far more than a fact needs,
//! and has no os-release fields, utmp sessions, package lists or sysfs disk addresses. Each
//! fact here is one or two small files.

pub mod blockdev;
pub mod containers;
pub mod cpus;
pub mod disks;
pub mod diskstats;
pub mod filesystems;
pub mod hostname;
pub mod interfaces;
pub mod load;
pub mod memblocks;
pub mod memory;
pub mod os;
pub mod packages;
pub mod routes;
pub mod timezone;
pub mod uptime;
pub mod users;
mod util;

use std::time::Duration;

use async_trait::async_trait;
use guestd_core::contract::{FactError, Facts};
use guestd_core::model::*;
use guestd_core::{Paths, sysfacts::*};

/// How long one fact may take before it is reported missing.
pub const FACT_DEADLINE: Duration = Duration::from_secs(10);
/// Package databases may be read through `rpm`, which has a deadline of its own.
pub const APPLICATIONS_DEADLINE: Duration = Duration::from_secs(25);

/// Every reporter of this platform behind the [`Facts`] contract.
#[derive(Clone, Debug)]
pub struct SystemFacts {
    paths: Paths,
}

impl SystemFacts {
    /// Facts about the system rooted at `paths`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// The root read from.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    async fn run<T, F>(&self, what: &str, limit: Duration, f: F) -> Result<T, FactError>
    where
        T: Send + 'static,
        F: FnOnce(&Paths) -> Result<T, FactError> + Send + 'static,
    {
        let paths = self.paths.clone();
        util::off_runtime(what, limit, move || f(&paths)).await?
    }

    /// Reads a fact on the calling (runtime) thread. Only for files the kernel answers from
    /// memory and never leaves stuck (procfs, utmp on the `/run` tmpfs): these are what an
    /// idle agent reads on every heartbeat and user poll, and a fact thread's round trip
    /// would wake the process twice more each time for a read of microseconds.
    fn inline<T>(&self, f: impl FnOnce(&Paths) -> Result<T, FactError>) -> Result<T, FactError> {
        f(&self.paths)
    }

    /// Users from logind when it answers on the running system, else utmp.
    async fn users_impl(&self) -> Result<Vec<UserSession>, FactError> {
        #[cfg(feature = "dbus")]
        if self.paths.is_system() && logind_may_run(&self.paths) {
            match users::logind::system_bus().await {
                Ok(conn) => {
                    match tokio::time::timeout(
                        users::logind::TIMEOUT,
                        users::logind::sessions(&conn),
                    )
                    .await
                    {
                        Ok(Ok(s)) => return Ok(s),
                        Ok(Err(e)) => tracing::debug!(error = %e, "logind: falling back to utmp"),
                        Err(_) => tracing::debug!("logind timed out: falling back to utmp"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no system bus: falling back to utmp"),
            }
        }
        self.inline(users::from_utmp)
    }
}

/// Cheap test before any D-Bus traffic: a system bus socket exists (or is named) and the
/// system was booted with systemd.
#[cfg(feature = "dbus")]
fn logind_may_run(paths: &Paths) -> bool {
    let bus = std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_some()
        || paths.join("run/dbus/system_bus_socket").exists();
    bus && paths.join("run/systemd/system").exists()
}

#[async_trait]
impl Facts for SystemFacts {
    async fn hostname(&self) -> Result<String, FactError> {
        self.run("hostname", FACT_DEADLINE, hostname::hostname)
            .await
    }
    async fn node_name(&self) -> Result<String, FactError> {
        self.run("node name", FACT_DEADLINE, hostname::node_name)
            .await
    }
    async fn fqdn(&self) -> Result<String, FactError> {
        // The resolver may wait on DNS; the deadline bounds it.
        self.run("fqdn", Duration::from_secs(5), hostname::fqdn)
            .await
    }
    async fn os(&self) -> Result<OsInfo, FactError> {
        self.run("os", FACT_DEADLINE, os::read).await
    }
    async fn interfaces(&self) -> Result<Vec<Interface>, FactError> {
        self.run("interfaces", FACT_DEADLINE, interfaces::read)
            .await
    }
    async fn interfaces_without_mtu(&self) -> Result<Vec<Interface>, FactError> {
        self.run("interfaces", FACT_DEADLINE, interfaces::read_without_mtu)
            .await
    }
    async fn applications(&self) -> Result<Vec<Application>, FactError> {
        self.run("applications", APPLICATIONS_DEADLINE, packages::read)
            .await
    }
    async fn memory(&self) -> Result<Memory, FactError> {
        self.inline(memory::read)
    }
    async fn users(&self) -> Result<Vec<UserSession>, FactError> {
        self.users_impl().await
    }
    async fn filesystems(&self) -> Result<Vec<Filesystem>, FactError> {
        self.run("filesystems", FACT_DEADLINE, filesystems::read)
            .await
    }
    async fn containers(&self) -> Result<Vec<Container>, FactError> {
        self.run("containers", Duration::from_secs(5), containers::read)
            .await
    }
    async fn timezone(&self) -> Result<Timezone, FactError> {
        self.run("timezone", FACT_DEADLINE, timezone::read).await
    }
    async fn cpus(&self) -> Result<Cpus, FactError> {
        self.run("cpus", FACT_DEADLINE, cpus::read).await
    }
    async fn load(&self) -> Result<Load, FactError> {
        self.run("load", FACT_DEADLINE, load::read).await
    }
    async fn uptime(&self) -> Result<Uptime, FactError> {
        self.run("uptime", FACT_DEADLINE, uptime::read).await
    }
    async fn vcpus(&self) -> Result<Vec<Vcpu>, FactError> {
        self.run("vcpus", FACT_DEADLINE, cpus::vcpus).await
    }
    async fn memory_blocks(&self) -> Result<Vec<MemoryBlock>, FactError> {
        self.run("memory blocks", FACT_DEADLINE, memblocks::read)
            .await
    }
    async fn memory_block_size(&self) -> Result<u64, FactError> {
        self.run("memory block size", FACT_DEADLINE, memblocks::block_size)
            .await
    }
    async fn block_devices(&self) -> Result<Vec<BlockDevice>, FactError> {
        self.run("block devices", FACT_DEADLINE, blockdev::read)
            .await
    }
    async fn disk_stats(&self) -> Result<Vec<DiskStats>, FactError> {
        self.run("disk statistics", FACT_DEADLINE, diskstats::read)
            .await
    }
    async fn cpu_stats(&self) -> Result<Vec<CpuStats>, FactError> {
        self.run("cpu statistics", FACT_DEADLINE, cpus::cpu_stats)
            .await
    }
    async fn routes(&self) -> Result<Vec<Route>, FactError> {
        self.run("routes", FACT_DEADLINE, routes::read).await
    }

    async fn report(&self, which: &[Fact]) -> Report {
        let want = |f: Fact| which.contains(&f);
        macro_rules! maybe {
            ($fact:expr, $call:expr) => {
                async { if want($fact) { Some($call.await) } else { None } }
            };
        }
        let (hostname, fqdn, os, interfaces, applications, memory) = tokio::join!(
            maybe!(Fact::Hostname, self.hostname()),
            maybe!(Fact::Fqdn, self.fqdn()),
            maybe!(Fact::Os, self.os()),
            maybe!(Fact::Interfaces, self.interfaces()),
            maybe!(Fact::Applications, self.applications()),
            maybe!(Fact::Memory, self.memory()),
        );
        let (users, filesystems, timezone, cpus, load, uptime) = tokio::join!(
            maybe!(Fact::Users, self.users()),
            maybe!(Fact::Filesystems, self.filesystems()),
            maybe!(Fact::Timezone, self.timezone()),
            maybe!(Fact::Cpus, self.cpus()),
            maybe!(Fact::Load, self.load()),
            maybe!(Fact::Uptime, self.uptime()),
        );
        let mut report = Report::default();
        let mut errors = std::collections::BTreeMap::new();
        fn take<T>(
            fact: Fact,
            r: Option<Result<T, FactError>>,
            errors: &mut std::collections::BTreeMap<String, String>,
        ) -> Option<T> {
            match r? {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.insert(fact.name().to_owned(), error_chain(&e));
                    None
                }
            }
        }
        report.hostname = take(Fact::Hostname, hostname, &mut errors);
        report.fqdn = take(Fact::Fqdn, fqdn, &mut errors);
        report.os = take(Fact::Os, os, &mut errors);
        report.interfaces = take(Fact::Interfaces, interfaces, &mut errors);
        report.applications = take(Fact::Applications, applications, &mut errors);
        report.memory = take(Fact::Memory, memory, &mut errors);
        report.users = take(Fact::Users, users, &mut errors);
        report.filesystems = take(Fact::Filesystems, filesystems, &mut errors);
        report.timezone = take(Fact::Timezone, timezone, &mut errors);
        report.cpus = take(Fact::Cpus, cpus, &mut errors);
        report.load = take(Fact::Load, load, &mut errors);
        report.uptime = take(Fact::Uptime, uptime, &mut errors);
        report.errors = errors;
        report
    }
}

/// An error with its sources, `: `-joined (`Cannot read /proc/meminfo: No such file ...`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> SystemFacts {
        SystemFacts::new(Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        )))
    }

    #[tokio::test]
    async fn full_report_on_a_fixture() {
        let r = fixture().report(&Fact::ALL).await;
        assert_eq!(r.hostname.as_deref(), Some("guest"));
        assert_eq!(r.fqdn.as_deref(), Some("guest.example.com"));
        assert_eq!(r.os.as_ref().unwrap().id.as_deref(), Some("debian"));
        assert_eq!(r.memory.unwrap().total, 2_030_148 * 1024);
        assert_eq!(r.cpus.unwrap().online, 3);
        assert!(r.interfaces.unwrap().len() >= 3);
        assert_eq!(r.timezone.unwrap().name.as_deref(), Some("Europe/Prague"));
        assert_eq!(r.applications.unwrap().len(), 2);
        assert_eq!(r.filesystems.unwrap().len(), 4);
        // The fixture has no utmp (those are built by the users tests): a reason, not a crash.
        assert!(r.users.is_none());
        let failed: Vec<&String> = r.errors.keys().collect();
        assert_eq!(failed, ["users"], "{:?}", r.errors);
    }

    #[tokio::test]
    async fn missing_sources_are_reasons_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let r = SystemFacts::new(Paths::under(dir.path()))
            .report(&Fact::ALL)
            .await;
        assert!(r.memory.is_none());
        assert!(r.errors["memory"].contains("meminfo"), "{:?}", r.errors);
        assert!(r.errors.contains_key("applications"));
        assert!(r.errors.contains_key("users"));
        // The timezone has a meaning without files: UTC.
        assert!(r.timezone.is_some());
    }

    #[tokio::test]
    async fn only_asked_facts() {
        let r = fixture().report(&[Fact::Load]).await;
        assert!(r.load.is_some());
        assert!(r.hostname.is_none() && r.memory.is_none());
        assert!(r.errors.is_empty());
    }
}
