//! Development caching: rules (forced TTL, ignored query parameters, bypass, cached POST,
//! Authorization sharing) and offline mode, end to end through a proxy in gateway mode.

use std::time::Duration;

use hoard::http_cache::{IgnoreQuery, Pattern, Rule};
use http::Method;
use tempfile::TempDir;

use crate::proxy::harness::*;

fn rule(name: &str, path: &str, edit: impl FnOnce(&mut Rule)) -> Rule {
    let mut r = Rule::new(name, "*", path).unwrap();
    edit(&mut r);
    r.validate().unwrap();
    r
}

async fn proxy_with_rules(
    origin: &Origin,
    rules: Vec<Rule>,
) -> (hoard::proxy::ServerHandle, std::net::SocketAddr, TempDir) {
    let dir = TempDir::new().unwrap();
    let (h, a) = start_proxy_in(dir.path(), Some(origin.addr), move |c| c.rules = rules).await;
    (h, a, dir)
}

fn url(proxy: std::net::SocketAddr, path: &str) -> String {
    format!("http://{proxy}{path}")
}

#[tokio::test]
async fn forced_ttl_caches_what_the_origin_forbids() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[
                ("cache-control", "no-store, no-cache, private"),
                ("pragma", "no-cache"),
            ],
            "slow api",
        )
    })
    .await;
    let rules = vec![rule("api", "/api/*", |r| {
        r.ttl = Some(Duration::from_secs(600))
    })];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    let first = get(proxy, &url(proxy, "/api/x")).await;
    assert_eq!(first.text(), "slow api");
    first.cache_status().assert_stored();
    let second = get(proxy, &url(proxy, "/api/x")).await;
    second.cache_status().assert_hit();
    assert_eq!(second.cache_status().ttl.map(|t| t > 590), Some(true));
    assert!(
        second.cache_status().raw.contains("rule=api"),
        "{}",
        second.cache_status().raw
    );
    // The client still sees what the origin said.
    assert_eq!(
        second.header("cache-control"),
        Some("no-store, no-cache, private")
    );
    assert_eq!(origin.hits(), 1);
    // Paths outside the rule keep normal semantics.
    get(proxy, &url(proxy, "/other")).await;
    get(proxy, &url(proxy, "/other")).await;
    assert_eq!(origin.count("GET", "/other"), 2);
}

#[tokio::test]
async fn forced_ttl_never_shares_authorized_responses_unless_share_auth() {
    let origin = Origin::start(|_| reply(200, &[], "secret")).await;
    let rules = vec![
        rule("shared", "/shared/*", |r| {
            r.ttl = Some(Duration::from_secs(60));
            r.share_auth = true;
        }),
        rule("private", "*", |r| r.ttl = Some(Duration::from_secs(60))),
    ];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    let auth = [("authorization", "Bearer x")];
    for _ in 0..2 {
        send(proxy, "GET", &url(proxy, "/p"), &auth).await;
    }
    assert_eq!(
        origin.count("GET", "/p"),
        2,
        "Authorization responses are not shared"
    );
    for _ in 0..2 {
        send(proxy, "GET", &url(proxy, "/shared/p"), &auth).await;
    }
    assert_eq!(
        origin.count("GET", "/shared/p"),
        1,
        "share_auth stores them"
    );
}

