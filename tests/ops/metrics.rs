//! `/metrics`, `/healthz` of the admin server, and the `PURGE` method.

use super::{Origin, get, proxy, request};

/// Parse Prometheus/OpenMetrics text: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()),
                "bad name in {l}"
            );
            (name.to_string(), v)
        })
        .collect()
}

fn sample(s: &[(String, f64)], name: &str) -> Option<f64> {
    s.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_cache_status() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let admin = p.admin_addr().unwrap();
    let url = origin.url("/m");
    for _ in 0..3 {
        assert_eq!(get(p.local_addr(), &url, &[]).await.0, 200);
    }
    get(p.local_addr(), &origin.url("/nostore"), &[]).await;
    let (code, _, body) = request(admin, "GET", "/healthz", &[]).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, head, body) = request(admin, "GET", "/metrics", &[]).await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text")
    );
    let s = samples(&body);
    let cases = [
        ("hoard_requests_total{cache_status=\"uri-miss\"}", Some(2.0)),
        ("hoard_requests_total{cache_status=\"hit\"}", Some(2.0)),
        ("hoard_upstream_requests_total", Some(origin.hits() as f64)),
        ("hoard_response_bytes_total{source=\"cache\"}", Some(4.0)),
        ("hoard_request_duration_seconds_count", Some(4.0)),
        ("hoard_store_entries", Some(1.0)),
    ];
    for (name, want) in cases {
        assert_eq!(sample(&s, name), want, "{name} in\n{body}");
    }
    assert_eq!(origin.hits(), 2);
    assert!(sample(&s, "hoard_store_bytes").unwrap() > 0.0);
    // The store's connections are open: SQLite holds their schema and pages.
    assert!(sample(&s, "hoard_sqlite_heap_bytes").unwrap() > 0.0);
    // The serving store's page cache per connection is bounded (persisted with the settings).
    let settings = hoard::store::Cache::open(dir.path()).unwrap().settings();
    assert_eq!(settings.sqlite_cache_size, -2048);
    let (code, _, _) = request(admin, "GET", "/nope", &[]).await;
    assert_eq!(code, 404);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", dead.local_addr().unwrap());
    drop(dead);
    assert_eq!(get(p.local_addr(), &url, &[]).await.0, 502);
    let (_, _, body) = request(p.admin_addr().unwrap(), "GET", "/metrics", &[]).await;
    let s = samples(&body);
    assert_eq!(
        sample(&s, "hoard_upstream_errors_total{kind=\"connect-error\"}"),
        Some(1.0),
        "{body}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_method_removes_a_url() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), |_| {}).await;
    let url = origin.url("/p");
    get(p.local_addr(), &url, &[]).await;
    assert_eq!(
        get(p.local_addr(), &url, &[])
            .await
            .1
            .split(';')
            .nth(1)
            .unwrap()
            .trim(),
        "hit"
    );
    let cases = [(200, "purged 1 entries\n"), (404, "not cached\n")];
    for (want, body) in cases {
        let (code, _, b) = request(p.local_addr(), "PURGE", &url, &[]).await;
        assert_eq!((code, b.as_str()), (want, body));
    }
    let (_, cs, _) = get(p.local_addr(), &url, &[]).await;
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert_eq!(origin.hits(), 2);
    p.shutdown().await;

    // Clients outside purge-allow are refused and nothing is removed.
    let p = proxy(dir.path(), |c| c.purge_allow = vec![]).await;
    let (code, _, _) = request(p.local_addr(), "PURGE", &url, &[]).await;
    assert_eq!(code, 403);
    assert!(get(p.local_addr(), &url, &[]).await.1.contains("hit"));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_from_the_binary() {
    use std::io::BufRead;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = super::hoard(home.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--cache-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait = std::time::Duration::from_secs(10);
    let addr: std::net::SocketAddr = loop {
        let line = rx.recv_timeout(wait).expect("listening line");
        if let Some(rest) = line.strip_prefix("hoard: listening on ") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    let url = origin.url("/logged");
    get(addr, &url, &[]).await;
    let access: serde_json::Value = loop {
        let line = rx.recv_timeout(wait).expect("access line");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["target"] == "hoard::access" {
            break v;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(access["method"], "GET");
    assert_eq!(access["uri"], url.as_str());
    assert_eq!(access["status"], 200);
    assert!(
        access["cache_status"]
            .as_str()
            .unwrap()
            .starts_with("hoard; fwd=uri-miss")
    );
    assert_eq!(access["bytes"], "/logged".len());
    assert!(access["upstream_us"].as_u64().unwrap() > 0, "{access}");
    assert!(access["elapsed_us"].as_u64().is_some(), "{access}");
}
