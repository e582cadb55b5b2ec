//! Session tests on fixture facts: the sequences of note §3.4 and §4.2, byte by byte.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use guestd_core::action::{Action, ActionError, ActionHandler, ActionKind, Dispatcher, Outcome};
use guestd_core::contract::{FactError, Facts, StreamSession};
use guestd_core::events::{Event, EventBus};
use guestd_core::model::*;
use guestd_core::sysfacts::*;
use guestd_core::{Agent, Paths};
use serde_json::{Value, json};

use super::*;

#[derive(Debug, Default)]
struct Fixture {
    users: Vec<UserSession>,
    apps: Vec<Application>,
    cpus: u32,
    fail_memory: bool,
}

#[derive(Debug, Default, Clone)]
struct FixtureFacts(Arc<Mutex<Fixture>>);

fn unsupported<T>() -> Result<T, FactError> {
    Err(FactError::Unsupported("fixture"))
}

#[async_trait]
impl Facts for FixtureFacts {
    async fn hostname(&self) -> Result<String, FactError> {
        Ok("vm1".into())
    }
    async fn fqdn(&self) -> Result<String, FactError> {
        Ok("vm1.example.net".into())
    }
    async fn os(&self) -> Result<OsInfo, FactError> {
        Ok(OsInfo {
            name: Some("Debian GNU/Linux".into()),
            version_id: Some("12".into()),
            kernel_release: Some("6.1.0-18-amd64".into()),
            machine: Some("x86_64".into()),
            ..OsInfo::default()
        })
    }
    async fn interfaces(&self) -> Result<Vec<Interface>, FactError> {
        Ok(vec![Interface {
            name: "eth0".into(),
            mac: Some("52:54:00:00:00:01".into()),
            ipv4: vec![IpPrefix {
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24,
            }],
            up: true,
            ..Interface::default()
        }])
    }
    async fn applications(&self) -> Result<Vec<Application>, FactError> {
        Ok(self.0.lock().unwrap().apps.clone())
    }
    async fn memory(&self) -> Result<Memory, FactError> {
        if self.0.lock().unwrap().fail_memory {
            return Err(FactError::Unavailable("no meminfo".into()));
        }
        Ok(Memory {
            total: 1 << 30,
            free: 256 << 20,
            buffers: 16 << 20,
            cached: 128 << 20,
            available: 512 << 20,
            ..Memory::default()
        })
    }
    async fn users(&self) -> Result<Vec<UserSession>, FactError> {
        Ok(self.0.lock().unwrap().users.clone())
    }
    async fn filesystems(&self) -> Result<Vec<Filesystem>, FactError> {
        Ok(vec![Filesystem {
            mountpoint: "/".into(),
            device: "/dev/vda1".into(),
            fstype: "ext4".into(),
            total: Some(1 << 30),
            used: Some(1 << 29),
            ..Filesystem::default()
        }])
    }
    async fn timezone(&self) -> Result<Timezone, FactError> {
        Ok(Timezone {
            name: Some("Europe/Prague".into()),
            std_offset: 3600,
            utc_offset: 3600,
            ..Timezone::default()
        })
    }
    async fn cpus(&self) -> Result<Cpus, FactError> {
        let n = self.0.lock().unwrap().cpus;
        Ok(Cpus {
            online: n,
            present: n,
        })
    }
    async fn load(&self) -> Result<Load, FactError> {
        unsupported()
    }
    async fn uptime(&self) -> Result<Uptime, FactError> {
        unsupported()
    }
    async fn vcpus(&self) -> Result<Vec<Vcpu>, FactError> {
        unsupported()
    }
    async fn memory_blocks(&self) -> Result<Vec<MemoryBlock>, FactError> {
        unsupported()
    }
    async fn memory_block_size(&self) -> Result<u64, FactError> {
        unsupported()
    }
    async fn block_devices(&self) -> Result<Vec<BlockDevice>, FactError> {
        unsupported()
    }
    async fn disk_stats(&self) -> Result<Vec<DiskStats>, FactError> {
        unsupported()
    }
    async fn cpu_stats(&self) -> Result<Vec<CpuStats>, FactError> {
        unsupported()
    }
    async fn routes(&self) -> Result<Vec<Route>, FactError> {
        unsupported()
    }
    async fn report(&self, _which: &[Fact]) -> Report {
        Report::default()
    }
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Action>>);

