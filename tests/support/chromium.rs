//! Headless Chromium for the tests that drive a real browser: where the binary is, and the
//! flags every run gets.
//!
//! Invariant: a test browser never reaches beyond loopback. Chromium's own background traffic
//! (sign-in, updates, safe browsing) is turned off, and its resolver answers every name
//! except `127.0.0.1` with NOTFOUND, so nothing it does on its own reaches a DNS server or
//! a remote host; names a test means to reach go through hoard (a PAC script, see
//! `tests/mitm/browser.rs`), which resolves them to loopback with `--resolve`.

use std::path::PathBuf;

/// The Chromium binary: `HOARD_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
/// Panics (the test fails) when there is none: CI installs it (`.ci/run`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HOARD_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "this test needs Chromium and found none on PATH: install it \
         (`apt-get install -y chromium`; .ci/run does) or set HOARD_CHROMIUM"
    );
}

/// Flags for a quiet headless run that stays on loopback (see the module doc); the caller
/// adds `--user-data-dir` and what the run does.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];
