//! Integration tests of operations: the subcommands run as the real binary on a store filled
//! by an in-process proxy in front of a loopback origin, configuration layering and errors,
//! `/metrics`, and `PURGE`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use hoard::proxy::{ProxyConfig, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

mod access_log;
mod cli;
mod config;
mod har;
mod metrics;
mod runtime;
mod shutdown;
mod warm;

/// A loopback origin counting requests: `/vary*` varies on Accept-Encoding, `/nostore`
/// is `no-store`, everything else is fresh for 60 s. The body is the path (`/bin*`: the
/// bytes 255 down to 0). The shared test origin (`tests/support`) with these answers.
pub struct Origin(support::Origin);

impl std::ops::Deref for Origin {
    type Target = support::Origin;
    fn deref(&self) -> &support::Origin {
        &self.0
    }
}

impl Origin {
    pub async fn start() -> Origin {
        Origin(
            support::Origin::start(|req| {
                let path = req.uri().path();
                let body = if path.starts_with("/bin") {
                    Bytes::from((0..=255u8).rev().collect::<Vec<u8>>())
                } else {
                    Bytes::from(path.to_owned())
                };
                let cc = if path.starts_with("/nostore") {
                    "no-store"
                } else {
                    "max-age=60"
                };
                let mut headers = vec![("cache-control", cc)];
                if path.starts_with("/vary") {
                    headers.push(("vary", "accept-encoding"));
                }
                support::reply(200, &headers, body)
            })
            .await,
        )
    }
}

/// A proxy on 127.0.0.1:0 over `dir`, with `tweak` applied to its configuration.
pub async fn proxy(dir: &Path, tweak: impl FnOnce(&mut ProxyConfig)) -> ServerHandle {
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    tweak(&mut cfg);
    Server::bind(cfg).await.unwrap().spawn()
}

/// A raw HTTP/1.1 exchange: returns (status, headers text, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `hoard serve` on 127.0.0.1:0 over `dir`, access lines to `log`, plus `extra` arguments.
pub async fn serve_logging(
    dir: &Path,
    log: &Path,
    extra: &[&str],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--cache-dir".as_ref(),
        dir.as_os_str(),
        "--access-log".as_ref(),
        log.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    crate::proxy::harness::spawn_hoard(args).await
}

/// SIGTERM, then a successful exit within 30 s (`why` names the case in the failure).
pub async fn stop(child: &mut tokio::process::Child, why: &str) {
    use std::time::Duration;
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the PID of a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("hoard did not exit after SIGTERM{why}"))
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// GET `url` through the proxy at `proxy`; returns (status, Cache-Status, body).
pub async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let (status, head, body) = request(proxy, "GET", url, headers).await;
    let cs = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("cache-status"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, cs, body)
}

/// The real binary, isolated from the caller's environment: no `HOARD_*` variables, and a
/// config home without a default file.
pub fn hoard(config_home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hoard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARD_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", config_home);
    c
}

/// Run and return (exit code, stdout, stderr).
pub fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
