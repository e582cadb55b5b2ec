//! guestd's xenstore client against Debian's real xenstored (4.17): requests, permissions,
//! watches and tokens, transactions under contention from `xenstore-write`, payload limits,
//! the daemon's error names, and the daemon restarting under a connected client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use guestd_core::contract::{KeyValueTransport, KvError};
use guestd_transports::xenstore::wire::MsgType;
use guestd_transports::xenstore::{
    Access, Endpoint, Errno, Perm, XenstoreTransport, XsClient, XsError,
};
use support::xenstored::{self, Xenstored};
use tokio::time::timeout;

fn peer() -> bool {
    support::require_peer(xenstored::available(), xenstored::PEER)
}

async fn dom0(x: &Xenstored) -> XsClient {
    XsClient::connect_socket(&x.socket).await.unwrap()
}

async fn next_event(w: &mut guestd_transports::xenstore::XsWatch) -> String {
    timeout(Duration::from_secs(10), w.events.recv())
        .await
        .expect("watch event within 10 s")
        .expect("watch still open")
}

async fn no_event(w: &mut guestd_transports::xenstore::XsWatch) {
    if let Ok(Some(p)) = timeout(Duration::from_millis(300), w.events.recv()).await {
        panic!("unexpected watch event {p}");
    }
}

fn errno(r: Result<impl std::fmt::Debug, XsError>) -> Errno {
    match r {
        Err(e) => e
            .errno()
            .cloned()
            .unwrap_or_else(|| panic!("no errno: {e:?}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test]
async fn read_write_mkdir_rm_directory() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[], &[]);
    let c = dom0(&x).await;
    c.write("/t/a", b"value-a").await.unwrap();
    c.write("/t/b", b"").await.unwrap();
    assert_eq!(c.read("/t/a").await.unwrap(), b"value-a");
    assert_eq!(c.read("/t/b").await.unwrap(), b"");
    // The independent tool sees what we wrote, and we see what it writes.
    assert_eq!(x.read("/t/a").as_deref(), Some("value-a"));
    x.write("/t/c", "from-tool");
    assert_eq!(c.read("/t/c").await.unwrap(), b"from-tool");
    // Values are bytes, taken verbatim: no NUL added or stripped, any byte carried.
    c.write("/t/bin", b"a\0b\xff=").await.unwrap();
    assert_eq!(c.read("/t/bin").await.unwrap(), b"a\0b\xff=");

    let mut names = c.directory("/t").await.unwrap();
    names.sort();
    assert_eq!(names, ["a", "b", "bin", "c"]);
    c.mkdir("/t/d/e").await.unwrap();
    assert_eq!(c.read("/t/d").await.unwrap(), b"");
    assert_eq!(c.directory("/t/d").await.unwrap(), ["e"]);
    assert!(c.directory("/t/d/e").await.unwrap().is_empty());

    c.rm("/t/d").await.unwrap();
    assert_eq!(errno(c.read("/t/d/e").await), Errno::ENOENT);
    // A missing leaf is fine, a missing parent is not.
    c.rm("/t/missing").await.unwrap();
    assert_eq!(errno(c.rm("/t/missing/leaf").await), Errno::ENOENT);
    assert!(x.read("/t/d").is_none());

    // The daemon's trace shows our requests as it parsed them.
    let trace = x.trace();
    assert!(trace.contains("WRITE (/t/a value-a)"), "{trace}");
}

#[tokio::test]
async fn error_names_become_typed_errors() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[], &[]);
    let c = dom0(&x).await;
    assert_eq!(errno(c.read("/nope").await), Errno::ENOENT);
    for bad in ["/t/bad path?", "/t/trailing/", "/t//double", "."] {
        assert_eq!(errno(c.write(bad, b"x").await), Errno::EINVAL, "{bad}");
    }
    // A dotted key can never be a node name: why ovmd keys are node values.
    assert_eq!(
        errno(c.write("/t/com.oracle.linux.x", b"x").await),
        Errno::EINVAL
    );
    // Unknown transaction id.
    let r = c.raw(MsgType::Read, 4711, b"/t\0".to_vec()).await;
    assert_eq!(errno(r), Errno::ENOENT);
    // The same watch twice.
    let w = b"/t\0mytoken\0".to_vec();
    c.raw(MsgType::Watch, 0, w.clone()).await.unwrap();
    assert_eq!(errno(c.raw(MsgType::Watch, 0, w).await), Errno::EEXIST);
    // The error's text names the request, the path and the daemon's error.
    let e = c.read("/nope").await.unwrap_err();
    assert_eq!(e.to_string(), "READ /nope: ENOENT");
    // Through the key-value contract the same error is typed for protocols.
    let t = XenstoreTransport::at(Endpoint::Socket(x.socket.clone()));
    let store = t.connect().await.unwrap();
    assert_eq!(
        store.read("/nope").await,
        Err(KvError::NotFound("/nope".into()))
    );
    assert_eq!(
        store.write("/bad path?", b"").await,
        Err(KvError::Invalid("/bad path?".into()))
    );
}

