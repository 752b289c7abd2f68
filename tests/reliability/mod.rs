//! Reliability under faults: SIGKILL crash loops of the real binary, disk-full and read-only
//! cache directories, corrupt databases and entry heads. Each test bounds its loops in count
//! and time.

mod corrupt;
mod crash;
mod diskfull;
mod wal;

/// A reqwest client for gateway-mode requests straight to a proxy (no `HTTP_PROXY`).
pub fn direct_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: it needs a process default even for http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}
