//! GNU wget through hoard, as a user points it there: `https_proxy`/`http_proxy` and
//! `--ca-certificate` naming hoard's CA. Two fetches of an HTTPS URL and of a plain one: the
//! second of each is a hit (wget's `-S` prints the response head) with the same bytes, and
//! the origin answers each URL once. `.ci/run` installs wget.

use std::time::Duration;

use super::*;

/// Runs wget on `url` through `proxy`; returns (the printed response head, the body).
async fn wget(proxy: SocketAddr, ca: &std::path::Path, url: &str) -> (String, String) {
    let proxy = format!("http://{proxy}");
    let mut cmd = tokio::process::Command::new("wget");
    cmd.args([
        "--no-config",
        "-S",
        "-q",
        "-O",
        "-",
        "--tries=1",
        "--timeout=20",
    ])
    .arg(format!("--ca-certificate={}", ca.display()))
    .arg(url)
    .env("http_proxy", &proxy)
    .env("https_proxy", &proxy)
    .env_remove("no_proxy")
    .env_remove("NO_PROXY")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("wget finished within 60 s")
        .unwrap_or_else(|e| panic!("wget (apt-get install wget; .ci/run does): {e}"));
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wget {url}: {head}");
    (head, body)
}

#[tokio::test]
async fn wget_through_http_and_https_proxy_second_fetch_is_a_hit() {
    let s = Setup::new().await;
    let plain = crate::proxy::harness::Origin::start(|_| {
        crate::proxy::harness::reply(200, &[("cache-control", "max-age=60")], "plain page")
    })
    .await;
    let ca = s.proxy.ca_pem_path();
    for (url, fetched) in [
        (format!("https://{}/wget", s.authority()), "https"),
        (plain.url("/wget"), "http"),
    ] {
        let (head1, body1) = wget(s.proxy.addr, &ca, &url).await;
        assert!(
            head1.contains("cache-status: hoard; fwd="),
            "{fetched}: {head1}"
        );
        let (head2, body2) = wget(s.proxy.addr, &ca, &url).await;
        assert!(
            head2.contains("cache-status: hoard; hit"),
            "{fetched}: {head2}"
        );
        assert_eq!(body2, body1, "{fetched}: the same bytes from the store");
    }
    assert_eq!(s.origin.count(), 1, "one HTTPS fetch");
    assert_eq!(plain.hits(), 1, "one HTTP fetch");
}
