//! `hoard warm` against a real origin through the real binary: stored, then already fresh,
//! failures with their reasons, exit codes, stdin, plain progress lines off a terminal.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use super::{Origin, hoard, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fills_the_cache_through_the_proxy_and_reports_each_outcome() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--cache-dir", cache, "-q"];
    let (mut child, addr) = crate::proxy::harness::spawn_hoard(args).await;
    let proxy = format!("http://{addr}");
    let good: Vec<String> = (0..6).map(|i| origin.url(&format!("/w{i}"))).collect();
    let list = home.path().join("urls.txt");
    let mut text = format!("# warm list\n{}\n\n", good.join("\n"));
    text.push_str(&format!("{}\nnot a url\n", origin.url("/nostore")));
    std::fs::write(&list, &text).unwrap();
    let l = list.to_str().unwrap();

    let (code, out, err) = tokio::task::block_in_place(|| {
        run(hoard(home.path()).args(["warm", l, "--proxy", &proxy, "--concurrency", "3"]))
    });
    assert_eq!(code, 1, "one failure makes exit 1: {out}{err}");
    assert!(
        out.contains("8 URL(s)") && out.contains("6 stored, 0 already fresh, 2 failed"),
        "{out}"
    );
    assert!(
        out.contains(&format!("failed  {}: not stored (", origin.url("/nostore"))),
        "{out}"
    );
    assert!(
        out.contains("failed  not a url: not an absolute http(s) URL"),
        "{out}"
    );
    // Not a terminal: plain progress lines, the last one complete.
    assert!(
        err.lines()
            .any(|l| l == "warm: 8/8 done (stored 6, already fresh 0, failed 2)"),
        "{err}"
    );
    assert_eq!(origin.hits(), 7);

    // Again, from stdin, only the good ones: all already fresh, exit 0, the origin not asked.
    let out = tokio::task::block_in_place(|| {
        let mut c = hoard(home.path())
            .args(["warm", "-", "--proxy", &proxy, "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(good.join("\n").as_bytes())
            .unwrap();
        c.wait_with_output().unwrap()
    });
    assert_eq!(out.status.code(), Some(0));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["stored"].as_u64(), r["already_fresh"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );
    assert_eq!(origin.hits(), 7);

    // A proxy that is not there: every URL fails with the reason.
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let (code, out, _) = tokio::task::block_in_place(|| {
        run(hoard(home.path()).args(["warm", l, "--proxy", &proxy, "--timeout", "5s"]))
    });
    assert_eq!(code, 1);
    assert!(
        out.contains("0 stored") && out.contains("proxy: connect"),
        "{out}"
    );
}

/// A chunked body over 64 KiB is sent before the proxy knows whether it fits
/// `max-object-size` (`detail=unknown-length`): `warm` asks again with `only-if-cached` and
/// counts it stored when it was, failed when it was not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_confirms_a_chunked_body_of_unknown_length_with_only_if_cached() {
    use crate::proxy::harness::chunked;
    let origin = crate::support::Origin::start(|req| {
        let kib = if req.uri().path() == "/fits" { 96 } else { 200 };
        let chunks = (0..kib / 16)
            .map(|i| bytes::Bytes::from(vec![b'a' + i as u8; 16 << 10]))
            .collect();
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(chunked(chunks))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        cache,
        "-q",
        "--max-object-size",
        "128KiB",
    ];
    let (_child, addr) = crate::proxy::harness::spawn_hoard(args).await;
    let proxy = format!("http://{addr}");
    let (fits, over) = (origin.url("/fits"), origin.url("/over"));
    let list = home.path().join("urls.txt");
    std::fs::write(&list, format!("{fits}\n{over}\n")).unwrap();
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(hoard(home.path()).args(["warm", list.to_str().unwrap(), "--proxy", &proxy]))
    });
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("1 stored, 0 already fresh, 1 failed"),
        "{out}{err}"
    );
    assert!(
        out.contains(&format!("failed  {over}: not stored (")) && out.contains("unknown-length"),
        "{out}"
    );
    // Each fetched once: the confirmations were answered from the cache or with a 504.
    assert_eq!(origin.hits(), 2);
}
