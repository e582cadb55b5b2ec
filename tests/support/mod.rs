//! Shared helpers for the integration tests: where the peers are, how to skip loudly or fail
//! when one is missing, the binaries under test, short temporary directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod procstat;
pub mod vm;
pub mod xenstored;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `../shared/peers` next to the repository, or `$GUESTD_PEERS`.
pub fn peers_dir() -> PathBuf {
    if let Ok(p) = std::env::var("GUESTD_PEERS") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers")
}

/// True when a missing peer must fail the test (CI sets `GUESTD_REQUIRE_PEERS=1`).
pub fn peers_required() -> bool {
    std::env::var("GUESTD_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Returns true when `available`; otherwise fails the test under `GUESTD_REQUIRE_PEERS=1`,
/// or prints a loud SKIPPED line and returns false so the caller can return early.
pub fn require_peer(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if peers_required() {
        panic!("required test peer missing: {what}");
    }
    eprintln!(
        "\n*** SKIPPED: test peer missing: {what} (set GUESTD_REQUIRE_PEERS=1 to fail instead) ***\n"
    );
    false
}

/// True when `cmd` is on PATH (or an absolute path that exists).
pub fn have_command(cmd: &str) -> bool {
    if cmd.contains('/') {
        return Path::new(cmd).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
}

/// The `guestd` binary built for these tests.
pub fn guestd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_guestd"))
}

/// The static binary for the VM's initramfs: `$GUESTD_STATIC_BIN`, else built here once.
pub fn static_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GUESTD_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/x86_64-unknown-linux-musl/release/guestd");
    let lock = root.join("target/.static-build.lock");
    let _ = std::fs::create_dir_all(root.join("target"));
    // flock(1) serialises concurrent test binaries building the same artifact.
    let status = Command::new("flock")
        .arg(&lock)
        .args([
            "cargo",
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "guestd",
        ])
        .current_dir(root)
        .status()
        .expect("run cargo build for the static binary");
    assert!(status.success(), "static build failed");
    out
}

/// A fresh temporary directory with a short path (unix socket paths must stay under 108
/// bytes). Removed when dropped.
pub fn short_tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gd")
        .tempdir_in("/tmp")
        .expect("create temp dir")
}

/// Python with `qemu.qmp` installed (scripts/install-test-deps.sh makes it).
pub fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var("GUESTD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("guestd-venv")
        });
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

// The VM helpers of tests/power.rs and tests/logind.rs: they panic on purpose (a failed step is
// a failed test).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod guest_shell;
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod systemd_vm;
