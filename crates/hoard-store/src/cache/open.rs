//! Opening a cache directory: [`CacheBuilder`], settings overlay, recovery of a corrupt
//! database (moved aside), removal of stale temporary and orphan value files.

use crate::buffer::AccessBuffer;
use crate::checkpoint::Checkpointer;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::files;
use crate::memory::{self, Generations, MemoryLayer};
use crate::private;
use crate::retry::with_retry;
use crate::schema;
use crate::settings::{EvictionPolicy, Settings};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Opens a [`Cache`] with settings that are persisted to the database.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// let cache = hoard_store::Cache::builder(dir)
///     .size_limit(1 << 20)
///     .min_file_size(4096)
///     .statistics(true)
///     .open()?;
/// assert_eq!(cache.settings().size_limit, 1 << 20);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CacheBuilder {
    pub(crate) dir: PathBuf,
    pub(crate) size_limit: Option<u64>,
    pub(crate) cull_limit: Option<u32>,
    pub(crate) eviction_policy: Option<EvictionPolicy>,
    pub(crate) min_file_size: Option<u64>,
    pub(crate) statistics: Option<bool>,
    pub(crate) sqlite_mmap_size: Option<u64>,
    pub(crate) sqlite_cache_size: Option<i64>,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) flush_interval: Duration,
    pub(crate) access_granularity: Duration,
    pub(crate) flush_on_access: bool,
    pub(crate) recover_corrupt: bool,
    pub(crate) memory_cache_size: u64,
    pub(crate) timeout: Option<Duration>,
}

impl CacheBuilder {
    /// How old buffered LRU/LFU accesses and hit/miss counts may get before the next
    /// access flushes them (default [`FLUSH_INTERVAL`](crate::FLUSH_INTERVAL), 1 s;
    /// per handle, not persisted).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Whether a read that finds buffered state older than the flush interval (or too many
    /// buffered keys) flushes it itself, in that caller's thread (default true, like
    /// diskcache, which writes on every read). An owner that calls [`Cache::flush`]
    /// periodically from a thread of its own turns this off, so no read ever waits on a
    /// write transaction.
    pub fn flush_on_access(mut self, on: bool) -> Self {
        self.flush_on_access = on;
        self
    }

    /// Under least-recently-used eviction, a row's access time is rewritten only when the new
    /// one is at least this much later (default 0: every access, as diskcache does). A
    /// coarser clock keeps a store whose many rows are read all the time from rewriting a
    /// page per row per flush; eviction order is then exact to within this much. Per handle,
    /// not persisted.
    pub fn access_granularity(mut self, granularity: Duration) -> Self {
        self.access_granularity = granularity;
        self
    }
    /// Sets and persists `size_limit` (bytes).
    pub fn size_limit(mut self, v: u64) -> Self {
        self.size_limit = Some(v);
        self
    }
    /// Sets and persists `cull_limit` (rows per cull batch; 0 disables culling on write).
    pub fn cull_limit(mut self, v: u32) -> Self {
        self.cull_limit = Some(v);
        self
    }
    /// Sets and persists the eviction policy.
    pub fn eviction_policy(mut self, v: EvictionPolicy) -> Self {
        self.eviction_policy = Some(v);
        self
    }
    /// Sets and persists `min_file_size` (bytes; values this large go to files).
    pub fn min_file_size(mut self, v: u64) -> Self {
        self.min_file_size = Some(v);
        self
    }
    /// Sets and persists whether hits/misses are counted.
    pub fn statistics(mut self, v: bool) -> Self {
        self.statistics = Some(v);
        self
    }
    /// Sets and persists `PRAGMA mmap_size` for connections.
    pub fn sqlite_mmap_size(mut self, v: u64) -> Self {
        self.sqlite_mmap_size = Some(v);
        self
    }
    /// Sets and persists `PRAGMA cache_size` for connections.
    pub fn sqlite_cache_size(mut self, v: i64) -> Self {
        self.sqlite_cache_size = Some(v);
        self
    }
    /// Uses `clock` for TTLs and access times (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Bytes of recently read small values this handle keeps in memory (default
    /// [`DEFAULT_MEMORY_CACHE_SIZE`](crate::DEFAULT_MEMORY_CACHE_SIZE), 32 MiB; 0 turns
    /// it off). A copy is served only while no process has changed its key since it was
    /// read (shared counters in `cache.gen`), so reads stay exact across processes; see
    /// the `store` module docs. Per handle, not persisted.
    pub fn memory_cache_size(mut self, bytes: u64) -> Self {
        self.memory_cache_size = bytes;
        self
    }
    /// Fail-soft timeout (diskcache's `timeout` with `retry=False`): an operation that finds
    /// the database locked by another writer for this long gives up with
    /// [`Error::Timeout`] instead of retrying for up to a minute. Reads in WAL mode never
    /// wait for writers, so this matters for writes and for a database held exclusively.
    /// [`FanoutCache`](crate::FanoutCache) turns that error into a miss / `false`. Per
    /// handle, not persisted. Default: none (busy writers are waited for, up to 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// When `cache.db` is not a database or is corrupt at open, move it (and its `-wal` and
    /// `-shm` files) aside as `cache.db.corrupt-<unix seconds>` (`cache.db-wal.corrupt-...`),
    /// log a warning, start an empty database and remove the value files nothing refers to
    /// any more. Off by default: a library user gets [`Error::Corrupt`] and decides.
    pub fn recover_corrupt(mut self, yes: bool) -> Self {
        self.recover_corrupt = yes;
        self
    }

