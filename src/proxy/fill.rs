//! Cache fill: stream an origin body to the client while writing it to the store.
//!
//! Invariants: the entry commits only after the origin body ended cleanly with the declared
//! length and within `max_object_size`; otherwise the half-written value is dropped (no row,
//! no file). A client that goes away does not stop a fill that is still storing, so waiters
//! coalesced behind it still get the entry. An origin failure mid-body reaches the client as
//! a body error, so its connection is aborted rather than ending with a short body.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::coalesce::{Outcome, Permit};
use crate::entries::Invalidations;
use crate::entries::health::StoreHealth;
use crate::entries::hot::HotCache;
use crate::entries::lease::Lease;
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead, Vary};
use crate::store::Cache;

/// Where and what to store for one response.
#[derive(Debug)]
pub struct FillPlan {
    store: Cache,
    hot: Arc<HotCache>,
    inv: Arc<Invalidations>,
    health: Arc<StoreHealth>,
    /// Invalidation generation when the fetch started.
    generation: u64,
    /// Row key of the variant (the URL key when the response does not vary).
    row_key: Vec<u8>,
    /// URL key and Vary index to write beside a varying variant.
    index: Option<(Vec<u8>, Vary)>,
    /// Tag shared by all rows of one URL, for purge and invalidation.
    tag: String,
    head: StoredHead,
    max_object_size: u64,
    expected_len: Option<u64>,
}

impl FillPlan {
    /// Plan the fill of a storable response, or `None` when it cannot be stored
    /// (`Vary: *`, or declared larger than `max_object_size`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sinks: &Sinks,
        key: &CacheKey,
        req: &Parts,
        res: &http::response::Parts,
        request_time: SystemTime,
        response_time: SystemTime,
        fetch_delta: Duration,
        max_object_size: u64,
    ) -> Option<FillPlan> {
        let expected_len = res
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if expected_len.is_some_and(|n| n > max_object_size) {
            return None;
        }
        let vary = Vary::from_headers(&res.headers);
        let (row_key, index) = match &vary {
            Vary::Any => return None,
            Vary::None => (key.as_bytes().to_vec(), None),
            Vary::Headers(names) => (
                http_cache::variant_key(key, names, &req.headers),
                Some((key.as_bytes().to_vec(), vary.clone())),
            ),
        };
        let head = StoredHead::new(req, res, request_time, response_time, 0, 0, fetch_delta);
        Some(FillPlan {
            store: sinks.store.clone(),
            hot: sinks.hot.clone(),
            inv: sinks.inv.clone(),
            health: sinks.health.clone(),
            generation: sinks.inv.generation(),
            row_key,
            index,
            tag: key.as_str().to_string(),
            head,
            max_object_size,
            expected_len,
        })
    }
}

impl FillPlan {
    /// Apply a configuration rule: its forced TTL and name go into the stored head.
    pub fn with_rule(mut self, rule: Option<&crate::http_cache::Rule>) -> Self {
        if let Some(r) = rule {
            self.head.forced_ttl = r.ttl;
            self.head.rule = Some(r.name.clone());
            self.head.memo = Default::default();
        }
        self
    }
}

/// Where fills write: the store, the in-memory front, and the invalidation record.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// The disk store.
    pub store: Cache,
    /// The in-memory front.
    pub hot: Arc<HotCache>,
    /// When URLs were last invalidated.
    pub inv: Arc<Invalidations>,
    /// Whether the store accepts writes.
    pub health: Arc<StoreHealth>,
}

enum Msg {
    Chunk(Bytes),
    Commit(Box<StoredHead>),
}

