//! An open virtio-serial port: the host-connection wait and the per-session stream.
//!
//! Linux `virtio_console` semantics this code is built on (qga.md §1, ovirt.md §1.3):
//! - while no host is attached to the port's chardev, `read()` with nothing buffered returns 0,
//!   `poll()` reports `POLLHUP` continuously (level-triggered), writes return `EAGAIN`;
//! - host connect and disconnect wake the port's wait queue (so epoll sees them);
//! - `write()` takes at most 32 KiB per call;
//! - a hot-unplugged port keeps reporting `POLLHUP` and fails I/O with `ENODEV`, and its sysfs
//!   directory disappears.
//!
//! Polling a port is not free of side effects: the driver's poll takes the next filled input
//! buffer off the virtqueue, and when the device's interrupt for that buffer is then handled,
//! the driver finds nothing new on the queue and wakes no one (`vring_interrupt` returns early
//! before the port's callback). A poll whose answer does not reach the reader therefore loses
//! that input's wake-up: the request sits in the driver until the next one arrives. So during a
//! session only the session's own registration polls the port without passing the answer on;
//! the host-arrival epoll exists only while no session runs, and a write that polls the port
//! itself to tell "no host" from "queue full" hands any input it sees to the reader.
//!
//! tokio's readiness cannot wait for the host to come back: it treats `EPOLLHUP` as a final
//! "closed" state that `clear_ready` never clears, so an `AsyncFd` on a port without host is
//! ready forever and a loop on it spins. Instead, host arrival is awaited on a private epoll
//! instance holding the port edge-triggered (quiet until the next wake-up of the port), itself
//! registered with tokio; and each host session gets a fresh `AsyncFd` registration on a
//! duplicate of the port's fd, whose sticky "closed" state then means exactly "this host left".

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::time::{Instant, Sleep, sleep};

/// The kernel accepts at most this much per `write()` on a port.
pub const MAX_WRITE: usize = 32 * 1024;

/// How long a write waits for writability before trying again without a wake-up: kernels
/// before the 2025 `port_fops_poll` fix can lose the `EPOLLOUT` wake-up.
const WRITE_RECHECK: Duration = Duration::from_millis(250);

/// How long a reply waits for an absent host before it is dropped. The guest driver handles
/// data and host connect/disconnect on different virtqueues, the latter in deferred work: when
/// a host reconnects, its first requests can be read while the port still says "no host"
/// (the old host's close or the new one's open not yet processed), and a reply written then
/// gets `EAGAIN`. Dropping it at once loses the answer to a request the new host really sent;
/// qemu-ga retries such writes until they go through. Under a loaded TCG host the guest has
/// been seen to take seconds to process the connect message, hence the generous bound.
const HOST_GRACE: Duration = Duration::from_secs(30);

/// Whether a host is attached to the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    /// A host is attached: I/O flows.
    Connected,
    /// No host (or the port was unplugged): `POLLHUP`.
    Absent,
}

/// The port's state now, without blocking. See the module notes before calling this while a
/// session reads the port: use [`PortStream`]'s own probe there.
pub fn host_state(fd: &impl AsFd) -> io::Result<HostState> {
    poll_port(fd).map(|(state, _)| state)
}

/// The port's host state and whether a read would return at once (data, or end of session).
fn poll_port(fd: &impl AsFd) -> io::Result<(HostState, bool)> {
    let mut fds = [PollFd::new(
        fd.as_fd(),
        PollFlags::POLLIN | PollFlags::POLLOUT,
    )];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let rev = fds[0].revents().unwrap_or(PollFlags::empty());
    if rev.contains(PollFlags::POLLNVAL) {
        return Err(Errno::EBADF.into());
    }
    let state = if rev.contains(PollFlags::POLLHUP) {
        HostState::Absent
    } else {
        HostState::Connected
    };
    Ok((state, rev.contains(PollFlags::POLLIN)))
}

/// An epoll fd usable with `AsyncFd`.
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Waits, without polling in a loop, for the port's wait queue to be woken (host connect or
/// disconnect, data, unplug). Drop it before a session starts (see the module notes: its
/// epoll would poll the port on every wake-up and could swallow an input's wake-up).
pub struct HostWaiter {
    epoll: AsyncFd<EpollFd>,
}

impl fmt::Debug for HostWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostWaiter")
            .field("epoll", &self.epoll.get_ref().as_raw_fd())
            .finish()
    }
}

impl HostWaiter {
    /// Watch `port` (edge-triggered, so a standing `POLLHUP` reports once, not forever).
    pub fn new(port: &impl AsFd) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            port.as_fd(),
            EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET,
                0,
            ),
        )?;
        // SAFETY: `EpollFd` owns the epoll fd; it stays open, and `as_raw_fd` returns it, for
        // as long as the `AsyncFd` holds it (it is never replaced).
        let epoll = unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { epoll })
    }

    /// Forget the wake-ups seen so far.
    fn drain(&self) {
        let mut events = [EpollEvent::empty(); 4];
        while let Ok(n) = self.epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
            if n < events.len() {
                break;
            }
        }
    }

    /// Wait until `port` has a host, re-checking at least every `recheck` (a safety net for
    /// a lost wake-up; also when `still_there` notices an unplug). Returns `Ok(false)` when
    /// `still_there` says the port is gone.
    pub async fn wait_for_host(
        &self,
        port: &impl AsFd,
        recheck: Duration,
        mut still_there: impl FnMut() -> bool,
    ) -> io::Result<bool> {
        loop {
            // Drain before checking, so a wake-up after the check is not lost.
            self.drain();
            if host_state(port)? == HostState::Connected {
                return Ok(true);
            }
            if !still_there() {
                return Ok(false);
            }
            tokio::select! {
                r = self.epoll.readable() => r?.clear_ready(),
                _ = sleep(recheck) => {}
            }
        }
    }
}

