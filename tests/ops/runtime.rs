//! `--threads` and `--busy-poll` through the real binary: one worker is a single-threaded
//! runtime (polling busily after requests unless `--busy-poll 0`), more are work-stealing
//! workers (never polling busily); all serve misses, hits and concurrent keep-alive clients.

use super::{Origin, get};
use crate::proxy::harness::spawn_hoard_until;

/// Starts `hoard serve --threads N --busy-poll D`, insisting its listening line names `flavor`.
async fn serve_with(
    threads: &str,
    busy_poll: &str,
    flavor: &'static str,
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "serve".as_ref(),
        "-q".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--cache-dir".as_ref(),
        dir.path().as_os_str(),
        "--threads".as_ref(),
        threads.as_ref(),
        "--busy-poll".as_ref(),
        busy_poll.as_ref(),
    ];
    let what = format!("`listening on ADDR (... {flavor})`");
    let (child, addr) = spawn_hoard_until(args, &what, |line| {
        let rest = line.split_once("listening on ")?.1;
        rest.ends_with(&format!("; {flavor})")).then_some(())?;
        rest.split_whitespace().next()?.parse().ok()
    })
    .await;
    (child, addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_and_several_workers_both_serve_misses_hits_and_concurrent_clients() {
    for (threads, busy_poll, flavor) in [
        ("1", "0", "1 thread"),
        ("1", "200us", "1 thread, busy-poll 200µs"),
        ("3", "200us", "3 worker threads"),
    ] {
        let origin = Origin::start().await;
        let (_child, addr, _dir) = serve_with(threads, busy_poll, flavor).await;
        let url = origin.url("/one");
        let (status, cs, body) = get(addr, &url, &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "/one"),
            "--threads {threads}"
        );
        assert!(cs.contains("fwd=uri-miss"), "--threads {threads}: {cs}");
        let (_, cs, _) = get(addr, &url, &[]).await;
        assert!(cs.contains("hit"), "--threads {threads}: {cs}");
        // 16 clients at once, each a miss then a hit on its own URL.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let url = origin.url(&format!("/c{i}"));
                tokio::spawn(async move {
                    let miss = get(addr, &url, &[]).await;
                    let hit = get(addr, &url, &[]).await;
                    (miss.0, hit.0, hit.1)
                })
            })
            .collect();
        for t in tasks {
            let (miss, hit, cs) = t.await.unwrap();
            assert_eq!((miss, hit), (200, 200), "--threads {threads}");
            assert!(cs.contains("hit"), "--threads {threads}: {cs}");
        }
        assert_eq!(origin.hits(), 17, "--threads {threads}");
    }
}
