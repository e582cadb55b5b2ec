//! systemd's readiness protocol (`sd_notify`), in a few lines of std: one datagram of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The socket address in `$NOTIFY_SOCKET`, if set and usable.
fn address() -> Option<SocketAddr> {
    let raw = std::env::var_os("NOTIFY_SOCKET")?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str());
    match bytes.split_first() {
        None => None,
        Some((b'@', name)) => {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name).ok()
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                None
            }
        }
        Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(&raw)).ok(),
        Some(_) => None,
    }
}

/// Send `state` (`READY=1`, `STATUS=...`, `RELOADING=1`, `STOPPING=1`); true when sent.
pub fn notify(state: &str) -> bool {
    let Some(addr) = address() else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    match sock.send_to_addr(state.as_bytes(), &addr) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "cannot notify systemd");
            false
        }
    }
}

/// `RELOADING=1` needs the monotonic time of the reload (systemd 253+ checks it with
/// `Type=notify-reload`; older ones ignore it).
pub fn reloading() -> bool {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
}
