//! Real clients and concurrency: reqwest through `Proxy::http`, hyper HTTP/2 prior-knowledge
//! clients, curl against the `hoard` binary, and bursts of concurrent requests that must be
//! coalesced (one origin fetch per key) or, for `no-store`, must not be.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::harness::*;

/// An HTTP/2 prior-knowledge connection to the proxy, its connection task spawned.
async fn h2_client(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake with the proxy");
    tokio::spawn(conn);
    sender
}

/// Sends `req` on an HTTP/2 connection and waits (bounded) for the response head.
async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    tokio::time::timeout(IO_TIMEOUT, sender.send_request(req))
        .await
        .expect("h2 answer in time")
        .expect("h2 response")
}

#[tokio::test]
async fn reqwest_through_http_proxy_hits_the_cache() {
    let origin =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "via reqwest")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let client = client_via(proxy);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = client
            .get(origin.url("/rq"))
            .send()
            .await
            .expect("reqwest through the proxy");
        assert_eq!(resp.status(), 200);
        statuses.push(CacheStatus::from_headers(resp.headers()));
        assert_eq!(resp.text().await.unwrap(), "via reqwest");
    }
    statuses[0].assert_miss();
    statuses[1].assert_hit();
    statuses[2].assert_hit();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_client_in_gateway_mode() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "over h2")).await;
    let (_proxy, proxy, _dir) = start_proxy(Some(origin.addr)).await;
    let mut sender = h2_client(proxy).await;
    let mut hits = Vec::new();
    for _ in 0..2 {
        let req = Request::get(format!("http://{proxy}/h2"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = h2_send(&mut sender, req).await;
        assert_eq!(
            (resp.status(), resp.version()),
            (http::StatusCode::OK, Version::HTTP_2)
        );
        hits.push(CacheStatus::from_headers(resp.headers()).hit);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "over h2");
    }
    assert_eq!(hits, [false, true]);
    assert_eq!(origin.hits(), 1);
}

