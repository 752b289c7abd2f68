//! The admin listener against DNS rebinding: a page on a name the attacker re-points at
//! 127.0.0.1 sends `Host: that.name` (and `Origin: http://that.name:PORT`). Every admin path
//! but `/healthz` answers such a request 421 and reveals nothing; IP literals, `localhost`
//! and the `admin-hosts` names are served. The same in real Chromium, whose resolver maps
//! the attacker's name to 127.0.0.1 as a rebinding DNS server would.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Browser, js_str, spawn_with_admin};
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

/// Chromium's resolver for the rebinding test: the attacker's name is 127.0.0.1 (what a
/// rebinding DNS server answers once the page has loaded), every other name but 127.0.0.1
/// NOTFOUND as in `support::chromium::FLAGS`, which this replaces.
const REBIND_RULES: &str =
    "--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1";

/// A page on `rebind.attacker.test:PORT` (the admin port) gets 421 for itself, for its
/// same-origin `fetch` of `/api/urls` and for its purge (which carries `X-Hoard-Purge` and an
/// `Origin` equal to its `Host`); the same browser on `127.0.0.1:PORT` reads the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_page_in_chromium_reads_and_purges_nothing() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let (mut child, proxy, admin) = spawn_with_admin(&cache, &[]).await;
    let url = origin.url("/private-report?token=SECRET42");
    assert!(get(proxy, &url, &[]).await.1.contains("stored"));
    let port = admin.port();
    let body = js_str(&url);
    let (page, read, purged, control) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch_with(&[REBIND_RULES]);
        b.navigate(&format!("http://rebind.attacker.test:{port}/"));
        b.wait_for(
            "location.host.startsWith('rebind.attacker.test') && \
             document.readyState === 'complete'",
            "the page on the rebinding name",
        );
        let page = b.eval("document.documentElement.innerText");
        let read = b.eval("fetch('/api/urls?q=').then(async r => r.status + ' ' + await r.text())");
        let purged = b.eval(&format!(
            "fetch('/api/purge', {{method: 'POST', headers: {{'X-Hoard-Purge': '1'}}, \
             body: {body}}}).then(async r => r.status + ' ' + await r.text())"
        ));
        b.navigate(&format!("http://127.0.0.1:{port}/"));
        b.wait_for(
            "location.host.startsWith('127.0.0.1') && document.readyState === 'complete'",
            "the dashboard on 127.0.0.1",
        );
        let control = b.eval("fetch('/api/urls?q=').then(r => r.text())");
        (page, read, purged, control)
    })
    .await
    .unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let (page, read, purged, control) = (text(&page), text(&read), text(&purged), text(&control));
    assert!(
        page.contains("admin-hosts"),
        "the 421 text, not the dashboard: {page}"
    );
    assert!(read.starts_with("421 "), "{read}");
    assert!(!read.contains("SECRET42"), "{read}");
    assert!(purged.starts_with("421 "), "{purged}");
    assert!(
        control.contains("SECRET42"),
        "served on 127.0.0.1: {control}"
    );
    assert!(get(proxy, &url, &[]).await.1.contains("hit"), "not purged");
    child.kill().await.unwrap();
}
