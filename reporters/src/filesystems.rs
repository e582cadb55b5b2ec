//! Mounted filesystems from `/proc/self/mountinfo`, with usage from statvfs and the disks
//! behind each from sysfs.
//!
//! statvfs on a dead network mount blocks in the kernel, uninterruptibly. Each call runs on
//! a thread of its own with a deadline; a mount that does not answer gets no sizes, and the
//! stuck thread is remembered, so the next report does not pile another one on it.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Filesystem;

use crate::{disks, util};

/// How long one statvfs may take.
pub const STATVFS_DEADLINE: Duration = Duration::from_secs(2);

/// Kernel-internal filesystems that hold no user data; `df` hides them too.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// Mount points whose statvfs has not returned yet.
static STUCK: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Device number, major.
    pub major: u32,
    /// Device number, minor.
    pub minor: u32,
    /// Where it is mounted.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Parses mountinfo (`proc(5)`), undoing the octal escapes (`\040` for a space).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let (devnum, mountpoint, opts) = (l.get(2)?, l.get(4)?, l.get(5)?);
            let (major, minor) = devnum.split_once(':')?;
            let mut r = right.split(' ');
            let (fstype, source) = (r.next()?, r.next().unwrap_or(""));
            Some(Mount {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mountpoint: unescape(mountpoint),
                fstype: unescape(fstype),
                source: unescape(source),
                read_only: opts.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True for the filesystems a report lists.
pub fn is_reported(fstype: &str) -> bool {
    !PSEUDO.contains(&fstype)
}

/// Reads the mounted filesystems under `paths`; sizes only on the running system.
pub fn read(paths: &Paths) -> Result<Vec<Filesystem>, FactError> {
    let path = paths.proc("self/mountinfo");
    let mounts: Vec<Mount> = parse_mountinfo(&util::read(&path)?)
        .into_iter()
        .filter(|m| is_reported(&m.fstype))
        .collect();
    let sizes = if paths.is_system() {
        usage(mounts.iter().map(|m| m.mountpoint.clone()).collect())
    } else {
        vec![None; mounts.len()]
    };
    Ok(mounts
        .into_iter()
        .zip(sizes)
        .map(|(m, size)| {
            let dev = disks::sysfs_by_devnum(paths, m.major, m.minor).or_else(|| {
                // btrfs and others show an anonymous device number: go by the source.
                let name = m.source.strip_prefix("/dev/")?;
                let node = std::fs::canonicalize(paths.join(&m.source)).ok();
                let name = node
                    .as_ref()
                    .and_then(|n| n.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.rsplit('/').next().unwrap_or(name).to_owned());
                disks::sysfs_by_name(paths, &name)
            });
            let (total, used, available) = match size {
                Some((t, u, a)) => (Some(t), Some(u), Some(a)),
                None => (None, None, None),
            };
            Filesystem {
                disks: dev
                    .map(|d| disks::disks_behind(paths, &d))
                    .unwrap_or_default(),
                mountpoint: m.mountpoint,
                device: m.source,
                fstype: m.fstype,
                total,
                used,
                available,
                read_only: m.read_only,
            }
        })
        .collect())
}

/// (total, used, available) bytes for each mount point, `None` where statvfs failed, timed
/// out or is still stuck from an earlier report.
fn usage(mountpoints: Vec<String>) -> Vec<Option<(u64, u64, u64)>> {
    let stuck: HashSet<String> = STUCK
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default();
    let jobs: Vec<_> = mountpoints
        .iter()
        .map(|mp| {
            let mp = mp.clone();
            let skip = stuck.contains(&mp);
            move || {
                if skip {
                    return None;
                }
                mark_stuck(&mp, true);
                // The field types are u32 on some 32-bit targets, u64 on 64-bit ones.
                #[allow(clippy::unnecessary_cast)]
                let r = nix::sys::statvfs::statvfs(mp.as_str()).ok().map(|s| {
                    let frag = s.fragment_size().max(1) as u64;
                    let total = (s.blocks() as u64).saturating_mul(frag);
                    let free = (s.blocks_free() as u64).saturating_mul(frag);
                    let avail = (s.blocks_available() as u64).saturating_mul(frag);
                    (total, total.saturating_sub(free), avail)
                });
                mark_stuck(&mp, false);
                r
            }
        })
        .collect();
    util::each_with_deadline(jobs, STATVFS_DEADLINE)
        .into_iter()
        .map(Option::flatten)
        .collect()
}

fn mark_stuck(mp: &str, on: bool) {
    let mut g = STUCK.lock().unwrap_or_else(PoisonError::into_inner);
    let set = g.get_or_insert_with(HashSet::new);
    if on {
        set.insert(mp.to_owned());
    } else {
        set.remove(mp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_with_escapes() {
        let m = parse_mountinfo(
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n\
             30 22 0:45 / /mnt/my\\040disk ro,nosuid master:3 shared:9 - nfs4 srv:/export\\040x rw\n\
             31 22 0:5 / /proc rw - proc proc rw\n\
             garbage\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mountpoint, "/");
        assert_eq!((m[0].major, m[0].minor), (254, 1));
        assert_eq!(m[1].mountpoint, "/mnt/my disk");
        assert_eq!(m[1].source, "srv:/export x");
        assert!(m[1].read_only && !m[0].read_only);
        assert!(!is_reported("proc") && is_reported("tmpfs") && is_reported("nfs4"));
    }

    #[test]
    fn fixture_tree() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let fs = read(&p).unwrap();
        let mps: Vec<&str> = fs.iter().map(|f| f.mountpoint.as_str()).collect();
        assert_eq!(mps, ["/", "/home", "/run", "/mnt/backup"]);
        assert_eq!(fs[0].disks[0].name, "vda");
        assert_eq!(fs[1].device, "/dev/mapper/vg-home");
        assert_eq!(fs[1].disks[0].name, "sda");
        assert!(fs[2].disks.is_empty(), "tmpfs has no disk");
        assert!(
            fs[0].total.is_none(),
            "no statvfs on a tree that is not running"
        );
    }

    #[test]
    fn live_root_has_a_size() {
        let fs = read(&Paths::system()).unwrap();
        let root = fs.iter().find(|f| f.mountpoint == "/").unwrap();
        assert!(root.total.unwrap() > 0);
        assert!(root.used.unwrap() <= root.total.unwrap());
    }
}
