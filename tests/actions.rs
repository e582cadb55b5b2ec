//! The action layer against the real thing: filesystem freeze and thaw on loop-mounted ext4
//! and xfs images (writers provably block and resume), hooks, the watchdog, a killed agent's
//! freeze undone by the next one, fstrim, passwords verified with openssl, ssh keys verified
//! with ssh-keygen, all on test images and test users in a fixture root; and set-time, vCPUs,
//! memory blocks, freeze-all, the shadow-file password fallback and suspend inside the QEMU VM.
//!
//! Nothing here touches the host's own filesystems, clock or users: freezes go through a
//! fixture root whose mountinfo lists only the test images (or a freeze list naming only
//! them), and account files live in temporary directories.
// Test helpers panic on failure, like the tests they serve. The freeze lock is held across
// awaits on purpose: it serialises whole tests, each on its own runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::await_holding_lock)]

mod support;
#[path = "actions/vm.rs"]
mod vm;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guestd_core::action::{Action, ActionError, FreezeStatus, Outcome, Secret, SshKeysOp};
use guestd_core::actions::{ActionsConfig, default_dispatcher};
use guestd_core::{Event, EventBus, Paths};

/// Tests that freeze run one at a time: a thaw thaws every listed filesystem, including
/// another test's.
static FREEZE: Mutex<()> = Mutex::new(());

fn freeze_lock() -> MutexGuard<'static, ()> {
    FREEZE.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loop-mounted test filesystems under a fixture root whose mountinfo lists only them.
struct Images {
    dir: tempfile::TempDir,
    /// (filesystem type, where it is really mounted, its mount point as the fixture names it)
    mounts: Vec<(String, PathBuf, String)>,
}