    /// Applies the builder's overrides to `s`.
    pub(crate) fn overlay(&self, s: &mut Settings) {
        if let Some(v) = self.size_limit {
            s.size_limit = v;
        }
        if let Some(v) = self.cull_limit {
            s.cull_limit = v;
        }
        if let Some(v) = self.eviction_policy {
            s.eviction_policy = v;
        }
        if let Some(v) = self.min_file_size {
            s.min_file_size = v;
        }
        if let Some(v) = self.statistics {
            s.statistics = v;
        }
        if let Some(v) = self.sqlite_mmap_size {
            s.sqlite_mmap_size = v;
        }
        if let Some(v) = self.sqlite_cache_size {
            s.sqlite_cache_size = v;
        }
    }

    /// Creates the directory (0700) and database (0600) if needed, migrates, persists the
    /// given settings.
    /// Removes temporary files nothing has written to for an hour (left by processes killed
    /// mid-write).
    /// With [`recover_corrupt`](Self::recover_corrupt), a corrupt database is moved aside
    /// and replaced by an empty one.
    pub fn open(self) -> Result<Cache> {
        private::create_dir_all(&self.dir)?;
        // Files of earlier versions (or made under a wide umask by SQLite before this
        // version created `cache.db` itself): tightened when this account owns them. Best
        // effort: a read-only directory keeps what it has, and `check` reports it.
        for name in crate::STORE_FILES {
            let _ = private::tighten_own_file(&self.dir.join(name));
        }
        // What processes killed mid-write left behind (also reported by `check`).
        for path in stale_temp_files(&self.dir) {
            files::unlink(&path);
        }
        match self.open_db() {
            Err(Error::Corrupt(why)) if self.recover_corrupt && database_is_damaged(&self.dir) => {
                let aside = move_aside_corrupt(&self.dir)?;
                tracing::warn!(
                    target: "hoard::store",
                    dir = %self.dir.display(),
                    moved_to = %aside.display(),
                    error = %why,
                    "cache database is corrupt: moved aside, starting with an empty cache"
                );
                let cache = self.open_db()?;
                // Copies other processes hold came from the old database.
                if let Some(g) = &cache.inner.gens {
                    g.bump_all();
                }
                // Value files of the old database are orphans now.
                let fixed = cache.check(true)?.len();
                tracing::info!(target: "hoard::store", fixed, "orphan value files removed");
                Ok(cache)
            }
            r => r,
        }
    }

