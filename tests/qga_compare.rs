//! guestd side by side with Debian's qemu-ga: the corpus in `tests/qga-corpus/` goes to both
//! agents (over unix sockets on this machine, in a chroot of test users for `@chroot` files,
//! over virtio-serial in the QEMU VM for `@vm` files: what acts on the whole machine) and
//! their parsed replies are compared after normalising only
//! what must differ (times, pids, host counters, scratch paths, `guest-info`'s version).
//! Where guestd deliberately answers differently, the corpus line says so (`!newer:ID`,
//! `!cascade`) and `docs/qga-differences.md` explains why.
//!
//! Corpus syntax, one request per line (blank lines and `#` comments ignored):
//! - the request is sent as written, plus `\n`; `\xHH` (upper-case hex) stands for a byte;
//!   `$TMP` is the agent's scratch directory, `$PID` the pid its last `guest-exec` returned,
//!   `$MNT` the loop-mounted ext4 image;
//! - leading tags: `~ok` compare only success vs error (and the error), `~num` numbers loose
//!   and lists in any order, `~sort` lists in any order, `~info` guest-info (version and
//!   commands newer than qemu-ga 7.2 dropped), `@raw` no trailing newline, `@splitN` write in
//!   N-byte pieces, `!known:ID` both fail with the same class (the text follows the newer
//!   schema), `@exit` repeat until the process has exited, `@nestN`/`@bigN` expand
//!   `NEST`/`BIG` into N brackets / N bytes, `?invalid` the arguments are refused before the
//!   command acts (required for commands that would change the machine);
//! - `@batch` ... `@end`: the lines between are written at once (pipelined).
//!
//! Replies of one line are collected by following it with a `guest-sync` marker and reading
//! up to the marker's answer, so any number of replies (none, for bad input cascades) works.
//! qemu-ga exits when a client leaves with replies unread; every reply is read.

// Test helpers outside #[test] functions may panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Commands that would change this machine: only sent with arguments refused up front.
const ACTING: [&str; 12] = [
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-fstrim",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-set-user-password",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
    "guest-fsfreeze-freeze-list",
];

/// Commands guestd has and qemu-ga 7.2 lacks; `~info` drops them before comparing.
const NEWER_COMMANDS: [&str; 2] = ["guest-get-load", "guest-network-get-route"];

#[derive(Clone, Debug, Default)]
struct Tags {
    ok: bool,
    num: bool,
    sort: bool,
    info: bool,
    raw: bool,
    exit: bool,
    suspend: bool,
    invalid: bool,
    cascade: bool,
    split: Option<usize>,
    nest: Option<usize>,
    big: Option<usize>,
    newer: Option<String>,
    known: Option<String>,
}

#[derive(Clone, Debug)]
struct Line {
    at: String,
    tags: Tags,
    text: String,
}

#[derive(Clone, Debug)]
enum Item {
    One(Line),
    Batch(String, Vec<Line>),
}

fn parse_tags(line: &str) -> (Tags, String) {
    let mut tags = Tags::default();
    let mut rest = line;
    loop {
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let known = match word {
            "~ok" => {
                tags.ok = true;
                true
            }
            "~num" => {
                tags.num = true;
                true
            }
            "~sort" => {
                tags.sort = true;
                true
            }
            "~info" => {
                tags.info = true;
                true
            }
            "@raw" => {
                tags.raw = true;
                true
            }
            "@exit" => {
                tags.exit = true;
                true
            }
            "@suspend" => {
                tags.suspend = true;
                true
            }
            "?invalid" => {
                tags.invalid = true;
                true
            }
            "!cascade" => {
                tags.cascade = true;
                true
            }
            w if w.starts_with("@split") => {
                tags.split = w[6..].parse().ok();
                true
            }
            w if w.starts_with("@nest") => {
                tags.nest = w[5..].parse().ok();
                true
            }
            w if w.starts_with("@big") => {
                tags.big = w[4..].parse().ok();
                true
            }
            w if w.starts_with("!known:") => {
                tags.known = Some(w[7..].to_owned());
                true
            }
            w if w.starts_with("!newer:") => {
                tags.newer = Some(w[7..].to_owned());
                true
            }
            _ => false,
        };
        if !known || after.is_empty() {
            return (tags, rest.to_owned());
        }
        rest = after;
    }
}

