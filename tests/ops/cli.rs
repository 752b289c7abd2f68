//! Every subcommand on a store filled by a real proxy: output, `--json`, exit codes.

use serde_json::Value;

use super::{Origin, get, hoard, proxy, run};

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_on_a_store_filled_by_the_proxy() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // tempdir() is 0755, which `check` reports (hostile::files covers that).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let p = proxy(dir.path(), |_| {}).await;
    let a = origin.url("/a");
    for url in [&a, &origin.url("/b")] {
        let (s, cs, _) = get(p.local_addr(), url, &[]).await;
        assert_eq!((s, cs.contains("stored")), (200, true), "{cs}");
    }
    for enc in ["gzip", "br"] {
        get(
            p.local_addr(),
            &origin.url("/vary"),
            &[("accept-encoding", enc)],
        )
        .await;
    }
    assert_eq!(
        get(p.local_addr(), &a, &[])
            .await
            .1
            .split(';')
            .nth(1)
            .unwrap()
            .trim(),
        "hit"
    );

    // While the proxy runs on the same directory.
    let (code, out, err) = run(hoard(home.path()).args(["ls", "--json", "--cache-dir", &cache]));
    assert_eq!(code, 0, "{err}");
    let ls = json(&out);
    let rows = ls.as_array().unwrap();
    let urls: Vec<&str> = rows.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        vec![a.as_str(), &origin.url("/b"), &origin.url("/vary")]
    );
    assert_eq!(rows[2]["variants"], 2);
    assert_eq!(rows[0]["status"], 200);
    assert!(rows.iter().all(|r| r["tier"] == "local"), "{ls}");
    p.shutdown().await;

    let (code, out, _) = run(hoard(home.path()).args(["stats", "--json", "--cache-dir", &cache]));
    assert_eq!(code, 0);
    let st = json(&out);
    assert_eq!(st["urls"], 3);
    assert_eq!(st["entries"], 5, "2 plain + vary index + 2 variants: {st}");
    assert!(
        st.get("shared").is_none(),
        "no shared tier configured: {st}"
    );
    assert_eq!(st["top_hosts"][0]["host"], origin.addr.to_string());
    assert!(st["hits"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["hit_ratio"].as_f64().is_some(), "{st}");
    let (code, out, _) = run(hoard(home.path()).args(["stats", "--cache-dir", &cache]));
    assert_eq!(code, 0);
    assert!(out.contains("3 URLs") && out.contains("hit ratio"), "{out}");

    let cases: &[(&[&str], usize)] = &[
        (&["ls", "--json", "--host", "127.0.0.1"], 3),
        (&["ls", "--json", "--host", &origin.addr.to_string()], 3),
        (&["ls", "--json", "--host", "127.0.0.1:1"], 0),
        (&["ls", "--json", "--host", "elsewhere.example"], 0),
    ];
    for (args, n) in cases {
        let (code, out, _) = run(hoard(home.path()).args(*args).args(["--cache-dir", &cache]));
        assert_eq!(code, 0);
        assert_eq!(json(&out).as_array().unwrap().len(), *n, "{args:?}");
    }
    let (_, out, _) = run(hoard(home.path()).args(["ls", "--cache-dir", &cache]));
    assert!(out.starts_with("STATUS") && out.contains(&a), "{out}");

    let (code, out, _) =
        run(hoard(home.path()).args(["show", "--json", "--cache-dir", &cache, &a]));
    assert_eq!(code, 0);
    let show = json(&out);
    assert!(
        show["cache_status"]
            .as_str()
            .unwrap()
            .starts_with("hoard; hit; ttl="),
        "{show}"
    );
    assert_eq!(show["variants"][0]["status"], 200);
    assert_eq!(show["variants"][0]["fresh"], true);
    let (code, out, _) = run(hoard(home.path()).args([
        "show",
        "--json",
        "--cache-dir",
        &cache,
        &origin.url("/vary"),
    ]));
    assert_eq!(code, 0);
    let show = json(&out);
    assert_eq!(show["vary"][0], "accept-encoding");
    assert_eq!(show["variants"].as_array().unwrap().len(), 2);
    assert_eq!(show["cache_status"], "hoard; fwd=vary-miss");
    let (code, out, _) = run(hoard(home.path()).args(["show", "--cache-dir", &cache, &a]));
    assert_eq!(code, 0);
    assert!(out.contains("status         200"), "{out}");

    // Exit codes: 0 removed / 1 nothing there / 2 usage.
    let cases: &[(&[&str], i32)] = &[
        (&["show", &origin.url("/never")], 1),
        (&["show", "not a url"], 2),
        (&["purge", &a], 0),
        (&["purge", &a], 1),
        (&["purge", "ftp://x/"], 2),
        (&["purge", "--json", &origin.url("/vary")], 0),
        (&["evict", "--tag", "no such tag"], 1),
        (&["evict"], 2),
        (&["check"], 0),
        (&["evict", "--host", "127.0.0.1:1"], 1),
        (&["evict", "--host", &origin.addr.to_string()], 0),
        // No shared tier configured: asking for it is a usage error, the local one is the default.
        (&["ls", "--tier", "shared"], 2),
        (&["evict", "--tag", "x", "--tier", "all"], 2),
        (&["clear", "--tier", "shared"], 2),
        (&["ls", "--tier", "nowhere"], 2),
        (&["expire", "--json"], 0),
        (&["clear"], 0),
        (&["check", "--fix", "--json"], 0),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(hoard(home.path()).args(*args).args(["--cache-dir", &cache]));
        assert_eq!(code, *want, "{args:?}: {out} {err}");
        if args.contains(&"--json") {
            json(&out);
        }
    }
    let (_, out, _) = run(hoard(home.path()).args(["ls", "--json", "--cache-dir", &cache]));
    assert_eq!(json(&out), serde_json::json!([]));
    // A --cache-dir without a cache is an error (3), not a new empty cache.
    let missing = dir.path().join("typo");
    let (code, _, err) =
        run(hoard(home.path()).args(["stats", "--cache-dir", missing.to_str().unwrap()]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no cache in") && !missing.exists(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_missing_value_file_and_fix_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    {
        let c = hoard::store::Cache::open(dir.path()).unwrap();
        c.set(
            b"GET http://x.example/big",
            &vec![7u8; 100_000],
            None,
            Some("GET http://x.example/big"),
        )
        .unwrap();
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "val") {
                files.push(p);
            }
        }
    }
    assert_eq!(files.len(), 1);
    std::fs::remove_file(&files[0]).unwrap();
    let cases: &[(&[&str], i32)] = &[(&["check"], 1), (&["check", "--fix"], 0), (&["check"], 0)];
    for (args, want) in cases {
        let (code, out, err) = run(hoard(home.path()).args(*args).args(["--cache-dir", &cache]));
        assert_eq!(code, *want, "{args:?}: {out} {err}");
    }
}