impl Images {
    fn new(kinds: &[&str]) -> Option<Images> {
        let tools = kinds
            .iter()
            .all(|k| support::have_command(&format!("mkfs.{k}")));
        if !support::require_peer(
            is_root() && tools && Path::new("/dev/loop-control").exists(),
            "root, loop devices and mkfs.ext4/mkfs.xfs (e2fsprogs, xfsprogs) for freeze tests",
        ) {
            return None;
        }
        let dir = support::short_tmpdir();
        let root = dir.path().join("root");
        let mut images = Images {
            dir,
            mounts: Vec::new(),
        };
        for kind in kinds {
            let img = images.dir.path().join(format!("{kind}.img"));
            // mkfs.xfs refuses filesystems under 300 MB; the file stays sparse.
            let size = if *kind == "xfs" { "320M" } else { "64M" };
            run("truncate", &["-s", size, img.to_str().unwrap()]);
            run(&format!("mkfs.{kind}"), &["-q", img.to_str().unwrap()]);
            let shown = format!("/m/{kind}");
            let real = root.join(&shown[1..]);
            std::fs::create_dir_all(&real).unwrap();
            run(
                "mount",
                &["-o", "loop", img.to_str().unwrap(), real.to_str().unwrap()],
            );
            images.mounts.push((kind.to_string(), real, shown));
        }
        // The fixture's mountinfo: the kernel's lines for our mounts, renamed to their place
        // under the fixture root, plus a virtual filesystem that must be left alone.
        let live = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut fixture = String::from("20 1 0:24 / /run rw,nosuid - tmpfs tmpfs rw\n");
        for (_, real, shown) in &images.mounts {
            let line = live
                .lines()
                .find(|l| l.split(' ').nth(4) == Some(real.to_str().unwrap()))
                .expect("our mount in /proc/self/mountinfo");
            let mut f: Vec<&str> = line.split(' ').collect();
            f[4] = shown;
            fixture.push_str(&f.join(" "));
            fixture.push('\n');
        }
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(root.join("proc/self/mountinfo"), fixture).unwrap();
        Some(images)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> ActionsConfig {
        ActionsConfig {
            paths: Paths::under(self.root()),
            state_dir: self.state_dir(),
            fsfreeze_hook: None,
            freeze_watchdog: None,
            ..ActionsConfig::default()
        }
    }

    fn mount(&self, kind: &str) -> &Path {
        &self.mounts.iter().find(|m| m.0 == kind).unwrap().1
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for (_, real, _) in self.mounts.iter().rev() {
            // Whatever happened, never leave a test filesystem frozen or mounted.
            let _ = Command::new("fsfreeze").arg("-u").arg(real).output();
            for _ in 0..20 {
                let ok = Command::new("umount")
                    .arg(real)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A process that creates a file on `dir` and writes to it.
fn writer(dir: &Path, name: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("printf '{name}' > '{}'", dir.join(name).display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The writer is stuck: still running after a second and more, and seen in uninterruptible
/// sleep at consecutive looks (a loaded machine may take a while to even start it).
fn assert_blocked(child: &mut Child, what: &str) {
    let start = Instant::now();
    let mut d_in_a_row = 0;
    while start.elapsed() < Duration::from_secs(1) || d_in_a_row < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what}: writer finished on a frozen filesystem"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: writer not blocked in the kernel (state {:?})",
            proc_state(child.id())
        );
        d_in_a_row = if proc_state(child.id()) == Some('D') {
            d_in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn assert_completes(child: &mut Child, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what}: writer failed");
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: writer still blocked after the thaw"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_blocks_writers_on_ext4_and_xfs_until_thaw() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4", "xfs"]) else {
        return;
    };
    let events = EventBus::default();
    let mut rx = events.subscribe();
    let d = default_dispatcher(&img.config(), &events);
    let out = d
        .dispatch(Action::FsFreeze { mountpoints: None })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Count(2));
    let state = img.state_dir().join("fsfreeze.frozen");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        record["mountpoints"],
        serde_json::json!(["/m/ext4", "/m/xfs"])
    );
    let mut we = writer(img.mount("ext4"), "e");
    let mut wx = writer(img.mount("xfs"), "x");
    assert_blocked(&mut we, "ext4");
    assert_blocked(&mut wx, "xfs");
    assert_eq!(
        d.dispatch(Action::FsFreezeStatus).await.unwrap(),
        Outcome::FreezeStatus(FreezeStatus::Frozen)
    );
    // While frozen only status and thaw run; a second freeze is refused.
    assert!(matches!(
        d.dispatch(Action::FsFreeze { mountpoints: None }).await,
        Err(ActionError::Frozen)
    ));
    assert!(matches!(
        d.dispatch(Action::FsTrim { minimum: None }).await,
        Err(ActionError::Frozen)
    ));
    assert_eq!(d.dispatch(Action::FsThaw).await.unwrap(), Outcome::Count(2));
    assert_completes(&mut we, "ext4");
    assert_completes(&mut wx, "xfs");
    assert_eq!(
        std::fs::read_to_string(img.mount("ext4").join("e")).unwrap(),
        "e"
    );
    assert_eq!(
        std::fs::read_to_string(img.mount("xfs").join("x")).unwrap(),
        "x"
    );
    assert!(!state.exists());
    assert_eq!(d.dispatch(Action::FsThaw).await.unwrap(), Outcome::Count(0));
    assert_eq!(
        rx.recv().await.unwrap(),
        Event::FreezeChanged { frozen: true }
    );
    assert_eq!(
        rx.recv().await.unwrap(),
        Event::FreezeChanged { frozen: false }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_list_on_the_live_mount_table() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4", "xfs"]) else {
        return;
    };
    // The production path: the real /proc/self/mountinfo, and a list naming one test image.
    let cfg = ActionsConfig {
        paths: Paths::system(),
        ..img.config()
    };
    let d = default_dispatcher(&cfg, &EventBus::default());
    let ext4 = img.mount("ext4").to_str().unwrap().to_owned();
    let list = vec![ext4.clone(), "/nonexistent".to_owned(), format!("{ext4}/")];
    let out = d
        .dispatch(Action::FsFreeze {
            mountpoints: Some(list),
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Count(1));
    let mut we = writer(img.mount("ext4"), "e");
    let mut wx = writer(img.mount("xfs"), "x");
    assert_completes(&mut wx, "xfs (not in the list)");
    assert_blocked(&mut we, "ext4");
    let Outcome::Count(n) = d.dispatch(Action::FsThaw).await.unwrap() else {
        panic!("thaw answers a count");
    };
    assert!(n >= 1, "thawed {n}");
    assert_completes(&mut we, "ext4");
    let out = d
        .dispatch(Action::FsFreeze {
            mountpoints: Some(vec!["/nonexistent".into()]),
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Count(0));
    assert_eq!(
        d.dispatch(Action::FsFreezeStatus).await.unwrap(),
        Outcome::FreezeStatus(FreezeStatus::Thawed)
    );
}

fn hook_script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fsfreeze-hook");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_runs_before_freeze_and_after_thaw() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4"]) else {
        return;
    };
    let mnt = img.mount("ext4").to_owned();
    let log = img.dir.path().join("hook.log");
    // The hook writes into the filesystem itself: on `freeze` that only works if it runs
    // before the freeze, on `thaw` only after the thaw (else it would block until killed).
    let hook = hook_script(
        img.dir.path(),
        &format!(
            "echo \"$1\" >> {log}\necho \"$1\" > {mnt}/hook-$1\n\
             [ -e {flag}-$1 ] && exit 7\nexit 0",
            log = log.display(),
            mnt = mnt.display(),
            flag = img.dir.path().join("fail").display()
        ),
    );
    let cfg = ActionsConfig {
        fsfreeze_hook: Some(hook),
        hook_timeout: Duration::from_secs(5),
        ..img.config()
    };
    let d = default_dispatcher(&cfg, &EventBus::default());
    assert_eq!(
        d.dispatch(Action::FsFreeze { mountpoints: None })
            .await
            .unwrap(),
        Outcome::Count(1)
    );
    assert_eq!(d.dispatch(Action::FsThaw).await.unwrap(), Outcome::Count(1));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "freeze\nthaw\n");
    assert_eq!(
        std::fs::read_to_string(mnt.join("hook-freeze")).unwrap(),
        "freeze\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("hook-thaw")).unwrap(),
        "thaw\n"
    );

