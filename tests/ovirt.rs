//! oVirt guest agent protocol: `guestd run --channel ovirt=...` against a host written from
//! the protocol note (VDSM's side), over unix sockets and in the QEMU VM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "ovirt/checker.rs"]
mod checker;
#[path = "ovirt/host.rs"]
mod host;
#[path = "ovirt/props.rs"]
mod props;
#[path = "ovirt/vm.rs"]
mod vm;

use std::time::Duration;

use host::{AgentProcess, FAST, Host, REFRESH, REFRESH_UNVERSIONED, name_list, names};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn has(msgs: &[Value], name: &str) -> bool {
    msgs.iter().any(|m| m["__name__"] == name)
}

fn count(msgs: &[Value], name: &str) -> usize {
    msgs.iter().filter(|m| m["__name__"] == name).count()
}

/// An agent starts while VDSM is connected and still holds version 3 (note §4.2, first
/// sequence): start batch with nothing gated, heartbeat 0 (VDSM 3 → 0, silent), heartbeat 3
/// (VDSM 0 → 3, `api-version 3`), then the refresh batch with the v2/v3 items.
#[test]
fn agent_start_while_host_holds_3() {
    let mut agent = AgentProcess::start(false, FAST);
    let mut host = Host::new(agent.connect(), Some(3), 0);
    let first = host.until("heartbeat", T);
    assert_eq!(
        name_list(&first),
        ["session-startup", "heartbeat"],
        "heartbeat at once"
    );
    assert_eq!(first[1]["apiVersion"], 0);
    assert_eq!(host.vdsm, Some(0), "VDSM 3 -> 0");
    assert!(host.api_versions_sent.is_empty(), "nothing sent for 0");
    // The start batch (nothing gated at 0), then the second heartbeat carrying 3.
    let start = host
        .until_match(|m| m["__name__"] == "heartbeat", T)
        .unwrap();
    assert_eq!(start.last().unwrap()["apiVersion"], 3);
    for gated in ["containers", "timezone", "os-info", "number-of-cpus"] {
        assert!(
            !has(&start, gated),
            "{gated} before negotiation: {}",
            names(&start)
        );
    }
    for must in ["active-user", "applications"] {
        assert!(has(&start, must), "{must} missing: {}", names(&start));
    }
    assert_eq!(
        host.api_versions_sent,
        vec![3],
        "VDSM 0 -> 3 sends api-version 3"
    );
    // The agent moves to 3 and sends the refresh batch including the v3 message.
    let batch = host.until("containers", T);
    assert!(has(&batch, "session-startup"), "{}", names(&batch));
    let tail = host.until("number-of-cpus", T);
    let all: Vec<Value> = batch.into_iter().chain(tail).collect();
    assert!(
        has(&all, "active-user") && has(&all, "applications"),
        "{}",
        names(&all)
    );
    // Steady state: heartbeats keep 3, VDSM sends nothing more.
    let later = host.read_for(Duration::from_millis(1500));
    assert!(count(&later, "heartbeat") >= 2, "{}", names(&later));
    assert!(
        later
            .iter()
            .filter(|m| m["__name__"] == "heartbeat")
            .all(|m| m["apiVersion"] == 3)
    );
    assert_eq!(host.api_versions_sent, vec![3]);
    assert!(
        !has(&later, "session-startup"),
        "no batch without a change: {}",
        names(&later)
    );
}

/// VDSM connects to a running agent and sends `refresh` (note §4.2, second sequence), then
/// leaves and comes back twice over a port-like channel (one agent session throughout): once
/// holding 3 (no `api-version` needed), once having lost its value (`api-version 3` sent,
/// the agent already at 3 sends no new batch).
#[test]
fn host_connects_to_running_agent_closes_and_reopens() {
    let mut agent = AgentProcess::start(true, FAST);
    // First host: a fresh VDSM (0), refresh on connect.
    let mut host = Host::new(agent.accept(), Some(0), 0);
    host.send(REFRESH);
    host.until("containers", T);
    assert_eq!(host.api_versions_sent, vec![3]);
    host.until("heartbeat", T);
    drop(host);

    // VDSM restarts, still holding 3 in the VM metadata.
    let mut host = Host::new(agent.accept(), Some(3), 3);
    host.send(REFRESH);
    let first = host.until("heartbeat", T);
    assert_eq!(
        first.last().unwrap()["apiVersion"],
        3,
        "agent stayed at 3: {}",
        names(&first)
    );
    let batch = host.until("containers", T);
    assert!(has(&batch, "session-startup"), "{}", names(&batch));
    host.until("number-of-cpus", T);
    host.read_for(Duration::from_millis(800));
    assert!(host.api_versions_sent.is_empty(), "no renegotiation needed");
    drop(host);

    // VDSM restarts having lost the value (0): the heartbeat's 3 makes it send api-version 3,
    // which changes nothing on the agent.
    let mut host = Host::new(agent.accept(), Some(0), 3);
    host.send(REFRESH);
    host.until("containers", T);
    let rest = host.read_for(Duration::from_millis(1200));
    assert_eq!(host.api_versions_sent, vec![3]);
    let after: Vec<&Value> = rest
        .iter()
        .skip_while(|m| m["__name__"] != "heartbeat")
        .collect();
    assert!(
        !after.iter().any(|m| m["__name__"] == "session-startup"),
        "unchanged version must not trigger a batch: {}",
        names(&rest)
    );
    let st = agent.terminate();
    assert!(st.success(), "{st}\n{}", agent.log());
}

