//! Test helper: run one action of guestd's action layer from the command line, the way an
//! agent would (the default dispatcher, its policy, its state file), and print the outcome.
//! The integration tests use it as an agent process to kill, and inside the QEMU VM.
//!
//! ```text
//! actctl [--root DIR] [--state DIR] [--hook PATH] [--watchdog-ms N] [--hook-timeout-ms N]
//!        [--exec-path DIRS] [--hold] ACTION [ARGS...]
//!   freeze [MOUNTPOINT...] | thaw | status | wait-thawed SECS | trim [MIN]
//!   set-time [NANOS] | password USER [crypted] (password on stdin)
//!   ssh-get USER | ssh-add USER [--reset] KEY... | ssh-remove USER KEY...
//!   vcpus ID:0|1... | memblocks INDEX:0|1... | suspend ram|disk|hybrid
//! ```
//! Prints `ok <outcome>` or `err <error>`. With `--hold` it then stays until SIGTERM or SIGINT,
//! thaws if frozen (`exit-thaw <n>`) and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use guestd_core::action::{
    Action, ActionError, FreezeStatus, MemoryBlockChange, Outcome, Secret, SshKeysOp, SuspendMode,
    VcpuChange,
};
use guestd_core::actions::{ActionsConfig, default_dispatcher, freeze};
use guestd_core::{EventBus, Paths};

fn usage() -> ! {
    eprintln!("usage: see the comment at the top of core/examples/actctl.rs");
    std::process::exit(2)
}

fn pairs(args: &[String]) -> Vec<(u64, bool)> {
    args.iter()
        .map(|a| {
            let (id, on) = a.split_once(':').unwrap_or_else(|| usage());
            (id.parse().unwrap_or_else(|_| usage()), on == "1")
        })
        .collect()
}

fn action_of(name: &str, args: &[String]) -> Action {
    let user = || args.first().cloned().unwrap_or_else(|| usage());
    match name {
        "freeze" => Action::FsFreeze {
            mountpoints: (!args.is_empty()).then(|| args.to_vec()),
        },
        "thaw" => Action::FsThaw,
        "status" => Action::FsFreezeStatus,
        "trim" => Action::FsTrim {
            minimum: args.first().map(|m| m.parse().unwrap_or_else(|_| usage())),
        },
        "set-time" => Action::SetTime {
            nanos: args.first().map(|n| n.parse().unwrap_or_else(|_| usage())),
        },
        "password" => {
            let mut pw = String::new();
            std::io::stdin().read_to_string(&mut pw).unwrap();
            let pw = pw.strip_suffix('\n').unwrap_or(&pw).to_owned();
            Action::SetPassword {
                user: user(),
                password: Secret::new(pw),
                crypted: args.get(1).is_some_and(|a| a == "crypted"),
            }
        }
        "ssh-get" => Action::SshKeys {
            user: user(),
            op: SshKeysOp::Get,
        },
        "ssh-add" => {
            let reset = args.get(1).is_some_and(|a| a == "--reset");
            let keys = args[if reset { 2 } else { 1 }..].to_vec();
            Action::SshKeys {
                user: user(),
                op: SshKeysOp::Add { keys, reset },
            }
        }
        "ssh-remove" => Action::SshKeys {
            user: user(),
            op: SshKeysOp::Remove {
                keys: args[1..].to_vec(),
            },
        },
        "vcpus" => Action::SetVcpus(
            pairs(args)
                .into_iter()
                .map(|(id, online)| VcpuChange {
                    logical_id: id as u32,
                    online,
                })
                .collect(),
        ),
        "memblocks" => Action::SetMemoryBlocks(
            pairs(args)
                .into_iter()
                .map(|(phys_index, online)| MemoryBlockChange { phys_index, online })
                .collect(),
        ),
        "suspend" => Action::Suspend(match args.first().map(String::as_str) {
            Some("ram") => SuspendMode::Ram,
            Some("disk") => SuspendMode::Disk,
            Some("hybrid") => SuspendMode::Hybrid,
            _ => usage(),
        }),
        _ => usage(),
    }
}

fn print(result: &Result<Outcome, ActionError>) {
    let line = match result {
        Ok(o) => format!("ok {o:?}"),
        Err(e) => format!("err {e}"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut cfg = ActionsConfig::default();
    let mut hold = false;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    while let Some(first) = args.first().cloned() {
        let mut value = || {
            if args.len() < 2 {
                usage()
            }
            args.remove(0);
            args.remove(0)
        };
        match first.as_str() {
            "--root" => cfg.paths = Paths::under(value()),
            "--state" => cfg.state_dir = PathBuf::from(value()),
            "--hook" => cfg.fsfreeze_hook = Some(PathBuf::from(value())),
            "--watchdog-ms" => {
                cfg.freeze_watchdog = Some(Duration::from_millis(value().parse().unwrap()))
            }
            "--hook-timeout-ms" => {
                cfg.hook_timeout = Duration::from_millis(value().parse().unwrap())
            }
            "--exec-path" => cfg.exec_path = Some(value().into()),
            "--hold" => {
                hold = true;
                args.remove(0);
            }
            _ => break,
        }
    }
    let Some(name) = args.first().cloned() else {
        usage()
    };
    let rest = &args[1..];
    let d = default_dispatcher(&cfg, &EventBus::default());

    if name == "wait-thawed" {
        let secs: u64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(30);
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let r = d.dispatch(Action::FsFreezeStatus).await;
            let frozen = matches!(r, Ok(Outcome::FreezeStatus(FreezeStatus::Frozen)));
            if !frozen || tokio::time::Instant::now() > until {
                print(&r);
                std::process::exit(i32::from(frozen));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let result = d.dispatch(action_of(&name, rest)).await;
    print(&result);
    if hold {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        match freeze::thaw_on_exit(&d).await {
            Some(Ok(n)) => println!("exit-thaw {n}"),
            Some(Err(e)) => println!("exit-thaw-failed {e}"),
            None => println!("exit-thaw none"),
        }
        std::process::exit(0);
    }
    std::process::exit(i32::from(result.is_err()));
}
