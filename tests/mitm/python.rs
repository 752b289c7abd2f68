//! The README's crawler recipe, as written: Python requests with `HTTP_PROXY` / `HTTPS_PROXY`
//! pointing at hoard and `REQUESTS_CA_BUNDLE` at hoard's CA. `.ci/run` installs requests.

use super::*;

const CRAWL: &str = r#"
import sys, requests
s = requests.Session()
for url in sys.argv[1:]:
    r = s.get(url, timeout=20)
    print(r.status_code, len(r.content), r.headers.get("cache-status"))
"#;

fn python_has_requests() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn python_requests_crawler_through_http_and_https_proxy() {
    if !python_has_requests() {
        eprintln!("python3 with requests not installed: skipped (.ci/run installs it)");
        return;
    }
    let s = Setup::new().await;
    let plain = crate::proxy::harness::Origin::start(|_| {
        crate::proxy::harness::reply(200, &[("cache-control", "max-age=60")], "plain page")
    })
    .await;
    let https_url = format!("https://{}/crawl", s.authority());
    let http_url = plain.url("/crawl");
    let proxy = format!("http://{}", s.proxy.addr);
    let out = tokio::process::Command::new("python3")
        .args(["-c", CRAWL, &https_url, &https_url, &http_url, &http_url])
        .env("HTTP_PROXY", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("https_proxy", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("REQUESTS_CA_BUNDLE", s.proxy.ca_pem_path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("200 ") && lines[0].contains("fwd="),
        "{text}"
    );
    assert!(
        lines[1].starts_with("200 ") && lines[1].contains("hoard; hit"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("200 10 ") && lines[2].contains("fwd="),
        "{text}"
    );
    assert!(
        lines[3].starts_with("200 10 ") && lines[3].contains("hoard; hit"),
        "{text}"
    );
    assert_eq!(s.origin.count(), 1, "one HTTPS fetch");
    assert_eq!(plain.hits(), 1, "one HTTP fetch");
}
