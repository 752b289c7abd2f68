//! Key names and the row blob of the shared tier.
//!
//! Keys: every key of one URL shares one cluster hash tag (the xxh3-64 of the URL key), so
//! they live on one slot and the row scripts may touch them together:
//! - `{prefix}{<xxh3-64 hex of url_key>}:r:<xxh3-128 hex of row_key>`: a row;
//! - `{prefix}{<...>}:rows`: SET of the URL's row ids (the 32-hex part), for purge;
//! - `{prefix}{<...>}:lease`: the cross-process fetch lease.
//!
//! Row blob (all integers big-endian), version 1 (no `shared-secret-file`):
//! `1 | row_key len (u32) | row_key | meta len (u32) | meta |`
//! `body len (u64) | body xxh3-64 (u64) | body`;
//! version 2 (sealed with the fleet's secret, [`Seal`]):
//! `2 | row_key len (u32) | row_key | meta len (u32) | meta | head tag (32 bytes) |`
//! `body len (u64) | body tag (32 bytes) | body`.
//! The header (everything before the body section) is what `put_meta` replaces; the row
//! script splices it in front of the stored body section without decoding the body. A row
//! of the other version than this process writes is a miss, left alone (a fleet turning the
//! secret on or off does not delete the other half's rows).

use bytes::Bytes;

use super::seal::{Seal, TAG_LEN};

/// Blob format version (first byte) of rows without a seal.
pub const VERSION: u8 = 1;
/// Blob format version of sealed rows.
pub const VERSION_SEALED: u8 = 2;

/// The version this process writes and reads.
fn version(seal: Option<&Seal>) -> u8 {
    if seal.is_some() {
        VERSION_SEALED
    } else {
        VERSION
    }
}

/// The keys of one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlKeys {
    /// `{prefix}{<hash>}`: common part of every key of the URL.
    pub base: String,
    /// `...:rows`.
    pub rows: String,
    /// `...:lease`.
    pub lease: String,
    /// The hash tag alone (16 hex digits), the payload of `filled` messages.
    pub tag: String,
}

impl UrlKeys {
    /// Keys of `url_key` under `prefix`.
    pub fn new(prefix: &str, url_key: &str) -> Self {
        let tag = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(url_key.as_bytes()));
        let base = format!("{prefix}{{{tag}}}");
        UrlKeys {
            rows: format!("{base}:rows"),
            lease: format!("{base}:lease"),
            base,
            tag,
        }
    }

    /// The row id (32 hex digits) of `row_key`.
    pub fn row_id(row_key: &[u8]) -> String {
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(row_key))
    }

    /// The Redis key of row `row_key`.
    pub fn row(&self, row_key: &[u8]) -> String {
        format!("{}:r:{}", self.base, Self::row_id(row_key))
    }

    /// Prefix of every row key of this URL (`...:r:`), used by the purge script.
    pub fn row_prefix(&self) -> String {
        format!("{}:r:", self.base)
    }

    /// The Redis Cluster hash slot of every key of this URL (CRC16 of the tag, mod 16384).
    pub fn slot(&self) -> u16 {
        hash_slot(self.tag.as_bytes())
    }
}

/// Number of Redis Cluster hash slots.
pub const SLOTS: u16 = 16384;

/// Redis Cluster's hash slot of a hash tag: CRC16-XMODEM (polynomial 0x1021, initial 0)
/// mod [`SLOTS`].
pub fn hash_slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// Channel of invalidation messages.
pub fn invalidate_channel(prefix: &str) -> String {
    format!("{prefix}invalidate")
}

/// Channel of "fill finished / lease released" messages.
pub fn filled_channel(prefix: &str) -> String {
    format!("{prefix}filled")
}

/// The header of a row blob: version, row key, meta (and, sealed, the head's tag).
pub fn encode_header(row_key: &[u8], meta: &[u8], seal: Option<&Seal>) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + row_key.len() + meta.len() + TAG_LEN);
    out.push(version(seal));
    out.extend_from_slice(&(row_key.len() as u32).to_be_bytes());
    out.extend_from_slice(row_key);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(meta);
    if let Some(seal) = seal {
        out.extend_from_slice(&seal.head_tag(row_key, meta));
    }
    out
}

