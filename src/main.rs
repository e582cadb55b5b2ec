//! The `guestd` binary: CLI, configuration, logging and exit codes. `anyhow` lives here only.

mod cli;
mod daemon;
mod logging;
mod memory;

use std::process::ExitCode;

// The configuration is a library crate so the fuzz crate can link its parsers; the binary keeps
// calling it `crate::config`.
use guestd_config as config;

use clap::Parser;

fn main() -> ExitCode {
    // Installed as `ovmd` (a symlink), guestd is Oracle's ovmd command line.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("guestd")
        .to_owned();
    let result = if invoked_as == "ovmd" {
        cli::ovmd::main_as_ovmd()
    } else {
        let args = cli::Cli::parse(); // usage errors exit 2, --help/--version exit 0
        // `guestd ovmd` sets up its own logging from ovmd's `-d`.
        if !matches!(args.command, cli::Command::Ovmd(_)) {
            logging::init(args.log_level.as_deref());
        }
        cli::dispatch(args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guestd: {e:#}");
            ExitCode::from(1)
        }
    }
}
