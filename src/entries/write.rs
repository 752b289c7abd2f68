//! Writing entries: the plan for storing one response (row key, Vary index, head, limits) and
//! the writer that streams its body into the store in batches on blocking threads and commits
//! it only when complete and not invalidated meanwhile (no row, no file otherwise).

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;

use super::Entries;
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead, Vary};

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
        let copy = self.entries.shared.is_some().then(Vec::new);
        EntryWriter {
            plan: self,
            disk,
            batch: Vec::new(),
            batched: 0,
            copy,
            copied: 0,
        }
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
            commit(w, self, batch)
        });
        let then: super::commits::Then<Option<Committed>> = Box::new(move |r| {
            then(match r {
                Ok(Some(_)) => {
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
    /// The body so far, kept while a shared tier may take it (up to its size limit).
    copy: Option<Vec<Bytes>>,
    copied: u64,
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
        if let Some(copy) = self.copy.as_mut() {
            self.copied += data.len() as u64;
            let limit = self
                .plan
                .entries
                .shared
                .as_ref()
                .map_or(0, |s| s.max_object_size);
            if self.copied > limit {
                self.copy = None; // too large to share: local only
            } else {
                copy.push(data.clone());
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
            copy,
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
        // The last batch and the commit in one blocking call, in a transaction shared with
        // the fills that complete meanwhile (`commits`).
        let (commits, store) = (plan.entries.commits.clone(), plan.entries.store.clone());
        let job: super::commits::Job<Option<Committed>> = Box::new(move |shared| {
            w.write(&batch)?;
            commit(*w, plan, shared)
        });
        match commits.run(&store, job).await {
            Ok(Some(c)) => {
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

/// Commit a complete value (blocking): `Ok(false)` when its URL was invalidated meanwhile.
/// A committed entry, for the shared tier.
pub(super) struct Committed {
    entries: Entries,
    tag: String,
    row_key: Vec<u8>,
    head: StoredHead,
    index: Option<Vec<u8>>,
}

fn commit(
    w: DiskWriter,
    plan: FillPlan,
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
        let meta = HeadRecord::VaryIndex(vary).encode();
        let mut iw = store.writer(&url_key, None, Some(&tag))?;
        iw.set_meta(meta.clone());
        iw.commit()?;
        hot.remove(&url_key);
        index_meta = Some(meta);
    }
    Ok(Some(Committed {
        entries,
        tag,
        row_key,
        head,
        index: index_meta,
    }))
}
