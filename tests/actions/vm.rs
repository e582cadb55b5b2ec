//! The actions that must not run on the host (clock, vCPUs, memory blocks, freezing
//! everything, accounts, suspend), run inside the QEMU TCG VM of `../shared/peers/vm` by the
//! `actctl` example: one boot, the guest script `vm-actions.sh` reporting `R <step> <result>`
//! lines on the console, the host waking the suspended guest over QMP.
// Test helpers panic on failure, like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;

/// Two vCPUs (cpu1 can go offline) and a cold-plugged 128 MiB DIMM whose memory block comes
/// up offline; with the auto-movable policy "online" puts it in ZONE_MOVABLE, so it can go
/// offline again.
const QEMU_EXTRA: &str = "-smp 2 -m 256,slots=2,maxmem=1G -object memory-backend-ram,id=m1,size=128M \
     -device pc-dimm,id=d1,memdev=m1";
const APPEND: &str = "memory_hotplug.online_policy=auto-movable";

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Watches QMP: wakes the guest up each time it suspends; returns the events seen.
fn qmp_waker(sock: PathBuf, stop: std::sync::mpsc::Receiver<()>) -> Vec<String> {
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("QMP socket {}: {e}", sock.display()),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut negotiated = false;
    loop {
        if stop.try_recv().is_ok() {
            return events;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return events,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => return events,
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v.get("QMP").is_some() && !negotiated {
            writer
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
                .unwrap();
            negotiated = true;
        }
        if let Some(ev) = v.get("event").and_then(|e| e.as_str()) {
            events.push(ev.to_owned());
            if ev == "SUSPEND" {
                std::thread::sleep(Duration::from_millis(500));
                writer
                    .write_all(b"{\"execute\":\"system_wakeup\"}\n")
                    .unwrap();
            }
        }
    }
}

/// `openssl passwd -6` of `password` with the salt of `hash`.
fn openssl_sha512(password: &str, hash: &str) -> String {
    let body = hash.strip_prefix("$6$").expect("a SHA-512 crypt hash");
    let salt = &body[..body.rfind('$').unwrap()];
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, password])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn run_vm_actions(actctl: &Path) {
    let peers = support::peers_dir();
    if !support::require_peer(
        peers.join("vm/boot.sh").exists() && support::have_command("qemu-system-x86_64"),
        "the QEMU VM peer (../shared/peers/vm, qemu-system-x86)",
    ) {
        return;
    }
    let dir = support::short_tmpdir();
    let d = dir.path();
    // The example is linked against glibc: initrd.sh copies the libraries ldd lists.
    let bin = d.join("actctl");
    std::fs::copy(actctl, &bin).unwrap();
    let _ = Command::new("strip").arg(&bin).status();
    let disk = d.join("disk.img");
    sh(Command::new("truncate").args(["-s", "16M"]).arg(&disk));
    sh(Command::new("mkfs.ext4").arg("-q").arg(&disk));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/actions/vm-actions.sh");
    let initrd = d.join("initrd.cpio.gz");
    sh(Command::new(peers.join("vm/initrd.sh"))
        .arg(&initrd)
        .arg("--bin")
        .arg(&bin)
        .arg("--file")
        .arg(format!("{}:/vm-actions.sh", script.display()))
        .args(["--init-cmd", "/vm-actions.sh"]));
    let console = d.join("console.log");
    let qmp = d.join("qmp.sock");
    let out = Command::new(peers.join("vm/boot.sh"))
        .arg("--initrd")
        .arg(&initrd)
        .arg("--disk")
        .arg(&disk)
        .arg("--console")
        .arg(&console)
        .arg("--qmp")
        .arg(&qmp)
        .args(["--append", APPEND])
        .args(["--wait-for", "guestd-peers: ready", "--timeout", "240"])
        .env("QEMU_EXTRA_ARGS", QEMU_EXTRA)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boot.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qemu_pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let waker = std::thread::spawn(move || qmp_waker(qmp, stop_rx));

    let until = Instant::now() + Duration::from_secs(400);
    let text = loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        if text.contains("guestd-peers: command exited") {
            break text;
        }
        if Instant::now() > until {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(qemu_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the VM script did not finish; console:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = stop_tx.send(());
    let events = waker.join().unwrap();
    // The guest powers off after its script; make sure QEMU is gone.
    for _ in 0..50 {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu_pid), None).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu_pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    let lines: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("R "))
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_owned(), v.trim().to_owned())
        })
        .collect();
    let r: HashMap<&str, &str> = lines
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let get = |k: &str| -> &str {
        r.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no '{k}' in the VM's output:\n{text}"))
    };
    let pos = |k: &str| lines.iter().position(|(n, _)| n == k).unwrap();
    let secs = |k: &str| -> i64 { get(k).parse().unwrap() };

    // Freeze everything in the guest: the disk froze, the writer waited, SIGTERM thawed.
    assert_eq!(get("freeze-all"), "ok Count(1)");
    assert_eq!(get("writer-file-while-frozen"), "no");
    assert!(
        get("state-file").contains("\"mountpoints\":[\"/mnt/d\"]"),
        "{}",
        get("state-file")
    );
    assert_eq!(get("hold-exit"), "exit-thaw 1");
    assert!(pos("writer-done") > pos("writer-file-while-frozen"));
    assert_eq!(get("writer-content"), "hi");

    // The clock and the RTC, through hwclock and through the RTC ioctls.
    assert_eq!(get("settime-hwclock"), "ok Done");
    assert!((1_893_456_000..1_893_456_060).contains(&secs("date-hwclock")));
    assert!(
        get("rtc-hwclock").contains("2030"),
        "{}",
        get("rtc-hwclock")
    );
    assert_eq!(get("settime-ioctl"), "ok Done");
    assert!((1_924_992_000..1_924_992_060).contains(&secs("date-ioctl")));
    assert!(
        get("rtc-ioctl").contains("2031"),
        "RTC not set by ioctl: {}",
        get("rtc-ioctl")
    );
    assert_eq!(get("fromrtc-ioctl"), "ok Done");
    assert!((1_924_992_000..1_924_992_600).contains(&secs("date-fromrtc-ioctl")));
    assert_eq!(get("fromrtc-hwclock"), "ok Done");
    assert!((1_924_992_000..1_924_992_600).contains(&secs("date-fromrtc-hwclock")));
    assert_eq!(get("settime-invalid"), "err Invalid time");

    // vCPUs.
    assert_eq!(get("cpus-before"), "0-1");
    assert_eq!(get("vcpu-off"), "ok VcpusProcessed(1)");
    assert_eq!(get("cpus-off"), "0");
    assert_eq!(get("vcpu-on"), "ok VcpusProcessed(1)");
    assert_eq!(get("cpus-on"), "0-1");
    assert_eq!(
        get("vcpu-prefix"),
        "ok VcpusProcessed(1)",
        "stops at the missing cpu7"
    );
    assert_eq!(
        get("cpus-prefix"),
        "0-1",
        "the entry after the failure was not applied"
    );
    assert_eq!(
        get("vcpu0-off"),
        "err logical processor #0 can't be offlined"
    );

    // Memory blocks.
    let block = get("memblock").split(' ').next().unwrap().to_owned();
    assert!(get("memblock").ends_with("offline"), "{}", get("memblock"));
    assert_eq!(
        get("mem-on"),
        format!("ok MemoryBlocks([({block}, Success)])")
    );
    assert_eq!(get("mem-state-on"), "online");
    assert_eq!(
        get("mem-off"),
        format!("ok MemoryBlocks([({block}, Success)])")
    );
    assert_eq!(get("mem-state-off"), "offline");
    assert!(
        get("mem-boot-off").starts_with("ok MemoryBlocks([(0, OperationFailed("),
        "{}",
        get("mem-boot-off")
    );
    assert_eq!(get("mem-missing"), "ok MemoryBlocks([(99999, NotFound)])");

    // The password, without chpasswd: the shadow file edited, checked here with openssl.
    assert_eq!(get("chpasswd-present"), "none");
    assert_eq!(get("password"), "ok Done");
    let entry: Vec<&str> = get("shadow").split(':').collect();
    assert_eq!(entry[0], "alice");
    assert_eq!(openssl_sha512("vm s3cret", entry[1]), entry[1]);
    assert_eq!(&entry[3..], ["0", "99999", "7", "", "", ""]);

    // Suspend to RAM through sysfs: QEMU saw the guest suspend; we woke it.
    assert_eq!(get("suspend"), "ok Done");
    assert!(pos("suspend") > pos("suspend-start"));
    let s = events.iter().position(|e| e == "SUSPEND");
    let w = events.iter().position(|e| e == "WAKEUP");
    assert!(
        matches!((s, w), (Some(s), Some(w)) if s < w),
        "QMP events: {events:?}"
    );
}