/// A corpus file: its items, and whether it runs inside a chroot of test users (`@chroot`).
struct Corpus {
    items: Vec<Item>,
    chroot: bool,
    /// Runs inside the QEMU VM (`@vm`): commands that act on the machine are safe there.
    vm: bool,
}

fn load_corpus(path: &Path) -> Corpus {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut items = Vec::new();
    let mut batch: Option<(String, Vec<Line>)> = None;
    let mut chroot = false;
    let mut vm = false;
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        let trimmed = raw.trim_end();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "@chroot" {
            chroot = true;
            continue;
        }
        if trimmed == "@vm" {
            vm = true;
            continue;
        }
        if trimmed == "@batch" {
            batch = Some((at, Vec::new()));
            continue;
        }
        if trimmed == "@end" {
            let (bat, lines) = batch.take().expect("@end without @batch");
            items.push(Item::Batch(bat, lines));
            continue;
        }
        let (tags, text) = parse_tags(trimmed);
        let line = Line { at, tags, text };
        match batch.as_mut() {
            Some((_, lines)) => lines.push(line),
            None => items.push(Item::One(line)),
        }
    }
    assert!(batch.is_none(), "{name}: @batch without @end");
    Corpus { items, chroot, vm }
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && i + 3 < b.len()
            && b[i + 2..i + 4]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
        {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Per-agent values substituted into requests.
#[derive(Debug, Default)]
struct State {
    tmp: String,
    mnt: String,
    pid: Option<i64>,
}

impl State {
    fn expand(&self, line: &Line) -> Vec<u8> {
        let mut t = line
            .text
            .replace("$TMP", &self.tmp)
            .replace("$MNT", &self.mnt);
        if let Some(pid) = self.pid {
            t = t.replace("$PID", &pid.to_string());
        }
        if let Some(n) = line.tags.nest {
            t = t.replace("NEST", &format!("{}1{}", "[".repeat(n), "]".repeat(n)));
        }
        let mut bytes = if let Some(n) = line.tags.big {
            let (a, b) = t.split_once("BIG").expect("@big needs BIG");
            let mut v = a.as_bytes().to_vec();
            v.extend(std::iter::repeat_n(b'A', n));
            v.extend_from_slice(b.as_bytes());
            v
        } else {
            unescape(&t)
        };
        if !line.tags.raw {
            bytes.push(b'\n');
        }
        bytes
    }
}

/// Refuse any request that could act on this machine. Inside the test chroot the ssh-key
/// commands may run: they act on its test users only.
fn guard(line: &Line, bytes: &[u8], mnt: &str, chroot: bool) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return; // not JSON at all: cannot run a command
    };
    let Some(cmd) = v.get("execute").and_then(Value::as_str) else {
        return;
    };
    assert!(
        cmd != "guest-fsfreeze-freeze",
        "{}: never freeze everything here",
        line.at
    );
    if cmd == "guest-fsfreeze-freeze-list"
        && let Some(list) = v["arguments"]["mountpoints"].as_array()
    {
        let safe = !list.is_empty()
            && list.iter().all(|m| {
                m.as_str()
                    .is_some_and(|m| (!mnt.is_empty() && m == mnt) || m.starts_with("/nonexistent"))
            });
        assert!(
            safe || line.tags.invalid,
            "{}: freeze only the test image",
            line.at
        );
        return;
    }
    let chrooted = chroot && cmd.starts_with("guest-ssh-");
    assert!(
        !ACTING.contains(&cmd) || line.tags.invalid || chrooted,
        "{}: {cmd} would act on this machine; only refused arguments may be sent (?invalid)",
        line.at
    );
}

#[derive(Clone, Debug, PartialEq)]
struct Reply {
    delimited: bool,
    json: Value,
}

