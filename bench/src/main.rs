//! `guestd-bench`: guestd and Debian's qemu-ga side by side on unix sockets, in one run, on
//! the same machine, printed as one table of ratios (the machine is shared and noisy, so
//! absolute numbers say little; ratios taken in the same minute say more).
//!
//! Only read-only commands and file writes into this run's own temporary directory are sent
//! to qemu-ga: it acts on the real machine.
//!
//! ```text
//! cargo build --profile dist --target x86_64-unknown-linux-musl --bin guestd
//! cargo build --release -p guestd-bench
//! target/release/guestd-bench            # about two minutes
//! ```

mod agents;
mod client;
mod procfs;
mod table;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Parser;
use serde_json::json;

use agents::{Agent, Bins, Extra, Kind, Xenstored};
use client::{Client, request};
use table::{Row, Target, Value};

const MIB: u64 = 1 << 20;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "guestd-bench",
    about = "guestd beside qemu-ga: one table of ratios"
)]
struct Args {
    /// guestd binary: by default the one users get (static musl, dist profile), as
    /// packaging/build-deb.sh builds it.
    #[arg(long, default_value_os_t = root().join("target/x86_64-unknown-linux-musl/dist/guestd"))]
    guestd: PathBuf,
    /// The static system-VM binary, for the size row only (skipped when missing or when it
    /// is the binary measured).
    #[arg(long, default_value_os_t = root().join("target/x86_64-unknown-linux-musl/dist/guestd"))]
    guestd_static: PathBuf,
    /// Debian's qemu-ga.
    #[arg(long, default_value = "/usr/sbin/qemu-ga")]
    qemu_ga: PathBuf,
    /// Sequential pings (and pipelined pings per round).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Requests per informational command.
    #[arg(long, default_value_t = 200)]
    info_requests: usize,
    /// Start-ups to time per agent (the median is shown).
    #[arg(long, default_value_t = 5)]
    startups: usize,
    /// Seconds of idleness over which wake-ups are counted.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Payload of the file-write test, MiB.
    #[arg(long, default_value_t = 40)]
    file_mib: u64,
    /// The peers kit (for xenstored).
    #[arg(long, default_value_os_t = root().join("../shared/peers"))]
    peers: PathBuf,
    /// Skip the run with every protocol live.
    #[arg(long)]
    no_live: bool,
    /// Only the idle rows (RSS, threads, wake-ups): no start-up timing, requests, file
    /// writes or sizes. About 20 s; for work on idle behaviour.
    #[arg(long)]
    idle_only: bool,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A temporary directory with a short path (unix sockets), removed at the end.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new() -> anyhow::Result<Self> {
        let p = PathBuf::from(format!("/tmp/gdbench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say(msg: &str) {
    eprintln!("guestd-bench: {msg}");
}

fn run(args: &Args) -> anyhow::Result<()> {
    for (what, p) in [("guestd", &args.guestd), ("qemu-ga", &args.qemu_ga)] {
        if !p.exists() {
            bail!(
                "{what} not found at {} (build guestd with `cargo build --profile dist \
                 --target x86_64-unknown-linux-musl --bin guestd`; \
                 install qemu-ga with `apt-get install qemu-guest-agent`)",
                p.display()
            );
        }
    }
    let bins = Bins {
        guestd: args.guestd.clone(),
        qemu_ga: args.qemu_ga.clone(),
    };
    let tmp = TmpDir::new()?;
    let mut rows = Vec::new();

    if !args.idle_only {
        say("start-up to first answer");
        rows.push(startup(args, &bins, &tmp.0)?);
    }

    say("starting both agents");
    let mut g = Agent::spawn(Kind::Guestd, &bins, &tmp.0.join("g"), &Extra::default())?;
    let mut q = Agent::spawn(Kind::QemuGa, &bins, &tmp.0.join("q"), &Extra::default())?;
    g.first_answer(Instant::now(), Duration::from_secs(30))?;
    q.first_answer(Instant::now(), Duration::from_secs(30))?;
    let live = if args.no_live {
        None
    } else {
        match Live::start(args, &bins, &tmp.0) {
            Ok(l) => Some(l),
            Err(e) => {
                say(&format!("no run with every protocol live: {e:#}"));
                None
            }
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    let (g_idle, q_idle) = (procfs::rss(g.pid()), procfs::rss(q.pid()));
    rows.push(Row {
        name: "idle RSS after start".into(),
        guestd: Value::Bytes(g_idle),
        qemu_ga: Some(Value::Bytes(q_idle)),
        target: Target::RatioAtMost(0.5),
    });
    rows.push(Row {
        name: "… of which private (RssAnon)".into(),
        guestd: Value::Bytes(procfs::status_bytes(g.pid(), "RssAnon").unwrap_or(0)),
        qemu_ga: Some(Value::Bytes(
            procfs::status_bytes(q.pid(), "RssAnon").unwrap_or(0),
        )),
        target: Target::None,
    });
    rows.push(Row {
        name: "… proportional (PSS: shared pages divided among their users)".into(),
        guestd: Value::Bytes(procfs::pss(g.pid())),
        qemu_ga: Some(Value::Bytes(procfs::pss(q.pid()))),
        target: Target::None,
    });
    rows.push(Row {
        name: "threads while idle".into(),
        guestd: Value::Count(procfs::threads(g.pid())),
        qemu_ga: Some(Value::Count(procfs::threads(q.pid()))),
        target: Target::None,
    });
    if let Some(l) = &live {
        rows.push(Row {
            name: format!("idle RSS after start, {}", l.what),
            guestd: Value::Bytes(procfs::rss(l.agent.pid())),
            qemu_ga: Some(Value::Bytes(q_idle)),
            target: Target::None,
        });
    }

    if !args.idle_only {
        rows.extend(under_load(args, &g, &q)?);
    }

    say(&format!("{} s idle", args.idle_secs));
    std::thread::sleep(Duration::from_secs(2));
    let mut watched: Vec<(&str, u32)> = vec![("guestd", g.pid()), ("qemu-ga", q.pid())];
    if let Some(l) = &live {
        watched.push(("live", l.agent.pid()));
    }
    let before: Vec<(HashMap<String, u64>, u64)> = watched
        .iter()
        .map(|(_, p)| (procfs::context_switches(*p), procfs::cpu_ticks(*p)))
        .collect();
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let rate: Vec<f64> = watched
        .iter()
        .zip(&before)
        .map(|((_, p), (c, _))| {
            procfs::context_switches_since(*p, c) as f64 / args.idle_secs as f64
        })
        .collect();
    rows.push(Row {
        name: "wake-ups per second while idle".into(),
        guestd: Value::PerSec(rate[0]),
        qemu_ga: Some(Value::PerSec(rate[1])),
        target: Target::AtMost(Value::PerSec(0.0), "none".into()),
    });
    if let Some(l) = &live {
        rows.push(Row {
            name: format!("wake-ups per second while idle, {}", l.what),
            guestd: Value::PerSec(rate[2]),
            qemu_ga: Some(Value::PerSec(rate[1])),
            target: Target::AtMost(Value::PerSec(l.heartbeats), l.heartbeat_text.clone()),
        });
        rows.push(Row {
            name: format!("RSS at the end, {}", l.what),
            guestd: Value::Bytes(procfs::rss(l.agent.pid())),
            qemu_ga: Some(Value::Bytes(procfs::rss(q.pid()))),
            target: Target::None,
        });
    }

    if !args.idle_only {
        rows.extend(sizes(args, &tmp.0)?);
    }

    let info = format!(
        "guestd {} vs qemu-ga {}; {} CPUs, load {}; {}",
        version(&args.guestd, &["--version"]),
        version(&args.qemu_ga, &["-V"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_default(),
    );
    let text = format!("{}\n{info}\n", table::markdown(&rows));
    print!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
    }
    g.stop();
    q.stop();
    drop(live);
    Ok(())
}

/// guestd with every protocol it can serve here: QGA, oVirt (a unix socket the bench connects
/// to as the host) and Oracle VM messaging (the real xenstored of the peers kit).
struct Live {
    agent: Agent,
    _xs: Option<Xenstored>,
    _host: Option<std::thread::JoinHandle<u64>>,
    what: String,
    /// Wake-ups per second the configured heartbeats account for.
    heartbeats: f64,
    heartbeat_text: String,
}

impl Live {
    fn start(args: &Args, bins: &Bins, tmp: &Path) -> anyhow::Result<Self> {
        let dir = tmp.join("l");
        let mut extra = Extra::default();
        let mut what = vec!["QGA"];
        let xs = if args.peers.join("xenstored/start.sh").exists() {
            let xs = Xenstored::start(&args.peers, &tmp.join("xs"))?;
            extra
                .channels
                .push(format!("ovmd=xenstore:{}", xs.guest_socket.display()));
            extra
                .env
                .push(("GUESTD_OVMD_STORE".into(), dir.join("ovmd-store")));
            extra
                .env
                .push(("GUESTD_OVMD_SOCKET".into(), dir.join("ovmd.sock")));
            what.push("ovmd");
            Some(xs)
        } else {
            say("no xenstored in the peers kit: ovmd not live");
            None
        };
        let ovirt_sock = dir.join("ovirt.sock");
        let mut with_ovirt = extra.clone();
        with_ovirt
            .channels
            .push(format!("ovirt=unix-listen:{}", ovirt_sock.display()));
        let mut agent = Agent::spawn(Kind::Guestd, bins, &dir, &with_ovirt)?;
        let mut host = None;
        match agent.first_answer(Instant::now(), Duration::from_secs(30)) {
            Ok(_) => {
                host = Some(agents::ovirt_host(ovirt_sock));
                what.push("oVirt");
            }
            Err(e) => {
                say(&format!(
                    "guestd cannot serve oVirt here ({e:#}); without it"
                ));
                drop(agent);
                agent = Agent::spawn(Kind::Guestd, bins, &dir, &extra)?;
                agent.first_answer(Instant::now(), Duration::from_secs(30))?;
            }
        }
        // The oVirt heartbeat is the only timer guestd keeps while idle.
        let (heartbeats, heartbeat_text) = if host.is_some() {
            (0.25, "≤ oVirt heartbeat (1 per 5 s) ×1.25".to_owned())
        } else {
            (0.0, "none".to_owned())
        };
        Ok(Self {
            agent,
            _xs: xs,
            _host: host,
            what: what.join(" + "),
            heartbeats,
            heartbeat_text,
        })
    }
}

fn version(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn startup(args: &Args, bins: &Bins, tmp: &Path) -> anyhow::Result<Row> {
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..args.startups.max(1) {
        // Alternate who goes first, so neither always meets a warmer cache.
        let order = if i % 2 == 0 {
            [Kind::Guestd, Kind::QemuGa]
        } else {
            [Kind::QemuGa, Kind::Guestd]
        };
        for kind in order {
            let dir = tmp.join(format!("s{i}{}", kind as u8));
            let t0 = Instant::now();
            let mut a = Agent::spawn(kind, bins, &dir, &Extra::default())?;
            let t = a.first_answer(t0, Duration::from_secs(30))?;
            a.stop();
            times[kind as usize].push(t.as_secs_f64());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let [g, q] = times;
    Ok(Row {
        name: "start-up to first answer (median)".into(),
        guestd: Value::Time(Duration::from_secs_f64(median(g))),
        qemu_ga: Some(Value::Time(Duration::from_secs_f64(median(q)))),
        target: Target::None,
    })
}

/// `n` requests to each agent, in alternating blocks so that load on the machine falls on
/// both alike. Latencies sorted.
fn sequential(
    g: &mut Client,
    q: &mut Client,
    req: &[u8],
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    // Warm-up: first requests fault pages in.
    for _ in 0..(n / 20).max(5) {
        g.round_trip(req)?;
        q.round_trip(req)?;
    }
    let blocks = 10.min(n).max(1);
    let mut out = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for b in 0..blocks {
        let per = n / blocks + usize::from(b < n % blocks);
        for (i, c) in [&mut *g, &mut *q].into_iter().enumerate() {
            for _ in 0..per {
                let t = Instant::now();
                c.round_trip(req)?;
                out[i].push(t.elapsed());
            }
        }
    }
    let [mut a, mut b] = out;
    a.sort();
    b.sort();
    Ok((a, b))
}

/// Requests per second with `n` pings written at once while the replies are read.
fn pipelined(g: &mut Client, q: &mut Client, n: usize) -> anyhow::Result<(f64, f64)> {
    let burst: Vec<u8> = request("guest-ping").repeat(n);
    let burst = Arc::new(burst);
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (i, c) in [&mut *g, &mut *q].into_iter().enumerate() {
            let _ = round;
            let mut w = c.writer()?;
            let data = Arc::clone(&burst);
            let t = Instant::now();
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                w.write_all(&data)
            });
            for _ in 0..n {
                c.read_line()?;
            }
            let el = t.elapsed();
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
            rates[i].push(n as f64 / el.as_secs_f64());
        }
    }
    let [a, b] = rates;
    Ok((median(a), median(b)))
}

struct WriteMem {
    before: u64,
    peak: u64,
    after: u64,
}

/// Writes `total` bytes to a new file in the agent's directory with requests of
/// `per_request` bytes; the agent's RSS before, at its peak, and a second after.
fn file_write(c: &mut Client, a: &Agent, total: u64, per_request: u64) -> anyhow::Result<WriteMem> {
    let pid = a.pid();
    let path = a.dir.join("written.bin");
    let _ = std::fs::remove_file(&path);
    let before = procfs::rss(pid);
    let handle = c
        .call("guest-file-open", Some(json!({"path": path, "mode": "w"})))?
        .as_i64()
        .context("guest-file-open returned no handle")?;
    // VmHWM holds the peak since this reset; a sampler backs it up where the reset fails.
    let hwm = procfs::reset_peak(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(procfs::rss(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let chunk: Vec<u8> = (0..per_request.min(total))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&chunk);
    let mut req = Vec::with_capacity(b64.len() + 128);
    req.extend_from_slice(
        format!(
            "{{\"execute\":\"guest-file-write\",\"arguments\":{{\"handle\":{handle},\"buf-b64\":\""
        )
        .as_bytes(),
    );
    req.extend_from_slice(b64.as_bytes());
    req.extend_from_slice(b"\"}}\n");
    drop(b64);
    let mut written = 0;
    while written < total {
        let line = c.round_trip(&req)?;
        let reply: serde_json::Value = serde_json::from_slice(line)?;
        let n = reply["return"]["count"]
            .as_u64()
            .with_context(|| format!("guest-file-write: {reply}"))?;
        written += n;
    }
    c.call("guest-file-close", Some(json!({ "handle": handle })))?;
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let peak = if hwm {
        procfs::peak_rss(pid).max(sampled)
    } else {
        sampled
    };
    if procfs::file_size(&path) != total {
        bail!(
            "{:?} wrote {} bytes, not {total}",
            a.kind,
            procfs::file_size(&path)
        );
    }
    let _ = std::fs::remove_file(&path);
    std::thread::sleep(Duration::from_secs(1));
    Ok(WriteMem {
        before,
        peak,
        after: procfs::rss(pid),
    })
}

/// Stripped size of a binary: strip(1) a copy (the release build is stripped already).
fn stripped(bin: &Path, tmp: &Path) -> u64 {
    let copy = tmp.join("stripped");
    let ok = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&copy)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    let size = procfs::file_size(if ok { &copy } else { bin });
    let _ = std::fs::remove_file(&copy);
    size
}

/// The binary plus every shared library ldd lists for it (what an image must carry).
fn with_libraries(bin: &Path, tmp: &Path) -> u64 {
    let out = Command::new("ldd").arg(bin).output();
    let libs: u64 = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    let path = match l.split_once("=>") {
                        Some((_, rest)) => rest.split_whitespace().next()?,
                        None => l.split_whitespace().next()?,
                    };
                    path.starts_with('/').then(|| PathBuf::from(path))
                })
                .map(|p| procfs::file_size(&std::fs::canonicalize(&p).unwrap_or(p)))
                .sum()
        })
        .unwrap_or(0);
    stripped(bin, tmp) + libs
}

fn sizes(args: &Args, tmp: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![
        Row {
            name: "stripped binary".into(),
            guestd: Value::Bytes(stripped(&args.guestd, tmp)),
            qemu_ga: Some(Value::Bytes(stripped(&args.qemu_ga, tmp))),
            target: Target::None,
        },
        Row {
            name: "binary + its shared libraries".into(),
            guestd: Value::Bytes(with_libraries(&args.guestd, tmp)),
            qemu_ga: Some(Value::Bytes(with_libraries(&args.qemu_ga, tmp))),
            target: Target::None,
        },
    ];
    if args.guestd_static.exists() && args.guestd_static != args.guestd {
        rows.push(Row {
            name: "static musl binary (needs no library) vs qemu-ga + libraries".into(),
            guestd: Value::Bytes(stripped(&args.guestd_static, tmp)),
            qemu_ga: Some(Value::Bytes(with_libraries(&args.qemu_ga, tmp))),
            target: Target::None,
        });
    }
    Ok(rows)
}

/// Requests and file writes to both agents: latency, throughput, memory under load.
fn under_load(args: &Args, g: &Agent, q: &Agent) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut gc = Client::connect(&g.sock)?;
    let mut qc = Client::connect(&q.sock)?;

    say(&format!("{} sequential guest-ping", args.requests));
    let (gl, ql) = sequential(&mut gc, &mut qc, &request("guest-ping"), args.requests)?;
    rows.push(Row {
        name: "guest-ping latency p50".into(),
        guestd: Value::Time(pct(&gl, 50.0)),
        qemu_ga: Some(Value::Time(pct(&ql, 50.0))),
        target: Target::RatioAtMost(0.7),
    });
    rows.push(Row {
        name: "guest-ping latency p99".into(),
        guestd: Value::Time(pct(&gl, 99.0)),
        qemu_ga: Some(Value::Time(pct(&ql, 99.0))),
        target: Target::RatioAtMost(1.0),
    });
    std::thread::sleep(Duration::from_secs(1));
    rows.push(Row {
        name: format!("RSS after {} requests", args.requests),
        guestd: Value::Bytes(procfs::rss(g.pid())),
        qemu_ga: Some(Value::Bytes(procfs::rss(q.pid()))),
        target: Target::RatioAtMost(0.5),
    });

    say(&format!(
        "pipelined guest-ping, {} per round",
        args.requests
    ));
    let (gt, qt) = pipelined(&mut gc, &mut qc, args.requests)?;
    rows.push(Row {
        name: format!("guest-ping pipelined ({} in flight)", args.requests),
        guestd: Value::Rate(gt),
        qemu_ga: Some(Value::Rate(qt)),
        target: Target::RatioAtLeast(2.0),
    });

    for cmd in [
        "guest-info",
        "guest-get-osinfo",
        "guest-network-get-interfaces",
    ] {
        say(cmd);
        let (gl, ql) = sequential(&mut gc, &mut qc, &request(cmd), args.info_requests)?;
        rows.push(Row {
            name: format!("{cmd} latency p50"),
            guestd: Value::Time(pct(&gl, 50.0)),
            qemu_ga: Some(Value::Time(pct(&ql, 50.0))),
            target: Target::None,
        });
    }

    let payload = args.file_mib * MIB;
    let chunk = MIB;
    for (label, per_request) in [
        (
            format!("{} MiB file write in 1 MiB requests", args.file_mib),
            chunk,
        ),
        (
            format!("{} MiB file write in one request", args.file_mib),
            payload,
        ),
    ] {
        say(&label);
        let gw = file_write(&mut gc, g, payload, per_request)?;
        let qw = file_write(&mut qc, q, payload, per_request)?;
        rows.push(Row {
            name: format!("{label}: peak RSS"),
            guestd: Value::Bytes(gw.peak),
            qemu_ga: Some(Value::Bytes(qw.peak)),
            target: Target::AtMost(
                Value::Bytes(payload * 3 / 2),
                format!("< 1.5 × payload ({} MiB)", payload * 3 / 2 / MIB),
            ),
        });
        rows.push(Row {
            name: format!("{label}: RSS after − before"),
            guestd: Value::Bytes(gw.after.saturating_sub(gw.before)),
            qemu_ga: Some(Value::Bytes(qw.after.saturating_sub(qw.before))),
            target: Target::AtMost(Value::Bytes(MIB), "≤ 1 MiB".into()),
        });
    }
    drop(gc);
    drop(qc);
    Ok(rows)
}