#[async_trait]
impl ActionHandler for Recorder {
    fn kinds(&self) -> &[ActionKind] {
        &[
            ActionKind::Power,
            ActionKind::Suspend,
            ActionKind::LockScreen,
            ActionKind::LogOff,
            ActionKind::LifecycleHooks,
        ]
    }
    async fn run(&self, action: Action) -> Result<Outcome, ActionError> {
        let fail = matches!(action, Action::LifecycleHooks { .. });
        self.0.lock().unwrap().push(action);
        if fail {
            return Err(ActionError::ChildFailed {
                what: "hook".into(),
                status: 1,
            });
        }
        Ok(Outcome::Done)
    }
}

struct Harness {
    session: OvirtSession,
    facts: FixtureFacts,
    actions: Arc<Recorder>,
    events: EventBus,
}

fn fast_config() -> OvirtConfig {
    OvirtConfig {
        heartbeat: Duration::from_millis(20),
        user: Duration::from_millis(20),
        cpus: Duration::from_millis(20),
        inventory: Duration::from_millis(20),
        disks: Duration::from_millis(20),
        address_settle: Duration::from_millis(1),
        ..OvirtConfig::default()
    }
}

fn harness(cfg: OvirtConfig) -> Harness {
    let facts = FixtureFacts::default();
    facts.0.lock().unwrap().cpus = 2;
    let actions = Arc::new(Recorder::default());
    let mut d = Dispatcher::new();
    d.register(actions.clone());
    let events = EventBus::default();
    let agent = Agent {
        paths: Paths::under("/nonexistent"),
        facts: Arc::new(facts.clone()),
        actions: Arc::new(d),
        events: events.clone(),
    };
    Harness {
        session: OvirtSession::new(agent, Arc::new(cfg)),
        facts,
        actions,
        events,
    }
}

