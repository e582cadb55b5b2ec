//! The rpm database, without librpm.
//!
//! The rpmdb has had three on-disk formats in the guests we serve, each holding rpm's binary
//! header blobs: SQLite (`rpmdb.sqlite`, RHEL/OL 9, Fedora 33+), Berkeley DB hash
//! (`Packages`, RHEL/OL 5 to 8) and ndb (`Packages.db`, SUSE). The SQLite one we read
//! ourselves (a small read-only table walker in [`super::sqlite`] and the header format here):
//! fast, and no program to run. For the other two, and for an SQLite database with an
//! unmerged write-ahead log (rpm is running), we run the guest's own `rpm -qa --qf` with a
//! deadline: every system with such a database has the `rpm` binary that matches its format,
//! a pure Berkeley DB reader would be a project of its own, and librpm is never linked, so a
//! static musl build is unaffected. The cost there is the program's start (a few hundred ms
//! for 2000 packages).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::{Application, PackageSource};

use super::sqlite;

/// Tab-separated fields; `%|EPOCH?{...}|` prints the epoch only when the package has one.
pub const QUERY_FORMAT: &str =
    "%{NAME}\\t%|EPOCH?{%{EPOCH}}:{}|\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n";

/// Where rpm keeps its database: the classic place, and the newer one (Fedora 36+, SUSE).
const DB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];
const DB_FILES: [&str; 3] = ["rpmdb.sqlite", "Packages", "Packages.db"];

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;

const DEADLINE: Duration = Duration::from_secs(20);

/// The installed packages, or `None` when the tree has no rpm database.
pub fn read(paths: &Paths) -> Result<Option<Vec<Application>>, FactError> {
    let Some((dir, file)) = DB_DIRS.iter().find_map(|d| {
        DB_FILES
            .iter()
            .find(|f| paths.join(d).join(f).exists())
            .map(|f| (*d, *f))
    }) else {
        return Ok(None);
    };
    if file == "rpmdb.sqlite" {
        let db = paths.join(dir).join(file);
        let wal = paths.join(dir).join("rpmdb.sqlite-wal");
        let wal_pending = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        if !wal_pending {
            match read_sqlite(&db) {
                Ok(apps) => {
                    tracing::debug!(db = %db.display(), packages = apps.len(), "read rpmdb.sqlite directly");
                    return Ok(Some(apps));
                }
                Err(e) => {
                    tracing::debug!(db = %db.display(), error = %e, "reading rpmdb.sqlite failed; asking rpm")
                }
            }
        }
    }
    read_with_program(paths, dir).map(Some)
}

/// Reads an SQLite rpmdb directly: every row of its `Packages` table is one header blob.
pub fn read_sqlite(path: &Path) -> Result<Vec<Application>, FactError> {
    let perr = |reason: String| FactError::Parse {
        path: path.display().to_string(),
        reason,
    };
    let db = sqlite::Db::open(path).map_err(perr)?;
    let root = db.table_root("Packages").map_err(perr)?;
    let mut out = Vec::new();
    db.scan(root, &mut |_rowid, mut payload| {
        let cols = db.record(&mut payload, 2)?;
        let Some(sqlite::Value::Blob { at, len }) = cols.get(1) else {
            return Err("a Packages row without a blob".into());
        };
        if let Some(app) = from_header(&db, &mut payload, *at, *len)? {
            out.push(app);
        }
        Ok(())
    })
    .map_err(perr)?;
    Ok(out)
}

/// Name, epoch, version, release and arch from an rpm header blob as the rpmdb stores it:
/// index count and data length (big-endian u32 each), 16-byte index entries (tag, type,
/// offset, count), then the data store. Only the bytes those five tags need are read.
fn from_header(
    db: &sqlite::Db,
    p: &mut sqlite::Payload,
    at: usize,
    len: usize,
) -> Result<Option<Application>, String> {
    let head = p.read(db, at, 8.min(len))?;
    let [a, b, c, d, e, f, g, h] = <[u8; 8]>::try_from(head).map_err(|_| "short header blob")?;
    let il = u32::from_be_bytes([a, b, c, d]) as usize;
    let dl = u32::from_be_bytes([e, f, g, h]) as usize;
    let data_at = il
        .checked_mul(16)
        .and_then(|n| n.checked_add(8))
        .filter(|&n| n.checked_add(dl).is_some_and(|end| end <= len))
        .ok_or("header blob sizes do not fit")?;
    let index = p.read(db, at + 8, il * 16)?.to_vec();
    let mut fields: [Option<(u32, usize)>; 5] = [None; 5];
    for e in index.chunks_exact(16) {
        let w = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
        let slot = match w(0) {
            TAG_NAME => 0,
            TAG_VERSION => 1,
            TAG_RELEASE => 2,
            TAG_EPOCH => 3,
            TAG_ARCH => 4,
            _ => continue,
        };
        fields[slot] = Some((w(4), w(8) as usize));
    }
    let mut string = |f: Option<(u32, usize)>| -> Result<Option<String>, String> {
        let Some((TYPE_STRING, off)) = f else {
            return Ok(None);
        };
        if off >= dl {
            return Err("string offset past the data".into());
        }
        // Read in small steps up to the NUL: the strings are short, the data store is not.
        let mut end = off;
        loop {
            let step = 64.min(dl - end);
            if step == 0 {
                return Err("unterminated string".into());
            }
            let chunk = p.read(db, at + data_at + end, step)?;
            if let Some(nul) = chunk.iter().position(|&c| c == 0) {
                end += nul;
                break;
            }
            end += step;
        }
        let s = p.read(db, at + data_at + off, end - off)?;
        Ok(Some(String::from_utf8_lossy(s).into_owned()))
    };
    let (Some(name), Some(version)) = (string(fields[0])?, string(fields[1])?) else {
        return Ok(None);
    };
    let release = string(fields[2])?.unwrap_or_default();
    let arch = string(fields[4])?;
    let epoch = match fields[3] {
        Some((TYPE_INT32, off)) if off + 4 <= dl => {
            let b = p.read(db, at + data_at + off, 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        _ => None,
    };
    Ok(Some(application(
        &name,
        &epoch.map(|e| e.to_string()).unwrap_or_default(),
        &version,
        &release,
        arch.as_deref().unwrap_or(""),
    )))
}

fn read_with_program(paths: &Paths, dbdir: &str) -> Result<Vec<Application>, FactError> {
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
    // Named explicitly: an rpm built elsewhere (Debian's) has another default database.
    cmd.args(["--dbpath", dbdir, "-qa", "--qf", QUERY_FORMAT]);
    let out = run_with_deadline(cmd, DEADLINE)?;
    Ok(parse(&String::from_utf8_lossy(&out)))
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
            Some(application(name, epoch, version, release, arch))
        })
        .collect()
}

/// `[epoch:]version[-release]`, as dnf prints it: an epoch of 0 is no epoch.
fn application(name: &str, epoch: &str, version: &str, release: &str, arch: &str) -> Application {
    let mut full = String::with_capacity(epoch.len() + version.len() + release.len() + 2);
    if !epoch.is_empty() && epoch != "0" {
        full.push_str(epoch);
        full.push(':');
    }
    full.push_str(version);
    if !release.is_empty() {
        full.push('-');
        full.push_str(release);
    }
    Application {
        name: name.to_owned(),
        version: full,
        // gpg-pubkey entries are not packages of an architecture.
        arch: (!arch.is_empty() && arch != "(none)").then(|| arch.to_owned()),
        source: PackageSource::Rpm,
    }
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
