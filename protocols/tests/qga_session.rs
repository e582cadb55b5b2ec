//! QGA sessions end to end inside the process: golden bytes through the real runtime over an
//! in-memory pipe, and the framer's independence from how input is chunked.
//!
//! The facts and action handlers here are fixtures with fixed answers (the real ones are
//! tested in their crates and against qemu-ga in `tests/qga_compare.rs`); what is under test
//! is the protocol: framing, envelopes, errors, ordering, frozen state, command filters.

// Test helpers outside #[test] functions may panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use guestd_core::action::{
    Action, ActionError, ActionHandler, ActionKind, Dispatcher, FreezeStatus, Outcome, Policy,
};
use guestd_core::contract::{
    ByteStream, ByteTransport, FactError, Facts, Probe, StreamProtocol, TransportError,
};
use guestd_core::exec::ExecTable;
use guestd_core::files::FileHandles;
use guestd_core::model::*;
use guestd_core::runtime::{StreamOptions, serve_stream};
use guestd_core::sysfacts::*;
use guestd_core::{Agent, EventBus, Paths};
use guestd_protocols::qga::{CommandFilter, Framer, QgaConfig, QgaProtocol};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

#[derive(Debug)]
struct FixtureFacts;

const NO: &str = "this fixture";

#[async_trait]
impl Facts for FixtureFacts {
    async fn hostname(&self) -> Result<String, FactError> {
        Ok("vm1".into())
    }
    async fn fqdn(&self) -> Result<String, FactError> {
        Ok("vm1.example".into())
    }
    async fn os(&self) -> Result<OsInfo, FactError> {
        Ok(OsInfo {
            id: Some("debian".into()),
            name: Some("Debian GNU/Linux".into()),
            version_id: Some("12".into()),
            kernel_release: Some("6.1.0".into()),
            machine: Some("x86_64".into()),
            ..Default::default()
        })
    }
    async fn interfaces(&self) -> Result<Vec<Interface>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn applications(&self) -> Result<Vec<Application>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn memory(&self) -> Result<Memory, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn users(&self) -> Result<Vec<UserSession>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn filesystems(&self) -> Result<Vec<Filesystem>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn timezone(&self) -> Result<Timezone, FactError> {
        Ok(Timezone {
            abbreviation: Some("CET".into()),
            utc_offset: 3600,
            ..Default::default()
        })
    }
    async fn cpus(&self) -> Result<Cpus, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn load(&self) -> Result<Load, FactError> {
        Ok(Load {
            one: 0.5,
            five: 0.25,
            fifteen: 0.125,
        })
    }
    async fn uptime(&self) -> Result<Uptime, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn vcpus(&self) -> Result<Vec<Vcpu>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn memory_blocks(&self) -> Result<Vec<MemoryBlock>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn memory_block_size(&self) -> Result<u64, FactError> {
        Ok(134_217_728)
    }
    async fn block_devices(&self) -> Result<Vec<BlockDevice>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn disk_stats(&self) -> Result<Vec<DiskStats>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn cpu_stats(&self) -> Result<Vec<CpuStats>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn routes(&self) -> Result<Vec<Route>, FactError> {
        Err(FactError::Unsupported(NO))
    }
    async fn report(&self, _which: &[Fact]) -> Report {
        Report::default()
    }
}

/// Freeze state in memory, plus a power handler that records what it was asked.
#[derive(Debug, Default)]
struct FixtureActions {
    frozen: AtomicBool,
    power: Mutex<Vec<Action>>,
}

#[async_trait]
impl ActionHandler for FixtureActions {
    fn kinds(&self) -> &[ActionKind] {
        &[
            ActionKind::FsFreeze,
            ActionKind::FsThaw,
            ActionKind::FsFreezeStatus,
            ActionKind::Power,
        ]
    }
    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        match action {
            Action::FsFreeze { .. } => {
                if self.frozen.swap(true, Ordering::SeqCst) {
                    return Err(ActionError::Frozen);
                }
                Ok(Outcome::Count(2))
            }
            Action::FsThaw => Ok(Outcome::Count(
                if self.frozen.swap(false, Ordering::SeqCst) {
                    2
                } else {
                    0
                },
            )),
            Action::FsFreezeStatus => Ok(Outcome::FreezeStatus(
                if self.frozen.load(Ordering::SeqCst) {
                    FreezeStatus::Frozen
                } else {
                    FreezeStatus::Thawed
                },
            )),
            a @ Action::Power { .. } => {
                self.power.lock().unwrap().push(a);
                Ok(Outcome::Scheduled)
            }
            _ => Err(ActionError::Unsupported),
        }
    }
}

