//! Every OS path guestd touches goes through [`Paths`], so tests run on fixture trees.

use std::path::{Path, PathBuf};

/// The root of the filesystem guestd reads and acts on: `/` in production, a fixture
/// directory in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::system()
    }
}

impl Paths {
    /// The running system.
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A tree rooted at `root` (fixtures, chroots).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is the running system rather than a fixture tree; live-only sources
    /// (netlink, D-Bus, uname, statvfs) are consulted only then.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `rel` (absolute or relative, e.g. `/proc/meminfo` or `proc/meminfo`) under the root.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    /// `/proc/<name>`.
    pub fn proc(&self, name: &str) -> PathBuf {
        self.join("proc").join(name)
    }

    /// `/sys/<name>`.
    pub fn sys(&self, name: &str) -> PathBuf {
        self.join("sys").join(name)
    }

    /// `/etc/<name>`.
    pub fn etc(&self, name: &str) -> PathBuf {
        self.join("etc").join(name)
    }

    /// `/dev/<name>`.
    pub fn dev(&self, name: &str) -> PathBuf {
        self.join("dev").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_strips_leading_slash() {
        let p = Paths::under("/fix");
        assert_eq!(p.join("/proc/meminfo"), PathBuf::from("/fix/proc/meminfo"));
        assert_eq!(p.proc("meminfo"), PathBuf::from("/fix/proc/meminfo"));
        assert!(!p.is_system());
        assert!(Paths::system().is_system());
    }
}
