//! Subcommands, one module each.

pub mod debug;
pub mod info;
pub mod ovirt;
pub mod ovmd;
pub mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// guestd: one guest agent for QEMU (QGA), oVirt and Oracle VM messaging.
#[derive(Debug, Parser)]
#[command(name = "guestd", version = version_line(), about, long_about = None)]
pub struct Cli {
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive);
    /// default `info`, or the `GUESTD_LOG` environment variable.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what the agent knows about this machine.
    Info(info::Args),
    /// Run the agent on its channels.
    Run(Box<run::Args>),
    /// Oracle VM messaging command line (drop-in for `ovmd`).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Ovmd(ovmd::Args),
    /// Run one action or watch session events directly (for tests and image checks).
    #[command(hide = true)]
    Debug(debug::Args),
}

/// `--version` text: the version and the protocols compiled in.
pub fn version_line() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (protocols: qga, ovirt, ovmd)")
}

/// Run the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Run(a) => run::run(*a),
        Command::Ovmd(a) => ovmd::run(a, cli.log_level.as_deref()),
        Command::Debug(a) => debug::run(a),
    }
}

/// Logs go to stderr, filtered by `--log-level`, else `GUESTD_LOG`, else `info`.
pub fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = level
        .map(str::to_owned)
        .or_else(|| std::env::var("GUESTD_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Held in memory while filesystems are frozen, written after the thaw.
        .with_writer(|| guestd_core::actions::loggate::LogGate)
        .with_target(false)
        .try_init();
}
