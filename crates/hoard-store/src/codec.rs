//! Values of any serde type (diskcache's `Disk` / `JSONDisk`): a [`Codec`] turns a value into
//! bytes for the byte-level store and back.
//!
//! Invariant: every encoded value starts with one format byte ([`Format`]) and [`decode`] is
//! the one decoder, matching on it; so a value written by any codec of this crate reads back
//! with any other, and an unknown byte is [`Error::Decode`], never a panic.
//!
//! The compact default is [postcard](https://docs.rs/postcard) 1.x: a maintained serde
//! format with a stable, documented wire format (varints, no field names, no padding), no
//! unsafe code, and deterministic output for a given value, which is what keys need (a
//! `HashMap` iterates in random order, so use a `BTreeMap` inside keys). bincode 2 is
//! bigger and its serde support is a side door; MessagePack (rmp-serde) writes field names
//! by default. JSON ([`Json`], serde_json) is there for values other programs read.
//! With the cargo feature `zstd`, [`Compressed`] compresses values of at least a threshold
//! with zstd (keys are never compressed).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The first byte of every encoded value: the serialization, and whether zstd follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// postcard 1.x (the default).
    Postcard,
    /// serde_json.
    Json,
}

/// Set on the format byte when the rest is zstd-compressed.
const ZSTD_FLAG: u8 = 0x80;
const POSTCARD: u8 = 1;
const JSON: u8 = 2;

impl Format {
    fn byte(self) -> u8 {
        match self {
            Format::Postcard => POSTCARD,
            Format::Json => JSON,
        }
    }

    fn serialize<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        let mut out = vec![self.byte()];
        match self {
            Format::Postcard => {
                out = postcard::to_extend(value, out).map_err(|e| Error::Encode(e.to_string()))?
            }
            Format::Json => {
                serde_json::to_writer(&mut out, value).map_err(|e| Error::Encode(e.to_string()))?
            }
        }
        Ok(out)
    }
}

/// Encodes values for the store and decodes them back (diskcache's `Disk`).
///
/// Implementations write a format byte first (1 postcard, 2 JSON, | 0x80 zstd); [`Codec::decode`] defaults to the one
/// decoder, [`decode`].
///
/// ```
/// use hoard_store::{Codec, Json, Postcard};
/// # fn main() -> hoard_store::Result<()> {
/// let bytes = Postcard.encode(&(7u32, "seven"))?;
/// assert_eq!(bytes, [1, 7, 5, b's', b'e', b'v', b'e', b'n']);
/// assert_eq!(Json.encode(&[1, 2])?, b"\x02[1,2]");
/// // One decoder reads either.
/// let v: (u32, String) = Json.decode(&bytes)?;
/// assert_eq!(v, (7, "seven".to_string()));
/// # Ok(())
/// # }
/// ```
pub trait Codec: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Encodes a value, format byte first (may compress).
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>>;

    /// Encodes a key: deterministic (the same value always gives the same bytes) and never
    /// compressed.
    fn encode_key<T: Serialize + ?Sized>(&self, key: &T) -> Result<Vec<u8>>;

    /// Decodes bytes written by any codec of this crate.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        decode(bytes)
    }
}

/// The compact binary default: postcard 1.x behind format byte 1.
///
/// ```
/// use hoard_store::{Codec, Postcard};
/// # fn main() -> hoard_store::Result<()> {
/// let v: Vec<u16> = Postcard.decode(&Postcard.encode(&vec![1u16, 300])?)?;
/// assert_eq!(v, [1, 300]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        Format::Postcard.serialize(value)
    }
    fn encode_key<T: Serialize + ?Sized>(&self, key: &T) -> Result<Vec<u8>> {
        Format::Postcard.serialize(key)
    }
}

/// JSON (serde_json) behind format byte 2 (diskcache's `JSONDisk`).
///
/// ```
/// use hoard_store::{Codec, Json};
/// # fn main() -> hoard_store::Result<()> {
/// assert_eq!(Json.encode_key("user:1")?, b"\x02\"user:1\"");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        Format::Json.serialize(value)
    }
    fn encode_key<T: Serialize + ?Sized>(&self, key: &T) -> Result<Vec<u8>> {
        Format::Json.serialize(key)
    }
}

/// Another codec whose values of at least `threshold` encoded bytes are zstd-compressed
/// (format byte | 0x80). Cargo feature `zstd`.
///
/// ```
/// use hoard_store::{Codec, Compressed, Postcard};
/// # fn main() -> hoard_store::Result<()> {
/// let codec = Compressed::new(Postcard, 1024);
/// let big = vec![7u8; 100_000];
/// let bytes = codec.encode(&big)?;
/// assert!(bytes.len() < 1_000);
/// assert_eq!(Postcard.decode::<Vec<u8>>(&bytes)?, big); // any codec decodes it
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "zstd")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed<C> {
    inner: C,
    threshold: usize,
    level: i32,
}

