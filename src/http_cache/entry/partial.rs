//! The stored record of a partial response (RFC 9111 3.3): the head of the latest 206, the
//! complete length, and the byte pieces the row's value holds, in order.
//!
//! Invariant: format version 3 with tag `P`; [`PartialRecord::decode`] is its one decoder, checks
//! every length and the pieces' order, and never panics.

use super::{DecodeError, Reader, StoredHead, decode_head};
use crate::http_cache::range::{Piece, Pieces};

/// Format version of a partial record (the first byte).
pub const PARTIAL_FORMAT_VERSION: u8 = 3;
const TAG_PARTIAL: u8 = b'P';
/// Head format the embedded head follows (with the rule fields).
const HEAD_VERSION: u8 = 2;

/// What a partial entry's meta holds; its value is the pieces' bytes, concatenated.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialRecord {
    /// The latest 206's head (`body_len` and `body_digest` describe the stored value).
    pub head: StoredHead,
    /// Length of the complete representation (from `Content-Range`).
    pub complete_len: u64,
    /// The spans held.
    pub pieces: Pieces,
}

impl PartialRecord {
    /// Encodes with the version byte and tag.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(PARTIAL_FORMAT_VERSION);
        out.push(TAG_PARTIAL);
        self.head.encode_body(&mut out);
        out.extend_from_slice(&self.complete_len.to_le_bytes());
        let list = self.pieces.as_slice();
        let n = list.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        for p in &list[..n] {
            out.extend_from_slice(&p.start.to_le_bytes());
            out.extend_from_slice(&p.end.to_le_bytes());
        }
        out
    }

    /// The one decoder of partial records.
    pub fn decode(bytes: &[u8]) -> Result<PartialRecord, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != PARTIAL_FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let mut r = Reader { buf: rest };
        match r.u8()? {
            TAG_PARTIAL => {}
            t => return Err(DecodeError::UnexpectedTag(t)),
        }
        let head = decode_head(&mut r, HEAD_VERSION)?;
        let complete_len = r.u64()?;
        let n = r.u16()?;
        let mut list = Vec::with_capacity(n.into());
        for _ in 0..n {
            let (start, end) = (r.u64()?, r.u64()?);
            if end > complete_len {
                return Err(DecodeError::Invalid("piece"));
            }
            list.push(Piece { start, end });
        }
        let pieces = Pieces::new(list).ok_or(DecodeError::Invalid("pieces"))?;
        if !r.buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        if pieces.stored_len() != head.body_len {
            return Err(DecodeError::Invalid("pieces length"));
        }
        Ok(PartialRecord {
            head,
            complete_len,
            pieces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_cache::entry::tests::sample;

    fn record() -> PartialRecord {
        let mut head = sample();
        head.body_len = 15;
        PartialRecord {
            head,
            complete_len: 100,
            pieces: Pieces::new(vec![
                Piece { start: 0, end: 5 },
                Piece { start: 50, end: 60 },
            ])
            .unwrap(),
        }
    }

    #[test]
    fn rfc9111_3_3_partial_record_round_trips() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(&bytes[..2], &[PARTIAL_FORMAT_VERSION, TAG_PARTIAL]);
        assert_eq!(PartialRecord::decode(&bytes), Ok(r));
    }

    #[test]
    fn every_truncation_and_mutation_errors_without_panic() {
        let bytes = record().encode();
        for n in 0..bytes.len() {
            assert!(PartialRecord::decode(&bytes[..n]).is_err(), "prefix of {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = PartialRecord::decode(&b);
        }
    }

    macro_rules! refused {
        ($name:ident, $edit:expr, $err:expr) => {
            #[test]
            fn $name() {
                let mut r = record();
                let edit: fn(&mut PartialRecord) = $edit;
                edit(&mut r);
                assert_eq!(PartialRecord::decode(&r.encode()), Err($err));
            }
        };
    }
    refused!(
        piece_past_the_complete_length,
        |r| r.complete_len = 55,
        DecodeError::Invalid("piece")
    );
    refused!(
        pieces_not_matching_the_body,
        |r| r.head.body_len = 14,
        DecodeError::Invalid("pieces length")
    );

    #[test]
    fn heads_and_partials_do_not_decode_as_each_other() {
        let head = sample().encode();
        assert_eq!(
            PartialRecord::decode(&head),
            Err(DecodeError::UnknownVersion(
                super::super::HEAD_FORMAT_VERSION
            ))
        );
        assert_eq!(
            super::super::HeadRecord::decode(&record().encode()),
            Err(DecodeError::UnknownVersion(PARTIAL_FORMAT_VERSION))
        );
    }
}
