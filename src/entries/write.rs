//! Writing entries: the plan for storing one response (row key, Vary index, head, limits) and
//! the writer that streams its body into the store in batches on blocking threads and commits
//! it only when complete and not invalidated meanwhile (no row, no file otherwise).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;

use super::Entries;
use super::hot::HotValue;
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead, Vary};
use crate::store::WriteStamp;

/// Where and what to store for one response.
#[derive(Debug)]
pub struct FillPlan {
    entries: Entries,
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
        entries: &Entries,
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
            entries: entries.clone(),
            generation: entries.inv.generation(),
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
    /// The largest body this fill stores; a longer one is abandoned.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    /// The body length the response declared (`Content-Length`), if any.
    pub fn expected_len(&self) -> Option<u64> {
        self.expected_len
    }

    /// Start writing: the store's value writer is opened now.
    pub fn start(self) -> EntryWriter {
        let disk = match self
            .entries
            .store
            .writer(&self.row_key, None, Some(&self.tag))
        {
            Ok(w) => Disk::Idle(Box::new(DiskWriter {
                w,
                hasher: xxhash_rust::xxh3::Xxh3::new(),
                n: 0,
            })),
            Err(e) => Disk::Failed(Some(e)),
        };
        let keep_limit = self.keep_limit();
        EntryWriter {
            plan: self,
            disk,
            batch: Vec::new(),
            batched: 0,
            kept: (keep_limit > 0).then(Vec::new),
            kept_len: 0,
            keep_limit,
        }
    }

    /// The longest body kept in memory until the commit: for the memory front and, with a
    /// shared tier, for its copy.
    fn keep_limit(&self) -> u64 {
        let shared = self
            .entries
            .shared
            .as_ref()
            .map_or(0, |s| s.max_object_size);
        self.front_limit().max(shared)
    }

    /// The longest body a fill files in the memory front: one the front keeps and that fits
    /// in one write batch, which holds it until the commit anyway (a larger one would be
    /// held in memory for the front alone; its first hit reads the store).
    fn front_limit(&self) -> u64 {
        self.entries.hot.max_body().min(WRITE_BATCH as u64)
    }

    /// The body of `len` bytes in one exact allocation, when the memory front takes it.
    fn front_body(&self, chunks: &[Bytes], len: u64) -> Option<Bytes> {
        (len <= self.front_limit() && self.entries.hot.takes_fill(&self.row_key, len))
            .then(|| Bytes::from(chunks.concat()))
    }

    /// Whether a committed entry also goes to the shared tier (which only the async
    /// [`EntryWriter::commit`] does).
    pub fn is_shared(&self) -> bool {
        self.entries.shared.is_some()
    }

    /// Store a whole body without a task: it is written and committed in the next group
    /// commit (`commits.rs`) on a blocking thread, where `then(stored)` runs afterwards (it
    /// must not block). `stored` is `false` when a write failed (reported to the store's
    /// health) or the URL was invalidated meanwhile. Not for a shared tier ([`Self::is_shared`]).
    pub fn commit_whole(self, chunks: Vec<Bytes>, then: impl FnOnce(bool) + Send + 'static) {
        debug_assert!(
            !self.is_shared(),
            "the shared tier's copy needs EntryWriter::commit"
        );
        let (commits, store) = (self.entries.commits.clone(), self.entries.store.clone());
        let health = self.entries.health.clone();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        let body = self.front_body(&chunks, len);
        let job: super::commits::Job<Option<Committed>> = Box::new(move |batch| {
            let w = self
                .entries
                .store
                .writer(&self.row_key, None, Some(&self.tag))?;
            let mut w = DiskWriter {
                w,
                hasher: xxhash_rust::xxh3::Xxh3::new(),
                n: 0,
            };
            w.write(&chunks)?;
            commit(w, self, body, batch)
        });
        let then: super::commits::Then<Option<Committed>> = Box::new(move |r| {
            then(match r {
                Ok(Some(mut c)) => {
                    c.file_in_front();
                    health.write_ok();
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    health.write_failed(&e);
                    false
                }
            })
        });
        commits.submit(&store, job, then);
    }

