//! `--threads`, `--scheduler` and `--busy-poll` through the real binary: one thread is a
//! single-threaded runtime (polling busily after requests unless `--busy-poll 0`); more are
//! per-core single-threaded runtimes, each accepting on its own listener of the port, or
//! work-stealing workers (never polling busily); all serve misses, hits and concurrent
//! clients, and the per-core threads each take a share of the connections and stop cleanly.

use std::cell::Cell;
use std::net::SocketAddr;

use super::{Origin, get, request, stop};
use crate::proxy::harness::{admin_address, spawn_hoard_until};

/// A running `hoard serve`: the child, its proxy address, its admin address (when asked
/// for), and its cache directory.
struct Served {
    child: tokio::process::Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

/// Starts `hoard serve --threads N --scheduler S --busy-poll D` (and `--admin 127.0.0.1:0`
/// when `admin`), insisting its listening line names `flavor`.
async fn serve_with(
    threads: &str,
    scheduler: &str,
    busy_poll: &str,
    flavor: &'static str,
    admin: bool,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "-q".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--cache-dir".as_ref(),
        dir.path().as_os_str(),
        "--threads".as_ref(),
        threads.as_ref(),
        "--scheduler".as_ref(),
        scheduler.as_ref(),
        "--busy-poll".as_ref(),
        busy_poll.as_ref(),
    ];
    if admin {
        args.extend([
            std::ffi::OsStr::new("--admin"),
            std::ffi::OsStr::new("127.0.0.1:0"),
        ]);
    }
    // The listening line comes first, then (with `--admin`) the admin line.
    let listen = Cell::new(None::<SocketAddr>);
    let what = format!("`listening on ADDR (... {flavor})`");
    let (child, last) = spawn_hoard_until(args, &what, |line| {
        if let Some(rest) = line.split_once("listening on ").map(|(_, r)| r) {
            rest.ends_with(&format!("; {flavor})")).then_some(())?;
            let addr = rest.split_whitespace().next()?.parse().ok();
            listen.set(addr);
            return if admin { None } else { addr };
        }
        admin_address(line)
    })
    .await;
    Served {
        child,
        addr: listen.get().expect("the listening line"),
        admin: admin.then_some(last),
        _dir: dir,
    }
}

type Got = (u16, String, String);

/// A client's miss and then hit on `url`, each on a connection of its own, on a task.
fn miss_then_hit(addr: SocketAddr, url: String) -> tokio::task::JoinHandle<(Got, Got)> {
    tokio::spawn(async move {
        let miss = get(addr, &url, &[]).await;
        let hit = get(addr, &url, &[]).await;
        (miss, hit)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_and_several_workers_both_serve_misses_hits_and_concurrent_clients() {
    for (threads, scheduler, busy_poll, flavor) in [
        ("1", "per-core", "0", "1 thread"),
        ("1", "work-stealing", "200us", "1 thread, busy-poll 200µs"),
        ("3", "work-stealing", "200us", "3 worker threads"),
        (
            "3",
            "per-core",
            "200us",
            "3 threads, per-core, busy-poll 200µs",
        ),
        ("2", "per-core", "0", "2 threads, per-core"),
    ] {
        let origin = Origin::start().await;
        let served = serve_with(threads, scheduler, busy_poll, flavor, false).await;
        let addr = served.addr;
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
            .map(|i| miss_then_hit(addr, origin.url(&format!("/c{i}"))))
            .collect();
        for t in tasks {
            let ((miss, _, _), (hit, cs, _)) = t.await.unwrap();
            assert_eq!((miss, hit), (200, 200), "--threads {threads}");
            assert!(cs.contains("hit"), "--threads {threads}: {cs}");
        }
        assert_eq!(origin.hits(), 17, "--threads {threads}");
    }
}

/// `hoard_connections_accepted_total` by listener, from the admin server's `/metrics`.
async fn accepted_by_listener(admin: SocketAddr) -> Vec<u64> {
    let (status, _, body) = request(admin, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    let mut counts = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("hoard_connections_accepted_total{listener=\"") else {
            continue;
        };
        let (index, value) = rest.split_once("\"} ").expect("a labelled sample");
        let i: usize = index.parse().unwrap();
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] = value.trim().parse().unwrap();
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_threads_each_accept_a_share_and_the_process_stops_cleanly() {
    let origin = Origin::start().await;
    let flavor = "2 threads, per-core, busy-poll 200µs";
    let mut served = serve_with("2", "per-core", "200us", flavor, true).await;
    let admin = served.admin.expect("admin address");
    let addr = served.addr;
    // 48 connections from as many source ports (each request its own connection): the kernel
    // spreads them over both listeners by a hash of the addresses; every one is served, and
    // a URL stored through one thread's connection is a hit through the other's.
    let tasks: Vec<_> = (0..24)
        .map(|i| miss_then_hit(addr, origin.url(&format!("/p{i}"))))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let ((s1, cs1, b1), (s2, cs2, b2)) = t.await.unwrap();
        assert_eq!((s1, b1.as_str()), (200, format!("/p{i}").as_str()), "{cs1}");
        assert_eq!((s2, b2.as_str()), (200, format!("/p{i}").as_str()), "{cs2}");
        assert!(cs2.contains("hit"), "{cs2}");
    }
    assert_eq!(origin.hits(), 24);
    let counts = accepted_by_listener(admin).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 48, "{counts:?}");
    // Each listener gets about half; none at all from 48 hashed connections would be
    // (1/2)^47 by chance: a listener that never accepts.
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    // A second process on the same port is refused, not let into the group.
    let dir2 = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::from(super::hoard(dir2.path()))
        .args([
            "serve",
            "-q",
            "--threads",
            "2",
            "--scheduler",
            "per-core",
            "--listen",
        ])
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(dir2.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a second hoard joined the port");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGTERM: both threads stop accepting, connections and fills finish, a clean exit.
    stop(&mut served.child, " (per-core)").await;
}
