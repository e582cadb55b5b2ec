//! Finding a virtio-serial port by name without opening it.
//!
//! udev links `/dev/virtio-ports/NAME` to the port's node; images without udev (system VMs,
//! initramfs) only have `/dev/vportNpM` and its name in `/sys/class/virtio-ports/vportNpM/name`.
//! Both are read through [`Paths`], so tests use a fixture tree.

use std::path::{Path, PathBuf};

use guestd_core::Paths;

/// How a port was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Through the udev link `/dev/virtio-ports/NAME`.
    Link,
    /// Through `/sys/class/virtio-ports/*/name` (no udev).
    Sysfs,
    /// The configuration named a device path directly.
    Path,
}

/// A port found by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The candidate name that matched (or the configured path).
    pub name: String,
    /// The node to open.
    pub dev: PathBuf,
    /// The port's sysfs directory, when known: it disappears when the port is unplugged.
    pub sysfs: Option<PathBuf>,
    /// How it was found.
    pub via: Via,
}

/// One port the kernel knows, as listed by [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortEntry {
    /// The kernel's node name (`vport1p1`).
    pub node: String,
    /// The name the host gave it (empty until the host announces it).
    pub name: String,
}

/// `/sys/class/virtio-ports` under the root.
pub fn sysfs_dir(paths: &Paths) -> PathBuf {
    paths.sys("class/virtio-ports")
}

/// `/dev/virtio-ports` under the root.
pub fn links_dir(paths: &Paths) -> PathBuf {
    paths.dev("virtio-ports")
}

