//! The fuzz targets' bodies, one function per parser. The cargo-fuzz binaries in
//! `fuzz_targets/` call them under libFuzzer (nightly); `tests/fuzz_corpus.rs` in the main
//! workspace includes this file and replays the checked-in seeds through the same functions
//! with the stable toolchain, so CI runs every target without libFuzzer.
//!
//! Each function panics (an assertion) when a property of its parser breaks; bad input on
//! its own must never make it panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use serde_json::Value;

use guestd_protocols::qga::json::{FrameError, Framer, parse_message, parse_owned_above, to_vec};

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every fuzz target: its name (the directory of its seeds) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("qga_stream", qga_stream),
    ("xenstore_msg", xenstore_msg),
    ("ovmd_message", ovmd_message),
    ("ovirt_line", ovirt_line),
    ("reporters_text", reporters_text),
    ("reporters_binary", reporters_binary),
    ("config_file", config_file),
];

/// What one framer run produced, in order.
type Outcomes = Vec<Result<Value, FrameError>>;

/// Runs the QGA framer over `data` cut into pieces of the sizes `cuts` yields, checking at each
/// step that it makes progress and keeps its buffer within the limit.
fn frame(data: &[u8], max: usize, mut cuts: impl FnMut() -> usize) -> Outcomes {
    let mut framer = Framer::new(max);
    let max = framer.max_message();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = cuts().clamp(1, data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        loop {
            let before = buf.len();
            match framer.parse(&mut buf) {
                Ok(None) => {
                    assert!(
                        buf.len() <= max,
                        "the framer keeps {} bytes with a {max}-byte limit",
                        buf.len()
                    );
                    break;
                }
                r => {
                    assert!(buf.len() < before, "a result without consuming input");
                    out.push(r.map(|v| v.unwrap_or(Value::Null)));
                }
            }
        }
    }
    out
}

/// Numbers as QEMU compares them after a write and a read: `1e5` is written as `100000` and
/// reads back as an integer.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The QGA stream: the framer never panics, always consumes what it answers, keeps at most
/// its limit buffered, gives the same results however the input is chunked, and everything
/// it parses is written back as one ASCII line that parses to the same value.
pub fn qga_stream(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    // A small limit reaches the over-size path; the seed picks it and the chunking.
    let max = 16 + usize::from(seed & 0x3f) * 8;
    let whole = frame(data, max, || usize::MAX);
    let mut state = u32::from(seed) | 1;
    let chunked = frame(data, max, || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 7 + 1) as usize
    });
    assert_eq!(whole, chunked, "results depend on chunking");
    // Byte by byte costs a parse call per byte: only for short inputs, to keep the rate up.
    if data.len() <= 512 {
        let bytewise = frame(data, max, || 1);
        assert_eq!(whole, bytewise, "results depend on chunking (byte by byte)");
    }
    // The in-place parse of large messages, with a threshold small enough for these inputs,
    // must agree with the copying one. Within the framer's size limit, as the parser is only
    // ever given what the framer let through (its nesting is bounded by that size).
    if data.len() <= max {
        let owned = parse_owned_above(BytesMut::from(data), usize::from(seed >> 6));
        assert_eq!(owned, parse_message(data), "the in-place parse disagrees");
    }
    for v in whole.iter().flatten() {
        let line = to_vec(v);
        assert!(
            line.iter().all(|b| (0x20..0x7f).contains(b)),
            "non-printable byte in a written value: {}",
            String::from_utf8_lossy(&line)
        );
        let back = parse_message(&line)
            .unwrap_or_else(|e| panic!("our own output does not parse ({e}): {line:?}"));
        assert!(same_json(v, &back), "write/read changed {v} into {back}");
    }
}

/// The xenstore frame decoder: never panics, always makes progress or waits (consuming
/// nothing), and finds the same frames however the stream is chunked.
pub fn xenstore_msg(data: &[u8]) {
    use guestd_transports::xenstore::wire;
    fn frames(data: &[u8], mut cut: impl FnMut() -> usize) -> (Vec<wire::Frame>, bool) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = cut().clamp(1, data.len() - at);
            buf.extend_from_slice(&data[at..at + n]);
            at += n;
            loop {
                let before = buf.len();
                match wire::decode(&mut buf) {
                    Ok(Some(f)) => {
                        assert_eq!(buf.len(), before - wire::HEADER_LEN - f.payload.len());
                        assert!(f.payload.len() <= wire::PAYLOAD_MAX);
                        assert_eq!(f.header.len as usize, f.payload.len());
                        let _ = wire::Errno::parse(&f.payload);
                        let _ = wire::split_nul(&f.payload);
                        out.push(f);
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "waiting must consume nothing");
                        break;
                    }
                    // A corrupt stream ends the connection.
                    Err(_) => return (out, true),
                }
            }
        }
        (out, false)
    }
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let whole = frames(data, || usize::MAX);
    let mut step = usize::from(seed);
    let chunked = frames(data, || {
        step = (step * 5 + 3) % 23;
        step + 1
    });
    assert_eq!(whole, chunked, "frames depend on chunking");
}

