//! A fill's commit files its entry in the memory front under the change stamps the store
//! proves are its own: the first hit of a stored URL reads no SQLite, and a write by another
//! handle (as another process) that lands between the commit and the filing leaves no stale
//! copy.

use std::time::UNIX_EPOCH;

use super::*;
use crate::entries::hot::HotCache;
use crate::entries::{Loaded, StoredBody, Tier};
use crate::store::Cache;

const URL: &str = "http://origin.test/page";

/// Entries over the store in `dir` with a 16 MiB front keeping bodies up to 512 KiB.
fn entries(dir: &std::path::Path) -> Entries {
    let hot = HotCache::new(256 << 20, 512 << 10, Duration::from_secs(1));
    Entries::new(Cache::open(dir).unwrap(), hot)
}

/// The request's headers, and the plan for storing a 200 response to it (with `Vary` when
/// `vary` names a header).
fn plan(entries: &Entries, vary: Option<&str>) -> (CacheKey, http::HeaderMap, FillPlan) {
    let req = http::Request::get(URL)
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let mut res = http::Response::builder()
        .status(200)
        .header("cache-control", "max-age=600");
    if let Some(v) = vary {
        res = res.header("vary", v);
    }
    let res = res.body(()).unwrap().into_parts().0;
    let key = http_cache::cache_key(&http::Method::GET, &req.uri).unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let plan = FillPlan::new(entries, &key, &req, &res, t, t, Duration::ZERO, 1 << 20).unwrap();
    (key, req.headers, plan)
}

/// The body the memory front answers with, without reading the store (`None`: not there).
fn from_memory(entries: &Entries, key: &CacheKey, headers: &http::HeaderMap) -> Option<Bytes> {
    match entries.load_hot(key, headers)? {
        Loaded::Found {
            body: StoredBody::Mem(b),
            tier: Tier::Memory,
            ..
        } => Some(b),
        other => panic!("unexpected {other:?}"),
    }
}

/// The body a load (front, then store) answers with.
async fn loaded(entries: &Entries, key: &CacheKey, headers: &http::HeaderMap) -> Bytes {
    match entries.load(key, headers).await {
        Loaded::Found {
            body: StoredBody::Mem(b),
            ..
        } => b,
        other => panic!("unexpected {other:?}"),
    }
}

/// Streamed fills (`EntryWriter::commit`), with and without `Vary`: a body up to one write
/// batch is answered from memory at once, a larger one (which the front would keep after a
/// read) is not, and the store has it.
#[tokio::test]
async fn a_streamed_fill_is_in_the_front_before_its_first_hit() {
    let cases = [
        // (vary, body length, kept in memory)
        (None, 1024, true),
        (Some("accept-encoding"), 1024, true),
        (None, WRITE_BATCH, true),
        (None, WRITE_BATCH + 1, false),
    ];
    for (vary, len, kept) in cases {
        let dir = tempfile::tempdir().unwrap();
        let e = entries(dir.path());
        let (key, headers, plan) = plan(&e, vary);
        let body = Bytes::from(vec![b'x'; len]);
        let mut w = plan.start();
        w.push(body.slice(..len / 2)).await;
        w.push(body.slice(len / 2..)).await;
        assert!(w.commit().await, "{vary:?} {len}: stored");
        let hot = from_memory(&e, &key, &headers);
        assert_eq!(hot.is_some(), kept, "{vary:?} {len}");
        if let Some(b) = hot {
            assert_eq!(b, body);
        }
        assert_eq!(loaded(&e, &key, &headers).await, body);
    }
}

/// Regression: a front that keeps no body bytes (`max_entry` 0) keeps none of the fill's
/// body, so it must not get the entry with an empty body in place of the real one.
#[tokio::test]
async fn a_front_keeping_no_body_bytes_gets_no_fill() {
    let dir = tempfile::tempdir().unwrap();
    let hot = HotCache::new(1 << 20, 0, Duration::from_secs(1));
    let e = Entries::new(Cache::open(dir.path()).unwrap(), hot);
    let (key, headers, plan) = plan(&e, None);
    let mut w = plan.start();
    w.push(Bytes::from_static(b"body")).await;
    assert!(w.commit().await);
    assert_eq!(from_memory(&e, &key, &headers), None);
}

