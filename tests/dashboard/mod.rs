//! The admin dashboard in real headless Chromium, driven over the DevTools protocol
//! (`--remote-debugging-pipe`: NUL-separated JSON on file descriptors 3 and 4), against the
//! real binary in front of a loopback origin: rows appear as requests flow, counters move,
//! and Purge removes the entry from the store. Also the event stream and purge guards
//! without a browser. `screenshot.rs` drives the same browser to make the README's image.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ops::{Origin, get, hoard, request, run};
use crate::proxy::harness::IO_TIMEOUT;

mod hosts;
mod listing;
mod screenshot;

/// A headless Chromium with one page, driven over `--remote-debugging-pipe`.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch() -> Browser {
        Browser::launch_with(&[])
    }

    /// With `extra` flags after the usual ones (a repeated flag replaces the earlier one).
    fn launch_with(extra: &[&str]) -> Browser {
        let exe = crate::support::chromium::binary();
        let profile = tempfile::tempdir().unwrap();
        let (cmd_r, cmd_w) = pipe(); // we write commands, Chromium reads fd 3
        let (res_r, res_w) = pipe(); // Chromium writes fd 4, we read
        let (cr, rw) = (
            std::os::fd::AsRawFd::as_raw_fd(&cmd_r),
            std::os::fd::AsRawFd::as_raw_fd(&res_w),
        );
        let mut cmd = Command::new(&exe);
        cmd.args(crate::support::chromium::FLAGS)
            .args(extra)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        drop((cmd_r, res_w));
        let (tx, rx) = mpsc::channel();
        let reader = std::fs::File::from(res_r);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        msg.pop_if(|b| *b == 0);
                        if let Ok(v) = serde_json::from_slice::<Value>(&msg)
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(cmd_w),
            from: rx,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().expect("targetId").to_string();
        let att = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = att["sessionId"].as_str().expect("sessionId").to_string();
        b
    }

    /// One DevTools command; its `result` (panics on an error or after 20 s).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to Chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer to {method} from Chromium: {e}"));
            if v["id"] == json!(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluate `js` in the page (promises awaited); its value.
    fn eval(&mut self, js: &str) -> Value {
        let s = self.session.clone();
        let r = self.call(
            Some(&s),
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{js} threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Lay the page out in a `width` x `height` viewport (CSS pixels, scale 1).
    fn set_viewport(&mut self, width: u32, height: u32) {
        let s = self.session.clone();
        self.call(
            Some(&s),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// The viewport as PNG (`Page.captureScreenshot`), base64 of the protocol decoded.
    fn screenshot_png(&mut self) -> Vec<u8> {
        let s = self.session.clone();
        let r = self.call(Some(&s), "Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }

    fn navigate(&mut self, url: &str) {
        let s = self.session.clone();
        self.call(Some(&s), "Page.navigate", json!({"url": url}));
    }

    /// Evaluate `js` until it returns true (bounded: 15 s); panics with `what` otherwise.
    fn wait_for(&mut self, js: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let guarded =
                format!("(() => {{ try {{ return !!({js}) }} catch (_) {{ return false }} }})()");
            if self.eval(&guarded) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let dom = self.eval("document.body ? document.body.innerText : ''");
                panic!("timed out waiting for {what}; page text:\n{dom}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Standard base64 (with or without padding), as `Page.captureScreenshot` returns its image.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        (match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }) as u32
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() / 4 * 3 + 2);
    for quad in digits.chunks(4) {
        let n = quad
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (value(c) << (18 - 6 * i)));
        // 4 digits carry 3 bytes, 3 carry 2, 2 carry 1.
        out.extend_from_slice(&n.to_be_bytes()[1..quad.len()]);
    }
    out
}

#[test]
fn base64_decodes_every_length() {
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("aGkh"), b"hi!");
    assert_eq!(base64_decode("aA=="), b"h");
    assert_eq!(base64_decode("+/8A"), [0xfb, 0xff, 0x00]);
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary with `--admin` and `extra` options: (child, proxy address, admin address).
async fn spawn_with_admin(
    cache: &str,
    extra: &[String],
) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--cache-dir", cache])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hoard");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut proxy, mut admin) = (None, None);
    tokio::time::timeout(IO_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, rest)) = line.split_once("listening on ") {
                proxy = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(a) = crate::proxy::harness::admin_address(&line) {
                admin = Some(a);
                return;
            }
        }
    })
    .await
    .expect("hoard prints its addresses");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (
        child,
        proxy.expect("proxy address"),
        admin.expect("admin address"),
    )
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shows_live_requests_and_purges() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    // Rows culled before the proxy starts (a store too small for its fill): the store
    // panel shows their count. The limit is put back and the rows cleared, so the
    // proxy's own fills cull nothing more.
    let culled = {
        let c = hoard::store::Cache::builder(dir.path())
            .size_limit(128 << 10)
            .open()
            .unwrap();
        for i in 0..200u32 {
            c.set(format!("fill:{i}").as_bytes(), &[0u8; 2048], None, None)
                .unwrap();
        }
        c.configure(|s| s.size_limit = 1 << 30).unwrap();
        c.clear().unwrap();
        c.evictions().unwrap().culled
    };
    assert!(culled > 0);
    let (mut child, proxy, admin) = spawn_with_admin(&cache, &[]).await;
    let (d1, d2) = (origin.url("/d1"), origin.url("/d2"));
    assert!(get(proxy, &d1, &[]).await.1.contains("stored"));

    let page = format!("http://{admin}/");
    let (d1c, d2c) = (d1.clone(), d2.clone());
    let mut browser = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.navigate(&page);
        b.wait_for(
            "document.getElementById('conn').textContent === 'live'",
            "the event stream",
        );
        b.wait_for(
            &format!(
                "document.getElementById('s-evictions').textContent === \
                 '{culled} ({culled} over the size limit, 0 expired)'"
            ),
            "the store's eviction count",
        );
        b
    })
    .await
    .unwrap();
    let before: u64 = {
        let v = tokio::task::block_in_place(|| {
            browser.eval("Number(document.getElementById('c-requests').textContent)")
        });
        v.as_u64().unwrap_or(0)
    };

    // Requests flow while the page is open.
    for url in [&d1, &d2, &d2] {
        assert_eq!(get(proxy, url, &[]).await.0, 200);
    }

    let browser = tokio::task::spawn_blocking(move || {
        let b = &mut browser;
        b.wait_for(
            &format!(
                "[...document.querySelectorAll('#feed tbody tr')].some(r => \
                 r.dataset.url === {} && r.dataset.outcome === 'hit')",
                js_str(&d2c)
            ),
            "a hit row for /d2 in the feed",
        );
        b.wait_for(
            &format!(
                "Number(document.getElementById('c-requests').textContent) >= {} && \
                 Number(document.getElementById('c-hits').textContent) >= 2",
                before + 3
            ),
            "the counters to move",
        );
        let rows = b.eval("document.querySelectorAll('#feed tbody tr').length");
        assert!(rows.as_u64().unwrap() >= 3, "{rows}");
        // The filter hides what does not match.
        b.eval(
            "(() => { const s = document.getElementById('f-outcome'); s.value = 'hit'; \
             s.dispatchEvent(new Event('change')); return true })()",
        );
        assert_eq!(
            b.eval(
                "[...document.querySelectorAll('#feed tbody tr')].every(r => \
                 r.hidden === (r.dataset.outcome !== 'hit'))"
            ),
            json!(true)
        );

        // Search the stored URLs and purge /d1.
        b.eval(&format!(
            "(() => {{ document.getElementById('u-q').value = {}; \
             document.getElementById('url-search').requestSubmit(); return true }})()",
            js_str(&format!("{}/d1", d1c.trim_end_matches("/d1")))
        ));
        let button = format!(
            "[...document.querySelectorAll('#urls button.purge')].find(b => b.dataset.url === {})",
            js_str(&d1c)
        );
        b.wait_for(
            "document.getElementById('url-state').textContent === '1 stored URL'",
            "the search",
        );
        b.wait_for(&format!("!!{button}"), "the Purge button of /d1");
        // Keyboard reachable: the button takes focus; then it is activated.
        assert_eq!(
            b.eval(&format!(
                "(() => {{ const b = {button}; b.focus(); return document.activeElement === b }})()"
            )),
            json!(true)
        );
        b.eval(&format!("(() => {{ {button}.click(); return true }})()"));
        b.wait_for(
            "document.getElementById('url-state').textContent.startsWith('purged ')",
            "the purge to be confirmed",
        );
        b.wait_for(&format!("!{button}"), "the purged row to leave the list");
        browser
    })
    .await
    .unwrap();

    // The store no longer has it: `hoard show` says so, and the proxy fetches it again.
    let (code, _, err) = run(hoard(home.path()).args(["show", &d1, "--cache-dir", &cache]));
    assert_eq!(code, 1, "{err}");
    let (s, cs, _) = get(proxy, &d1, &[]).await;
    assert_eq!(s, 200);
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    drop(browser);
    child.kill().await.unwrap();
}