/// Run the fill to completion. `to_client` receives the body (dropped early if the client
/// leaves). The origin body is abandoned (not stored, the client's body fails) when no chunk
/// arrives within `chunk_timeout` or it is not complete within `body_timeout`.
pub async fn run(
    plan: FillPlan,
    mut body: Incoming,
    mut to_client: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    permit: Option<Permit>,
    lease: Option<Lease>,
    chunk_timeout: Duration,
    body_timeout: Option<Duration>,
) {
    let deadline = body_timeout.map(|t| tokio::time::Instant::now() + t);
    let FillPlan {
        store,
        hot,
        inv,
        health,
        generation,
        row_key,
        index,
        tag,
        head,
        max_object_size,
        expected_len,
    } = plan;
    let (wtx, mut wrx) = mpsc::channel::<Msg>(8);
    let writer = tokio::task::spawn_blocking(move || -> crate::store::Result<bool> {
        let mut w = store.writer(&row_key, None, Some(&tag))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut n = 0u64;
        while let Some(msg) = wrx.blocking_recv() {
            match msg {
                Msg::Chunk(b) => {
                    w.write_all(&b)?;
                    hasher.update(&b);
                    n += b.len() as u64;
                }
                Msg::Commit(mut head) => {
                    head.body_len = n;
                    head.body_digest = hasher.digest();
                    if inv.since(&tag, generation) {
                        return Ok(false); // invalidated while fetching: drop it
                    }
                    w.set_meta(HeadRecord::Variant(*head).encode());
                    w.commit()?;
                    hot.remove(&row_key);
                    if inv.since(&tag, generation) {
                        // Invalidated between the check and the commit: undo.
                        store.delete(&row_key)?;
                        return Ok(false);
                    }
                    if let Some((url_key, vary)) = index {
                        let mut iw = store.writer(&url_key, None, Some(&tag))?;
                        iw.set_meta(HeadRecord::VaryIndex(vary).encode());
                        iw.commit()?;
                        hot.remove(&url_key);
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false) // abandoned: dropping `w` removes what was written
    });
    let mut storing = Some(wtx);
    let mut total = 0u64;
    let mut too_large = false;
    let complete = loop {
        let wake = tokio::time::Instant::now() + chunk_timeout;
        let wake = deadline.map_or(wake, |d| d.min(wake));
        let frame = match tokio::time::timeout_at(wake, body.frame()).await {
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "origin body stalled");
                if let Some(tx) = to_client.take() {
                    let _ = tx.send(Err(e)).await;
                }
                break false;
            }
            Ok(None) => break expected_len.is_none_or(|n| n == total),
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "origin body failed");
                if let Some(tx) = to_client.take() {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                }
                break false;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not stored
        };
        total += data.len() as u64;
        if total > max_object_size && storing.is_some() {
            too_large = true;
            storing = None;
        }
        if let Some(tx) = &storing
            && tx.send(Msg::Chunk(data.clone())).await.is_err()
        {
            storing = None;
        }
        if let Some(tx) = &to_client
            && tx.send(Ok(data)).await.is_err()
        {
            to_client = None;
        }
        if storing.is_none() && to_client.is_none() {
            break false;
        }
    };
    // The client's body ends now, not after the store commit.
    drop(to_client);
    let mut stored = false;
    if complete && let Some(tx) = storing.take() {
        let _ = tx.send(Msg::Commit(Box::new(head))).await;
        drop(tx);
        match writer.await {
            Ok(Ok(ok)) => {
                stored = ok;
                if ok {
                    health.write_ok();
                }
            }
            Ok(Err(e)) => health.write_failed(&e),
            Err(e) => tracing::warn!(error = %e, "store writer task failed"),
        }
    } else {
        drop(storing);
        // A writer that failed early (disk full) stopped taking chunks: report why.
        if let Ok(Err(e)) = writer.await {
            health.write_failed(&e);
        }
    }
    // Other processes polling for this key see the entry before the lease goes.
    drop(lease);
    if let Some(p) = permit {
        p.finish(if stored {
            Outcome::Stored
        } else if too_large {
            Outcome::Uncacheable
        } else {
            Outcome::Abandoned
        });
    }
}