/// A fill committed without a task (`FillPlan::commit_whole`) is in the front too.
#[tokio::test]
async fn a_whole_fill_is_in_the_front_before_its_first_hit() {
    let dir = tempfile::tempdir().unwrap();
    let e = entries(dir.path());
    let (key, headers, plan) = plan(&e, None);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let chunks = vec![Bytes::from_static(b"whole "), Bytes::from_static(b"body")];
    plan.commit_whole(chunks, move |stored| {
        let _ = tx.send(stored);
    });
    assert!(rx.await.unwrap());
    assert_eq!(
        from_memory(&e, &key, &headers).as_deref(),
        Some(&b"whole body"[..])
    );
}

/// Commits `body` for `plan` as the group commit does (in one transaction), without filing it
/// in the front yet.
fn commit_in_transaction(e: &Entries, plan: FillPlan, body: &'static [u8]) -> Committed {
    e.store
        .transact(|_| {
            let w = e.store.writer(&plan.row_key, None, Some(&plan.tag))?;
            let mut w = DiskWriter {
                w,
                hasher: xxhash_rust::xxh3::Xxh3::new(),
                n: 0,
            };
            let body = Bytes::from_static(body);
            w.write(std::slice::from_ref(&body))?;
            commit(
                w,
                plan,
                Some(body),
                &crate::entries::commits::Batch::new(&e.store),
            )
        })
        .unwrap()
        .expect("not invalidated")
}

/// Regression for the naive design (a stamp sampled after the commit): another handle on the
/// directory, as another process would, commits a newer response of the URL after our commit
/// and before our fill is filed. Ours is then not filed, and the next hit is theirs, from the
/// store; with nobody in between, ours is filed.
#[tokio::test]
async fn a_write_by_another_handle_after_the_commit_leaves_no_stale_copy() {
    for vary in [None, Some("accept-encoding")] {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (entries(dir.path()), entries(dir.path()));
        let (key, headers, plan_ours) = plan(&ours, vary);
        let mut c = commit_in_transaction(&ours, plan_ours, b"ours");
        let (_, _, plan_theirs) = plan(&theirs, vary);
        commit_in_transaction(&theirs, plan_theirs, b"theirs");
        c.file_in_front();
        assert_eq!(from_memory(&ours, &key, &headers), None, "{vary:?}");
        assert_eq!(&loaded(&ours, &key, &headers).await[..], b"theirs");

        let (_, _, plan_again) = plan(&ours, vary);
        commit_in_transaction(&ours, plan_again, b"again").file_in_front();
        assert_eq!(
            from_memory(&ours, &key, &headers).as_deref(),
            Some(&b"again"[..]),
            "{vary:?}: filed when nobody came between"
        );
    }
}

/// Regression (issue 18): a fill's entry in the front held its request's and response's
/// read buffers alive (hyper's URI and header values, and the body's chunks, are slices of
/// them): 1 KiB responses filed by fills held about five times what the front counted.
#[tokio::test]
async fn a_filed_fill_holds_no_slice_of_the_connections_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let e = entries(dir.path());
    // One buffer standing for hyper's read buffers: every part of the exchange is a slice.
    let buf = Bytes::from(format!("{URL}|max-age=600|text/plain|{}", "b".repeat(1024)));
    let part = |from: usize, len: usize| buf.slice(from..from + len);
    let value = |from, len| http::HeaderValue::from_maybe_shared(part(from, len)).unwrap();
    let (u, cc, ct, body) = (URL.len(), URL.len() + 1, URL.len() + 13, URL.len() + 24);
    let mut req = http::Request::get(http::Uri::from_maybe_shared(part(0, u)).unwrap())
        .body(())
        .unwrap()
        .into_parts()
        .0;
    req.headers.insert("cache-control", value(cc, 11));
    let mut res = http::Response::new(()).into_parts().0;
    res.headers.insert("cache-control", value(cc, 11));
    res.headers.insert("content-type", value(ct, 10));
    let key = http_cache::cache_key(&http::Method::GET, &req.uri).unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let plan = FillPlan::new(&e, &key, &req, &res, t, t, Duration::ZERO, 1 << 20).unwrap();
    let mut w = plan.start();
    w.push(part(body, 512)).await;
    w.push(part(body + 512, 512)).await;
    assert!(w.commit().await);
    drop((req, res));
    assert!(
        buf.is_unique(),
        "the front's entry holds a slice of the buffer"
    );
    assert_eq!(
        from_memory(&e, &key, &http::HeaderMap::new()),
        Some(Bytes::from("b".repeat(1024)))
    );
}
