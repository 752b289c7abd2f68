//! hoard's interception CA: created on first use in `<cache_dir>/ca/` (or loaded from `--ca-dir`),
//! and short-lived leaf certificates for intercepted hosts signed by it.
//!
//! Invariants: the private key file is created with mode 0600 and never exists with wider
//! permissions, even briefly; a CA is used only when no other local account could have read
//! its key or could replace it (the key not accessible to group/others, neither file
//! writable by them or owned by another account than this one or root, the directory and
//! its parents not writable by them); the CA files appear atomically (temp file + `hard_link`, which
//! fails when the name exists), so processes racing on first use end up with one CA, the
//! first one published; the CA and every leaf are valid for a bounded time.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "hoard-ca.pem";
/// File name of the CA private key inside the CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "hoard-ca-key.pem";
/// How long a newly created CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// How long a leaf certificate is valid (from one hour before it was made).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("certificate error: {0}")]
    Cert(String),
    /// The directory holds only half a CA (a racing creator died, or a file was removed).
    #[error("incomplete CA in {0}: remove the directory or restore both files")]
    Incomplete(PathBuf),
    /// Another local account could read the key or replace the CA: refused.
    #[error("refusing to use the CA: {0}")]
    Unsafe(Unsafe),
}

/// Why a CA on disk is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    /// The key file is readable (or writable) by group or others.
    #[error(
        "{path} is accessible to group/others (mode {mode:04o}): anyone who read it can \
         impersonate any site to clients trusting this CA; fix: chmod 600 {path} (and, since \
         it may have been copied, make a new CA: remove the directory's two files)"
    )]
    KeyReadable {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A CA file is writable by group or others.
    #[error(
        "{path} is writable by group/others (mode {mode:04o}): another account could swap \
         the CA; fix: chmod go-w {path}"
    )]
    Writable {
        /// The certificate or key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A CA file is owned by another account (neither this one nor root).
    #[error(
        "{path} is owned by uid {uid}, not by this user ({me}) or root: that account could \
         swap the CA; fix: chown it to this user, or use a --ca-dir you own",
        me = crate::store::effective_uid()
    )]
    ForeignOwner {
        /// The certificate or key file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The CA directory, or one of its parents, lets another account replace its files.
    #[error("{0}")]
    Directory(crate::store::Exposure),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err(e: impl std::fmt::Display) -> CaError {
    CaError::Cert(e.to_string())
}

/// The loaded CA: signs leaf certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_path: PathBuf,
    /// One key pair shared by all leaves of this process (as mitmproxy does): generating a key
    /// per host would cost more than signing, and the key never leaves memory.
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn rustls::sign::SigningKey>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Load the CA in `dir`, creating it first if the directory holds none.
    ///
    /// Refuses ([`CaError::Unsafe`]) a CA another local account could read or replace: a
    /// key accessible to group/others, a certificate or key writable by them or owned by
    /// another account (root is trusted), a directory (or parent) they may write or own.
    pub fn load_or_create(dir: &Path) -> Result<CertAuthority, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        check_dir(dir)?;
        if !cert_path.exists() || !key_path.exists() {
            create(dir, &cert_path, &key_path)?;
        }
        let cert_pem = read_trusted(&cert_path, false)?;
        let key_pem = read_trusted(&key_path, true)?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(cert_err)?;
        let leaf_key = KeyPair::generate().map_err(cert_err)?;
        let leaf_signing_key = rustls::crypto::ring::sign::any_supported_type(
            &PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(cert_err)?;
        Ok(CertAuthority {
            issuer,
            cert_pem,
            cert_path,
            leaf_key,
            leaf_signing_key,
        })
    }

    /// Path of the CA certificate (what clients must trust).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A fresh leaf certificate for `host` (a DNS name or an IP address), for rustls.
    pub fn leaf(&self, host: &str) -> Result<CertifiedKey, CaError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // Never a wildcard, an empty label or anything but one plain name or address.
        super::hostname::check_name(host)
            .map_err(|why| CaError::Cert(format!("no leaf for {host:?}: {why}")))?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_ascii_lowercase().try_into().map_err(cert_err)?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        dn.push(DnType::OrganizationName, "hoard interception");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(cert_err)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone()],
            self.leaf_signing_key.clone(),
        ))
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, CaError> {
        rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(cert_err)
    }
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&b)
}