/// `hoard purge` is another process: the running proxy's in-memory front must not serve the
/// purged entry, however long its `memory_cache_ttl` (the store's change stamps say so at once).
#[tokio::test]
async fn a_cli_purge_is_seen_by_a_running_proxy_at_once() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = proxy(dir.path(), |c| {
        c.memory_cache_ttl = std::time::Duration::from_secs(3600);
    })
    .await;
    if !dir.path().join("cache.gen").exists() {
        // A copy-on-write filesystem (btrfs, ZFS): no change stamps; the TTL is the bound.
        return;
    }
    for path in ["/p", "/vary"] {
        let url = origin.url(path);
        get(p.local_addr(), &url, &[]).await;
        let (_, cs, _) = get(p.local_addr(), &url, &[]).await;
        assert!(cs.contains("hit"), "{path}: {cs}");
        let before = origin.hits();
        let (code, out, err) = run(hoard(home.path()).args([
            "purge",
            "--cache-dir",
            dir.path().to_str().unwrap(),
            &url,
        ]));
        assert_eq!(code, 0, "{out} {err}");
        let (status, cs, body) = get(p.local_addr(), &url, &[]).await;
        assert_eq!((status, body.as_str()), (200, path));
        assert!(!cs.contains("hit"), "{path}: served after the purge: {cs}");
        assert_eq!(origin.hits(), before + 1, "{path}");
    }
}

