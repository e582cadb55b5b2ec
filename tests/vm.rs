//! The transports in a real guest: QEMU TCG booting a kernel and a busybox initramfs with
//! virtio-serial ports, an isa-serial line and a QMP monitor (`../shared/peers/vm/`).
//!
//! The guest runs `port_echo` (transports/examples/port_echo.rs, built static), which serves a
//! line echo through exactly the transports the agent uses, so these tests prove the channel
//! layer on its own: a port found by name with and without `/dev/virtio-ports` links, the host
//! going away and coming back, no busy loop while it is away, large writes, a second opener,
//! unplug and re-plug, and isa-serial.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::vm::{LineClient, QgaClient, Vm, VmOptions, static_example, vm_available};

const QGA_PORT: &str = "org.qemu.guest_agent.0";
const SYNC: Duration = Duration::from_secs(90);
const REPLY: Duration = Duration::from_secs(30);

fn have_vm() -> bool {
    support::require_peer(vm_available(), "QEMU and ../shared/peers/vm")
}

fn port_echo() -> (std::path::PathBuf, String) {
    (
        static_example("guestd-transports", "port_echo"),
        "/bin/port_echo".to_owned(),
    )
}

/// `#stat` through the echo: (CPU ticks of the serving process, ticks per second, guest
/// uptime, pid).
fn stat(c: &mut LineClient) -> (u64, u64, f64, u32) {
    let l = ask_skipping_syncs(c, "#stat");
    let f: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"#stat"), "bad stat line {l:?}");
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

/// Sends `line` and returns the first answer that is not a late echo of a sync token.
fn ask_skipping_syncs(c: &mut LineClient, line: &str) -> String {
    c.send(format!("{line}\n").as_bytes()).unwrap();
    loop {
        let got = c.read_line(REPLY).unwrap_or_else(|e| panic!("{line}: {e}"));
        let got = String::from_utf8_lossy(&got[..got.len() - 1]).into_owned();
        if !got.starts_with("#sync-") {
            return got;
        }
    }
}

/// A guest shell loop printing, every second, `cpu-sample PID UTIME STIME UPTIME` for each
/// process named `$1` (on the console).
pub const CPU_SAMPLER: &str = "cpu_sampler() { while :; do for p in $(pidof \"$1\"); do \
    echo \"cpu-sample $p $(cut -d' ' -f14,15 /proc/$p/stat) $(cut -d' ' -f1 /proc/uptime)\"; \
    done; sleep 1; done; }";

/// `(uptime, ticks)` of the console's `cpu-sample` lines for `pid` with uptime in `[from, to]`.
fn cpu_samples(console: &str, pid: u32, from: f64, to: f64) -> Vec<(f64, u64)> {
    console
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 5 || f[0] != "cpu-sample" || f[1].parse::<u32>().ok()? != pid {
                return None;
            }
            let ticks = f[2].parse::<u64>().ok()? + f[3].parse::<u64>().ok()?;
            let up: f64 = f[4].parse().ok()?;
            (up >= from && up <= to).then_some((up, ticks))
        })
        .collect()
}

/// CPU share of the echo process while no host was connected: it waits for the host on epoll
/// and a slow timer, never in a loop on `POLLHUP`. Measured in the guest, from its own
/// `/proc/PID/stat` sampled every second by [`CPU_SAMPLER`], over the seconds between the host
/// leaving and coming back (the reconnection's own work is outside the window).
fn idle_cpu_share(vm: &Vm, port: &str) -> f64 {
    const AWAY: Duration = Duration::from_secs(8);
    let mut c = LineClient::connect(vm.port(port), SYNC).unwrap();
    let (_, hz, left_at, pid) = stat(&mut c);
    drop(c);
    std::thread::sleep(AWAY);
    // One more sample after the window, so the last one inside it is on the console.
    std::thread::sleep(Duration::from_secs(2));
    let window = cpu_samples(
        &vm.console_text(),
        pid,
        left_at + 0.5,
        left_at + AWAY.as_secs_f64() - 0.5,
    );
    assert!(
        window.len() >= 3,
        "too few CPU samples of pid {pid} between {left_at} and +{AWAY:?}: {window:?}\n{}",
        vm.diagnostics()
    );
    let (first, last) = (window[0], window[window.len() - 1]);
    let share = (last.1 - first.1) as f64 / hz as f64 / (last.0 - first.0);
    eprintln!(
        "echo pid {pid} on {port}: {} ticks at {hz} Hz over {:.2} s without host: {:.3} %",
        last.1 - first.1,
        last.0 - first.0,
        share * 100.0
    );
    assert!(
        last.0 - first.0 >= 3.0,
        "the window was too short: {window:?}"
    );
    // The port still works after the idle period.
    let mut c = LineClient::connect(vm.port(port), SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut c, "after-idle"), "after-idle");
    share
}

