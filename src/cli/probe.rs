//! `guestd probe`: what `guestd run` would serve here, channel by channel, with the reason for
//! each channel it would not; the virtio-serial ports and the Xen signals it looked at.

use std::process::ExitCode;

use guestd_core::Paths;

use crate::config::{self, Layer, Sources};
use crate::daemon::plan::{self, Presence};

/// Arguments of `guestd probe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file [default: /etc/guestd/guestd.toml, or $GUESTD_CONFIG].
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// qemu-ga's configuration file [default: /etc/qemu/qemu-ga.conf, or $QGA_CONF].
    #[arg(long = "qemu-ga-config", value_name = "FILE")]
    pub qemu_ga_config: Option<std::path::PathBuf>,
    /// Look under this root instead of `/` (a fixture tree or an image).
    #[arg(long, value_name = "DIR", hide = true)]
    pub root: Option<std::path::PathBuf>,
}

/// Run it. Exit 0 when at least one channel would be served, 1 when none.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        config: args.config.clone(),
        qga_config: args.qemu_ga_config.clone(),
    };
    let loaded = match config::load(&sources, &Layer::default()) {
        Ok(l) => l,
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(crate::cli::run::EXIT_CONFIG));
        }
    };
    let paths = match &args.root {
        Some(r) => Paths::under(r),
        None => Paths::system(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut served = 0;
    println!("channels:");
    for want in plan::wanted(&loaded.settings) {
        let p = if want.gated() {
            rt.block_on(plan::presence(&want, &paths))
        } else {
            Presence::Present {
                at: format!(
                    "{} (configured: served, retried until it works)",
                    want.endpoint
                ),
            }
        };
        match p {
            Presence::Present { at } => {
                served += 1;
                println!(
                    "  {:<6} {:<48} serve: {at}",
                    want.proto.name(),
                    want.endpoint.to_string()
                );
            }
            Presence::Absent { why } => {
                println!(
                    "  {:<6} {:<48} skip: {why}",
                    want.proto.name(),
                    want.endpoint.to_string()
                );
            }
        }
    }
    for (proto, enabled) in [
        ("qga", loaded.settings.qga.enable),
        ("ovirt", loaded.settings.ovirt.enable),
        ("ovmd", loaded.settings.ovmd.enable),
    ] {
        if !enabled {
            println!(
                "  {proto:<6} {:<48} off: disabled in the configuration",
                "-"
            );
        }
    }
    println!("virtio-serial ports:");
    let ports = guestd_transports::virtio::discover::list(&paths);
    if ports.is_empty() {
        println!(
            "  none ({} is empty or missing)",
            guestd_transports::virtio::discover::sysfs_dir(&paths).display()
        );
    }
    for p in ports {
        let name = if p.name.is_empty() {
            "(no name yet)"
        } else {
            &p.name
        };
        println!("  {} {name}", p.node);
    }
    println!("xen:");
    for l in guestd_transports::xenstore::detect::detect(&paths).describe() {
        println!("  {l}");
    }
    println!("hot-plug: {}", uevents());
    Ok(if served > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(all(target_os = "linux", feature = "netlink"))]
fn uevents() -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let ok = rt.map(|rt| rt.block_on(async { guestd_transports::hotplug::UeventMonitor::open() }));
    match ok {
        Ok(Ok(_)) => "kernel uevents (netlink), plus a periodic rescan".into(),
        Ok(Err(e)) => format!("periodic rescan only (uevent socket: {e})"),
        Err(e) => format!("periodic rescan only ({e})"),
    }
}

#[cfg(not(all(target_os = "linux", feature = "netlink")))]
fn uevents() -> String {
    "periodic rescan only (built without netlink)".into()
}
