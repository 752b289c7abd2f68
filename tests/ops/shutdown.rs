//! SIGTERM with blind CONNECT tunnels open, on the real binary: an exchange in flight inside
//! a tunnel (the client sent last, the origin thinks) is waited for, within
//! `--shutdown-timeout`; a tunnel at rest (the origin answered last, then nothing moved) is
//! closed at once and holds nothing; hoard exits 0 once both are done.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proxy::harness::RawConn;
use crate::support;

/// Far above what the tests wait for, so an exit that waited for it is seen.
const SHUTDOWN_TIMEOUT: &str = "20s";
/// The exit after the last answer: the tunnel is then at rest (1 s) and closed.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// A plain origin: `/slowN` answers after N ms, anything else at once; the body is the path.
async fn origin() -> support::Origin {
    support::Origin::start_with(|_, req| {
        let path = req.uri().path();
        let ms = path.strip_prefix("/slow").and_then(|n| n.parse().ok());
        support::Act::Reply(
            Duration::from_millis(ms.unwrap_or(0)),
            support::reply(200, &[("cache-control", "no-store")], path.to_owned()),
        )
    })
    .await
}

/// hoard on `threads` threads, CONNECT allowed to `origin`'s port, no access lines.
async fn serve(
    dir: &std::path::Path,
    origin: SocketAddr,
    threads: &str,
) -> (tokio::process::Child, SocketAddr) {
    let port = origin.port().to_string();
    let extra = [
        "--threads",
        threads,
        "--allowed-connect-ports",
        &port,
        "--shutdown-timeout",
        SHUTDOWN_TIMEOUT,
    ];
    super::serve_logging(dir, std::path::Path::new("off"), &extra).await
}

/// A blind tunnel to `origin` through `proxy`.
async fn tunnel(proxy: SocketAddr, origin: SocketAddr) -> RawConn {
    let mut conn = RawConn::connect(proxy).await;
    conn.send(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(conn.read_head().await.expect("CONNECT answer").0, 200);
    conn
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: origin\r\n\r\n").into_bytes()
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the PID of a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// Exits 0 within [`EXIT_WITHIN`].
async fn exits_promptly(child: &mut tokio::process::Child, case: &str) {
    let exit = tokio::time::timeout(EXIT_WITHIN, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{case}: hoard still running {EXIT_WITHIN:?} after the answer"))
        .unwrap();
    assert!(exit.success(), "{case}: {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_exchange_in_flight_through_a_connect_tunnel_finish() {
    let origin = origin().await;
    // One thread, and two per-core threads (the tunnel may live on a sibling runtime).
    for (i, threads) in ["1", "2"].into_iter().enumerate() {
        let case = format!("--threads {threads}");
        let dir = tempfile::tempdir().unwrap();
        let (mut child, proxy) = serve(dir.path(), origin.addr, threads).await;
        let mut t = tunnel(proxy, origin.addr).await;
        t.send(&get("/slow1500")).await.unwrap();
        assert_eq!(
            origin.wait_hits(i + 1, Duration::from_secs(10)).await,
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        sigterm(&child);
        let res = t
            .read_response("GET")
            .await
            .unwrap_or_else(|e| panic!("{case}: tunnel cut before the answer: {e}"));
        assert_eq!(
            (res.status, res.text()),
            (200, "/slow1500".into()),
            "{case}"
        );
        exits_promptly(&mut child, &case).await;
        let rest = t.read_to_end().await.expect("the tunnel closed");
        assert!(rest.is_empty(), "{case}: {rest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_an_idle_connect_tunnel_at_once_while_a_busy_one_finishes() {
    let origin = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, proxy) = serve(dir.path(), origin.addr, "1").await;
    // At rest: the origin answered last, and the client keeps the tunnel open.
    let mut idle = tunnel(proxy, origin.addr).await;
    idle.send(&get("/now")).await.unwrap();
    assert_eq!(idle.read_response("GET").await.unwrap().status, 200);
    // Busy: its origin answers 4 s after the request, 3.5 s after SIGTERM.
    let mut busy = tunnel(proxy, origin.addr).await;
    busy.send(&get("/slow4000")).await.unwrap();
    assert_eq!(origin.wait_hits(2, Duration::from_secs(10)).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    let busy = tokio::spawn(async move {
        let res = busy.read_response("GET").await;
        (res.map(|r| (r.status, r.text())), Instant::now())
    });
    let rest = idle.read_to_end().await.expect("the idle tunnel closed");
    let idle_closed = Instant::now();
    assert!(rest.is_empty(), "{rest:?}");
    let (res, answered) = busy.await.unwrap();
    let res = res.unwrap_or_else(|e| panic!("busy tunnel cut before the answer: {e}"));
    assert_eq!(res, (200, "/slow4000".into()));
    assert!(
        idle_closed < answered,
        "the idle tunnel was held until the busy one was answered"
    );
    exits_promptly(&mut child, "idle and busy tunnels").await;
}