    // A failing freeze hook: the error, nothing frozen.
    std::fs::write(img.dir.path().join("fail-freeze"), "").unwrap();
    let e = d
        .dispatch(Action::FsFreeze { mountpoints: None })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "fsfreeze hook has failed with status 7");
    let mut w = writer(&mnt, "after-failed-hook");
    assert_completes(&mut w, "no freeze after a failed hook");
    std::fs::remove_file(img.dir.path().join("fail-freeze")).unwrap();

    // A failing thaw hook: the error, but thawed.
    std::fs::write(img.dir.path().join("fail-thaw"), "").unwrap();
    d.dispatch(Action::FsFreeze { mountpoints: None })
        .await
        .unwrap();
    let e = d.dispatch(Action::FsThaw).await.unwrap_err();
    assert_eq!(e.to_string(), "fsfreeze hook has failed with status 7");
    let mut w = writer(&mnt, "after-failed-thaw-hook");
    assert_completes(&mut w, "thawed though the thaw hook failed");
    assert_eq!(
        d.dispatch(Action::FsFreezeStatus).await.unwrap(),
        Outcome::FreezeStatus(FreezeStatus::Thawed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_thaws_when_no_thaw_comes() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["xfs"]) else {
        return;
    };
    let cfg = ActionsConfig {
        freeze_watchdog: Some(Duration::from_millis(1500)),
        ..img.config()
    };
    let events = EventBus::default();
    let mut rx = events.subscribe();
    let d = default_dispatcher(&cfg, &events);
    d.dispatch(Action::FsFreeze { mountpoints: None })
        .await
        .unwrap();
    let mut w = writer(img.mount("xfs"), "w");
    // Nobody thaws: the watchdog does, and the writer gets through.
    assert_completes(&mut w, "after the watchdog");
    let fired = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if rx.recv().await.unwrap() == Event::FreezeWatchdogFired {
                break;
            }
        }
    })
    .await;
    assert!(fired.is_ok(), "no FreezeWatchdogFired event");
    let status = d.dispatch(Action::FsFreezeStatus).await.unwrap();
    assert_eq!(
        status,
        Outcome::FreezeStatus(FreezeStatus::ThawedByWatchdog)
    );
    let status = d.dispatch(Action::FsFreezeStatus).await.unwrap();
    assert_eq!(status, Outcome::FreezeStatus(FreezeStatus::Thawed));
    assert!(!img.state_dir().join("fsfreeze.frozen").exists());
}

