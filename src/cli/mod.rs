//! Subcommands, one module each.

pub mod check_config;
pub mod debug;
pub mod info;
pub mod man;
pub mod ovirt;
pub mod ovmd;
pub mod probe;
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
    /// Check a configuration file; report errors with file and line.
    CheckConfig(check_config::Args),
    /// Show which channels `run` would serve here, and why not the others.
    Probe(probe::Args),
    /// Oracle VM messaging command line (drop-in for `ovmd`).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Ovmd(ovmd::Args),
    /// Run one action or watch session events directly (for tests and image checks).
    #[command(hide = true)]
    Debug(debug::Args),
    /// Write the manual pages into a directory (for packaging).
    #[command(hide = true)]
    Man(man::Args),
}

/// The protocols compiled in.
pub const PROTOCOLS: [&str; 3] = ["qga", "ovirt", "ovmd"];

/// `--version` text: the version, the protocols and the optional features compiled in.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        let mut features = Vec::new();
        if cfg!(feature = "dbus") {
            features.push("dbus");
        }
        if cfg!(feature = "netlink") {
            features.push("netlink");
        }
        if features.is_empty() {
            features.push("none");
        }
        format!(
            "{} (protocols: {}; features: {})",
            env!("CARGO_PKG_VERSION"),
            PROTOCOLS.join(", "),
            features.join(", ")
        )
    })
}

/// Run the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Run(a) => run::run(*a),
        Command::CheckConfig(a) => check_config::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Ovmd(a) => ovmd::run(a, cli.log_level.as_deref()),
        Command::Debug(a) => debug::run(a),
        Command::Man(a) => man::run(a),
    }
}