/// A whole row blob.
pub fn encode(row_key: &[u8], meta: &[u8], body: &[u8], seal: Option<&Seal>) -> Vec<u8> {
    let mut out = encode_header(row_key, meta, seal);
    out.reserve(8 + TAG_LEN + body.len());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    match seal {
        Some(seal) => out.extend_from_slice(&seal.body_tag(row_key, body)),
        None => out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_be_bytes()),
    }
    out.extend_from_slice(body);
    out
}

/// What reading a blob found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An intact row for the expected row key: (meta, body).
    Row(Vec<u8>, Bytes),
    /// An intact row of another row key (a 128-bit hash collision): a miss, left alone.
    OtherKey,
    /// A row of the other version (sealed while this process has no secret, or the
    /// reverse): a miss, left alone.
    OtherVersion,
    /// Truncated, unknown version, wrong length or digest: a miss, to be deleted.
    Damaged(&'static str),
    /// A sealed row whose head or body tag does not verify (written without the fleet's
    /// secret, or changed since): a miss, left alone (the fill that follows overwrites it).
    Forged(&'static str),
}

/// Decode a blob read for `row_key`, checking its tags with `seal` when there is one. The
/// body is a zero-copy slice of `blob`.
pub fn decode(blob: Bytes, row_key: &[u8], seal: Option<&Seal>) -> Decoded {
    let mut r = Reader { b: &blob, at: 0 };
    let Some(v) = r.take(1) else {
        return Decoded::Damaged("empty");
    };
    if v[0] != VERSION && v[0] != VERSION_SEALED {
        return Decoded::Damaged("version");
    }
    if v[0] != version(seal) {
        return Decoded::OtherVersion;
    }
    let Some(stored_key) = r.u32().and_then(|n| r.take(n as usize)) else {
        return Decoded::Damaged("truncated row key");
    };
    let Some(meta) = r.u32().and_then(|n| r.take(n as usize)) else {
        return Decoded::Damaged("truncated meta");
    };
    let head_tag = match seal {
        Some(_) => match r.take(TAG_LEN) {
            Some(t) => Some(t),
            None => return Decoded::Damaged("truncated head tag"),
        },
        None => None,
    };
    let check_len = if seal.is_some() { TAG_LEN } else { 8 };
    let (Some(len), Some(check)) = (r.u64(), r.take(check_len)) else {
        return Decoded::Damaged("truncated body header");
    };
    let start = r.at;
    if (blob.len() - start) as u64 != len {
        return Decoded::Damaged("body length");
    }
    let body = &blob[start..];
    match (seal, head_tag) {
        (Some(seal), Some(head_tag)) => {
            if stored_key != row_key {
                return Decoded::OtherKey;
            }
            if !seal.head_ok(row_key, meta, head_tag) {
                return Decoded::Forged("head tag");
            }
            if !seal.body_ok(row_key, body, check) {
                return Decoded::Forged("body tag");
            }
        }
        _ => {
            if xxhash_rust::xxh3::xxh3_64(body).to_be_bytes() != check {
                return Decoded::Damaged("body digest");
            }
            if stored_key != row_key {
                return Decoded::OtherKey;
            }
        }
    }
    let meta = meta.to_vec();
    Decoded::Row(meta, blob.slice(start..))
}

/// What a key under the prefix is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `...:r:<id>`: a row.
    Row,
    /// `...:rows`: a URL's set of row ids (one per URL).
    Rows,
    /// `...:lease`: a fetch lease.
    Lease,
}

/// The kind of `key` if it is a key of this tier under `prefix` (`None` for anything else
/// that happens to share the prefix, which maintenance never touches).
pub fn key_kind(prefix: &str, key: &[u8]) -> Option<KeyKind> {
    let rest = key.strip_prefix(prefix.as_bytes())?.strip_prefix(b"{")?;
    let (tag, rest) = (rest.get(..16)?, rest.get(16..)?);
    if !tag.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    match rest {
        b"}:rows" => Some(KeyKind::Rows),
        b"}:lease" => Some(KeyKind::Lease),
        r => {
            let id = r.strip_prefix(b"}:r:")?;
            (id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit)).then_some(KeyKind::Row)
        }
    }
}

