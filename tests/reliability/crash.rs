//! Crash loop: the real `hoard` binary (gateway mode) serves and stores under concurrent load
//! and is killed with SIGKILL at a random moment, [`ROUNDS`] times. After every kill the store
//! opens, `integrity_check` is ok, no row lacks its value file, and every body any later proxy
//! serves equals the origin's bytes (checked in full, not only its length); `hoard check --fix`
//! then leaves nothing for `check` to find.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hoard::store::Cache;

use crate::proxy::harness::{CacheStatus, Origin, full};

const ROUNDS: usize = 20;
/// Distinct URLs: more than fit under the size limit, so eviction runs too.
const URLS: u32 = 300;
const CLIENTS: usize = 12;
/// Bounds the whole test.
const BUDGET: Duration = Duration::from_secs(150);

/// The body of `/obj/<n>`: one in four is over 32 KiB (a value file), the rest inline.
fn body_for(n: u32) -> Vec<u8> {
    let len = if n.is_multiple_of(4) {
        40_000 + (n as usize * 997) % 60_000
    } else {
        100 + (n as usize * 131) % 5_000
    };
    let seed = n.wrapping_mul(2_654_435_761);
    (0..len)
        .map(|i| (seed as usize).wrapping_add(i * 7 + i / 253) as u8)
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_hoard(dir: &Path, origin: SocketAddr) -> (Child, SocketAddr) {
    for _ in 0..5 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hoard"))
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &format!("http://{origin}")])
            .arg("--cache-dir")
            .arg(dir)
            .args(["--size-limit", "4MiB", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hoard");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return (child, addr);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken meanwhile: try another
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("hoard did not start");
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    hits: AtomicUsize,
    /// Bodies that ended in an error because the process died mid-response.
    cut: AtomicUsize,
    /// Requests that found no process (between the kill and the end of the round).
    refused: AtomicUsize,
}

/// GETs random URLs until `stop`, asserting that every complete body is exactly right.
async fn load(proxy: SocketAddr, seed: u64, stop: Instant, tally: Arc<Tally>) {
    let client = super::direct_client();
    let mut rng = fastrand::Rng::with_seed(seed);
    while Instant::now() < stop {
        let n = rng.u32(0..URLS);
        let res = match client.get(format!("http://{proxy}/obj/{n}")).send().await {
            Ok(r) => r,
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        assert_eq!(res.status(), 200, "/obj/{n}");
        let hit = CacheStatus::from_headers(res.headers()).hit;
        match res.bytes().await {
            // A body cut by the kill is an error here, never a short success.
            Err(_) => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
            Ok(b) => {
                assert!(
                    b[..] == body_for(n)[..],
                    "/obj/{n}: {} bytes served (hit: {hit}), want {} and the origin's bytes",
                    b.len(),
                    body_for(n).len()
                );
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if hit {
                    tally.hits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The store opens, is intact, and has no row without its file; returns check's findings
/// (orphan value files of a write the kill interrupted are allowed until `--fix`).
fn assert_store_intact(dir: &Path, round: usize) -> Vec<String> {
    let cache = Cache::open(dir).unwrap_or_else(|e| panic!("round {round}: store opens: {e}"));
    let problems = cache.check(false).unwrap();
    let conn = rusqlite::Connection::open(dir.join("cache.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "round {round}");
    for p in &problems {
        assert!(
            p.starts_with("orphan value file"),
            "round {round}: unexpected problem after SIGKILL: {p} (all: {problems:#?})"
        );
    }
    problems
}

fn hoard_check(dir: &Path, fix: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoard"));
    cmd.arg("check").arg("--cache-dir").arg(dir);
    if fix {
        cmd.arg("--fix");
    }
    let out = cmd.output().expect("run hoard check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_crash_loop_leaves_an_intact_store_and_exact_bodies() {
    let started = Instant::now();
    let origin = Origin::start(|req| {
        let n: u32 = req
            .uri()
            .path()
            .strip_prefix("/obj/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = body_for(n);
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-length", body.len())
            .body(full(body))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed_c4a5);
    let tally = Arc::new(Tally::default());
    let mut orphans_seen = 0;
    for round in 0..ROUNDS {
        assert!(
            started.elapsed() < BUDGET,
            "crash loop over its time budget"
        );
        let (mut child, proxy) = spawn_hoard(dir.path(), origin.addr);
        let kill_after = Duration::from_millis(rng.u64(100..900));
        let stop = Instant::now() + kill_after + Duration::from_millis(200);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(load(proxy, (round * 100 + c) as u64, stop, tally.clone())))
            .collect();
        tokio::time::sleep(kill_after).await;
        child.kill().expect("SIGKILL hoard"); // Child::kill is SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: hoard was killed");
        for c in clients {
            c.await.expect("client task (a wrong body panics)");
        }
        let dirp = dir.path().to_path_buf();
        let found = tokio::task::spawn_blocking(move || assert_store_intact(&dirp, round))
            .await
            .unwrap();
        orphans_seen += found.len();
    }
    // Serve everything once more from a fresh process: every stored body must be exact.
    let (mut child, proxy) = spawn_hoard(dir.path(), origin.addr);
    let before = tally.hits.load(Ordering::Relaxed);
    let client = super::direct_client();
    for n in 0..URLS {
        let res = client
            .get(format!("http://{proxy}/obj/{n}"))
            .send()
            .await
            .unwrap();
        let hit = CacheStatus::from_headers(res.headers()).hit;
        let b = res.bytes().await.unwrap();
        assert!(b[..] == body_for(n)[..], "/obj/{n} after the crash loop");
        if hit {
            tally.hits.fetch_add(1, Ordering::Relaxed);
        }
    }
    let final_hits = tally.hits.load(Ordering::Relaxed) - before;
    child.kill().unwrap();
    child.wait().unwrap();
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (_, _) = hoard_check(&d, true);
        let (ok, out) = hoard_check(&d, false);
        assert!(ok, "hoard check after --fix: {out}");
        let cache = Cache::open(&d).unwrap();
        assert!(cache.check(false).unwrap().is_empty());
    })
    .await
    .unwrap();
    let (ok, hits, cut, refused) = (
        tally.ok.load(Ordering::Relaxed),
        tally.hits.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "crash loop: {ROUNDS} kills, {ok} exact bodies ({hits} hits), {cut} cut by kills, \
         {refused} refused while down, \
         {orphans_seen} orphan files found before --fix, {final_hits}/{URLS} hits at the end, {:?}",
        started.elapsed()
    );
    assert!(hits > 0, "some bodies were served from the store");
    assert!(
        final_hits > 0,
        "the store survived the crashes with entries"
    );
}
