//! Settings of the oVirt protocol: report intervals and the old agent's filters (note §6).

use std::time::Duration;

/// The old agent's `applications_list` (exact package names), plus guestd itself and the
/// versioned Debian kernel packages: the old agent found those through apt's virtual
/// `linux-image` package, which a plain package list cannot express.
pub const DEFAULT_APPLICATIONS: &[&str] = &[
    "kernel",
    "ovirt-guest-agent",
    "ovirt-guest-agent-common",
    "xorg-x11-drv-qxl",
    "linux-image",
    "linux-image-[0-9]*",
    "xserver-xorg-video-qxl",
    "xf86-video-qxl",
    "kernel-desktop",
    "kernel-default",
    "kernel-trace",
    "kernel-vanilla",
    "kernel-debug",
    "kernel-ec2",
    "kernel-xen",
    "kernel-ppc64",
    "cloud-init",
    "guestd",
];

/// The old agent's `ignored_fs`.
pub const DEFAULT_IGNORED_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "fuse.gvfsd-fuse",
    "fuse.gvfs-fuse-daemon",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "proc",
    "pstore",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "udev",
    "usbfs",
];

/// The old agent's `ignored_nics` (`docker0`) widened to container plumbing, whose addresses
/// only clutter the host's IP list (note §9.3).
pub const DEFAULT_IGNORED_NICS: &[&str] = &["docker0", "docker*", "veth*"];

/// Which installed packages `applications` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppFilter {
    /// Packages whose name matches one of these patterns (`*`, `?` and `[...]` globs; a
    /// pattern without them is an exact name, as in the old agent).
    Patterns(Vec<String>),
    /// The whole package database.
    All,
}

impl AppFilter {
    /// True when a package of this name is reported.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            AppFilter::All => true,
            AppFilter::Patterns(p) => p.iter().any(|p| glob_match(p, name)),
        }
    }
}

/// How `free-ram` and `mem_free` count free memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeRam {
    /// MemFree + Buffers + Cached, as the old agent (and VDSM's expectation) had it.
    Legacy,
    /// The kernel's MemAvailable estimate (note §9.4).
    Available,
}

/// Settings of the oVirt protocol.
#[derive(Clone, Debug)]
pub struct OvirtConfig {
    /// `heartbeat` interval (old `heart_beat_rate`, 5 s).
    pub heartbeat: Duration,
    /// Active-user poll (old `report_user_rate`, 10 s); sent when it changed.
    pub user: Duration,
    /// `number-of-cpus` (old `report_num_cpu_rate`, 60 s); sent when it changed.
    pub cpus: Duration,
    /// applications, containers, host-name, os-version, network-interfaces, fqdn (old
    /// `report_application_rate`, 120 s); each sent when it changed.
    pub inventory: Duration,
    /// `disks-usage` (old `report_disk_usage`, 300 s); sent when it changed.
    pub disks: Duration,
    /// Delay after an address change before interfaces are re-read (coalesces bursts).
    pub address_settle: Duration,
    /// Which packages to report.
    pub applications: AppFilter,
    /// Filesystem types left out of `disks-usage`.
    pub ignored_fs: Vec<String>,
    /// Leave out filesystems whose total and used are both 0.
    pub ignore_zero_size_fs: bool,
    /// Interface names (globs) left out of `network-interfaces`.
    pub ignored_nics: Vec<String>,
    /// How free memory is counted.
    pub free_ram: FreeRam,
    /// Largest message written, in bytes with its newline.
    pub max_message: usize,
}

impl Default for OvirtConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            user: Duration::from_secs(10),
            cpus: Duration::from_secs(60),
            inventory: Duration::from_secs(120),
            disks: Duration::from_secs(300),
            address_settle: Duration::from_secs(1),
            applications: AppFilter::Patterns(
                DEFAULT_APPLICATIONS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            ignored_fs: DEFAULT_IGNORED_FS.iter().map(|s| (*s).to_owned()).collect(),
            ignore_zero_size_fs: true,
            ignored_nics: DEFAULT_IGNORED_NICS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            free_ram: FreeRam::Legacy,
            max_message: super::frame::MAX_MESSAGE_LINE,
        }
    }
}

/// Shell-style glob: `*` (any run), `?` (one char), `[abc]`, `[a-z]`, `[!x]`. An unclosed `[`
/// is a literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*` (linear in practice).
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p, pi, n[ni]) {
                        if matched {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`: `Some((matched, index after
/// ']'))`, or `None` when the class is not closed.
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("kernel", "kernel"));
        assert!(!glob_match("kernel", "kernel-core"));
        assert!(glob_match("veth*", "veth12ab"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match(
            "linux-image-[0-9]*",
            "linux-image-6.1.0-18-amd64"
        ));
        assert!(!glob_match("linux-image-[0-9]*", "linux-image-amd64"));
        assert!(glob_match("eth?", "eth0"));
        assert!(glob_match("[!x]y", "ay"));
        assert!(!glob_match("[!x]y", "xy"));
        assert!(glob_match("a[", "a["));
    }

    #[test]
    fn default_filter_is_the_old_list() {
        let f = OvirtConfig::default().applications;
        for n in ["kernel", "cloud-init", "xorg-x11-drv-qxl", "guestd"] {
            assert!(f.matches(n), "{n}");
        }
        for n in ["bash", "kernel-core", "linux-image-amd64"] {
            assert!(!f.matches(n), "{n}");
        }
        assert!(AppFilter::All.matches("bash"));
    }
}
