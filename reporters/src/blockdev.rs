//! Block devices and partitions (QGA `guest-get-disks`) from `/sys/block`.

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::sysfacts::BlockDevice;

use crate::{disks, util};

/// Every block device with its partitions; device-mapper and md devices list their members
/// as dependencies and carry their dm name as alias.
pub fn read(paths: &Paths) -> Result<Vec<BlockDevice>, FactError> {
    let dir = paths.sys("block");
    let rd = std::fs::read_dir(&dir).map_err(|e| util::io_err(&dir, e))?;
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Some(sys) = disks::sysfs_by_name(paths, &name)
            .or_else(|| std::fs::canonicalize(dir.join(&name)).ok())
        else {
            continue;
        };
        // Like qemu-ga, skip empty devices (unattached loop devices, unconfigured zram).
        if util::attr_num::<u64>(&sys.join("size")) == Some(0) {
            continue;
        }
        let virtual_dev = sys.components().any(|c| c.as_os_str() == "virtual");
        let dependencies: Vec<String> = disks::slaves(&sys)
            .into_iter()
            .map(|s| format!("/dev/{s}"))
            .collect();
        out.push(BlockDevice {
            name: format!("/dev/{name}"),
            partition: false,
            address: (!virtual_dev && dependencies.is_empty()).then(|| disks::describe(&sys)),
            alias: util::attr(&sys.join("dm/name")),
            dependencies,
        });
        let mut parts: Vec<String> = std::fs::read_dir(&sys)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        parts.sort_by_key(|p| (p.len(), p.clone()));
        for p in parts {
            out.push(BlockDevice {
                name: format!("/dev/{p}"),
                partition: true,
                dependencies: vec![format!("/dev/{name}")],
                address: None,
                alias: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_tree() {
        let p = Paths::under(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/debian12"
        ));
        let devs = read(&p).unwrap();
        let names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "/dev/dm-0",
                "/dev/sda",
                "/dev/vda",
                "/dev/vda1",
                "/dev/vda2"
            ]
        );
        let dm = &devs[0];
        assert_eq!(dm.alias.as_deref(), Some("vg-home"));
        assert_eq!(dm.dependencies, ["/dev/sda"]);
        assert!(dm.address.is_none());
        let vda1 = &devs[3];
        assert!(vda1.partition);
        assert_eq!(vda1.dependencies, ["/dev/vda"]);
        assert_eq!(
            devs[2].address.as_ref().unwrap().bus.as_deref(),
            Some("virtio")
        );
    }
}
