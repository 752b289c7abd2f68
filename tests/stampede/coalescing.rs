//! In-process coalescing: cold and expired URLs under 200 concurrent clients, a failing
//! leader, hit-for-pass, a leader whose client leaves, and `lock_timeout` on a stuck leader.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Act, Origin, SlowBody, burst, detail};
use crate::proxy::harness::{RawConn, pattern, reply, request_text, start_proxy, start_proxy_in};

const CLIENTS: usize = 200;

#[tokio::test]
async fn cold_url_200_clients_one_upstream_request() {
    let body = pattern(100_000);
    let origin = Origin::start_with({
        let body = body.clone();
        move |_, _| {
            Act::Reply(
                Duration::from_millis(200),
                reply(200, &[("cache-control", "max-age=60")], body.clone()),
            )
        }
    })
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let results = burst(&[proxy], &origin.url("/cold"), CLIENTS).await;
    for (res, _) in &results {
        assert_eq!(res.status, 200, "{:?}", res.cache_status().raw);
        assert!(
            res.body == body,
            "body differs: {:?}",
            res.cache_status().raw
        );
    }
    assert_eq!(
        origin.hits(),
        1,
        "200 concurrent clients on a cold URL -> exactly 1 upstream request"
    );
}

#[tokio::test]
async fn expired_entry_200_clients_one_revalidation() {
    let origin = Origin::start_with(|_, req| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"r1\"")
        {
            Act::Reply(
                Duration::from_millis(200),
                reply(
                    304,
                    &[("cache-control", "max-age=60"), ("etag", "\"r1\"")],
                    "",
                ),
            )
        } else {
            Act::Reply(
                Duration::from_millis(200),
                reply(
                    200,
                    &[("cache-control", "max-age=0"), ("etag", "\"r1\"")],
                    "revalidated body",
                ),
            )
        }
    })
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/expired");
    burst(&[proxy], &url, 1).await;
    assert_eq!(origin.hits(), 1);
    let results = burst(&[proxy], &url, CLIENTS).await;
    for (res, _) in &results {
        assert_eq!(
            (res.status, res.text().as_str()),
            (200, "revalidated body"),
            "{:?}",
            res.cache_status().raw
        );
    }
    assert_eq!(
        (origin.hits(), origin.conditional()),
        (2, 1),
        "200 concurrent clients on an expired entry -> exactly 1 upstream revalidation"
    );
}

/// The leader's fetch fails (503, or the connection is reset): the waiters do not inherit the
/// failure; one of them fetches again, and everyone else gets its response.
#[tokio::test]
async fn leader_upstream_failure_waiters_get_good_response_with_one_more_fetch() {
    for reset in [false, true] {
        let origin = Origin::start_with(move |n, _| {
            let delay = Duration::from_millis(200);
            match n {
                0 if reset => Act::Reset(delay),
                0 => Act::Reply(delay, reply(503, &[], "broken")),
                _ => Act::Reply(
                    delay,
                    reply(200, &[("cache-control", "max-age=60")], "good"),
                ),
            }
        })
        .await;
        let (_h, proxy, _dir) = start_proxy(None).await;
        let results = burst(&[proxy], &origin.url("/flaky"), CLIENTS).await;
        let good = results
            .iter()
            .filter(|(r, _)| (r.status, r.text()) == (200, "good".into()))
            .count();
        let failed: Vec<u16> = results
            .iter()
            .filter(|(r, _)| r.status != 200)
            .map(|(r, _)| r.status)
            .collect();
        let expect_failed = if reset { 502 } else { 503 };
        assert_eq!(
            failed,
            [expect_failed],
            "only the leader sees its failure (reset={reset})"
        );
        assert_eq!(good, CLIENTS - 1, "reset={reset}");
        assert_eq!(
            origin.hits(),
            2,
            "one failed fetch, at most one more (reset={reset})"
        );
    }
}

/// Hit-for-pass: a response nobody may share sends the waiters to the origin themselves, and
/// for a while later requests go straight there instead of queueing behind one another.
#[tokio::test]
async fn uncacheable_response_releases_waiters_and_later_requests_do_not_queue() {
    // The second burst's origin delay: every request of that burst must reach the origin
    // before the first of them is answered. Queued behind a leader, the others would arrive
    // only after its answer. An order of events, not a time limit: a slow machine only makes
    // the window the clients have to arrive in relatively shorter, and 2 s is ample for 20.
    const HELD: Duration = Duration::from_secs(2);
    for cc in ["no-store", "private"] {
        let arrived = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let origin = Origin::start_with({
            let arrived = arrived.clone();
            move |n, _| {
                let delay = if n < 20 {
                    Duration::from_millis(300)
                } else {
                    arrived.lock().unwrap().push(Instant::now());
                    HELD
                };
                Act::Reply(
                    delay,
                    reply(200, &[("cache-control", cc)], format!("own {n}")),
                )
            }
        })
        .await;
        let dir = tempfile::TempDir::new().unwrap();
        let (_h, proxy) = start_proxy_in(dir.path(), None, |cfg| {
            cfg.response_timeout = HELD * 3;
        })
        .await;
        let url = origin.url("/pass");
        let first = burst(&[proxy], &url, 20).await;
        let bodies: HashSet<String> = first.iter().map(|(r, _)| r.text()).collect();
        assert_eq!(bodies.len(), 20, "{cc}: every client gets its own response");
        assert_eq!(origin.hits(), 20, "{cc}");
        let later = burst(&[proxy], &url, 20).await;
        for (res, _) in &later {
            assert_eq!(res.status, 200);
            assert!(
                !res.cache_status().hit,
                "{cc}: {:?}",
                res.cache_status().raw
            );
        }
        assert_eq!(origin.hits(), 40, "{cc}");
        let arrived = arrived.lock().unwrap();
        let (first_in, last_in) = (arrived.iter().min().unwrap(), arrived.iter().max().unwrap());
        assert!(
            *last_in < *first_in + HELD,
            "{cc}: a pass request reached the origin only after another was answered (queued): \
             arrivals spread over {:?}",
            *last_in - *first_in
        );
    }
}

