//! `guest-exec` and `guest-exec-status`, on core's process table.

use guestd_core::exec::{Capture, ExecRequest};
use serde_json::{Map, Value, json};

use super::Success;
use crate::qga::Ctx;
use crate::qga::args::{Args, bool_or_enum};
use crate::qga::b64;
use crate::qga::error::QgaError;

const CAPTURE_MODES: [(&str, Capture); 5] = [
    ("none", Capture::None),
    ("stdout", Capture::Stdout),
    ("stderr", Capture::Stderr),
    ("separated", Capture::Separated),
    ("merged", Capture::Merged),
];

pub(super) async fn exec(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let path: String = a.req("path")?;
    let arg: Option<Vec<String>> = a.opt("arg")?;
    let env: Option<Vec<String>> = a.opt("env")?;
    let input: Option<String> = a.opt("input-data")?;
    let capture = a.opt_with("capture-output", |v, n| {
        bool_or_enum(v, n, "GuestExecCaptureOutput", &CAPTURE_MODES)
    })?;
    a.finish()?;
    let input = input.map(|s| b64::decode(&s)).transpose()?;
    let capture = match capture {
        None | Some(Ok(false)) => Capture::None,
        Some(Ok(true)) => Capture::Separated,
        Some(Err(mode)) => mode,
    };
    let pid = ctx
        .shared
        .exec
        .spawn(ExecRequest {
            path,
            args: arg.unwrap_or_default(),
            env,
            input,
            capture,
        })
        .await?;
    Ok(Success::Return(json!({ "pid": pid })))
}

pub(super) fn status(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Success, QgaError> {
    let mut a = Args::new(args);
    let pid: i64 = a.req("pid")?;
    a.finish()?;
    let s = ctx.shared.exec.status(pid)?;
    let mut m = Map::new();
    m.insert("exited".into(), s.exited.into());
    if let Some(c) = s.exit_code {
        m.insert("exitcode".into(), c.into());
    }
    if let Some(sig) = s.signal {
        m.insert("signal".into(), sig.into());
    }
    // qemu-ga reports a stream only when it produced something.
    for (data_key, trunc_key, out) in [
        ("out-data", "out-truncated", &s.stdout),
        ("err-data", "err-truncated", &s.stderr),
    ] {
        if let Some(o) = out.as_ref().filter(|o| !o.data.is_empty()) {
            m.insert(data_key.into(), b64::encode(&o.data).into());
            m.insert(trunc_key.into(), o.truncated.into());
        }
    }
    Ok(Success::Return(Value::Object(m)))
}