/// The example agent, built on first use.
fn actctl() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::fs::create_dir_all(&target).unwrap();
    let status = Command::new("flock")
        .arg(target.join(".actctl-build.lock"))
        .args([
            &cargo,
            "build",
            "-q",
            "-p",
            "guestd-core",
            "--example",
            "actctl",
        ])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "building the actctl example failed");
    target.join("debug/examples/actctl")
}

fn read_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim_end().to_owned()
}

#[test]
fn a_killed_agents_freeze_is_thawed_by_the_next_agent() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4", "xfs"]) else {
        return;
    };
    let bin = actctl();
    let common = |c: &mut Command| {
        c.arg("--root")
            .arg(img.root())
            .arg("--state")
            .arg(img.state_dir())
            .stdout(Stdio::piped());
    };
    let mut agent = Command::new(&bin);
    common(&mut agent);
    let mut agent = agent.args(["--hold", "freeze"]).spawn().unwrap();
    assert_eq!(read_line(&mut agent), "ok Count(2)");
    // kill -9: no thaw on the way out.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    agent.wait().unwrap();
    let mut w = writer(img.mount("xfs"), "w");
    assert_blocked(&mut w, "still frozen after the agent died");
    assert!(img.state_dir().join("fsfreeze.frozen").exists());
    // The next agent finds the state file and thaws at start-up.
    let mut next = Command::new(&bin);
    common(&mut next);
    let out = next.args(["wait-thawed", "30"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok FreezeStatus(Thawed)"
    );
    assert_completes(&mut w, "after the restart");
    assert!(!img.state_dir().join("fsfreeze.frozen").exists());
}

