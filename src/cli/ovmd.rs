//! `guestd ovmd ...` and the `ovmd` symlink: Oracle VM messaging from the command line.

use std::ffi::OsString;
use std::process::ExitCode;

/// Arguments of `guestd ovmd`, parsed by ovmd's own grammar (they are passed through raw).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ovmd options (see `guestd ovmd --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "OPTIONS"
    )]
    pub rest: Vec<OsString>,
}

/// `guestd ovmd ...`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("guestd ovmd is being built")
}

/// The binary was started as `ovmd`.
pub fn main_as_ovmd() -> anyhow::Result<ExitCode> {
    anyhow::bail!("ovmd is being built")
}
