//! Cache fill: stream an origin body to the client while writing it to the store.
//!
//! Invariants: the entry commits only after the origin body ended cleanly with the declared
//! length and within `max_object_size`; otherwise the half-written value is dropped (no row,
//! no file). A client that goes away, or takes no chunk for its stall bound (it is then
//! dropped), does not stop a fill that is still storing, so waiters coalesced behind it still
//! get the entry. An origin failure mid-body reaches the client as a body error, so its
//! connection is aborted rather than ending with a short body. No blocking thread waits on the
//! origin or a client: the async loop owns the store writer and hands it one batch at a time.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::BodySender;
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

/// Bytes a fill gathers before handing them to the store in one blocking write.
const WRITE_BATCH: usize = 256 * 1024;

/// Bytes a fill holds for a client that reads slower than the origin sends (beyond its
/// channel). Past that the fill waits for the client, but never longer than its stall bound.
const CLIENT_LAG: usize = 4 * 1024 * 1024;

/// The client a fill streams to.
#[derive(Debug)]
pub struct ToClient {
    /// The client's response body.
    pub body: BodySender,
    /// A client that takes no chunk for this long is dropped (its body fails) while the fill
    /// goes on storing for everyone else.
    pub stall: Duration,
}

/// Chunks waiting for the client, and when it last took one.
struct Feed {
    to: ToClient,
    queue: VecDeque<Bytes>,
    queued: usize,
    since: tokio::time::Instant,
}

impl Feed {
    fn push(&mut self, b: Bytes) {
        if self.queue.is_empty() {
            self.since = tokio::time::Instant::now();
        }
        self.queued += b.len();
        self.queue.push_back(b);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let b = self.queue.pop_front()?;
        self.queued -= b.len();
        self.since = tokio::time::Instant::now();
        Some(b)
    }

    /// Hand the rest to the client, then end its body cleanly; a client that takes nothing
    /// for the stall bound is dropped.
    async fn drain(mut self) {
        while !self.queue.is_empty() {
            let tx = self.to.body.tx().clone();
            match tokio::time::timeout(self.to.stall, tx.reserve_owned()).await {
                Ok(Ok(permit)) => {
                    if let Some(b) = self.pop() {
                        permit.send(Ok(b));
                    }
                }
                Ok(Err(_)) => return, // the client went away
                Err(_) => {
                    tracing::info!(stall = ?self.to.stall, "client not reading a fill: dropped");
                    self.to.body.abort();
                    return;
                }
            }
        }
        self.to.body.finish();
    }
}

/// What a store write runs on: the value writer, and the running hash and length of what it
/// was given.
struct DiskWriter {
    w: crate::store::ValueWriter,
    hasher: xxhash_rust::xxh3::Xxh3,
    n: u64,
}

impl DiskWriter {
    fn write(&mut self, chunks: &[Bytes]) -> crate::store::Result<()> {
        for b in chunks {
            self.w.write_all(b)?;
            self.hasher.update(b);
            self.n += b.len() as u64;
        }
        Ok(())
    }
}

/// The store side of a fill. The async loop owns the writer; each batch of chunks (up to
/// [`WRITE_BATCH`] bytes) is one `spawn_blocking` write, so a blocking thread only ever waits
/// on the disk, never on the origin or a client.
enum Disk {
    Idle(Box<DiskWriter>),
    Busy(tokio::task::JoinHandle<(Box<DiskWriter>, crate::store::Result<()>)>),
    /// A write failed (its error is reported when the fill ends), or the store refused.
    Failed(Option<crate::store::Error>),
}

impl Disk {
    /// Wait for the write in flight, if any.
    async fn settle(&mut self) {
        if let Disk::Busy(task) = self {
            *self = match task.await {
                Ok((w, Ok(()))) => Disk::Idle(w),
                Ok((w, Err(e))) => {
                    discard(w);
                    Disk::Failed(Some(e))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store write task failed");
                    Disk::Failed(None)
                }
            };
        }
    }

    /// Start writing `batch` (after the write in flight).
    async fn write(&mut self, batch: Vec<Bytes>) {
        self.settle().await;
        if let Disk::Idle(_) = self {
            let Disk::Idle(mut w) = std::mem::replace(self, Disk::Failed(None)) else {
                return;
            };
            *self = Disk::Busy(tokio::task::spawn_blocking(move || {
                let r = w.write(&batch);
                (w, r)
            }));
        }
    }

    /// Drop what was written (on a blocking thread: it removes a temporary file).
    async fn abandon(mut self) -> Option<crate::store::Error> {
        self.settle().await;
        match self {
            Disk::Idle(w) => {
                discard(w);
                None
            }
            Disk::Busy(_) => None,
            Disk::Failed(e) => e,
        }
    }
}

/// Drop a value writer (removing its temporary file) off the async threads.
fn discard(w: Box<DiskWriter>) {
    drop(tokio::task::spawn_blocking(move || drop(w)));
}

