//! Bad input around CONNECT: disallowed ports, clients closing mid-handshake, non-TLS bytes,
//! silent clients; none of them disturbs the next request.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

async fn next_request_still_works(s: &Setup) {
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert_eq!(c.get(&auth, "/after").await.status, StatusCode::OK);
}

/// Read until EOF or error; panics if the proxy keeps the connection open past `limit`.
async fn expect_closed(mut s: tokio::net::TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the proxy closed the connection");
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_refused() {
    let s = Setup::new().await;
    // Neither 443-only default nor a --resolve port.
    let err = connect(s.proxy.addr, "127.0.0.1:22").await.unwrap_err();
    assert!(err.starts_with("HTTP/1.1 403"), "{err}");
    assert!(err.contains("port-not-allowed"), "{err}");
    // Without --mitm too.
    let t = Setup::with(|c| c.mitm = false).await;
    let err = connect(t.proxy.addr, "127.0.0.1:22").await.unwrap_err();
    assert!(err.starts_with("HTTP/1.1 403"), "{err}");
    // allowed_connect_ports opens a port explicitly.
    let port = s.origin.addr.port();
    let u = Setup::with(|c| {
        c.resolve.clear();
        c.mitm = false;
        c.allowed_connect_ports = vec![port];
    })
    .await;
    assert!(
        connect(u.proxy.addr, &format!("127.0.0.1:{port}"))
            .await
            .is_ok()
    );
    next_request_still_works(&s).await;
}

#[tokio::test]
async fn client_closing_during_the_handshake_does_not_hurt() {
    let s = Setup::new().await;
    for cut in [0usize, 5, 40] {
        let mut tcp = connect(s.proxy.addr, &s.authority()).await.unwrap();
        // The start of a TLS ClientHello record, then close.
        let hello = [
            0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        let n = cut.min(hello.len());
        tcp.write_all(&hello[..n]).await.unwrap();
        drop(tcp);
    }
    next_request_still_works(&s).await;
}

#[tokio::test]
async fn non_tls_bytes_after_connect_close_the_connection() {
    let s = Setup::new().await;
    let mut tcp = connect(s.proxy.addr, &s.authority()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")
        .await
        .unwrap();
    expect_closed(tcp, Duration::from_secs(5)).await;
    next_request_still_works(&s).await;
    assert_eq!(s.origin.count(), 1, "garbage never reached the origin");
}

#[tokio::test]
async fn silent_client_after_connect_is_dropped_after_header_timeout() {
    let s = Setup::with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let tcp = connect(s.proxy.addr, &s.authority()).await.unwrap();
    expect_closed(tcp, Duration::from_secs(5)).await;
    next_request_still_works(&s).await;
}

#[tokio::test]
async fn intercepted_connection_keeps_its_max_connections_slot() {
    let s = Setup::with(|c| c.max_connections = 1).await;
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false)
        .await
        .unwrap();
    assert_eq!(c.get(&auth, "/slot").await.status, StatusCode::OK);
    // The client connection's task ended with the upgrade, but the slot is still taken.
    let other = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    expect_closed(other, Duration::from_secs(5)).await;
    drop(c);
    // Freed when the intercepted connection ends.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(mut c) = Inner::open(s.proxy.addr, &auth, s.proxy.ca_der(), false).await {
            ok = c.get(&auth, "/slot").await.is_hit();
            break;
        }
    }
    assert!(
        ok,
        "a new connection is accepted once the intercepted one closed"
    );
}

/// Issue 12.8: intercepted connections had no framing guard; a bare-LF request inside the TLS
/// tunnel was answered. Now it is a 400 and the inner connection closes.
#[tokio::test]
async fn hostile_bare_lf_inside_an_intercepted_connection_is_400_and_closed() {
    let s = Setup::new().await;
    let authority = s.authority();
    let tcp = connect(s.proxy.addr, &authority).await.expect("CONNECT");
    let host = authority.rsplit_once(':').unwrap().0.to_string();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(s.proxy.ca_der(), &[b"http/1.1"]))
        .connect(rustls::pki_types::ServerName::try_from(host).unwrap(), tcp)
        .await
        .expect("TLS");
    tls.write_all(format!("GET /smuggled HTTP/1.1\nHost: {authority}\n\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the inner connection was not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "answered: {text:?}");
    assert_eq!(s.origin.count(), 0, "the request reached the origin");
}

/// Intercepted connections had no idle timeout (they were served outside the proxy's
/// connection guard): an idle one stayed open, holding its `max-connections` slot, forever.
#[tokio::test]
async fn hostile_idle_intercepted_connection_is_closed_at_idle_timeout() {
    let s = Setup::with(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let authority = s.authority();
    let tcp = connect(s.proxy.addr, &authority).await.expect("CONNECT");
    let host = authority.rsplit_once(':').unwrap().0.to_string();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(s.proxy.ca_der(), &[b"http/1.1"]))
        .connect(rustls::pki_types::ServerName::try_from(host).unwrap(), tcp)
        .await
        .expect("TLS");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the idle intercepted connection was never closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
}