/// The host closes and reopens its socket 20 times; each new connection is answered at once,
/// without any resynchronisation.
fn reconnect_20_times(vm: &Vm, port: &str) {
    for i in 0..20 {
        let mut c = LineClient::raw(vm.port(port)).unwrap();
        let want = format!("reconnect-{i}");
        let got = ask_skipping_syncs(&mut c, &want);
        assert_eq!(got, want, "reconnect {i}");
    }
}

/// Short request/reply round trips, one at a time: each reply's completion on the device
/// races the next request's arrival in the guest. A wake-up lost there (an extra poll of the
/// port taking the request's buffer while its interrupt then wakes no one, see
/// transports/src/virtio/port.rs) shows as a reply that never comes.
fn round_trips(vm: &Vm, port: &str, n: usize) {
    let mut c = LineClient::connect(vm.port(port), SYNC).unwrap();
    for i in 0..n {
        let want = format!("#quiet-{i}");
        c.send(format!("{want}\n").as_bytes()).unwrap();
        let got = c
            .read_line(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round trip {i} of {n}: {e}\n{}", vm.diagnostics()));
        assert_eq!(got, format!("{want}\n").into_bytes(), "round trip {i}");
    }
}

fn one_mib_line(c: &mut LineClient) {
    let mut big: Vec<u8> = (0..(1usize << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    big.push(b'\n');
    c.send(&big).unwrap();
    let back = c.read_line(Duration::from_secs(120)).unwrap();
    assert_eq!(
        back.len(),
        big.len(),
        "1 MiB line came back with another length"
    );
    assert!(back == big, "1 MiB line came back changed");
}

#[test]
fn virtio_port_by_name_with_links_reconnects_unplug_and_isa_serial() {
    if !have_vm() {
        return;
    }
    let vm = Vm::boot(VmOptions {
        ports: vec![QGA_PORT.into()],
        isa_serials: 1,
        qmp: true,
        with_guestd: false,
        bins: vec![port_echo()],
        init_cmd: [
            "export PORT_ECHO_TRACE=1",
            CPU_SAMPLER,
            "cpu_sampler port_echo &",
            "echo \"port-links: $(ls /dev/virtio-ports | tr '\\n' ' ')\"",
            "port_echo virtio:org.qemu.guest_agent.0 &",
            "port_echo serial:/dev/ttyS1 &",
            "port_echo virtio:org.guestd.hotplug.0 &",
            // A second agent on the same port: it must be told the port is busy.
            "sleep 2; port_echo virtio:org.qemu.guest_agent.0 &",
            "wait",
        ]
        .join("\n"),
        ..VmOptions::default()
    });
    assert!(
        vm.wait_console("port-links: org.qemu.guest_agent.0", REPLY),
        "{}",
        vm.diagnostics()
    );

    let mut c = LineClient::connect(vm.port(QGA_PORT), SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut c, "hello"), "hello");
    // Writes of up to 32 KiB each, many of them, and reads across many chunks.
    one_mib_line(&mut c);
    assert_eq!(ask_skipping_syncs(&mut c, "after-big"), "after-big");
    drop(c);

    reconnect_20_times(&vm, QGA_PORT);
    let share = idle_cpu_share(&vm, QGA_PORT);
    assert!(
        share < 0.01,
        "echo used {:.2} % CPU without a host",
        share * 100.0
    );

    // The second opener was refused with EBUSY and keeps retrying without harm.
    assert!(
        vm.wait_console("is busy: another process has it open", REPLY),
        "{}",
        vm.diagnostics()
    );
    let mut c = LineClient::connect(vm.port(QGA_PORT), SYNC).unwrap();
    assert_eq!(
        ask_skipping_syncs(&mut c, "still-one-server"),
        "still-one-server"
    );
    drop(c);

    // isa-serial: no connection state, raw bytes.
    let mut s = LineClient::connect(vm.isa(1), SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut s, "over-ttyS1"), "over-ttyS1");
    drop(s);

    // Hot-plug: a port that appears later is found by name (in sysfs: no udev for it), is
    // released when unplugged, and found again when plugged back.
    let mut qmp = vm.qmp();
    let hp1 = vm.dir.path().join("hp1.sock");
    qmp.add_port("hp1", "org.guestd.hotplug.0", &hp1).unwrap();
    let mut h = LineClient::connect(&hp1, SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut h, "plugged-1"), "plugged-1");
    drop(h);
    qmp.remove_port("hp1").unwrap();
    assert!(
        vm.wait_console("was removed", Duration::from_secs(60)),
        "{}",
        vm.diagnostics()
    );
    let hp2 = vm.dir.path().join("hp2.sock");
    qmp.add_port("hp2", "org.guestd.hotplug.0", &hp2).unwrap();
    let mut h = LineClient::connect(&hp2, SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut h, "plugged-2"), "plugged-2");
}

