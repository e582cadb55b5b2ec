//! vCPUs and memory blocks online/offline through sysfs (QGA `guest-set-vcpus`,
//! `guest-set-memory-blocks`), with qemu-ga's semantics:
//!
//! - vCPUs are changed in order and the first failure stops the run; the answer is how many
//!   leading entries were processed, or the first entry's error when none was. A CPU without an
//!   `online` file (cpu0 on most kernels) cannot go offline (`logical processor #N can't be
//!   offlined`) and is "onlined" by doing nothing. Error texts name the sysfs paths as qemu-ga
//!   does (`open("/sys/devices/system/cpu/cpu7/"): No such file or directory`).
//! - memory blocks each get their own answer: `success` (also when nothing had to change),
//!   `not-found` (no such block), `operation-not-supported` (no memory sysfs, or a block
//!   without `state` asked to go offline), `operation-failed` with the errno.

use async_trait::async_trait;
use nix::errno::Errno;

use crate::action::{
    Action, ActionError, ActionHandler, ActionKind, MemoryBlockChange, MemoryBlockResponse,
    Outcome, VcpuChange,
};
use crate::events::{Event, EventBus};
use crate::paths::Paths;

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Read the first byte of a sysfs attribute.
fn read_first(path: &std::path::Path) -> Result<Option<u8>, Errno> {
    let text = std::fs::read(path).map_err(|e| io_errno(&e))?;
    Ok(text.first().copied())
}

/// Apply one vCPU change.
pub fn set_vcpu(paths: &Paths, change: VcpuChange) -> Result<(), ActionError> {
    let shown = format!("/sys/devices/system/cpu/cpu{}/", change.logical_id);
    let dir = paths.join(&shown);
    if !dir.is_dir() {
        let errno = match std::fs::metadata(&dir) {
            Ok(_) => Errno::ENOTDIR,
            Err(e) => io_errno(&e),
        };
        return Err(ActionError::Failed(format!(
            "open(\"{shown}\"): {}",
            errno.desc()
        )));
    }
    let online = dir.join("online");
    let shown_online = format!("{shown}/online");
    let current = match read_first(&online) {
        Ok(Some(b)) => b != b'0',
        Ok(None) => {
            return Err(ActionError::Failed(format!(
                "pread(\"{shown_online}\"): unexpected EOF"
            )));
        }
        Err(Errno::ENOENT) => {
            return if change.online {
                Ok(())
            } else {
                Err(ActionError::Failed(format!(
                    "logical processor #{} can't be offlined",
                    change.logical_id
                )))
            };
        }
        Err(e) => {
            return Err(ActionError::Failed(format!(
                "open(\"{shown_online}\"): {}",
                e.desc()
            )));
        }
    };
    if current != change.online {
        let byte: &[u8] = if change.online { b"1" } else { b"0" };
        std::fs::write(&online, byte).map_err(|e| {
            ActionError::Failed(format!(
                "pwrite(\"{shown_online}\"): {}",
                io_errno(&e).desc()
            ))
        })?;
    }
    Ok(())
}

/// Apply vCPU changes in order, stopping at the first failure; qemu-ga's answer.
pub fn set_vcpus(paths: &Paths, changes: &[VcpuChange]) -> Result<u32, ActionError> {
    let mut processed = 0;
    for c in changes {
        if let Err(e) = set_vcpu(paths, *c) {
            if processed == 0 {
                return Err(e);
            }
            tracing::warn!(logical_id = c.logical_id, error = %e, processed, "vCPU change stopped");
            break;
        }
        processed += 1;
    }
    Ok(processed)
}

