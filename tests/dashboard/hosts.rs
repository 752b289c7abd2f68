//! The admin listener against DNS rebinding: a page on a name the attacker re-points at
//! 127.0.0.1 sends `Host: that.name` (and `Origin: http://that.name:PORT`). Every admin path
//! but `/healthz` answers such a request 421 and reveals nothing; IP literals, `localhost`
//! and the `admin-hosts` names are served.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ops::{Origin, get};
use crate::proxy::harness::IO_TIMEOUT;

/// One request to the admin server with the given `Host` (and `extra` header lines, each
/// ending in CRLF); returns (status, whole response text).
async fn admin_as(
    admin: SocketAddr,
    method: &str,
    target: &str,
    host: &str,
    extra: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("admin answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_a_rebinding_host_on_every_path_but_healthz() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = crate::ops::proxy(dir.path(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.admin_hosts = vec!["hoard.internal".into()];
    })
    .await;
    let admin = p.admin_addr().unwrap();
    let port = admin.port();
    let url = origin.url("/account?session_token=SECRET42");
    assert_eq!(get(p.local_addr(), &url, &[]).await.0, 200);
    assert!(get(p.local_addr(), &url, &[]).await.1.contains("hit"));

    let evil = format!("rebind.attacker.test:{port}");
    let same_site = "Sec-Fetch-Site: same-origin\r\n";
    for path in [
        "/",
        "/app.js",
        "/api/urls?q=&limit=50",
        "/api/store",
        "/events",
        "/metrics",
        "/nowhere",
    ] {
        let (code, text) = admin_as(admin, "GET", path, &evil, same_site, "").await;
        assert_eq!(code, 421, "{path}: {text}");
        assert!(!text.contains("SECRET42"), "{path}: {text}");
    }
    // The purge a rebinding page would send: its Origin equals its Host.
    let purge_headers = format!(
        "Origin: http://{evil}\r\n{same_site}X-Hoard-Purge: 1\r\nContent-Type: text/plain\r\n"
    );
    let (code, text) = admin_as(admin, "POST", "/api/purge", &evil, &purge_headers, &url).await;
    assert_eq!(code, 421, "{text}");
    assert!(
        get(p.local_addr(), &url, &[]).await.1.contains("hit"),
        "not purged"
    );
    // An absolute-form target naming the foreign host is refused too.
    let target = format!("http://{evil}/api/urls");
    let (code, _) = admin_as(admin, "GET", &target, &format!("127.0.0.1:{port}"), "", "").await;
    assert_eq!(code, 421);
    // /healthz says only "ok", whatever the Host (load balancers send their own).
    let (code, text) = admin_as(admin, "GET", "/healthz", &evil, "", "").await;
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("ok\n"), "{text}");

    // This server's own names are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("dash.localhost:{port}"),
        format!("[::1]:{port}"),
        format!("hoard.internal:{port}"),
    ] {
        let (code, text) = admin_as(admin, "GET", "/api/urls?q=&limit=50", &host, "", "").await;
        assert_eq!(code, 200, "{host}: {text}");
        assert!(text.contains("SECRET42"), "{host}: {text}");
    }
    let local = format!("localhost:{port}");
    let purge_headers = format!("Origin: http://{local}\r\n{same_site}X-Hoard-Purge: 1\r\n");
    let (code, text) = admin_as(admin, "POST", "/api/purge", &local, &purge_headers, &url).await;
    assert_eq!(code, 200, "{text}");
    assert!(
        get(p.local_addr(), &url, &[])
            .await
            .1
            .contains("fwd=uri-miss")
    );
    p.shutdown().await;
}