/// A rule overrides `private` and stores the response, but never one client's cookie: the
/// next client gets the stored body without the `Set-Cookie`/`Set-Cookie2` the first one got
/// (unless the origin marked the response `public`).
#[tokio::test]
async fn hostile_forced_ttl_never_shares_a_set_cookie() {
    let origin = Origin::start(|req| {
        let public = req.uri().path().starts_with("/public");
        let cc = if public { "public" } else { "private" };
        reply(
            200,
            &[
                ("cache-control", cc),
                ("set-cookie", "session=alice"),
                ("set-cookie2", "legacy=alice"),
            ],
            "page",
        )
    })
    .await;
    let rules = vec![rule("site", "*", |r| {
        r.ttl = Some(Duration::from_secs(600))
    })];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    let first = fill(proxy, &url(proxy, "/login")).await;
    assert_eq!(first.header("set-cookie"), Some("session=alice"));
    let second = get(proxy, &url(proxy, "/login")).await;
    second.cache_status().assert_hit();
    assert_eq!(second.text(), "page");
    assert_eq!(
        (second.header("set-cookie"), second.header("set-cookie2")),
        (None, None),
        "one client's cookie was shared by a rule"
    );
    fill(proxy, &url(proxy, "/public")).await;
    let shared = get(proxy, &url(proxy, "/public")).await;
    shared.cache_status().assert_hit();
    assert_eq!(shared.header("set-cookie"), Some("session=alice"));
    assert_eq!(
        origin.count("GET", "/login") + origin.count("GET", "/public"),
        2
    );
}

#[tokio::test]
async fn ignore_query_drops_parameters_from_the_key() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[("cache-control", "max-age=60")],
            req.uri().query().unwrap_or("").to_owned(),
        )
    })
    .await;
    let rules = vec![rule("q", "*", |r| {
        r.ignore_query = IgnoreQuery::Params(vec![
            Pattern::new("utm_*").unwrap(),
            Pattern::new("ts").unwrap(),
        ])
    })];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    let a = get(proxy, &url(proxy, "/p?id=1&utm_source=x&ts=1")).await;
    // The origin still gets the full query.
    assert_eq!(a.text(), "id=1&utm_source=x&ts=1");
    let b = get(proxy, &url(proxy, "/p?id=1&ts=2&utm_medium=y")).await;
    b.cache_status().assert_hit();
    let c = get(proxy, &url(proxy, "/p?id=2")).await;
    c.cache_status().assert_not_hit();
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn bypass_rule_never_caches() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "x")).await;
    let rules = vec![rule("live", "/live/*", |r| r.bypass = true)];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    for _ in 0..3 {
        let r = get(proxy, &url(proxy, "/live/feed")).await;
        assert_eq!(r.cache_status().fwd.as_deref(), Some("bypass"));
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn post_cached_by_body_digest() {
    let origin = Origin::start(|req| {
        reply(
            200,
            &[],
            format!("answer to {}", String::from_utf8_lossy(req.body())),
        )
    })
    .await;
    let rules = vec![rule("graphql", "/graphql", |r| {
        r.ttl = Some(Duration::from_secs(60));
        r.cache_methods = vec![Method::POST];
        r.max_body = 1024;
    })];
    let (_h, proxy, _d) = proxy_with_rules(&origin, rules).await;
    let q1 = br#"{"query":"{a}"}"#;
    let q2 = br#"{"query":"{b}"}"#;
    let r1 = post(proxy, &url(proxy, "/graphql"), q1).await;
    assert_eq!(r1.text(), r#"answer to {"query":"{a}"}"#);
    let r1b = post(proxy, &url(proxy, "/graphql"), q1).await;
    r1b.cache_status().assert_hit();
    assert_eq!(r1b.text(), r1.text());
    let r2 = post(proxy, &url(proxy, "/graphql"), q2).await;
    assert_eq!(r2.text(), r#"answer to {"query":"{b}"}"#);
    assert_eq!(origin.count("POST", "/graphql"), 2);
    // A body over max_body is refused rather than half-read.
    let big = vec![b'x'; 4096];
    assert_eq!(post(proxy, &url(proxy, "/graphql"), &big).await.status, 413);
    // A GET of the same URL is a different entry.
    get(proxy, &url(proxy, "/graphql")).await;
    assert_eq!(origin.count("GET", "/graphql"), 1);
}

#[tokio::test]
async fn offline_serves_any_age_and_504s_misses() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
            "stored",
        )
    })
    .await;
    let dir = TempDir::new().unwrap();
    {
        let (h, proxy) = start_proxy_in(dir.path(), Some(origin.addr), |_| {}).await;
        get(proxy, &url(proxy, "/page"))
            .await
            .cache_status()
            .assert_stored();
        h.shutdown().await;
    }
    let before = origin.hits();
    let (_h, proxy) = start_proxy_in(dir.path(), Some(origin.addr), |c| c.offline = true).await;
    let r = get(proxy, &url(proxy, "/page")).await;
    assert_eq!((r.status, r.text()), (200, "stored".to_owned()));
    let cs = r.cache_status();
    cs.assert_hit();
    assert!(cs.raw.contains("detail=offline"), "{}", cs.raw);
    assert!(cs.ttl.unwrap() <= 0, "served although stale: {}", cs.raw);
    assert!(r.header("age").is_some());
    assert!(r.header("warning").is_none());
    let miss = get(proxy, &url(proxy, "/never-fetched")).await;
    assert_eq!(miss.status, 504);
    assert!(miss.text().contains("offline"));
    let post_r = post(proxy, &url(proxy, "/page"), b"x").await;
    assert_eq!(post_r.status, 504);
    assert_eq!(origin.hits(), before, "offline never contacts the origin");
}

