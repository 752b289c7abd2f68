//! Integration tests of `hoard::entries::shared` against real `redis-server` processes, each
//! test with its own servers on free loopback ports, killed by PID when the test ends. Where
//! `redis-server` is not installed a test prints that it was skipped and passes (CI installs
//! it: `.ci/run`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoard::entries::shared::{SharedConfig, SharedTier};
use tempfile::TempDir;

mod basic;
mod cluster;
mod failure;
mod leases;
mod proxies;
mod sealed;
mod startup;
mod subcommands;
mod tls;

/// Is `redis-server` (and `redis-cli`) here? Prints the skip line when not.
pub fn have_redis(test: &str) -> bool {
    let ok = ["redis-server", "redis-cli"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("{test}: skipped (redis-server/redis-cli not installed)");
    }
    ok
}

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let p = fastrand::u16(20_000..45_000);
        let ok = [p, p + 10_000]
            .iter()
            .all(|q| TcpListener::bind(("127.0.0.1", *q)).is_ok());
        if ok {
            return p;
        }
    }
    panic!("no free port pair found");
}

/// One `redis-server` child; killed (SIGKILL) by PID on drop.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    extra: Vec<String>,
    /// TLS only (`--port 0 --tls-port port`): the CA file clients trust.
    tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS: the certificate and key `redis-cli` presents.
    tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Redis {
    /// A server with `extra` arguments (e.g. `--maxmemory 1mb`), ready to answer.
    pub fn start(extra: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls_ca: None,
            tls_client: None,
        };
        r.spawn();
        r
    }

    /// A server answering TLS only, with the certificate and key given (PEM files) and
    /// `ca` as the CA its clients trust; client certificates are not asked for.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        extra: &[&str],
    ) -> Redis {
        Redis::tls_only(cert, key, ca, None, extra)
    }

    /// Like [`Redis::start_tls`], and every client must present a certificate signed by
    /// `ca` (`tls-auth-clients yes`); `client` (certificate, key) is what `redis-cli` presents.
    pub fn start_mutual_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        client: (&std::path::Path, &std::path::Path),
        extra: &[&str],
    ) -> Redis {
        let client = (client.0.to_path_buf(), client.1.to_path_buf());
        Redis::tls_only(cert, key, ca, Some(client), extra)
    }

    fn tls_only(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        client: Option<(std::path::PathBuf, std::path::PathBuf)>,
        extra: &[&str],
    ) -> Redis {
        let p = |p: &std::path::Path| p.display().to_string();
        let auth = if client.is_some() { "yes" } else { "no" };
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: vec![
                "--tls-cert-file".into(),
                p(cert),
                "--tls-key-file".into(),
                p(key),
                "--tls-ca-cert-file".into(),
                p(ca),
                "--tls-auth-clients".into(),
                auth.into(),
                // A cluster's bus is TLS too (ignored without --cluster-enabled).
                "--tls-cluster".into(),
                "yes".into(),
            ]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect(),
            tls_ca: Some(ca.to_path_buf()),
            tls_client: client,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: &[&str] = match self.tls_ca {
            None => &["--port", &port],
            Some(_) => &["--port", "0", "--tls-port", &port],
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} not ready",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        match self.tls_ca {
            None => ping(self.port),
            Some(_) => self.cli(&["PING"]) == "PONG",
        }
    }

    /// `redis://127.0.0.1:port` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (after [`Redis::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        // The port may linger briefly after the kill.
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} stays busy", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn();
    }

    /// `redis-cli -p port args...` (over TLS for a TLS server), trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        match &self.tls_ca {
            None => cli(self.port, args),
            Some(ca) => {
                let ca = ca.display().to_string();
                let mut all = vec!["--tls".to_string(), "--cacert".into(), ca];
                if let Some((cert, key)) = &self.tls_client {
                    all.extend(["--cert".into(), cert.display().to_string()]);
                    all.extend(["--key".into(), key.display().to_string()]);
                }
                all.extend(args.iter().map(|a| a.to_string()));
                cli(
                    self.port,
                    &all.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p port args...`, trimmed stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Does a server answer PING on `port`?
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Operation timeout of [`tier`]: roomy, so tests about behaviour do not fail on a loaded
/// machine (50 ms calls timed out in a full run on 2 busy cores); the tests about timing set
/// their own.
pub const TEST_TIMEOUT: Duration = Duration::from_millis(250);

/// A tier on `url` with `prefix` and [`TEST_TIMEOUT`], connected and subscribed (panics
/// after 5 s).
pub async fn tier(url: &str, prefix: &str) -> SharedTier {
    tier_with(url, prefix, |c| c.timeout = TEST_TIMEOUT).await
}

/// Like [`tier`], with the config adjusted by `f`.
pub async fn tier_with(url: &str, prefix: &str, f: impl FnOnce(&mut SharedConfig)) -> SharedTier {
    let mut cfg = SharedConfig::new(url);
    cfg.prefix = prefix.to_string();
    f(&mut cfg);
    let t = SharedTier::start(cfg).expect("valid config");
    assert!(
        t.wait_ready(Duration::from_secs(5)).await,
        "tier not ready: {:?}",
        t.status()
    );
    t
}

/// Poll `f` every 10 ms until it holds, at most `max`.
pub async fn eventually(max: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The Redis key of a row, as the tier names it.
pub fn row_key_name(prefix: &str, url_key: &str, row_key: &[u8]) -> String {
    hoard::entries::shared::codec::UrlKeys::new(prefix, url_key).row(row_key)
}
