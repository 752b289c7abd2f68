//! Proxy lifecycle: graceful shutdown, restart on the same cache directory, and two proxies
//! sharing one cache directory.

use std::time::Duration;

use super::harness::*;

#[tokio::test]
async fn entries_survive_a_restart_on_the_same_cache_dir() {
    let origin = Origin::start(max_age_60("persistent")).await;
    let dir = tempfile::TempDir::new().unwrap();

    let (first_proxy, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    get(proxy, &origin.url("/persist"))
        .await
        .cache_status()
        .assert_miss();
    first_proxy.shutdown().await;

    let (_second_proxy, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    let resp = get(proxy, &origin.url("/persist")).await;
    resp.cache_status().assert_hit();
    assert_eq!(resp.text(), "persistent");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn large_entry_survives_an_immediate_restart() {
    let body = pattern(8 << 20); // a value file large enough that committing it takes a while
    let origin = Origin::start({
        let body = body.clone();
        move |_| reply(200, &[("cache-control", "max-age=60")], body.clone())
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();

    let (first_proxy, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    let miss = get(proxy, &origin.url("/large")).await;
    miss.cache_status().assert_stored();
    first_proxy.shutdown().await; // graceful: a fill the client already received must be kept

    let (_second_proxy, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    let resp = get(proxy, &origin.url("/large")).await;
    resp.cache_status().assert_hit();
    assert!(
        resp.body == body,
        "body differs ({} bytes)",
        resp.body.len()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn two_proxies_share_one_cache_dir() {
    let origin = Origin::start(max_age_60("shared")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_a, proxy_a) = start_proxy_in(dir.path(), None, |_| {}).await;
    let (_b, proxy_b) = start_proxy_in(dir.path(), None, |_| {}).await;
    get(proxy_a, &origin.url("/s"))
        .await
        .cache_status()
        .assert_miss();
    let resp = get(proxy_b, &origin.url("/s")).await;
    resp.cache_status().assert_hit();
    assert_eq!(resp.text(), "shared");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let origin = Origin::start_delayed(Duration::from_millis(300), max_age_60("finished")).await;
    let (handle, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/slow");
    let in_flight = tokio::spawn(async move { get(proxy, &url).await });
    // Wait (bounded) until the request reached the origin, then shut down while it is delayed.
    for _ in 0..200 {
        if origin.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(origin.hits(), 1, "request never reached the origin");
    handle.shutdown().await;
    let resp = in_flight.await.unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "finished"));
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_is_prompt_with_an_idle_keep_alive_connection() {
    let origin = Origin::start(max_age_60("idle")).await;
    let (handle, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    conn.request("GET", &origin.url("/idle"), &[])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("shutdown finished within 5 s");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "an idle keep-alive connection delayed shutdown by {elapsed:?}"
    );
    drop(conn);
}
