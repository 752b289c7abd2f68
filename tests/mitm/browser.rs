//! A real browser through hoard: headless Chromium loads an HTTPS page (intercepted, hoard's
//! CA trusted in the browser's own NSS database, as a user would with `certutil`) and a plain
//! HTTP page, each in two fresh browser profiles. The second load of each must come from
//! hoard's store: the origin sees every page once, and both loads show the same bytes.
//!
//! The browser reaches the test names only through hoard, by a PAC script (Chromium sends
//! loopback addresses around a proxy, so the plain origin is named `plain.test` too); hoard
//! maps both names to loopback with `--resolve`. Everything else is NOTFOUND in the browser
//! (`support::chromium::FLAGS`). Needs `chromium` and `certutil` (Debian's libnss3-tools),
//! which `.ci/run` installs.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::*;

const PLAIN_HOST: &str = "plain.test";

/// A HOME whose NSS database trusts `ca_pem` for TLS servers, as `certutil` sets it up.
fn nss_home(ca_pem: &Path) -> TempDir {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join(".pki").join("nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    for args in [
        vec!["-N", "--empty-password"],
        vec![
            "-A",
            "-t",
            "C,,",
            "-n",
            "hoard",
            "-i",
            ca_pem.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new("certutil")
            .arg("-d")
            .arg(&db)
            .args(&args)
            .output()
            .unwrap_or_else(|e| {
                panic!("certutil (apt-get install libnss3-tools; .ci/run does): {e}")
            });
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    home
}

/// `--proxy-pac-url` sending the test names through the proxy and everything else direct
/// (where the browser's resolver answers NOTFOUND).
fn pac_flag(proxy: SocketAddr) -> String {
    let script = format!(
        "function FindProxyForURL(url, host) {{ \
           if (host == \"{ORIGIN_HOST}\" || host == \"{PLAIN_HOST}\") return \"PROXY {proxy}\"; \
           return \"DIRECT\"; }}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    format!("--proxy-pac-url=data:application/x-ns-proxy-autoconfig;base64,{b64}")
}

/// Loads `url` in a fresh profile and returns the page's DOM as Chromium serialises it.
async fn dump_dom(home: &Path, proxy: SocketAddr, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(support::chromium::binary());
    cmd.args(support::chromium::FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(pac_flag(proxy))
        .arg("--dump-dom")
        .arg(url)
        .env("HOME", home)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("<body>"),
        "chromium {url}: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// How many requests for `path` the origin saw.
fn fetches(origin: &support::Origin, path: &str) -> usize {
    origin.seen().iter().filter(|s| s.path == path).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_gets_https_and_http_pages_from_the_store_on_the_second_load() {
    let plain = support::Origin::start_with(|n, _| {
        support::Act::Reply(
            Duration::ZERO,
            support::reply(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("content-type", "text/html"),
                ],
                format!("<p>plain page, fetch {n}</p>"),
            ),
        )
    })
    .await;
    let plain_port = plain.addr.port();
    let s = Setup::with(|cfg| {
        cfg.resolve
            .push((PLAIN_HOST.into(), plain_port, "127.0.0.1".parse().unwrap()))
    })
    .await;
    let home = nss_home(&s.proxy.ca_pem_path());
    let https_url = format!("https://{}/page", s.authority());
    let http_url = format!("http://{PLAIN_HOST}:{plain_port}/page");

    let first = dump_dom(home.path(), s.proxy.addr, &https_url).await;
    assert!(first.contains("GET /page"), "the origin's page: {first}");
    let second = dump_dom(home.path(), s.proxy.addr, &https_url).await;
    assert_eq!(second, first, "the same bytes the second time");
    assert_eq!(
        fetches(&s.origin, "/page"),
        1,
        "one HTTPS fetch for two loads"
    );

    let first = dump_dom(home.path(), s.proxy.addr, &http_url).await;
    assert!(first.contains("plain page, fetch 0"), "{first}");
    let second = dump_dom(home.path(), s.proxy.addr, &http_url).await;
    assert_eq!(second, first, "the same bytes the second time");
    assert_eq!(fetches(&plain, "/page"), 1, "one HTTP fetch for two loads");
}