    pub(crate) fn open_db(&self) -> Result<Cache> {
        let defaults = Settings::default();
        let mut conn = schema::open_connection(
            &self.dir,
            self.sqlite_mmap_size.unwrap_or(defaults.sqlite_mmap_size),
            self.sqlite_cache_size.unwrap_or(defaults.sqlite_cache_size),
        )?;
        schema::migrate(&mut conn)?;
        let settings = with_retry(|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut s = read_settings(&tx)?;
            self.overlay(&mut s);
            write_settings(&tx, &s)?;
            schema::ensure_policy_index(&tx, s.eviction_policy)?;
            tx.commit()?;
            Ok(s)
        })?;
        schema::apply_tuning(&conn, &settings)?;
        if let Some(t) = self.timeout {
            conn.busy_timeout(t.min(schema::BUSY_TIMEOUT))?;
        }
        let checkpointer = Checkpointer::start(self.dir.clone());
        checkpointer.watch(&mut conn)?;
        let pool = Arc::new(Pool::new(Db::new(conn)));
        let swept = pool.clone();
        checkpointer.sweep_with(Box::new(move |which| swept.sweep(which)));
        let gens = Generations::open(&self.dir);
        let memory = (gens.is_some() && self.memory_cache_size > 0)
            .then(|| MemoryLayer::new(self.memory_cache_size));
        let inner = Inner {
            timeout: self.timeout,
            gens,
            memory,
            dir: self.dir.clone(),
            pool,
            clock: self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock)),
            policy: AtomicU8::new(0),
            statistics: AtomicBool::new(false),
            min_file_size: AtomicU64::new(0),
            tuning: Mutex::new((settings.sqlite_mmap_size, settings.sqlite_cache_size)),
            settings: Mutex::new((settings.clone(), None)),
            checkpointer,
            buffer: AccessBuffer::new(self.flush_interval)
                .with_granularity(self.access_granularity)
                .with_flush_on_access(self.flush_on_access),
        };
        inner.cache_settings(&settings);
        Ok(Cache {
            inner: Arc::new(inner),
        })
    }
}

/// Temporary files not written to for [`TEMP_GRACE`]: values being written by a process that
/// died (a live writer touches its file with every chunk), and `cache.gen` being created.
pub(crate) fn stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let gen_tmp = format!("{}.tmp-", memory::GEN_FILE);
    let values = fs::read_dir(dir.join(files::TMP_DIR)).into_iter().flatten();
    let gens = fs::read_dir(dir).into_iter().flatten().filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&gen_tmp))
    });
    values
        .chain(gens)
        .flatten()
        .map(|e| e.path())
        .filter(|p| files::older_than(p, TEMP_GRACE))
        .collect()
}

/// Whether `cache.db` is really damaged, checked apart from the open that failed (which
/// also reports "could not enable WAL" as corrupt): its header is not SQLite's, or SQLite's
/// `quick_check` fails or finds problems. A database SQLite finds intact is never moved.
pub(crate) fn database_is_damaged(dir: &Path) -> bool {
    use std::io::Read as _;
    let path = dir.join(schema::DB_FILE);
    let mut magic = [0u8; 16];
    match fs::File::open(&path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if &magic != b"SQLite format 3\0" => return true,
        Ok(()) => {}
        Err(_) => return false, // missing or shorter than a header: SQLite starts it afresh
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let check = rusqlite::Connection::open_with_flags(&path, flags).and_then(|c| {
        c.busy_timeout(schema::BUSY_TIMEOUT)?;
        c.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0))
    });
    match check {
        Ok(result) => result != "ok",
        Err(e) => matches!(Error::from(e), Error::Corrupt(_)),
    }
}

/// Renames `cache.db` and its `-wal`/`-shm` files to `<name>.corrupt-<unix seconds>`;
/// returns the new path of `cache.db`.
pub(crate) fn move_aside_corrupt(dir: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut db_aside = PathBuf::new();
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{}{suffix}", schema::DB_FILE));
        let to = dir.join(format!("{}{suffix}.corrupt-{stamp}", schema::DB_FILE));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if suffix.is_empty() {
            db_aside = to;
        }
    }
    Ok(db_aside)
}
