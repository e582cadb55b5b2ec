//! A serial line: QEMU's isa-serial (`/dev/ttyS1`) or any tty, through tokio-serial.
//!
//! Set up as qemu-ga does: raw termios (`cfmakeraw`: no echo, no line editing, no CR/LF
//! mapping, `VMIN=1`, `VTIME=0`), 8N1 without flow control, input flushed on open so bytes
//! left over from before the agent started are not parsed. A serial line has no connection
//! state: the host is never seen to come or go, so a session lasts until an I/O error.

use std::path::PathBuf;

use async_trait::async_trait;
use guestd_core::Paths;
use guestd_core::contract::{ByteStream, ByteTransport, Probe, TransportError};
use tokio_serial::{ClearBuffer, SerialPort, SerialPortBuilderExt};
use tracing::info;

/// qemu-ga's speed; QEMU's emulated UART ignores it, a real line needs both ends to agree.
pub const DEFAULT_BAUD: u32 = 38_400;

/// A tty opened in raw mode.
#[derive(Debug)]
pub struct SerialLine {
    path: PathBuf,
    dev: PathBuf,
    baud: u32,
}

impl SerialLine {
    /// The tty at `path` (rooted at `paths`), at `baud`.
    pub fn new(path: impl Into<PathBuf>, paths: &Paths, baud: u32) -> Self {
        let path = path.into();
        Self {
            dev: paths.join(&path),
            path,
            baud,
        }
    }

    fn error(&self, e: tokio_serial::Error) -> TransportError {
        let what = format!("serial line {}", self.dev.display());
        match e.kind {
            // serialport reports a tty already held exclusively (TIOCEXCL) as NoDevice.
            tokio_serial::ErrorKind::NoDevice if self.dev.exists() => TransportError::Busy(what),
            tokio_serial::ErrorKind::NoDevice => TransportError::NotFound(what),
            tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => {
                TransportError::NotFound(what)
            }
            tokio_serial::ErrorKind::Io(kind) => TransportError::Io {
                what,
                source: std::io::Error::new(kind, e.description),
            },
            _ => TransportError::Io {
                what,
                source: std::io::Error::other(e.description),
            },
        }
    }
}

#[async_trait]
impl ByteTransport for SerialLine {
    fn describe(&self) -> String {
        format!("serial:{}", self.path.display())
    }

    async fn probe(&self) -> Probe {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&self.dev) {
            Ok(m) if m.file_type().is_char_device() => Probe::Present {
                at: self.dev.display().to_string(),
            },
            Ok(_) => Probe::Absent {
                why: format!("{} is not a character device", self.dev.display()),
            },
            Err(e) => Probe::Absent {
                why: format!("{}: {e}", self.dev.display()),
            },
        }
    }

    async fn accept(&self) -> Result<Box<dyn ByteStream>, TransportError> {
        if !self.dev.exists() {
            return Err(TransportError::NotFound(format!(
                "serial line {}",
                self.dev.display()
            )));
        }
        let dev = self.dev.to_string_lossy().into_owned();
        // Exclusive (TIOCEXCL): a second agent on the same line would split the byte stream.
        let stream = tokio_serial::new(dev, self.baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(|e| self.error(e))?;
        stream
            .clear(ClearBuffer::Input)
            .map_err(|e| self.error(e))?;
        info!(line = %self.dev.display(), baud = self.baud, "opened serial line");
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A pty stands in for the UART: its slave is the guest's tty, its master the host side.
    struct Pty {
        master: std::fs::File,
        slave_path: PathBuf,
        _slave: std::os::fd::OwnedFd,
    }

    fn pty() -> Pty {
        let p = nix::pty::openpty(None, None).unwrap();
        let slave_path = nix::unistd::ttyname(p.slave.as_fd()).unwrap();
        Pty {
            master: std::fs::File::from(p.master),
            slave_path,
            _slave: p.slave,
        }
    }

    fn master_read(m: &mut std::fs::File, n: usize) -> Vec<u8> {
        use std::io::Read;
        let mut buf = vec![0; n];
        m.read_exact(&mut buf).unwrap();
        buf
    }

    #[tokio::test]
    async fn raw_mode_bytes_pass_unchanged_both_ways() {
        use std::io::Write;
        let mut p = pty();
        let line = SerialLine::new(&p.slave_path, &Paths::system(), DEFAULT_BAUD);
        assert!(matches!(line.probe().await, Probe::Present { .. }));
        let mut s = line.accept().await.unwrap();
        // Bytes a cooked tty would change or swallow: CR, LF, ^C, ^D, ^S, DEL, 0xFF, NUL.
        let tricky = b"{\"a\":1}\r\n\x03\x04\x13\x7f\xff\x00end\n";
        p.master.write_all(tricky).unwrap();
        let mut got = vec![0; tricky.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, tricky);
        s.write_all(tricky).await.unwrap();
        s.flush().await.unwrap();
        let echoed = tokio::task::spawn_blocking(move || master_read(&mut p.master, tricky.len()))
            .await
            .unwrap();
        // No echo of the input, no "\n" -> "\r\n" on output.
        assert_eq!(&echoed, tricky);
    }

    #[tokio::test]
    async fn input_pending_before_open_is_flushed() {
        use std::io::Write;
        let mut p = pty();
        p.master.write_all(b"stale bytes\n").unwrap();
        let line = SerialLine::new(&p.slave_path, &Paths::system(), DEFAULT_BAUD);
        let mut s = line.accept().await.unwrap();
        p.master.write_all(b"fresh\n").unwrap();
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"fresh\n");
    }

    #[tokio::test]
    async fn second_opener_is_busy() {
        let p = pty();
        let line = SerialLine::new(&p.slave_path, &Paths::system(), DEFAULT_BAUD);
        let _held = line.accept().await.unwrap();
        match line.accept().await {
            Err(TransportError::Busy(w)) => assert!(w.contains("serial line"), "{w}"),
            other => panic!("expected Busy, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_and_non_tty_paths() {
        let t = tempfile::tempdir().unwrap();
        let line = SerialLine::new("/dev/ttyS9", &Paths::under(t.path()), DEFAULT_BAUD);
        assert!(matches!(line.probe().await, Probe::Absent { .. }));
        assert!(matches!(
            line.accept().await,
            Err(TransportError::NotFound(_))
        ));
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::write(t.path().join("dev/ttyS9"), "").unwrap();
        match line.probe().await {
            Probe::Absent { why } => assert!(why.contains("not a character device"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(line.describe(), "serial:/dev/ttyS9");
    }
}