/// One host session on a port: reads end (EOF) when the host leaves.
pub struct PortStream {
    fd: AsyncFd<OwnedFd>,
    what: String,
    recheck: Option<Pin<Box<Sleep>>>,
    /// When a write first found no host (see [`HOST_GRACE`]).
    absent_since: Option<Instant>,
    /// The reader's waker while it waits for input.
    read_waker: Option<Waker>,
    /// A write's own poll of the port saw input (or the end of the session): the reader must
    /// try a read, as that poll may have used up the interrupt's wake-up.
    probed_input: bool,
}

impl fmt::Debug for PortStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortStream")
            .field("port", &self.what)
            .field("fd", &self.fd.get_ref().as_raw_fd())
            .finish()
    }
}

impl PortStream {
    /// A session on `fd`, a duplicate of the port's non-blocking fd (dropping the session
    /// closes only the duplicate: the port stays open).
    pub fn new(fd: OwnedFd, what: String) -> io::Result<Self> {
        // SAFETY: the `OwnedFd` is owned by the `AsyncFd` and closed only when it is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            what,
            recheck: None,
            absent_since: None,
            read_waker: None,
            probed_input: false,
        })
    }

    /// The host state, for a write that got `EAGAIN`; any input this poll sees is handed to
    /// the reader (see the module notes).
    fn probe(&mut self) -> io::Result<HostState> {
        let (state, readable) = poll_port(self.fd.get_ref())?;
        if readable {
            self.probed_input = true;
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
        Ok(state)
    }

    fn read_now(&self, buf: &mut ReadBuf<'_>) -> Result<(), Errno> {
        let unfilled = buf.initialize_unfilled();
        loop {
            match nix::unistd::read(self.fd.get_ref(), unfilled) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(n) => {
                    buf.advance(n);
                    return Ok(());
                }
            }
        }
    }

    fn host_left() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "host disconnected from the port")
    }

    fn try_write(&self, buf: &[u8]) -> Result<usize, Errno> {
        loop {
            match nix::unistd::write(self.fd.get_ref(), buf) {
                Err(Errno::EINTR) => continue,
                r => return r,
            }
        }
    }

    /// A write found no host: `Ready(Err)` once the host has been away for [`HOST_GRACE`],
    /// else waits one re-check period (`Ready(Ok)`: try again).
    fn poll_host_grace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let since = *self.absent_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= HOST_GRACE {
            self.absent_since = None;
            self.recheck = None;
            return Poll::Ready(Err(Self::host_left()));
        }
        ready!(self.poll_recheck(cx));
        Poll::Ready(Ok(()))
    }

    /// Arms (if needed) and polls the write re-check timer; `Ready` when it fired.
    fn poll_recheck(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let t = self
            .recheck
            .get_or_insert_with(|| Box::pin(sleep(WRITE_RECHECK)));
        ready!(t.as_mut().poll(cx));
        self.recheck = None;
        Poll::Ready(())
    }
}

impl AsyncRead for PortStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.probed_input) {
            match this.read_now(buf) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(Errno::EAGAIN) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        loop {
            let mut guard = match this.fd.poll_read_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    this.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            };
            let closed = guard.ready().is_read_closed();
            match this.read_now(buf) {
                // Data, or an empty read: the host left (nothing buffered and no host), the
                // end of this session.
                Ok(()) => return Poll::Ready(Ok(())),
                Err(Errno::EAGAIN) if closed => {
                    // The host left (tokio saw POLLHUP) and a new one is already attached:
                    // end this session; the next accept starts a clean one.
                    return Poll::Ready(Ok(()));
                }
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Short writes are normal here: the caller loops (AsyncWrite contract).
        let buf = &buf[..buf.len().min(MAX_WRITE)];
        loop {
            match this.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    let closed = guard.ready().is_write_closed();
                    match this.try_write(buf) {
                        Ok(n) => {
                            this.recheck = None;
                            this.absent_since = None;
                            return Poll::Ready(Ok(n));
                        }
                        Err(Errno::EAGAIN) => {
                            if !closed {
                                guard.clear_ready();
                            }
                            drop(guard);
                            if closed || this.probe()? == HostState::Absent {
                                // Readiness stays set once tokio saw the hang-up, so the
                                // timer, not readiness, paces the retries.
                                ready!(this.poll_host_grace(cx))?;
                                continue;
                            }
                        }
                        Err(e) => return Poll::Ready(Err(e.into())),
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    ready!(this.poll_recheck(cx));
                    match this.try_write(buf) {
                        Ok(n) => {
                            this.absent_since = None;
                            return Poll::Ready(Ok(n));
                        }
                        Err(Errno::EAGAIN) => {
                            if this.probe()? == HostState::Absent {
                                ready!(this.poll_host_grace(cx))?;
                                continue;
                            }
                            // Not writable yet: arm the timer again and keep waiting.
                            ready!(this.poll_recheck(cx));
                        }
                        Err(e) => return Poll::Ready(Err(e.into())),
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing the port would tell the host the agent went away: the session just ends.
        Poll::Ready(Ok(()))
    }
}