#[tokio::test]
async fn permissions_as_dom0_and_as_a_guest() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[3], &[]);
    let c = dom0(&x).await;
    c.write("/p/node", b"v").await.unwrap();
    let perms = [
        Perm {
            access: Access::None,
            domid: 0,
        },
        Perm {
            access: Access::Read,
            domid: 3,
        },
    ];
    c.set_perms("/p/node", &perms).await.unwrap();
    assert_eq!(c.get_perms("/p/node").await.unwrap(), perms);
    // The tool agrees.
    let ls = x.tool("xenstore-ls", &["-p", "/p"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("n0,r3"),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    // The home the toolstack made: dom0 owns it, the guest reads it.
    assert_eq!(
        c.get_perms("/local/domain/3/name").await.unwrap(),
        [
            Perm {
                access: Access::None,
                domid: 0
            },
            Perm {
                access: Access::Read,
                domid: 3
            }
        ]
    );
    drop(c);

    let g = XsClient::connect_socket(x.guest_socket(3)).await.unwrap();
    // Relative paths are the guest's home.
    assert_eq!(g.read("name").await.unwrap(), b"guest-3");
    assert_eq!(g.home().await.unwrap(), "/local/domain/3");
    assert_eq!(g.get_domain_path(3).await.unwrap(), "/local/domain/3");
    assert_eq!(g.read("/p/node").await.unwrap(), b"v");
    assert_eq!(errno(g.write("/p/node", b"w").await), Errno::EACCES);
    assert_eq!(errno(g.write("name", b"evil").await), Errno::EACCES);
    assert_eq!(errno(g.read("/local/domain/0/x").await), Errno::EACCES);
    // Its own nodes.
    g.write("control/oracle-vmapi/from-guest/1", b"k")
        .await
        .unwrap();
    assert_eq!(
        x.read("/local/domain/3/control/oracle-vmapi/from-guest/1")
            .as_deref(),
        Some("k")
    );
    assert_eq!(
        g.get_perms("control/oracle-vmapi/from-guest/1")
            .await
            .unwrap()[0],
        Perm {
            access: Access::None,
            domid: 3
        }
    );
}

#[tokio::test]
async fn watches_fire_with_their_own_tokens() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[], &[]);
    let c = dom0(&x).await;
    c.write("/w/a", b"1").await.unwrap();
    let mut w1 = c.watch("/w").await.unwrap();
    let mut w2 = c.watch("/w/a").await.unwrap();
    assert_ne!(w1.token, w2.token);
    // Each fires once at registration, with its own path.
    assert_eq!(next_event(&mut w1).await, "/w");
    assert_eq!(next_event(&mut w2).await, "/w/a");
    // A change from another client below the watched paths.
    x.write("/w/a", "2");
    assert_eq!(next_event(&mut w1).await, "/w/a");
    assert_eq!(next_event(&mut w2).await, "/w/a");
    x.write("/w/b", "new");
    assert_eq!(next_event(&mut w1).await, "/w/b");
    no_event(&mut w2).await;
    // Our own writes fire too; the event may arrive before the write's reply, and every
    // request still gets its reply.
    for i in 0..50 {
        c.write(&format!("/w/n{i}"), b"x").await.unwrap();
    }
    let mut seen = 0;
    while seen < 50 {
        let p = next_event(&mut w1).await;
        assert!(p.starts_with("/w/n"), "{p}");
        seen += 1;
    }
    // Removal reports the removed node.
    c.rm("/w/a").await.unwrap();
    assert_eq!(next_event(&mut w1).await, "/w/a");
    assert_eq!(next_event(&mut w2).await, "/w/a");
    // Unwatched: silence.
    let token = w2.token.clone();
    c.unwatch(w2).await.unwrap();
    x.write("/w/a", "3");
    assert_eq!(next_event(&mut w1).await, "/w/a");
    // A dropped watch is removed from the daemon the next time it fires.
    drop(w1);
    x.write("/w/a", "4");
    let trace_has_unwatch = async {
        for _ in 0..100 {
            if x.trace().matches("UNWATCH (/w").count() >= 2 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(trace_has_unwatch.await, "{}", x.trace());
    assert!(x.trace().contains(&format!("UNWATCH (/w/a {token} )")));
}

#[tokio::test]
async fn relative_watch_on_a_guest_reports_relative_paths() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[2], &[]);
    let g = XsClient::connect_socket(x.guest_socket(2)).await.unwrap();
    let mut w = g
        .watch("control/oracle-vmapi/to-guest/last-write")
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut w).await,
        "control/oracle-vmapi/to-guest/last-write"
    );
    x.write(
        "/local/domain/2/control/oracle-vmapi/to-guest/last-write",
        "1",
    );
    assert_eq!(
        next_event(&mut w).await,
        "control/oracle-vmapi/to-guest/last-write"
    );
}