struct Agent {
    name: &'static str,
    child: Option<Child>,
    /// The VM's QMP socket, when the agent runs in the VM.
    qmp: Option<PathBuf>,
    conn: UnixStream,
    pending: Vec<u8>,
    next_marker: i64,
    state: State,
    /// The corpus line being run, for messages.
    current: String,
    /// The root the agent runs in, when chrooted.
    chroot: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for_socket(sock: &Path, child: &mut Child) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = UnixStream::connect(sock) {
            return s;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("agent exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "agent never listened on {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Agent {
    fn start(name: &'static str, mnt: &str, chroot: Option<PathBuf>) -> Agent {
        let dir = support::short_tmpdir();
        let scratch = dir.path().join("tmp");
        std::fs::create_dir_all(&scratch).unwrap();
        // Paths as the agent sees them, and the socket as the host sees it.
        let (sock_in, state_in, sock) = match &chroot {
            Some(root) => (
                PathBuf::from("/run/a.sock"),
                PathBuf::from("/run/state"),
                root.join("run/a.sock"),
            ),
            None => (
                dir.path().join("a.sock"),
                dir.path().join("state"),
                dir.path().join("a.sock"),
            ),
        };
        let host_state = match &chroot {
            Some(root) => root.join("run/state"),
            None => state_in.clone(),
        };
        std::fs::create_dir_all(&host_state).unwrap();
        let program: PathBuf = if name == "qemu-ga" {
            PathBuf::from("/usr/sbin/qemu-ga")
        } else if chroot.is_some() {
            PathBuf::from("/bin/guestd")
        } else {
            support::guestd_bin()
        };
        let mut cmd = match &chroot {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        if name == "qemu-ga" {
            cmd.arg("-m")
                .arg("unix-listen")
                .arg("-p")
                .arg(&sock_in)
                .arg("-t")
                .arg(&state_in);
        } else {
            cmd.arg("run")
                .arg("--channel")
                .arg(format!("qga=unix-listen:{}", sock_in.display()))
                .arg("--statedir")
                .arg(&state_in)
                .env("GUESTD_LOG", "warn");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let conn = wait_for_socket(&sock, &mut child);
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Agent {
            name,
            child: Some(child),
            qmp: None,
            conn,
            pending: Vec::new(),
            next_marker: 7_000_000_000,
            current: String::new(),
            chroot,
            state: State {
                tmp: scratch.display().to_string(),
                mnt: mnt.to_owned(),
                pid: None,
            },
            _dir: dir,
        }
    }

    fn write(&mut self, bytes: &[u8], split: Option<usize>) {
        match split {
            Some(n) => {
                for piece in bytes.chunks(n.max(1)) {
                    self.conn.write_all(piece).unwrap();
                    self.conn.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            None => self.conn.write_all(bytes).unwrap(),
        }
    }

    /// The next line, or `None` when the read timeout passes first.
    fn try_read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                return Some(line[..line.len() - 1].to_vec());
            }
            let mut buf = [0u8; 65536];
            match self.conn.read(&mut buf) {
                Ok(0) => panic!("{}: connection closed", self.name),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    fn read_line(&mut self) -> Vec<u8> {
        let mut scanned = 0;
        loop {
            if let Some(nl) = self.pending[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=scanned + nl).collect();
                return line[..line.len() - 1].to_vec();
            }
            scanned = self.pending.len();
            let mut buf = vec![0u8; 1 << 20];
            let n = self.conn.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "{} at {}: reading a reply: {e}; have {:?}",
                    self.name,
                    self.current,
                    String::from_utf8_lossy(&self.pending)
                )
            });
            assert!(
                n > 0,
                "{} at {}: connection closed",
                self.name,
                self.current
            );
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Send `bytes`, then a marker, and return every reply before the marker's.
    fn exchange(&mut self, bytes: &[u8], split: Option<usize>) -> Vec<Reply> {
        self.exchange_then(bytes, split, false)
    }

    /// [`Agent::exchange`]; with `wake`, the request suspends the VM: wait, wake it through
    /// QMP, and only then send the marker (a successful suspend has no reply).
    fn exchange_then(&mut self, bytes: &[u8], split: Option<usize>, wake: bool) -> Vec<Reply> {
        self.write(bytes, split);
        if wake {
            let qmp = self.qmp.clone().expect("@suspend runs in the VM");
            qmp_wakeup(&qmp);
            self.conn
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
        let marker = self.next_marker;
        self.next_marker += 1;
        self.write(
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{marker}}}}}\n")
                .as_bytes(),
            None,
        );
        let mut replies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let line = if wake {
                // A slow guest may reach its suspend only now: wake it whenever it sleeps.
                match self.try_read_line() {
                    Some(l) => l,
                    None if Instant::now() < deadline => {
                        if let Some(qmp) = self.qmp.clone() {
                            qmp_wakeup_if_suspended(&qmp);
                        }
                        continue;
                    }
                    None => panic!(
                        "{} at {}: no answer after the wake-up",
                        self.name, self.current
                    ),
                }
            } else {
                self.read_line()
            };
            let (delimited, body) = match line.first() {
                Some(0xFF) => (true, &line[1..]),
                _ => (false, &line[..]),
            };
            let json = serde_json::from_slice(body).unwrap_or_else(|_| {
                Value::String(format!("UNPARSEABLE {}", String::from_utf8_lossy(body)))
            });
            if !delimited && json == serde_json::json!({ "return": marker }) {
                if wake {
                    self.conn
                        .set_read_timeout(Some(Duration::from_secs(180)))
                        .unwrap();
                }
                return replies;
            }
            replies.push(Reply { delimited, json });
        }
    }

    fn run(&mut self, item: &Item) -> Vec<Reply> {
        self.current = match item {
            Item::One(l) => l.at.clone(),
            Item::Batch(at, _) => at.clone(),
        };
        match item {
            Item::Batch(_, lines) => {
                let bytes: Vec<u8> = lines.iter().flat_map(|l| self.state.expand(l)).collect();
                for l in lines {
                    guard(
                        l,
                        &self.state.expand(l),
                        &self.state.mnt,
                        self.chroot.is_some(),
                    );
                }
                self.exchange(&bytes, None)
            }
            Item::One(line) => {
                let bytes = self.state.expand(line);
                if self.qmp.is_none() {
                    guard(line, &bytes, &self.state.mnt, self.chroot.is_some());
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let replies = self.exchange_then(&bytes, line.tags.split, line.tags.suspend);
                    if let Some(pid) = replies
                        .first()
                        .and_then(|r| r.json["return"]["pid"].as_i64())
                    {
                        self.state.pid = Some(pid);
                    }
                    let running = replies
                        .first()
                        .is_some_and(|r| r.json["return"]["exited"] == false);
                    if line.tags.exit && running && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    return replies;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

fn map_strings(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| map_strings(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| map_strings(x, f)),
        _ => {}
    }
}

fn zero_numbers(v: &mut Value) {
    match v {
        Value::Number(_) => *v = Value::from(0),
        Value::Array(a) => a.iter_mut().for_each(zero_numbers),
        Value::Object(o) => o.values_mut().for_each(zero_numbers),
        _ => {}
    }
}

fn sort_lists(v: &mut Value) {
    match v {
        Value::Array(a) => {
            a.iter_mut().for_each(sort_lists);
            a.sort_by_key(|x| x.to_string());
        }
        Value::Object(o) => o.values_mut().for_each(sort_lists),
        _ => {}
    }
}

/// Keys guestd adds to qemu-ga 7.2's shapes, each a row of docs/qga-differences.md.
fn drop_newer_keys(v: &mut Value) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(drop_newer_keys),
        Value::Object(o) => {
            o.remove("total-bytes-privileged");
            o.remove("serial");
            o.values_mut().for_each(drop_newer_keys);
        }
        _ => {}
    }
}

fn normalise(r: &Reply, tags: &Tags, tmp: &str) -> Reply {
    let mut json = r.json.clone();
    if !tmp.is_empty() {
        map_strings(&mut json, &|s| s.replace(tmp, "$TMP"));
    }
    if tags.ok
        && let Some(o) = json.as_object_mut()
        && o.contains_key("return")
    {
        o.insert("return".into(), Value::Null);
    }
    if tags.info
        && let Some(ret) = json.get_mut("return")
    {
        let cmds: BTreeMap<String, Value> = ret["supported_commands"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| {
                        c["name"]
                            .as_str()
                            .is_some_and(|n| !NEWER_COMMANDS.contains(&n))
                    })
                    .map(|c| (c["name"].as_str().unwrap_or("").to_owned(), c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        *ret = serde_json::to_value(cmds).unwrap();
    }
    if tags.num {
        drop_newer_keys(&mut json);
        zero_numbers(&mut json);
    }
    if tags.num || tags.sort {
        sort_lists(&mut json);
    }
    Reply {
        delimited: r.delimited,
        json,
    }
}

fn show(replies: &[Reply]) -> String {
    replies
        .iter()
        .map(|r| {
            let s = r.json.to_string();
            let s = if s.len() > 600 {
                format!("{}...", &s[..600])
            } else {
                s
            };
            format!("{}{s}", if r.delimited { "<FF>" } else { "" })
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Compare one item's replies; returns a description of the difference.
fn compare(item: &Item, q: &[Reply], g: &[Reply], qtmp: &str, gtmp: &str) -> Option<String> {
    let (at, tags) = match item {
        Item::One(l) => (l.at.clone(), l.tags.clone()),
        Item::Batch(at, _) => (at.clone(), Tags::default()),
    };
    if let Some(id) = &tags.newer {
        let ok = q.len() == 1
            && q[0].json.get("error").is_some()
            && g.len() == 1
            && g[0].json.get("return").is_some();
        return (!ok).then(|| {
            format!(
                "{at}: expected the documented difference '{id}' (qemu-ga error, guestd success)\n  qemu-ga: {}\n  guestd:  {}",
                show(q),
                show(g)
            )
        });
    }
    if let Some(id) = &tags.known {
        // The schema guestd implements words this error differently (the row `id`).
        let ok = q.len() == 1
            && g.len() == 1
            && q[0].json["error"]["class"].is_string()
            && q[0].json["error"]["class"] == g[0].json["error"]["class"];
        return (!ok).then(|| {
            format!(
                "{at}: expected errors of the same class ('{id}')\n  qemu-ga: {}\n  guestd:  {}",
                show(q),
                show(g)
            )
        });
    }
    if tags.cascade {
        let ok = !q.is_empty() && g.len() == 1 && q[0] == g[0];
        return (!ok).then(|| {
            format!(
                "{at}: expected one error equal to qemu-ga's first\n  qemu-ga: {} replies, first {}\n  guestd:  {}",
                q.len(),
                q.first().map(|r| r.json.to_string()).unwrap_or_default(),
                show(g)
            )
        });
    }
    let qn: Vec<Reply> = q.iter().map(|r| normalise(r, &tags, qtmp)).collect();
    let gn: Vec<Reply> = g.iter().map(|r| normalise(r, &tags, gtmp)).collect();
    (qn != gn).then(|| {
        format!(
            "{at}: replies differ\n  qemu-ga: {}\n  guestd:  {}",
            show(&qn),
            show(&gn)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The loop-mounted image for freeze tests
// ---------------------------------------------------------------------------------------------

struct LoopMount {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopMount {
    fn new() -> Option<LoopMount> {
        let root = nix_is_root();
        if !support::require_peer(
            root && support::have_command("mkfs.ext4") && support::have_command("mount"),
            "root with mkfs.ext4 and mount (loop-mounted ext4 image for freeze tests)",
        ) {
            return None;
        }
        let dir = support::short_tmpdir();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .unwrap()
            .success()
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt)
                .status()
                .unwrap()
                .success();
        support::require_peer(ok, "a loop mount (mount -o loop)")
            .then_some(LoopMount { mnt, _dir: dir })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // Whatever happened, never leave the image frozen or mounted.
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// A chroot with test users, for the commands that act on users
// ---------------------------------------------------------------------------------------------

/// Test users: name, uid, home, and what their home holds at the start.
const USERS: [(&str, u32, &str); 4] = [
    ("alice", 1001, "home, no .ssh"),
    (
        "bob",
        1002,
        "authorized_keys with a comment, a blank line and two keys",
    ),
    ("carol", 1003, "no home directory"),
    ("dave", 1004, ".ssh without authorized_keys"),
];

const BOB_KEYS: &str = "# bob's keys\n\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABBob1 bob@h\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob2 bob@h\n";

/// Copy `bin` and the libraries `ldd` names into `root`, at the same paths.
fn copy_with_libs(root: &Path, bin: &Path, dest: &Path) {
    let copy = |from: &Path, to: &Path| {
        let to = root.join(to.strip_prefix("/").unwrap_or(to));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(bin, dest);
    let out = Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy(Path::new(p), Path::new(p));
        }
    }
}

/// A fresh root with both agents and the test users.
fn make_chroot() -> tempfile::TempDir {
    use std::os::unix::fs::{PermissionsExt, chown};
    let dir = support::short_tmpdir();
    let root = dir.path();
    for d in ["etc", "run", "tmp", "home", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    copy_with_libs(
        root,
        Path::new("/usr/sbin/qemu-ga"),
        Path::new("/usr/sbin/qemu-ga"),
    );
    copy_with_libs(root, &support::guestd_bin(), Path::new("/bin/guestd"));
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for (name, uid, _) in USERS {
        passwd.push_str(&format!("{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n"));
        group.push_str(&format!("{name}:x:{uid}:\n"));
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\n",
    )
    .unwrap();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for (name, uid, _) in USERS {
        if name == "carol" {
            continue;
        }
        let home = root.join("home").join(name);
        std::fs::create_dir_all(&home).unwrap();
        chown(&home, Some(uid), Some(uid)).unwrap();
        mode(&home, 0o755);
        if name == "bob" || name == "dave" {
            let ssh = home.join(".ssh");
            std::fs::create_dir_all(&ssh).unwrap();
            chown(&ssh, Some(uid), Some(uid)).unwrap();
            mode(&ssh, 0o700);
            if name == "bob" {
                let keys = ssh.join("authorized_keys");
                std::fs::write(&keys, BOB_KEYS).unwrap();
                chown(&keys, Some(uid), Some(uid)).unwrap();
                mode(&keys, 0o600);
            }
        }
    }
    dir
}

/// Owner, group, mode and content of every user's `~/.ssh` and `authorized_keys`.
fn ssh_files(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for (name, _, _) in USERS {
        for rel in [".ssh", ".ssh/authorized_keys"] {
            let p = root.join("home").join(name).join(rel);
            match std::fs::symlink_metadata(&p) {
                Ok(m) => {
                    // The keys, as sshd reads them: blank lines and line order aside.
                    let content = if m.is_file() {
                        let text = std::fs::read_to_string(&p).unwrap_or_default();
                        let mut keys: Vec<&str> =
                            text.lines().filter(|l| !l.trim().is_empty()).collect();
                        keys.sort_unstable();
                        keys.join("\n")
                    } else {
                        String::new()
                    };
                    out.push(format!(
                        "~{name}/{rel}: uid {} gid {} mode {:o} {content:?}",
                        m.uid(),
                        m.gid(),
                        m.mode() & 0o7777
                    ));
                }
                Err(_) => out.push(format!("~{name}/{rel}: absent")),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The QEMU VM, for the commands that act on the whole machine
// ---------------------------------------------------------------------------------------------

/// A QMP connection to the VM.
struct Qmp {
    s: UnixStream,
    pending: Vec<u8>,
}

impl Qmp {
    fn connect(sock: &Path) -> Qmp {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut q = Qmp {
            s,
            pending: Vec::new(),
        };
        assert!(q.line().get("QMP").is_some(), "no QMP greeting");
        q.cmd("qmp_capabilities");
        q
    }

    fn line(&mut self) -> Value {
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.pending.drain(..=nl).collect();
                return serde_json::from_slice(&l).unwrap_or(Value::Null);
            }
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf).unwrap();
            assert!(n > 0, "QMP closed");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Run a command; its `return` (events before it are skipped).
    fn cmd(&mut self, name: &str) -> Value {
        self.s
            .write_all(format!("{{\"execute\":\"{name}\"}}\n").as_bytes())
            .unwrap();
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
        }
    }

    fn suspended(&mut self) -> bool {
        self.cmd("query-status")["status"] == "suspended"
    }
}

/// Wait (up to a minute) for the guest to suspend, then wake it.
fn qmp_wakeup(sock: &Path) {
    let mut q = Qmp::connect(sock);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !q.suspended() {
        if Instant::now() > deadline {
            return; // it never suspended: the agent's answer says why
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    q.cmd("system_wakeup");
}

/// Wake the guest if it is suspended now.
fn qmp_wakeup_if_suspended(sock: &Path) {
    let mut q = Qmp::connect(sock);
    if q.suspended() {
        q.cmd("system_wakeup");
    }
}

/// A booted VM with one agent on `org.qemu.guest_agent.0` and an ext4 disk on /mnt/data.
struct Vm {
    pid: i32,
    sock: PathBuf,
    qmp: PathBuf,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
        }
    }
}

impl Vm {
    fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    fn boot(name: &str) -> Vm {
        let vm_dir = support::peers_dir().join("vm");
        let dir = support::short_tmpdir();
        let d = dir.path();
        let img = d.join("data.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        assert!(
            Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&img)
                .status()
                .unwrap()
                .success()
        );
        let (bin, start) = if name == "qemu-ga" {
            (
                PathBuf::from("/usr/sbin/qemu-ga"),
                "exec qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/st",
            )
        } else {
            // A stripped copy keeps the initramfs small enough to unpack.
            let copy = d.join("guestd");
            let stripped = Command::new("strip")
                .arg("-o")
                .arg(&copy)
                .arg(support::guestd_bin())
                .status()
                .is_ok_and(|s| s.success());
            if !stripped {
                std::fs::copy(support::guestd_bin(), &copy).unwrap();
            }
            (copy, "exec guestd run --channel qga --statedir /run/st")
        };
        let initrd = d.join("g.cpio.gz");
        let out = Command::new(vm_dir.join("initrd.sh"))
            .arg(&initrd)
            .arg("--bin")
            .arg(&bin)
            .arg("--fake-os-release")
            .args(["--hostname", "vm1.example.com"])
            .arg("--init-cmd")
            .arg(format!(
                "mkdir -p /mnt/data /run/st && mount /dev/vda /mnt/data && {start}"
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initrd.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sock = d.join("qga.sock");
        let qmp = d.join("qmp.sock");
        let console = d.join("console.log");
        let out = Command::new(vm_dir.join("boot.sh"))
            .arg("--initrd")
            .arg(&initrd)
            .args(["--mem", "512"])
            .arg("--qmp")
            .arg(&qmp)
            .arg("--port")
            .arg(format!("org.qemu.guest_agent.0={}", sock.display()))
            .arg("--disk")
            .arg(&img)
            .arg("--console")
            .arg(&console)
            .args(["--wait-for", "guestd-peers: ready", "--timeout", "180"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boot.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Vm {
            pid,
            sock,
            qmp,
            console,
            _dir: dir,
        }
    }
}

impl Agent {
    /// The agent in the VM, once it answers a `guest-sync-delimited`.
    fn attach(name: &'static str, vm: &Vm) -> Agent {
        let conn = UnixStream::connect(&vm.sock).unwrap();
        let mut agent = Agent {
            name,
            child: None,
            qmp: Some(vm.qmp.clone()),
            conn,
            pending: Vec::new(),
            next_marker: 9_000_000_000,
            current: "sync".into(),
            chroot: None,
            state: State::default(),
            _dir: support::short_tmpdir(),
        };
        // The port may not be open in the guest yet: what is written before is lost, so
        // sync with 0xFF + guest-sync-delimited until an answer comes.
        agent
            .conn
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        'sync: loop {
            assert!(Instant::now() < deadline, "{name} in the VM never answered");
            let id = agent.next_marker;
            agent.next_marker += 1;
            let req =
                format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n");
            let mut bytes = vec![0xFFu8];
            bytes.extend_from_slice(req.as_bytes());
            agent.write(&bytes, None);
            while let Some(line) = agent.try_read_line() {
                let body = line.strip_prefix(&[0xFF]).unwrap_or(&line);
                if serde_json::from_slice::<Value>(body).ok()
                    == Some(serde_json::json!({ "return": id }))
                {
                    break 'sync;
                }
            }
        }
        // A hibernation attempt freezes the guest and snapshots its memory before it fails
        // for want of swap: slow under TCG.
        agent
            .conn
            .set_read_timeout(Some(Duration::from_secs(180)))
            .unwrap();
        agent
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qga-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qga"))
        .collect();
    files.sort();
    files
}

fn count_requests(items: &[Item]) -> usize {
    items
        .iter()
        .map(|i| match i {
            Item::One(_) => 1,
            Item::Batch(_, l) => l.len(),
        })
        .sum()
}

#[test]
fn corpus_is_large_and_documented() {
    let files = corpus_files();
    let items: Vec<Item> = files.iter().flat_map(|f| load_corpus(f).items).collect();
    let n = count_requests(&items);
    assert!(n >= 200, "corpus has only {n} requests");
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/qga-differences.md"),
    )
    .unwrap();
    for item in &items {
        if let Item::One(l) = item
            && let Some(id) = l.tags.newer.as_ref().or(l.tags.known.as_ref())
        {
            assert!(
                doc.contains(&format!("`{id}`")),
                "{}: difference '{id}' is not in docs/qga-differences.md",
                l.at
            );
        }
    }
}

#[test]
fn same_answers_as_qemu_ga() {
    if !support::require_peer(
        support::have_command("qemu-ga"),
        "qemu-ga (qemu-guest-agent)",
    ) {
        return;
    }
    let mount = LoopMount::new();
    let mnt = mount
        .as_ref()
        .map(|m| m.mnt.display().to_string())
        .unwrap_or_default();
    let mut diffs = Vec::new();
    let mut total = 0;
    for file in corpus_files() {
        let Corpus { items, chroot, vm } = load_corpus(&file);
        if vm {
            continue; // acting_commands_same_as_qemu_ga_in_the_vm
        }
        let needs_mount = std::fs::read_to_string(&file).unwrap().contains("$MNT");
        if needs_mount && mount.is_none() {
            eprintln!("*** SKIPPED {} (no loop mount)", file.display());
            continue;
        }
        if chroot
            && !support::require_peer(
                nix_is_root() && support::have_command("chroot") && support::have_command("ldd"),
                "root with chroot and ldd (test users for guest-ssh-*)",
            )
        {
            continue;
        }
        total += count_requests(&items);
        // qemu-ga first, to the end of the file, then guestd: each gets a fresh state
        // directory (and a fresh chroot) and the same requests.
        let mut runs = Vec::new();
        let mut files_after = Vec::new();
        for name in ["qemu-ga", "guestd"] {
            let root = chroot.then(make_chroot);
            let started = Instant::now();
            let mut agent = Agent::start(name, &mnt, root.as_ref().map(|r| r.path().to_owned()));
            let replies: Vec<Vec<Reply>> = items.iter().map(|i| agent.run(i)).collect();
            runs.push((replies, agent.state.tmp.clone()));
            drop(agent);
            if let Some(r) = &root {
                files_after.push(ssh_files(r.path()));
            }
            eprintln!(
                "{}: {name} answered in {:?}",
                file.display(),
                started.elapsed()
            );
        }
        let (q, qtmp) = &runs[0];
        let (g, gtmp) = &runs[1];
        for (i, item) in items.iter().enumerate() {
            if let Some(d) = compare(item, &q[i], &g[i], qtmp, gtmp) {
                diffs.push(d);
            }
        }
        if let [qf, gf] = files_after.as_slice() {
            for (a, b) in qf.iter().zip(gf) {
                if a != b {
                    diffs.push(format!(
                        "{}: files differ afterwards\n  qemu-ga: {a}\n  guestd:  {b}",
                        file.display()
                    ));
                }
            }
        }
    }
    eprintln!("compared {total} requests");
    assert!(
        diffs.is_empty(),
        "{} differences from qemu-ga:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn acting_commands_same_as_qemu_ga_in_the_vm() {
    let vm_dir = support::peers_dir().join("vm");
    if !support::require_peer(
        support::have_command("qemu-system-x86_64")
            && support::have_command("qemu-ga")
            && support::have_command("mkfs.ext4")
            && vm_dir.join("boot.sh").exists(),
        "QEMU, qemu-ga and the VM kit (../shared/peers/vm)",
    ) {
        return;
    }
    let mut diffs = Vec::new();
    for file in corpus_files() {
        let Corpus { items, vm, .. } = load_corpus(&file);
        if !vm {
            continue;
        }
        let mut runs = Vec::new();
        let mut shutdowns = Vec::new();
        for name in ["qemu-ga", "guestd"] {
            let started = Instant::now();
            let machine = Vm::boot(name);
            let mut agent = Agent::attach(name, &machine);
            let replies: Vec<Vec<Reply>> = items.iter().map(|i| agent.run(i)).collect();
            // Last, guest-shutdown: no reply, and QEMU exits.
            agent.current = "guest-shutdown".into();
            agent.write(b"{\"execute\":\"guest-shutdown\"}\n", None);
            agent
                .conn
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut rest = Vec::new();
            let _ = agent.conn.read_to_end(&mut rest);
            agent.pending.extend_from_slice(&rest);
            let deadline = Instant::now() + Duration::from_secs(60);
            while machine.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let console = std::fs::read_to_string(&machine.console).unwrap_or_default();
            let line = console
                .lines()
                .find(|l| l.contains("guestd-peers: shutdown"))
                .unwrap_or("(no shutdown line)")
                .to_owned();
            shutdowns.push((
                String::from_utf8_lossy(&agent.pending).into_owned(),
                machine.running(),
                line,
            ));
            runs.push(replies);
            eprintln!(
                "{}: {name} in the VM took {:?}",
                file.display(),
                started.elapsed()
            );
        }
        for (i, item) in items.iter().enumerate() {
            if let Some(d) = compare(item, &runs[0][i], &runs[1][i], "", "") {
                diffs.push(d);
            }
        }
        for (name, (unread, running, line)) in ["qemu-ga", "guestd"].iter().zip(&shutdowns) {
            if !unread.is_empty() || *running {
                diffs.push(format!(
                    "{name}: guest-shutdown answered {unread:?} or QEMU kept running ({running})"
                ));
            }
            if *line != shutdowns[0].2 {
                diffs.push(format!(
                    "{name}: shutdown ran as {line:?}, qemu-ga as {:?}",
                    shutdowns[0].2
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences from qemu-ga in the VM:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