fn parse(out: &mut Vec<u8>) -> Vec<Value> {
    let s = std::str::from_utf8(out).unwrap().to_owned();
    out.clear();
    assert!(s.is_empty() || s.ends_with('\n'), "{s}");
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn names(msgs: &[Value]) -> Vec<&str> {
    msgs.iter()
        .map(|m| m["__name__"].as_str().unwrap())
        .collect()
}

async fn input(h: &mut Harness, line: &str) -> Vec<Value> {
    let mut buf = BytesMut::from(line.as_bytes());
    let mut out = Vec::new();
    h.session.on_input(&mut buf, &mut out).await;
    parse(&mut out)
}

async fn tick(h: &mut Harness) -> Vec<Value> {
    let d = h.session.next_deadline().unwrap();
    let now = std::time::Instant::now();
    if d > now {
        std::thread::sleep(d - now);
    }
    let mut out = Vec::new();
    h.session.on_timer(&mut out).await;
    parse(&mut out)
}

async fn connect(h: &mut Harness) -> Vec<Value> {
    let mut out = Vec::new();
    h.session.on_connect(&mut out).await;
    parse(&mut out)
}

#[tokio::test]
async fn start_heartbeat_first_then_start_batch_gated_at_zero() {
    let mut h = harness(OvirtConfig::default());
    let first = connect(&mut h).await;
    assert_eq!(names(&first), ["session-startup", "heartbeat"]);
    assert_eq!(first[1]["apiVersion"], 0);
    assert_eq!(first[1]["free-ram"], 400);
    assert_eq!(first[1]["memory-stat"]["mem_total"], 1 << 20);
    let batch = tick(&mut h).await;
    assert_eq!(
        names(&batch),
        [
            "host-name",
            "os-version",
            "network-interfaces",
            "active-user",
            "applications",
            "fqdn",
            "disks-usage"
        ]
    );
    assert_eq!(batch[0]["name"], "vm1.example.net");
    assert_eq!(batch[3]["name"], "None");
}

#[tokio::test]
async fn negotiation_zero_three_pair_then_refresh_batch_with_gated_items() {
    let mut h = harness(fast_config());
    let first = connect(&mut h).await;
    assert_eq!(first[1]["apiVersion"], 0);
    tick(&mut h).await; // start batch
    // The next heartbeat carries 3.
    let mut hb = Vec::new();
    while hb.is_empty() {
        hb = tick(&mut h)
            .await
            .into_iter()
            .filter(|m| m["__name__"] == "heartbeat")
            .collect();
    }
    assert_eq!(hb[0]["apiVersion"], 3);
    // VDSM: 0 → 3, api-version {3}.
    let batch = input(
        &mut h,
        "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n",
    )
    .await;
    assert_eq!(
        names(&batch),
        [
            "session-startup",
            "active-user",
            "applications",
            "containers",
            "host-name",
            "os-version",
            "network-interfaces",
            "disks-usage",
            "fqdn",
            "timezone",
            "os-info",
            "number-of-cpus"
        ]
    );
    assert_eq!(batch[3]["list"], json!([]));
    assert_eq!(
        batch[9],
        json!({"__name__": "timezone", "zone": "Europe/Prague", "offset": 60})
    );
    assert_eq!(batch[11]["count"], 2);
    // Same version again: nothing.
    assert!(
        input(
            &mut h,
            "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n"
        )
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn refresh_without_api_version_falls_back_to_zero_and_rearms_the_pair() {
    let mut h = harness(fast_config());
    connect(&mut h).await;
    input(
        &mut h,
        "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n",
    )
    .await;
    assert_eq!(h.session.api_version(), 3);
    let out = input(&mut h, "{\"__name__\": \"refresh\"}\n").await;
    assert_eq!(h.session.api_version(), 0);
    let n = names(&out);
    assert!(!n.contains(&"timezone") && !n.contains(&"os-info") && !n.contains(&"containers"));
    assert_eq!(n.first(), Some(&"session-startup"));
    assert_eq!(n.last(), Some(&"heartbeat"));
    assert_eq!(out.last().unwrap()["apiVersion"], 0);
    // With apiVersion at 3: the version stays, the batch includes the gated items.
    input(
        &mut h,
        "{\"apiVersion\": 2, \"__name__\": \"api-version\"}\n",
    )
    .await;
    let out = input(&mut h, "{\"apiVersion\": 3, \"__name__\": \"refresh\"}\n").await;
    assert_eq!(h.session.api_version(), 2);
    let n = names(&out);
    assert!(n.contains(&"timezone") && n.contains(&"os-info") && !n.contains(&"containers"));
    assert_eq!(out.last().unwrap()["apiVersion"], 3);
}

#[tokio::test]
async fn host_return_at_zero_rearms_heartbeat_zero() {
    let mut h = harness(fast_config());
    connect(&mut h).await;
    tick(&mut h).await;
    h.session.on_disconnect().await;
    let back = connect(&mut h).await;
    assert_eq!(names(&back), ["heartbeat"]);
    assert_eq!(back[0]["apiVersion"], 0);
    // At 3 a returning host gets 3 straight away.
    input(
        &mut h,
        "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n",
    )
    .await;
    h.session.on_disconnect().await;
    let back = connect(&mut h).await;
    assert_eq!(back[0]["apiVersion"], 3);
}

#[tokio::test]
async fn periodic_reports_only_when_changed() {
    let mut h = harness(fast_config());
    connect(&mut h).await;
    input(
        &mut h,
        "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n",
    )
    .await;
    // Nothing changed: only heartbeats.
    for _ in 0..3 {
        let out = tick(&mut h).await;
        assert!(
            out.iter().all(|m| m["__name__"] == "heartbeat"),
            "{:?}",
            names(&out)
        );
    }
    h.facts.0.lock().unwrap().apps.push(Application {
        name: "cloud-init".into(),
        version: "22.4.2-1".into(),
        arch: None,
        source: PackageSource::Dpkg,
    });
    h.facts.0.lock().unwrap().cpus = 3;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.extend(tick(&mut h).await);
    }
    let apps: Vec<&Value> = seen
        .iter()
        .filter(|m| m["__name__"] == "applications")
        .collect();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["applications"], json!(["cloud-init-22.4.2-1"]));
    let cpus: Vec<&Value> = seen
        .iter()
        .filter(|m| m["__name__"] == "number-of-cpus")
        .collect();
    assert_eq!(cpus.len(), 1);
    assert_eq!(cpus[0]["count"], 3);
}

#[tokio::test]
async fn commands_map_to_actions_and_lifecycle_always_completes() {
    let mut h = harness(OvirtConfig::default());
    connect(&mut h).await;
    let lines = concat!(
        "{\"__name__\": \"lock-screen\"}\n",
        "{\"__name__\": \"log-off\"}\n",
        "{\"timeout\": 30, \"message\": \"bye\", \"reboot\": \"True\", \"__name__\": \"shutdown\"}\n",
        "{\"__name__\": \"hibernate\", \"state\": \"mem\"}\n",
        "{\"type\": \"before_migration\", \"reply_id\": \"abc\", \"__name__\": \"lifecycle-event\"}\n",
        "{\"type\": \"no_such_event\", \"reply_id\": 17, \"__name__\": \"lifecycle-event\"}\n",
        "{\"type\": \"after_migration\", \"failure\": true, \"__name__\": \"lifecycle-event\"}\n",
        "{\"username\": \"alice\", \"password\": \"s3cret\", \"__name__\": \"login\"}\n",
        "{\"__name__\": \"frobnicate\"}\n",
        "not json\n",
        "{\"__name__\": \"echo\", \"x\": [1, \"\\u0001\"]}\n",
    );
    let out = input(&mut h, lines).await;
    // completion is sent even at version 0 and when the hooks failed or the type is unknown.
    assert_eq!(names(&out), ["completion", "completion", "echo"]);
    assert_eq!(
        out[0],
        json!({"__name__": "completion", "reply_id": "abc", "done": true})
    );
    assert_eq!(out[1]["reply_id"], 17);
    assert_eq!(out[2], json!({"__name__": "echo", "x": [1, "\u{FFFD}"]}));
    let done = h.actions.0.lock().unwrap().clone();
    assert_eq!(done.len(), 6);
    assert!(matches!(done[0], Action::LockScreen(_)));
    assert!(matches!(done[1], Action::LogOff(_)));
    assert!(matches!(
        done[2],
        Action::Power {
            mode: guestd_core::action::PowerMode::Reboot,
            ..
        }
    ));
    assert!(matches!(
        done[3],
        Action::Suspend(guestd_core::action::SuspendMode::Ram)
    ));
    assert_eq!(
        done[4],
        Action::LifecycleHooks {
            event: guestd_core::action::LifecycleEvent::BeforeMigration,
            failure: false
        }
    );
    assert_eq!(
        done[5],
        Action::LifecycleHooks {
            event: guestd_core::action::LifecycleEvent::AfterMigration,
            failure: true
        }
    );
}

#[tokio::test]
async fn set_number_of_cpus_reports_the_count_at_version_one() {
    let mut h = harness(OvirtConfig::default());
    connect(&mut h).await;
    assert!(
        input(
            &mut h,
            "{\"count\": 2, \"__name__\": \"set-number-of-cpus\"}\n"
        )
        .await
        .is_empty()
    );
    input(
        &mut h,
        "{\"apiVersion\": 1, \"__name__\": \"api-version\"}\n",
    )
    .await;
    let out = input(
        &mut h,
        "{\"count\": \"4\", \"__name__\": \"set-number-of-cpus\"}\n",
    )
    .await;
    assert_eq!(out, vec![json!({"__name__": "number-of-cpus", "count": 2})]);
    assert!(
        input(
            &mut h,
            "{\"count\": 0, \"__name__\": \"set-number-of-cpus\"}\n"
        )
        .await
        .is_empty()
    );
}

fn session(user: &str, id: &str, class: &str) -> UserSession {
    UserSession {
        name: user.into(),
        uid: Some(1000),
        session_id: Some(id.into()),
        seat: Some("seat0".into()),
        tty: None,
        remote_host: None,
        class: Some(class.into()),
        kind: Some("x11".into()),
        active: true,
        locked: false,
        login_time: None,
        source: SessionSource::Logind,
    }
}

#[tokio::test]
async fn session_events_follow_the_old_agent_order() {
    let mut h = harness(OvirtConfig::default());
    connect(&mut h).await;
    tick(&mut h).await; // start batch: active-user None
    let mut out = Vec::new();
    h.facts.0.lock().unwrap().users = vec![session("gdm", "c1", "greeter")];
    h.session
        .on_event(
            &Event::SessionNew {
                session: "c1".into(),
                user: "gdm".into(),
            },
            &mut out,
        )
        .await;
    assert!(
        parse(&mut out).is_empty(),
        "greeter sessions are not logons"
    );
    h.facts.0.lock().unwrap().users = vec![session("bob", "2", "user")];
    h.session
        .on_event(
            &Event::SessionNew {
                session: "2".into(),
                user: "bob".into(),
            },
            &mut out,
        )
        .await;
    let msgs = parse(&mut out);
    assert_eq!(names(&msgs), ["active-user", "session-logon"]);
    assert_eq!(msgs[0]["name"], "bob");
    h.session
        .on_event(
            &Event::SessionLocked {
                session: "2".into(),
            },
            &mut out,
        )
        .await;
    h.session
        .on_event(
            &Event::SessionUnlocked {
                session: "2".into(),
            },
            &mut out,
        )
        .await;
    assert_eq!(names(&parse(&mut out)), ["session-lock", "session-unlock"]);
    // The same user again: no duplicate active-user.
    h.session
        .on_event(
            &Event::ActiveUserChanged {
                user: Some("bob".into()),
            },
            &mut out,
        )
        .await;
    assert!(parse(&mut out).is_empty());
    h.facts.0.lock().unwrap().users.clear();
    h.session
        .on_event(
            &Event::SessionRemoved {
                session: "2".into(),
                user: "bob".into(),
            },
            &mut out,
        )
        .await;
    let msgs = parse(&mut out);
    assert_eq!(names(&msgs), ["session-logoff", "active-user"]);
    assert_eq!(msgs[1]["name"], "None");
    h.session.on_event(&Event::ShuttingDown, &mut out).await;
    h.session.on_shutdown(&mut out).await;
    assert_eq!(names(&parse(&mut out)), ["session-shutdown"]);
}

#[tokio::test]
async fn address_change_resends_interfaces_only_if_changed() {
    let mut h = harness(OvirtConfig {
        address_settle: Duration::from_millis(1),
        ..OvirtConfig::default()
    });
    connect(&mut h).await;
    tick(&mut h).await;
    let mut out = Vec::new();
    h.session
        .on_event(
            &Event::AddressAdded {
                iface: "eth0".into(),
                addr: "10.0.2.15".parse().unwrap(),
            },
            &mut out,
        )
        .await;
    assert!(out.is_empty());
    // Unchanged interfaces: the settle timer fires and sends nothing.
    assert!(tick(&mut h).await.is_empty());
}

#[tokio::test]
async fn heartbeat_survives_a_failing_memory_fact_and_bad_input() {
    let mut h = harness(OvirtConfig::default());
    h.facts.0.lock().unwrap().fail_memory = true;
    let first = connect(&mut h).await;
    assert_eq!(
        first[1],
        json!({"__name__": "heartbeat", "free-ram": 0, "apiVersion": 0})
    );
    // Oversized garbage is skipped and the next command still works.
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for _ in 0..5 {
        buf.extend_from_slice(&[b'x'; 40_000]);
        h.session.on_input(&mut buf, &mut out).await;
        assert!(buf.len() < h.session.max_input());
    }
    buf.extend_from_slice(b"\n{\"__name__\": \"echo\", \"n\": 1}\n");
    h.session.on_input(&mut buf, &mut out).await;
    assert_eq!(parse(&mut out), vec![json!({"__name__": "echo", "n": 1})]);
}

#[tokio::test]
async fn protocol_makes_sessions() {
    let p = OvirtProtocol::default();
    assert_eq!(p.name(), "ovirt");
    assert_eq!(p.config().heartbeat, Duration::from_secs(5));
    assert_eq!(PORT_NAMES[0], "ovirt-guest-agent.0");
}

#[tokio::test]
async fn user_poll_is_skipped_while_session_events_flow_and_resumes_without_them() {
    let mut h = harness(fast_config());
    connect(&mut h).await;
    tick(&mut h).await; // start batch: active-user None
    h.events.set_session_events_live(true);
    h.facts.0.lock().unwrap().users = vec![session("alice", "3", "user")];
    // The poll would see alice; with logind's events flowing, only events report her.
    for _ in 0..3 {
        let out = tick(&mut h).await;
        assert!(
            !names(&out).contains(&"active-user"),
            "polled while events flow: {:?}",
            names(&out)
        );
    }
    // The watcher lost logind: the poll is the fallback again.
    h.events.set_session_events_live(false);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.extend(tick(&mut h).await);
    }
    let users: Vec<&Value> = seen
        .iter()
        .filter(|m| m["__name__"] == "active-user")
        .collect();
    assert_eq!(users.len(), 1, "{:?}", names(&seen));
    assert_eq!(users[0]["name"], "alice");
}

