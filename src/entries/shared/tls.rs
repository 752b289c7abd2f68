//! What a `rediss://` connection trusts and presents: the system's root certificates plus the
//! CA certificates of `shared-ca-file`, and the client certificate of `shared-cert-file` /
//! `shared-key-file` (mutual TLS); and the one place the tier makes a `redis::Client`.
//!
//! Invariant: every connection of the tier (commands, subscription, cluster, maintenance) is
//! made by [`client`] or [`cluster_builder`] with the same [`Roots`], so a CA file trusted
//! and a certificate presented for one are so for all; a plain `redis://` URL never reads
//! the files.

use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::{ClientIdentity, SharedConfigError};

/// Root certificates and client identity for `rediss://`: `None` means the system store
/// alone and no client certificate (what the `redis` crate does by itself).
#[derive(Debug, Clone, Default)]
pub struct Roots(Option<TlsCertificates>);

impl Roots {
    /// Read `ca_file` (PEM, one certificate at least) and join it to the system's roots, and
    /// read the client certificate and key of `identity` (checked to parse). Without a CA
    /// file, the system store alone; without an identity, no client certificate.
    pub fn load(
        ca_file: Option<&Path>,
        identity: Option<&ClientIdentity>,
    ) -> Result<Roots, SharedConfigError> {
        let root_cert = ca_file.map(roots_with).transpose()?;
        let client_tls = identity.map(read_identity).transpose()?;
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(Roots(None));
        }
        Ok(Roots(Some(TlsCertificates {
            client_tls,
            root_cert,
        })))
    }
}

/// The system's roots and those of `path`, as one PEM bundle.
fn roots_with(path: &Path) -> Result<Vec<u8>, SharedConfigError> {
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
    Ok(pem)
}

/// The PEM texts of a client certificate chain and its key, each checked to parse.
fn read_identity(id: &ClientIdentity) -> Result<ClientTlsConfig, SharedConfigError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| SharedConfigError::ClientIdentity(path.to_path_buf(), e.to_string()))
    };
    let bad = |path: &Path, why: String| SharedConfigError::ClientIdentity(path.to_path_buf(), why);
    let (cert, key) = (read(&id.cert_file)?, read(&id.key_file)?);
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&id.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&id.cert_file, "no certificate in it".into()));
    }
    PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| bad(&id.key_file, format!("no private key: {e}")))?;
    Ok(ClientTlsConfig {
        client_cert: cert,
        client_key: key,
    })
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

        let roots = Roots::load(Some(&good), None).unwrap();
        let pem = roots.0.and_then(|c| c.root_cert).unwrap();
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            parsed.iter().any(|c| c.as_ref() == ca.cert.der().as_ref()),
            "the file's CA is in the bundle"
        );
        assert!(Roots::load(None, None).unwrap().0.is_none());
        for bad in [&empty, &missing] {
            let e = Roots::load(Some(bad), None).unwrap_err();
            assert!(matches!(e, SharedConfigError::CaFile(..)), "{e}");
            assert!(e.to_string().contains("shared CA file"), "{e}");
        }
    }

    #[test]
    fn a_client_identity_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let me = rcgen::generate_simple_self_signed(vec!["hoard".into()]).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cert = file("c.pem", &me.cert.pem());
        let key = file("c.key", &me.signing_key.serialize_pem());
        let junk = file("junk.pem", "not PEM\n");
        let id = |c: &Path, k: &Path| ClientIdentity {
            cert_file: c.to_path_buf(),
            key_file: k.to_path_buf(),
        };
        let roots = Roots::load(None, Some(&id(&cert, &key))).unwrap();
        let certs = roots.0.expect("TLS settings");
        assert!(certs.root_cert.is_none(), "the system's roots alone");
        assert_eq!(
            certs.client_tls.unwrap().client_cert,
            me.cert.pem().as_bytes()
        );
        for (c, k, blamed) in [
            (&junk, &key, &junk),
            (&cert, &junk, &junk),
            (&cert, &cert, &cert),
        ] {
            let e = Roots::load(None, Some(&id(c, k))).unwrap_err();
            assert!(
                matches!(&e, SharedConfigError::ClientIdentity(p, _) if p == blamed),
                "{e}"
            );
        }
        let missing = dir.path().join("missing.pem");
        let e = Roots::load(None, Some(&id(&missing, &key))).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert_eq!(
            ClientIdentity::from_pair(Some(cert.clone()), None),
            Err(SharedConfigError::ClientIdentityHalf)
        );
        assert_eq!(ClientIdentity::from_pair(None, None), Ok(None));
    }

    #[test]
    fn plain_urls_never_use_tls() {
        let roots = Roots::default();
        assert!(client("redis://127.0.0.1:1/0", &roots).is_ok());
        assert!(client("rediss://127.0.0.1:1/0", &roots).is_ok());
    }
}
