//! `hoard stats`, `ls`, `evict` and `clear` on the shared tier, through the binary, against a
//! real `redis-server` (standalone and a 3-master cluster): figures and lines labelled by
//! tier, removals counted per tier and heard by other hoards, keys found by SCAN on every
//! master, and nothing touched that the tier did not write.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::cluster::cluster;
use super::proxies::{connected, counting_origin, dropped, hoard_on};
use super::{Redis, cli, eventually, have_redis};
use crate::proxy::harness::*;

/// `hoard ARGS --cache-dir DIR` with `HOARD_SHARED=url`: (exit code, stdout, stderr).
async fn hoard_cli(url: &str, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .env("HOARD_SHARED", url)
        .env_remove("HOARD_SHARED_PREFIX")
        .output()
        .await
        .expect("hoard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn json(url: &str, dir: &Path, args: &[&str]) -> Value {
    let (code, out, err) = hoard_cli(url, dir, args).await;
    assert_eq!(code, 0, "hoard {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_show_and_remove_the_shared_tier_of_one_redis() {
    if !have_redis("subcommands_show_and_remove_the_shared_tier_of_one_redis") {
        return;
    }
    let mut redis = Redis::start(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, da) = hoard_on(&redis.url()).await;
    let (_hb, b, _db) = hoard_on(&redis.url()).await;
    connected(&redis, 2).await;
    let urls: Vec<String> = (0..3).map(|i| origin.url(&format!("/s{i}"))).collect();
    for u in &urls {
        assert_eq!(get(a, u).await.status, 200);
        get(b, u).await.cache_status().assert_hit(); // B's local copy, from the shared tier
    }
    // Keys the tier did not write, under its prefix and elsewhere: never counted, never removed.
    redis.cli(&["SET", "hoard:unrelated", "x"]);
    redis.cli(&["SET", "other", "y"]);

    // stats: the local figures as before, and a block labelled shared.
    let s = json(&redis.url(), da.path(), &["stats", "--json"]).await;
    assert_eq!(s["urls"], 3, "local figures stay at the top: {s}");
    let sh = &s["shared"];
    assert_eq!(
        (
            &sh["tier"],
            &sh["reachable"],
            &sh["rows"],
            &sh["urls"],
            &sh["leases"]
        ),
        (
            &Value::from("shared"),
            &Value::from(true),
            &Value::from(3),
            &Value::from(3),
            &Value::from(0)
        ),
        "{sh}"
    );
    assert!(
        sh["row_bytes"].as_u64().unwrap() > 3 * "page /s0".len() as u64,
        "{sh}"
    );
    let server = &sh["servers"][0];
    assert_eq!(server["maxmemory"], 64 * 1024 * 1024, "{server}");
    assert_eq!(server["maxmemory_policy"], "allkeys-lru");
    assert_eq!(server["keys"], 6, "3 rows and 3 row sets: {server}");
    assert!(server["used_memory"].as_u64().unwrap() > 0);
    let (code, text, _) = hoard_cli(&redis.url(), da.path(), &["stats"]).await;
    assert_eq!(code, 0);
    assert!(text.contains("shared: 3 rows (3 URLs)"), "{text}");
    assert!(text.contains("policy allkeys-lru"), "{text}");

    // ls --tier shared needs no local store; --tier all says which tier each line is from.
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("none");
    let v = json(
        &redis.url(),
        &missing,
        &["ls", "--tier", "shared", "--json"],
    )
    .await;
    let mut listed: Vec<(String, String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["tier"].as_str().unwrap().to_string(),
                e["url"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let want: Vec<(String, String, u64)> = urls
        .iter()
        .map(|u| ("shared".to_string(), u.clone(), 200))
        .collect();
    assert_eq!(listed, want);
    let (code, text, _) = hoard_cli(&redis.url(), da.path(), &["ls", "--tier", "all"]).await;
    assert_eq!(code, 0);
    let tiers: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(tiers.iter().filter(|t| **t == "local").count(), 3, "{text}");
    assert_eq!(
        tiers.iter().filter(|t| **t == "shared").count(),
        3,
        "{text}"
    );

    // evict --host --tier all: counts per tier, and B drops its own copies (invalidations).
    let host = origin.addr.to_string();
    let r = json(
        &redis.url(),
        da.path(),
        &["evict", "--host", &host, "--tier", "all", "--json"],
    )
    .await;
    assert_eq!(r["local"]["urls"], 3, "{r}");
    assert_eq!(
        (&r["shared"]["urls"], &r["shared"]["rows"]),
        (&Value::from(3), &Value::from(3)),
        "{r}"
    );
    for u in &urls {
        dropped(b, u).await;
    }
    assert_eq!(
        redis.cli(&["DBSIZE"]),
        "2",
        "only the foreign keys are left"
    );
    let (code, _, _) = hoard_cli(
        &redis.url(),
        da.path(),
        &["evict", "--host", &host, "--tier", "shared"],
    )
    .await;
    assert_eq!(code, 1, "nothing left to evict");

    // clear --tier shared: every URL (B drops it) and every lease, nothing else.
    for u in &urls {
        get(a, u).await;
        get(b, u).await;
    }
    redis.cli(&[
        "SET",
        "hoard:{0123456789abcdef}:lease",
        "held",
        "PX",
        "60000",
    ]);
    let (code, text, err) = hoard_cli(&redis.url(), &missing, &["clear", "--tier", "shared"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(text.trim(), "shared: removed 3 URL(s), 4 key(s)");
    assert_eq!(redis.cli(&["DBSIZE"]), "2");
    assert_eq!(redis.cli(&["GET", "hoard:unrelated"]), "x");
    dropped(b, &urls[0]).await;

    // An unreachable Redis is a line of stats, not a failure; --tier shared fails (exit 3).
    redis.kill();
    let s = json(&redis.url(), da.path(), &["stats", "--json"]).await;
    assert_eq!(s["shared"]["reachable"], false, "{s}");
    assert!(
        s["shared"]["error"]
            .as_str()
            .unwrap()
            .contains("not reachable"),
        "{s}"
    );
    let (code, text, _) = hoard_cli(&redis.url(), da.path(), &["stats"]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("  shared: redis://127.0.0.1") && text.contains("is not reachable"),
        "{text}"
    );
    let (code, _, err) = hoard_cli(&redis.url(), da.path(), &["ls", "--tier", "shared"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("shared tier"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_scan_every_master_of_a_cluster() {
    if !have_redis("subcommands_scan_every_master_of_a_cluster") {
        return;
    }
    let nodes = cluster();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    // One seed only: the subcommands find the other masters themselves.
    let seed = format!("redis+cluster://{}", hosts[0]);
    let url = format!("redis+cluster://{}", hosts.join(","));
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, da) = hoard_on(&url).await;
    let stored = |node: &Redis| node.cli(&["DBSIZE"]).parse::<u64>().unwrap();
    let total = || nodes.iter().map(stored).sum::<u64>();
    // No warm-up: the proxy connected to the cluster before it accepted.
    let n = 30;
    for i in 0..n {
        assert_eq!(get(a, &origin.url(&format!("/c{i}"))).await.status, 200);
    }
    // A response reaches its client before its fill is committed and shared: wait (bounded)
    // for the last shares to land.
    eventually(Duration::from_secs(10), || total() == 2 * n).await;
    assert_eq!(total(), 2 * n, "a row and a row set per URL");

    let s = json(&seed, da.path(), &["stats", "--json"]).await;
    let sh = &s["shared"];
    assert_eq!(
        (&sh["rows"], &sh["urls"]),
        (&Value::from(n), &Value::from(n)),
        "{sh}"
    );
    let servers = sh["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{sh}");
    for srv in servers {
        assert!(
            srv["keys"].as_u64().unwrap() > 0,
            "every master holds some: {sh}"
        );
    }
    let v = json(&seed, da.path(), &["ls", "--tier", "shared", "--json"]).await;
    assert_eq!(v.as_array().unwrap().len() as u64, n);

    let r = json(
        &seed,
        da.path(),
        &[
            "evict",
            "--tag",
            &format!("GET {}", origin.url("/c0")),
            "--tier",
            "shared",
            "--json",
        ],
    )
    .await;
    assert_eq!(r["shared"]["rows"], 1, "{r}");
    assert!(r.get("local").is_none(), "local tier not acted on: {r}");
    let (code, text, err) = hoard_cli(&seed, da.path(), &["clear", "--tier", "all"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&format!(
            "shared: removed {} URL(s), {} key(s)",
            n - 1,
            n - 1
        )),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("local: removed")),
        "{text}"
    );
    for node in &nodes {
        assert_eq!(
            cli(node.port, &["DBSIZE"]),
            "0",
            "master {} emptied",
            node.port
        );
    }
}
