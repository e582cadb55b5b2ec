//! Commands that act on the guest: each becomes one core [`Action`] for the dispatcher, and
//! its outcome or error is turned into QGA's shape here (errors through `error.rs`).

use guestd_core::action::{
    Action, ActionError, ActionKind, FreezeStatus, MemoryBlockChange, MemoryBlockResponse, Outcome,
    PowerMode, Secret, SshKeysOp, SuspendMode, VcpuChange,
};
use serde_json::{Map, Value, json};

use super::Success;
use crate::qga::Ctx;
use crate::qga::args::{Args, U64, object_list};
use crate::qga::b64;
use crate::qga::error::QgaError;

/// The wall message qemu-ga gives `shutdown(8)`.
pub const SHUTDOWN_MESSAGE: &str = "hypervisor initiated shutdown";

async fn dispatch(ctx: &Ctx<'_>, action: Action) -> Result<Outcome, ActionError> {
    ctx.agent.actions.dispatch(action).await
}

fn unexpected(cmd: &str, o: &Outcome) -> QgaError {
    tracing::warn!(command = cmd, outcome = ?o, "action returned an unexpected outcome");
    QgaError::generic(format!("{cmd}: unexpected result from the action layer"))
}

fn count(cmd: &str, r: Result<Outcome, ActionError>) -> Result<Success, QgaError> {
    match r {
        Ok(Outcome::Count(n)) => Ok(Success::Return(n.into())),
        Ok(o) => Err(unexpected(cmd, &o)),
        Err(e) => Err(QgaError::from_action(cmd, &e)),
    }
}

