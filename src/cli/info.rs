//! `guestd info`: the report for a person, or as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `guestd info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (the schema in docs/info-schema.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read this root instead of `/` (a fixture tree or a mounted image).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Only these facts (hostname, fqdn, os, interfaces, applications, memory, users,
    /// filesystems, timezone, cpus, load, uptime).
    #[arg(value_name = "FACT")]
    pub facts: Vec<String>,
}

/// Run it.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("guestd info is being built")
}