#[test]
fn sigterm_thaws_before_exit() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4"]) else {
        return;
    };
    let mut agent = Command::new(actctl())
        .arg("--root")
        .arg(img.root())
        .arg("--state")
        .arg(img.state_dir())
        .args(["--hold", "freeze"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(read_line(&mut agent), "ok Count(1)");
    let mut w = writer(img.mount("ext4"), "w");
    assert_blocked(&mut w, "frozen while the agent runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(read_line(&mut agent), "exit-thaw 1");
    assert!(agent.wait().unwrap().success());
    assert_completes(&mut w, "after SIGTERM");
    assert!(!img.state_dir().join("fsfreeze.frozen").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fstrim_trims_the_test_filesystems() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4", "xfs"]) else {
        return;
    };
    // Free space to discard: write and delete a file on each.
    for kind in ["ext4", "xfs"] {
        let f = img.mount(kind).join("big");
        std::fs::write(&f, vec![1u8; 8 << 20]).unwrap();
        std::fs::File::open(&f).unwrap().sync_all().unwrap();
        std::fs::remove_file(&f).unwrap();
    }
    let d = default_dispatcher(&img.config(), &EventBus::default());
    let Outcome::Trimmed(results) = d
        .dispatch(Action::FsTrim {
            minimum: Some(4096),
        })
        .await
        .unwrap()
    else {
        panic!("trim answers results");
    };
    let paths: Vec<&str> = results.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/m/xfs", "/m/ext4"], "last mounted first");
    for r in &results {
        assert_eq!(r.error, None, "{}", r.path);
        assert!(r.trimmed.unwrap() > 0, "{} trimmed nothing", r.path);
        assert!(r.minimum.unwrap() >= 4096);
    }
}

// ---------------------------------------------------------------------------------------------
// Passwords and ssh keys on test users in a fixture root.

fn account_root() -> tempfile::TempDir {
    let d = support::short_tmpdir();
    let etc = d.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4343:Alice:/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("shadow"),
        "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nalice:x:4343:\n").unwrap();
    std::fs::write(etc.join("login.defs"), "ENCRYPT_METHOD SHA512\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
    }
    std::fs::create_dir_all(d.path().join("home/alice")).unwrap();
    d
}

fn shadow_entry(root: &Path, user: &str) -> Vec<String> {
    std::fs::read_to_string(root.join("etc/shadow"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap()
        .split(':')
        .map(str::to_owned)
        .collect()
}

/// openssl's SHA-512 crypt of `password` with the salt (and rounds) of `hash`.
fn openssl_sha512(password: &str, hash: &str) -> String {
    let body = hash.strip_prefix("$6$").expect("a SHA-512 crypt hash");
    let salt = &body[..body.rfind('$').unwrap()];
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn set_password(user: &str, password: &str, crypted: bool) -> Action {
    Action::SetPassword {
        user: user.into(),
        password: Secret::new(password),
        crypted,
    }
}

#[tokio::test]
async fn passwords_with_chpasswd_in_a_fixture_root() {
    if !support::require_peer(
        is_root() && support::have_command("chpasswd") && support::have_command("openssl"),
        "root, chpasswd (passwd) and openssl for password tests",
    ) {
        return;
    }
    let d = account_root();
    let cfg = ActionsConfig {
        paths: Paths::under(d.path()),
        ..ActionsConfig::default()
    };
    let disp = default_dispatcher(&cfg, &EventBus::default());
    // Plain: chpasswd -R hashes it with the root's ENCRYPT_METHOD.
    let pw = "correct horse: battery staple";
    assert_eq!(
        disp.dispatch(set_password("alice", pw, false))
            .await
            .unwrap(),
        Outcome::Done
    );
    let entry = shadow_entry(d.path(), "alice");
    assert!(entry[1].starts_with("$6$"), "{entry:?}");
    assert_eq!(openssl_sha512(pw, &entry[1]), entry[1]);
    assert_ne!(openssl_sha512("wrong", &entry[1]), entry[1]);
    assert_ne!(entry[2], "19000", "last-change day updated");
    // Crypted: stored as given.
    let hash = openssl_sha512("other", "$6$saltsalt$x");
    disp.dispatch(set_password("alice", &hash, true))
        .await
        .unwrap();
    assert_eq!(shadow_entry(d.path(), "alice")[1], hash);
    // Errors, in qemu-ga's words.
    let e = disp
        .dispatch(set_password("nobody", "x", false))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "child process has failed to set user password"
    );
    let e = disp
        .dispatch(set_password("alice", "a\nb", false))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "forbidden characters in raw password");
    let e = disp
        .dispatch(set_password("al:ice", "x", false))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "forbidden characters in username");
    assert_eq!(
        shadow_entry(d.path(), "root")[1],
        "*",
        "other users untouched"
    );
}

#[tokio::test]
async fn passwords_without_chpasswd_edit_the_shadow_file() {
    if !support::require_peer(
        is_root() && support::have_command("openssl"),
        "root and openssl for password tests",
    ) {
        return;
    }
    let d = account_root();
    let empty = d.path().join("no-programs");
    std::fs::create_dir(&empty).unwrap();
    let cfg = ActionsConfig {
        paths: Paths::under(d.path()),
        exec_path: Some(empty.into_os_string()),
        ..ActionsConfig::default()
    };
    let disp = default_dispatcher(&cfg, &EventBus::default());
    let pw = "s3cr3t with spaces";
    disp.dispatch(set_password("alice", pw, false))
        .await
        .unwrap();
    let entry = shadow_entry(d.path(), "alice");
    assert!(entry[1].starts_with("$6$"));
    assert_eq!(openssl_sha512(pw, &entry[1]), entry[1]);
    assert_eq!(entry.len(), 9);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("etc/shadow"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "mode kept");
    }
    let hash = openssl_sha512("other", "$6$abcdefgh$x");
    disp.dispatch(set_password("alice", &hash, true))
        .await
        .unwrap();
    assert_eq!(shadow_entry(d.path(), "alice")[1], hash);
    let e = disp
        .dispatch(set_password("nobody", "x", false))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "child process has failed to set user password"
    );
    let e = disp
        .dispatch(set_password("alice", "not a hash", true))
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::InvalidArgument(_)), "{e}");
    assert_eq!(
        shadow_entry(d.path(), "alice")[1],
        hash,
        "unchanged by refused input"
    );
}

