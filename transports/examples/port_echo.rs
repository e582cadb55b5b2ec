//! Test-only: serves a line echo on a channel given as a SPEC (`virtio:NAME`, `serial:PATH`,
//! ...), through the same transports the agent uses. The VM tests put a static build of it into
//! the guest to prove the transports before (and besides) a protocol.
//!
//! Each line received is sent back unchanged, except `#stat`, answered with
//! `#stat TICKS CLK_TCK UPTIME PID`: the process's user+system CPU time in clock ticks, the
//! tick rate, the guest's uptime in seconds and the pid, so the host can measure the echo's CPU
//! use while no host was connected. Sessions and transport errors are logged on stderr (the VM's console).
//!
//! usage: port_echo SPEC

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use guestd_core::contract::ByteStream;
use guestd_transports::spec::{ChannelSpec, TransportOptions, build};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest line kept; longer input is dropped up to the next newline.
const MAX_LINE: usize = 8 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(arg) = std::env::args().nth(1) else {
        eprintln!("usage: port_echo SPEC");
        return ExitCode::from(2);
    };
    let spec: ChannelSpec = match arg.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("port_echo: {e}");
            return ExitCode::from(2);
        }
    };
    let transport = match build(&spec, &TransportOptions::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("port_echo: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("port_echo[{}]: serving {spec}", std::process::id());
    let mut backoff = Duration::from_millis(100);
    loop {
        match transport.accept().await {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                eprintln!("port_echo: {spec}: session start");
                let r = session(stream).await;
                eprintln!("port_echo: {spec}: session end ({r:?})");
            }
            Err(e) => {
                eprintln!(
                    "port_echo: {spec}: {}",
                    guestd_core::runtime::display_chain(&e)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn session(mut s: Box<dyn ByteStream>) -> io::Result<()> {
    // Each read that completes a line, and each reply, goes to the console with the guest's
    // uptime: when a VM test waits for a reply in vain, the console tells whether the request
    // reached the guest and whether the reply left it (QEMU's trace in qemu.log tells the rest).
    // Lines starting `#quiet` are not traced: stress loops must not wait on the console.
    let trace = std::env::var_os("PORT_ECHO_TRACE").is_some();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut rest = &buf[..n];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
            if line.len() <= MAX_LINE {
                answer(&line, &mut out);
            }
            line.clear();
        }
        line.extend_from_slice(rest);
        if line.len() > MAX_LINE {
            line.truncate(MAX_LINE + 1);
        }
        if !out.is_empty() {
            let trace = trace && !out.starts_with(b"#quiet");
            if trace {
                eprintln!("port_echo: {} rx {n} tx {}", uptime(), out.len());
            }
            s.write_all(&out).await?;
            s.flush().await?;
            if trace {
                eprintln!("port_echo: {} tx done", uptime());
            }
            out.clear();
        }
    }
}

fn answer(line: &[u8], out: &mut Vec<u8>) {
    if line == b"#stat\n" {
        out.extend_from_slice(stat_line().as_bytes());
    } else {
        out.extend_from_slice(line);
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn stat_line() -> String {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: u64 = f.get(11)?.parse().ok()?;
            let st: u64 = f.get(12)?.parse().ok()?;
            Some(u + st)
        })
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    format!("#stat {ticks} {hz} {} {}\n", uptime(), std::process::id())
}