/// Reassembly of a manager message from arbitrary key and chunk bytes, and the scan plan
/// from arbitrary counters and child names: never panics, limits always hold.
pub fn ovmd_message(data: &[u8]) {
    use guestd_protocols::ovmd::inbound::{Assembly, Inbound, plan_scan};
    use guestd_protocols::ovmd::layout::{KEY_MAX, VALUE_MAX, parse_counter};
    let mut parts = data.split(|b| *b == 0xff);
    let key = parts.next().unwrap_or_default();
    if let Ok(mut asm) = Assembly::new(key) {
        let mut ok = true;
        for chunk in parts.by_ref() {
            if asm.push(chunk).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            match asm.finish().0 {
                Inbound::Param { key, value } => {
                    assert!(!key.is_empty());
                    assert!(value.len() <= VALUE_MAX * 3); // U+FFFD may triple invalid bytes
                    assert!(key.len() <= KEY_MAX * 3);
                }
                Inbound::Event { value } => assert!(value.len() <= VALUE_MAX * 3),
            }
        }
    }
    let last_read = parse_counter(data.get(..4).unwrap_or_default()).unwrap_or(0);
    let last_write = parse_counter(data.get(4..8).unwrap_or_default()).unwrap_or(0);
    let names: Vec<String> = data
        .split(|b| *b == b'/')
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let scan = plan_scan(last_read, last_write, &names);
    assert!(scan.todo.iter().all(|n| *n <= last_write));
    assert!(scan.todo.windows(2).all(|w| w[0] < w[1]));
}

/// The oVirt host stream: the line reader never panics, keeps at most its limit buffered,
/// finds the same lines however the stream is chunked; every line it yields either fails to
/// parse or becomes a command (never failing, with or without an action); and an agent
/// message built from the parsed members encodes to one ASCII line that parses back.
pub fn ovirt_line(data: &[u8]) {
    use guestd_protocols::ovirt::command::Command;
    use guestd_protocols::ovirt::frame::{LineReader, encode, parse_line};
    type Lines = Vec<Result<Vec<u8>, guestd_protocols::ovirt::frame::FrameError>>;
    fn lines(data: &[u8], limit: usize, mut cut: impl FnMut() -> usize) -> Lines {
        let mut reader = LineReader::new(limit);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = cut().clamp(1, data.len() - at);
            buf.extend_from_slice(&data[at..at + n]);
            at += n;
            loop {
                let before = buf.len();
                match reader.next_line(&mut buf) {
                    Some(r) => {
                        assert!(buf.len() < before, "a line without consuming input");
                        out.push(r.map(|l| l.to_vec()));
                    }
                    None => {
                        assert!(buf.len() <= reader.limit(), "{} bytes buffered", buf.len());
                        break;
                    }
                }
            }
        }
        out
    }
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    // A small limit reaches the too-long path; the seed picks it.
    let limit = 8 + usize::from(seed & 0x7f) * 4;
    let whole = lines(data, limit, || usize::MAX);
    let mut step = usize::from(seed);
    let chunked = lines(data, limit, || {
        step = (step * 7 + 5) % 13;
        step + 1
    });
    // An over-long line is reported when the limit is crossed, which depends on where the
    // reads end; the complete lines found must not.
    let ok = |v: &Lines| v.iter().flatten().cloned().collect::<Vec<_>>();
    assert_eq!(ok(&whole), ok(&chunked), "lines depend on chunking");
    for line in whole.iter().flatten() {
        assert!(line.len() <= limit && !line.contains(&b'\n'));
        let Ok(raw) = parse_line(line) else { continue };
        let args = raw.args.clone();
        let cmd = Command::from_raw(raw);
        let _ = cmd.action();
        let _ = cmd.name();
        let frame = encode(cmd.name(), &args);
        assert_eq!(frame.last(), Some(&b'\n'));
        let body = &frame[..frame.len() - 1];
        assert!(
            body.iter().all(|b| (0x20..0x7f).contains(b)),
            "non-ASCII or control byte in an encoded message: {}",
            String::from_utf8_lossy(body)
        );
        let back = parse_line(body)
            .unwrap_or_else(|e| panic!("our own message does not parse ({e}): {body:?}"));
        assert_eq!(
            back.name,
            guestd_protocols::ovirt::frame::filter_str(cmd.name())
        );
    }
}