/// Issue 17: `hoard stats` right after hits served by a freshly started proxy (the second
/// one from its in-memory front) counts them, and the counts survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_hit_the_proxy_served_across_restarts() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let stats = || {
        let (code, out, err) =
            run(hoard(home.path()).args(["stats", "--json", "--cache-dir", &cache]));
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    // Counts reach the served file within milliseconds of the response: poll, bounded.
    let wait_for = |hits: u64, misses: u64| {
        let mut st = stats();
        for _ in 0..40 {
            if st["hits"] == hits && st["misses"] == misses {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            st = stats();
        }
        st
    };
    let url = origin.url("/s");
    for round in 0..2u64 {
        let args = ["--listen", "127.0.0.1:0", "--cache-dir", &cache, "-q"];
        let (mut child, addr) = crate::proxy::harness::spawn_hoard(args).await;
        let want: &[&str] = if round == 0 {
            &["fwd=uri-miss", "hit", "hit"]
        } else {
            &["hit", "hit"]
        };
        for w in want {
            let (s, cs, body) = get(addr, &url, &[]).await;
            assert_eq!((s, body.as_str()), (200, "/s"));
            assert!(cs.contains(&format!("; {w}")), "{cs}");
        }
        let st = wait_for(2 + 2 * round, 1);
        assert_eq!(
            (st["hits"].as_u64(), st["misses"].as_u64()),
            (Some(2 + 2 * round), Some(1)),
            "{st}"
        );
        assert_eq!(st["cache_bytes"], 2 * (2 + 2 * round), "{st}");
        let ratio = st["hit_ratio"].as_f64().unwrap();
        assert!(
            (ratio - (2 + 2 * round) as f64 / (3 + 2 * round) as f64).abs() < 1e-9,
            "{st}"
        );
        child.kill().await.unwrap();
        let _ = child.wait().await;
    }
    assert_eq!(origin.hits(), 1);
    let (code, out, _) = run(hoard(home.path()).args(["stats", "--cache-dir", &cache]));
    assert_eq!(code, 0);
    assert!(
        out.contains("hit ratio   80.0% (4 of 5 cacheable requests"),
        "{out}"
    );
}

/// Issue 17: `hoard stats` counts the rows the store culled to stay within its size limit
/// (a proxy fill of a store too small for it), in JSON and in its text output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_evictions_after_a_size_limited_fill() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let p = proxy(dir.path(), |c| c.size_limit = 96 << 10).await;
    let urls = 300u64;
    for i in 0..urls {
        let (status, cs, _) = get(p.local_addr(), &origin.url(&format!("/bin{i}")), &[]).await;
        assert_eq!(status, 200);
        assert!(cs.contains("stored"), "{cs}");
    }
    let (code, out, err) = run(hoard(home.path()).args(["stats", "--json", "--cache-dir", &cache]));
    assert_eq!(code, 0, "{err}");
    let st = json(&out);
    let culled = st["evictions"]["culled"].as_u64().unwrap();
    let entries = st["entries"].as_u64().unwrap();
    assert!(entries < urls, "{st}");
    // Every URL row missing was culled (a directory lease row may have been too).
    assert!(culled >= urls - entries, "{st}");
    assert_eq!(st["evictions"]["expired"], 0, "{st}");
    let (code, out, _) = run(hoard(home.path()).args(["stats", "--cache-dir", &cache]));
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "evictions   {culled} culled (size limit), 0 expired"
        )),
        "{out}"
    );
}
