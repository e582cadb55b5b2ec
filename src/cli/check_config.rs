//! `guestd check-config [FILE]`: read the configuration as `guestd run` would and report every
//! problem with its file and line. Exit 0 when it can be used, 1 when it cannot (2 for usage
//! errors, as every subcommand).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Layer, Severity, Sources};

/// Arguments of `guestd check-config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check [default: /etc/guestd/guestd.toml, or $GUESTD_CONFIG].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// qemu-ga's configuration file, checked too [default: /etc/qemu/qemu-ga.conf, or
    /// $QGA_CONF, or what FILE's `qemu-ga-config` names].
    #[arg(long = "qemu-ga-config", value_name = "FILE")]
    pub qemu_ga_config: Option<PathBuf>,

    /// Print the effective settings (defaults, then qemu-ga's file, then FILE).
    #[arg(long)]
    pub dump: bool,
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        config: args.file.clone(),
        qga_config: args.qemu_ga_config.clone(),
    };
    match config::load(&sources, &Layer::default()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            if loaded.files.is_empty() {
                println!("no configuration file: the defaults apply");
            }
            for f in &loaded.files {
                println!("{}: OK", f.display());
            }
            if args.dump {
                print!("{}", dump(&loaded.settings));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
            }
            let n = e.0.iter().filter(|d| d.severity == Severity::Error).count();
            eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
            Ok(ExitCode::from(1))
        }
    }
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

fn list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The effective settings, in guestd.toml's syntax.
pub fn dump(s: &config::Settings) -> String {
    let channels = |c: &Option<Vec<guestd_transports::ChannelSpec>>| match c {
        Some(c) => list(&c.iter().map(ToString::to_string).collect::<Vec<_>>()),
        None => "(discovered)".into(),
    };
    let mut o = String::new();
    let mut line = |k: &str, v: String| {
        o.push_str(k);
        o.push_str(" = ");
        o.push_str(&v);
        o.push('\n');
    };
    line(
        "log-level",
        format!("{:?}", s.log_level.as_deref().unwrap_or("info")),
    );
    line(
        "statedir",
        format!("{:?}", s.statedir.display().to_string()),
    );
    o.push_str("\n[discovery]\n");
    o.push_str(&format!(
        "uevents = {}\nrescan-interval = {}\n",
        s.discovery.uevents,
        secs(s.discovery.rescan)
    ));
    o.push_str("\n[freeze]\n");
    o.push_str(&format!(
        "hook = {}\nwatchdog = {}\nhook-timeout = {}\n",
        s.freeze
            .hook
            .as_ref()
            .map_or("false".into(), |p| format!("{:?}", p.display().to_string())),
        s.freeze.watchdog.map_or("0".into(), secs),
        secs(s.freeze.hook_timeout)
    ));
    o.push_str("\n[qga]\n");
    o.push_str(&format!(
        "enable = {}\nchannel = {}\n",
        s.qga.enable,
        channels(&s.qga.channels)
    ));
    if let Some(b) = &s.qga.block {
        o.push_str(&format!("block-rpcs = {}\n", list(b)));
    }
    if let Some(a) = &s.qga.allow {
        o.push_str(&format!("allow-rpcs = {}\n", list(a)));
    }
    o.push_str(&format!("max-request = {}\n", s.qga.max_request));
    let v = &s.ovirt;
    o.push_str("\n[ovirt]\n");
    o.push_str(&format!(
        "enable = {}\nchannel = {}\nheartbeat = {}\nuser-interval = {}\ncpus-interval = {}\ninventory-interval = {}\ndisks-interval = {}\n",
        v.enable,
        channels(&v.channels),
        secs(v.heartbeat),
        secs(v.user),
        secs(v.cpus),
        secs(v.inventory),
        secs(v.disks)
    ));
    if let Some(a) = &v.applications {
        o.push_str(&format!("applications = {}\n", list(a)));
    }
    o.push_str(&format!(
        "all-applications = {}\nfree-ram = {:?}\nhooks-dir = {:?}\nhooks-deadline = {}\n",
        v.all_applications,
        if v.free_ram_available {
            "available"
        } else {
            "free"
        },
        v.hooks_dir.display().to_string(),
        secs(v.hooks_deadline)
    ));
    o.push_str("\n[ovmd]\n");
    o.push_str(&format!(
        "enable = {}\nchannel = {}\nstore = {:?}\nsocket = {:?}\n",
        s.ovmd.enable,
        s.ovmd
            .channel
            .as_ref()
            .map_or("(discovered)".into(), |c| format!("{c:?}")),
        s.ovmd.store.display().to_string(),
        s.ovmd.socket.display().to_string()
    ));
    o
}