/// A glob pattern (for SCAN MATCH) of every key under `prefix`, its glob characters escaped.
pub fn scan_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("{*");
    out
}

/// The row key and, when the peeked bytes hold all of it, the meta of a row blob from its
/// first bytes (`GETRANGE key 0 n`); `None` when the start is not a row header.
pub fn peek_header(start: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut r = Reader { b: start, at: 0 };
    if !matches!(r.take(1)?, [VERSION | VERSION_SEALED]) {
        return None;
    }
    let key = r.u32().and_then(|n| r.take(n as usize))?.to_vec();
    let meta = r.u32().and_then(|n| r.take(n as usize)).map(<[u8]>::to_vec);
    Some((key, meta))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = UrlKeys::new("hoard:", "GET http://a/");
        assert_eq!(k.tag.len(), 16);
        assert_eq!(k.base, format!("hoard:{{{}}}", k.tag));
        assert_eq!(k.rows, format!("{}:rows", k.base));
        assert_eq!(k.lease, format!("{}:lease", k.base));
        let row = k.row(b"GET http://a/\0accept=x");
        assert!(row.starts_with(&k.row_prefix()));
        assert_eq!(row.len(), k.row_prefix().len() + 32);
        // Hash tag = the text between the first '{' and the next '}'.
        for key in [&k.rows, &k.lease, &row] {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            assert_eq!(&key[open + 1..close], k.tag);
        }
        assert_ne!(
            UrlKeys::new("hoard:", "GET http://b/").tag,
            k.tag,
            "different URLs, different tags"
        );
        assert_eq!(invalidate_channel("p:"), "p:invalidate");
        assert_eq!(filled_channel("p:"), "p:filled");
    }

    #[test]
    fn hash_slots_are_redis_clusters() {
        // Redis Cluster specification: CRC16("123456789") = 0x31C3; slots from CLUSTER KEYSLOT.
        assert_eq!(hash_slot(b"123456789"), 0x31C3 % SLOTS);
        for (tag, slot) in [("foo", 12182), ("bar", 5061), ("hello", 866)] {
            assert_eq!(hash_slot(tag.as_bytes()), slot, "{tag:?}");
        }
        let k = UrlKeys::new("hoard:", "GET http://a/");
        assert_eq!(k.slot(), hash_slot(k.tag.as_bytes()));
    }

    #[test]
    fn keys_by_kind() {
        let k = UrlKeys::new("p*:", "GET http://a/");
        let row = k.row(b"x");
        let cases: &[(&[u8], Option<KeyKind>)] = &[
            (k.rows.as_bytes(), Some(KeyKind::Rows)),
            (k.lease.as_bytes(), Some(KeyKind::Lease)),
            (row.as_bytes(), Some(KeyKind::Row)),
            (b"p*:{0123456789abcdef}:other", None),
            (b"p*:{0123456789abcdeg}:rows", None),
            (b"p*:{0123}:rows", None),
            (b"q:{0123456789abcdef}:rows", None),
            (b"p*:invalidate", None),
        ];
        for (key, want) in cases {
            assert_eq!(
                key_kind("p*:", key),
                *want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(scan_pattern("p*:"), "p\\*:{*");
        assert_eq!(scan_pattern(""), "{*");
    }

    #[test]
    fn headers_peeked() {
        let blob = encode(b"row", b"meta", b"body", None);
        assert_eq!(
            peek_header(&blob),
            Some((b"row".to_vec(), Some(b"meta".to_vec())))
        );
        assert_eq!(peek_header(&blob[..10]), Some((b"row".to_vec(), None)));
        assert_eq!(peek_header(&blob[..6]), None);
        assert_eq!(peek_header(b"\x09xxxx"), None);
    }

    #[test]
    fn round_trip() {
        for (meta, body) in [
            (&b""[..], &b""[..]),
            (b"head", b"body"),
            (b"m", &[0u8; 70_000][..]),
        ] {
            for seal in [None, Some(&Seal::new(b"0123456789abcdef"))] {
                let blob = Bytes::from(encode(b"row", meta, body, seal));
                assert_eq!(
                    decode(blob, b"row", seal),
                    Decoded::Row(meta.to_vec(), Bytes::copy_from_slice(body))
                );
                // The header is a prefix of the blob (what put_meta splices).
                let blob = encode(b"row", meta, body, seal);
                assert!(blob.starts_with(&encode_header(b"row", meta, seal)));
                assert_eq!(
                    peek_header(&blob),
                    Some((b"row".to_vec(), Some(meta.to_vec())))
                );
            }
        }
    }

    #[test]
    fn damage_and_collisions() {
        let good = encode(b"row", b"meta", b"the body", None);
        let n = good.len();
        let flip_body = {
            let mut b = good.clone();
            b[n - 1] ^= 1;
            b
        };
        let bad_version = {
            let mut b = good.clone();
            b[0] = 9;
            b
        };
        let huge_meta_len = {
            let mut b = good.clone();
            b[8] = 0xff; // high byte of the meta length
            b
        };
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (&bad_version, "version"),
            (&good[..3], "truncated row key"),
            (&huge_meta_len, "truncated meta"),
            (&good[..n - 9 - 8], "truncated body header"),
            (&good[..n - 1], "body length"),
            (&[&good[..], b"x"].concat(), "body length"),
            (&flip_body, "body digest"),
        ];
        for (blob, why) in cases {
            assert_eq!(
                decode(Bytes::copy_from_slice(blob), b"row", None),
                Decoded::Damaged(why),
                "{why}"
            );
        }
        assert_eq!(decode(Bytes::from(good), b"other", None), Decoded::OtherKey);
    }

    #[test]
    fn sealed_rows_are_checked_with_the_fleets_secret() {
        let seal = Seal::new(b"0123456789abcdef");
        let good = encode(b"row", b"meta", b"the body", Some(&seal));
        let n = good.len();
        let ok = |b: &[u8], s: Option<&Seal>| decode(Bytes::copy_from_slice(b), b"row", s);
        assert_eq!(
            ok(&good, Some(&seal)),
            Decoded::Row(b"meta".to_vec(), Bytes::from_static(b"the body"))
        );
        // Whoever writes to Redis without the secret: another body, another head, a row
        // sealed with another secret, an unsealed row: none is served.
        let mut body = good.clone();
        body[n - 1] ^= 1;
        assert_eq!(ok(&body, Some(&seal)), Decoded::Forged("body tag"));
        let mut head = good.clone();
        head[9 + 3] ^= 1; // a byte of the meta
        assert_eq!(ok(&head, Some(&seal)), Decoded::Forged("head tag"));
        let forged = encode(
            b"row",
            b"meta",
            b"evil",
            Some(&Seal::new(b"a guessed secret!")),
        );
        assert_eq!(ok(&forged, Some(&seal)), Decoded::Forged("head tag"));
        // A genuine head spliced onto another genuine row's body section of the same key
        // (what put_meta does) verifies; onto a forged one it does not.
        let other_body = encode(b"row", b"m2", b"second body", Some(&seal));
        let header = encode_header(b"row", b"meta", Some(&seal));
        let spliced = [
            &header[..],
            &other_body[encode_header(b"row", b"m2", Some(&seal)).len()..],
        ]
        .concat();
        assert_eq!(
            ok(&spliced, Some(&seal)),
            Decoded::Row(b"meta".to_vec(), Bytes::from_static(b"second body"))
        );
        // The other version is a miss left alone, in either direction.
        let plain = encode(b"row", b"meta", b"the body", None);
        assert_eq!(ok(&plain, Some(&seal)), Decoded::OtherVersion);
        assert_eq!(ok(&good, None), Decoded::OtherVersion);
        assert_eq!(
            ok(&good[..n - 1], Some(&seal)),
            Decoded::Damaged("body length")
        );
        assert_eq!(
            ok(&good[..n - 9], Some(&seal)),
            Decoded::Damaged("truncated body header")
        );
        assert_eq!(
            ok(&good[..20], Some(&seal)),
            Decoded::Damaged("truncated head tag")
        );
        assert_eq!(
            decode(Bytes::from(good), b"other", Some(&seal)),
            Decoded::OtherKey
        );
    }
}