/// Online CPUs according to `/sys/devices/system/cpu/online` (`0-3,5`).
pub fn online_cpus(paths: &Paths) -> Option<u32> {
    let text = std::fs::read_to_string(paths.sys("devices/system/cpu/online")).ok()?;
    let mut n = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// Apply one memory-block change; qemu-ga's per-block answer.
pub fn set_memory_block(paths: &Paths, change: MemoryBlockChange) -> MemoryBlockResponse {
    let memory = paths.sys("devices/system/memory");
    match std::fs::read_dir(&memory) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return MemoryBlockResponse::OperationNotSupported;
        }
        Err(e) => return MemoryBlockResponse::OperationFailed(io_errno(&e) as i32),
    }
    let dir = memory.join(format!("memory{}", change.phys_index));
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return MemoryBlockResponse::OperationFailed(Errno::ENOTDIR as i32),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return MemoryBlockResponse::NotFound;
        }
        Err(e) => return MemoryBlockResponse::OperationFailed(io_errno(&e) as i32),
    }
    let state = dir.join("state");
    let current = match std::fs::read_to_string(&state) {
        Ok(s) => s,
        // Old kernels have no `state`: such blocks are online and stay so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if change.online {
                MemoryBlockResponse::Success
            } else {
                MemoryBlockResponse::OperationNotSupported
            };
        }
        Err(e) => return MemoryBlockResponse::OperationFailed(io_errno(&e) as i32),
    };
    if current.starts_with("online") != change.online {
        let new = if change.online { "online" } else { "offline" };
        if let Err(e) = std::fs::write(&state, new) {
            return MemoryBlockResponse::OperationFailed(io_errno(&e) as i32);
        }
    }
    MemoryBlockResponse::Success
}

/// Handles [`Action::SetVcpus`] and [`Action::SetMemoryBlocks`].
#[derive(Debug, Clone)]
pub struct CpuMemHandler {
    paths: Paths,
    events: EventBus,
}

impl CpuMemHandler {
    /// Change the CPUs and memory of the system at `paths`; CPU changes are published on
    /// `events`.
    pub fn new(paths: Paths, events: EventBus) -> Self {
        Self { paths, events }
    }
}

