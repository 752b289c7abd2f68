//! What a `rediss://` connection trusts: the system's root certificates plus the CA
//! certificates of `shared-ca-file`, and the one place the tier makes a `redis::Client`.
//!
//! Invariant: every connection of the tier (commands, subscription, cluster) is made by
//! [`client`] or [`cluster_builder`] with the same [`Roots`], so a CA file trusted for one is
//! trusted for all; a plain `redis://` URL never reads the file.

use std::path::{Path, PathBuf};

use redis::TlsCertificates;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::config::SharedConfigError;

/// Root certificates for `rediss://`: `None` means the system store alone (what the `redis`
/// crate reads by itself).
#[derive(Debug, Clone, Default)]
pub struct Roots(Option<TlsCertificates>);

impl Roots {
    /// Read `ca_file` (PEM, one certificate at least) and join it to the system's roots.
    /// Without a file, the system store alone.
    pub fn load(ca_file: Option<&Path>) -> Result<Roots, SharedConfigError> {
        let Some(path) = ca_file else {
            return Ok(Roots(None));
        };
        let err = |why: String| SharedConfigError::CaFile(PathBuf::from(path), why);
        let extra = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err(e.to_string()))?;
        if extra.is_empty() {
            return Err(err("no certificate in it".into()));
        }
        // The `redis` crate trusts a given PEM bundle *instead of* the system store: give
        // it both. Unreadable system certificates are skipped (the file still counts).
        let system = rustls_native_certs::load_native_certs().certs;
        let mut pem = Vec::new();
        for cert in system.iter().chain(&extra) {
            pem.extend_from_slice(&to_pem(cert));
        }
        Ok(Roots(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        })))
    }
}

fn to_pem(cert: &CertificateDer<'_>) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    out
}

/// A client for one node URL (`redis://` or `rediss://`), trusting `roots` over TLS.
pub fn client(url: &str, roots: &Roots) -> redis::RedisResult<redis::Client> {
    match (&roots.0, url.starts_with("rediss://")) {
        (Some(certs), true) => redis::Client::build_with_tls(url, certs.clone()),
        _ => redis::Client::open(url),
    }
}

/// A cluster client builder for the seed URLs, TLS (trusting `roots`) when `tls`.
pub fn cluster_builder(
    urls: Vec<String>,
    tls: bool,
    roots: &Roots,
) -> redis::cluster::ClusterClientBuilder {
    let b = redis::cluster::ClusterClient::builder(urls);
    match (&roots.0, tls) {
        (Some(certs), true) => b.certs(certs.clone()),
        (None, true) => b.tls(redis::TlsMode::Secure),
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");

        let roots = Roots::load(Some(&good)).unwrap();
        let pem = roots.0.and_then(|c| c.root_cert).unwrap();
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            parsed.iter().any(|c| c.as_ref() == ca.cert.der().as_ref()),
            "the file's CA is in the bundle"
        );
        assert!(Roots::load(None).unwrap().0.is_none());
        for bad in [&empty, &missing] {
            let e = Roots::load(Some(bad)).unwrap_err();
            assert!(matches!(e, SharedConfigError::CaFile(..)), "{e}");
            assert!(e.to_string().contains("shared CA file"), "{e}");
        }
    }

    #[test]
    fn plain_urls_never_use_tls() {
        let roots = Roots::default();
        assert!(client("redis://127.0.0.1:1/0", &roots).is_ok());
        assert!(client("rediss://127.0.0.1:1/0", &roots).is_ok());
    }
}
