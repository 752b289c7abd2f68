//! Authenticated rows and messages of the shared tier (`shared-secret-file`): with a secret
//! shared by the fleet, every row carries HMAC-SHA256 tags over its head and its body, and
//! every invalidation message a tag over its payload, so whoever can write to Redis but does
//! not hold the secret cannot make any hoard serve a response it did not store, or drop
//! local copies. Without it, rows carry only an xxh3 checksum (damage, not forgery).
//!
//! Invariants: each tag is bound to the row key (the URL and variant) and to a domain string,
//! so a tag never verifies for another key, another part or another kind of message; the head
//! and the body have a tag each, because a 304 refresh replaces the head in Redis without
//! reading the body (`put_meta`); tags are compared in constant time (`subtle`).

use std::path::Path;

use ring::hmac;

/// Bytes of a tag (HMAC-SHA256).
pub const TAG_LEN: usize = 32;

/// Shortest secret accepted: 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// The fleet's key.
#[derive(Clone)]
pub struct Seal {
    key: hmac::Key,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("shared-secret-file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "shared-secret-file {path}: {len} bytes; at least {MIN_SECRET_LEN} are needed \
         (e.g. `openssl rand -hex 32 > FILE`)"
    )]
    Short {
        /// The file.
        path: String,
        /// Its length (without a trailing newline).
        len: usize,
    },
}

impl Seal {
    /// The key of `secret` (its bytes as given).
    pub fn new(secret: &[u8]) -> Seal {
        Seal {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key in `path`: its bytes without one trailing newline, at least
    /// [`MIN_SECRET_LEN`] of them. A file other accounts may read is used, with a warning.
    pub fn from_file(path: &Path) -> Result<Seal, SecretError> {
        let shown = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        for end in [b"\n".as_slice(), b"\r"] {
            if bytes.ends_with(end) {
                bytes.truncate(bytes.len() - 1);
            }
        }
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::Short {
                path: shown,
                len: bytes.len(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %shown, "shared-secret-file may be read by other accounts (chmod 600)");
            }
        }
        Ok(Seal::new(&bytes))
    }

    fn tag(&self, domain: &[u8], row_key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(domain);
        ctx.update(&(row_key.len() as u64).to_be_bytes());
        ctx.update(row_key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is [`Seal::tag`] of the same input, compared in constant time.
    fn verify(&self, domain: &[u8], row_key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        tag.len() == TAG_LEN && bool::from(self.tag(domain, row_key, parts).ct_eq(tag))
    }

    /// The tag of a row's head (its meta).
    pub fn head_tag(&self, row_key: &[u8], meta: &[u8]) -> [u8; TAG_LEN] {
        self.tag(b"hoard shared row head\0", row_key, &[meta])
    }

    /// Whether `tag` is the head tag of `meta` under `row_key`.
    pub fn head_ok(&self, row_key: &[u8], meta: &[u8], tag: &[u8]) -> bool {
        self.verify(b"hoard shared row head\0", row_key, &[meta], tag)
    }

    /// The tag of a row's body.
    pub fn body_tag(&self, row_key: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        self.tag(b"hoard shared row body\0", row_key, &[body])
    }

    /// Whether `tag` is the body tag of `body` under `row_key`.
    pub fn body_ok(&self, row_key: &[u8], body: &[u8], tag: &[u8]) -> bool {
        self.verify(b"hoard shared row body\0", row_key, &[body], tag)
    }

    /// An invalidation message's payload, `id url_key`, signed: `<hex tag> id url_key`.
    pub fn sign_message(&self, payload: &str) -> String {
        let tag = self.tag(b"hoard shared invalidation\0", b"", &[payload.as_bytes()]);
        let mut out = String::with_capacity(2 * TAG_LEN + 1 + payload.len());
        for b in tag {
            out.push_str(&format!("{b:02x}"));
        }
        out.push(' ');
        out.push_str(payload);
        out
    }

    /// The payload of a message signed by [`Seal::sign_message`] with this key, or `None`.
    pub fn open_message<'a>(&self, message: &'a str) -> Option<&'a str> {
        let (hex, payload) = message.split_once(' ')?;
        if hex.len() != 2 * TAG_LEN {
            return None;
        }
        let mut tag = [0u8; TAG_LEN];
        for (i, t) in tag.iter_mut().enumerate() {
            *t = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        self.verify(
            b"hoard shared invalidation\0",
            b"",
            &[payload.as_bytes()],
            &tag,
        )
        .then_some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_for_their_key_part_and_secret() {
        let s = Seal::new(b"0123456789abcdef0123");
        let other = Seal::new(b"another secret of the fleet");
        let t = s.head_tag(b"GET http://a/", b"meta");
        assert!(s.head_ok(b"GET http://a/", b"meta", &t));
        assert!(!s.head_ok(b"GET http://a/", b"metA", &t));
        assert!(!s.head_ok(b"GET http://b/", b"meta", &t));
        assert!(!other.head_ok(b"GET http://a/", b"meta", &t));
        // A head tag is no body tag, and lengths are bound (no shifting bytes between parts).
        assert!(!s.body_ok(b"GET http://a/", b"meta", &t));
        let b = s.body_tag(b"GET http://a/", b"body");
        assert!(s.body_ok(b"GET http://a/", b"body", &b));
        assert!(!s.body_ok(b"GET http://a/", b"bodz", &b));
        assert!(!s.body_ok(b"GET http://a/", b"body", &b[..31]));
        assert_ne!(
            s.head_tag(b"GET http://a/x", b"y"),
            s.head_tag(b"GET http://a/", b"xy")
        );
    }

    #[test]
    fn messages_open_only_when_signed_with_the_key() {
        let s = Seal::new(b"0123456789abcdef0123");
        let m = s.sign_message("id-1 GET http://a/");
        assert_eq!(s.open_message(&m), Some("id-1 GET http://a/"));
        assert_eq!(
            Seal::new(b"another secret of the fleet").open_message(&m),
            None
        );
        assert_eq!(s.open_message("id-1 GET http://a/"), None);
        let forged = m.replacen("http://a/", "http://b/", 1);
        assert_eq!(s.open_message(&forged), None);
    }

    #[test]
    fn a_secret_file_is_read_without_its_newline_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        let from_file = Seal::from_file(&p).unwrap();
        let t = Seal::new(b"0123456789abcdef").head_tag(b"k", b"m");
        assert!(from_file.head_ok(b"k", b"m", &t));
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(
            Seal::from_file(&p),
            Err(SecretError::Short { len: 5, .. })
        ));
        assert!(matches!(
            Seal::from_file(&dir.path().join("absent")),
            Err(SecretError::Read { .. })
        ));
    }
}
