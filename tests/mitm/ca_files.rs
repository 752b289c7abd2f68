//! The CA on disk: created on first use with a 0600 key, reused across restarts, `--ca-dir`.

use std::sync::Arc;

use http::StatusCode;

use super::*;

#[tokio::test]
async fn ca_files_are_created_with_a_private_key_mode_0600() {
    let s = Setup::new().await;
    let dir = s.proxy.dir.path().join("ca");
    let key = dir.join("hoard-ca-key.pem");
    let cert = dir.join("hoard-ca.pem");
    assert!(cert.exists() && key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
    }
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 2, "only the certificate and the key");
}

#[tokio::test]
async fn ca_is_reused_across_restarts() {
    let ca = TestCa::new();
    let origin = Origin::start(&ca).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let auth = format!("{ORIGIN_HOST}:{}", origin.addr.port());

    let first = Proxy::start(Proxy::config(&dir, &ca, &origin), dir.clone()).await;
    let root = first.ca_der();
    let pem = std::fs::read_to_string(first.ca_pem_path()).unwrap();
    let mut c = Inner::open(first.addr, &auth, root.clone(), false)
        .await
        .unwrap();
    assert_eq!(c.get(&auth, "/r").await.status, StatusCode::OK);
    first.stop().await;

    let second = Proxy::start(Proxy::config(&dir, &ca, &origin), dir.clone()).await;
    assert_eq!(std::fs::read_to_string(second.ca_pem_path()).unwrap(), pem);
    // A client that trusted the first run's CA trusts the second run's leaves, and the
    // entry cached by the first run is a hit.
    let mut c = Inner::open(second.addr, &auth, root, false).await.unwrap();
    let g = c.get(&auth, "/r").await;
    assert!(g.is_hit(), "{}", g.cache_status());
    assert_eq!(origin.count(), 1);
    second.stop().await;
}

#[tokio::test]
async fn ca_dir_points_at_an_existing_ca() {
    let shared = tempfile::tempdir().unwrap();
    let ca_dir = shared.path().join("my-ca");
    let made = hoard::proxy::ca::CertAuthority::load_or_create(&ca_dir).unwrap();
    let root: rustls::pki_types::CertificateDer<'static> = made.cert_der().unwrap();
    let s = Setup::with(|c| c.ca_dir = Some(ca_dir.clone())).await;
    assert!(!s.proxy.dir.path().join("ca").exists());
    let auth = s.authority();
    let mut c = Inner::open(s.proxy.addr, &auth, root, true).await.unwrap();
    assert_eq!(c.get(&auth, "/d").await.status, StatusCode::OK);
}
