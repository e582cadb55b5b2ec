//! Hot-pluggable memory blocks (`/sys/devices/system/memory`).

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::sysfacts::MemoryBlock;

use crate::util;

/// Every `memoryN` block with its state.
pub fn read(paths: &Paths) -> Result<Vec<MemoryBlock>, FactError> {
    let dir = paths.sys("devices/system/memory");
    let rd = std::fs::read_dir(&dir).map_err(|e| util::io_err(&dir, e))?;
    let mut out: Vec<MemoryBlock> = rd
        .flatten()
        .filter_map(|e| {
            let n: u64 = e
                .file_name()
                .to_str()?
                .strip_prefix("memory")?
                .parse()
                .ok()?;
            let state = util::attr(&e.path().join("state"));
            Some(MemoryBlock {
                phys_index: n,
                online: state.as_deref() == Some("online"),
                can_offline: util::attr(&e.path().join("removable")).as_deref() == Some("1"),
            })
        })
        .collect();
    out.sort_by_key(|b| b.phys_index);
    Ok(out)
}

/// `block_size_bytes`, which the kernel prints in hex without `0x`. When the file is missing,
/// the error names the memory directory if that is missing too.
pub fn block_size(paths: &Paths) -> Result<u64, FactError> {
    let dir = paths.sys("devices/system/memory");
    let path = dir.join("block_size_bytes");
    let text = match util::read(&path) {
        Ok(t) => t,
        // No memory directory at all: say so by its path, not the file's.
        Err(FactError::Io { source, .. })
            if util::is_absent(&source) && std::fs::metadata(&dir).is_err() =>
        {
            return Err(util::io_err(&dir, source));
        }
        Err(e) => return Err(e),
    };
    let t = text.trim();
    u64::from_str_radix(t.trim_start_matches("0x"), 16)
        .map_err(|_| util::parse_err(&path, format!("not a hex number: {t:?}")))
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
        assert_eq!(block_size(&p).unwrap(), 128 << 20);
        let b = read(&p).unwrap();
        let v: Vec<(u64, bool, bool)> = b
            .iter()
            .map(|b| (b.phys_index, b.online, b.can_offline))
            .collect();
        assert_eq!(v, [(0, true, false), (1, true, true), (10, false, true)]);
    }

    #[test]
    fn missing_directory_or_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::under(d.path());
        let path_of = |e: FactError| match e {
            FactError::Io { path, source } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                path
            }
            other => panic!("{other:?}"),
        };
        assert!(path_of(block_size(&p).unwrap_err()).ends_with("sys/devices/system/memory"));
        assert!(path_of(read(&p).unwrap_err()).ends_with("sys/devices/system/memory"));
        std::fs::create_dir_all(d.path().join("sys/devices/system/memory")).unwrap();
        assert!(
            path_of(block_size(&p).unwrap_err())
                .ends_with("sys/devices/system/memory/block_size_bytes")
        );
        assert!(read(&p).unwrap().is_empty());
    }
}