/// Run the fill to completion. `to_client` receives the body; a client that goes away or
/// takes no chunk for its stall bound is dropped, and the fill goes on storing. The origin
/// body is abandoned (not stored, the client's body fails) when no chunk arrives within
/// `chunk_timeout` or it is not complete within `body_timeout`.
pub async fn run(
    plan: FillPlan,
    mut body: Incoming,
    to_client: Option<ToClient>,
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
    let mut feed = to_client.map(|to| Feed {
        to,
        queue: VecDeque::new(),
        queued: 0,
        since: tokio::time::Instant::now(),
    });
    let mut disk = match store.writer(&row_key, None, Some(&tag)) {
        Ok(w) => Some(Disk::Idle(Box::new(DiskWriter {
            w,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            n: 0,
        }))),
        Err(e) => Some(Disk::Failed(Some(e))),
    };
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut total = 0u64;
    let mut too_large = false;
    let mut origin_since = tokio::time::Instant::now();
    let complete = loop {
        let storing = matches!(disk, Some(Disk::Idle(_) | Disk::Busy(_)));
        if !storing && feed.is_none() {
            break false;
        }
        // The origin is read unless a slow client already has `CLIENT_LAG` bytes waiting;
        // while it is not read, its chunk timeout does not run.
        let read_origin = feed.as_ref().is_none_or(|f| f.queued < CLIENT_LAG);
        if !read_origin {
            origin_since = tokio::time::Instant::now();
        }
        let wake = origin_since + chunk_timeout;
        let wake = deadline.map_or(wake, |d| d.min(wake));
        let waiting = feed.as_ref().is_some_and(|f| !f.queue.is_empty());
        let (room, stalled) = match &feed {
            Some(f) if waiting => (
                Some(f.to.body.tx().clone().reserve_owned()),
                f.since + f.to.stall,
            ),
            _ => (None, wake),
        };
        tokio::select! {
            biased;
            r = async { room?.await.ok() }, if waiting => {
                match (r, feed.as_mut()) {
                    (Some(permit), Some(f)) => {
                        if let Some(b) = f.pop() {
                            permit.send(Ok(b));
                        }
                    }
                    // The client went away: the fill goes on for the store.
                    _ => feed = None,
                }
                continue;
            }
            _ = tokio::time::sleep_until(stalled), if waiting => {
                if let Some(f) = feed.take() {
                    tracing::info!(stall = ?f.to.stall, "client not reading a fill: dropped");
                    f.to.body.abort();
                }
                continue;
            }
            frame = tokio::time::timeout_at(wake, body.frame()), if read_origin => {
                let frame = match frame {
                    Err(_) => {
                        tracing::debug!("origin body stalled");
                        break false;
                    }
                    Ok(None) => break expected_len.is_none_or(|n| n == total),
                    Ok(Some(Err(e))) => {
                        tracing::debug!(error = %e, "origin body failed");
                        break false;
                    }
                    Ok(Some(Ok(f))) => f,
                };
                origin_since = tokio::time::Instant::now();
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not stored
                };
                total += data.len() as u64;
                if total > max_object_size && storing {
                    too_large = true;
                    if let Some(d) = disk.take() {
                        let _ = d.abandon().await;
                    }
                    batch.clear();
                }
                if matches!(disk, Some(Disk::Idle(_) | Disk::Busy(_))) {
                    batched += data.len();
                    batch.push(data.clone());
                    if batched >= WRITE_BATCH
                        && let Some(d) = disk.as_mut()
                    {
                        batched = 0;
                        d.write(std::mem::take(&mut batch)).await;
                    }
                }
                if let Some(f) = feed.as_mut() {
                    f.push(data);
                }
            }
        }
    };
    // The client's body ends now (once it has taken what is queued), not after the commit.
    if let Some(f) = feed.take() {
        if complete {
            tokio::spawn(f.drain());
        } else {
            f.to.body.abort();
        }
    }
    let mut stored = false;
    match disk {
        Some(mut d) if complete => {
            d.settle().await;
            match d {
                Disk::Idle(mut w) => {
                    // The last batch and the commit in one blocking call.
                    let commit = tokio::task::spawn_blocking(move || {
                        w.write(&batch)?;
                        commit(
                            *w, &store, &hot, &inv, generation, &row_key, index, &tag, head,
                        )
                    });
                    match commit.await {
                        Ok(Ok(ok)) => {
                            stored = ok;
                            if ok {
                                health.write_ok();
                            }
                        }
                        Ok(Err(e)) => health.write_failed(&e),
                        Err(e) => tracing::warn!(error = %e, "store writer task failed"),
                    }
                }
                other => {
                    // A write that failed (disk full) stopped the fill's storing: report why.
                    if let Some(e) = other.abandon().await {
                        health.write_failed(&e);
                    }
                }
            }
        }
        Some(d) => {
            if let Some(e) = d.abandon().await {
                health.write_failed(&e);
            }
        }
        None => {}
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

/// Commit a complete value (blocking): `Ok(false)` when its URL was invalidated meanwhile.
#[allow(clippy::too_many_arguments)]
fn commit(
    w: DiskWriter,
    store: &Cache,
    hot: &HotCache,
    inv: &Invalidations,
    generation: u64,
    row_key: &[u8],
    index: Option<(Vec<u8>, Vary)>,
    tag: &str,
    mut head: StoredHead,
) -> crate::store::Result<bool> {
    let DiskWriter { mut w, hasher, n } = w;
    head.body_len = n;
    head.body_digest = hasher.digest();
    if inv.since(tag, generation) {
        return Ok(false); // invalidated while fetching: drop it
    }
    w.set_meta(HeadRecord::Variant(head).encode());
    w.commit()?;
    hot.remove(row_key);
    if inv.since(tag, generation) {
        // Invalidated between the check and the commit: undo.
        store.delete(row_key)?;
        return Ok(false);
    }
    if let Some((url_key, vary)) = index {
        let mut iw = store.writer(&url_key, None, Some(tag))?;
        iw.set_meta(HeadRecord::VaryIndex(vary).encode());
        iw.commit()?;
        hot.remove(&url_key);
    }
    Ok(true)
}
