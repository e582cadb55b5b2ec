//! How long a full `guestd info` report takes on this machine, and the package parsers on
//! 2000 packages. Run with `cargo bench -p guestd-reporters`; prints min / median / mean.
//! (The target is "well under 100 ms" for a full report; measured here, never asserted in a
//! test.)
#![allow(clippy::unwrap_used)] // a benchmark may stop on a broken machine

use std::hint::black_box;
use std::time::{Duration, Instant};

use guestd_core::Paths;
use guestd_core::contract::Facts;
use guestd_core::model::Fact;
use guestd_reporters::SystemFacts;
use guestd_reporters::packages::{apk, dpkg, rpm};

fn stats(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    let sum: Duration = times.iter().sum();
    println!(
        "{name:<44} n={n:<4} min {:>9.3} ms   median {:>9.3} ms   mean {:>9.3} ms",
        times[0].as_secs_f64() * 1e3,
        times[n / 2].as_secs_f64() * 1e3,
        sum.as_secs_f64() * 1e3 / n as f64,
    );
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect()
}

/// A dpkg status file shaped like a real one: about 1.4 KB per package, descriptions and
/// conffiles on continuation lines, some removed or half-installed packages among them.
fn dpkg_status(n: usize) -> String {
    let mut s = String::with_capacity(n * 1500);
    for i in 0..n {
        let status = match i % 50 {
            7 => "deinstall ok config-files",
            13 => "install reinstreq half-installed",
            _ => "install ok installed",
        };
        s.push_str(&format!(
            "Package: package-{i}\nStatus: {status}\nPriority: optional\nSection: libs\n\
             Installed-Size: {}\nMaintainer: Debian Maintainers <maint@example.org>\n\
             Architecture: amd64\nMulti-Arch: same\nSource: source-{i}\nVersion: 1:{i}.2.3-4+deb12u1\n\
             Depends: libc6 (>= 2.34), libgcc-s1 (>= 3.0), zlib1g (>= 1:1.2.0)\n\
             Conffiles:\n /etc/package-{i}/main.conf 0123456789abcdef0123456789abcdef\n\
             Description: package number {i} for the benchmark\n",
            100 + i
        ));
        for l in 0..12 {
            s.push_str(&format!(
                " Line {l} of a long description that wraps over many lines as real ones do.\n"
            ));
        }
        s.push_str("Homepage: https://example.org/\n\n");
    }
    s
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let facts = SystemFacts::new(Paths::system());
    // Warm up: page cache, first thread spawns, the resolver's first look at nsswitch.
    let warm = rt.block_on(facts.report(&Fact::ALL));
    if !warm.errors.is_empty() {
        println!("(facts missing on this machine: {:?})", warm.errors);
    }
    println!(
        "live machine: {} packages, {} interfaces, {} filesystems",
        warm.applications.as_ref().map_or(0, Vec::len),
        warm.interfaces.as_ref().map_or(0, Vec::len),
        warm.filesystems.as_ref().map_or(0, Vec::len),
    );
    stats(
        "full report, every fact (live)",
        time(50, || rt.block_on(facts.report(&Fact::ALL))),
    );
    for f in Fact::ALL {
        stats(
            &format!("  fact {f} (live)"),
            time(20, || rt.block_on(facts.report(&[f]))),
        );
    }

    let status = dpkg_status(2000);
    let installed = dpkg::parse(&status).len();
    stats(
        &format!(
            "dpkg status, 2000 packages ({} KiB, {installed} installed)",
            status.len() / 1024
        ),
        time(50, || dpkg::parse(&status)),
    );
    let dir = std::env::temp_dir().join(format!("guestd-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("var/lib/dpkg"));
    let _ = std::fs::write(dir.join("var/lib/dpkg/status"), &status);
    let tree = Paths::under(&dir);
    stats(
        "dpkg status, 2000 packages, read + parse",
        time(50, || guestd_reporters::packages::read(&tree)),
    );
    let _ = std::fs::remove_dir_all(&dir);

    let apk_db: String = (0..2000)
        .map(|i| {
            format!(
                "C:Q1abcdefabcdefabcdefabcdefabcd{i}=\nP:pkg-{i}\nV:{i}.0.1-r3\nA:x86_64\nS:12345\n\
                 I:45678\nT:package {i}\nU:https://example.org\nL:MIT\no:pkg-{i}\nm:Someone <a@b>\n\
                 t:1700000000\nc:0123456789abcdef\nD:so:libc.musl-x86_64.so.1\np:so:libpkg{i}.so.1\n\
                 F:usr/lib\nR:libpkg{i}.so.1\na:0:0:755\nZ:Q1abcdef=\n\n"
            )
        })
        .collect();
    stats(
        "apk installed db, 2000 packages",
        time(50, || apk::parse(&apk_db)),
    );

    if let Some(root) = rpm_root() {
        let tree = Paths::under(&root);
        let n = rpm::read(&tree).ok().flatten().map_or(0, |v| v.len());
        stats(
            &format!("rpmdb.sqlite, {n} packages, read directly"),
            time(20, || rpm::read(&tree)),
        );
    }

    let rpm_out: String = (0..2000)
        .map(|i| format!("pkg-{i}\t\t{i}.1.2\t3.el9\tx86_64\n"))
        .collect();
    stats(
        "rpm -qa output, 2000 packages (parse only)",
        time(50, || rpm::parse(&rpm_out)),
    );
}

/// A tree with an SQLite rpmdb of 2000 packages: `$GUESTD_BENCH_RPM_ROOT`, or one built once
/// with rpmbuild (Debian package rpm) under target/, or none.
fn rpm_root() -> Option<std::path::PathBuf> {
    use std::process::Command;
    if let Some(r) = std::env::var_os("GUESTD_BENCH_RPM_ROOT") {
        return Some(r.into());
    }
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-rpmdb-2000");
    let root = base.join("root");
    if root.join("var/lib/rpm/rpmdb.sqlite").exists() {
        return Some(root);
    }
    if !std::path::Path::new("/usr/bin/rpmbuild").exists() {
        println!("(no rpmbuild: skipping the rpmdb benchmark)");
        return None;
    }
    println!("(building a 2000-package rpmdb once, about a minute)");
    let spec_dir = base.join("build/SPECS");
    std::fs::create_dir_all(&spec_dir).ok()?;
    let mut spec = String::from(
        "Name: gdt\nVersion: 1.0\nRelease: 1.el9\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
         %description\nmain\n%files\n",
    );
    for i in 0..1999 {
        spec.push_str(&format!(
            "%package -n gdt-sub-{i}\nSummary: sub {i}\n%description -n gdt-sub-{i}\n{}\n%files -n gdt-sub-{i}\n",
            "lorem ipsum dolor ".repeat(50 + i % 400)
        ));
    }
    std::fs::write(spec_dir.join("gdt.spec"), spec).ok()?;
    let ok = Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", base.join("build").display()))
        .arg(spec_dir.join("gdt.spec"))
        .output()
        .ok()?
        .status
        .success();
    let rpms: Vec<std::path::PathBuf> = std::fs::read_dir(base.join("build/RPMS/noarch"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    let db = |extra: &[std::ffi::OsString]| {
        Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm"])
            .args(extra)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::create_dir_all(&root).ok()?;
    let mut install: Vec<std::ffi::OsString> = ["-i", "--justdb", "--nodeps", "--noscripts"]
        .map(Into::into)
        .to_vec();
    install.extend(rpms.into_iter().map(Into::into));
    (ok && db(&["--initdb".into()]) && db(&install)).then_some(root)
}