#[test]
fn virtio_port_by_name_without_links_and_name_preference() {
    if !have_vm() {
        return;
    }
    let vm = Vm::boot(VmOptions {
        ports: vec!["com.redhat.rhevm.vdsm".into(), QGA_PORT.into()],
        no_port_links: true,
        with_guestd: false,
        bins: vec![port_echo()],
        init_cmd: [
            "export PORT_ECHO_TRACE=1",
            CPU_SAMPLER,
            "cpu_sampler port_echo &",
            "[ -e /dev/virtio-ports ] && echo port-links-present || echo port-links-absent",
            "port_echo virtio:org.qemu.guest_agent.0 &",
            // oVirt's order: the current name first, the legacy one as fallback.
            "port_echo virtio:ovirt-guest-agent.0,com.redhat.rhevm.vdsm &",
            "wait",
        ]
        .join("\n"),
        ..VmOptions::default()
    });
    assert!(
        vm.wait_console("port-links-absent", REPLY),
        "{}",
        vm.diagnostics()
    );
    let mut c = LineClient::connect(vm.port(QGA_PORT), SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut c, "no-links"), "no-links");
    one_mib_line(&mut c);
    drop(c);
    let mut o = LineClient::connect(vm.port("com.redhat.rhevm.vdsm"), SYNC).unwrap();
    assert_eq!(ask_skipping_syncs(&mut o, "legacy-name"), "legacy-name");
    drop(o);

    reconnect_20_times(&vm, QGA_PORT);
    round_trips(&vm, QGA_PORT, 1000);
    let share = idle_cpu_share(&vm, QGA_PORT);
    assert!(
        share < 0.01,
        "echo used {:.2} % CPU without a host",
        share * 100.0
    );
}

// ---------------------------------------------------------------------------------------------
// QGA end to end: an agent in the guest serving its port, a hypervisor's view from the host.
// ---------------------------------------------------------------------------------------------

/// Which agent the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QgaAgent {
    /// The static guestd of this build.
    Guestd,
    /// Debian's qemu-ga: the reference, to check the scenario itself.
    QemuGa,
}

impl QgaAgent {
    /// The process name for `pidof`.
    fn process(self) -> &'static str {
        match self {
            QgaAgent::Guestd => "guestd",
            QgaAgent::QemuGa => "qemu-ga",
        }
    }

    /// Guest shell lines that start the agent on the QGA port (printing `agent-pid N`) and,
    /// with `isa`, a second one on `/dev/ttyS1`.
    fn start(self, isa: bool) -> String {
        let (virtio, serial) = match self {
            QgaAgent::Guestd => (
                "guestd run --channel qga=virtio:org.qemu.guest_agent.0 --statedir /run/guestd",
                "guestd run --channel qga=serial:/dev/ttyS1 --statedir /run/guestd-isa",
            ),
            QgaAgent::QemuGa => (
                "qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/qga",
                "qemu-ga -m isa-serial -p /dev/ttyS1 -t /run/qga-isa",
            ),
        };
        let mut lines = Vec::new();
        if isa {
            lines.push(format!("mkdir -p /run/qga-isa; {serial} &"));
        }
        lines.push(format!("mkdir -p /run/qga; {virtio} &"));
        lines.push("echo \"agent-pid $!\"".to_owned());
        lines.join("\n")
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap_or_else(|| panic!("not base64 text: {s}")))
        .unwrap()
}

