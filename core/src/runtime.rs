//! Ties a protocol to a transport: the one loop that reads, feeds the protocol, writes its
//! answers, drives its timers and events, and survives the host going away.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

use crate::agent::Agent;
use crate::alarm::Alarm;
use crate::contract::{
    ByteStream, ByteTransport, KeyValueTransport, KvProtocol, StreamProtocol, StreamSession,
    TransportError,
};

/// Receive-buffer capacity kept between messages; a larger one is given back once empty.
const RX_KEEP: usize = 256 << 10;

/// Tunables of the stream runtime.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Longest a single write may make no progress before the host is deemed gone.
    pub write_stall: Duration,
    /// First wait after a transport error; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between attempts to get a session.
    pub max_backoff: Duration,
    /// Read chunk size.
    pub read_chunk: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            write_stall: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            read_chunk: 64 * 1024,
        }
    }
}

/// How a host session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    HostLeft,
    Shutdown,
}

/// Serve `protocol` on `transport` until `shutdown` becomes true. Transport errors are logged
/// and retried with back-off; they never end the loop.
pub async fn serve_stream(
    transport: Arc<dyn ByteTransport>,
    protocol: Arc<dyn StreamProtocol>,
    agent: Agent,
    mut shutdown: watch::Receiver<bool>,
    opts: StreamOptions,
) {
    let what = transport.describe();
    info!(channel = %what, protocol = protocol.name(), "serving");
    let max = transport.max_sessions().max(1);
    // A port keeps one session for its whole life; sockets make one per client.
    let mut port_session = (max == 1).then(|| protocol.new_session(agent.clone()));
    let slots = Arc::new(Semaphore::new(max));
    // Client sessions of a listening socket, awaited on shutdown so their goodbyes are written
    // before the process exits.
    let mut clients = JoinSet::new();
    let mut backoff = opts.min_backoff;
    loop {
        while clients.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            r = transport.accept() => r,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok(s) => {
                backoff = opts.min_backoff;
                s
            }
            Err(e) => {
                log_transport_error(&what, &e);
                drop(permit);
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(opts.max_backoff);
                continue;
            }
        };
        debug!(channel = %what, "host connected");
        if let Some(session) = port_session.as_mut() {
            let ended = run_session(session.as_mut(), stream, &agent, &mut shutdown, &opts).await;
            drop(permit);
            if ended == Ended::Shutdown {
                return;
            }
            info!(channel = %what, "host disconnected; waiting for it to come back");
        } else {
            let mut session = protocol.new_session(agent.clone());
            let agent = agent.clone();
            let mut shutdown = shutdown.clone();
            let opts = opts.clone();
            let what = what.clone();
            clients.spawn(async move {
                let _permit = permit;
                run_session(session.as_mut(), stream, &agent, &mut shutdown, &opts).await;
                debug!(channel = %what, "client left");
            });
        }
    }
    while clients.join_next().await.is_some() {}
    if let Some(session) = port_session.as_mut() {
        // No host attached: nowhere to send a goodbye, but let the session clean up.
        let mut out = Vec::new();
        session.on_shutdown(&mut out).await;
    }
}

fn log_transport_error(what: &str, e: &TransportError) {
    match e {
        TransportError::NotFound(_) => debug!(channel = %what, error = %e, "waiting for channel"),
        _ => warn!(channel = %what, error = %display_chain(e), "channel error; retrying"),
    }
}