/// The frozen-state policy, as the real action layer registers it beside its handler.
#[derive(Debug)]
struct FixturePolicy(Arc<FixtureActions>);

impl Policy for FixturePolicy {
    fn check(&self, kind: ActionKind) -> Result<(), ActionError> {
        let allowed = matches!(kind, ActionKind::FsThaw | ActionKind::FsFreezeStatus);
        if self.0.frozen.load(Ordering::SeqCst) && !allowed {
            Err(ActionError::Frozen)
        } else {
            Ok(())
        }
    }
}

struct Fixture {
    agent: Agent,
    actions: Arc<FixtureActions>,
    protocol: QgaProtocol,
    _dir: tempfile::TempDir,
}

fn fixture(filter: CommandFilter, max_request: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let actions = Arc::new(FixtureActions::default());
    let mut d = Dispatcher::new();
    d.register(actions.clone());
    d.add_policy(Arc::new(FixturePolicy(actions.clone())));
    let agent = Agent {
        paths: Paths::under(dir.path()),
        facts: Arc::new(FixtureFacts),
        actions: Arc::new(d),
        events: EventBus::default(),
    };
    let protocol = QgaProtocol::new(
        QgaConfig {
            filter,
            max_request,
            ..QgaConfig::default()
        },
        Arc::new(FileHandles::new(dir.path())),
        Arc::new(ExecTable::new()),
    );
    Fixture {
        agent,
        actions,
        protocol,
        _dir: dir,
    }
}

/// A transport that hands out one in-memory stream, then waits forever.
#[derive(Debug)]
struct OneStream(Mutex<Option<DuplexStream>>);

#[async_trait]
impl ByteTransport for OneStream {
    fn describe(&self) -> String {
        "duplex".into()
    }
    async fn probe(&self) -> Probe {
        Probe::Present {
            at: "memory".into(),
        }
    }
    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        let s = self.0.lock().unwrap().take();
        match s {
            Some(s) => Ok(Box::new(s)),
            None => std::future::pending().await,
        }
    }
}

/// Serve a fixture through the real runtime; returns the host end.
fn serve(f: &Fixture) -> (DuplexStream, watch::Sender<bool>) {
    let (host, guest) = tokio::io::duplex(1 << 16);
    let (tx, rx) = watch::channel(false);
    let transport: Arc<dyn ByteTransport> = Arc::new(OneStream(Mutex::new(Some(guest))));
    let proto: Arc<dyn StreamProtocol> = Arc::new(f.protocol.clone());
    tokio::spawn(serve_stream(
        transport,
        proto,
        f.agent.clone(),
        rx,
        StreamOptions::default(),
    ));
    (host, tx)
}

async fn read_exact(host: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), host.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("read");
    got
}

async fn expect(host: &mut DuplexStream, want: &[u8]) {
    let got = read_exact(host, want.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    assert_eq!(got, want);
}

async fn nothing_pending(host: &mut DuplexStream) {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(200), host.read(&mut b)).await;
    assert!(r.is_err(), "unexpected bytes: {:?}", r);
}

#[tokio::test]
async fn stray_ff_then_sync_delimited() {
    let f = fixture(CommandFilter::All, 1 << 20);
    let (mut host, _stop) = serve(&f);
    host.write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":12345}}\n")
        .await
        .unwrap();
    expect(
        &mut host,
        b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"JSON parse error, stray '\\uFFFD'\"}}\n\xff{\"return\":12345}\n",
    )
    .await;
    // A half-sent request cut by 0xFF: exactly one error, then the next request runs.
    host.write_all(b"{\"execute\":\"guest-pi\xff{\"execute\":\"guest-ping\"}")
        .await
        .unwrap();
    expect(
        &mut host,
        b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"JSON parse error, stray '\\\"guest-pi\\uFFFD'\"}}\n{\"return\":{}}\n",
    )
    .await;
}