/// Read the event stream until `pred` holds for the text so far (bounded).
async fn read_events_until(s: &mut TcpStream, pred: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if pred(&String::from_utf8_lossy(&got)) {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The stream outlives the admin server's idle timeout while it is read (ticks every
/// second), carries access events, and purges refuse cross-site and header-less posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_outlives_idle_timeout_and_purge_is_guarded() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = crate::ops::proxy(dir.path(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let admin = p.admin_addr().unwrap();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let head = read_events_until(&mut s, |t| t.contains("event: tick")).await;
    assert!(head.contains("text/event-stream"), "{head}");
    get(p.local_addr(), &origin.url("/e"), &[]).await;
    let t0 = Instant::now();
    let text = read_events_until(&mut s, |t| {
        t.contains("event: access") && t0.elapsed() > Duration::from_secs(3)
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "stream cut early:\n{text}"
    );
    assert!(
        text.contains(&format!("\"url\":\"{}\"", origin.url("/e"))),
        "{text}"
    );

    let url = origin.url("/e");
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[], 403),
        (
            &[("x-hoard-purge", "1"), ("origin", "http://evil.example")],
            403,
        ),
        (
            &[("x-hoard-purge", "1"), ("sec-fetch-site", "cross-site")],
            403,
        ),
    ];
    for (headers, want) in cases {
        let mut h = headers.to_vec();
        h.push(("content-length", "0"));
        let (code, _, body) = request(admin, "POST", "/api/purge", &h).await;
        assert_eq!(code, *want, "{headers:?}: {body}");
    }
    assert!(get(p.local_addr(), &url, &[]).await.1.contains("hit"));
    // The allowed purge, with the URL as body.
    let mut c = TcpStream::connect(admin).await.unwrap();
    let req = format!(
        "POST /api/purge HTTP/1.1\r\nHost: {admin}\r\nX-Hoard-Purge: 1\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{url}",
        url.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        get(p.local_addr(), &url, &[])
            .await
            .1
            .contains("fwd=uri-miss")
    );
    // The page itself: self-contained, with a strict content security policy.
    let (code, head, body) = request(admin, "GET", "/", &[]).await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(
            !body.contains(external),
            "no external resources: {external}"
        );
    }
    p.shutdown().await;
}