/// Every virtio-serial port in sysfs, sorted by node name. Cheap: a directory listing and one
/// small read per port. Empty when `virtio_console` is not loaded.
pub fn list(paths: &Paths) -> Vec<PortEntry> {
    let Ok(dir) = std::fs::read_dir(sysfs_dir(paths)) else {
        return Vec::new();
    };
    let mut out: Vec<PortEntry> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let node = e.file_name().into_string().ok()?;
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            Some(PortEntry {
                node,
                name: trim_name(&name).to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// The kernel writes the name followed by a newline.
fn trim_name(raw: &str) -> &str {
    raw.strip_suffix('\n').unwrap_or(raw)
}

/// A candidate that is a device path rather than a port name (`/dev/vport1p1`, or qemu-ga's
/// `-p /dev/virtio-ports/NAME`).
fn is_path(candidate: &str) -> bool {
    candidate.contains('/')
}

/// Find the first of `names` (in preference order) that exists. Each name is tried by link,
/// then by sysfs scan, before the next name. On failure the error says what was looked at.
pub fn find(paths: &Paths, names: &[String]) -> Result<Found, String> {
    let mut why = Vec::new();
    let ports = list(paths);
    for name in names {
        match find_one(paths, name, &ports) {
            Ok(found) => return Ok(found),
            Err(w) => why.push(w),
        }
    }
    if names.is_empty() {
        return Err("no virtio-serial port name given".to_owned());
    }
    let mut msg = why.join("; ");
    if !sysfs_dir(paths).is_dir() && !names.iter().all(|n| is_path(n)) {
        msg.push_str(&format!(
            " ({} is missing: no virtio-serial device, or virtio_console is not loaded)",
            sysfs_dir(paths).display()
        ));
    }
    Err(msg)
}

fn find_one(paths: &Paths, name: &str, ports: &[PortEntry]) -> Result<Found, String> {
    if is_path(name) {
        let dev = paths.join(name);
        return if dev.exists() {
            Ok(Found {
                name: name.to_owned(),
                sysfs: sysfs_of(paths, &dev),
                dev,
                via: Via::Path,
            })
        } else {
            Err(format!("{} does not exist", dev.display()))
        };
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("'{name}' is not a port name"));
    }
    let link = links_dir(paths).join(name);
    // `exists` follows the link: a dangling link (port unplugged, udev not done yet) is no hit.
    if link.exists() {
        return Ok(Found {
            name: name.to_owned(),
            sysfs: sysfs_of(paths, &link),
            dev: link,
            via: Via::Link,
        });
    }
    let Some(port) = ports.iter().find(|p| p.name == name) else {
        return Err(format!("no virtio-serial port named '{name}'"));
    };
    let dev = paths.dev(&port.node);
    if !dev.exists() {
        return Err(format!(
            "port '{name}' is {} but {} does not exist",
            port.node,
            dev.display()
        ));
    }
    Ok(Found {
        name: name.to_owned(),
        sysfs: Some(sysfs_dir(paths).join(&port.node)),
        dev,
        via: Via::Sysfs,
    })
}

/// The sysfs directory of the node `dev` is or links to, when it is a `vportNpM` node.
fn sysfs_of(paths: &Paths, dev: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dev).unwrap_or_else(|_| dev.to_path_buf());
    let node = target.file_name()?.to_str()?;
    let dir = sysfs_dir(paths).join(node);
    (node.starts_with("vport") && dir.is_dir()).then_some(dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// A fixture root with ports `(node, name)`, nodes in /dev, and udev links when `links`.
    pub(crate) fn fixture(ports: &[(&str, &str)], links: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys/class/virtio-ports");
        fs::create_dir_all(&sys).unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        for (node, name) in ports {
            fs::create_dir_all(sys.join(node)).unwrap();
            fs::write(sys.join(node).join("name"), format!("{name}\n")).unwrap();
            fs::write(sys.join(node).join("dev"), "245:1\n").unwrap();
            nix::unistd::mkfifo(
                &t.path().join("dev").join(node),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            if links && !name.is_empty() {
                fs::create_dir_all(t.path().join("dev/virtio-ports")).unwrap();
                std::os::unix::fs::symlink(
                    format!("../{node}"),
                    t.path().join("dev/virtio-ports").join(name),
                )
                .unwrap();
            }
        }
        t
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_by_link() {
        let t = fixture(&[("vport0p1", "org.qemu.guest_agent.0")], true);
        let p = Paths::under(t.path());
        let f = find(&p, &names(&["org.qemu.guest_agent.0"])).unwrap();
        assert_eq!(f.via, Via::Link);
        assert_eq!(
            f.dev,
            t.path().join("dev/virtio-ports/org.qemu.guest_agent.0")
        );
        assert_eq!(
            f.sysfs,
            Some(t.path().join("sys/class/virtio-ports/vport0p1"))
        );
    }

    #[test]
    fn finds_by_sysfs_without_links() {
        let t = fixture(
            &[("vport0p1", "a.b"), ("vport0p2", "org.qemu.guest_agent.0")],
            false,
        );
        let p = Paths::under(t.path());
        let f = find(&p, &names(&["org.qemu.guest_agent.0"])).unwrap();
        assert_eq!(f.via, Via::Sysfs);
        assert_eq!(f.dev, t.path().join("dev/vport0p2"));
        assert_eq!(
            f.sysfs,
            Some(t.path().join("sys/class/virtio-ports/vport0p2"))
        );
    }

    #[test]
    fn preference_order_wins_over_listing_order() {
        // Both oVirt names present: the first candidate is taken even though it sorts later.
        let t = fixture(
            &[
                ("vport0p1", "com.redhat.rhevm.vdsm"),
                ("vport0p2", "ovirt-guest-agent.0"),
            ],
            false,
        );
        let p = Paths::under(t.path());
        let want = names(&["ovirt-guest-agent.0", "com.redhat.rhevm.vdsm"]);
        assert_eq!(find(&p, &want).unwrap().dev, t.path().join("dev/vport0p2"));
        // Only the legacy name: the fallback is used.
        let t = fixture(&[("vport0p1", "com.redhat.rhevm.vdsm")], true);
        let p = Paths::under(t.path());
        let f = find(&p, &want).unwrap();
        assert_eq!(f.name, "com.redhat.rhevm.vdsm");
        assert_eq!(f.via, Via::Link);
    }

    #[test]
    fn name_must_match_exactly() {
        let t = fixture(&[("vport0p1", "org.qemu.guest_agent.01")], false);
        let p = Paths::under(t.path());
        let err = find(&p, &names(&["org.qemu.guest_agent.0"])).unwrap_err();
        assert!(err.contains("no virtio-serial port named"), "{err}");
    }

    #[test]
    fn unnamed_port_is_not_matched_and_listed_with_empty_name() {
        let t = fixture(&[("vport0p1", ""), ("vport0p0", "x")], false);
        let p = Paths::under(t.path());
        assert!(find(&p, &names(&[""])).is_err());
        let l = list(&p);
        assert_eq!(
            l,
            vec![
                PortEntry {
                    node: "vport0p0".into(),
                    name: "x".into()
                },
                PortEntry {
                    node: "vport0p1".into(),
                    name: "".into()
                }
            ]
        );
    }

    #[test]
    fn missing_node_is_explained() {
        let t = fixture(&[("vport0p1", "n")], false);
        fs::remove_file(t.path().join("dev/vport0p1")).unwrap();
        let p = Paths::under(t.path());
        let err = find(&p, &names(&["n"])).unwrap_err();
        assert!(
            err.contains("vport0p1") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn dangling_link_falls_back_to_sysfs() {
        let t = fixture(&[("vport0p3", "n")], false);
        fs::create_dir_all(t.path().join("dev/virtio-ports")).unwrap();
        std::os::unix::fs::symlink("../vport9p9", t.path().join("dev/virtio-ports/n")).unwrap();
        let p = Paths::under(t.path());
        let f = find(&p, &names(&["n"])).unwrap();
        assert_eq!(f.via, Via::Sysfs);
        assert_eq!(f.dev, t.path().join("dev/vport0p3"));
    }

    #[test]
    fn no_sysfs_says_why() {
        let t = tempfile::tempdir().unwrap();
        let p = Paths::under(t.path());
        let err = find(&p, &names(&["a", "b"])).unwrap_err();
        assert!(err.contains("'a'") && err.contains("'b'"), "{err}");
        assert!(err.contains("virtio_console"), "{err}");
        assert!(list(&p).is_empty());
    }

    #[test]
    fn explicit_path_is_taken_as_is() {
        let t = fixture(&[("vport0p1", "n")], false);
        let p = Paths::under(t.path());
        let f = find(&p, &names(&["/dev/vport0p1"])).unwrap();
        assert_eq!(f.via, Via::Path);
        assert_eq!(f.dev, t.path().join("dev/vport0p1"));
        assert_eq!(
            f.sysfs,
            Some(t.path().join("sys/class/virtio-ports/vport0p1"))
        );
        assert!(find(&p, &names(&["/dev/vport7p7"])).is_err());
    }
}