#[tokio::test]
async fn ids_pipelining_split_writes_and_envelopes() {
    let f = fixture(CommandFilter::All, 1 << 20);
    let (mut host, _stop) = serve(&f);
    let input: &[u8] = b"{'execute':'guest-ping','id':'a1'}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":-5},\"id\":{\"k\":[1,null]}}[1,2]\n{\"execute\":\"guest-nonexistent\",\"id\":7}{\"execute\":\"guest-get-host-name\",\"id\":\"\\u00e9\"}";
    for chunk in input.chunks(3) {
        host.write_all(chunk).await.unwrap();
        tokio::task::yield_now().await;
    }
    expect(
        &mut host,
        concat!(
            "{\"return\":{},\"id\":\"a1\"}\n",
            "{\"return\":-5,\"id\":{\"k\":[1,null]}}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"QMP input must be a JSON object\"}}\n",
            "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command guest-nonexistent has not been found\"},\"id\":7}\n",
            "{\"return\":{\"host-name\":\"vm1\"},\"id\":\"\\u00E9\"}\n",
        )
        .as_bytes(),
    )
    .await;
    host.write_all(b"{\"execute\":\"guest-sync\",\"id\":1}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"x\"}}{\"execute\":\"guest-ping\",\"arguments\":{\"a\":1}}")
        .await
        .unwrap();
    expect(
        &mut host,
        concat!(
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Parameter 'id' is missing\"},\"id\":1}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Invalid parameter type for 'id', expected: integer\"}}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Parameter 'a' is unexpected\"}}\n",
        )
        .as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn frozen_state_disables_all_but_the_allowlist() {
    let f = fixture(CommandFilter::All, 1 << 20);
    let mut s = f.protocol.session(f.agent.clone());
    let mut out = Vec::new();
    let mut input = BytesMut::from(
        &b"{\"execute\":\"guest-fsfreeze-freeze\"}{\"execute\":\"guest-get-osinfo\"}{\"execute\":\"guest-fsfreeze-freeze\"}{\"execute\":\"guest-fsfreeze-status\"}{\"execute\":\"guest-ping\"}{\"execute\":\"guest-info\"}"[..],
    );
    s.feed(&mut input, &mut out).await;
    let lines: Vec<serde_json::Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines[0]["return"], 2);
    assert_eq!(
        lines[1]["error"]["desc"],
        "Command guest-get-osinfo has been disabled: the agent is in frozen state"
    );
    assert_eq!(lines[1]["error"]["class"], "CommandNotFound");
    assert_eq!(
        lines[2]["error"]["desc"],
        "Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state"
    );
    assert_eq!(lines[3]["return"], "frozen");
    assert_eq!(lines[4]["return"], serde_json::json!({}));
    let cmds = lines[5]["return"]["supported_commands"].as_array().unwrap();
    let enabled: Vec<&str> = cmds
        .iter()
        .filter(|c| c["enabled"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        enabled,
        [
            "guest-sync-delimited",
            "guest-sync",
            "guest-ping",
            "guest-info",
            "guest-fsfreeze-status",
            "guest-fsfreeze-thaw"
        ]
    );
    out.clear();
    input.extend_from_slice(
        b"{\"execute\":\"guest-fsfreeze-thaw\"}{\"execute\":\"guest-get-osinfo\"}",
    );
    s.feed(&mut input, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("{\"return\":2}\n{\"return\":{"), "{text}");
    assert!(text.contains("\"id\":\"debian\""), "{text}");
}

#[tokio::test]
async fn shutdown_success_has_no_reply() {
    let f = fixture(CommandFilter::All, 1 << 20);
    let (mut host, _stop) = serve(&f);
    host.write_all(b"{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":\"reboot\"}}{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":\"off\"}}")
        .await
        .unwrap();
    expect(
        &mut host,
        b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"mode is invalid (valid values are: halt|powerdown|reboot\"}}\n",
    )
    .await;
    nothing_pending(&mut host).await;
    let power = f.actions.power.lock().unwrap().clone();
    assert_eq!(
        power,
        vec![Action::Power {
            mode: guestd_core::action::PowerMode::Reboot,
            delay: None,
            message: Some("hypervisor initiated shutdown".into()),
        }]
    );
}

#[tokio::test]
async fn block_and_allow_lists() {
    let f = fixture(
        CommandFilter::from_lists(Some(vec!["guest-ping".into(), "bogus".into()]), None).unwrap(),
        1 << 20,
    );
    let mut s = f.protocol.session(f.agent.clone());
    let mut out = Vec::new();
    let mut input = BytesMut::from(
        &b"{\"execute\":\"guest-ping\"}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}"[..],
    );
    s.feed(&mut input, &mut out).await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"Command guest-ping has been disabled\"}}\n{\"return\":1}\n"
    );

    let f = fixture(
        CommandFilter::from_lists(None, Some(vec!["guest-ping".into()])).unwrap(),
        1 << 20,
    );
    let mut s = f.protocol.session(f.agent.clone());
    let mut out = Vec::new();
    let mut input = BytesMut::from(
        &b"{\"execute\":\"guest-ping\"}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}"[..],
    );
    s.feed(&mut input, &mut out).await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"return\":{}}\n{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"Command guest-sync has been disabled: the command is not allowed\"}}\n"
    );
    assert!(CommandFilter::from_lists(Some(vec![]), Some(vec![])).is_err());
}

