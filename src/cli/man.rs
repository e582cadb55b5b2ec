//! `guestd man DIR` (hidden): writes the manual pages, generated from the clap definition, so
//! they never disagree with `--help`: `man8/guestd.8`, one `man8/guestd-SUBCOMMAND.8` per
//! subcommand, `man8/ovmd.8` (ovmd's own usage text) and `man5/guestd.toml.5` (the annotated
//! default configuration). The packaging script calls it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// Arguments of `guestd man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write `man5/` and `man8/` into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

fn write(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, body).with_context(|| format!("Cannot write {}", path.display()))
}

/// roff-escape a line of plain text.
fn roff_line(l: &str) -> String {
    let l = l.replace('\\', "\\e");
    if l.starts_with('.') || l.starts_with('\'') {
        format!("\\&{l}")
    } else {
        l
    }
}

/// A page of preformatted text under a NAME section.
fn plain_page(name: &str, section: &str, summary: &str, body: &str) -> String {
    let mut o = format!(
        ".TH {} {section} \"\" \"guestd {}\"\n.SH NAME\n{name} \\- {}\n.SH DESCRIPTION\n.nf\n",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION"),
        roff_line(summary)
    );
    for l in body.lines() {
        o.push_str(&roff_line(l));
        o.push('\n');
    }
    o.push_str(".fi\n.SH SEE ALSO\nguestd(8), guestd-run(8), guestd-check-config(8)\n");
    o
}

/// Run it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let man8 = args.dir.join("man8");
    let man5 = args.dir.join("man5");
    for d in [&man8, &man5] {
        std::fs::create_dir_all(d).with_context(|| format!("Cannot create {}", d.display()))?;
    }
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut buf)?;
    write(&man8.join("guestd.8"), &buf)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        // clap wants 'static names; this runs once per page in a short-lived process.
        let name: &'static str = Box::leak(format!("guestd-{}", sub.get_name()).into_boxed_str());
        let bin: &'static str = Box::leak(format!("guestd {}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name).bin_name(bin);
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).section("8").render(&mut buf)?;
        write(&man8.join(format!("{name}.8")), &buf)?;
    }
    write(
        &man8.join("ovmd.8"),
        plain_page(
            "ovmd",
            "8",
            "Oracle VM guest messaging (guestd's drop-in ovmd)",
            &super::ovmd::args::usage("ovmd"),
        )
        .as_bytes(),
    )?;
    write(
        &man5.join("guestd.toml.5"),
        plain_page(
            "guestd.toml",
            "5",
            "guestd's configuration file, /etc/guestd/guestd.toml",
            include_str!("../../packaging/guestd.toml"),
        )
        .as_bytes(),
    )?;
    Ok(ExitCode::SUCCESS)
}