/// `refresh` without `apiVersion` (a VDSM from before versioning) drops the agent to 0 and
/// re-arms the 0 → 3 heartbeat pair; `refresh` with it keeps the version.
#[test]
fn refresh_with_and_without_api_version() {
    let mut agent = AgentProcess::start(false, FAST);
    let mut host = Host::new(agent.connect(), Some(0), 0);
    host.send(REFRESH);
    host.until("containers", T);
    // Old VDSM: no apiVersion, no negotiation.
    host.vdsm = None;
    host.send(REFRESH_UNVERSIONED);
    host.until("session-startup", T);
    let batch = host.until("heartbeat", T);
    assert_eq!(
        batch.last().unwrap()["apiVersion"],
        0,
        "pair re-armed: {}",
        names(&batch)
    );
    for gated in ["containers", "timezone", "os-info", "number-of-cpus"] {
        assert!(
            !has(&batch, gated),
            "{gated} at version 0: {}",
            names(&batch)
        );
    }
    assert!(
        has(&batch, "active-user") && has(&batch, "applications"),
        "{}",
        names(&batch)
    );
    let next = host.until("heartbeat", T);
    assert_eq!(next.last().unwrap()["apiVersion"], 3);
    // A versioned VDSM again: it holds 0 and negotiates up.
    host.vdsm = Some(0);
    host.send(REFRESH);
    host.until("containers", T);
    assert_eq!(host.api_versions_sent, vec![3, 3], "negotiated up again");
    // refresh {3} at version 3: version kept, full batch with the gated items.
    host.send(REFRESH);
    let again = host.until("containers", T);
    assert!(has(&again, "session-startup"), "{}", names(&again));
    let hb = host.until("heartbeat", T);
    assert_eq!(hb.last().unwrap()["apiVersion"], 3);
}