#[tokio::test]
async fn oversized_request_one_error_then_resync() {
    let f = fixture(CommandFilter::All, 4096);
    let (mut host, _stop) = serve(&f);
    let mut big =
        b"{\"execute\":\"guest-file-write\",\"arguments\":{\"handle\":1000,\"buf-b64\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'A', 100_000));
    big.extend_from_slice(b"\"}}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":9}}");
    host.write_all(&big).await.unwrap();
    expect(
        &mut host,
        b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"JSON token size limit exceeded\"}}\n{\"return\":9}\n",
    )
    .await;
}

#[tokio::test]
async fn file_round_trip() {
    let f = fixture(CommandFilter::All, 1 << 20);
    let path = f._dir.path().join("data.bin");
    let mut s = f.protocol.session(f.agent.clone());
    let req = format!(
        "{{\"execute\":\"guest-file-open\",\"arguments\":{{\"path\":\"{}\",\"mode\":\"w+\"}}}}\
         {{\"execute\":\"guest-file-write\",\"arguments\":{{\"handle\":1000,\"buf-b64\":\"aGVsbG8gd29ybGQ=\"}}}}\
         {{\"execute\":\"guest-file-seek\",\"arguments\":{{\"handle\":1000,\"offset\":6,\"whence\":\"set\"}}}}\
         {{\"execute\":\"guest-file-read\",\"arguments\":{{\"handle\":1000,\"count\":5}}}}\
         {{\"execute\":\"guest-file-read\",\"arguments\":{{\"handle\":1000}}}}\
         {{\"execute\":\"guest-file-seek\",\"arguments\":{{\"handle\":1000,\"offset\":0,\"whence\":7}}}}\
         {{\"execute\":\"guest-file-close\",\"arguments\":{{\"handle\":1000}}}}\
         {{\"execute\":\"guest-file-close\",\"arguments\":{{\"handle\":1000}}}}",
        path.display()
    );
    let mut input = BytesMut::from(req.as_bytes());
    let mut out = Vec::new();
    s.feed(&mut input, &mut out).await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "{\"return\":1000}\n",
            "{\"return\":{\"count\":11,\"eof\":false}}\n",
            "{\"return\":{\"eof\":false,\"position\":6}}\n",
            "{\"return\":{\"buf-b64\":\"d29ybGQ=\",\"count\":5,\"eof\":false}}\n",
            "{\"return\":{\"buf-b64\":\"\",\"count\":0,\"eof\":true}}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"invalid whence code 7\"}}\n",
            "{\"return\":{}}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"handle '1000' has not been found\"}}\n",
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
}

