//! `ovmd -d 2`: log lines to syslog (`/dev/log`, RFC 3164 framing, facility daemon), one
//! datagram per event. Without a syslog socket the lines go to stderr instead.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Makes one writer per log event.
#[derive(Clone, Debug)]
pub struct Syslog {
    socket: Option<Arc<UnixDatagram>>,
    tag: String,
}

impl Syslog {
    /// Connect to `/dev/log` (or fall back to stderr).
    pub fn new(tag: &str) -> Self {
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .ok()
            .map(Arc::new);
        Self {
            socket,
            tag: format!("{tag}[{}]", std::process::id()),
        }
    }
}

/// One event's text, sent when dropped.
#[derive(Debug)]
pub struct Line {
    socket: Option<Arc<UnixDatagram>>,
    prefix: String,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.is_empty() {
            return;
        }
        let mut msg = self.prefix.clone().into_bytes();
        msg.extend_from_slice(&self.buf);
        let sent = self.socket.as_ref().is_some_and(|s| s.send(&msg).is_ok());
        if !sent {
            let _ = writeln!(io::stderr(), "{}", String::from_utf8_lossy(&self.buf));
        }
    }
}

fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.line(severity(meta.level()))
    }
}

impl Syslog {
    fn line(&self, severity: u8) -> Line {
        const DAEMON: u8 = 3;
        Line {
            socket: self.socket.clone(),
            prefix: format!("<{}>{}: ", DAEMON * 8 + severity, self.tag),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_datagram_per_event_with_priority_and_tag() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let s = Syslog {
            socket: Some(Arc::new(ours)),
            tag: "ovmd[42]".into(),
        };
        {
            let mut w = s.line(severity(&Level::WARN));
            write!(w, "cannot remove").unwrap();
            writeln!(w, " a message").unwrap();
        }
        let mut buf = [0u8; 256];
        let n = theirs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>ovmd[42]: cannot remove a message");
        {
            let mut w = s.line(severity(&Level::INFO));
            write!(w, "ready").unwrap();
        }
        let n = theirs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>ovmd[42]: ready");
    }
}
