//! Delegation to Oracle's `ovm-template-config` when it is installed in the guest (ovmd.md §6
//! q2): its modules then do the work, fed the pairs on standard input in `ovmd --list` format.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fsutil::find_program;
use super::report::{Module, Report};
use crate::action::Secret;
use crate::paths::Paths;

/// How long Oracle's tool may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// `ovm-template-config` under the root, if installed.
pub fn ovm_template_config(paths: &Paths) -> Option<PathBuf> {
    find_program(paths, "ovm-template-config")
}

/// Run `<tool> --stdin configure` with `list` (one `{"key":"value"}` object per line) on its
/// standard input. Only the exit status is logged and reported: the input holds the root
/// password and the output may echo it.
pub fn delegate_to_ovm_template_config(tool: &std::path::Path, list: &Secret) -> Report {
    let mut report = Report::default();
    let item = "ovm-template-config --stdin configure";
    match run(
        tool,
        &["--stdin", "configure"],
        Some(list.expose().as_bytes()),
    ) {
        Ok(0) => report.applied(Module::Delegate, item),
        Ok(code) => report.failed(Module::Delegate, item, format!("exit status {code}")),
        Err(e) => report.failed(Module::Delegate, item, e),
    }
    report
}

/// Run `<tool> cleanup`: Oracle's modules clean up their own state (ovmd.md §6 q10).
pub fn delegate_cleanup_to_ovm_template_config(tool: &std::path::Path) -> Report {
    let mut report = Report::default();
    let item = "ovm-template-config cleanup";
    match run(tool, &["cleanup"], None) {
        Ok(0) => report.applied(Module::Delegate, item),
        Ok(code) => report.failed(Module::Delegate, item, format!("exit status {code}")),
        Err(e) => report.failed(Module::Delegate, item, e),
    }
    report
}

/// Run a program with optional input, output discarded, waiting up to [`TIMEOUT`]. Returns
/// the exit code (-1 for a signal).
pub fn run(program: &std::path::Path, args: &[&str], input: Option<&[u8]>) -> Result<i32, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits without reading gives EPIPE: its exit status tells the rest.
        let _ = stdin.write_all(data);
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st.code().unwrap_or(-1)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} timed out", program.display()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {}: {e}", program.display())),
        }
    }
}