#[async_trait]
impl ActionHandler for CpuMemHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::SetVcpus, ActionKind::SetMemoryBlocks]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let paths = self.paths.clone();
        // Offlining a CPU or a memory block can take long (migrating pages): off the runtime.
        let task = tokio::task::spawn_blocking(move || match action {
            Action::SetVcpus(changes) => {
                let before = online_cpus(&paths);
                let processed = set_vcpus(&paths, &changes)?;
                let after = online_cpus(&paths);
                Ok((
                    Outcome::VcpusProcessed(processed),
                    after.filter(|a| Some(*a) != before),
                ))
            }
            Action::SetMemoryBlocks(changes) => Ok((
                Outcome::MemoryBlocks(
                    changes
                        .iter()
                        .map(|c| (c.phys_index, set_memory_block(&paths, *c)))
                        .collect(),
                ),
                None,
            )),
            _ => Err(ActionError::Unsupported),
        });
        let (outcome, cpus_now) = task
            .await
            .map_err(|e| ActionError::Failed(format!("sysfs task failed: {e}")))??;
        if let Some(online) = cpus_now {
            self.events.publish(Event::CpusChanged { online });
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let cpu = d.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(cpu.join("cpu0")).unwrap(); // no `online`: cannot go offline
        for (n, state) in [(1, "1\n"), (2, "0\n"), (3, "1\n")] {
            std::fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
            std::fs::write(cpu.join(format!("cpu{n}/online")), state).unwrap();
        }
        std::fs::write(cpu.join("online"), "0-1,3\n").unwrap();
        let mem = d.path().join("sys/devices/system/memory");
        for (n, state) in [(32, "online\n"), (33, "offline\n")] {
            std::fs::create_dir_all(mem.join(format!("memory{n}"))).unwrap();
            std::fs::write(mem.join(format!("memory{n}/state")), state).unwrap();
        }
        std::fs::create_dir_all(mem.join("memory34")).unwrap(); // no `state`
        let p = Paths::under(d.path());
        (d, p)
    }

    fn v(id: u32, online: bool) -> VcpuChange {
        VcpuChange {
            logical_id: id,
            online,
        }
    }

    fn read(d: &tempfile::TempDir, rel: &str) -> String {
        std::fs::read_to_string(d.path().join(rel)).unwrap()
    }

    #[test]
    fn vcpus_processed_prefix_and_texts() {
        let (d, p) = sysfs();
        assert_eq!(set_vcpus(&p, &[]).unwrap(), 0);
        assert_eq!(
            set_vcpus(&p, &[v(1, false), v(2, true), v(0, true)]).unwrap(),
            3
        );
        assert_eq!(read(&d, "sys/devices/system/cpu/cpu1/online"), "0");
        assert_eq!(read(&d, "sys/devices/system/cpu/cpu2/online"), "1");
        // Already in the wanted state: not written.
        assert_eq!(read(&d, "sys/devices/system/cpu/cpu3/online"), "1\n");
        assert_eq!(
            set_vcpus(&p, &[v(3, true), v(0, false), v(1, true)]).unwrap(),
            1
        );
        assert_eq!(
            read(&d, "sys/devices/system/cpu/cpu1/online"),
            "0",
            "stopped before"
        );
        let e = |c: &[VcpuChange]| set_vcpus(&p, c).unwrap_err().to_string();
        assert_eq!(e(&[v(0, false)]), "logical processor #0 can't be offlined");
        assert_eq!(
            e(&[v(999, true)]),
            "open(\"/sys/devices/system/cpu/cpu999/\"): No such file or directory"
        );
        std::fs::write(d.path().join("sys/devices/system/cpu/cpu3/online"), "").unwrap();
        assert_eq!(
            e(&[v(3, true)]),
            "pread(\"/sys/devices/system/cpu/cpu3//online\"): unexpected EOF"
        );
        assert_eq!(online_cpus(&p), Some(3));
    }

    #[test]
    fn memory_block_responses() {
        let (d, p) = sysfs();
        let m = |i: u64, online: bool| {
            set_memory_block(
                &p,
                MemoryBlockChange {
                    phys_index: i,
                    online,
                },
            )
        };
        assert_eq!(m(32, false), MemoryBlockResponse::Success);
        assert_eq!(
            read(&d, "sys/devices/system/memory/memory32/state"),
            "offline"
        );
        assert_eq!(m(33, false), MemoryBlockResponse::Success);
        assert_eq!(
            read(&d, "sys/devices/system/memory/memory33/state"),
            "offline\n"
        );
        assert_eq!(m(33, true), MemoryBlockResponse::Success);
        assert_eq!(
            read(&d, "sys/devices/system/memory/memory33/state"),
            "online"
        );
        assert_eq!(m(99, true), MemoryBlockResponse::NotFound);
        assert_eq!(m(34, true), MemoryBlockResponse::Success);
        assert_eq!(m(34, false), MemoryBlockResponse::OperationNotSupported);
        std::fs::remove_dir_all(d.path().join("sys/devices/system/memory")).unwrap();
        assert_eq!(m(32, true), MemoryBlockResponse::OperationNotSupported);
    }

    #[tokio::test]
    async fn handler_publishes_cpu_changes() {
        let (d, p) = sysfs();
        let events = EventBus::new(4);
        let mut rx = events.subscribe();
        let h = CpuMemHandler::new(p, events);
        let out = h.run(Action::SetVcpus(vec![v(3, true)])).await.unwrap();
        assert_eq!(out, Outcome::VcpusProcessed(1));
        assert!(rx.try_recv().is_err(), "nothing changed, nothing published");
        let out = h
            .run(Action::SetMemoryBlocks(vec![
                MemoryBlockChange {
                    phys_index: 99,
                    online: true,
                },
                MemoryBlockChange {
                    phys_index: 32,
                    online: true,
                },
            ]))
            .await
            .unwrap();
        assert_eq!(
            out,
            Outcome::MemoryBlocks(vec![
                (99, MemoryBlockResponse::NotFound),
                (32, MemoryBlockResponse::Success)
            ])
        );
        drop(d);
    }
}