/// The leader's client goes away mid-body; the fill goes on, and the waiters get the stored
/// entry without another origin request.
#[tokio::test]
async fn leader_client_disconnect_mid_body_still_fills_for_waiters() {
    let chunk = Bytes::from(pattern(16 * 1024));
    let chunks = 20;
    let origin = Origin::start_with({
        let chunk = chunk.clone();
        move |_, _| {
            let len = (chunk.len() * chunks).to_string();
            let res = http::Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-length", len)
                .body(SlowBody::boxed(
                    chunk.clone(),
                    chunks,
                    Duration::from_millis(25),
                ))
                .unwrap();
            Act::Reply(Duration::ZERO, res)
        }
    })
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/slow-body");
    let mut leader = RawConn::connect(proxy).await;
    leader
        .send(&request_text("GET", &url, &[], b""))
        .await
        .unwrap();
    assert_eq!(origin.wait_hits(1, Duration::from_secs(5)).await, 1);
    let waiters = tokio::spawn({
        let url = url.clone();
        async move { burst(&[proxy], &url, 20).await }
    });
    let (status, _) = leader.read_head().await.unwrap();
    assert_eq!(status, 200);
    leader.read_exact(1000).await.unwrap();
    drop(leader); // mid-body
    let expected: Vec<u8> = chunk
        .iter()
        .copied()
        .cycle()
        .take(chunk.len() * chunks)
        .collect();
    for (res, _) in waiters.await.unwrap() {
        assert_eq!(res.status, 200);
        assert!(
            res.body == expected,
            "waiter body differs: {:?}",
            res.cache_status().raw
        );
    }
    assert_eq!(
        origin.hits(),
        1,
        "the abandoned client's fill served the waiters"
    );
}

/// A leader stuck on an origin that never answers it holds its waiters for `lock_timeout`
/// at most; then they fetch for themselves.
#[tokio::test]
async fn lock_timeout_bounds_the_wait_on_a_stuck_leader() {
    let origin = Origin::start_with(|n, _| {
        let delay = if n == 0 {
            Duration::from_secs(4)
        } else {
            Duration::ZERO
        };
        Act::Reply(
            delay,
            reply(200, &[("cache-control", "max-age=60")], "fine"),
        )
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let lock_timeout = Duration::from_millis(400);
    let (_h, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.lock_timeout = lock_timeout;
        c.response_timeout = Duration::from_secs(3);
    })
    .await;
    let url = origin.url("/stuck");
    let started = Instant::now();
    let leader = tokio::spawn({
        let url = url.clone();
        async move { burst(&[proxy], &url, 1).await }
    });
    assert_eq!(origin.wait_hits(1, Duration::from_secs(5)).await, 1);
    let waiters = burst(&[proxy], &url, 10).await;
    for (res, took) in &waiters {
        assert_eq!((res.status, res.text().as_str()), (200, "fine"));
        assert_eq!(
            detail(res).as_deref(),
            Some("lock-timeout"),
            "{:?}",
            res.cache_status().raw
        );
        assert!(
            *took >= lock_timeout - Duration::from_millis(50)
                && *took < lock_timeout + Duration::from_millis(800),
            "waited {took:?} for a stuck leader (lock_timeout {lock_timeout:?})"
        );
    }
    let (res, _) = &leader.await.unwrap()[0];
    assert_eq!(res.status, 504, "the stuck leader times out on its own");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(origin.hits(), 11);
}

/// Regression: a revalidation whose result is stale at once (`max-age=0`, or here an upstream
/// `Age` past max-age) woke the waiters, who found the entry stale, competed again one leader
/// at a time, and after four rounds all fetched uncoalesced: 50 clients, 51 origin requests.
/// (Origin delay 600 ms and 50 clients, so that all arrive while the revalidation runs: one
/// arriving after it must revalidate again, the entry being stale on arrival.)
#[tokio::test]
async fn waiters_are_served_a_revalidation_that_is_already_stale() {
    let origin = Origin::start_with(|_, req| {
        let headers = [
            ("cache-control", "max-age=0"),
            ("etag", "\"z1\""),
            ("age", "100"),
        ];
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"z1\"")
        {
            Act::Reply(Duration::from_millis(600), reply(304, &headers, ""))
        } else {
            Act::Reply(
                Duration::from_millis(600),
                reply(200, &headers, "always stale"),
            )
        }
    })
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/always-stale");
    burst(&[proxy], &url, 1).await;
    let results = burst(&[proxy], &url, 50).await;
    let mut collapsed = 0;
    for (res, _) in &results {
        assert_eq!((res.status, res.text().as_str()), (200, "always stale"));
        collapsed += usize::from(detail(res).as_deref() == Some("collapsed"));
    }
    let mut hist = std::collections::BTreeMap::<String, usize>::new();
    for (res, _) in &results {
        *hist.entry(res.cache_status().raw).or_default() += 1;
    }
    assert_eq!(
        (origin.hits(), origin.conditional()),
        (2, 1),
        "one revalidation for 50 clients: {hist:?}"
    );
    assert_eq!(
        collapsed,
        50 - 1,
        "every waiter is answered with the leader's revalidation"
    );
}