#[cfg(feature = "zstd")]
impl<C: Codec> Compressed<C> {
    /// Compresses what `inner` encodes to `threshold` bytes or more, at zstd level 3.
    pub fn new(inner: C, threshold: usize) -> Compressed<C> {
        Compressed {
            inner,
            threshold,
            level: 3,
        }
    }

    /// The zstd level (1-22; 3 is zstd's default).
    pub fn level(mut self, level: i32) -> Compressed<C> {
        self.level = level;
        self
    }
}

#[cfg(feature = "zstd")]
impl<C: Codec> Codec for Compressed<C> {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        let plain = self.inner.encode(value)?;
        if plain.len() < self.threshold {
            return Ok(plain);
        }
        let mut out = vec![plain[0] | ZSTD_FLAG];
        out.extend(zstd::bulk::compress(&plain[1..], self.level)?);
        Ok(out)
    }
    fn encode_key<T: Serialize + ?Sized>(&self, key: &T) -> Result<Vec<u8>> {
        self.inner.encode_key(key)
    }
}

/// The one decoder: reads the format byte, decompresses if flagged, deserializes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(Error::Decode("empty value (no format byte)".into()));
    };
    if first & ZSTD_FLAG != 0 {
        let plain = decompress(rest)?;
        return deserialize(first & !ZSTD_FLAG, &plain);
    }
    deserialize(first, rest)
}

fn deserialize<T: DeserializeOwned>(format: u8, body: &[u8]) -> Result<T> {
    match format {
        POSTCARD => match postcard::take_from_bytes(body) {
            Ok((v, [])) => Ok(v),
            Ok((_, extra)) => Err(Error::Decode(format!(
                "postcard value followed by {} extra bytes",
                extra.len()
            ))),
            Err(e) => Err(Error::Decode(format!("postcard: {e}"))),
        },
        JSON => serde_json::from_slice(body).map_err(|e| Error::Decode(format!("json: {e}"))),
        other => Err(Error::Decode(format!("unknown format byte {other:#04x}"))),
    }
}

#[cfg(feature = "zstd")]
fn decompress(body: &[u8]) -> Result<Vec<u8>> {
    zstd::stream::decode_all(body).map_err(|e| Error::Decode(format!("zstd: {e}")))
}

#[cfg(not(feature = "zstd"))]
fn decompress(_body: &[u8]) -> Result<Vec<u8>> {
    Err(Error::Decode(
        "value is zstd-compressed; build hoard-store with the `zstd` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: BTreeMap<String, i32>,
    }

    fn user() -> User {
        User {
            id: 1,
            name: "ada".into(),
            tags: [("a".to_string(), 1), ("b".to_string(), -2)].into(),
        }
    }

    #[test]
    fn every_codec_round_trips_through_the_one_decoder() {
        let encoded: Vec<(&str, Vec<u8>)> = vec![
            ("postcard", Postcard.encode(&user()).unwrap()),
            ("json", Json.encode(&user()).unwrap()),
        ];
        for (name, bytes) in encoded {
            assert_eq!(decode::<User>(&bytes).unwrap(), user(), "{name}");
        }
    }

    #[test]
    fn format_bytes_are_fixed() {
        assert_eq!(Postcard.encode(&5u8).unwrap(), [1, 5]);
        assert_eq!(Json.encode(&5u8).unwrap(), b"\x025");
        assert_eq!(Postcard.encode_key("k").unwrap(), [1, 1, b'k']);
    }

    #[test]
    fn bad_bytes_are_decode_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (&[9, 1], "unknown format byte 0x09"),
            (&[1], "postcard"),
            (&[1, 5, 6], "extra bytes"),
            (b"\x02{", "json"),
        ];
        for (bytes, want) in cases {
            match decode::<u8>(bytes) {
                Err(Error::Decode(m)) => assert!(m.contains(want), "{bytes:?}: {m}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_are_deterministic() {
        let a = Postcard.encode_key(&(1u32, "x", user())).unwrap();
        let b = Postcard.encode_key(&(1u32, "x", user())).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Postcard.encode_key(&(2u32, "x", user())).unwrap());
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn compressed_above_threshold_only() {
        let c = Compressed::new(Postcard, 64);
        let small = c.encode(&vec![0u8; 10]).unwrap();
        assert_eq!(small[0], POSTCARD);
        let big = c.encode(&vec![0u8; 10_000]).unwrap();
        assert_eq!(big[0], POSTCARD | ZSTD_FLAG);
        assert!(big.len() < 200);
        assert_eq!(decode::<Vec<u8>>(&big).unwrap(), vec![0u8; 10_000]);
        // Keys never compress.
        assert_eq!(c.encode_key(&vec![0u8; 10_000]).unwrap()[0], POSTCARD);
    }

    #[cfg(not(feature = "zstd"))]
    #[test]
    fn compressed_values_need_the_feature() {
        match decode::<u8>(&[POSTCARD | ZSTD_FLAG, 0]) {
            Err(Error::Decode(m)) => assert!(m.contains("zstd")),
            other => panic!("{other:?}"),
        }
    }
}
