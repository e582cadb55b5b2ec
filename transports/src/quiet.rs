//! A stream socket that asks the kernel for write readiness only while a write waits.
//!
//! tokio's `UnixStream` registers every socket for reading *and* writing, edge-triggered. The
//! kernel then reports write space each time the peer reads what the agent wrote: every
//! heartbeat the agent sends wakes it a second time a moment later, when the host has read it,
//! for nothing. Here the socket is registered for reading only; a write goes straight to the
//! socket, and only when the send buffer is full is a duplicate of the descriptor registered
//! for writing, until the next flush. The duplicate is a separate epoll registration of the same
//! socket, so adding and removing write interest never disturbs the read registration.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown, send, shutdown};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected, non-blocking stream socket (see the module notes).
pub struct QuietStream {
    read: AsyncFd<OwnedFd>,
    /// A duplicate registered for write readiness while a write waits for buffer space.
    write: Option<AsyncFd<OwnedFd>>,
}

impl fmt::Debug for QuietStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuietStream")
            .field("fd", &self.read.get_ref().as_raw_fd())
            .field("waiting_to_write", &self.write.is_some())
            .finish()
    }
}

impl QuietStream {
    /// Takes over `fd`, a connected stream socket already in non-blocking mode. Must be called
    /// inside a tokio runtime with I/O enabled.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            read: register(fd, Interest::READABLE)?,
            write: None,
        })
    }

    /// From a tokio `UnixStream` (its registration is dropped and replaced by this one).
    pub fn from_unix(s: tokio::net::UnixStream) -> io::Result<Self> {
        // `into_std` leaves the socket non-blocking.
        let std = s.into_std()?;
        Self::new(OwnedFd::from(std))
    }

    fn send(&self, buf: &[u8]) -> Result<usize, Errno> {
        loop {
            // MSG_NOSIGNAL: a host that left is an EPIPE error, never a SIGPIPE.
            match send(self.read.get_ref().as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                r => return r,
            }
        }
    }
}

/// `fd` registered with tokio for `interest` (shared with the virtio port's streams).
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is owned by the `AsyncFd`, closed only when it is dropped and never
    // replaced (no `get_mut`), so the registered descriptor stays open and the same.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

impl AsyncRead for QuietStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match nix::unistd::read(this.read.get_ref().as_fd(), unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if let Some(w) = &this.write {
                let mut guard = ready!(w.poll_write_ready(cx))?;
                match this.send(buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
                continue;
            }
            match this.send(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(Errno::EAGAIN) => {
                    // Buffer full: now write readiness is worth a wake-up. Registering reports
                    // the current state too, so space freed since the send is not missed.
                    let dup = this.read.get_ref().try_clone()?;
                    this.write = Some(register(dup, Interest::WRITABLE)?);
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything handed over is in the kernel's buffer: stop watching for space, so the
        // host reading it wakes nobody.
        self.get_mut().write = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write = None;
        match shutdown(this.read.get_ref().as_raw_fd(), Shutdown::Write) {
            // The host is gone already: nothing left to shut.
            Ok(()) | Err(Errno::ENOTCONN) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream as StdStream;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pair() -> (QuietStream, StdStream) {
        let (a, b) = StdStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (QuietStream::new(OwnedFd::from(a)).unwrap(), b)
    }

    #[tokio::test]
    async fn reads_and_writes_both_ways() {
        let (mut q, mut peer) = pair();
        q.write_all(b"ping\n").await.unwrap();
        q.flush().await.unwrap();
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut peer, &mut got).unwrap();
        assert_eq!(&got, b"ping\n");
        std::io::Write::write_all(&mut peer, b"pong\n").unwrap();
        let mut back = [0u8; 5];
        q.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong\n");
    }

    #[tokio::test]
    async fn a_write_larger_than_the_buffer_waits_for_the_reader_and_completes() {
        let (mut q, mut peer) = pair();
        let data: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        let want = data.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut peer, &mut got).unwrap();
            got
        });
        q.write_all(&data).await.unwrap();
        assert!(
            q.write.is_some(),
            "a full buffer should have asked for write readiness"
        );
        q.flush().await.unwrap();
        assert!(q.write.is_none(), "flush should drop the write interest");
        q.shutdown().await.unwrap();
        assert_eq!(reader.join().unwrap(), want);
    }

    #[tokio::test]
    async fn eof_and_a_vanished_peer_are_seen() {
        let (mut q, peer) = pair();
        drop(peer);
        let mut buf = [0u8; 8];
        assert_eq!(q.read(&mut buf).await.unwrap(), 0);
        let e = q.write_all(b"late").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
