//! SIGTERM with an intercepted (`--mitm`) request in flight: the real binary lets it finish
//! like a plain one (README, Running), then exits; the finished intercepted connection, idle
//! in keep-alive, does not hold the exit until `--shutdown-timeout`.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use super::{Inner, ORIGIN_HOST, TestCa};
use crate::proxy::harness::spawn_hoard;
use crate::support;

/// How long the origin takes to answer: SIGTERM comes while it thinks.
const ORIGIN_DELAY: Duration = Duration::from_millis(1500);
/// Far above what the test waits for, so an exit that waited for it is seen.
const SHUTDOWN_TIMEOUT: &str = "20s";
/// The exit after the response: the idle intercepted connection closes at once.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_intercepted_request_in_flight_finish_then_exits_promptly() {
    let ca = TestCa::new();
    let body = "done".repeat(1000);
    let origin = {
        let body = body.clone();
        support::Origin::start_tls(ca.server_config(), move |_, _| {
            support::Act::Reply(
                ORIGIN_DELAY,
                support::reply(200, &[("cache-control", "no-store")], body.clone()),
            )
        })
        .await
    };
    let authority = format!("{ORIGIN_HOST}:{}", origin.addr.port());
    // HTTP/1.1 on one thread; h2 on two per-core threads (connections on a sibling runtime).
    for (i, (h2, threads)) in [(false, "1"), (true, "2")].into_iter().enumerate() {
        let case = format!("h2={h2}, --threads {threads}");
        let dir = tempfile::tempdir().unwrap();
        let resolve = format!("{ORIGIN_HOST}:{}:127.0.0.1", origin.addr.port());
        let args: Vec<&std::ffi::OsStr> = vec![
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--cache-dir".as_ref(),
            dir.path().as_os_str(),
            "--access-log".as_ref(),
            "off".as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--mitm".as_ref(),
            "--resolve".as_ref(),
            resolve.as_ref(),
            "--extra-ca-file".as_ref(),
            ca.pem_path.as_os_str(),
            "--shutdown-timeout".as_ref(),
            SHUTDOWN_TIMEOUT.as_ref(),
        ];
        let (mut child, addr) = spawn_hoard(args).await;
        let hoard_ca = {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            CertificateDer::from_pem_file(dir.path().join("ca").join("hoard-ca.pem")).unwrap()
        };
        let inner = Inner::open(addr, &authority, hoard_ca, h2).await.unwrap();
        let uri = if h2 {
            format!("https://{authority}/slow")
        } else {
            "/slow".to_string()
        };
        let mut req = Request::get(uri);
        if !h2 {
            req = req.header("host", &authority);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let exchange = tokio::spawn(async move {
            let res = match inner {
                Inner::H1(mut s) => s.send_request(req).await,
                Inner::H2(mut s) => s.send_request(req).await,
            }
            .map_err(|e| format!("no response: {e}"))?;
            let status = res.status();
            let body = res.into_body().collect().await;
            let body = body.map_err(|e| format!("body cut: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        });
        assert_eq!(
            origin.wait_hits(i + 1, Duration::from_secs(10)).await,
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = child.id().expect("running") as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child this test started and still holds.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let (status, got) = exchange
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(status, 200, "{case}");
        assert_eq!(got, body.as_bytes(), "{case}: the whole body");
        let exit = tokio::time::timeout(EXIT_WITHIN, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("{case}: hoard still running {EXIT_WITHIN:?} after the last response")
            })
            .unwrap();
        assert!(exit.success(), "{case}: {exit:?}");
    }
}
