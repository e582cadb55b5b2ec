//! ssh host keys, template cleanup, arming, and the whole path: pairs from the manager mapped,
//! dispatched as an action, applied to a fixture root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use guestd_core::EventBus;
use guestd_core::action::{Action, Outcome, Secret};
use guestd_core::actions::instance::{
    InstanceConfig, InstanceRequest, Module, Status, cleanup, configure,
    delegate_to_ovm_template_config, disable_initial_config, enable_initial_config,
    initial_config_enabled,
};
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_protocols::ovmd::template::{ROOT_PASSWORD, map_pairs, render_list};

use super::fixtures::{self, Root};
use crate::support;

fn old_keys(r: &Root) {
    for k in ["rsa", "ecdsa", "ed25519"] {
        r.write_mode(&format!("etc/ssh/ssh_host_{k}_key"), "OLD PRIVATE\n", 0o600);
        r.write(&format!("etc/ssh/ssh_host_{k}_key.pub"), "OLD PUBLIC\n");
    }
}

#[test]
fn ssh_keys_regenerated_with_ssh_keygen() {
    if !support::require_peer(
        support::have_command("ssh-keygen"),
        "ssh-keygen (openssh-client)",
    ) {
        return;
    }
    let r = fixtures::debian();
    old_keys(&r);
    r.mkdir("usr/bin");
    std::os::unix::fs::symlink(
        std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join("ssh-keygen"))
            .find(|p| p.is_file())
            .unwrap(),
        r.p("usr/bin/ssh-keygen"),
    )
    .unwrap();
    let cfg = InstanceConfig {
        regenerate_ssh_host_keys: true,
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert_eq!(
        rep.find(Module::Ssh, "host keys generated").unwrap().status,
        Status::Applied
    );
    for k in ["rsa", "ecdsa", "ed25519"] {
        let private = r.p(&format!("etc/ssh/ssh_host_{k}_key"));
        assert_ne!(fs::read_to_string(&private).unwrap(), "OLD PRIVATE\n");
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(r.p(&format!("etc/ssh/ssh_host_{k}_key.pub")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen -l rejects the new {k} key"
        );
    }
}

#[test]
fn ssh_keys_at_boot_without_ssh_keygen() {
    // Debian-like: no sshd-keygen units, so guestd's unit is installed and enabled.
    let r = fixtures::debian();
    old_keys(&r);
    let cfg = InstanceConfig {
        regenerate_ssh_host_keys: true,
        ..Default::default()
    };
    let rep = configure(&cfg, &r.paths());
    assert!(rep.is_success(), "{rep}");
    assert!(!r.exists("etc/ssh/ssh_host_rsa_key"));
    assert!(!r.exists("etc/ssh/ssh_host_ed25519_key.pub"));
    let unit = r.read("etc/systemd/system/guestd-ssh-keygen.service");
    assert!(unit.contains("ExecStart=/usr/bin/ssh-keygen -A"));
    assert!(r.exists("etc/systemd/system/multi-user.target.wants/guestd-ssh-keygen.service"));
    if support::require_peer(support::have_command("systemctl"), "systemctl (--root)") {
        let out = Command::new("systemctl")
            .arg(format!("--root={}", r.path().display()))
            .args(["is-enabled", "guestd-ssh-keygen.service"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "enabled");
    }
    // Oracle Linux-like: sshd-keygen does it, nothing installed.
    let o = fixtures::oracle_linux();
    old_keys(&o);
    o.write("usr/lib/systemd/system/sshd-keygen@.service", "[Unit]\n");
    let rep = configure(&cfg, &o.paths());
    assert!(rep.is_success(), "{rep}");
    assert!(!o.exists("etc/systemd/system/guestd-ssh-keygen.service"));
}

fn instance_state(r: &Root) {
    old_keys(r);
    r.write_mode(
        "etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
        0o444,
    );
    r.write(
        "var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    r.write("var/lib/systemd/random-seed", "seed");
    r.write("var/lib/dhclient/dhclient-eth0.leases", "lease {}\n");
    r.write("var/lib/dhcp/dhclient.eth0.leases", "lease {}\n");
    r.write("var/lib/dhcp/keep-me", "not a lease\n");
    r.write(
        "var/lib/NetworkManager/internal-abc-eth0.lease",
        "ADDRESS=1\n",
    );
    r.write("var/lib/NetworkManager/NetworkManager.state", "[main]\n");
    r.write(
        "etc/udev/rules.d/70-persistent-net.rules",
        "SUBSYSTEM==\"net\"\n",
    );
    r.write("etc/udev/rules.d/99-custom.rules", "# keep\n");
    r.write("var/log/messages", "secret log\n");
    r.write("var/log/messages-20240101", "old\n");
    r.write("var/log/apt/history.log", "installed things\n");
    r.write("var/log/apt/history.log.1.gz", "gz");
    r.write("var/log/journal/0123/system.journal", "j");
    r.write("root/.bash_history", "rm -rf /\n");
    r.write("root/.lesshst", "x");
    r.write("home/alice/.bash_history", "ls\n");
}

#[test]
fn cleanup_removes_instance_state() {
    for make in [fixtures::oracle_linux as fn() -> Root, fixtures::debian] {
        let r = make();
        instance_state(&r);
        if r.exists("etc/sysconfig/network-scripts") {
            r.write(
                "etc/NetworkManager/system-connections/eth0.nmconnection",
                "[connection]\nid=eth0\n[ethernet]\nmac-address=52:54:00:AA:BB:CC\n",
            );
        }
        let rep = cleanup(&r.paths());
        assert!(rep.is_success(), "{rep}");
        for gone in [
            "etc/ssh/ssh_host_rsa_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "var/lib/dbus/machine-id",
            "var/lib/systemd/random-seed",
            "var/lib/dhclient/dhclient-eth0.leases",
            "var/lib/dhcp/dhclient.eth0.leases",
            "var/lib/NetworkManager/internal-abc-eth0.lease",
            "etc/udev/rules.d/70-persistent-net.rules",
            "var/log/messages-20240101",
            "var/log/apt/history.log.1.gz",
            "var/log/journal/0123",
            "root/.lesshst",
        ] {
            assert!(!r.exists(gone), "{gone} still there");
        }
        for kept in [
            "var/lib/dhcp/keep-me",
            "var/lib/NetworkManager/NetworkManager.state",
            "etc/udev/rules.d/99-custom.rules",
        ] {
            assert!(r.exists(kept), "{kept} removed");
        }
        for empty in [
            "etc/machine-id",
            "var/log/messages",
            "var/log/apt/history.log",
            "root/.bash_history",
            "home/alice/.bash_history",
        ] {
            assert_eq!(r.read(empty), "", "{empty} not emptied");
        }
        if r.exists("etc/sysconfig/network-scripts/ifcfg-eth0") {
            let ifcfg = r.read("etc/sysconfig/network-scripts/ifcfg-eth0");
            assert!(!ifcfg.contains("HWADDR"), "{ifcfg}");
            assert!(ifcfg.contains("DEVICE=eth0"));
            assert!(
                !r.read("etc/NetworkManager/system-connections/eth0.nmconnection")
                    .contains("mac-address")
            );
        } else {
            // Debian: host keys come back at boot through guestd's unit.
            assert!(
                r.exists("etc/systemd/system/multi-user.target.wants/guestd-ssh-keygen.service")
            );
        }
        // Idempotent.
        assert!(cleanup(&r.paths()).is_success());
    }
}

#[test]
fn arming_flags() {
    let r = fixtures::oracle_linux();
    assert!(!initial_config_enabled(&r.paths()));
    enable_initial_config(&r.paths()).unwrap();
    assert!(initial_config_enabled(&r.paths()));
    assert_eq!(r.read("etc/guestd/initial-config"), "INITIAL_CONFIG=yes\n");
    assert!(
        !r.exists("etc/sysconfig/ovm-template-initial-config"),
        "not created for Oracle"
    );
    disable_initial_config(&r.paths()).unwrap();
    assert!(!initial_config_enabled(&r.paths()));
    assert_eq!(r.read("etc/guestd/initial-config"), "INITIAL_CONFIG=no\n");

    // With Oracle's package installed its flag follows, other lines kept.
    r.write(
        "etc/sysconfig/ovm-template-initial-config",
        "# Initial config\nINITIAL_CONFIG=no\n",
    );
    enable_initial_config(&r.paths()).unwrap();
    assert_eq!(
        r.read("etc/sysconfig/ovm-template-initial-config"),
        "# Initial config\nINITIAL_CONFIG=yes\n"
    );
    disable_initial_config(&r.paths()).unwrap();
    assert!(
        r.read("etc/sysconfig/ovm-template-initial-config")
            .contains("INITIAL_CONFIG=no")
    );
    // Oracle's flag alone arms it too (a template prepared with Oracle's tools).
    fs::remove_file(r.p("etc/guestd/initial-config")).unwrap();
    r.write(
        "etc/sysconfig/ovm-template-initial-config",
        "INITIAL_CONFIG=\"YES\"\n",
    );
    assert!(initial_config_enabled(&r.paths()));
}

/// What the ovmd session does when root-password arrives: map, dispatch, report.
#[tokio::test]
async fn manager_pairs_through_the_dispatcher() {
    for make in [fixtures::oracle_linux as fn() -> Root, fixtures::debian] {
        let r = make();
        let pairs = vec![
            (
                "com.oracle.linux.network.hostname".to_string(),
                "clone01".to_string(),
            ),
            ("com.oracle.linux.network.device.0".into(), "eth0".into()),
            ("com.oracle.linux.network.onboot.0".into(), "yes".into()),
            (
                "com.oracle.linux.network.bootproto.0".into(),
                "static".into(),
            ),
            (
                "com.oracle.linux.network.ipaddr.0".into(),
                "192.0.2.20".into(),
            ),
            (
                "com.oracle.linux.network.netmask.0".into(),
                "255.255.255.0".into(),
            ),
            (
                "com.oracle.linux.network.gateway.0".into(),
                "192.0.2.1".into(),
            ),
            (
                "com.oracle.linux.datetime.timezone".into(),
                "Europe/Paris".into(),
            ),
            ("com.example.custom".into(), "kept".into()),
            (ROOT_PASSWORD.into(), "Welcome!".into()),
        ];
        let mapped = map_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(mapped.unhandled, ["com.example.custom"]);
        let cfg = ActionsConfig {
            paths: r.paths(),
            ..Default::default()
        };
        let d = default_dispatcher(&cfg, &EventBus::new(16));
        let req = InstanceRequest {
            config: mapped.config,
            ovm_list: Some(render_list(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )),
        };
        let out = d
            .dispatch(Action::ConfigureInstance(Box::new(req)))
            .await
            .unwrap();
        let Outcome::Instance(rep) = out else {
            panic!("{out:?}")
        };
        assert!(rep.is_success(), "{rep}");
        assert!(!format!("{rep}{rep:?}").contains("Welcome!"));
        assert_eq!(r.read("etc/hostname"), "clone01\n");
        assert!(r.read("etc/shadow").starts_with("root:$6$"));
        assert!(
            fs::read_link(r.p("etc/localtime"))
                .unwrap()
                .ends_with("Europe/Paris")
        );

        // Arm, then clean up, through the dispatcher too.
        let out = d.dispatch(Action::SetInitialConfig(true)).await.unwrap();
        assert!(matches!(out, Outcome::Instance(_)));
        assert!(initial_config_enabled(&r.paths()));
        let Outcome::Instance(rep) = d.dispatch(Action::CleanupInstance).await.unwrap() else {
            panic!()
        };
        assert!(rep.is_success(), "{rep}");
    }
}

#[test]
fn clock_request_in_the_new_zone() {
    let r = fixtures::debian();
    let cfg = InstanceConfig {
        timezone: Some("America/New_York".into()),
        datetime: guestd_core::actions::instance::DateTime::new(2011, 4, 7, 9, 2, 42),
        ..Default::default()
    };
    let a = guestd_core::actions::instance::datetime::set_time_action(&cfg, &r.paths()).unwrap();
    let want = if std::path::Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        1_302_166_962 + 4 * 3600 // 09:02:42 EDT
    } else {
        1_302_166_962
    };
    assert_eq!(
        a,
        Action::SetTime {
            nanos: Some(want * 1_000_000_000)
        }
    );
    assert!(
        guestd_core::actions::instance::datetime::set_time_action(
            &InstanceConfig::default(),
            &r.paths()
        )
        .is_none()
    );
}

#[test]
fn delegation_feeds_the_list_on_stdin_and_reports_status_only() {
    let dir = support::short_tmpdir();
    let got = dir.path().join("stdin");
    let tool = dir.path().join("ovm-template-config");
    fs::write(
        &tool,
        format!("#!/bin/sh\n[ \"$1 $2\" = \"--stdin configure\" ] || exit 9\ncat > '{}'\nexit ${{RC:-0}}\n", got.display()),
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let list = render_list([
        ("com.oracle.linux.network.hostname", "db01"),
        (ROOT_PASSWORD, "pw!"),
    ]);
    let rep = delegate_to_ovm_template_config(&tool, &list);
    assert!(rep.is_success(), "{rep}");
    assert_eq!(
        fs::read_to_string(&got).unwrap(),
        "{\"com.oracle.linux.network.hostname\":\"db01\"}\n{\"com.oracle.linux.root-password\":\"pw!\"}\n"
    );
    // A failing tool is a failed entry with its status, nothing else.
    let failing = dir.path().join("failing");
    fs::write(
        &failing,
        "#!/bin/sh\ncat >/dev/null\necho 'pw! leaked' >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&failing, fs::Permissions::from_mode(0o755)).unwrap();
    let rep = delegate_to_ovm_template_config(&failing, &Secret::new("x"));
    let e = &rep.entries[0];
    assert_eq!(e.module, Module::Delegate);
    assert_eq!(e.status, Status::Failed("exit status 3".into()));
}

/// Records the clock requests instead of setting the clock.
#[derive(Debug, Default)]
struct ClockRecorder(std::sync::Mutex<Vec<Option<i64>>>);

#[async_trait::async_trait]
impl guestd_core::action::ActionHandler for ClockRecorder {
    fn kinds(&self) -> &[guestd_core::action::ActionKind] {
        &[guestd_core::action::ActionKind::SetTime]
    }
    async fn run(&self, action: Action) -> Result<Outcome, guestd_core::action::ActionError> {
        let Action::SetTime { nanos } = action else {
            panic!("{action:?}")
        };
        self.0.lock().unwrap().push(nanos);
        Ok(Outcome::Done)
    }
}

/// The ovmd first-boot trigger end to end on a fixture root: armed or not through the
/// dispatcher, the zone set, then the clock requested through `SetTime` with the manager's
/// wall-clock time read in the new zone, then disarmed.
#[tokio::test]
async fn first_boot_trigger_sets_the_clock_in_the_new_zone() {
    use guestd_protocols::ovmd::first_boot::{TriggerOutcome, run};
    let r = fixtures::debian();
    let pairs: Vec<(String, String)> = [
        ("com.oracle.linux.datetime.datetime", "2011-4-7-9-2-42"),
        ("com.oracle.linux.datetime.timezone", "America/New_York"),
        (ROOT_PASSWORD, "Welcome!"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = ActionsConfig {
        paths: r.paths(),
        ..Default::default()
    };
    let agent = |d: guestd_core::action::Dispatcher| guestd_core::Agent {
        paths: r.paths(),
        facts: std::sync::Arc::new(guestd_reporters::SystemFacts::new(r.paths())),
        actions: std::sync::Arc::new(d),
        events: EventBus::new(16),
    };
    let recorder = std::sync::Arc::new(ClockRecorder::default());
    let mut d = default_dispatcher(&cfg, &EventBus::new(16));
    d.register(recorder.clone());
    let a = agent(d);

    // Not armed: nothing is configured, no clock request.
    assert_eq!(run(Some(&a), &pairs).await, TriggerOutcome::NotArmed);
    assert!(fs::read_link(r.p("etc/localtime")).map_or(true, |l| !l.ends_with("America/New_York")));
    assert!(recorder.0.lock().unwrap().is_empty());
    assert_eq!(run(None, &pairs).await, TriggerOutcome::NotArmed);

    // Armed: zone first, then the clock, then disarmed.
    enable_initial_config(&r.paths()).unwrap();
    let out = run(Some(&a), &pairs).await;
    assert_eq!(
        out,
        TriggerOutcome::Applied("applied 3, skipped 0, failed 0".into()),
        "zone, root password, date and time"
    );
    assert!(
        fs::read_link(r.p("etc/localtime"))
            .unwrap()
            .ends_with("America/New_York")
    );
    let want = if std::path::Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        1_302_166_962 + 4 * 3600 // 2011-04-07 09:02:42 EDT
    } else {
        1_302_166_962
    };
    assert_eq!(*recorder.0.lock().unwrap(), [Some(want * 1_000_000_000)]);
    assert!(!initial_config_enabled(&r.paths()));

    // With the real clock handler, a fixture root never reaches the running clock: the
    // request is refused and reported as a failed item; the rest is applied.
    enable_initial_config(&r.paths()).unwrap();
    let a = agent(default_dispatcher(&cfg, &EventBus::new(16)));
    assert_eq!(
        run(Some(&a), &pairs).await,
        TriggerOutcome::Applied("applied 2, skipped 0, failed 1".into())
    );
    assert!(!initial_config_enabled(&r.paths()));
}
