//! The README's dashboard screenshot (`docs/dashboard.png`), made by a test rather than by
//! hand: a dashboard that has seen traffic, drawn by the same headless Chromium as the other
//! dashboard test.

use std::time::Duration;

use super::{Browser, spawn_with_admin};
use crate::ops::get;
use crate::support::{Origin, reply};

/// How long requests flow while the page is open, and at most how many rounds of them (one
/// round per 250 ms).
const RUN: Duration = Duration::from_secs(40);
const MAX_ROUNDS: u32 = 200;

/// The three sites of the picture, all served by one loopback origin (hoard is told with
/// `--resolve` to connect to 127.0.0.1 for them).
const SITES: [&str; 3] = ["static.example", "www.example", "api.example"];

/// One loopback origin for every site: `/img/N.png` is fresh for an hour and 2 to 14 KiB,
/// `/news/N.html` fresh for two minutes, and `/v1/…` is `no-store`.
async fn origin() -> Origin {
    Origin::start(|req| {
        let path = req.uri().path();
        let n: usize = path
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if path.starts_with("/img/") {
            let size = (2 + (n * 7919) % 13) << 10;
            let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            reply(
                200,
                &[
                    ("cache-control", "max-age=3600"),
                    ("content-type", "image/png"),
                ],
                body,
            )
        } else if path.starts_with("/news/") {
            let body = format!(
                "<!doctype html><title>news {n}</title>{}",
                "<p>…".repeat(200)
            );
            reply(
                200,
                &[
                    ("cache-control", "max-age=120"),
                    ("content-type", "text/html"),
                ],
                body,
            )
        } else {
            let body = format!("{{\"page\":{n},\"items\":[]}}");
            reply(
                200,
                &[
                    ("cache-control", "no-store"),
                    ("content-type", "application/json"),
                ],
                body,
            )
        }
    })
    .await
}

/// A small deterministic generator (xorshift64*): the same traffic on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

/// The next URL: mostly a popular image (hits once fetched), some images from a long tail
/// (misses that fill the 1 MiB store past its limit: evictions), news pages, and
/// uncacheable API calls.
fn next_url(rng: &mut Rng, port: u16) -> String {
    let [statics, www, api] = SITES;
    match rng.below(100) {
        0..60 => format!("http://{statics}:{port}/img/{}.png", rng.below(20)),
        60..72 => format!("http://{statics}:{port}/img/{}.png", 20 + rng.below(2000)),
        72..88 => format!("http://{www}:{port}/news/{}.html", rng.below(30)),
        _ => format!("http://{api}:{port}/v1/items?page={}", rng.below(50)),
    }
}

/// Requests per second at `t` seconds: a wave between 4/s and 24/s (period 20 s), so the
/// chart shows a curve.
fn rate_at(t: f64) -> f64 {
    14.0 + 10.0 * (std::f64::consts::TAU * t / 20.0).sin()
}

/// Generator of the README image, not part of CI: hoard with a 1 MiB store and `--admin`,
/// the dashboard open in Chromium (1280x900) while about 40 s of hits, misses and
/// uncacheable requests flow at a varying rate; then the page is checked for what a reader
/// should see (a drawn chart, store figures, an eviction count) and the viewport is written
/// as PNG to `$HOARD_SCREENSHOT` (nothing is written without it). Run with
///
/// `HOARD_SCREENSHOT=docs/dashboard.png cargo test --test tests dashboard_screenshot_for_readme -- --ignored`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generator of docs/dashboard.png; run with HOARD_SCREENSHOT=docs/dashboard.png"]
async fn dashboard_screenshot_for_readme() {
    let origin = origin().await;
    let port = origin.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["--size-limit".to_string(), "1MiB".to_string()];
    for site in SITES {
        args.push("--resolve".into());
        args.push(format!("{site}:{port}:127.0.0.1"));
    }
    let (mut child, proxy, admin) = spawn_with_admin(&cache, &args).await;

    let page = format!("http://{admin}/");
    let mut browser = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        b.set_viewport(1280, 900);
        b.navigate(&page);
        b.wait_for(
            "document.getElementById('conn').textContent === 'live'",
            "the event stream",
        );
        b
    })
    .await
    .unwrap();
    // A few quiet seconds first: the chart starts from zero.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The traffic, in its own task: still flowing when the picture is taken.
    let t0 = tokio::time::Instant::now();
    let traffic = tokio::spawn(async move {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut sent = 0u32;
        for round in 0..MAX_ROUNDS {
            let at = Duration::from_millis(250 * u64::from(round));
            if at >= RUN {
                break;
            }
            let n = (rate_at(at.as_secs_f64()) / 4.0).round() as u32;
            for _ in 0..n {
                let url = next_url(&mut rng, port);
                let (status, cs, _) = get(proxy, &url, &[]).await;
                assert_eq!(status, 200, "{url}: {cs}");
                sent += 1;
            }
            tokio::time::sleep_until(t0 + at + Duration::from_millis(250)).await;
        }
        sent
    });
    tokio::time::sleep_until(t0 + RUN - Duration::from_secs(3)).await;

    let png = tokio::task::spawn_blocking(move || {
        let b = &mut browser;
        // Fresh store figures and stored URLs (the page refreshes them every 10 s).
        b.eval("Promise.all([loadStore(), searchUrls()]).then(() => true)");
        b.wait_for(
            "document.getElementById('line-rate').points.numberOfItems >= 30 && \
             document.getElementById('line-ratio').points.numberOfItems >= 20",
            "the chart's lines",
        );
        b.wait_for(
            "Number(document.getElementById('c-hits').textContent) > 0 && \
             document.querySelectorAll('#feed tbody tr').length >= 100",
            "hits and a full feed",
        );
        b.wait_for(
            "parseInt(document.getElementById('s-entries').textContent) > 0 && \
             document.querySelectorAll('#hosts tr').length >= 2",
            "the store's entries and top hosts",
        );
        b.wait_for(
            "/^\\d+ \\((\\d+) over the size limit/.exec(\
             document.getElementById('s-evictions').textContent)[1] > 0",
            "evictions over the size limit",
        );
        let text = b.eval(
            "['c-requests', 'c-ratio', 'peak', 's-entries', 's-size', 's-evictions']\
             .map(id => id + ': ' + document.getElementById(id).textContent).join('\\n')",
        );
        eprintln!("{}", text.as_str().unwrap_or_default());
        b.eval("window.scrollTo(0, 0); document.activeElement.blur(); true");
        b.screenshot_png()
    })
    .await
    .unwrap();
    let sent = traffic.await.unwrap();
    assert!(sent > 300, "only {sent} requests sent");

    match std::env::var_os("HOARD_SCREENSHOT") {
        Some(path) => {
            std::fs::write(&path, &png).unwrap();
            eprintln!("wrote {} ({} bytes)", path.to_string_lossy(), png.len());
        }
        None => eprintln!("HOARD_SCREENSHOT not set: no image written"),
    }
    child.kill().await.unwrap();
}