/// This machine's name, for the CA's common name.
fn hostname() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Create a new CA in `dir` unless another process publishes one first.
fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
    create_dir_private(dir)?;
    let key = KeyPair::generate().map_err(cert_err)?; // ECDSA P-256
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("hoard CA on {}", hostname()));
    dn.push(DnType::OrganizationName, "hoard");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key).map_err(cert_err)?;

    // The key is published first and acts as the lock: whoever links it also links the
    // certificate; the others wait for the certificate to appear.
    let tag = format!("{}.{:016x}", std::process::id(), fastrand::u64(..));
    let key_tmp = dir.join(format!(".{CA_KEY_FILE}.{tag}.tmp"));
    let cert_tmp = dir.join(format!(".{CA_CERT_FILE}.{tag}.tmp"));
    let res = (|| {
        write_new(&key_tmp, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert_tmp, cert.pem().as_bytes(), 0o644)?;
        match fs::hard_link(&key_tmp, key_path) {
            Ok(()) => {
                fs::hard_link(&cert_tmp, cert_path).map_err(io_err(cert_path))?;
                sync_dir(dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => wait_for(cert_path, dir),
            Err(e) => Err(io_err(key_path)(e)),
        }
    })();
    let _ = fs::remove_file(&key_tmp);
    let _ = fs::remove_file(&cert_tmp);
    res
}

/// Refuses a CA directory (or parent) another account may write or owns. Checked before
/// anything is created in it (a directory that does not exist yet is judged by its parents).
fn check_dir(dir: &Path) -> Result<(), CaError> {
    let found = crate::store::exposure_of(dir, &[]).map_err(io_err(dir))?;
    match found.into_iter().find(|e| e.is_replaceable()) {
        Some(e) => Err(CaError::Unsafe(Unsafe::Directory(e))),
        None => Ok(()),
    }
}

/// Reads a CA file after checking, on the open file itself (no window for a swap between
/// check and read), that no other account may write it or owns it, and for the key
/// (`secret`) that no other account may read it.
fn read_trusted(path: &Path, secret: bool) -> Result<String, CaError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt;
    let mut f = File::open(path).map_err(io_err(path))?;
    let m = f.metadata().map_err(io_err(path))?;
    let (mode, uid) = (m.mode() & 0o7777, m.uid());
    let unsafe_ = if uid != crate::store::effective_uid() && uid != 0 {
        Some(Unsafe::ForeignOwner {
            path: path.to_path_buf(),
            uid,
        })
    } else if secret && mode & 0o077 != 0 {
        Some(Unsafe::KeyReadable {
            path: path.to_path_buf(),
            mode,
        })
    } else if mode & 0o022 != 0 {
        Some(Unsafe::Writable {
            path: path.to_path_buf(),
            mode,
        })
    } else {
        None
    };
    if let Some(u) = unsafe_ {
        return Err(CaError::Unsafe(u));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io_err(path))?;
    Ok(text)
}

/// Another process published the key; wait (bounded) for its certificate.
fn wait_for(cert_path: &Path, dir: &Path) -> Result<(), CaError> {
    for _ in 0..100 {
        if cert_path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CaError::Incomplete(dir.to_path_buf()))
}

fn create_dir_private(dir: &Path) -> Result<(), CaError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir).map_err(io_err(dir))
    }
}

/// Write a new file created with `mode` (never wider, not even before a chmod), then fsync.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f: File = opts.open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// How to make clients trust the CA at `cert_path` (printed by `hoard ca`).
pub fn trust_instructions(cert_path: &Path) -> String {
    let p = cert_path.display();
    format!(
        "Trust this CA only on machines you control; anyone holding its key can impersonate any site \
         to clients that trust it.\n\
         \n\
         curl:             curl --proxy http://127.0.0.1:3128 --cacert {p} https://example.com/\n\
         Python requests:  export REQUESTS_CA_BUNDLE={p}   (replaces the default bundle)\n\
         Node.js:          export NODE_EXTRA_CA_CERTS={p}\n\
         Debian/Ubuntu:    sudo cp {p} /usr/local/share/ca-certificates/hoard-ca.crt && sudo update-ca-certificates\n\
         Fedora/RHEL:      sudo cp {p} /etc/pki/ca-trust/source/anchors/hoard-ca.pem && sudo update-ca-trust\n\
         macOS:            sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {p}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let a = CertAuthority::load_or_create(&ca_dir).unwrap();
        let b = CertAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(ca_dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(a.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let leaf = a.leaf("example.test").unwrap();
        assert_eq!(leaf.cert.len(), 1);
        a.leaf("127.0.0.1").unwrap();
        a.leaf("[::1]").unwrap();
    }

    #[test]
    fn racing_creators_agree_on_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let pems: Vec<String> = (0..8)
            .map(|_| {
                let d = ca_dir.clone();
                std::thread::spawn(move || {
                    CertAuthority::load_or_create(&d)
                        .unwrap()
                        .cert_pem()
                        .to_string()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(pems.windows(2).all(|w| w[0] == w[1]));
        let leftovers: Vec<_> = fs::read_dir(&ca_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
