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

use std::time::Duration;

use support::vm::{LineClient, Vm, VmOptions, static_example, vm_available};

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
    let share = idle_cpu_share(&vm, QGA_PORT);
    assert!(
        share < 0.01,
        "echo used {:.2} % CPU without a host",
        share * 100.0
    );
}
