//! The daemon side of guestd: configuration files (`check-config`, qemu-ga's file, errors with
//! file and line), `guestd run` without `--channel` (discovery), SIGHUP with good and bad files,
//! systemd readiness, SIGTERM, `guestd probe`; in a QEMU TCG guest, every protocol on its port
//! at once plus a port hot-plugged through QMP; the .deb in a clean Debian root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "daemon/config.rs"]
mod config;
#[path = "daemon/deb.rs"]
mod deb;
#[path = "daemon/run.rs"]
mod run;
#[path = "daemon/vm.rs"]
mod vm;