/// Runs `sh -c script` through `guest-exec` and waits for it: (exit code, stdout, stderr).
fn guest_sh(q: &mut QgaClient, script: &str) -> (i64, String, String) {
    let pid = q.ok(
        "guest-exec",
        Some(json!({"path": "/bin/sh", "arg": ["-c", script], "capture-output": true})),
    )["pid"]
        .as_i64()
        .unwrap();
    let start = Instant::now();
    loop {
        let st = q.ok("guest-exec-status", Some(json!({ "pid": pid })));
        if st["exited"] == json!(true) {
            let text = |k: &str| {
                st.get(k)
                    .map(|v| String::from_utf8_lossy(&unb64(v)).into_owned())
                    .unwrap_or_default()
            };
            return (
                st["exitcode"].as_i64().unwrap_or(-1),
                text("out-data"),
                text("err-data"),
            );
        }
        assert!(
            start.elapsed() < REPLY,
            "guest-exec {script:?} did not end: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check_info_and_osinfo(q: &mut QgaClient) {
    let info = q.ok("guest-info", None);
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    let cmds = info["supported_commands"].as_array().unwrap();
    assert!(cmds.len() >= 30, "only {} commands: {info}", cmds.len());
    for name in [
        "guest-sync-delimited",
        "guest-ping",
        "guest-exec",
        "guest-file-open",
    ] {
        let c = cmds.iter().find(|c| c["name"] == name);
        assert!(
            c.is_some_and(|c| c["enabled"] == json!(true)),
            "{name} missing or disabled in {info}"
        );
    }
    let os = q.ok("guest-get-osinfo", None);
    assert_eq!(os["id"], "debian", "{os}");
    assert_eq!(os["version-id"], "12", "{os}");
    assert!(
        os["kernel-release"]
            .as_str()
            .is_some_and(|k| k.ends_with("-cloud-amd64")),
        "{os}"
    );
}

fn check_interfaces(q: &mut QgaClient, with_net: bool) {
    let ifs = q.ok("guest-network-get-interfaces", None);
    let find = |name: &str| {
        ifs.as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
    };
    let has_addr = |i: &serde_json::Value, addr: &str, prefix: u64| {
        i["ip-addresses"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["ip-address"] == addr && x["prefix"] == json!(prefix))
        })
    };
    let lo = find("lo").unwrap_or_else(|| panic!("no lo in {ifs}"));
    assert!(has_addr(&lo, "127.0.0.1", 8), "{lo}");
    if with_net {
        let eth = find("eth0").unwrap_or_else(|| panic!("no eth0 in {ifs}"));
        assert!(has_addr(&eth, "10.0.2.15", 24), "{eth}");
        // QEMU's default MAC for the first NIC.
        assert_eq!(eth["hardware-address"], "52:54:00:12:34:56", "{eth}");
    }
}

