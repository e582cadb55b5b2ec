//! `guestd run`: serve protocols on their channels until SIGTERM.

use std::process::ExitCode;

/// Arguments of `guestd run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve PROTOCOL on CHANNEL, e.g. `qga=virtio:org.qemu.guest_agent.0` or
    /// `qga=unix-listen:/run/qga.sock`. Repeatable.
    #[arg(long = "channel", value_name = "PROTOCOL=SPEC")]
    pub channels: Vec<String>,
}

/// Run it.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("guestd run is being built")
}
