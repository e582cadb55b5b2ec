//! Where a block device sits: the disks behind a partition, a device-mapper or md device, and
//! each disk's serial, bus and PCI/SCSI address, all read from sysfs.

use std::path::{Path, PathBuf};

use guestd_core::Paths;
use guestd_core::model::{Disk, PciAddress, ScsiAddress};

use crate::util;

/// The sysfs directory of a block device by `major:minor`, links resolved inside the root.
pub fn sysfs_by_devnum(paths: &Paths, major: u32, minor: u32) -> Option<PathBuf> {
    canonical(paths, &paths.sys(&format!("dev/block/{major}:{minor}")))
}

/// The sysfs directory of a block device by kernel name (`vda1`, `dm-0`).
pub fn sysfs_by_name(paths: &Paths, name: &str) -> Option<PathBuf> {
    canonical(paths, &paths.sys("class/block").join(name))
}

/// Resolves symlinks; sysfs links are relative, so this stays inside a fixture tree.
fn canonical(_paths: &Paths, p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// The whole disks under a block device's sysfs directory: itself for a disk, its parent for
/// a partition, its members (`slaves/`) for dm and md, recursively.
pub fn disks_behind(paths: &Paths, dev: &Path) -> Vec<Disk> {
    let mut out = Vec::new();
    walk(paths, dev, 0, &mut out);
    out
}

fn walk(paths: &Paths, dev: &Path, depth: u32, out: &mut Vec<Disk>) {
    if depth > 8 {
        return; // a loop in a corrupt tree
    }
    if dev.join("partition").exists() {
        if let Some(parent) = dev.parent() {
            walk(paths, parent, depth + 1, out);
        }
        return;
    }
    let slaves = slaves(dev);
    if !slaves.is_empty() {
        for s in slaves {
            if let Some(p) = sysfs_by_name(paths, &s) {
                walk(paths, &p, depth + 1, out);
            }
        }
        return;
    }
    let d = describe(dev);
    if !out.iter().any(|o| o.name == d.name) {
        out.push(d);
    }
}

/// Names in `slaves/` (the members of a dm or md device), sorted.
pub fn slaves(dev: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dev.join("slaves"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A whole disk's identity from its sysfs directory.
pub fn describe(dev: &Path) -> Disk {
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let components: Vec<String> = dev
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let pci = components.iter().rev().find_map(|c| parse_pci(c));
    let scsi = components.iter().rev().find_map(|c| parse_scsi(c));
    let has = |pred: &dyn Fn(&str) -> bool| components.iter().any(|c| pred(c));
    let bus = if has(&|c| c.starts_with("usb")) {
        Some("usb")
    } else if has(&|c| c.starts_with("ata") && c[3..].chars().all(|d| d.is_ascii_digit())) {
        // AHCI is SATA; the PIIX/legacy drivers are IDE.
        let driver = pci_dir(dev).and_then(|p| driver_of(&p));
        Some(if driver.as_deref() == Some("ahci") {
            "sata"
        } else {
            "ide"
        })
    } else if has(&|c| c.starts_with("nvme")) {
        Some("nvme")
    } else if has(&|c| c.starts_with("vbd-")) {
        Some("xen")
    } else if has(&|c| c.starts_with("mmc")) {
        Some("mmc")
    } else if scsi.is_some() {
        Some("scsi")
    } else if has(&|c| c.starts_with("virtio")) {
        Some("virtio")
    } else {
        None
    };
    let serial = util::attr(&dev.join("serial"))
        .or_else(|| util::attr(&dev.join("device/serial")))
        .or_else(|| vpd80(&dev.join("device/vpd_pg80")));
    Disk {
        dev: Some(format!("/dev/{name}")),
        name,
        serial,
        bus: bus.map(str::to_owned),
        pci,
        scsi,
    }
}

/// The unit serial number VPD page: a 4-byte header, then the serial.
fn vpd80(p: &Path) -> Option<String> {
    let b = std::fs::read(p).ok()?;
    let len = usize::from(*b.get(3)?);
    let s = b.get(4..4 + len.min(b.len().saturating_sub(4)))?;
    let s = String::from_utf8_lossy(s).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn pci_dir(dev: &Path) -> Option<PathBuf> {
    let mut p = dev.to_path_buf();
    loop {
        let name = p.file_name()?.to_string_lossy().into_owned();
        if parse_pci(&name).is_some() {
            return Some(p);
        }
        p = p.parent()?.to_path_buf();
    }
}

fn driver_of(p: &Path) -> Option<String> {
    let t = std::fs::read_link(p.join("driver")).ok()?;
    Some(t.file_name()?.to_string_lossy().into_owned())
}

/// `dddd:bb:ss.f` in hex.
pub fn parse_pci(s: &str) -> Option<PciAddress> {
    let (dom, rest) = s.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    if dom.len() != 4 || bus.len() != 2 || slot.len() != 2 || func.len() != 1 {
        return None;
    }
    Some(PciAddress {
        domain: u32::from_str_radix(dom, 16).ok()?,
        bus: u32::from_str_radix(bus, 16).ok()?,
        slot: u32::from_str_radix(slot, 16).ok()?,
        function: u32::from_str_radix(func, 16).ok()?,
    })
}

/// `host:channel:target:lun` in decimal.
pub fn parse_scsi(s: &str) -> Option<ScsiAddress> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [host, channel, target, lun] = v.as_slice() else {
        return None;
    };
    Some(ScsiAddress {
        host: *host,
        channel: *channel,
        target: *target,
        lun: *lun,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Paths {
        Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ))
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_pci("0000:00:1f.2"),
            Some(PciAddress {
                domain: 0,
                bus: 0,
                slot: 0x1f,
                function: 2
            })
        );
        assert_eq!(parse_pci("virtio1"), None);
        assert_eq!(
            parse_scsi("2:0:1:3").map(|s| (s.host, s.target, s.lun)),
            Some((2, 1, 3))
        );
        assert_eq!(parse_scsi("target2:0:1"), None);
    }

    #[test]
    fn virtio_partition_resolves_to_disk() {
        let p = fixture();
        let dev = sysfs_by_devnum(&p, 254, 1).unwrap();
        let disks = disks_behind(&p, &dev);
        assert_eq!(disks.len(), 1);
        let d = &disks[0];
        assert_eq!(d.name, "vda");
        assert_eq!(d.dev.as_deref(), Some("/dev/vda"));
        assert_eq!(d.bus.as_deref(), Some("virtio"));
        assert_eq!(d.serial.as_deref(), Some("QM00001"));
        assert_eq!(
            d.pci,
            Some(PciAddress {
                domain: 0,
                bus: 0,
                slot: 4,
                function: 0
            })
        );
    }

    #[test]
    fn lvm_on_scsi_resolves_to_members() {
        let p = fixture();
        let dm = sysfs_by_devnum(&p, 253, 0).unwrap();
        let disks = disks_behind(&p, &dm);
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda"]);
        assert_eq!(disks[0].bus.as_deref(), Some("scsi"));
        assert_eq!(disks[0].serial.as_deref(), Some("drive-scsi0"));
        let s = disks[0].scsi.unwrap();
        assert_eq!((s.host, s.channel, s.target, s.lun), (0, 0, 0, 1));
    }
}