pub(super) async fn set_time(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let time: Option<i64> = a.opt("time")?;
    a.finish()?;
    if let Some(ns) = time {
        let year = guestd_core::calendar::year_of(ns.div_euclid(1_000_000_000));
        if !(1970..2070).contains(&year) {
            return Err(QgaError::generic("Invalid time"));
        }
    }
    match dispatch(ctx, Action::SetTime { nanos: time }).await {
        Ok(_) => Ok(Success::Return(json!({}))),
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

pub(super) async fn shutdown(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let mode: Option<String> = a.opt("mode")?;
    a.finish()?;
    let mode = match mode.as_deref().unwrap_or("powerdown") {
        "powerdown" => PowerMode::Poweroff,
        "halt" => PowerMode::Halt,
        "reboot" => PowerMode::Reboot,
        _ => {
            return Err(QgaError::generic(
                "mode is invalid (valid values are: halt|powerdown|reboot",
            ));
        }
    };
    let action = Action::Power {
        mode,
        delay: None,
        message: Some(SHUTDOWN_MESSAGE.to_owned()),
    };
    match dispatch(ctx, action).await {
        Ok(_) => Ok(Success::NoReply),
        Err(e) => Err(QgaError::child_failed(ctx.cmd, "shutdown", &e)),
    }
}

pub(super) async fn suspend(
    ctx: &Ctx<'_>,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    Args::new(args).finish()?;
    let mode = match name {
        "guest-suspend-disk" => SuspendMode::Disk,
        "guest-suspend-ram" => SuspendMode::Ram,
        _ => SuspendMode::Hybrid,
    };
    match dispatch(ctx, Action::Suspend(mode)).await {
        Ok(_) => Ok(Success::NoReply),
        Err(e) => Err(QgaError::suspend_failed(ctx.cmd, &e)),
    }
}

/// Frozen or not, as the dispatcher's frozen-state policy says: it answers without running
/// anything, whereas asking for `FsFreezeStatus` on every request would consume the one-time
/// "thawed by the watchdog" notice meant for a status request.
pub(crate) fn is_frozen(agent: &guestd_core::Agent) -> bool {
    matches!(
        agent.actions.check(ActionKind::FsFreeze),
        Err(ActionError::Frozen)
    )
}

pub(super) async fn freeze_status(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    Args::new(args).finish()?;
    match dispatch(ctx, Action::FsFreezeStatus).await {
        Ok(Outcome::FreezeStatus(FreezeStatus::Frozen)) => Ok(Success::Return("frozen".into())),
        // Thawed, thawed by the watchdog (QGA has no word for it), or nothing to freeze.
        Ok(Outcome::FreezeStatus(_)) | Err(ActionError::Unsupported) => {
            Ok(Success::Return("thawed".into()))
        }
        Ok(o) => Err(unexpected(ctx.cmd, &o)),
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

pub(super) async fn freeze(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
    list: bool,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let mountpoints: Option<Vec<String>> = if list { a.opt("mountpoints")? } else { None };
    a.finish()?;
    count(
        ctx.cmd,
        dispatch(ctx, Action::FsFreeze { mountpoints }).await,
    )
}

pub(super) async fn thaw(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    Args::new(args).finish()?;
    count(ctx.cmd, dispatch(ctx, Action::FsThaw).await)
}

pub(super) async fn fstrim(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let minimum: Option<i64> = a.opt("minimum")?;
    a.finish()?;
    // qemu-ga passes the int64 to the kernel as an unsigned length.
    let minimum = minimum.map(|m| m as u64);
    match dispatch(ctx, Action::FsTrim { minimum }).await {
        Ok(Outcome::Trimmed(results)) => {
            let paths: Vec<Value> = results
                .into_iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("path".into(), r.path.into());
                    if let Some(t) = r.trimmed {
                        m.insert("trimmed".into(), t.into());
                    }
                    if let Some(t) = r.minimum {
                        m.insert("minimum".into(), t.into());
                    }
                    if let Some(t) = r.error {
                        m.insert("error".into(), t.into());
                    }
                    Value::Object(m)
                })
                .collect();
            Ok(Success::Return(json!({ "paths": paths })))
        }
        Ok(o) => Err(unexpected(ctx.cmd, &o)),
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

pub(super) async fn set_vcpus(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let vcpus = a.req_with("vcpus", |v, n| {
        object_list(v, n, |o| {
            let id: i64 = o.req("logical-id")?;
            let online: bool = o.req("online")?;
            let _can_offline: Option<bool> = o.opt("can-offline")?;
            Ok((id, online))
        })
    })?;
    a.finish()?;
    // The kernel has no CPU with a negative or huge number: processing stops there.
    let changes: Vec<VcpuChange> = vcpus
        .iter()
        .map_while(|&(id, online)| {
            u32::try_from(id)
                .ok()
                .map(|logical_id| VcpuChange { logical_id, online })
        })
        .collect();
    if changes.is_empty() {
        if let Some((id, _)) = vcpus.first() {
            return Err(QgaError::generic(format!(
                "open(\"/sys/devices/system/cpu/cpu{id}/\"): No such file or directory"
            )));
        }
        return Ok(Success::Return(0.into()));
    }
    match dispatch(ctx, Action::SetVcpus(changes)).await {
        Ok(Outcome::VcpusProcessed(n)) => Ok(Success::Return(n.into())),
        Ok(o) => Err(unexpected(ctx.cmd, &o)),
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

pub(super) async fn set_memory_blocks(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let blocks = a.req_with("mem-blks", |v, n| {
        object_list(v, n, |o| {
            let U64(phys_index) = o.req("phys-index")?;
            let online: bool = o.req("online")?;
            let _can_offline: Option<bool> = o.opt("can-offline")?;
            Ok(MemoryBlockChange { phys_index, online })
        })
    })?;
    a.finish()?;
    if blocks.is_empty() {
        return Ok(Success::Return(json!([])));
    }
    match dispatch(ctx, Action::SetMemoryBlocks(blocks)).await {
        Ok(Outcome::MemoryBlocks(results)) => {
            let list: Vec<Value> = results
                .into_iter()
                .map(|(idx, r)| match r {
                    MemoryBlockResponse::Success => {
                        json!({"phys-index": idx, "response": "success"})
                    }
                    // qemu-ga reports the ENOENT it got for a missing block.
                    MemoryBlockResponse::NotFound => {
                        json!({"phys-index": idx, "response": "not-found", "error-code": libc_enoent()})
                    }
                    MemoryBlockResponse::OperationNotSupported => {
                        json!({"phys-index": idx, "response": "operation-not-supported"})
                    }
                    MemoryBlockResponse::OperationFailed(code) => json!({
                        "phys-index": idx, "response": "operation-failed", "error-code": code
                    }),
                })
                .collect();
            Ok(Success::Return(Value::Array(list)))
        }
        Ok(o) => Err(unexpected(ctx.cmd, &o)),
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

pub(super) async fn set_password(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let user: String = a.req("username")?;
    let password: String = a.req("password")?;
    let crypted: bool = a.req("crypted")?;
    a.finish()?;
    let raw = b64::decode(&password)?;
    drop(password);
    // qemu-ga treats the decoded password as a C string.
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    if raw.contains(&b'\n') {
        return Err(QgaError::generic("forbidden characters in raw password"));
    }
    if user.contains('\n') || user.contains(':') {
        return Err(QgaError::generic("forbidden characters in username"));
    }
    let action = Action::SetPassword {
        user,
        password: Secret::new(String::from_utf8_lossy(raw).into_owned()),
        crypted,
    };
    match dispatch(ctx, action).await {
        Ok(_) => Ok(Success::Return(json!({}))),
        // The action layer words these failures as qemu-ga does
        // (`child process has failed to set user password`).
        Err(e) => Err(QgaError::from_action(ctx.cmd, &e)),
    }
}

fn check_keys(keys: &[String]) -> Result<(), QgaError> {
    match keys.iter().find(|k| k.starts_with('#') || k.contains('\n')) {
        Some(k) => Err(QgaError::generic(format!(
            "invalid OpenSSH public key: '{k}'"
        ))),
        None => Ok(()),
    }
}

pub(super) async fn ssh_keys(
    ctx: &Ctx<'_>,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let user: String = a.req("username")?;
    let op = match name {
        "guest-ssh-get-authorized-keys" => SshKeysOp::Get,
        "guest-ssh-add-authorized-keys" => {
            let keys: Vec<String> = a.req("keys")?;
            let reset: Option<bool> = a.opt("reset")?;
            SshKeysOp::Add {
                keys,
                reset: reset.unwrap_or(false),
            }
        }
        _ => SshKeysOp::Remove {
            keys: a.req("keys")?,
        },
    };
    a.finish()?;
    if let SshKeysOp::Add { keys, .. } | SshKeysOp::Remove { keys } = &op {
        check_keys(keys)?;
    }
    let get = op == SshKeysOp::Get;
    match dispatch(
        ctx,
        Action::SshKeys {
            user: user.clone(),
            op,
        },
    )
    .await
    {
        Ok(Outcome::Keys(keys)) if get => Ok(Success::Return(json!({ "keys": keys }))),
        Ok(o) if get => Err(unexpected(ctx.cmd, &o)),
        Ok(_) => Ok(Success::Return(json!({}))),
        Err(e) => Err(QgaError::user_action(ctx.cmd, &user, &e)),
    }
}

/// `ENOENT`, the same number on every Linux architecture.
const fn libc_enoent() -> i32 {
    2
}