/// `e` and its sources, `: `-separated.
pub fn display_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn run_session(
    session: &mut dyn StreamSession,
    mut stream: Box<dyn ByteStream>,
    agent: &Agent,
    shutdown: &mut watch::Receiver<bool>,
    opts: &StreamOptions,
) -> Ended {
    let mut events = agent.events.subscribe();
    let mut rx = BytesMut::with_capacity(4096);
    let mut out = Vec::new();
    session.on_connect(&mut out).await;
    if flush(&mut stream, &mut out, opts).await.is_err() {
        session.on_disconnect().await;
        return Ended::HostLeft;
    }
    // The session's timers (heartbeats, reports) are seconds apart: an alarm wakes the idle
    // process once per deadline, where tokio's timer wheel would wake it two or three times.
    let mut alarm = Alarm::new();
    let ended = loop {
        alarm.set(session.next_deadline());
        let limit = session.max_input().max(1);
        // Never grow the buffer past the session's limit plus one chunk.
        let room = limit.saturating_sub(rx.len()).clamp(1, opts.read_chunk);
        rx.reserve(room);
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                session.on_shutdown(&mut out).await;
                let _ = flush(&mut stream, &mut out, opts).await;
                break Ended::Shutdown;
            }
            r = read_some(&mut stream, &mut rx, room) => match r {
                Ok(0) => break Ended::HostLeft,
                Ok(_) => {
                    session.on_input(&mut rx, &mut out).await;
                    if rx.len() > limit {
                        warn!(bytes = rx.len(), limit, "session left an oversized partial message; discarding it");
                        rx.clear();
                    }
                    // After a large message, start small again rather than keep its memory.
                    if rx.is_empty() && rx.capacity() > RX_KEEP {
                        rx = BytesMut::with_capacity(4096);
                    }
                }
                Err(e) => {
                    debug!(error = %e, "read failed; treating as disconnect");
                    break Ended::HostLeft;
                }
            },
            ev = events.recv() => match ev {
                Ok(ev) => session.on_event(&ev, &mut out).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lost = n, "session fell behind the event stream");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    events = agent.events.subscribe();
                }
            },
            _ = alarm.wait() => session.on_timer(&mut out).await,
        }
        if flush(&mut stream, &mut out, opts).await.is_err() {
            break Ended::HostLeft;
        }
    };
    session.on_disconnect().await;
    let _ = stream.shutdown().await;
    ended
}

async fn read_some(
    stream: &mut Box<dyn ByteStream>,
    rx: &mut BytesMut,
    room: usize,
) -> std::io::Result<usize> {
    let mut limited = (&mut **stream).take(room as u64);
    limited.read_buf(rx).await
}

async fn flush(
    stream: &mut Box<dyn ByteStream>,
    out: &mut Vec<u8>,
    opts: &StreamOptions,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let mut at = 0;
    while at < out.len() {
        let n = match timeout(opts.write_stall, stream.write(&out[at..])).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                info!(
                    pending = out.len() - at,
                    error = %e,
                    "could not write to the host; dropping the unwritten output"
                );
                out.clear();
                return Err(e);
            }
            Err(_) => {
                warn!(
                    pending = out.len() - at,
                    "host stopped reading; dropping the session"
                );
                out.clear();
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        };
        if n == 0 {
            out.clear();
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += n;
    }
    out.clear();
    // Give back memory after a large reply (a 48 MiB file read) instead of keeping it.
    if out.capacity() > 1 << 20 {
        *out = Vec::new();
    }
    stream.flush().await
}

/// Serve a key-value protocol on a store, reconnecting after the store is lost.
pub async fn serve_kv(
    transport: Arc<dyn KeyValueTransport>,
    protocol: Arc<dyn KvProtocol>,
    agent: Agent,
    mut shutdown: watch::Receiver<bool>,
    opts: StreamOptions,
) {
    let what = transport.describe();
    info!(channel = %what, protocol = protocol.name(), "serving");
    let mut backoff = opts.min_backoff;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let store = tokio::select! {
            r = transport.connect() => r,
            _ = shutdown.changed() => return,
        };
        match store {
            Ok(store) => {
                backoff = opts.min_backoff;
                match protocol.run(store, agent.clone(), shutdown.clone()).await {
                    Ok(()) if *shutdown.borrow() => return,
                    Ok(()) => info!(channel = %what, "store session ended; reconnecting"),
                    Err(e) => {
                        warn!(channel = %what, error = %display_chain(&e), "store session failed; reconnecting")
                    }
                }
            }
            Err(e) => log_transport_error(&what, &e),
        }
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(opts.max_backoff);
    }
}
