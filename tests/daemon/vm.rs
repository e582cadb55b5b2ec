//! `guestd run` with no `--channel` and no configuration in a QEMU TCG guest (the static binary
//! in the initramfs): both oVirt port names present at boot (oVirt answers on the current one
//! only), then the QGA port hot-plugged through QMP (`chardev-add`, `device_add virtserialport`)
//! while the agent runs: QGA starts answering on it, beside oVirt. The port is then unplugged and
//! plugged again with a new chardev, and QGA answers there too; the host end disconnecting and
//! coming back is survived on both channels.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support;
use crate::support::vm::{QgaClient, Vm, VmOptions, connect_retry, vm_available};

pub(crate) const QGA: &str = "org.qemu.guest_agent.0";
const OVIRT: &str = "ovirt-guest-agent.0";
const LEGACY: &str = "com.redhat.rhevm.vdsm";
/// The guest runs under TCG, roughly ten times slower than the host.
pub(crate) const VM_T: Duration = Duration::from_secs(90);

/// Reads oVirt lines from the host end of the port.
pub(crate) struct OvirtHost {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl OvirtHost {
    pub(crate) fn connect(sock: &Path) -> Self {
        let stream = connect_retry(sock, VM_T).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        OvirtHost {
            stream,
            buf: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// Messages until one named `name` arrives (that one included).
    pub(crate) fn until(&mut self, name: &str, limit: Duration) -> Result<Vec<Value>, Vec<Value>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while start.elapsed() < limit {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    let hit = v["__name__"] == name;
                    seen.push(v);
                    if hit {
                        return Ok(seen);
                    }
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(seen),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        Err(seen)
    }
}

pub(crate) fn names(v: &[Value]) -> String {
    v.iter()
        .map(|m| m["__name__"].as_str().unwrap_or("?").to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nothing arrives on `sock` within a few seconds.
fn silent(sock: &Path) -> Result<(), String> {
    let mut s = UnixStream::connect(sock).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(n) => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => Ok(()),
    }
}

#[test]
fn vm_discovery_every_protocol_and_a_hot_plugged_qga_port() {
    if !support::require_peer(vm_available(), "QEMU and ../shared/peers/vm") {
        return;
    }
    let mut vm = Vm::boot(VmOptions {
        ports: vec![OVIRT.into(), LEGACY.into()],
        qmp: true,
        // Debug logs show the uevents that picked the hot-plugged port up.
        init_cmd: "exec guestd --log-level debug run".into(),
        ..VmOptions::default()
    });

    // oVirt on the current port: the start batch comes unprompted, and a refresh is answered.
    let mut ovirt = OvirtHost::connect(vm.port(OVIRT));
    ovirt.send(r#"{"apiVersion": 3, "__name__": "refresh"}"#);
    let got = ovirt
        .until("host-name", VM_T)
        .unwrap_or_else(|g| panic!("no oVirt report: {}\n{}", names(&g), vm.diagnostics()));
    assert!(
        got.iter().any(|m| m["__name__"] == "heartbeat"),
        "{}",
        names(&got)
    );
    // Never on the legacy port while the current one is there (VDSM reads only that one).
    silent(vm.port(LEGACY)).unwrap_or_else(|d| panic!("the legacy port got: {d}"));

    // Hot-plug the QGA port with a new chardev; the agent picks it up by itself.
    let qga_sock = vm.dir.path().join("hp1.sock");
    let mut qmp = vm.qmp();
    qmp.add_port("hpqga1", QGA, &qga_sock)
        .unwrap_or_else(|e| panic!("hot-plug: {e}"));
    let mut qga =
        QgaClient::connect(&qga_sock, VM_T).unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    assert_eq!(qga.ok("guest-ping", None), json!({}));
    assert_eq!(
        qga.ok("guest-get-host-name", None)["host-name"],
        json!("guestd-vm")
    );
    assert!(
        vm.console_text().contains("device event"),
        "the hot-plug was not seen as a uevent\n{}",
        vm.diagnostics()
    );

    // All three names at once now: each protocol still answers on its port.
    ovirt.send(r#"{"__name__": "echo", "n": 1}"#);
    let e = ovirt.until("echo", VM_T).unwrap();
    assert_eq!(e.last().unwrap()["n"], 1);
    silent(vm.port(LEGACY)).unwrap_or_else(|d| panic!("the legacy port got: {d}"));

    // The hosts go away and come back: both channels keep serving.
    drop(ovirt);
    let mut ovirt = OvirtHost::connect(vm.port(OVIRT));
    ovirt.send(r#"{"apiVersion": 3, "__name__": "refresh"}"#);
    ovirt
        .until("host-name", VM_T)
        .unwrap_or_else(|g| panic!("after reconnect: {}", names(&g)));
    qga.reconnect(VM_T).unwrap();
    assert_eq!(qga.ok("guest-ping", None), json!({}));

    // Unplug: the agent releases the port ...
    drop(qga);
    qmp.remove_port("hpqga1").unwrap();
    assert!(
        vm.wait_console("releasing channel", VM_T),
        "the unplugged port was not released\n{}",
        vm.diagnostics()
    );
    // ... and serves it again when it is plugged back with another chardev.
    let qga_sock2 = vm.dir.path().join("hp2.sock");
    qmp.add_port("hpqga2", QGA, &qga_sock2)
        .unwrap_or_else(|e| panic!("re-plug: {e}"));
    let mut qga = QgaClient::connect(&qga_sock2, VM_T)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    let info = qga.ok("guest-info", None);
    assert!(info["supported_commands"].as_array().unwrap().len() >= 40);
    ovirt.send(r#"{"__name__": "echo", "n": 2}"#);
    assert_eq!(ovirt.until("echo", VM_T).unwrap().last().unwrap()["n"], 2);

    // Power off through QGA: the guest goes down.
    assert_eq!(
        qga.execute_no_reply("guest-shutdown", None, Duration::from_secs(5)),
        None
    );
    assert!(
        vm.wait_exit(VM_T).is_some(),
        "the guest did not power off\n{}",
        vm.diagnostics()
    );
}