    /// Apply a configuration rule: its forced TTL and name go into the stored head, and the
    /// cookies the response sets stay out of it unless it is `public` (a rule shares the
    /// response, not one client's session).
    pub fn with_rule(mut self, rule: Option<&crate::http_cache::Rule>) -> Self {
        if let Some(r) = rule {
            self.head.forced_ttl = r.ttl;
            self.head.rule = Some(r.name.clone());
            crate::http_cache::strip_unshared_cookies(&mut self.head.response_headers);
            self.head.memo = Default::default();
        }
        self
    }
}

/// Bytes a fill gathers before handing them to the store in one blocking write.
const WRITE_BATCH: usize = 256 * 1024;

/// Writes one entry's body to the store as it arrives and commits it only when complete. The
/// caller owns it in its async loop; each batch of chunks (up to [`WRITE_BATCH`] bytes) is one
/// `spawn_blocking` write, so a blocking thread only ever waits on the disk, never on the origin
/// or a client.
#[derive(Debug)]
pub struct EntryWriter {
    plan: FillPlan,
    disk: Disk,
    batch: Vec<Bytes>,
    batched: usize,
    /// The body so far, kept while the memory front or a shared tier may take it (up to
    /// `keep_limit` bytes), and the body's length so far.
    kept: Option<Vec<Bytes>>,
    kept_len: u64,
    keep_limit: u64,
}

impl EntryWriter {
    /// Still storing (no write failed, not abandoned)?
    pub fn is_storing(&self) -> bool {
        matches!(self.disk, Disk::Idle(_) | Disk::Busy(_))
    }

    /// The next chunk of the body.
    pub async fn push(&mut self, data: Bytes) {
        if !self.is_storing() {
            return;
        }
        self.kept_len += data.len() as u64;
        if let Some(kept) = self.kept.as_mut() {
            if self.kept_len > self.keep_limit {
                self.kept = None; // too large for the front and to share
            } else {
                kept.push(data.clone());
            }
        }
        self.batched += data.len();
        self.batch.push(data);
        if self.batched >= WRITE_BATCH {
            self.batched = 0;
            let batch = std::mem::take(&mut self.batch);
            self.disk.write(batch).await;
        }
    }

    /// Drop what was written (an incomplete or too large body); a write failure (disk full)
    /// is reported to the store's health.
    pub async fn abandon(self) {
        if let Some(e) = self.disk.abandon().await {
            self.plan.entries.health.write_failed(&e);
        }
    }

    /// The body is complete: write the last batch and commit the entry (and its Vary index).
    /// `true` when stored; `false` when a write failed or the URL was invalidated meanwhile.
    pub async fn commit(self) -> bool {
        let EntryWriter {
            plan,
            mut disk,
            batch,
            kept,
            kept_len,
            ..
        } = self;
        disk.settle().await;
        let health = plan.entries.health.clone();
        let Disk::Idle(mut w) = disk else {
            // A write that failed (disk full) stopped the storing: report why.
            if let Some(e) = disk.abandon().await {
                health.write_failed(&e);
            }
            return false;
        };
        let body = kept.as_deref().and_then(|k| plan.front_body(k, kept_len));
        let shared_limit = plan.entries.shared.as_ref().map(|s| s.max_object_size);
        let copy = kept.filter(|_| shared_limit.is_some_and(|n| kept_len <= n));
        // The last batch and the commit in one blocking call, in a transaction shared with
        // the fills that complete meanwhile (`commits`).
        let (commits, store) = (plan.entries.commits.clone(), plan.entries.store.clone());
        let job: super::commits::Job<Option<Committed>> = Box::new(move |shared| {
            w.write(&batch)?;
            commit(*w, plan, body, shared)
        });
        match commits.run(&store, job).await {
            Ok(Some(mut c)) => {
                c.file_in_front();
                health.write_ok();
                // Before the lease goes: other machines waiting on it then find the entry.
                if let Some(chunks) = copy {
                    let body: Vec<u8> = chunks.concat();
                    c.entries
                        .share(&c.tag, &c.row_key, &c.head, &body, c.index)
                        .await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                health.write_failed(&e);
                false
            }
        }
    }
}

/// What a store write runs on: the value writer, and the running hash and length of what it
/// was given.
struct DiskWriter {
    w: crate::store::ValueWriter,
    hasher: xxhash_rust::xxh3::Xxh3,
    n: u64,
}

impl std::fmt::Debug for DiskWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskWriter").field("n", &self.n).finish()
    }
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
#[derive(Debug)]
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

