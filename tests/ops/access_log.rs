//! The access log through the real binary: `--access-log PATH` receives one line per
//! request, with the request's values, in text and JSON, hostile URLs escaped; SIGHUP after
//! `mv` starts a new file, a destination nobody reads never stalls requests (lines are
//! dropped and counted instead), and `--threads` is validated.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Origin, get, hoard, request, run, serve_logging, stop};

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
    let (mut child, addr) = serve_logging(dir.path(), &log, &[]).await;
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

/// Request paths a client controls, with what a text line's `uri` shows after the origin's
/// `http://127.0.0.1:PORT`: terminal escapes (CSI, as one C1 character), Unicode line breaks
/// (NEL, LINE SEPARATOR) and a quote pretending to start other fields.
const HOSTILE: &[(&str, &str)] = &[
    ("/plain", "/plain"),
    ("/csi\u{9b}31mred", "/csi\\u{9b}31mred"),
    (
        "/nel\u{85}x\u{2028}y?z=\u{2029}",
        "/nel\\u{85}x\\u{2028}y?z=\\u{2029}",
    ),
    (
        "/q\"status=500&cache_status=\"forged\"{}|^\\",
        "/q\"status=500&cache_status=\"forged\"{}|^\\",
    ),
];

/// A user agent no line may show: the access line does not hold the user agent.
const HOSTILE_AGENT: &str = "evil\"\t\u{9b}31m agent";

/// `key=value` fields of a text access line, after the target: a value is quoted (`"..."`,
/// `\"` inside) or runs to the next space.
fn text_fields(line: &str) -> BTreeMap<&str, &str> {
    let (_, mut rest) = line
        .split_once("  INFO hoard::access: ")
        .unwrap_or_else(|| panic!("not an access line: {line:?}"));
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("{rest:?} in {line:?}"));
        let end = if let Some(q) = after.strip_prefix('"') {
            let mut escaped = false;
            let close = q
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .unwrap_or_else(|| panic!("unclosed quote in {line:?}"))
                .0;
            close + 2
        } else {
            after.find(' ').unwrap_or(after.len())
        };
        assert!(
            fields.insert(key, &after[..end]).is_none(),
            "{key} twice in {line:?}"
        );
        rest = after[end..].strip_prefix(' ').unwrap_or(&after[end..]);
        assert!(
            after[end..].is_empty() || after[end..].starts_with(' '),
            "{line:?}"
        );
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_urls_make_one_escaped_line_each_in_text_and_json() {
    let origin = Origin::start().await;
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let (mut child, addr) = serve_logging(dir.path(), &log, &["--log-format", format]).await;
        // Each path twice (a miss, then a hit), then a HEAD of the first.
        let ua = [("User-Agent", HOSTILE_AGENT)];
        for (path, _) in HOSTILE {
            for _ in 0..2 {
                let (status, _, body) = request(addr, "GET", &origin.url(path), &ua).await;
                assert_eq!(status, 200, "{format} {path:?}");
                let want = path.split('?').next().unwrap();
                assert_eq!(body, want, "{format} {path:?}");
            }
        }
        assert_eq!(
            request(addr, "HEAD", &origin.url("/plain"), &ua).await.0,
            200
        );
        let n = HOSTILE.len() * 2 + 1;
        let text = wait_lines(&log, "hoard::access", n).await;
        stop(&mut child, "").await;

        assert!(text.ends_with('\n'), "{text:?}");
        let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), n, "{format}: one line per request: {text:?}");
        for raw in ['\r', '\u{1b}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}'] {
            assert!(!text.contains(raw), "{format}: raw {raw:?} in {text:?}");
        }
        assert!(!text.contains("agent"), "{format}: {text}");
        let prefix = origin.url("");
        for (i, line) in lines.iter().enumerate() {
            let (path, shown) = HOSTILE.get(i / 2).copied().unwrap_or(HOSTILE[0]);
            let head = i == n - 1;
            let body = path.split('?').next().unwrap().len();
            let (method, bytes) = if head { ("HEAD", 0) } else { ("GET", body) };
            let hit = i % 2 == 1 || head;
            let (uri, cache_status, fields) = if format == "json" {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                assert_eq!(v["target"], "hoard::access", "{line}");
                assert_eq!(v["level"], "INFO", "{line}");
                assert!(
                    v["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
                    "{line}"
                );
                assert_eq!(v["intercepted"], false, "{line}");
                assert!(
                    v["elapsed_us"].is_u64() && v["upstream_us"].is_u64(),
                    "{line}"
                );
                let fields = [
                    ("method", v["method"].as_str().unwrap().to_string()),
                    ("status", v["status"].to_string()),
                    ("bytes", v["bytes"].to_string()),
                ];
                let uri = v["uri"].as_str().unwrap().to_string();
                assert_eq!(uri, format!("{prefix}{path}"), "{line}");
                (uri, v["cache_status"].as_str().unwrap().to_string(), fields)
            } else {
                let f = text_fields(line);
                assert!(f["peer"].starts_with("127.0.0.1:"), "{line}");
                assert_eq!(f["intercepted"], "false", "{line}");
                assert!(f["elapsed_us"].parse::<u64>().is_ok(), "{line}");
                assert!(f["upstream_us"].parse::<u64>().is_ok(), "{line}");
                let cs = f["cache_status"];
                assert!(cs.starts_with('"') && cs.ends_with('"'), "{line}");
                let fields = [
                    ("method", f["method"].to_string()),
                    ("status", f["status"].to_string()),
                    ("bytes", f["bytes"].to_string()),
                ];
                let uri = f["uri"].to_string();
                assert_eq!(uri, format!("{prefix}{shown}"), "{line}");
                (uri, cs.trim_matches('"').to_string(), fields)
            };
            assert_eq!(
                fields.map(|(_, v)| v),
                [method.to_string(), "200".to_string(), bytes.to_string()],
                "{format} {uri}: {line}"
            );
            assert_eq!(
                cache_status.split("; ").nth(1) == Some("hit"),
                hit,
                "{format} {uri}: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_writes_no_access_line_to_the_file() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let (mut child, addr) = serve_logging(dir.path(), &log, &["-q"]).await;
    for _ in 0..2 {
        assert_eq!(get(addr, &origin.url("/quiet"), &[]).await.0, 200);
    }
    stop(&mut child, "").await;
    // The writer flushes at exit: an empty file means no line was ever pushed.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
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
    let admin_arg = admin.to_string();
    let (mut child, addr) = serve_logging(dir.path(), &fifo, &["--admin", &admin_arg]).await;
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
    stop(&mut child, " with a blocked access log").await;
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
