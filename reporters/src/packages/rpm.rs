//! The rpm database, read through the `rpm` program, not librpm.
//!
//! Why the program: the rpmdb has had three on-disk formats in the guests we serve: Berkeley
//! DB hash (`Packages`, RHEL/OL 5 to 8), ndb (`Packages.db`, SUSE) and SQLite
//! (`rpmdb.sqlite`, RHEL 9, Fedora 33+), each holding rpm's binary header blobs. A pure
//! reader for all three is a project of its own, while every system with an rpmdb has the
//! `rpm` binary that matches its format. So we run `rpm -qa --qf` (with `--root` for
//! another tree), with a deadline and the program's output parsed here, and we never link
//! librpm, so a static musl build is unaffected. The cost is the program's start-up and
//! database open (a few hundred ms for 2000 packages), paid only on rpm systems.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::{Application, PackageSource};

/// Tab-separated fields; `%|EPOCH?{...}|` prints the epoch only when the package has one.
pub const QUERY_FORMAT: &str =
    "%{NAME}\\t%|EPOCH?{%{EPOCH}}:{}|\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n";

const DB_FILES: [&str; 6] = [
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages",
    "usr/lib/sysimage/rpm/Packages.db",
];

const DEADLINE: Duration = Duration::from_secs(20);

/// The installed packages, or `None` when the tree has no rpm database.
pub fn read(paths: &Paths) -> Result<Option<Vec<Application>>, FactError> {
    if !DB_FILES.iter().any(|f| paths.join(f).exists()) {
        return Ok(None);
    }
    let Some(rpm) = ["/usr/bin/rpm", "/bin/rpm"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        return Err(FactError::Unavailable(
            "an rpm database exists but the rpm program does not".into(),
        ));
    };
    let mut cmd = Command::new(rpm);
    if !paths.is_system() {
        cmd.arg("--root").arg(paths.root());
    }
    cmd.args(["-qa", "--qf", QUERY_FORMAT]);
    let out = run_with_deadline(cmd, DEADLINE)?;
    Ok(Some(parse(&String::from_utf8_lossy(&out))))
}

/// Parses the output of `rpm -qa --qf` [`QUERY_FORMAT`].
pub fn parse(text: &str) -> Vec<Application> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, epoch, version, release, arch) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            if name.is_empty() || version.is_empty() {
                return None;
            }
            let mut full = String::with_capacity(epoch.len() + version.len() + release.len() + 2);
            if !epoch.is_empty() {
                full.push_str(epoch);
                full.push(':');
            }
            full.push_str(version);
            if !release.is_empty() {
                full.push('-');
                full.push_str(release);
            }
            Some(Application {
                name: name.to_owned(),
                version: full,
                // gpg-pubkey entries are not packages of an architecture.
                arch: (!arch.is_empty() && arch != "(none)").then(|| arch.to_owned()),
                source: PackageSource::Rpm,
            })
        })
        .collect()
}

/// Runs `cmd`, returns its stdout; kills it at the deadline.
fn run_with_deadline(mut cmd: Command, limit: Duration) -> Result<Vec<u8>, FactError> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FactError::Io {
            path: what.clone(),
            source,
        })?;
    let mut stdout = child.stdout.take();
    // Read on another thread so a full pipe cannot stall the child while we wait.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FactError::Timeout {
                    what,
                    seconds: limit.as_secs(),
                });
            }
            Err(source) => return Err(FactError::Io { path: what, source }),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(FactError::Unavailable(format!(
            "{what} failed ({status}): {}",
            err.trim()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_output() {
        let text = "bash\t\t5.1.8\t6.el9\tx86_64\n\
                    openssh-server\t\t8.7p1\t38.0.1.el9\tx86_64\n\
                    shim-x64\t2\t15.8\t1.0.3.el9\tx86_64\n\
                    gpg-pubkey\t\tad986da3\t5cabf60d\t(none)\n\
                    tzdata\t\t2024a\t1.el9\tnoarch\n\
                    garbage line\n";
        let apps = parse(text);
        assert_eq!(apps.len(), 5);
        assert_eq!(apps[0].version, "5.1.8-6.el9");
        assert_eq!(apps[2].version, "2:15.8-1.0.3.el9");
        assert_eq!(apps[3].arch, None);
        assert_eq!(apps[4].arch.as_deref(), Some("noarch"));
    }

    #[test]
    fn deadline_kills_a_stuck_program() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let r = run_with_deadline(cmd, Duration::from_millis(200));
        assert!(matches!(r, Err(FactError::Timeout { .. })), "{r:?}");
        let mut cmd = Command::new("printf");
        cmd.arg("a\\tb");
        assert_eq!(run_with_deadline(cmd, DEADLINE).unwrap(), b"a\tb");
    }
}
