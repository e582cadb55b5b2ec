//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`), so the daemon notices a virtio-serial port, a xenbus
//! or an `ovmapi` device that appears or goes while it runs, without polling sysfs often.
//!
//! Only the kernel's multicast group (1) is joined: udev's rebroadcasts (group 2, `libudev`
//! framing) need udev, which system VMs lack, and they add nothing the kernel's do not say.
//! An event only ever triggers a rescan of the devices: a forged or lost event costs at most one
//! scan, or one rescan interval, so nothing here is trusted further than that.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    socket, sockopt,
};
use tokio::io::unix::AsyncFd;

/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;
/// A uevent is at most a few KiB (UEVENT_BUFFER_SIZE is 2048 bytes of environment).
const MAX_MESSAGE: usize = 8192;

/// One kernel uevent, the fields the daemon looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, ...
    pub action: String,
    /// `/devices/pci0000:00/.../virtio-ports/vport1p2`.
    pub devpath: String,
    /// `virtio-ports`, `misc`, `xen`, ...
    pub subsystem: Option<String>,
    /// The node under `/dev`, when the device has one (`vport1p2`).
    pub devname: Option<String>,
}

impl Uevent {
    /// True for the subsystems whose devices are guestd channels.
    pub fn concerns_channels(&self) -> bool {
        matches!(
            self.subsystem.as_deref(),
            Some("virtio-ports" | "misc" | "xen" | "xen-backend" | "tty" | "vsock")
        )
    }
}

/// Parse a kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`. `None` for anything else
/// (udev's `libudev` messages, garbage).
pub fn parse(msg: &[u8]) -> Option<Uevent> {
    let mut parts = msg.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut ev = Uevent {
        action: action.to_owned(),
        devpath: devpath.to_owned(),
        subsystem: None,
        devname: None,
    };
    for p in parts {
        let Ok(kv) = std::str::from_utf8(p) else {
            continue;
        };
        match kv.split_once('=') {
            Some(("SUBSYSTEM", v)) => ev.subsystem = Some(v.to_owned()),
            Some(("DEVNAME", v)) => ev.devname = Some(v.to_owned()),
            Some(("ACTION", v)) if v != ev.action => return None,
            _ => {}
        }
    }
    Some(ev)
}

/// What [`UeventMonitor::next`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// An event.
    Event(Uevent),
    /// The socket buffer overflowed: events were lost, rescan everything.
    Overflow,
}

/// A socket joined to the kernel's uevent group.
#[derive(Debug)]
pub struct UeventMonitor {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl UeventMonitor {
    /// Open and bind the socket. Needs a tokio runtime. Fails where netlink is not allowed
    /// (some containers, seccomp): the caller falls back to periodic rescans.
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // A burst (a PCI device with many ports) must not overflow the default buffer; failing
        // to enlarge it is not fatal (overflow is reported and answered with a rescan).
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(256 * 1024));
        // Port id 0: the kernel assigns one.
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        // SAFETY: the `OwnedFd` is owned by the `AsyncFd`, stays open while registered and is
        // closed only when the `AsyncFd` is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            buf: vec![0; MAX_MESSAGE],
        })
    }

    /// The next event (datagrams that are not kernel uevents are skipped).
    pub async fn next(&mut self) -> io::Result<Seen> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            let got = guard.try_io(|fd| {
                recv(fd.get_ref().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            });
            match got {
                Ok(Ok(n)) => {
                    if let Some(ev) = parse(&self.buf[..n.min(self.buf.len())]) {
                        return Ok(Seen::Event(ev));
                    }
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Seen::Overflow),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_uevent() {
        let msg = b"add@/devices/pci0000:00/0000:00:03.0/virtio1/virtio-ports/vport1p2\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio1/virtio-ports/vport1p2\0SUBSYSTEM=virtio-ports\0MAJOR=244\0MINOR=2\0DEVNAME=vport1p2\0SEQNUM=1234\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert!(ev.devpath.ends_with("/vport1p2"));
        assert_eq!(ev.subsystem.as_deref(), Some("virtio-ports"));
        assert_eq!(ev.devname.as_deref(), Some("vport1p2"));
        assert!(ev.concerns_channels());
    }

    #[test]
    fn rejects_what_is_not_a_kernel_uevent() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b"no-at-sign\0SUBSYSTEM=x\0"), None);
        assert_eq!(parse(b"add@relative\0"), None);
        // A header that disagrees with its ACTION is not trusted.
        assert_eq!(parse(b"add@/devices/x\0ACTION=remove\0"), None);
        let ev = parse(b"change@/devices/virtual/net/lo\0SUBSYSTEM=net\0\xff\xfe\0").unwrap();
        assert!(!ev.concerns_channels());
    }

    #[test]
    fn no_input_panics() {
        for len in 0..64 {
            let msg: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let _ = parse(&msg);
        }
    }

    /// The socket opens here (the build machine runs Linux with netlink) and waits quietly.
    #[tokio::test]
    async fn opens_and_waits() {
        let Ok(mut m) = UeventMonitor::open() else {
            eprintln!("netlink uevent socket not available here");
            return;
        };
        let r = tokio::time::timeout(std::time::Duration::from_millis(50), m.next()).await;
        // Either nothing happened, or some device event did: both fine; an error is not.
        if let Ok(r) = r {
            r.unwrap();
        }
    }
}
