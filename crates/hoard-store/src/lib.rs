//! Disk-backed key/value store modelled on Python's diskcache. Knows nothing about HTTP.
//!
//! Keys and values are bytes (serde types through [`Typed`] views). One directory holds
//! `cache.db` (SQLite in WAL mode) and value files `ab/cd/<random>.val` for values of at
//! least `min_file_size` bytes. Any number of threads and processes may open the same
//! directory: every write is one write transaction, `BEGIN IMMEDIATE` ... `COMMIT` or one
//! statement that is its own transaction (retried with backoff on `SQLITE_BUSY`), settings
//! and counters live in the database, and schema changes are
//! append-only migrations tracked in `PRAGMA user_version`.
//!
//! ```
//! use std::time::Duration;
//! use hoard_store::{Cache, Deque, EvictionPolicy, Index, Side};
//! # fn main() -> hoard_store::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path();
//! let cache = Cache::builder(dir.join("cache"))
//!     .size_limit(64 << 20) // persisted: every process sees it
//!     .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
//!     .open()?;
//! cache.set(b"user:1", b"ada", Some(Duration::from_secs(300)), Some("users"))?;
//! assert_eq!(cache.get(b"user:1")?, Some(b"ada".to_vec()));
//! assert_eq!(cache.evict("users")?, 1); // everything tagged "users"
//!
//! cache.push(b"job-1", Some("jobs"), Side::Back, None, None)?; // a queue in the cache
//! assert_eq!(cache.pull(Some("jobs"), Side::Front)?.map(|(_, v)| v), Some(b"job-1".to_vec()));
//!
//! let deque = Deque::open(dir.join("deque"))?;
//! deque.append(b"x")?;
//! let index = Index::open(dir.join("index"))?;
//! index.set(b"k", b"v")?;
//! assert_eq!(index.peekitem(false)?, Some((b"k".to_vec(), b"v".to_vec())));
//!
//! let scores = cache.typed::<(u32, String), Vec<f64>>(); // serde keys and values
//! scores.set(&(1, "ada".into()), &vec![9.5, 8.0], None, None)?;
//! let lock = hoard_store::RLock::new(&cache, b"lock:scores", Some(Duration::from_secs(30)));
//! use hoard_store::Acquire;
//! let _held = lock.hold(Duration::from_secs(1))?; // across processes; released on drop
//! # Ok(())
//! # }
//! ```
//!
//! The table of diskcache's API with its spelling here, done or not yet, is in the crate's
//! README.md.
//!
//! # Invariants
//! - A value file gets its final name only inside the transaction inserting its row and
//!   is unlinked only after the transaction deleting the row commits; an abandoned write
//!   leaves no row and no file (its temporary file is removed on drop).
//! - Faults never panic: a row whose file is missing or short, or that cannot be decoded,
//!   reads as a miss and is removed. [`Cache::check`] reports and repairs the rest.
//! - After every write the volume is within `size_limit` plus the value just written
//!   (unless more than [`MAX_CULL_PER_WRITE`] rows would have to go): expired rows are
//!   culled first, then live rows in the order of the [`EvictionPolicy`].
//!   Unlike diskcache, a write that is under the limit does not also sweep expired rows
//!   (that per-write query costs more than the rest of a `set`); expired rows read as
//!   misses and are removed by culling, [`Cache::expire`] and [`Cache::cull`].
//! - Everything the store creates is private to its owner whatever the umask: directories
//!   0700, files 0600 (`cache.db` and so its `-wal`/`-shm`, `cache.gen`, value and
//!   temporary files); see `private`.
//! - Time comes from the cache's [`Clock`]; tests use [`ManualClock`] and never sleep.
//! - Reads are exact across handles and processes although small values read again are
//!   served from memory: every write bumps shared per-key counters (`cache.gen`) and a copy
//!   is served only under the counters it was read under (see `memory`). Writes made behind
//!   the store's back (raw SQL) are seen within [`MEMORY_TRUST_SECONDS`].
//!
//! # How stale LRU/LFU order may be
//! Reads never take a write transaction. Under `least-recently-used` and
//! `least-frequently-used`, each hit is recorded in an in-memory buffer of the process
//! (latest access time and access count per key), and hit/miss counters likewise. The
//! buffer is written (in transactions of [`FLUSH_CHUNK`] keys, only the column the policy
//! orders by) when it holds [`FLUSH_KEYS`] (65,536) distinct keys,
//! when [`FLUSH_COUNTS`] (4096) hits+misses are pending, on the first access after
//! [`FLUSH_INTERVAL`] (1 s) since the last flush, on [`Cache::flush`], on
//! [`Cache::stats`]/[`Cache::check`], and when the last clone of the handle drops. So the
//! order the database sees lags by at most 65,536 keys' accesses or about one second of
//! activity per process, and this process's own pending accesses are always applied
//! before it culls by LRU/LFU. Accesses of a process that crashes are lost (eviction
//! order is advisory; data is never affected). Settings changed by another process are
//! seen by this handle's read path after its next write or [`Cache::settings`] call.
//!
//! # Code map
//! - `cache/`: [`Cache`], split by concern: `open` (builder, recovery), `pool` (shared state,
//!   connections, the write transaction), `row` (row codec, settings row), `read` (the read
//!   path), `write` (writes and culling), `evictions` (rows culled or expired, counted),
//!   `api` (the public operations), `check`, `transaction` ([`Transaction`]), `iter`
//!   (iteration), `volume` (the size limit's measure), `prepared` (the write path's
//!   statements kept prepared with each pooled connection).
//! - `schema`: migrations and every PRAGMA.  `settings`: [`Settings`], [`EvictionPolicy`].
//!   `wal_vfs`: the SQLite VFS that writes each commit's WAL frames at once.
//! - `files`: value files, [`ValueReader`], [`ValueWriter`].  `buffer`: the access buffer.
//! - `fanout`: [`FanoutCache`] (fail-soft timeout: `retry::budget`, `retry::patiently`).
//!   `memo`: `memoize` and XFetch `memoize_stampede`.
//! - `recipes/`: cross-process [`Lock`], [`RLock`], [`BoundedSemaphore`], [`Throttle`],
//!   [`Barrier`], [`Averager`] (one file each).  `checkpoint`: background WAL checkpoints.
//! - `private`: modes of what the store creates (0700/0600), [`exposure`] of a directory
//!   (Unix; `private_portable` elsewhere: platform defaults, nothing reported).
//!   `exposure`: [`Exposure`], the data.
//! - `memory`: the memory layer and the shared generation counters (`cache.gen`).
//! - `queue`: [`Cache::push`]/[`Cache::pull`]/[`Cache::peek`], [`Side`].  `deque`: [`Deque`].
//!   `index`: [`Index`].
//! - `codec`: [`Codec`], [`Postcard`], [`Json`], `Compressed` (feature `zstd`) and the one
//!   [`decode`]r.  `typed`: [`Typed`] views, [`Store`].  `memoized`: [`Memoized`].
//! - `fault`: injected write faults for tests (feature `test-hooks`).  `clock`, `error`, `retry`.