/// Every text parser of the reporters on arbitrary bytes (as a corrupt /proc, sysfs or
/// package database file would give them): never panics. The first byte picks the parser.
pub fn reporters_text(data: &[u8]) {
    use guestd_reporters::packages::{apk, dpkg, rpm};
    use guestd_reporters::{
        cpus, diskstats, filesystems, hostname, interfaces, memory, os, routes, timezone,
    };
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    match which % 14 {
        0 => drop(os::parse_os_release(&s)),
        1 => drop(os::from_release_line(&s)),
        2 => drop(dpkg::parse(&s)),
        3 => drop(apk::parse(&s)),
        4 => drop(rpm::parse(&s)),
        5 => drop(memory::parse_meminfo(&s)),
        6 => drop(filesystems::parse_mountinfo(&s)),
        7 => drop(interfaces::parse_if_inet6(&s)),
        8 => drop(routes::parse_v4(&s)),
        9 => drop(routes::parse_v6(&s)),
        10 => drop(diskstats::parse(&s)),
        11 => drop(cpus::parse_stat(&s, 100)),
        12 => drop(hostname::fqdn_from_hosts(&s, "guest")),
        _ => {
            if let Some(tz) = timezone::PosixTz::parse(&s) {
                for t in [-(1i64 << 40), 0, 1_700_000_000, 1 << 40] {
                    let _ = tz.at(t);
                }
            }
        }
    }
}