/// The README recipe: rules from a configuration file, through the real binary.
#[tokio::test]
async fn rules_from_a_config_file_through_the_binary() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-cache")], "users")).await;
    let dir = TempDir::new().unwrap();
    let conf = dir.path().join("dev.toml");
    std::fs::write(
        &conf,
        "[[rules]]\nname = \"slow-api\"\nhost = \"127.0.0.1\"\npath = \"/api/*\"\nttl = \"10m\"\nignore_query = [\"utm_*\", \"ts\"]\n",
    )
    .unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), conf.clone().into()];
    args.extend(["--listen", "127.0.0.1:0", "--cache-dir"].map(Into::into));
    args.push(dir.path().join("cache").into());
    args.extend([
        "--upstream".into(),
        format!("http://{}", origin.addr).into(),
    ]);
    let (mut child, addr) = spawn_hoard(args).await;
    let first = get(addr, &url(addr, "/api/users?utm_source=x")).await;
    assert_eq!(first.text(), "users");
    let second = get(addr, &url(addr, "/api/users?ts=5")).await;
    let cs = second.cache_status();
    cs.assert_hit();
    assert!(cs.raw.contains("detail=\"rule=slow-api\""), "{}", cs.raw);
    assert_eq!(origin.hits(), 1);

    // `hoard show` and `hoard purge` apply the same rules: any utm_*/ts finds the entry.
    let cli = |cmd: &str, query: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
            .arg("--config")
            .arg(&conf)
            .args([cmd, "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg(format!("http://{}/api/users{query}", origin.addr))
            .output()
            .unwrap()
    };
    let shown = cli("show", "?utm_medium=y");
    assert!(shown.status.success(), "{shown:?}");
    let purged = cli("purge", "?ts=9");
    assert!(purged.status.success(), "{purged:?}");
    assert_eq!(cli("purge", "").status.code(), Some(1), "already gone");
    let third = get(addr, &url(addr, "/api/users")).await;
    assert!(
        !third.cache_status().raw.contains("hit"),
        "{}",
        third.cache_status().raw
    );
    assert_eq!(origin.hits(), 2);
    child.kill().await.ok();
}

#[tokio::test]
async fn hoard_show_names_the_rule() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "x")).await;
    let dir = TempDir::new().unwrap();
    let rules = vec![rule("api", "/api/*", |r| {
        r.ttl = Some(Duration::from_secs(600))
    })];
    let (h, proxy) = start_proxy_in(dir.path(), Some(origin.addr), move |c| c.rules = rules).await;
    get(proxy, &url(proxy, "/api/x"))
        .await
        .cache_status()
        .assert_stored();
    h.shutdown().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
        .arg("show")
        .arg("--cache-dir")
        .arg(dir.path())
        .arg(format!("http://{}/api/x", origin.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rule           api (ttl forced to 600s)"),
        "{text}"
    );
    assert!(text.contains("rule=api"), "{text}");
}
