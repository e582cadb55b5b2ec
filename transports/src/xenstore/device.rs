//! The Linux guest device (`/dev/xen/xenbus`, legacy `/proc/xen/xenbus`): a stream of frames
//! read through `AsyncFd`, written with plain `write()` because its `poll` only ever reports
//! readable (waiting for POLLOUT would wait forever).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

use super::client::FrameSink;

/// Open the device non-blocking; `ENOENT` means the kernel has no xenstore link.
pub fn open(path: &Path) -> io::Result<(DeviceReader, DeviceSink)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open for as long as it
    // is registered. Only readability is asked for: the device never reports writable.
    let fd = unsafe { AsyncFd::register_with_interest(OwnedFd::from(file), Interest::READABLE) }?;
    let fd = Arc::new(fd);
    Ok((
        DeviceReader {
            fd: Arc::clone(&fd),
        },
        DeviceSink { fd },
    ))
}

/// Reading side of the device.
#[derive(Debug)]
pub struct DeviceReader {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl AsyncRead for DeviceReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| {
                nix::unistd::read(inner.get_ref().as_fd(), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Writing side of the device.
#[derive(Debug)]
pub struct DeviceSink {
    fd: Arc<AsyncFd<OwnedFd>>,
}

#[async_trait]
impl FrameSink for DeviceSink {
    async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // The kernel takes a whole frame at once; EAGAIN (its buffer busy) is rare and short.
        let mut at = 0;
        let mut busy = 0u32;
        while at < frame.len() {
            match nix::unistd::write(self.fd.get_ref().as_fd(), &frame[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                Err(nix::errno::Errno::EAGAIN) if busy < 1000 => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(())
    }
}
