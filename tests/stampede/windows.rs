//! stale-while-revalidate and stale-if-error (RFC 5861), inside and outside their windows.
//! "Outside" is reached without sleeping: the origin's `Age: 100` makes the stored entry
//! 100 s old, past a 60 s window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Act, Origin, burst, detail};
use crate::proxy::harness::{fill, reply, start_proxy, start_proxy_in};

const DELAY: Duration = Duration::from_millis(400);
/// The origin's delay for a revalidation (its 304): a stale answer that waited for the
/// refresh would take at least this long (under the test proxy's 2 s response timeout).
const REFRESH_DELAY: Duration = Duration::from_millis(1500);
/// "Served at once": a correctness bound, not a speed target (half of [`REFRESH_DELAY`], so
/// it holds on a loaded machine and still fails an answer that waited for the refresh).
const AT_ONCE: Duration = Duration::from_millis(750);

/// Origin: 200 with `cc` (and `Age: age` if given) until told to fail, then 500s; answers
/// `If-None-Match: "w1"` with 304 and `max-age=600`.
async fn origin(cc: &'static str, age: Option<&'static str>, failing: Arc<AtomicBool>) -> Origin {
    Origin::start_with(move |_, req| {
        let mut headers = vec![("cache-control", cc), ("etag", "\"w1\"")];
        headers.extend(age.map(|a| ("age", a)));
        if failing.load(Ordering::SeqCst) {
            Act::Reply(DELAY, reply(500, &[], "origin broken"))
        } else if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"w1\"")
        {
            // A successful revalidation makes the entry fresh (longer than the 100 s `Age`).
            Act::Reply(
                REFRESH_DELAY,
                reply(
                    304,
                    &[("cache-control", "max-age=600"), ("etag", "\"w1\"")],
                    "",
                ),
            )
        } else {
            Act::Reply(DELAY, reply(200, &headers, "last good"))
        }
    })
    .await
}

#[tokio::test]
async fn stale_while_revalidate_inside_window_serves_stale_at_once_and_refreshes_once() {
    let origin = origin(
        "max-age=0, stale-while-revalidate=60",
        None,
        Default::default(),
    )
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/swr-in");
    fill(proxy, &url).await; // stored before the next request, whatever the machine's load
    for (res, took) in burst(&[proxy], &url, 50).await {
        assert_eq!((res.status, res.text().as_str()), (200, "last good"));
        assert_eq!(
            detail(&res).as_deref(),
            Some("stale-while-revalidate"),
            "{:?}",
            res.cache_status().raw
        );
        assert!(took < AT_ONCE, "a stale answer waited {took:?}");
    }
    assert_eq!(origin.wait_hits(2, Duration::from_secs(2)).await, 2);
    tokio::time::sleep(REFRESH_DELAY + Duration::from_millis(200)).await;
    assert_eq!(
        (origin.hits(), origin.conditional()),
        (2, 1),
        "exactly one background revalidation"
    );
}

#[tokio::test]
async fn stale_while_revalidate_outside_window_revalidates_in_line() {
    let origin = origin(
        "max-age=0, stale-while-revalidate=60",
        Some("100"),
        Default::default(),
    )
    .await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/swr-out");
    fill(proxy, &url).await; // stored before the next request, whatever the machine's load
    let results = burst(&[proxy], &url, 50).await;
    for (res, took) in &results {
        assert_eq!((res.status, res.text().as_str()), (200, "last good"));
        assert_ne!(detail(res).as_deref(), Some("stale-while-revalidate"));
        assert!(
            *took >= DELAY,
            "outside the window the client waits for the origin: {took:?}"
        );
    }
    assert_eq!(
        (origin.hits(), origin.conditional()),
        (2, 1),
        "one coalesced revalidation"
    );
}

