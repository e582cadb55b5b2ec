//! fstrim: FITRIM on every freezable filesystem (QGA `guest-fstrim`).
//!
//! As qemu-ga: one result per filesystem, last mounted first; a filesystem that cannot trim
//! (`ENOTTY`, `EOPNOTSUPP`) says `trim not supported`, other failures `failed to open: <err>` or
//! `failed to trim: <err>`; on success the bytes trimmed and the minimum the kernel used.
//! Unlike qemu-ga, read-only mounts are left out (they cannot trim) and each filesystem is
//! trimmed once, however often it is mounted.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use nix::errno::Errno;

use super::mounts::{self, MountEntry, MountOpenError};
use crate::action::{Action, ActionError, ActionHandler, ActionKind, Outcome, TrimResult};
use crate::paths::Paths;

/// `struct fstrim_range` of linux/fs.h.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FstrimRange {
    /// First byte to consider.
    pub start: u64,
    /// Bytes to consider; on return, bytes trimmed.
    pub len: u64,
    /// Smallest free extent to discard; on return, the one used.
    pub minlen: u64,
}

// _IOWR('X', 121, struct fstrim_range)
nix::ioctl_readwrite!(ioctl_fitrim, b'X', 121, FstrimRange);

/// Trims one filesystem; apart so the result mapping can be tested without a device.
pub trait Trimmer: Send + Sync + std::fmt::Debug {
    /// FITRIM the filesystem of `mount` at `path` with `minimum`; (trimmed, minimum used).
    fn trim(&self, path: &Path, mount: &MountEntry, minimum: u64) -> Result<(u64, u64), TrimError>;
}

/// How trimming one filesystem failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimError {
    /// Opening the mount point failed.
    Open(Errno),
    /// The ioctl failed.
    Ioctl(Errno),
}

/// The real FITRIM.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxTrimmer;

impl Trimmer for LinuxTrimmer {
    fn trim(&self, path: &Path, mount: &MountEntry, minimum: u64) -> Result<(u64, u64), TrimError> {
        use std::os::fd::AsRawFd;
        let file = mounts::open_mount(path, mount).map_err(|e| match e {
            MountOpenError::Open(errno) => TrimError::Open(errno),
            MountOpenError::NotThatFilesystem => TrimError::Open(Errno::ESTALE),
        })?;
        let mut range = FstrimRange {
            start: 0,
            len: u64::MAX,
            minlen: minimum,
        };
        // SAFETY: the fd is open for the whole call and `range` is a live, properly laid out
        // `struct fstrim_range` the kernel reads and writes.
        unsafe { ioctl_fitrim(file.as_raw_fd(), &mut range) }.map_err(TrimError::Ioctl)?;
        Ok((range.len, range.minlen))
    }
}

fn result_of(path: String, r: Result<(u64, u64), TrimError>) -> TrimResult {
    let error = |e: String| TrimResult {
        path: path.clone(),
        trimmed: None,
        minimum: None,
        error: Some(e),
    };
    match r {
        Ok((trimmed, minimum)) => TrimResult {
            path: path.clone(),
            trimmed: Some(trimmed),
            minimum: Some(minimum),
            error: None,
        },
        Err(TrimError::Ioctl(Errno::ENOTTY | Errno::EOPNOTSUPP)) => {
            error("trim not supported".into())
        }
        Err(TrimError::Ioctl(e)) => error(format!("failed to trim: {}", e.desc())),
        Err(TrimError::Open(e)) => error(format!("failed to open: {}", e.desc())),
    }
}

/// Trim every freezable filesystem of `paths`, last mounted first.
pub fn trim_all(
    paths: &Paths,
    trimmer: &dyn Trimmer,
    minimum: Option<u64>,
) -> Result<Vec<TrimResult>, ActionError> {
    let mounts = mounts::read_mounts(paths).map_err(|e| {
        ActionError::Failed(format!(
            "failed to open {}: {}",
            e.path.display(),
            Errno::from_raw(e.source.raw_os_error().unwrap_or(0)).desc()
        ))
    })?;
    Ok(mounts::freezable(&mounts, None)
        .iter()
        .rev()
        .map(|m| {
            let r = trimmer.trim(&m.path_under(paths), m, minimum.unwrap_or(0));
            result_of(m.mountpoint.clone(), r)
        })
        .collect())
}

/// Handles [`Action::FsTrim`].
#[derive(Debug, Clone)]
pub struct TrimHandler {
    paths: Paths,
    trimmer: Arc<dyn Trimmer>,
}

impl TrimHandler {
    /// Trim the filesystems of `paths` with `trimmer`.
    pub fn new(paths: Paths, trimmer: Arc<dyn Trimmer>) -> Self {
        Self { paths, trimmer }
    }
}

#[async_trait]
impl ActionHandler for TrimHandler {
    fn kinds(&self) -> &[ActionKind] {
        &[ActionKind::FsTrim]
    }

    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let Action::FsTrim { minimum } = action else {
            return Err(ActionError::Unsupported);
        };
        let (paths, trimmer) = (self.paths.clone(), Arc::clone(&self.trimmer));
        // FITRIM walks the whole free space: minutes on a big disk, so off the runtime.
        tokio::task::spawn_blocking(move || trim_all(&paths, trimmer.as_ref(), minimum))
            .await
            .map_err(|e| ActionError::Failed(format!("trim task failed: {e}")))?
            .map(Outcome::Trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Scripted;

    impl Trimmer for Scripted {
        fn trim(&self, _p: &Path, m: &MountEntry, min: u64) -> Result<(u64, u64), TrimError> {
            match m.mountpoint.as_str() {
                "/" => Ok((4096 * 10, min.max(4096))),
                "/cd" => Err(TrimError::Ioctl(Errno::EOPNOTSUPP)),
                "/bad" => Err(TrimError::Ioctl(Errno::EIO)),
                _ => Err(TrimError::Open(Errno::EACCES)),
            }
        }
    }

    #[test]
    fn results_in_qemu_ga_form_last_mount_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
        std::fs::write(
            d.path().join("proc/self/mountinfo"),
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:5 / /run rw - tmpfs tmpfs rw\n\
             3 1 8:2 / /cd rw - vfat /dev/sda2 rw\n\
             4 1 8:3 / /bad rw - xfs /dev/sda3 rw\n\
             5 1 8:4 / /locked rw - ext4 /dev/sda4 rw\n\
             6 1 8:5 / /ro ro - ext4 /dev/sda5 ro\n",
        )
        .unwrap();
        let r = trim_all(&Paths::under(d.path()), &Scripted, Some(1)).unwrap();
        type Row = (String, Option<u64>, Option<u64>, Option<String>);
        let show: Vec<Row> = r
            .into_iter()
            .map(|t| (t.path, t.trimmed, t.minimum, t.error))
            .collect();
        assert_eq!(
            show,
            vec![
                (
                    "/locked".into(),
                    None,
                    None,
                    Some("failed to open: Permission denied".into())
                ),
                (
                    "/bad".into(),
                    None,
                    None,
                    Some("failed to trim: I/O error".into())
                ),
                ("/cd".into(), None, None, Some("trim not supported".into())),
                ("/".into(), Some(40960), Some(4096), None),
            ]
        );
    }
}