/// The binary formats the reporters read: TZif zone files, utmp records, and SQLite rpm
/// databases (written to a file, since the reader works with pread). Never panics, never
/// loops.
pub fn reporters_binary(data: &[u8]) {
    use guestd_reporters::packages::rpm;
    use guestd_reporters::timezone::Tzif;
    use guestd_reporters::users::utmp;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(tz) = Tzif::parse(rest) {
                let _ = tz.at(1_700_000_000);
            }
        }
        1 => {
            let recs = utmp::parse(rest);
            assert_eq!(recs.len(), rest.len() / utmp::RECORD);
            let _ = utmp::sessions(&recs, |_| true);
        }
        _ => {
            let path =
                std::env::temp_dir().join(format!("guestd-fuzz-rpmdb-{}", std::process::id()));
            if std::fs::write(&path, rest).is_ok() {
                let _ = rpm::read_sqlite(&path);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The configuration files (`config/src/toml_file.rs`, `config/src/keyfile.rs`): the same bytes
/// are read as a guestd.toml and as a qemu-ga.conf (their syntaxes overlap: `[group]`,
/// `key = value`, `#` comments). Each parse must be deterministic, place every diagnostic within
/// the file, print it on one line, and keep its diagnostics in file order. A file without
/// errors must resolve to usable settings (absolute paths, intervals in range, channels that
/// print as specs parsing back to themselves), and must parse the same with a comment appended.
/// The two layers together resolve unless one file blocks and the other allows commands.
pub fn config_file(data: &[u8]) {
    use guestd_config::{Layer, Settings, keyfile, toml_file};
    use std::path::Path;

    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let toml_path = Path::new("/etc/guestd/guestd.toml");
    let a = toml_file::parse(toml_path, text);
    // line_col's last place is just after the last byte.
    let toml_lines: Vec<&str> = text.split('\n').collect();
    check_diagnostics(toml_path, &a.diagnostics, toml_lines.len());
    for d in &a.diagnostics {
        if let (Some(l), Some(c)) = (d.line, d.column) {
            let width = toml_lines[l - 1].chars().count();
            assert!(
                (1..=width + 1).contains(&c),
                "{d}: column outside line {l} ({width} characters)"
            );
        }
    }
    let toml_ok = !has_error(&a.diagnostics);
    if toml_ok {
        // Only good files are parsed again: most inputs are not, and speed is coverage.
        let b = toml_file::parse(toml_path, text);
        assert_eq!(a.layer, b.layer, "guestd.toml: a second parse differs");
        assert_eq!(a.qemu_ga_config, b.qemu_ga_config);
        assert_eq!(a.diagnostics, b.diagnostics);
        check_settings(&a.layer);
        if let Some(Some(p)) = &a.qemu_ga_config {
            assert!(p.is_absolute(), "qemu-ga-config {p:?} is relative");
        }
        let more = toml_file::parse(toml_path, &format!("{text}\n# appended\n"));
        assert_eq!(
            a.layer, more.layer,
            "guestd.toml: a trailing comment changes it"
        );
        assert_eq!(a.qemu_ga_config, more.qemu_ga_config);
        assert_eq!(a.diagnostics, more.diagnostics);
    }

    let qga_path = Path::new("/etc/qemu/qemu-ga.conf");
    let k = keyfile::parse(qga_path, text);
    check_diagnostics(qga_path, &k.diagnostics, text.lines().count());
    for d in &k.diagnostics {
        assert!(
            d.line.is_some(),
            "{d}: a key file diagnostic without its line"
        );
    }
    let keyfile_ok = !has_error(&k.diagnostics);
    if keyfile_ok {
        let k2 = keyfile::parse(qga_path, text);
        assert_eq!(k.layer, k2.layer, "qemu-ga.conf: a second parse differs");
        assert_eq!(k.diagnostics, k2.diagnostics);
        check_settings(&k.layer);
    }
    // What follows the last line of a key file, in another group, changes nothing.
    if text.is_empty() || text.ends_with('\n') {
        let more = keyfile::parse(qga_path, &format!("{text}# appended\n[other]\nkey=value\n"));
        assert_eq!(
            k.layer, more.layer,
            "qemu-ga.conf: a later group changes it"
        );
        assert_eq!(k.diagnostics, more.diagnostics);
    }

    if toml_ok && keyfile_ok {
        let layers: [&Layer; 2] = [&k.layer, &a.layer];
        let blocks = layers.iter().any(|l| l.qga.block.is_some());
        let allows = layers.iter().any(|l| l.qga.allow.is_some());
        match Settings::resolve(&layers) {
            Ok(_) => assert!(!(blocks && allows), "block-rpcs and allow-rpcs resolved"),
            Err(e) => assert!(blocks && allows, "two good files do not resolve: {e}"),
        }
    }
}

fn has_error(diags: &[guestd_config::Diagnostic]) -> bool {
    diags
        .iter()
        .any(|d| d.severity == guestd_config::Severity::Error)
}

/// Diagnostics of one parse: of that file, in file order, on lines `1..=lines` (at least one
/// line: an empty file's problems are on line 1), each printed on one line.
fn check_diagnostics(file: &std::path::Path, diags: &[guestd_config::Diagnostic], lines: usize) {
    let lines = lines.max(1);
    for d in diags {
        assert_eq!(d.file, file);
        if let Some(l) = d.line {
            assert!((1..=lines).contains(&l), "{d}: line outside 1..={lines}");
        }
        let shown = d.to_string();
        assert!(
            !shown.chars().any(char::is_control),
            "a diagnostic printed with a control character: {shown:?}"
        );
    }
    assert!(
        diags.windows(2).all(|w| w[0].line <= w[1].line),
        "diagnostics out of file order: {diags:?}"
    );
}

/// A layer from a file without errors: on its own it resolves to settings the daemon can use.
fn check_settings(layer: &guestd_config::Layer) {
    use guestd_transports::ChannelSpec;
    use std::time::Duration;

    let s = guestd_config::Settings::resolve(&[layer])
        .unwrap_or_else(|e| panic!("a file without errors does not resolve: {e}"));
    for p in [
        Some(&s.statedir),
        s.freeze.hook.as_ref(),
        Some(&s.ovirt.hooks_dir),
        Some(&s.ovmd.store),
        Some(&s.ovmd.socket),
    ]
    .into_iter()
    .flatten()
    {
        assert!(p.is_absolute(), "relative path {p:?} in {s:?}");
    }
    let interval = Duration::from_millis(10)..=Duration::from_secs(86_400);
    for d in [
        s.discovery.rescan,
        s.freeze.hook_timeout,
        s.ovirt.heartbeat,
        s.ovirt.user,
        s.ovirt.cpus,
        s.ovirt.inventory,
        s.ovirt.disks,
        s.ovirt.hooks_deadline,
    ] {
        assert!(interval.contains(&d), "interval {d:?} out of range");
    }
    if let Some(w) = s.freeze.watchdog {
        assert!(!w.is_zero(), "a zero watchdog is None");
    }
    assert!((1024..=1 << 30).contains(&s.qga.max_request));
    for list in [&s.qga.block, &s.qga.allow].into_iter().flatten() {
        for name in list {
            assert!(
                !name.is_empty() && name.trim() == name && !name.contains([',', ';']),
                "command name {name:?}"
            );
        }
    }
    if let Some(l) = &s.log_level {
        assert!(guestd_config::check_log_level(l).is_ok(), "log level {l:?}");
    }
    if let Some(c) = &s.ovmd.channel {
        assert!(
            c == "xenstore" || c.starts_with("xenstore:/"),
            "ovmd channel {c:?}"
        );
    }
    for c in [&s.qga.channels, &s.ovirt.channels]
        .into_iter()
        .flatten()
        .flatten()
    {
        let shown = c.to_string();
        assert_eq!(
            shown.parse::<ChannelSpec>().as_ref(),
            Ok(c),
            "channel {c:?} prints as {shown:?}"
        );
        if let Some(names) = c.virtio_names() {
            assert!(!names.is_empty(), "virtio channel {c:?} names no port");
        }
    }
}