/// Inside the window, a failing origin is hidden from every concurrent client, and the
/// waiters do not each retry the failing origin.
#[tokio::test]
async fn stale_if_error_inside_window_serves_stale_to_all_clients() {
    let failing = Arc::new(AtomicBool::new(false));
    let origin = origin("max-age=0, stale-if-error=60", None, failing.clone()).await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/sie-in");
    fill(proxy, &url).await; // stored before the next request, whatever the machine's load
    failing.store(true, Ordering::SeqCst);
    for (res, _) in burst(&[proxy], &url, 50).await {
        assert_eq!(
            (res.status, res.text().as_str()),
            (200, "last good"),
            "{:?}",
            res.cache_status().raw
        );
        assert_eq!(detail(&res).as_deref(), Some("stale-if-error"));
    }
    assert_eq!(
        origin.hits(),
        2,
        "one failed revalidation for 50 concurrent clients"
    );
}

#[tokio::test]
async fn stale_if_error_outside_window_passes_the_error() {
    let failing = Arc::new(AtomicBool::new(false));
    let origin = origin("max-age=0, stale-if-error=60", Some("100"), failing.clone()).await;
    let (_h, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/sie-out");
    fill(proxy, &url).await; // stored before the next request, whatever the machine's load
    failing.store(true, Ordering::SeqCst);
    let (res, _) = burst(&[proxy], &url, 1).await.pop().unwrap();
    assert_eq!((res.status, res.text().as_str()), (500, "origin broken"));
}

/// `--stale-if-error` (ProxyConfig::stale_if_error) applies when the origin names no window.
#[tokio::test]
async fn default_stale_if_error_window_inside_and_outside() {
    for (age, inside) in [(None, true), (Some("100"), false)] {
        let failing = Arc::new(AtomicBool::new(false));
        let origin = origin("max-age=0", age, failing.clone()).await;
        let dir = tempfile::TempDir::new().unwrap();
        let (_h, proxy) = start_proxy_in(dir.path(), None, |c| {
            c.stale_if_error = Some(Duration::from_secs(60))
        })
        .await;
        let url = origin.url("/sie-default");
        fill(proxy, &url).await; // stored before the next request, whatever the machine's load
        failing.store(true, Ordering::SeqCst);
        let (res, _) = burst(&[proxy], &url, 1).await.pop().unwrap();
        if inside {
            assert_eq!((res.status, res.text().as_str()), (200, "last good"));
            assert_eq!(detail(&res).as_deref(), Some("stale-if-error"));
        } else {
            assert_eq!((res.status, res.text().as_str()), (500, "origin broken"));
        }
    }
}

/// `--stale-while-revalidate` (ProxyConfig::stale_while_revalidate) applies when the origin
/// names no window, never to `must-revalidate` responses, and not past the window.
#[tokio::test]
async fn default_stale_while_revalidate_window() {
    for (cc, age, expect_stale) in [
        ("max-age=0", None, true),
        ("max-age=0", Some("100"), false),
        ("max-age=0, must-revalidate", None, false),
    ] {
        let origin = origin(cc, age, Default::default()).await;
        let dir = tempfile::TempDir::new().unwrap();
        let (_h, proxy) = start_proxy_in(dir.path(), None, |c| {
            c.stale_while_revalidate = Some(Duration::from_secs(60))
        })
        .await;
        let url = origin.url("/swr-default");
        if cc.contains("must-revalidate") {
            // Never served stale, not even to `only-if-cached`: nothing to wait for.
            burst(&[proxy], &url, 1).await;
        } else {
            fill(proxy, &url).await; // stored before the next request, whatever the load
        }
        let (res, took) = burst(&[proxy], &url, 1).await.pop().unwrap();
        assert_eq!((res.status, res.text().as_str()), (200, "last good"));
        if expect_stale {
            assert_eq!(
                detail(&res).as_deref(),
                Some("stale-while-revalidate"),
                "{cc}"
            );
            assert!(took < AT_ONCE, "{cc}: served stale at once, took {took:?}");
        } else {
            assert_ne!(
                detail(&res).as_deref(),
                Some("stale-while-revalidate"),
                "{cc} {age:?}"
            );
            assert!(took >= DELAY, "{cc} {age:?}: waited for the origin");
        }
    }
}