/// RFC 9113 8.2.3: an HTTP/2 client's split `Cookie` fields reach an HTTP/1.1 origin as one
/// line joined with "; " (an origin reads one `Cookie` line).
#[tokio::test]
async fn rfc9113_8_2_3_http2_cookie_fields_reach_the_origin_as_one_line() {
    let origin = Origin::start(|req| {
        let lines: Vec<&str> = req
            .headers()
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        reply(200, &[], format!("{lines:?}"))
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(Some(origin.addr)).await;
    let mut sender = h2_client(proxy).await;
    let req = Request::get(format!("http://{proxy}/cookies"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2_send(&mut sender, req).await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"["a=1; b=2"]"#);
}

#[tokio::test]
async fn concurrent_misses_are_coalesced_into_one_origin_request() {
    let origin = Origin::start_delayed(Duration::from_millis(200), |_| {
        reply(200, &[("cache-control", "max-age=60")], "coalesced")
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/cold");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    for task in tasks {
        let resp = task.await.expect("client task");
        assert_eq!((resp.status, resp.text().as_str()), (200, "coalesced"));
    }
    assert_eq!(
        origin.hits(),
        1,
        "50 concurrent GETs of a cold URL -> exactly 1 origin hit"
    );
}

/// Pins a race: a request whose store lookup precedes the leader's commit but whose `join`
/// follows the leader's release becomes a second leader (no re-check after winning the flight).
#[tokio::test]
async fn concurrent_requests_for_many_urls_fetch_each_url_once() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[("cache-control", "max-age=60")],
            req.uri().path().to_owned(),
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for round in 0..5 {
        // Two concurrent GETs for each of 50 cold URLs.
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let path = format!("/r{round}/u{}", i % 50);
                let url = origin.url(&path);
                tokio::spawn(async move { (path, get(proxy, &url).await) })
            })
            .collect();
        let mut forwarded = std::collections::BTreeMap::<String, usize>::new();
        for task in tasks {
            let (path, resp) = task.await.expect("client task");
            assert_eq!((resp.status, resp.text()), (200, path));
            if !resp.cache_status().hit {
                *forwarded.entry(resp.cache_status().raw).or_default() += 1;
            }
        }
        assert_eq!(
            origin.hits(),
            50 * (round + 1),
            "round {round}: one origin request per URL; forwarded answers: {forwarded:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_requests_for_a_no_store_url_are_not_shared() {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start_delayed(Duration::from_millis(100), {
        let counter = counter.clone();
        move |_| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            reply(
                200,
                &[("cache-control", "no-store")],
                format!("private {n}"),
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/nostore");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    for task in tasks {
        let resp = task.await.expect("client task");
        assert_eq!(resp.status, 200);
        bodies.insert(resp.text());
    }
    assert_eq!(
        bodies.len(),
        10,
        "each client gets its own no-store response"
    );
    assert_eq!(origin.hits(), 10);
}

#[tokio::test]
async fn concurrent_misses_of_a_large_body_all_get_identical_bytes() {
    let body = pattern(1 << 20);
    let origin = Origin::start_delayed(Duration::from_millis(100), {
        let body = body.clone();
        move |_| reply(200, &[("cache-control", "max-age=60")], body.clone())
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/large");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    for task in tasks {
        let resp = task.await.expect("client task");
        assert_eq!(resp.status, 200);
        assert!(
            resp.body == body,
            "body differs ({} bytes)",
            resp.body.len()
        );
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_client_in_forward_mode() {
    let origin =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "h2 forward")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut sender = h2_client(proxy).await;
    for expect_hit in [false, true] {
        let req = Request::get(origin.url("/h2f"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = h2_send(&mut sender, req).await;
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(CacheStatus::from_headers(resp.headers()).hit, expect_hit);
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "h2 forward"
        );
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn concurrent_h2_streams_for_a_cold_url_are_coalesced() {
    let origin = Origin::start_delayed(Duration::from_millis(200), |_| {
        reply(200, &[("cache-control", "max-age=60")], "one fetch")
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(Some(origin.addr)).await;
    let sender = h2_client(proxy).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://{proxy}/streams"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = h2_send(&mut sender, req).await;
                assert_eq!(resp.status(), http::StatusCode::OK);
                resp.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "one fetch");
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn concurrent_misses_across_two_proxies_on_one_dir_are_coalesced() {
    let origin = Origin::start_delayed(Duration::from_millis(300), |_| {
        reply(200, &[("cache-control", "max-age=60")], "leased")
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_a, proxy_a) = start_proxy_in(dir.path(), None, |_| {}).await;
    let (_b, proxy_b) = start_proxy_in(dir.path(), None, |_| {}).await;
    let url = origin.url("/lease");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            let proxy = if i % 2 == 0 { proxy_a } else { proxy_b };
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "leased"));
    }
    assert_eq!(
        origin.hits(),
        1,
        "the store lease coalesces across proxies sharing a directory"
    );
}

/// The `hoard` binary serving on a random port; killed on drop.
struct Binary {
    child: tokio::process::Child,
    addr: SocketAddr,
}

/// Starts `hoard [serve] --listen 127.0.0.1:0 --cache-dir DIR [extra...]`.
async fn spawn_binary(
    subcommand: Option<&str>,
    cache_dir: &std::path::Path,
    extra: &[&str],
) -> Binary {
    let mut args: Vec<std::ffi::OsString> = subcommand.into_iter().map(Into::into).collect();
    args.extend(["--listen", "127.0.0.1:0", "--cache-dir"].map(Into::into));
    args.push(cache_dir.into());
    args.extend(extra.iter().map(Into::into));
    let (child, addr) = spawn_hoard(args).await;
    Binary { child, addr }
}

/// Runs curl and returns (status, headers, body) parsed from `curl -i` output.
async fn curl(args: &[&str], proxy_env: Option<SocketAddr>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10"]).args(args);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    if let Some(proxy) = proxy_env {
        cmd.env("http_proxy", format!("http://{proxy}"));
        cmd.env("HTTP_PROXY", format!("http://{proxy}"));
    }
    let out = cmd.output().await.expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("curl -i output has a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn cache_status_of(head: &str) -> CacheStatus {
    let values: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("cache-status:"))
        .map(str::trim)
        .collect();
    CacheStatus::parse(&values.join(", "))
}

#[tokio::test]
async fn binary_serves_curl_via_x_and_http_proxy_env() {
    let origin =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "from curl")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut hoard = spawn_binary(Some("serve"), dir.path(), &[]).await;
    let url = origin.url("/curl");

    let (status, head, body) = curl(&["-x", &format!("http://{}", hoard.addr), &url], None).await;
    assert_eq!((status, body.as_str()), (200, "from curl"));
    cache_status_of(&head).assert_miss();

    let (status, head, body) = curl(&[&url], Some(hoard.addr)).await;
    assert_eq!((status, body.as_str()), (200, "from curl"));
    cache_status_of(&head).assert_hit();
    assert_eq!(origin.hits(), 1);

    hoard.child.kill().await.expect("stop hoard");
}

#[tokio::test]
async fn binary_without_subcommand_serves() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "bare")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut hoard = spawn_binary(None, dir.path(), &[]).await;
    let (status, _, body) = curl(
        &[
            "-x",
            &format!("http://{}", hoard.addr),
            &origin.url("/bare"),
        ],
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "bare"));
    hoard.child.kill().await.expect("stop hoard");
}

#[tokio::test]
async fn binary_gateway_mode_serves_curl_without_a_proxy() {
    let origin =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "gateway bin")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let upstream = format!("http://{}", origin.addr);
    let mut hoard = spawn_binary(Some("serve"), dir.path(), &["--upstream", &upstream]).await;
    let url = format!("http://{}/gw", hoard.addr);
    let (status, head, body) = curl(&[&url], None).await;
    assert_eq!((status, body.as_str()), (200, "gateway bin"));
    cache_status_of(&head).assert_miss();
    let (_, head, _) = curl(&[&url], None).await;
    cache_status_of(&head).assert_hit();
    assert_eq!(origin.count("GET", "/gw"), 1);
    hoard.child.kill().await.expect("stop hoard");
}