#[tokio::test]
async fn reports_due_with_a_heartbeat_go_out_in_its_wake_up() {
    // User poll every second heartbeat, CPUs every third: at those heartbeats one timer
    // wake-up carries both, never a wake-up of its own a moment later.
    let cfg = OvirtConfig {
        // Long enough that a loaded machine does not skip a tick between two `tick`s.
        heartbeat: Duration::from_millis(100),
        user: Duration::from_millis(200),
        cpus: Duration::from_millis(300),
        inventory: Duration::from_secs(3600),
        disks: Duration::from_secs(3600),
        ..OvirtConfig::default()
    };
    let mut h = harness(cfg);
    connect(&mut h).await;
    tick(&mut h).await; // start batch
    // number-of-cpus needs API version 1 or later.
    input(
        &mut h,
        "{\"apiVersion\": 3, \"__name__\": \"api-version\"}\n",
    )
    .await;
    let mut cpus_seen = 0;
    for n in 1..=6u32 {
        h.facts.0.lock().unwrap().cpus = 2 + n; // changes every time: sent whenever polled
        h.facts.0.lock().unwrap().users = vec![session(&format!("u{n}"), "3", "user")];
        let out = tick(&mut h).await;
        let got = names(&out);
        assert_eq!(got.first(), Some(&"heartbeat"), "tick {n}: {got:?}");
        assert_eq!(
            got.contains(&"active-user"),
            n % 2 == 0,
            "tick {n}: {got:?}"
        );
        if got.contains(&"number-of-cpus") {
            cpus_seen += 1;
            assert_eq!(n % 3, 0, "tick {n}: {got:?}");
        }
    }
    assert_eq!(cpus_seen, 2);
}
