//! `guest-file-*`: handles from core's file table, data in base64.

use guestd_core::files::Whence;
use serde_json::{Map, Value, json};

use super::Success;
use crate::qga::Ctx;
use crate::qga::args::{Args, int_or_enum};
use crate::qga::b64;
use crate::qga::error::QgaError;

/// qemu-ga's largest `guest-file-read` count (48 MiB).
pub const READ_COUNT_LIMIT: i64 = 48 << 20;
const READ_COUNT_DEFAULT: i64 = 4096;

fn bad_count(count: i64) -> QgaError {
    QgaError::generic(format!("value '{count}' is invalid for argument count"))
}

pub(super) async fn open(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let path: String = a.req("path")?;
    let mode: Option<String> = a.opt("mode")?;
    a.finish()?;
    let h = ctx.shared.files.open(&path, mode.as_deref()).await?;
    Ok(Success::Return(h.into()))
}

fn handle_only(args: &Map<String, Value>) -> Result<i64, QgaError> {
    let mut a = Args::new(args);
    let handle: i64 = a.req("handle")?;
    a.finish()?;
    Ok(handle)
}

pub(super) async fn close(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let handle = handle_only(args)?;
    ctx.shared.files.close(handle).await?;
    Ok(Success::Return(json!({})))
}

pub(super) async fn flush(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let handle = handle_only(args)?;
    ctx.shared.files.flush(handle).await?;
    Ok(Success::Return(json!({})))
}

pub(super) async fn read(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let handle: i64 = a.req("handle")?;
    let count: Option<i64> = a.opt("count")?;
    a.finish()?;
    ctx.shared.files.check(handle)?;
    let count = count.unwrap_or(READ_COUNT_DEFAULT);
    if !(0..=READ_COUNT_LIMIT).contains(&count) {
        return Err(bad_count(count));
    }
    let r = ctx.shared.files.read(handle, count as usize).await?;
    Ok(Success::Return(json!({
        "count": r.data.len(),
        "buf-b64": b64::encode(&r.data),
        "eof": r.eof,
    })))
}

pub(super) async fn write(
    ctx: &Ctx<'_>,
    args: &mut Map<String, Value>,
) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let handle: i64 = a.req("handle")?;
    a.req_str("buf-b64")?;
    let count: Option<i64> = a.opt("count")?;
    a.finish()?;
    ctx.shared.files.check(handle)?;
    // The request's text becomes the data (decoded in place): a large write is held once.
    let text = match args.get_mut("buf-b64") {
        Some(Value::String(s)) => std::mem::take(s),
        _ => String::new(),
    };
    let mut data = b64::decode_in_place(text.into_bytes())?;
    if let Some(count) = count {
        if count < 0 || count as u64 > data.len() as u64 {
            return Err(bad_count(count));
        }
        data.truncate(count as usize);
    }
    let n = ctx.shared.files.write(handle, data).await?;
    Ok(Success::Return(json!({ "count": n, "eof": false })))
}

pub(super) async fn seek(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let handle: i64 = a.req("handle")?;
    let offset: i64 = a.req("offset")?;
    let whence = a.req_with("whence", |v, n| {
        int_or_enum(
            v,
            n,
            "GuestFileWhence",
            &[
                ("set", Whence::Set),
                ("cur", Whence::Cur),
                ("end", Whence::End),
            ],
        )
    })?;
    a.finish()?;
    ctx.shared.files.check(handle)?;
    let whence = match whence {
        Err(w) => w,
        Ok(0) => Whence::Set,
        Ok(1) => Whence::Cur,
        Ok(2) => Whence::End,
        Ok(n) => return Err(QgaError::generic(format!("invalid whence code {n}"))),
    };
    let r = ctx.shared.files.seek(handle, offset, whence).await?;
    Ok(Success::Return(
        json!({ "position": r.position, "eof": r.eof }),
    ))
}