/// A write big enough for the request to be parsed in place and decoded in place: the file
/// gets exactly the bytes (cut at `count`), and the reply still carries the request's `id`.
#[tokio::test]
async fn large_write_in_one_request_keeps_its_bytes_and_id() {
    use base64::Engine;
    let f = fixture(CommandFilter::All, 4 << 20);
    let path = f._dir.path().join("big.bin");
    let mut s = f.protocol.session(f.agent.clone());
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 257) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let req = format!(
        "{{\"execute\":\"guest-file-open\",\"arguments\":{{\"path\":\"{}\",\"mode\":\"w\"}}}}\
         {{\"id\":\"w-1\",\"execute\":\"guest-file-write\",\"arguments\":{{\"handle\":1000,\"buf-b64\":\"{b64}\",\"count\":299999}}}}\
         {{\"execute\":\"guest-file-write\",\"arguments\":{{\"buf-b64\":\"{b64}\",\"handle\":1000}},\"id\":[2]}}\
         {{\"execute\":\"guest-file-close\",\"arguments\":{{\"handle\":1000}}}}",
        path.display()
    );
    let mut input = BytesMut::from(req.as_bytes());
    let mut out = Vec::new();
    s.feed(&mut input, &mut out).await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "{\"return\":1000}\n",
            "{\"return\":{\"count\":299999,\"eof\":false},\"id\":\"w-1\"}\n",
            "{\"return\":{\"count\":300000,\"eof\":false},\"id\":[2]}\n",
            "{\"return\":{}}\n",
        )
    );
    let mut want = data[..299_999].to_vec();
    want.extend_from_slice(&data);
    assert!(std::fs::read(&path).unwrap() == want, "the file differs");
}

#[tokio::test]
async fn host_reconnect_resets_the_parser() {
    use guestd_core::contract::StreamSession;
    let f = fixture(CommandFilter::All, 1 << 20);
    let mut s = f.protocol.session(f.agent.clone());
    let mut out = Vec::new();
    let mut input = BytesMut::from(&b"{\"execute\":\"guest-sy"[..]);
    s.on_input(&mut input, &mut out).await;
    assert!(out.is_empty());
    s.on_disconnect().await;
    let mut input = BytesMut::from(&b"{\"execute\":\"guest-ping\"}"[..]);
    s.on_input(&mut input, &mut out).await;
    assert_eq!(out, b"{\"return\":{}}\n");
}

// ---------------------------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------------------------

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"{\"execute\":\"guest-ping\",\"id\":1}".to_vec()),
        Just(b"{'execute':'guest-sync','arguments':{'id':-42}}".to_vec()),
        Just(b"[1, 2.5e3, true, null, \"\\u00e9\\ud83d\\ude00\"]".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"garbage".to_vec()),
        Just(b"}".to_vec()),
        Just(b" \n\t\r".to_vec()),
        Just("{\"k\":\"caf\u{e9} \u{1F600}\"}".as_bytes().to_vec()),
        Just(b"{\"execute\":\"guest-pi".to_vec()),
        Just(b"12".to_vec()),
        Just(b"Tru".to_vec()),
        Just(b"{\"a\":[[[".to_vec()),
        Just(b"]]]}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

fn parse_all(chunks: &[&[u8]], max: usize) -> Vec<Result<serde_json::Value, String>> {
    let mut f = Framer::new(max);
    let (mut buf, mut out) = (BytesMut::new(), Vec::new());
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            let before = buf.len();
            match f.parse(&mut buf) {
                Ok(None) => {
                    // Waiting for more: only the message in progress is kept.
                    assert!(buf.len() <= max, "buffer {} over limit {max}", buf.len());
                    break;
                }
                r => {
                    assert!(buf.len() < before, "no progress");
                    out.push(r.map(|v| v.unwrap_or_default()).map_err(|e| e.desc()));
                }
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn chunking_does_not_matter(
        pieces in proptest::collection::vec(piece(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        max in prop_oneof![Just(64usize), Just(1usize << 20)],
    ) {
        let input: Vec<u8> = pieces.concat();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for &a in &at {
            chunks.push(&input[prev..a]);
            prev = a;
        }
        chunks.push(&input[prev..]);
        let whole = parse_all(&[&input[..]], max);
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&parse_all(&chunks, max), &whole);
        prop_assert_eq!(&parse_all(&bytewise, max), &whole);
    }
}
