//! Rows read from the store into a full memory front are kept packed (their stored head,
//! decoded on each hit): the front holds more of them within its budget, and a hit from a
//! packed row is exactly the response the store holds, under the same change stamp rules.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::super::hot::{Form, HotCache, HotValue, footprint};
use super::super::{Entries, Loaded, StoredBody, Tier};
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead};
use crate::store::Cache;

/// Shards of the front (`hot::SHARDS`): a budget is split evenly between them.
const SHARDS: usize = 16;

/// A front of 16 KiB a shard: about 5 decoded 1 KiB responses each.
const BUDGET: usize = SHARDS * (16 << 10);

/// The URL of response `i`.
fn url(i: usize) -> String {
    format!("http://origin.test/1k?r={i:05}")
}

/// The stored head of response `i` (1 KiB body, eight response fields, fresh for an hour),
/// its encoded form, its body and its cache key.
fn response(i: usize) -> (StoredHead, Vec<u8>, Vec<u8>, CacheKey) {
    let req = http::Request::get(url(i)).body(()).unwrap().into_parts().0;
    let mut res = http::Response::builder()
        .status(200)
        .header("cache-control", "max-age=3600");
    for f in 0..7 {
        res = res.header(format!("x-field-{f}"), format!("value {f} of {i}"));
    }
    let res = res.body(()).unwrap().into_parts().0;
    let mut body = format!("body {i}: ").into_bytes();
    body.resize(1024, b'.');
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let digest = xxhash_rust::xxh3::xxh3_64(&body);
    let head = StoredHead::new(&req, &res, t, t, body.len() as u64, digest, Duration::ZERO);
    let meta = head.encode();
    let key = http_cache::cache_key(&http::Method::GET, &req.uri).unwrap();
    (head, meta, body, key)
}

/// `n` responses stored through the store's own API (as a fill would leave them), and
/// entries over that store with a front of `budget` bytes.
fn stored(dir: &std::path::Path, n: usize, budget: usize) -> Entries {
    let store = Cache::open(dir).unwrap();
    for i in 0..n {
        let (_, meta, body, key) = response(i);
        store
            .set_with_meta(key.as_bytes(), &body, &meta, None, None)
            .unwrap();
    }
    Entries::new(
        store,
        HotCache::new(budget, 64 << 10, Duration::from_secs(600)),
    )
}

/// What response 0 counts in the front, decoded and packed ([`footprint`]).
fn footprints() -> (usize, usize) {
    let (head, meta, body, key) = response(0);
    let decoded = HotValue::Variant {
        head: std::sync::Arc::new(head),
        body: Bytes::from(body.clone()),
    };
    let packed = HotValue::Packed {
        meta: Bytes::from(meta),
        body: Bytes::from(body),
    };
    (
        footprint(key.as_bytes(), &decoded),
        footprint(key.as_bytes(), &packed),
    )
}

/// The head and body the front answers with (`None`: not there).
fn from_memory(e: &Entries, key: &CacheKey) -> Option<(StoredHead, Bytes)> {
    match e.load_hot(key, &http::HeaderMap::new())? {
        Loaded::Found {
            head,
            body: StoredBody::Mem(b),
            tier: Tier::Memory,
            ..
        } => Some(((*head).clone(), b)),
        other => panic!("unexpected {other:?}"),
    }
}

/// `put_read` keeps a response decoded while it fits in free room, packed once the front is
/// full (the oldest out), and never one whose body the front does not take.
#[test]
fn put_read_decodes_in_free_room_and_packs_when_full() {
    let h = HotCache::new(BUDGET, 4096, Duration::from_secs(600));
    let mut forms = Vec::new();
    for i in 0..400 {
        let (head, meta, body, key) = response(i);
        forms.push(h.put_read(
            key.as_bytes(),
            std::sync::Arc::new(head),
            Bytes::from(meta),
            Bytes::from(body),
            None,
            0.0,
        ));
        assert!(h.bytes() <= BUDGET, "after {i}: {}", h.bytes());
    }
    let first_packed = forms.iter().position(|f| *f == Form::Packed);
    assert!(
        first_packed.is_some_and(|p| forms[..p].iter().all(|f| *f == Form::Decoded)),
        "{forms:?}"
    );
    assert_eq!(forms[399], Form::Packed, "a full front packs");
    let (decoded, packed) = footprints();
    assert!(
        packed * 3 < decoded * 2,
        "packed {packed}, decoded {decoded}"
    );
    assert!(
        h.entries() > BUDGET / decoded * 3 / 2,
        "{} entries of about {packed} in {BUDGET}",
        h.entries()
    );
    let (head, meta, _, key) = response(400);
    let too_big = Bytes::from(vec![0u8; 4097]);
    let form = h.put_read(
        key.as_bytes(),
        std::sync::Arc::new(head),
        Bytes::from(meta),
        too_big,
        None,
        0.0,
    );
    assert_eq!(form, Form::NotKept);
    assert!(h.get(key.as_bytes(), None).is_none());
}

/// 300 stored responses read through a front that holds about 80 decoded: every one read
/// again from memory (the packed ones decoded) is the head and body the store holds, and the
/// front holds far more than it would decoded.
#[tokio::test]
async fn a_full_front_serves_packed_rows_equal_to_the_store() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let e = stored(dir.path(), N, BUDGET);
    for i in 0..N {
        let key = response(i).3;
        match e.load(&key, &http::HeaderMap::new()).await {
            Loaded::Found {
                tier: Tier::Disk, ..
            } => {}
            other => panic!("{i}: {other:?}"),
        }
    }
    let mut in_memory = 0;
    for i in 0..N {
        let (_, meta, body, key) = response(i);
        if let Some((head, b)) = from_memory(&e, &key) {
            in_memory += 1;
            let HeadRecord::Variant(stored) = HeadRecord::decode(&meta).unwrap() else {
                panic!("{i}: not a variant")
            };
            assert_eq!(head, stored, "{i}: head");
            assert_eq!(
                head.response_headers["x-field-3"],
                *format!("value 3 of {i}")
            );
            assert_eq!(b, body, "{i}: body");
        }
    }
    let decoded_fit = BUDGET / footprints().0;
    assert!(
        in_memory > decoded_fit * 3 / 2 && in_memory < N,
        "{in_memory} of {N} in memory, {decoded_fit} would fit decoded"
    );
    assert!(e.hot.bytes() <= BUDGET);
}

/// A packed row is used only under the change stamp it was read under: another handle's write
/// of the row (as another process would) makes the next load read the store's new response.
#[tokio::test]
async fn a_packed_row_rewritten_by_another_handle_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let e = stored(dir.path(), 200, BUDGET);
    for i in 0..200 {
        e.load(&response(i).3, &http::HeaderMap::new()).await;
    }
    let (_, _, _, key) = response(199); // the last read: packed, and not evicted
    assert!(from_memory(&e, &key).is_some());
    let (_, meta, body, _) = response(7);
    Cache::open(dir.path())
        .unwrap()
        .set_with_meta(key.as_bytes(), &body, &meta, None, None)
        .unwrap();
    assert!(from_memory(&e, &key).is_none(), "a stale packed row served");
    match e.load(&key, &http::HeaderMap::new()).await {
        Loaded::Found {
            body: StoredBody::Mem(b),
            tier: Tier::Disk,
            ..
        } => assert_eq!(b, body),
        other => panic!("unexpected {other:?}"),
    }
}
