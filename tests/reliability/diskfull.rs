//! A cache directory that refuses writes (disk full, read-only): responses pass through
//! uncached with exact bodies, `Cache-Status` says why nothing was stored, the proxy logs one
//! line when writes start failing and one when they work again, and caching resumes on its
//! own. Injected faults (`inject_write_fault`) make this exact in-process; a real 2 MiB tmpfs
//! run of the binary checks the same with a kernel ENOSPC (skipped if mounting is refused).

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoard::store::inject_write_fault;

use crate::proxy::harness::{CacheStatus, Origin, full, get, start_proxy_in};

/// `/big/...` bodies go to value files, `/small/...` bodies inline.
fn body_for(path: &str) -> Vec<u8> {
    let len = if path.starts_with("/big") {
        100_000
    } else {
        300
    };
    let h = path
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| h.wrapping_add((i % 251) as u8)).collect()
}

async fn origin() -> Origin {
    Origin::start(|req| {
        let body = body_for(req.uri().path());
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-length", body.len())
            .body(full(body))
            .unwrap()
    })
    .await
}

/// Requests fresh URLs (bounded) until one is stored, then checks it is a hit.
async fn until_stored(proxy: std::net::SocketAddr, origin: &Origin, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        assert!(Instant::now() < deadline, "caching did not resume");
        let path = format!("{prefix}/resume-{i}");
        let r = get(proxy, &origin.url(&path)).await;
        assert_eq!(r.body, body_for(&path));
        if r.cache_status().stored {
            // The fill commits after the body ends: poll for the hit (bounded).
            for _ in 0..200 {
                if get(proxy, &origin.url(&path)).await.cache_status().hit {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{path} said stored but never became a hit");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn passes_through_while_unwritable(kind: ErrorKind, dir: &Path) {
    let origin = origin().await;
    let (_h, proxy) = start_proxy_in(dir, None, |c| c.memory_cache_size = 0).await;
    inject_write_fault(dir, Some(kind));
    for prefix in ["/big", "/small"] {
        for i in 0..5 {
            let path = format!("{prefix}/{i}");
            let r = get(proxy, &origin.url(&path)).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(
                r.body,
                body_for(&path),
                "{path}: exact body while unwritable"
            );
            let cs = r.cache_status();
            assert!(!cs.hit, "{path}");
            if prefix == "/small" {
                // The first failure switched the proxy to pass-through.
                assert!(!cs.stored, "{path}: {}", cs.raw);
                assert!(cs.raw.contains("store-unavailable"), "{}", cs.raw);
            }
        }
    }
    // Nothing was stored: the same URLs go to the origin again.
    let before = origin.hits();
    let r = get(proxy, &origin.url("/big/0")).await;
    assert_eq!(r.body, body_for("/big/0"));
    assert_eq!(origin.hits(), before + 1);
    // Space returns: after at most one probe interval, responses are stored again.
    inject_write_fault(dir, None);
    until_stored(proxy, &origin, "/big").await;
    until_stored(proxy, &origin, "/small").await;
    let cache = hoard::store::Cache::open(dir).unwrap();
    assert!(cache.check(false).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_passes_through_uncached_and_caching_resumes() {
    let dir = tempfile::tempdir().unwrap();
    passes_through_while_unwritable(ErrorKind::StorageFull, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_cache_dir_passes_through_and_caching_resumes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Let the proxy create its layout first, then take write permission away.
    hoard::store::Cache::open(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let set = |mode| {
        for d in [dir.path().to_path_buf(), dir.path().join("tmp")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set(0o555);
    let enforced = std::fs::write(dir.path().join("tmp/probe"), b"x").is_err();
    if !enforced {
        // Root ignores permissions: the injected fault stands in for EROFS/EACCES.
        eprintln!("read-only test: permissions not enforced (root), using an injected fault");
        let _ = std::fs::remove_file(dir.path().join("tmp/probe"));
        passes_through_while_unwritable(ErrorKind::ReadOnlyFilesystem, dir.path()).await;
    } else {
        passes_through_while_unwritable(ErrorKind::PermissionDenied, dir.path()).await;
    }
    set(0o755);
}

/// Runs `mount -t tmpfs` on `at`; false (and a message) when the sandbox refuses.
fn mount_tmpfs(at: &Path, size: &str) -> bool {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED real disk-full test: cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN)"
        );
    }
    ok
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_full_tmpfs_passes_through_logs_once_and_resumes() {
    let mnt = tempfile::tempdir().unwrap();
    if !mount_tmpfs(mnt.path(), "3m") {
        return;
    }
    let _unmount = Unmount(mnt.path());
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    let cache_dir = mnt.path().join("cache");
    let log = tempfile::NamedTempFile::new().unwrap();
    let origin = origin().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_hoard"))
            .args(["--listen", &proxy.to_string()])
            .args(["--upstream", &format!("http://{}", origin.addr)])
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(["--memory-cache-size", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(proxy).is_err() {
        assert!(Instant::now() < deadline, "hoard did not start");
        assert!(child.0.try_wait().unwrap().is_none(), "hoard exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = super::direct_client();
    let fetch = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{proxy}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let cs = CacheStatus::from_headers(r.headers());
            let b = r.bytes().await.unwrap();
            assert!(b[..] == body_for(&path)[..], "{path}: exact body");
            cs
        }
    };
    // 20 x 100 KB into ~1 MiB of free space: the disk fills part way through.
    let mut unstored = 0;
    for i in 0..20 {
        if !fetch(format!("/big/{i}")).await.stored {
            unstored += 1;
        }
    }
    assert!(unstored > 0, "the tmpfs filled up");
    let text = std::fs::read_to_string(log.path()).unwrap();
    let failing = text.matches("refuses writes").count();
    assert_eq!(
        failing, 1,
        "one log line when writes start failing:\n{text}"
    );
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "caching did not resume:\n{text}");
        let path = format!("/small/after-{i}");
        i += 1;
        if fetch(path.clone()).await.stored {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if fetch(path).await.hit {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(text.matches("refuses writes").count(), 1, "{text}");
    assert_eq!(text.matches("caching resumed").count(), 1, "{text}");
    drop(child);
}
