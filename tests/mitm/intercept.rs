//! Interception proper: misses then hits under `https://` keys, h2 and HTTP/1.1 inside,
//! coalescing, pass-through, bypass, upstream verification, reqwest and curl as clients.

use std::sync::Arc;

use bytes::Bytes;
use http::{StatusCode, Version};

use super::*;

#[tokio::test]
async fn h1_inside_first_miss_then_hit_without_origin() {
    let s = Setup::new().await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    let a = c.get(&auth, "/a").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!a.is_hit(), "{}", a.cache_status());
    assert!(a.body.starts_with("GET /a"), "{}", a.body);
    let b = c.get(&auth, "/a").await;
    assert!(b.is_hit(), "{}", b.cache_status());
    assert_eq!(b.body, a.body);
    assert_eq!(s.origin.count(), 1);
    // A new connection (new handshake, cached leaf) still hits.
    let mut c2 = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert!(c2.get(&auth, "/a").await.is_hit());
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn h2_inside_first_miss_then_hit() {
    let s = Setup::new().await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), true)
        .await
        .unwrap();
    let a = c.get(&auth, "/h2").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.version, Version::HTTP_2);
    assert!(!a.is_hit());
    let b = c.get(&auth, "/h2").await;
    assert_eq!(b.version, Version::HTTP_2);
    assert!(b.is_hit(), "{}", b.cache_status());
    assert_eq!(s.origin.count(), 1);
    // The same URL over HTTP/1.1 inside shares the https:// key.
    let mut c1 = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert!(c1.get(&auth, "/h2").await.is_hit());
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn concurrent_intercepted_misses_coalesce_to_one_fetch() {
    let s = Arc::new(Setup::new().await);
    let auth = s.authority();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), i % 2 == 0)
                .await
                .unwrap();
            c.get(&auth, "/slow").await
        }));
    }
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(g.status, StatusCode::OK);
        assert!(g.body.starts_with("GET /slow"));
    }
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn post_inside_passes_through_and_nostore_is_not_cached() {
    let s = Setup::new().await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    let p = c
        .send("POST", &auth, "/form", Bytes::from_static(b"12345"))
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("body=5"), "{}", p.body);
    assert!(
        p.cache_status().contains("fwd=bypass"),
        "{}",
        p.cache_status()
    );
    c.get(&auth, "/nostore").await;
    let again = c.get(&auth, "/nostore").await;
    assert!(!again.is_hit());
    assert_eq!(s.origin.count(), 3);
}

#[tokio::test]
async fn bypassed_host_is_tunnelled_with_the_origin_certificate() {
    let s = Setup::with(|c| c.mitm_bypass = vec!["*.test".into()]).await;
    let auth = s.authority();
    // hoard's CA is not accepted: the client sees the origin's own certificate.
    assert!(
        Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
            .await
            .is_err()
    );
    let mut c = Inner::open(s.proxy.addr, &auth, s.ca.der.clone(), false)
        .await
        .unwrap();
    let a = c.get(&auth, "/t").await;
    let b = c.get(&auth, "/t").await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert!(a.headers.get("cache-status").is_none());
    assert_eq!(s.origin.count(), 2, "a tunnel caches nothing");
}

#[tokio::test]
async fn without_mitm_connect_stays_a_blind_tunnel() {
    let s = Setup::with(|c| c.mitm = false).await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.ca.der.clone(), true)
        .await
        .unwrap();
    c.get(&auth, "/t").await;
    c.get(&auth, "/t").await;
    assert_eq!(s.origin.count(), 2);
    assert!(
        !s.proxy.dir.path().join("ca").exists(),
        "no CA without --mitm"
    );
}

#[tokio::test]
async fn wrong_upstream_certificate_is_a_502_that_says_why() {
    // The proxy does not trust the test CA.
    let s = Setup::with(|c| c.extra_ca_files.clear()).await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    let g = c.get(&auth, "/x").await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert!(
        g.cache_status().contains("detail=tls-verify"),
        "{} {}",
        g.cache_status(),
        g.body
    );
    assert!(g.body.contains("certificate"), "{}", g.body);
    assert_eq!(s.origin.count(), 0);
    // The failure is not cached: the next request is verified (and refused) again.
    let g = c.get(&auth, "/x").await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert!(g.cache_status().contains("detail=tls-verify"));
}

#[tokio::test]
async fn insecure_upstream_accepts_the_unknown_certificate_when_asked() {
    let s = Setup::with(|c| {
        c.extra_ca_files.clear();
        c.insecure_upstream = true;
    })
    .await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert_eq!(c.get(&auth, "/x").await.status, StatusCode::OK);
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn reqwest_through_https_proxy_misses_then_hits() {
    let s = Setup::new().await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(format!("http://{}", s.proxy.addr)).unwrap())
        .tls_backend_preconfigured(Arc::unwrap_or_clone(client_config(
            s.proxy.ca_der(),
            &[b"h2", b"http/1.1"],
        )))
        .build()
        .unwrap();
    let url = format!("https://{}/rq", s.authority());
    for i in 0..3 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cs = r
            .headers()
            .get("cache-status")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(cs.contains("; hit"), i > 0, "{cs}");
        assert!(r.text().await.unwrap().starts_with("GET /rq"));
    }
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn curl_through_https_proxy_misses_then_hits() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed: skipped");
        return;
    }
    let s = Setup::new().await;
    let url = format!("https://{}/curl", s.authority());
    for i in 0..2 {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--noproxy", "", "--proxy"])
            .arg(format!("http://{}", s.proxy.addr))
            .arg("--cacert")
            .arg(s.proxy.ca_pem_path())
            .arg(&url)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("get /curl"), "{text}");
        assert_eq!(text.contains("cache-status: hoard; hit"), i == 1, "{text}");
    }
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn ip_address_target_gets_a_leaf_with_an_ip_san() {
    // The origin's port is opened for every host: a --resolve entry opens it only for
    // origin.test.
    let s = Setup::with(|c| {
        let port = c.resolve[0].1;
        c.allowed_connect_ports.push(port);
    })
    .await;
    // No SNI is sent for an IP address: the leaf is made for the CONNECT host.
    let auth = format!("127.0.0.1:{}", s.origin.addr.port());
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), true)
        .await
        .unwrap();
    let a = c.get(&auth, "/ip").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(c.get(&auth, "/ip").await.is_hit());
    assert_eq!(s.origin.count(), 1);
}