#[tokio::test]
async fn ssh_keys_of_a_test_user_are_valid_for_ssh_keygen() {
    if !support::require_peer(
        is_root() && support::have_command("ssh-keygen"),
        "root and ssh-keygen (openssh-client) for ssh key tests",
    ) {
        return;
    }
    let d = account_root();
    let key = |name: &str| {
        let p = d.path().join(name);
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                name,
                "-f",
                p.to_str().unwrap(),
            ],
        );
        std::fs::read_to_string(p.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (k1, k2) = (key("k1"), key("k2"));
    let cfg = ActionsConfig {
        paths: Paths::under(d.path()),
        ..ActionsConfig::default()
    };
    let disp = default_dispatcher(&cfg, &EventBus::default());
    let ssh = |op: SshKeysOp| Action::SshKeys {
        user: "alice".into(),
        op,
    };
    disp.dispatch(ssh(SshKeysOp::Add {
        keys: vec![k1.clone(), k2.clone()],
        reset: false,
    }))
    .await
    .unwrap();
    let file = d.path().join("home/alice/.ssh/authorized_keys");
    let listed = run("ssh-keygen", &["-l", "-f", file.to_str().unwrap()]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains(" k1 (ED25519)") && listed.contains(" k2 (ED25519)"),
        "{listed}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::metadata(d.path().join("home/alice/.ssh")).unwrap();
        let f = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (dir.mode() & 0o777, dir.uid(), dir.gid()),
            (0o700, 4242, 4343)
        );
        assert_eq!((f.mode() & 0o777, f.uid(), f.gid()), (0o600, 4242, 4343));
    }
    assert_eq!(
        disp.dispatch(ssh(SshKeysOp::Get)).await.unwrap(),
        Outcome::Keys(vec![k1.clone(), k2.clone()])
    );
    disp.dispatch(ssh(SshKeysOp::Remove {
        keys: vec![k1.clone()],
    }))
    .await
    .unwrap();
    assert_eq!(
        disp.dispatch(ssh(SshKeysOp::Get)).await.unwrap(),
        Outcome::Keys(vec![k2.clone()])
    );
    disp.dispatch(ssh(SshKeysOp::Add {
        keys: vec![k1.clone()],
        reset: true,
    }))
    .await
    .unwrap();
    assert_eq!(
        disp.dispatch(ssh(SshKeysOp::Get)).await.unwrap(),
        Outcome::Keys(vec![k1])
    );
    let e = disp
        .dispatch(Action::SshKeys {
            user: "nobody".into(),
            op: SshKeysOp::Get,
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "failed to lookup user 'nobody': Success");
}

