//! Access control: `allow` (client networks; default loopback) answers 403 to others, for
//! plain requests and CONNECT; `proxy_auth` demands `Proxy-Authorization: Basic` (407) and
//! never forwards it.

use super::proxy;
use crate::proxy::harness::*;

fn nets(list: &str) -> Vec<hoard::config::IpNet> {
    hoard::config::parse_ip_list(list).unwrap()
}

#[tokio::test]
async fn hostile_client_outside_allow_gets_403() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |c| c.allow = nets("10.0.0.0/8")).await;
    let resp = get(proxy, &origin.url("/x")).await;
    assert_eq!(resp.status, 403, "{:?}", resp.text());
    assert!(resp.cache_status().present());
    let resp = send(proxy, "CONNECT", &origin.addr.to_string(), &[]).await;
    assert_eq!(resp.status, 403);
    assert!(resp.cache_status().present());
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn hostile_default_allow_admits_loopback() {
    let origin = Origin::start(|_| reply(200, &[], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    assert_eq!(get(proxy, &origin.url("/x")).await.status, 200);
    let ipv6 = hoard::proxy::ProxyConfig::new("[::1]:0".parse().unwrap(), "/tmp");
    assert!(
        ipv6.allow
            .iter()
            .any(|n| n.contains("::1".parse().unwrap()))
    );
    assert!(
        !ipv6
            .allow
            .iter()
            .any(|n| n.contains("192.168.1.1".parse().unwrap()))
    );
}

#[tokio::test]
async fn hostile_proxy_auth_is_required_when_configured() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |c| c.proxy_auth = vec!["alice:s3cret".to_string()]).await;
    let url = origin.url("/x");
    for creds in [
        None,
        Some("Basic Ym9iOnMzY3JldA=="),
        Some("Bearer xyz"),
        Some("Basic !!"),
    ] {
        let headers: Vec<(&str, &str)> = creds
            .map(|v| ("Proxy-Authorization", v))
            .into_iter()
            .collect();
        let resp = send(proxy, "GET", &url, &headers).await;
        assert_eq!(resp.status, 407, "{creds:?}");
        assert_eq!(
            resp.header("proxy-authenticate"),
            Some("Basic realm=\"hoard\"")
        );
        assert!(resp.cache_status().present());
    }
    let resp = send(proxy, "CONNECT", &origin.addr.to_string(), &[]).await;
    assert_eq!(resp.status, 407);
    assert_eq!(origin.hits(), 0);
    // alice:s3cret
    let ok = send(
        proxy,
        "GET",
        &url,
        &[("Proxy-Authorization", "Basic YWxpY2U6czNjcmV0")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(
        origin
            .last("/x")
            .headers
            .get("proxy-authorization")
            .is_none(),
        "Proxy-Authorization was forwarded to the origin"
    );
}
