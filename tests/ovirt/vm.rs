//! guestd speaking oVirt inside the QEMU TCG VM, over both port names: the legacy port alone
//! (found through sysfs, no udev links), then both ports, where the current one must win.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::json;

use super::host::{Host, REFRESH, names};
use crate::support;
use crate::support::vm::{Vm, VmOptions, connect_retry, vm_available};

const NEW: &str = "ovirt-guest-agent.0";
const LEGACY: &str = "com.redhat.rhevm.vdsm";
/// The guest runs under TCG, roughly ten times slower than the host.
const VM_T: Duration = Duration::from_secs(90);

const RUN: &str = "guestd --log-level debug run --statedir /run/guestd --channel ovirt \
    --ovirt-heartbeat 0.5 --ovirt-inventory-interval 3 --ovirt-user-interval 2";

fn has(msgs: &[serde_json::Value], name: &str) -> bool {
    msgs.iter().any(|m| m["__name__"] == name)
}

#[test]
fn vm_legacy_port_then_preferred_port() {
    if !support::require_peer(vm_available(), "QEMU and ../shared/peers/vm") {
        return;
    }
    // 1. Only the legacy port, and no /dev/virtio-ports links: the fallback name via sysfs.
    let mut vm = Vm::boot(VmOptions {
        ports: vec![LEGACY.into()],
        no_port_links: true,
        init_cmd: RUN.into(),
        ..VmOptions::default()
    });
    let stream = connect_retry(vm.port(LEGACY), VM_T).unwrap();
    let mut host = Host::new(stream, Some(0), 0);
    // VDSM sends refresh on every connect; it waits in QEMU until the agent opens the port.
    host.send(REFRESH);
    let got = host
        .until_match(|m| m["__name__"] == "containers", VM_T)
        .unwrap_or_else(|got| panic!("no negotiation: {}\n{}", names(&got), vm.diagnostics()));
    assert_eq!(host.api_versions_sent, vec![3], "{}", names(&got));
    let all = host.until("os-info", VM_T);
    let seen: Vec<_> = host.seen.clone();
    let host_name = seen.iter().find(|m| m["__name__"] == "host-name").unwrap();
    assert!(
        host_name["name"].as_str().unwrap().starts_with("guestd-vm"),
        "{host_name}"
    );
    let os = all.iter().find(|m| m["__name__"] == "os-info").unwrap();
    assert_eq!(os["distribution"], "Debian GNU/Linux", "{os}");
    assert_eq!(os["version"], "12", "{os}");
    assert_eq!(os["arch"], "x86_64", "{os}");
    assert!(
        has(&seen, "os-version") && has(&seen, "active-user"),
        "{}",
        names(&seen)
    );

    host.send(r#"{"__name__": "echo", "in": "vm"}"#);
    let e = host.until("echo", VM_T);
    assert_eq!(e.last().unwrap(), &json!({"__name__": "echo", "in": "vm"}));
    host.send(
        r#"{"type": "before_hibernation", "reply_id": "vm-1", "__name__": "lifecycle-event"}"#,
    );
    let c = host.until("completion", VM_T);
    assert_eq!(c.last().unwrap()["reply_id"], "vm-1");

    // The host closes the channel and comes back (VDSM restart): same agent, still at 3.
    drop(host);
    let stream = connect_retry(vm.port(LEGACY), VM_T).unwrap();
    let mut host = Host::new(stream, Some(3), 3);
    host.send(REFRESH);
    let back = host.until("containers", VM_T);
    assert!(has(&back, "session-startup"), "{}", names(&back));
    let hb = host.until("heartbeat", VM_T);
    assert_eq!(hb.last().unwrap()["apiVersion"], 3);
    assert!(host.api_versions_sent.is_empty());

    // Desktop commands: this guest has no logind, so they fail in the log and the agent
    // keeps serving.
    host.send(r#"{"__name__": "lock-screen"}"#);
    host.send(r#"{"__name__": "log-off"}"#);
    host.send(r#"{"__name__": "echo", "after": "desktop"}"#);
    host.until("echo", VM_T);
    // Power off with VDSM's exact bytes and no delay.
    host.send(r#"{"timeout": 0, "message": "System going down", "reboot": "False", "__name__": "shutdown"}"#);
    assert!(
        vm.wait_exit(VM_T).is_some(),
        "the guest did not power off\n{}",
        vm.diagnostics()
    );
    drop(vm);

    // 2. Both ports: the agent serves the current one and leaves the legacy one alone.
    let vm = Vm::boot(VmOptions {
        ports: vec![NEW.into(), LEGACY.into()],
        init_cmd: RUN.into(),
        ..VmOptions::default()
    });
    let stream = connect_retry(vm.port(NEW), VM_T).unwrap();
    let mut host = Host::new(stream, Some(3), 0);
    let first = host
        .until_match(|m| m["__name__"] == "heartbeat", VM_T)
        .unwrap_or_else(|got| panic!("{}\n{}", names(&got), vm.diagnostics()));
    assert_eq!(first.last().unwrap()["apiVersion"], 0);
    assert!(has(&first, "session-startup"), "{}", names(&first));
    // VDSM 3 -> 0 -> 3: api-version 3, then the refresh batch.
    host.until("containers", VM_T);
    assert_eq!(host.api_versions_sent, vec![3]);
    let mut legacy = UnixStream::connect(vm.port(LEGACY)).unwrap();
    legacy
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    match legacy.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "the legacy port got data: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}