// ---------------------------------------------------------------------------------------------
// Inside the QEMU VM: what must not be done to the host.

#[test]
fn in_the_vm_time_vcpus_memory_freeze_password_and_suspend() {
    vm::run_vm_actions(&actctl());
}

// ---------------------------------------------------------------------------------------------
// Through the agent itself: `guestd run` serving QGA on a unix socket.

struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(img: &Images, extra: &[&str]) -> Agent {
        let sock = img.dir.path().join("qga.sock");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(support::guestd_bin())
            .arg("run")
            .arg(format!("--channel=qga=unix-listen:{}", sock.display()))
            .arg("--statedir")
            .arg(img.state_dir())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent { child, sock }
    }

    /// Send one command, read its one-line reply.
    fn cmd(&self, json: &str) -> serde_json::Value {
        use std::io::BufRead;
        let until = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.sock) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < until, "cannot reach guestd: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        (&stream).write_all(json.as_bytes()).unwrap();
        (&stream).write_all(b"\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn freeze_list(mnt: &Path) -> String {
    serde_json::json!({
        "execute": "guest-fsfreeze-freeze-list",
        "arguments": {"mountpoints": [mnt.to_str().unwrap()]}
    })
    .to_string()
}

const STATUS: &str = r#"{"execute":"guest-fsfreeze-status"}"#;

#[test]
fn guestd_run_over_qga_kill_restart_watchdog_and_sigterm() {
    let _g = freeze_lock();
    let Some(img) = Images::new(&["ext4"]) else {
        return;
    };
    let mnt = img.mount("ext4").to_owned();
    let state_file = img.state_dir().join("fsfreeze.frozen");

    // Frozen through QGA; only the allowlisted commands run; kill -9 leaves it frozen.
    let mut agent = Agent::start(&img, &["--fsfreeze-watchdog", "0"]);
    assert_eq!(
        agent.cmd(&freeze_list(&mnt)),
        serde_json::json!({"return": 1})
    );
    assert_eq!(agent.cmd(STATUS), serde_json::json!({"return": "frozen"}));
    let refused = agent.cmd(r#"{"execute":"guest-get-osinfo"}"#);
    assert_eq!(refused["error"]["class"], "CommandNotFound", "{refused}");
    assert_eq!(
        refused["error"]["desc"],
        "Command guest-get-osinfo has been disabled: the agent is in frozen state"
    );
    assert!(state_file.exists());
    let mut w = writer(&mnt, "w1");
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.child.wait().unwrap();
    assert_blocked(&mut w, "after kill -9");
    // The next agent thaws at start-up.
    let agent = Agent::start(&img, &["--fsfreeze-watchdog", "0"]);
    assert_completes(&mut w, "after the restart");
    assert_eq!(agent.cmd(STATUS), serde_json::json!({"return": "thawed"}));
    assert!(!state_file.exists());
    drop(agent);

    // The watchdog thaws when the host never does.
    let agent = Agent::start(&img, &["--fsfreeze-watchdog", "2"]);
    assert_eq!(
        agent.cmd(&freeze_list(&mnt)),
        serde_json::json!({"return": 1})
    );
    let mut w = writer(&mnt, "w2");
    assert_completes(&mut w, "after the watchdog");
    assert_eq!(agent.cmd(STATUS), serde_json::json!({"return": "thawed"}));
    drop(agent);

    // SIGTERM while frozen: thawed, then exit.
    let mut agent = Agent::start(&img, &["--fsfreeze-watchdog", "0"]);
    assert_eq!(
        agent.cmd(&freeze_list(&mnt)),
        serde_json::json!({"return": 1})
    );
    let mut w = writer(&mnt, "w3");
    assert_blocked(&mut w, "frozen under guestd");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_completes(&mut w, "after SIGTERM");
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "guestd exit status {status}");
    assert!(!state_file.exists());
}
