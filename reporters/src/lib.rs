//! One collector per fact, reading `/proc`, `/sys`, utmp, package databases and D-Bus through
//! an injectable root.

use async_trait::async_trait;
use guestd_core::contract::{FactError, Facts};
use guestd_core::model::*;
use guestd_core::{Paths, sysfacts::*};

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
}

const SKELETON: &str = "this fact (reporters not built yet)";

#[async_trait]
impl Facts for SystemFacts {
    async fn hostname(&self) -> Result<String, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn fqdn(&self) -> Result<String, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn os(&self) -> Result<OsInfo, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn interfaces(&self) -> Result<Vec<Interface>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn applications(&self) -> Result<Vec<Application>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn memory(&self) -> Result<Memory, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn users(&self) -> Result<Vec<UserSession>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn filesystems(&self) -> Result<Vec<Filesystem>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn timezone(&self) -> Result<Timezone, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn cpus(&self) -> Result<Cpus, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn load(&self) -> Result<Load, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn uptime(&self) -> Result<Uptime, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn vcpus(&self) -> Result<Vec<Vcpu>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn memory_blocks(&self) -> Result<Vec<MemoryBlock>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn memory_block_size(&self) -> Result<u64, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn block_devices(&self) -> Result<Vec<BlockDevice>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn disk_stats(&self) -> Result<Vec<DiskStats>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn cpu_stats(&self) -> Result<Vec<CpuStats>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn routes(&self) -> Result<Vec<Route>, FactError> {
        Err(FactError::Unsupported(SKELETON))
    }
    async fn report(&self, _which: &[Fact]) -> Report {
        Report::default()
    }
}
