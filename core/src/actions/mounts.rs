//! The mounted filesystems freeze, thaw and trim act on, from `/proc/self/mountinfo`.
//!
//! Only block-backed filesystems count (device major ≠ 0, plus btrfs, whose superblock has an
//! anonymous device), so tmpfs, proc, sysfs, overlay, FUSE and network filesystems are never
//! touched; read-only mounts are skipped (nothing to flush, nothing to trim); a filesystem
//! mounted more than once (bind mounts, btrfs subvolumes) is listed once, at its first mount.

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::paths::Paths;

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number of the filesystem.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Where it is mounted, unescaped (exact string used by freeze lists).
    pub mountpoint: String,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (`/dev/vda1`).
    pub source: String,
    /// Superblock options.
    pub super_options: String,
}

impl MountEntry {
    /// Mounted read-only, per mount or per superblock.
    pub fn read_only(&self) -> bool {
        let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        has_ro(&self.mount_options) || has_ro(&self.super_options)
    }

    /// Backed by a block device (or btrfs, whose device number is anonymous).
    pub fn block_backed(&self) -> bool {
        self.major != 0 || self.fstype == "btrfs"
    }

    /// The device number as `stat(2)` reports it in `st_dev`.
    pub fn dev(&self) -> u64 {
        libc::makedev(self.major, self.minor)
    }

    /// Where to open it: the mount point under the agent's root.
    pub fn path_under(&self, paths: &Paths) -> PathBuf {
        paths.join(Path::new(&self.mountpoint))
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let _root = l.next()?;
    let mountpoint = unescape(l.next()?);
    let mount_options = l.next()?.to_owned();
    let mut r = right.split(' ');
    let fstype = r.next()?.to_owned();
    let source = unescape(r.next().unwrap_or(""));
    let super_options = r.next().unwrap_or("").to_owned();
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mountpoint,
        mount_options,
        fstype,
        source,
        super_options,
    })
}

/// Why the mount list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to open {}", path.display())]
pub struct MountListError {
    /// The mountinfo file.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

/// Every mount of the agent's root, in mount order.
pub fn read_mounts(paths: &Paths) -> Result<Vec<MountEntry>, MountListError> {
    let path = paths.proc("self/mountinfo");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_mountinfo(&text)),
        Err(source) => Err(MountListError { path, source }),
    }
}

/// The mounts freeze, thaw and trim act on, in mount order: block-backed, writable, first
/// mount of each filesystem. With `only`, just the mounts whose mount point equals one of
/// those strings (unknown entries are ignored); the first *listed* mount of a filesystem then
/// stands for it.
pub fn freezable(mounts: &[MountEntry], only: Option<&[String]>) -> Vec<MountEntry> {
    let mut seen = HashSet::new();
    mounts
        .iter()
        .filter(|m| m.block_backed() && !m.read_only())
        .filter(|m| only.is_none_or(|list| list.contains(&m.mountpoint)))
        .filter(|m| seen.insert((m.major, m.minor)))
        .cloned()
        .collect()
}

/// Why a mount point could not be opened for an ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountOpenError {
    /// `open` failed.
    Open(Errno),
    /// What the path leads to is not the filesystem mountinfo names (over-mounted, moved).
    NotThatFilesystem,
}

/// Open the mount point of `mount` at `path` for an ioctl, checking that it leads to the
/// filesystem mountinfo names, so a stale or shadowed mount point never gets another
/// filesystem frozen or trimmed.
pub fn open_mount(path: &Path, mount: &MountEntry) -> Result<std::fs::File, MountOpenError> {
    // O_NONBLOCK: should the path have become a FIFO, opening it must not hang.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| MountOpenError::Open(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let same = if mount.major == 0 {
        // btrfs: st_dev differs per subvolume; the filesystem type is what we can check.
        nix::sys::statfs::fstatfs(&file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
    } else {
        nix::sys::stat::fstat(&file).is_ok_and(|st| st.st_dev == mount.dev())
    };
    if same {
        Ok(file)
    } else {
        Err(MountOpenError::NotThatFilesystem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
27 26 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=400000k,mode=755
30 26 254:16 / /data rw,relatime shared:20 - xfs /dev/vdb rw,attr2,inode64
31 26 254:16 /sub /srv/bind\\040dir rw,relatime shared:20 - xfs /dev/vdb rw,attr2,inode64
32 26 7:0 / /media/cd ro,relatime shared:21 - iso9660 /dev/loop0 ro
33 26 254:32 / /boot ro,relatime shared:22 - ext4 /dev/vdc1 rw
34 26 0:40 / /mnt/nfs rw,relatime shared:23 - nfs4 srv:/export rw,vers=4.2
35 26 0:41 / /home rw,relatime shared:24 - btrfs /dev/vdd rw,space_cache=v2,subvolid=257
36 26 0:41 / /var/lib rw,relatime shared:25 - btrfs /dev/vdd rw,space_cache=v2,subvolid=258
garbage line
";

    fn mps(v: &[MountEntry]) -> Vec<&str> {
        v.iter().map(|m| m.mountpoint.as_str()).collect()
    }

    #[test]
    fn parses_and_unescapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 11);
        assert_eq!(m[5].mountpoint, "/srv/bind dir");
        assert_eq!((m[2].major, m[2].minor), (254, 1));
        assert_eq!(m[2].fstype, "ext4");
        assert_eq!(m[2].source, "/dev/vda1");
        assert_eq!(m[2].dev(), libc::makedev(254, 1));
        assert!(m[6].read_only());
        assert!(m[7].read_only(), "per-mount ro counts");
        assert_eq!(unescape("a\\134b\\011c\\012"), "a\\b\tc\n");
        assert_eq!(unescape("trail\\04"), "trail\\04");
    }

    #[test]
    fn freezable_skips_virtual_readonly_and_duplicates() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(mps(&freezable(&m, None)), ["/", "/data", "/home"]);
    }

    #[test]
    fn freeze_list_matches_exact_strings() {
        let m = parse_mountinfo(SAMPLE);
        let only = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            mps(&freezable(
                &m,
                Some(&only(&["/srv/bind dir", "/nonexistent", "/data/"]))
            )),
            ["/srv/bind dir"]
        );
        assert_eq!(
            mps(&freezable(&m, Some(&only(&["/var/lib", "/proc"])))),
            ["/var/lib"]
        );
        assert!(freezable(&m, Some(&[])).is_empty());
    }
}
