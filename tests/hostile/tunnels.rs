//! Idle CONNECT tunnels: each holds its client connection's `max_connections` slot, so a
//! flood of them is refused with 503 beyond the limit, and all are closed at
//! `tunnel-idle-timeout`, which gives the slots back.

use std::time::{Duration, Instant};

use super::{SLACK, proxy};
use crate::proxy::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_idle_connect_tunnels_hold_their_slots_until_tunnel_idle_timeout() {
    let (echo, _echo_task) = echo_server().await;
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let idle = Duration::from_secs(1);
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.max_connections = 3;
        c.tunnel_idle_timeout = idle;
    })
    .await;
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut conn = RawConn::connect(proxy).await;
        conn.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(conn.read_head().await.expect("CONNECT answer").0, 200);
        conn.send(b"once").await.unwrap();
        assert_eq!(conn.read_exact(4).await.unwrap(), b"once");
        tunnels.push(conn);
    }
    let opened = Instant::now();
    // The tunnels' client connections have ended in hyper, but their slots are still taken.
    let refused = get(proxy, &origin.url("/x")).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(origin.hits(), 0);
    for t in &mut tunnels {
        let rest = t.read_to_end().await.expect("idle tunnel closed");
        assert!(rest.is_empty());
    }
    let closed = opened.elapsed();
    assert!(closed < idle + SLACK * 2, "tunnels closed after {closed:?}");
    // The slots come back (released as each tunnel task ends).
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let res = get(proxy, &origin.url("/x")).await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503);
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