mod buffer;
mod cache;
mod checkpoint;
mod clock;
mod codec;
mod deque;
mod error;
mod exposure;
mod fanout;
mod fault;
mod files;
mod generations;
mod heap;
mod index;
mod memo;
mod memoized;
mod memory;
#[cfg(all(unix, not(hoard_store_portable)))]
mod private;
#[cfg(any(not(unix), hoard_store_portable))]
#[path = "private_portable.rs"]
mod private;
mod queue;
mod recipes;
mod retry;
mod schema;
mod settings;
mod typed;
mod wal_vfs;

pub use buffer::{FLUSH_CHUNK, FLUSH_COUNTS, FLUSH_INTERVAL, FLUSH_KEYS};
pub use cache::{
    Cache, CacheBuilder, Entry, Evictions, FileRow, KeyIter, MAX_CULL_PER_WRITE, Record, RecordNow,
    ScanEntry, ScanIter, Transaction, WriteStamp,
};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "zstd")]
pub use codec::Compressed;
pub use codec::{Codec, Json, Postcard, decode};
pub use deque::Deque;
pub use error::{Error, Result, SqliteError};
pub use fanout::{DEFAULT_FANOUT_TIMEOUT, FanoutBuilder, FanoutCache, FanoutScan};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use fault::inject_write_fault;
pub use files::{Value, ValueReader, ValueWriter};
pub use generations::{LEGACY_SLOTS as LEGACY_GENERATION_SLOTS, SLOTS as GENERATION_SLOTS};
pub use heap::sqlite_heap_bytes;
pub use index::Index;
pub use memo::{default_uniform, xfetch_should_recompute};
pub use memoized::Memoized;
pub use memory::{
    DEFAULT_BUDGET as DEFAULT_MEMORY_CACHE_SIZE, Stamp as ChangeStamp,
    TRUST as MEMORY_TRUST_SECONDS,
};
pub use private::{DIR_MODE, Exposure, FILE_MODE, effective_uid, exposure_of};
pub use queue::Side;
pub use recipes::{
    Acquire, Averager, Barrier, BoundedSemaphore, Held, Lock, LockGuard, RLock, Sleep, Throttle,
};
pub use settings::{EvictionPolicy, Settings};
pub use typed::{Store, Typed};

/// Files the store names in its directory (besides value files and `tmp/`).
pub const STORE_FILES: [&str; 4] = ["cache.db", "cache.db-wal", "cache.db-shm", memory::GEN_FILE];

/// What exposes the store in `dir` to other local accounts (see [`exposure_of`]): the
/// directory, its parents, and the files in [`STORE_FILES`].
pub fn exposure(dir: &std::path::Path) -> std::io::Result<Vec<Exposure>> {
    exposure_of(dir, &STORE_FILES)
}
