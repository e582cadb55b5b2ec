//! Replays every fuzz target's checked-in seeds (`fuzz/seeds/<target>/`) through the same
//! function the cargo-fuzz target runs, with the stable toolchain, in the normal test run.
//! `GUESTD_FUZZ_CORPUS=1` also replays the local corpus a fuzzing run grew
//! (`fuzz/corpus/<target>/`, not in git).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn replay(target: &str, body: fn(&[u8]), dir: &Path) -> usize {
    let inputs = files(dir);
    for f in &inputs {
        let data = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| body(&data));
        assert!(
            r.is_ok(),
            "{target}: {} fails (reproduce: cargo +nightly fuzz run {target} {})",
            f.display(),
            f.display()
        );
    }
    inputs.len()
}

#[test]
fn every_target_replays_its_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = std::env::var("GUESTD_FUZZ_CORPUS").is_ok_and(|v| v == "1");
    for (name, body) in targets::TARGETS {
        let n = replay(name, *body, &root.join("seeds").join(name));
        assert!(n > 0, "{name}: no seeds in fuzz/seeds/{name}");
        if corpus {
            let m = replay(name, *body, &root.join("corpus").join(name));
            eprintln!("{name}: {n} seeds and {m} corpus inputs replayed");
        }
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    // A target added to fuzz/Cargo.toml but not to TARGETS would never run in CI.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for line in manifest.lines() {
        if let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|r| r.strip_suffix('"'))
            .filter(|n| *n != "guestd-fuzz")
        {
            assert!(
                targets::TARGETS.iter().any(|(t, _)| t == &name),
                "fuzz target {name} is not in fuzz/src/lib.rs TARGETS"
            );
        }
    }
}
