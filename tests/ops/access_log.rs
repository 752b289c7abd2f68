//! The access log through the real binary: `--access-log PATH` receives one line per
//! request, SIGHUP after `mv` starts a new file, a destination nobody reads never stalls
//! requests (lines are dropped and counted instead), and `--threads` is validated.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Origin, get, hoard, run};
use crate::proxy::harness::spawn_hoard;

/// Polls until `path` holds `n` lines containing `needle` (bounded).
async fn wait_lines(path: &Path, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().filter(|l| l.contains(needle)).count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {n} lines with {needle:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_go_to_the_file_and_a_new_file_after_mv_and_sighup() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let (mut child, addr) = spawn_hoard([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--cache-dir".as_ref(),
        dir.path().as_os_str(),
        "--access-log".as_ref(),
        log.as_os_str(),
    ])
    .await;
    for _ in 0..3 {
        assert_eq!(get(addr, &origin.url("/before"), &[]).await.0, 200);
    }
    let text = wait_lines(&log, "/before", 3).await;
    assert!(text.contains("hoard::access"), "{text}");
    assert!(text.contains("status=200"), "{text}");

    // logrotate: move the file, then signal.
    let moved = logs.path().join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the PID of a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.exists() {
        assert!(Instant::now() < deadline, "access log not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        assert_eq!(get(addr, &origin.url("/after"), &[]).await.0, 200);
    }
    let new = wait_lines(&log, "/after", 2).await;
    assert!(!new.contains("/before"), "{new}");
    let old = std::fs::read_to_string(&moved).unwrap();
    assert_eq!(old.lines().filter(|l| l.contains("/before")).count(), 3);
    assert!(!old.contains("/after"), "{old}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop hoard"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "access log is private: {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_nobody_reads_never_stalls_requests() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let fifo = logs.path().join("access.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in our temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that never reads: hoard's writes fill the pipe (64 KiB) and then block.
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (mut child, addr) = spawn_hoard([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--cache-dir".as_ref(),
        dir.path().as_os_str(),
        "--access-log".as_ref(),
        fifo.as_os_str(),
        "--admin".as_ref(),
        admin.to_string().as_ref(),
    ])
    .await;
    // Lines of about 8 KiB: 1,200 requests make 10 MB of access lines, more than the pipe
    // and the writer's 4 MiB buffer together.
    let url = origin.url(&format!("/slow-sink?{}", "q".repeat(8 * 1024)));
    assert_eq!(get(addr, &url, &[]).await.0, 200);
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..300 {
                    assert_eq!(get(addr, &url, &[]).await.0, 200);
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("requests stalled behind a blocked access log");
    let took = started.elapsed();
    let (status, _, metrics) = get(admin, &format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(status, 200);
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hoard_access_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped counter in\n{metrics}"));
    assert!(dropped > 0, "{took:?}, {metrics}");
    // A graceful stop does not wait forever for the blocked destination.
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the PID of a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("hoard did not exit after SIGTERM with a blocked access log")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_threads_and_access_log_values_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        ("--threads", "0", "invalid --threads"),
        ("--threads", "many", "invalid --threads"),
        ("--access-log", "", "invalid --access-log"),
    ] {
        let (code, _, err) = run(hoard(home.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(dir.path())
            .args([flag, value]));
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(want), "{flag} {value}: {err}");
    }
    let (code, _, err) = run(hoard(home.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(dir.path())
        .args(["--access-log", "/nonexistent-dir/access.log"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot open the access log"), "{err}");
}