#[tokio::test]
async fn transactions_conflict_with_a_second_client_and_are_redone() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[4], &[]);
    let c = dom0(&x).await;
    c.write("/tx/counter", b"10").await.unwrap();

    // Inside: invisible outside until commit.
    let tx = c.transaction().await.unwrap();
    tx.write("/tx/inside", b"1").await.unwrap();
    assert_eq!(tx.read("/tx/inside").await.unwrap(), b"1");
    assert!(x.read("/tx/inside").is_none());
    tx.commit().await.unwrap();
    assert_eq!(x.read("/tx/inside").as_deref(), Some("1"));

    // A conflicting write from xenstore-write between read and commit: EAGAIN, nothing
    // applied.
    let tx = c.transaction().await.unwrap();
    let v = tx.read("/tx/counter").await.unwrap();
    tx.write("/tx/counter", b"11").await.unwrap();
    x.write("/tx/counter", "100");
    assert_eq!(v, b"10");
    assert_eq!(errno(tx.commit().await), Errno::EAGAIN);
    assert_eq!(x.read("/tx/counter").as_deref(), Some("100"));

    // Aborted: nothing applied.
    let tx = c.transaction().await.unwrap();
    tx.write("/tx/aborted", b"1").await.unwrap();
    tx.abort().await.unwrap();
    assert!(x.read("/tx/aborted").is_none());

    // The bounded retry redoes the whole body after a conflict.
    let mut attempts = 0;
    let result = c
        .with_transaction(5, async |tx| {
            attempts += 1;
            let v: u64 = String::from_utf8_lossy(&tx.read("/tx/counter").await?)
                .parse()
                .unwrap();
            if attempts == 1 {
                x.write("/tx/counter", "200");
            }
            tx.write("/tx/counter", (v + 1).to_string().as_bytes())
                .await?;
            Ok(v + 1)
        })
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(result, 201);
    assert_eq!(x.read("/tx/counter").as_deref(), Some("201"));

    // Always conflicting: gives up with EAGAIN after the bound.
    let mut n = 0;
    let r = c
        .with_transaction(3, async |tx| {
            n += 1;
            tx.read("/tx/counter").await?;
            tx.write("/tx/counter", b"x").await?;
            x.write("/tx/counter", &format!("{n}"));
            Ok(())
        })
        .await;
    assert_eq!(errno(r), Errno::EAGAIN);
    assert_eq!(n, 3);
    drop(c);

    // As an unprivileged guest too (the daemon's per-domain transaction code).
    let g = XsClient::connect_socket(x.guest_socket(4)).await.unwrap();
    let tx = g.transaction().await.unwrap();
    tx.read("data").await.unwrap();
    tx.write("data/k", b"guest").await.unwrap();
    x.write("/local/domain/4/data/k", "dom0");
    assert_eq!(errno(tx.commit().await), Errno::EAGAIN);
    // A dropped transaction is ended, not leaked (guests have only a few).
    for _ in 0..15 {
        let tx = g.transaction().await.unwrap();
        tx.write("data/k", b"again").await.unwrap();
        drop(tx);
    }
    let tx = g.transaction().await.unwrap();
    tx.write("data/k", b"final").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(x.read("/local/domain/4/data/k").as_deref(), Some("final"));
}