/// Freeze the guest's ext4 disk for a few seconds: a writer that starts writing while it is
/// frozen finishes only after the thaw. (Agents refuse `guest-exec` while frozen, so the writer
/// is started before the freeze, sleeps, then writes; it prints its start and end uptimes.)
fn check_freeze(q: &mut QgaClient) {
    const HOLD: Duration = Duration::from_secs(8);
    let writer = q.ok(
        "guest-exec",
        Some(
            json!({"path": "/bin/sh", "capture-output": true, "arg": ["-c",
            "cut -d' ' -f1 /proc/uptime; sleep 3; echo during-freeze > /mnt/data/f; \
             cut -d' ' -f1 /proc/uptime"]}),
        ),
    )["pid"]
        .as_i64()
        .unwrap();
    let n = q.ok(
        "guest-fsfreeze-freeze-list",
        Some(json!({"mountpoints": ["/mnt/data"]})),
    );
    assert_eq!(n, json!(1));
    assert_eq!(q.ok("guest-fsfreeze-status", None), json!("frozen"));
    std::thread::sleep(HOLD);
    assert_eq!(q.ok("guest-fsfreeze-status", None), json!("frozen"));
    assert_eq!(q.ok("guest-fsfreeze-thaw", None), json!(1));
    assert_eq!(q.ok("guest-fsfreeze-status", None), json!("thawed"));
    let start = Instant::now();
    let out = loop {
        let st = q.ok("guest-exec-status", Some(json!({ "pid": writer })));
        if st["exited"] == json!(true) {
            assert_eq!(st["exitcode"], json!(0), "{st}");
            break String::from_utf8_lossy(&unb64(&st["out-data"])).into_owned();
        }
        assert!(
            start.elapsed() < REPLY,
            "writer still blocked after thaw: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let t: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(t.len(), 2, "{out:?}");
    // Unblocked, the write ends 3 s after the start; frozen, only at the thaw, 8 s later.
    assert!(
        t[1] - t[0] >= 6.0,
        "the write was not held by the freeze: started {}, done {}",
        t[0],
        t[1]
    );
    let (rc, out, _) = guest_sh(q, "cat /mnt/data/f");
    assert_eq!((rc, out.as_str()), (0, "during-freeze\n"));
}

fn check_exec(q: &mut QgaClient) {
    let (rc, out, err) = guest_sh(q, "echo to-stdout; echo to-stderr >&2; exit 3");
    assert_eq!(rc, 3);
    assert_eq!(out, "to-stdout\n");
    assert_eq!(err, "to-stderr\n");
}

/// Request after request on one connection: a wake-up lost in the guest (see
/// [`round_trips`]) shows as an answer that never comes.
fn check_ping_round_trips(q: &mut QgaClient, n: usize) {
    for i in 0..n {
        assert_eq!(q.ok("guest-ping", None), json!({}), "ping {i} of {n}");
    }
}

/// 1 MiB written in one `guest-file-write` and read back in one `guest-file-read`.
fn check_file_round_trip(q: &mut QgaClient) {
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..(1usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let h = q.ok(
        "guest-file-open",
        Some(json!({"path": "/tmp/roundtrip.bin", "mode": "w"})),
    );
    let w = q.ok(
        "guest-file-write",
        Some(json!({"handle": h, "buf-b64": b64(&data)})),
    );
    assert_eq!(w["count"], json!(data.len()), "{w}");
    q.ok("guest-file-close", Some(json!({ "handle": h })));
    let h = q.ok(
        "guest-file-open",
        Some(json!({"path": "/tmp/roundtrip.bin", "mode": "r"})),
    );
    let mut back = Vec::new();
    loop {
        let r = q.ok(
            "guest-file-read",
            Some(json!({"handle": h, "count": 1 << 20})),
        );
        back.extend(unb64(&r["buf-b64"]));
        if r["eof"] == json!(true) || r["count"] == json!(0) {
            break;
        }
        assert!(back.len() <= data.len(), "read past the end");
    }
    q.ok("guest-file-close", Some(json!({ "handle": h })));
    assert_eq!(back.len(), data.len());
    assert!(back == data, "1 MiB came back changed");
}

/// The host closes and reopens its socket 20 times; after each, sync and a command work.
fn check_reconnects(q: &mut QgaClient) {
    for i in 0..20 {
        q.reconnect(SYNC)
            .unwrap_or_else(|e| panic!("reconnect {i}: {e}"));
        assert_eq!(q.ok("guest-ping", None), json!({}), "after reconnect {i}");
    }
}

/// CPU share of the agent (console `agent-pid`) while the host was away for a few seconds.
fn agent_idle_cpu_share(vm: &Vm, q: &mut QgaClient) -> f64 {
    const AWAY: Duration = Duration::from_secs(8);
    let console = vm.console_text();
    let pid: u32 = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("agent-pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no agent-pid on the console\n{}", vm.diagnostics()));
    let (_, up, _) = guest_sh(q, "cut -d' ' -f1 /proc/uptime");
    let left_at: f64 = up.trim().parse().unwrap();
    // The host goes away: close the connection.
    q.disconnect();
    std::thread::sleep(AWAY + Duration::from_secs(2));
    let window = cpu_samples(
        &vm.console_text(),
        pid,
        left_at + 1.0,
        left_at + AWAY.as_secs_f64() - 0.5,
    );
    assert!(
        window.len() >= 3,
        "too few CPU samples of pid {pid}: {window:?}\n{}",
        vm.diagnostics()
    );
    let (first, last) = (window[0], window[window.len() - 1]);
    // The sampler reads /proc/PID/stat in clock ticks (USER_HZ, 100 on Linux).
    let share = (last.1 - first.1) as f64 / 100.0 / (last.0 - first.0);
    eprintln!(
        "agent pid {pid}: {} ticks over {:.2} s without host: {:.3} %",
        last.1 - first.1,
        last.0 - first.0,
        share * 100.0
    );
    q.reconnect(SYNC).unwrap();
    share
}

fn check_shutdown(vm: &mut Vm, q: &mut QgaClient) {
    let reply = q.execute_no_reply("guest-shutdown", None, Duration::from_secs(5));
    assert!(reply.is_none(), "guest-shutdown answered: {reply:?}");
    assert!(
        vm.wait_exit(Duration::from_secs(90)).is_some(),
        "QEMU still runs after guest-shutdown\n{}",
        vm.diagnostics()
    );
    assert!(
        vm.console_text()
            .contains("guestd-peers: shutdown -h -P +0"),
        "{}",
        vm.diagnostics()
    );
}

fn qga_vm_with_links(agent: QgaAgent) {
    let mut bins = Vec::new();
    if agent == QgaAgent::QemuGa {
        bins.push((
            std::path::PathBuf::from("/usr/sbin/qemu-ga"),
            "/usr/sbin/qemu-ga".to_owned(),
        ));
    }
    let mut vm = Vm::boot(VmOptions {
        ports: vec![QGA_PORT.into()],
        isa_serials: 1,
        disk_mib: Some(16),
        net: true,
        with_guestd: agent == QgaAgent::Guestd,
        bins,
        hostname: "guestd-qga-vm".into(),
        init_cmd: [
            CPU_SAMPLER.to_owned(),
            format!("cpu_sampler {} &", agent.process()),
            "mkdir -p /mnt/data && mount -t ext4 /dev/vda /mnt/data".to_owned(),
            agent.start(true),
            "wait".to_owned(),
        ]
        .join("\n"),
        ..VmOptions::default()
    });
    let mut q = QgaClient::connect(vm.port(QGA_PORT), SYNC).unwrap();
    check_info_and_osinfo(&mut q);
    assert_eq!(
        q.ok("guest-get-host-name", None),
        json!({"host-name": "guestd-qga-vm"})
    );
    check_interfaces(&mut q, true);
    check_freeze(&mut q);
    check_exec(&mut q);
    check_file_round_trip(&mut q);
    check_ping_round_trips(&mut q, 500);
    check_reconnects(&mut q);
    let share = agent_idle_cpu_share(&vm, &mut q);
    if agent == QgaAgent::Guestd {
        assert!(
            share < 0.01,
            "guestd used {:.2} % CPU without a host",
            share * 100.0
        );
    }
    assert_eq!(q.ok("guest-ping", None), json!({}));

    let mut s = QgaClient::connect(vm.isa(1), SYNC).unwrap();
    assert_eq!(s.ok("guest-ping", None), json!({}));
    assert_eq!(
        s.ok("guest-get-host-name", None),
        json!({"host-name": "guestd-qga-vm"})
    );
    drop(s);

    check_shutdown(&mut vm, &mut q);
}

/// The reference run: the same scenario against Debian's qemu-ga, to check the test itself.
/// `cargo test --test vm -- --ignored qemu_ga_reference`.
#[test]
#[ignore = "checks the scenario against qemu-ga; run by hand"]
fn qga_scenario_against_qemu_ga_reference() {
    if !have_vm()
        || !support::require_peer(
            std::path::Path::new("/usr/sbin/qemu-ga").exists(),
            "qemu-guest-agent",
        )
    {
        return;
    }
    qga_vm_with_links(QgaAgent::QemuGa);
}

/// guestd as the guest's QGA agent, its port found through the udev-style link: every
/// command a hypervisor relies on, a real freeze of a mounted ext4 disk, 20 host reconnects,
/// idle CPU, isa-serial, and `guest-shutdown` ending the VM.
#[test]
fn qga_guestd_in_vm_with_port_links() {
    if !have_vm() {
        return;
    }
    qga_vm_with_links(QgaAgent::Guestd);
}

/// guestd finding its port through `/sys/class/virtio-ports/*/name` only.
#[test]
fn qga_guestd_in_vm_without_port_links() {
    if !have_vm() {
        return;
    }
    let mut vm = Vm::boot(VmOptions {
        ports: vec![QGA_PORT.into()],
        no_port_links: true,
        init_cmd: [
            "[ -e /dev/virtio-ports ] && echo port-links-present || echo port-links-absent",
            &QgaAgent::Guestd.start(false),
            "wait",
        ]
        .join("\n"),
        ..VmOptions::default()
    });
    assert!(
        vm.wait_console("port-links-absent", REPLY),
        "{}",
        vm.diagnostics()
    );
    let mut q = QgaClient::connect(vm.port(QGA_PORT), SYNC).unwrap();
    check_info_and_osinfo(&mut q);
    check_interfaces(&mut q, false);
    check_exec(&mut q);
    check_file_round_trip(&mut q);
    check_reconnects(&mut q);
    check_shutdown(&mut vm, &mut q);
}
