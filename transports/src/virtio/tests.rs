use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::virtio::discover::tests::fixture;

fn fast() -> VirtioOptions {
    VirtioOptions {
        recheck: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn absent_port_is_not_found_with_reason() {
    let t = fixture(&[("vport0p1", "other")], false);
    let port = VirtioPort::new(
        vec!["org.qemu.guest_agent.0".into()],
        Paths::under(t.path()),
    );
    match port.accept().await {
        Err(TransportError::NotFound(w)) => {
            assert!(w.contains("org.qemu.guest_agent.0"), "{w}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(port.probe().await, Probe::Absent { .. }));
    assert!(port.current().await.is_none());
}

#[tokio::test]
async fn probe_finds_without_opening() {
    let t = fixture(&[("vport0p1", "n")], false);
    let port = VirtioPort::new(vec!["n".into()], Paths::under(t.path()));
    assert_eq!(
        port.probe().await,
        Probe::Present {
            at: t.path().join("dev/vport0p1").display().to_string()
        }
    );
    assert!(port.current().await.is_none(), "probe must not open");
    assert_eq!(port.describe(), "virtio:n");
}

/// A FIFO opened read-write stands in for a port whose host is connected: what is written
/// comes back, which exercises the session's read and write paths (including writes larger
/// than one port write and the FIFO's buffer).
#[tokio::test]
async fn session_reads_and_writes_through_the_node() {
    let t = fixture(&[("vport0p1", "n")], true);
    let port = VirtioPort::with_options(vec!["n".into()], Paths::under(t.path()), fast());
    let stream = port.accept().await.unwrap();
    assert_eq!(port.current().await.unwrap().via, Via::Link);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let want = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr
    });
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got == want, "data changed on the way");
    let wr = writer.await.unwrap();
    drop(rd.unsplit(wr));
    // The port stays open across sessions: the next accept reuses it.
    let mut s2 = port.accept().await.unwrap();
    s2.write_all(b"again\n").await.unwrap();
    let mut b = [0u8; 6];
    s2.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"again\n");
}

/// A pty slave stands in for a port whose host is away: `POLLHUP` stands while the master is
/// closed. `accept` must wait (not fail, not return), and report `Gone` once the port's sysfs
/// directory disappears (an unplug), closing the port.
#[tokio::test]
async fn waits_while_host_is_away_and_reports_unplug() {
    let t = fixture(&[("vport0p1", "n")], false);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = nix::unistd::ttyname(pty.slave.as_fd()).unwrap();
    let dev = t.path().join("dev/vport0p1");
    std::fs::remove_file(&dev).unwrap();
    std::os::unix::fs::symlink(&slave, &dev).unwrap();
    let port = std::sync::Arc::new(VirtioPort::with_options(
        vec!["n".into()],
        Paths::under(t.path()),
        fast(),
    ));

    // Host (master) present: a session starts at once.
    let s = tokio::time::timeout(Duration::from_secs(5), port.accept())
        .await
        .unwrap()
        .unwrap();
    drop(s);
    drop(pty.master);
    drop(pty.slave);

    // Host away: accept keeps waiting.
    let p2 = std::sync::Arc::clone(&port);
    let pending = tokio::spawn(async move { p2.accept().await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !pending.is_finished(),
        "accept returned while no host was there"
    );

    // Unplug: the sysfs directory goes; accept reports Gone and the port is released.
    std::fs::remove_dir_all(t.path().join("sys/class/virtio-ports/vport0p1")).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(TransportError::Gone(_))), "{r:?}");
    assert!(port.current().await.is_none());
}

#[tokio::test]
async fn release_closes_and_next_accept_rediscovers() {
    let t = fixture(&[("vport0p1", "a"), ("vport0p2", "b")], false);
    let port = VirtioPort::new(vec!["a".into(), "b".into()], Paths::under(t.path()));
    drop(port.accept().await.unwrap());
    assert_eq!(port.current().await.unwrap().name, "a");
    port.release().await;
    assert!(port.current().await.is_none());
    // "a" is gone now; the fallback name is found.
    std::fs::remove_dir_all(t.path().join("sys/class/virtio-ports/vport0p1")).unwrap();
    drop(port.accept().await.unwrap());
    assert_eq!(port.current().await.unwrap().name, "b");
}

#[test]
fn open_errors_map_to_agent_states() {
    let f = Found {
        name: "n".into(),
        dev: "/dev/vport0p1".into(),
        sysfs: None,
        via: Via::Sysfs,
    };
    assert!(matches!(
        open_error(&f, Errno::EBUSY),
        TransportError::Busy(_)
    ));
    assert!(matches!(
        open_error(&f, Errno::ENODEV),
        TransportError::Gone(_)
    ));
    assert!(matches!(
        open_error(&f, Errno::ENOENT),
        TransportError::NotFound(_)
    ));
    assert!(matches!(
        open_error(&f, Errno::EACCES),
        TransportError::Io { .. }
    ));
    assert!(open_error(&f, Errno::EBUSY).to_string().contains("busy"));
}
