//! Request routing: forward mode (absolute-form), gateway mode (origin-form), keep-alive,
//! pipelining, HTTP/1.0, CONNECT tunnels, the cache key, `Via` and `Cache-Status` chaining, and
//! hop-by-hop header removal in both directions.

use std::time::Duration;

use super::harness::*;

#[tokio::test]
async fn absolute_form_get_misses_then_hits() {
    let origin = Origin::start(max_age_60("hello")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;

    let first = get(proxy, &origin.url("/a")).await;
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    first.cache_status().assert_miss();
    first.cache_status().assert_stored();

    let second = get(proxy, &origin.url("/a")).await;
    assert_eq!((second.status, &second.body), (200, &first.body));
    second.cache_status().assert_hit();
    let age = second.header("age").expect("a hit carries Age");
    age.parse::<u64>().expect("Age is a number of seconds");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn responses_carry_via_hoard() {
    let origin = Origin::start(max_age_60("v")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for expect_hit in [false, true] {
        let resp = get(proxy, &origin.url("/via")).await;
        assert_eq!(
            resp.cache_status().hit,
            expect_hit,
            "{:?}",
            resp.cache_status()
        );
        let via = resp.header_all("via").join(", ");
        assert_eq!(
            via.matches("hoard").count(),
            1,
            "exactly one hoard in Via: {via:?}"
        );
        let cache_status = resp.header_all("cache-status").join(", ");
        assert_eq!(
            cache_status.matches("hoard").count(),
            1,
            "one Cache-Status member: {cache_status:?}"
        );
    }
}

#[tokio::test]
async fn forwarded_requests_carry_via_hoard() {
    let origin = Origin::start(max_age_60("v")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/via-req")).await;
    let seen = origin.last("/via-req");
    let via: Vec<_> = seen
        .headers
        .get_all("via")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        via.join(", ").contains("hoard"),
        "Via sent to origin: {via:?}"
    );
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let origin = Origin::start(max_age_60("k")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    let mut hits = Vec::new();
    for path in ["/k1", "/k1", "/k2", "/k2", "/k1"] {
        let resp = conn
            .request("GET", &origin.url(path), &[])
            .await
            .expect("response on the same connection");
        assert_eq!((resp.status, resp.text().as_str()), (200, "k"));
        hits.push(resp.cache_status().hit);
    }
    assert_eq!(hits, [false, true, false, true, true]);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn gateway_mode_serves_origin_form_requests() {
    let origin = Origin::start(max_age_60("gateway")).await;
    let (_proxy, proxy, _dir) = start_proxy(Some(origin.addr)).await;

    let first = get(proxy, "/g?x=1").await;
    assert_eq!((first.status, first.text().as_str()), (200, "gateway"));
    first.cache_status().assert_miss();
    let second = get(proxy, "/g?x=1").await;
    assert_eq!(second.text(), "gateway");
    second.cache_status().assert_hit();
    assert_eq!(origin.count("GET", "/g?x=1"), 1);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn query_strings_are_part_of_the_cache_key() {
    let origin = Origin::start(|req| {
        let q = req.uri().query().unwrap_or_default().to_owned();
        reply(200, &[("cache-control", "max-age=60")], q)
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_eq!(get(proxy, &origin.url("/q?a=1")).await.text(), "a=1");
    assert_eq!(get(proxy, &origin.url("/q?a=2")).await.text(), "a=2");
    assert_eq!(get(proxy, &origin.url("/q?a=1")).await.text(), "a=1");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn connect_opens_a_blind_tunnel() {
    let (echo, _echo_task) = echo_server().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.allowed_connect_ports = vec![echo.port()];
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    conn.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _) = conn.read_head().await.expect("CONNECT answer");
    assert_eq!(status, 200);
    for message in [
        &b"ping through the tunnel"[..],
        &[0u8, 255, 13, 10, 13, 10, 7][..],
    ] {
        conn.send(message).await.unwrap();
        assert_eq!(conn.read_exact(message.len()).await.expect("echo"), message);
    }
}

#[tokio::test]
async fn an_idle_connect_tunnel_is_closed_and_a_busy_one_is_not() {
    let (echo, _echo_task) = echo_server().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let idle = Duration::from_millis(400);
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.allowed_connect_ports = vec![echo.port()];
        c.tunnel_idle_timeout = idle;
    })
    .await;
    let open = || async {
        let mut conn = RawConn::connect(proxy).await;
        conn.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(conn.read_head().await.expect("CONNECT answer").0, 200);
        conn
    };
    // Busy: a message every 100 ms for three times the idle timeout, all echoed.
    let mut busy = open().await;
    let started = std::time::Instant::now();
    while started.elapsed() < idle * 3 {
        busy.send(b"tick").await.unwrap();
        assert_eq!(busy.read_exact(4).await.expect("still open"), b"tick");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle: after one exchange nothing moves, and the proxy closes the tunnel.
    let mut quiet = open().await;
    quiet.send(b"once").await.unwrap();
    assert_eq!(quiet.read_exact(4).await.unwrap(), b"once");
    let silent_from = std::time::Instant::now();
    // (read_to_end is bounded by IO_TIMEOUT: an open tunnel fails here.)
    let rest = quiet
        .read_to_end()
        .await
        .expect("the idle tunnel is closed by the proxy");
    assert!(rest.is_empty());
    assert!(silent_from.elapsed() >= idle - Duration::from_millis(50));
}

#[tokio::test]
async fn connect_tunnel_carries_a_mebibyte_both_ways_and_half_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (echo, _echo_task) = echo_server().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    conn.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(conn.read_head().await.expect("CONNECT answer").0, 200);
    let (mut read, mut write) = tokio::io::split(conn.into_io());
    let payload = pattern(1 << 20);
    let writer = tokio::spawn({
        let payload = payload.clone();
        async move {
            write.write_all(&payload).await.unwrap();
            write.shutdown().await.unwrap(); // half-close: the echo server sees EOF and closes
        }
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, read.read_to_end(&mut echoed))
        .await
        .expect("tunnel closed after the echo")
        .unwrap();
    writer.await.unwrap();
    assert!(echoed == payload, "echoed {} bytes", echoed.len());
}

#[tokio::test]
async fn http_inside_a_connect_tunnel_is_not_cached() {
    let origin = Origin::start(max_age_60("tunnelled")).await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.allowed_connect_ports = vec![origin.addr.port()];
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    let authority = origin.addr.to_string();
    conn.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(conn.read_head().await.expect("CONNECT answer").0, 200);
    for _ in 0..2 {
        let resp = conn
            .request("GET", "/t", &[("Host", authority.as_str())])
            .await
            .expect("tunnelled GET");
        assert_eq!(resp.text(), "tunnelled");
        assert!(
            !resp.cache_status().present(),
            "a blind tunnel adds nothing: {:?}",
            resp.headers
        );
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_passed_to_the_client() {
    let origin = RawOrigin::start(false, |_| {
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\
          Connection: x-foo\r\nX-Foo: secret\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: websocket\r\nTrailer: X-Checksum\r\n\
          X-End-To-End: kept\r\n\r\nhello"
            .to_vec()
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for expect_hit in [false, true] {
        let resp = get(proxy, &origin.url("/hop")).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
        assert_eq!(
            resp.cache_status().hit,
            expect_hit,
            "{:?}",
            resp.cache_status()
        );
        for name in [
            "x-foo",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "trailer",
        ] {
            assert_eq!(
                resp.header(name),
                None,
                "{name} leaked to the client (hit={expect_hit})"
            );
        }
        let connection = resp.header_all("connection").join(",").to_ascii_lowercase();
        assert!(!connection.contains("x-foo"), "Connection: {connection:?}");
        assert_eq!(resp.header("x-end-to-end"), Some("kept"));
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_passed_to_the_origin() {
    let origin = Origin::start(max_age_60("ok")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/hop-req"),
        &[
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("Connection", "x-bar"),
            ("X-Bar", "1"),
            ("Keep-Alive", "timeout=300"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = origin.last("/hop-req");
    for name in [
        "proxy-authorization",
        "x-bar",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the origin: {:?}",
            seen.headers
        );
    }
    let connection: Vec<_> = seen.headers.get_all("connection").iter().collect();
    assert!(
        !format!("{connection:?}")
            .to_ascii_lowercase()
            .contains("x-bar"),
        "Connection at origin: {connection:?}"
    );
    assert_eq!(
        seen.headers.get("x-end-to-end").map(|v| v.as_bytes()),
        Some(&b"kept"[..])
    );
}

#[tokio::test]
async fn http_1_0_client_is_served() {
    let origin = Origin::start(max_age_60("old client")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for expect_hit in [false, true] {
        let mut conn = RawConn::connect(proxy).await;
        let host = origin.addr.to_string();
        let text = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\n\r\n",
            origin.url("/ten")
        );
        conn.send(text.as_bytes()).await.unwrap();
        let resp = conn.read_response("GET").await.expect("HTTP/1.0 response");
        assert_eq!((resp.status, resp.text().as_str()), (200, "old client"));
        assert_eq!(
            resp.cache_status().hit,
            expect_hit,
            "{:?}",
            resp.cache_status()
        );
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[("cache-control", "max-age=60")],
            req.uri().path().to_owned(),
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    let paths = ["/p1", "/p2", "/p1", "/p3"];
    let mut batch = Vec::new();
    for path in paths {
        batch.extend(request_text("GET", &origin.url(path), &[], b""));
    }
    conn.send(&batch).await.unwrap();
    for path in paths {
        let resp = conn.read_response("GET").await.expect("pipelined response");
        assert_eq!((resp.status, resp.text().as_str()), (200, path));
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn absolute_form_target_wins_over_the_host_header() {
    let origin = Origin::start(max_age_60("by uri")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/host"),
        &[("Host", "elsewhere.invalid")],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "by uri"));
    let seen = origin.last("/host");
    assert_eq!(
        seen.headers.get("host").map(|v| v.as_bytes()),
        Some(origin.addr.to_string().as_bytes()),
        "Host sent upstream matches the absolute-form target"
    );
    get(proxy, &origin.url("/host"))
        .await
        .cache_status()
        .assert_hit();
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let origin = Origin::start(max_age_60("bye")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    let resp = conn
        .request("GET", &origin.url("/close"), &[("Connection", "close")])
        .await
        .unwrap();
    assert_eq!(resp.text(), "bye");
    let rest = conn
        .read_to_end()
        .await
        .expect("the proxy closes the connection");
    assert!(rest.is_empty(), "bytes after the response: {rest:?}");
}

#[tokio::test]
async fn upstream_cache_status_and_via_are_kept_with_hoard_last() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cache-status", "edge; fwd=miss"),
                ("via", "1.1 edge"),
            ],
            "chained",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..2 {
        let resp = get(proxy, &origin.url("/chain")).await;
        let cache_status = resp.header_all("cache-status").join(", ");
        assert!(
            cache_status.starts_with("edge; fwd=miss")
                && cache_status.matches("hoard").count() == 1,
            "RFC 9211: keep the upstream member, append ours: {cache_status:?}"
        );
        let via = resp.header_all("via").join(", ");
        assert!(
            via.starts_with("1.1 edge") && via.matches("hoard").count() == 1,
            "Via: {via:?}"
        );
    }
}

#[tokio::test]
async fn cache_key_normalises_unreserved_percent_encoding_only() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[("cache-control", "max-age=60")],
            req.uri().path().to_owned(),
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_eq!(fill(proxy, &origin.url("/abc")).await.text(), "/abc");
    let encoded = get(proxy, &origin.url("/a%62c")).await;
    encoded.cache_status().assert_hit(); // %62 is `b`, an unreserved character (RFC 3986 6.2.2.2)
    assert_eq!(encoded.text(), "/abc");

    fill(proxy, &origin.url("/a/b")).await;
    let slash = get(proxy, &origin.url("/a%2Fb")).await;
    slash.cache_status().assert_not_hit(); // %2F is reserved: a different resource
    assert_eq!(slash.text(), "/a%2Fb");
}

#[tokio::test]
async fn gateway_upstream_with_a_path_prefix_joins_the_request_path() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[("cache-control", "max-age=60")],
            req.uri().to_string(),
        )
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let base = format!("http://{}/base/", origin.addr);
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |cfg| {
        cfg.upstream = Some(base.parse().unwrap())
    })
    .await;
    let resp = get(proxy, "/x?y=1").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "/base/x?y=1"));
    // Dot-segments would climb out of /base/ at an origin that resolves them; `*` would join
    // as `http://host:port*` (port 80): both are 400, and nothing reaches the origin.
    let hits = origin.hits();
    for (method, target) in [
        ("GET", "/../admin"),
        ("GET", "/%2e%2e/admin"),
        ("GET", "/x/../../admin"),
        ("GET", "/./x"),
        ("GET", "*"),
        ("OPTIONS", "*"),
    ] {
        let resp = send(proxy, method, target, &[]).await;
        assert_eq!(resp.status, 400, "{method} {target}: {}", resp.text());
    }
    assert_eq!(origin.hits(), hits);
    // Dots inside names and in the query are fine.
    let resp = get(proxy, "/a..b/c?d=/../").await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "/base/a..b/c?d=/../")
    );
}

/// `*` (asterisk-form) in gateway mode without a base path: 400, never `http://host:port*`.
#[tokio::test]
async fn gateway_asterisk_target_is_400() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "root")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_proxy, proxy) = start_proxy_in(dir.path(), Some(origin.addr), |_| {}).await;
    for method in ["GET", "OPTIONS"] {
        assert_eq!(
            send(proxy, method, "*", &[]).await.status,
            400,
            "{method} *"
        );
    }
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn informational_103_before_the_response_is_handled() {
    let origin = RawOrigin::start(true, |_| {
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal"
            .to_vec()
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..2 {
        let resp = get(proxy, &origin.url("/103")).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "final"));
    }
    assert_eq!(origin.hits(), 1);
}

/// RFC 9110 7.6.2: TRACE and OPTIONS with `Max-Forwards: 0` are answered by hoard as the final
/// recipient (never forwarded; the TRACE echo carries no secret field); a larger value is
/// decremented on the way to the origin.
#[tokio::test]
async fn rfc9110_7_6_2_max_forwards_is_decremented_and_zero_is_answered_here() {
    let origin = Origin::start(|req| {
        let mf = header(req, "max-forwards").unwrap_or("none").to_string();
        reply(200, &[], format!("{} max-forwards={mf}", req.method()))
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/mf");
    for method in ["TRACE", "OPTIONS"] {
        let fwd = send(proxy, method, &url, &[("max-forwards", "3")]).await;
        assert_eq!(fwd.text(), format!("{method} max-forwards=2"));
        let plain = send(proxy, method, &url, &[]).await;
        assert_eq!(plain.text(), format!("{method} max-forwards=none"));
    }
    assert_eq!(origin.hits(), 4);

    let options = send(proxy, "OPTIONS", &url, &[("max-forwards", "0")]).await;
    assert_eq!((options.status, options.text().as_str()), (200, ""));
    let trace = send(
        proxy,
        "TRACE",
        &url,
        &[
            ("max-forwards", "0"),
            ("x-probe", "seen"),
            ("cookie", "session=alice"),
            ("authorization", "Bearer alice"),
        ],
    )
    .await;
    assert_eq!(trace.status, 200);
    assert_eq!(trace.header("content-type"), Some("message/http"));
    let echo = trace.text();
    assert!(
        echo.starts_with(&format!("TRACE {url} HTTP/1.1\r\n")),
        "{echo}"
    );
    assert!(echo.contains("x-probe: seen\r\n"), "{echo}");
    assert!(!echo.contains("alice"), "a secret field was echoed: {echo}");
    assert_eq!(
        origin.hits(),
        4,
        "a Max-Forwards: 0 request reached the origin"
    );
}

/// Regression (session 11 finding 9): `+PORT` and `0PORT` were read as PORT (CONNECT
/// `host:+443` passed `allowed-connect-ports`, `:036589` matched a `--resolve` entry for
/// 36589). RFC 3986 3.2.3: a port is digits; hoard also refuses leading zeros. 400 for a
/// CONNECT and for an absolute-form URL alone; nothing reaches the origin or the echo server.
#[tokio::test]
async fn hostile_port_with_a_sign_or_leading_zero_is_400() {
    let origin = Origin::start(max_age_60("hello")).await;
    let (echo, _echo_task) = echo_server().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.allowed_connect_ports = vec![echo.port()];
        c.resolve = vec![("good.test".into(), echo.port(), echo.ip())];
    })
    .await;
    let (ip, port) = (echo.ip(), echo.port());
    for authority in [
        format!("{ip}:+{port}"),
        format!("{ip}:0{port}"),
        format!("good.test:0{port}"),
        format!("good.test:+{port}"),
    ] {
        let resp = send(proxy, "CONNECT", &authority, &[]).await;
        assert_eq!(resp.status, 400, "CONNECT {authority}: {}", resp.text());
        let cs = resp.cache_status().raw;
        assert!(cs.contains("detail=bad-connect-host"), "{authority}: {cs}");
    }
    // The plain spellings still open the tunnel.
    for authority in [format!("{ip}:{port}"), format!("good.test:{port}")] {
        let mut conn = RawConn::connect(proxy).await;
        conn.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            conn.read_head().await.expect("CONNECT answer").0,
            200,
            "{authority}"
        );
    }
    let (oip, oport) = (origin.addr.ip(), origin.addr.port());
    for url in [
        format!("http://{oip}:+{oport}/a"),
        format!("http://{oip}:0{oport}/a"),
    ] {
        let resp = get(proxy, &url).await;
        assert_eq!(resp.status, 400, "GET {url}: {}", resp.text());
    }
    assert_eq!(origin.hits(), 0);
    let ok = get(proxy, &origin.url("/a")).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "hello"));
    assert_eq!(origin.hits(), 1);
}

/// An origin that sends interim responses without end: after `MAX_INTERIM` (16) hoard gives
/// up with a 502 at once, instead of parsing them on the connection's thread until
/// `response-timeout` (a 504 after it, with that thread's other clients stalled meanwhile).
#[tokio::test]
async fn an_origin_sending_endless_interim_responses_is_a_502_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flood = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".repeat(64);
        // Bounded: at most 20 s, or until hoard closes the connection.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if s.write_all(&hints).await.is_err() {
                return true;
            }
        }
        false
    });
    let dir = tempfile::TempDir::new().unwrap();
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.response_timeout = std::time::Duration::from_secs(15);
    })
    .await;
    let resp = get(proxy, &format!("http://{addr}/hints")).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(flood.await.unwrap(), "hoard kept reading the flood");
}