#[tokio::test]
async fn payload_limits_and_long_listings() {
    if !peer() {
        return;
    }
    let x = Xenstored::start(&[5], &[]);
    let c = dom0(&x).await;
    // path + NUL + value = 4096 exactly: accepted; one more: refused before sending.
    let path = "/big/v";
    let value = vec![b'x'; 4096 - path.len() - 1];
    c.write(path, &value).await.unwrap();
    assert_eq!(c.read(path).await.unwrap(), value);
    let mut more = value.clone();
    more.push(b'y');
    let e = c.write(path, &more).await.unwrap_err();
    assert!(
        matches!(
            e,
            XsError::TooBig {
                len: 4097,
                max: 4096,
                ..
            }
        ),
        "{e:?}"
    );
    // The connection is still fine afterwards.
    assert_eq!(c.read(path).await.unwrap().len(), 4096 - path.len() - 1);

    // A listing longer than one payload: E2BIG, then DIRECTORY_PART slices.
    for i in 0..300 {
        c.write(&format!("/big/dir/child-with-a-long-name-{i:04}"), b"")
            .await
            .unwrap();
    }
    let mut names = c.directory("/big/dir").await.unwrap();
    names.sort();
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "child-with-a-long-name-0000");
    assert_eq!(names[299], "child-with-a-long-name-0299");
    assert!(x.trace().contains("DIRECTORY_PART"), "no DIRECTORY_PART");
    drop(c);

    // A guest's node must stay under the size quota: ENOSPC names the failure.
    let g = XsClient::connect_socket(x.guest_socket(5)).await.unwrap();
    let e = g.write("data/huge", &[b'z'; 3000]).await.unwrap_err();
    assert_eq!(e.errno(), Some(&Errno::ENOSPC));
    g.write("data/small", &[b'z'; 1000]).await.unwrap();
}

#[tokio::test]
async fn the_daemon_restarting_under_a_connected_client() {
    if !peer() {
        return;
    }
    let mut x = Xenstored::start(&[], &[]);
    let t = XenstoreTransport::at(Endpoint::Socket(x.socket.clone()));
    let c = t.connect_client().await.unwrap();
    c.write("/r/before", b"1").await.unwrap();
    let mut w = c.watch("/r").await.unwrap();
    assert_eq!(next_event(&mut w).await, "/r");

    x.restart();
    // The old connection reports itself lost: requests fail, the watch ends.
    let ended = timeout(Duration::from_secs(10), async {
        while w.events.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "watch did not end after the daemon restarted"
    );
    assert!(matches!(
        c.read("/r/before").await,
        Err(XsError::Disconnected(_))
    ));
    assert!(!c.is_connected());

    // Reconnecting through the transport works, on the fresh (empty) daemon.
    let store = t.connect().await.unwrap();
    assert_eq!(
        store.read("/r/before").await,
        Err(KvError::NotFound("/r/before".into()))
    );
    store.write("/r/after", b"2").await.unwrap();
    assert_eq!(x.read("/r/after").as_deref(), Some("2"));

    // With the daemon gone, connect says "not found" (a state to wait in).
    x.stop();
    assert!(matches!(
        t.connect().await,
        Err(guestd_core::contract::TransportError::NotFound(_))
    ));
}
