//! CONNECT targets: only a plain DNS name or an IP literal is tunnelled or intercepted (a
//! wildcard never gets a leaf), and a `--resolve` entry opens its port for its own host only.

use super::*;

#[tokio::test]
async fn hostile_connect_to_a_wildcard_or_invalid_host_is_400_before_any_tunnel() {
    let s = Setup::new().await;
    let long_label = format!("{}.test", "a".repeat(64));
    let long_name = format!("{}.test", ["abcdefghi"; 25].join("."));
    for host in [
        "*.example.com",
        "*.origin.test",
        "*",
        "a..b.test",
        ".origin.test",
        long_label.as_str(),
        long_name.as_str(),
        "-a.test",
        "127.1",
    ] {
        let err = connect(s.proxy.addr, &format!("{host}:443"))
            .await
            .expect_err(host);
        assert!(err.starts_with("HTTP/1.1 400"), "{host}: {err}");
        assert!(err.contains("detail=bad-connect-host"), "{host}: {err}");
    }
    // Without --mitm too: no blind tunnel either.
    let t = Setup::with(|c| c.mitm = false).await;
    let port = t.origin.addr.port();
    let err = connect(t.proxy.addr, &format!("*.{ORIGIN_HOST}:{port}"))
        .await
        .unwrap_err();
    assert!(err.starts_with("HTTP/1.1 400"), "{err}");
    assert!(err.contains("detail=bad-connect-host"), "{err}");
    // Names and literals that are fine still work.
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert_eq!(c.get(&auth, "/ok").await.status, StatusCode::OK);
    assert_eq!(s.origin.count() + t.origin.count(), 1);
}

#[tokio::test]
async fn hostile_resolve_opens_its_port_only_for_its_own_host() {
    for mitm in [false, true] {
        // `--resolve origin.test:PORT:127.0.0.1`; allowed-connect-ports stays 443.
        let s = Setup::with(|c| c.mitm = mitm).await;
        let port = s.origin.addr.port();
        for host in ["127.0.0.1", "localhost", "other.test", "[::1]"] {
            let err = connect(s.proxy.addr, &format!("{host}:{port}"))
                .await
                .expect_err(host);
            assert!(err.starts_with("HTTP/1.1 403"), "mitm={mitm} {host}: {err}");
            assert!(err.contains("port-not-allowed"), "{host}: {err}");
        }
        assert!(
            connect(s.proxy.addr, &s.authority()).await.is_ok(),
            "mitm={mitm}: the resolve entry's own host:port"
        );
        assert!(
            connect(s.proxy.addr, &format!("ORIGIN.test.:{port}"))
                .await
                .is_ok(),
            "mitm={mitm}: names compare case-insensitively, trailing dot ignored"
        );
    }
}