/// Every command that is safe to run on this machine, plus bad input; the rest (lock-screen,
/// log-off, shutdown, hibernate) run in the VM only.
#[test]
fn commands_and_bad_input_over_unix_socket() {
    let mut agent = AgentProcess::start(false, FAST);
    let mut host = Host::new(agent.connect(), Some(0), 0);
    host.until("heartbeat", T);
    // At version 0: set-number-of-cpus has no reply (number-of-cpus is v1), echo does.
    host.send(r#"{"count": 2, "__name__": "set-number-of-cpus"}"#);
    host.send(r#"{"__name__": "echo", "text": "h\u00e9llo \u0007", "n": [1, null]}"#);
    let echo = host.until("echo", T);
    assert!(!has(&echo, "number-of-cpus"), "{}", names(&echo));
    assert_eq!(
        echo.last().unwrap(),
        &json!({"__name__": "echo", "text": "h\u{e9}llo \u{FFFD}", "n": [1, null]})
    );
    host.send(REFRESH);
    host.until("containers", T);
    assert_eq!(host.checker.version, 3);

    // Bad input of every kind, each skipped; the agent keeps serving.
    let mut junk = Vec::new();
    junk.extend_from_slice(b"\n");
    junk.extend_from_slice(b"\xEF\xBB\xBF{\"__name__\": \"echo\", \"bom\": 1}\n");
    junk.extend_from_slice(b"not json\n");
    junk.extend_from_slice(b"[1, 2]\n");
    junk.extend_from_slice(b"{\"no_name\": 1}\n");
    junk.extend_from_slice(b"\xff\xfe\xfd\n");
    junk.extend_from_slice(&vec![b'x'; 200 * 1024]);
    junk.extend_from_slice(b"\n");
    host.write_raw(&junk);
    host.send(r#"{"__name__": "frobnicate", "x": 1}"#);
    host.send(r#"{"username": "alice@example.org", "password": "s3cret-pw", "__name__": "login"}"#);
    host.send(r#"{"count": "4", "__name__": "set-number-of-cpus"}"#);
    let cpus = host.until("number-of-cpus", T);
    assert!(cpus.last().unwrap()["count"].as_i64().unwrap() != 0);
    host.send(r#"{"type": "before_migration", "reply_id": "6e0f3c52-98a1-4b7e-a2d4-0c5b9f1e7a31", "__name__": "lifecycle-event"}"#);
    host.send(r#"{"type": "after_migration", "failure": true, "__name__": "lifecycle-event"}"#);
    host.send(r#"{"type": "no_such_event", "reply_id": "r2", "__name__": "lifecycle-event"}"#);
    host.send(r#"{"__name__": "echo", "last": true}"#);
    let replies = host
        .until_match(|m| m["__name__"] == "echo" && m["last"] == true, T)
        .unwrap();
    let completions: Vec<&Value> = replies
        .iter()
        .filter(|m| m["__name__"] == "completion")
        .collect();
    assert_eq!(completions.len(), 2, "{}", names(&replies));
    assert_eq!(
        completions[0]["reply_id"],
        "6e0f3c52-98a1-4b7e-a2d4-0c5b9f1e7a31"
    );
    assert_eq!(completions[1]["reply_id"], "r2");
    assert!(host.checker.awaiting.is_empty());
    // The BOM-prefixed echo was accepted leniently; nothing else produced output.
    let echoes: Vec<&Value> = replies.iter().filter(|m| m["__name__"] == "echo").collect();
    assert_eq!(echoes.len(), 2, "{}", names(&replies));
    // Still alive and heartbeating.
    host.until("heartbeat", T);
    let log = agent.log();
    assert!(!log.contains("s3cret-pw"), "password in the log");
    assert!(log.contains("frobnicate"), "unknown command not logged");
    assert!(log.contains("no credentials plugin"), "login not explained");
}

/// SIGTERM: `session-shutdown` goes out before the agent exits.
#[test]
fn sigterm_sends_session_shutdown() {
    let mut agent = AgentProcess::start(false, FAST);
    let mut host = Host::new(agent.connect(), None, 0);
    host.until("heartbeat", T);
    let st = agent.terminate();
    assert!(st.success(), "{st}");
    let rest = host.read_for(Duration::from_secs(2));
    assert_eq!(
        rest.last().map(|m| m["__name__"].clone()),
        Some(json!("session-shutdown")),
        "{}",
        names(&rest)
    );
}

/// Two hosts on a listening socket each get their own session with a start batch.
#[test]
fn each_client_of_a_listening_socket_is_its_own_session() {
    let mut agent = AgentProcess::start(false, FAST);
    let mut a = Host::new(agent.connect(), None, 0);
    let mut b = Host::new(agent.connect(), None, 0);
    for h in [&mut a, &mut b] {
        let first = h.until("heartbeat", T);
        assert_eq!(name_list(&first), ["session-startup", "heartbeat"]);
    }
    drop(a);
    // b is unaffected.
    b.send(r#"{"__name__": "echo", "still": "here"}"#);
    b.until("echo", T);
}

fn hook(dir: &std::path::Path, event: &str, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join(event);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `lifecycle-event` runs `<hooks>/<type>/*` in name order within the deadline and always
/// answers `completion` when asked: after the hooks ran, when one failed, when one hung
/// past the deadline, and when the event has no hook directory at all.
#[test]
fn lifecycle_hooks_run_in_order_within_the_deadline() {
    let hooks = support::short_tmpdir();
    let out = hooks.path().join("out");
    let o = out.display();
    hook(
        hooks.path(),
        "before_migration",
        "20-b",
        &format!("echo b >> {o}"),
    );
    hook(
        hooks.path(),
        "before_migration",
        "10-a",
        &format!("echo a >> {o}"),
    );
    hook(hooks.path(), "before_migration", "30-fail", "exit 4");
    hook(hooks.path(), "before_hibernation", "10-hang", "sleep 60");
    hook(
        hooks.path(),
        "before_hibernation",
        "20-late",
        &format!("echo late >> {o}"),
    );
    hook(
        hooks.path(),
        "after_migration",
        "10-c",
        &format!("echo c >> {o}"),
    );
    let dir = hooks.path().display().to_string();
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--ovirt-hooks-dir", &dir, "--ovirt-hooks-deadline", "1.5"]);
    let mut agent = AgentProcess::start(false, &args);
    let mut host = Host::new(agent.connect(), Some(0), 0);
    host.send(REFRESH);
    host.until("containers", T);

    host.send(r#"{"type": "before_migration", "reply_id": "m1", "__name__": "lifecycle-event"}"#);
    let c = host.until("completion", T);
    assert_eq!(c.last().unwrap()["reply_id"], "m1");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");

    let t0 = std::time::Instant::now();
    host.send(r#"{"type": "before_hibernation", "reply_id": "h1", "__name__": "lifecycle-event"}"#);
    let c = host.until("completion", T);
    assert_eq!(c.last().unwrap()["reply_id"], "h1");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the host waits at most 10 s"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a\nb\n",
        "no hook past the deadline"
    );

    host.send(r#"{"type": "after_migration", "failure": true, "__name__": "lifecycle-event"}"#);
    host.send(
        r#"{"type": "after_hibernation", "reply_id": "none", "__name__": "lifecycle-event"}"#,
    );
    let c = host.until("completion", T);
    assert_eq!(c.last().unwrap()["reply_id"], "none");
    assert_eq!(count(&c, "completion"), 1, "{}", names(&c));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\nc\n");
    let log = agent.log();
    assert!(log.contains("hook failed"), "{log}");
}