/// A committed entry, for the memory front and the shared tier.
pub(super) struct Committed {
    entries: Entries,
    tag: String,
    row_key: Vec<u8>,
    head: Arc<StoredHead>,
    index: Option<Vec<u8>>,
    front: Option<Front>,
}

/// What the memory front gets of a committed entry, and the stamps taken inside its
/// transaction that say, after the commit, whether the rows' stamps are this write's own.
struct Front {
    body: Bytes,
    row: WriteStamp,
    /// The Vary index row written beside the variant: URL key, index, stamp.
    index: Option<(Vec<u8>, Vary, WriteStamp)>,
}

impl Committed {
    /// After the transaction committed: keep the entry in the memory front, so its first hit
    /// reads no SQLite, under the change stamps the store says belong to this write
    /// ([`crate::store::Cache::stamp_after_write`]); a row another write may have changed
    /// since is not kept (its next hit reads the store).
    pub(super) fn file_in_front(&mut self) {
        let Some(front) = self.front.take() else {
            return;
        };
        let (store, hot) = (&self.entries.store, &self.entries.hot);
        let Some(stamp) = store.stamp_after_write(&self.row_key, front.row) else {
            return;
        };
        // The write set the row's access time.
        let noted = store.clock().now();
        // A head of its own: the fill's shares the connections' read buffers (hyper's
        // header values are slices of them), which an entry kept for minutes would hold.
        let value = HotValue::Variant {
            head: Arc::new(self.head.detached()),
            body: front.body,
        };
        if !hot.put_if_room(&self.row_key, value, Some(stamp), noted) {
            return;
        }
        if let Some((url_key, vary, w)) = front.index
            && let Some(stamp) = store.stamp_after_write(&url_key, w)
        {
            hot.put_if_room(&url_key, HotValue::Index(vary), Some(stamp), noted);
        }
    }
}

/// Commit a complete value (blocking, inside the group commit's transaction): `Ok(None)` when
/// its URL was invalidated meanwhile. `body`: the whole body, when the memory front keeps it.
fn commit(
    w: DiskWriter,
    plan: FillPlan,
    body: Option<Bytes>,
    batch: &super::commits::Batch<'_>,
) -> crate::store::Result<Option<Committed>> {
    let FillPlan {
        entries,
        generation,
        row_key,
        index,
        tag,
        mut head,
        ..
    } = plan;
    let (store, hot, inv) = (&entries.store, &entries.hot, &entries.inv);
    let DiskWriter { mut w, hasher, n } = w;
    head.body_len = n;
    head.body_digest = hasher.digest();
    if inv.since(&tag, generation) {
        return Ok(None); // invalidated while fetching: drop it
    }
    w.set_meta(head.encode());
    w.commit()?;
    hot.remove(&row_key);
    // Inside the transaction, after the row's change (see `Committed::file_in_front`).
    let mut front = body.and_then(|body| {
        Some(Front {
            body,
            row: store.write_stamp(&row_key)?,
            index: None,
        })
    });
    // A complete response supersedes the URL's stored pieces (RFC 9111 3.3); looked for
    // only when the transaction's store holds any.
    let partial = super::partial::row_key(tag.as_bytes());
    if batch.partial_rows()? && store.contains(&partial)? {
        store.delete(&partial)?;
    }
    if inv.since(&tag, generation) {
        // Invalidated between the check and the commit: undo.
        store.delete(&row_key)?;
        return Ok(None);
    }
    let mut index_meta = None;
    if let Some((url_key, vary)) = index {
        let meta = HeadRecord::VaryIndex(vary.clone()).encode();
        let mut iw = store.writer(&url_key, None, Some(&tag))?;
        iw.set_meta(meta.clone());
        iw.commit()?;
        hot.remove(&url_key);
        if let Some(f) = front.as_mut() {
            f.index = store.write_stamp(&url_key).map(|w| (url_key, vary, w));
        }
        index_meta = Some(meta);
    }
    Ok(Some(Committed {
        entries,
        tag,
        row_key,
        // The head as stored: its encoding keeps every field (times to the nanosecond), so a
        // copy of it serves what a head read back would.
        head: Arc::new(head),
        index: index_meta,
        front,
    }))
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
