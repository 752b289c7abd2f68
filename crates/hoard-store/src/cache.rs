//! The [`Cache`] handle: connection pool, read path, write transactions, culling.
//!
//! Invariant: every write runs in one `BEGIN IMMEDIATE` transaction; value files are
//! renamed into place inside it and unlinked only after a delete commits; the read path
//! takes no write transaction except to remove a faulty row.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::buffer::{AccessBuffer, Drained};
use super::checkpoint::{self, Checkpointer};
use super::clock::{Clock, SystemClock};
use super::error::{Error, Result};
use super::files::{self, TempFile, Value, ValueReader, ValueWriter};
use super::memory::{self, Generations, Held, MemoryLayer, Stamp as ChangeStamp};
use super::private;
use super::retry::with_retry;
use super::schema;
use super::settings::{EvictionPolicy, Settings};

/// `mode` of a row whose value is the `value` column.
pub(crate) const MODE_INLINE: i64 = 1;
/// `mode` of a row whose value is the file named by `filename`.
pub(crate) const MODE_FILE: i64 = 2;
/// Idle connections kept per cache handle.
const MAX_IDLE_CONNECTIONS: usize = 32;
/// Most rows one write may cull to get back under the size limit (bounds write latency).
pub const MAX_CULL_PER_WRITE: u64 = 10_000;
/// Rows per transaction for bulk deletes (`expire`, `evict`, `clear`, `cull`).
const BULK_BATCH: i64 = 1000;
/// Temporary files older than this are reported (and removed) by `check`.
const TEMP_GRACE: Duration = Duration::from_secs(3600);
/// Rows per page of iteration.
const PAGE: i64 = 1000;

/// Columns of a full row read; indices used by [`decode_row`].
macro_rules! row_cols {
    () => {
        "rowid, mode, filename, value, expire_time, size, length(key), \
         length(meta), meta, store_time, tag, key"
    };
}
const ROW_COLS: &str = row_cols!();

/// A handle to a cache directory. Cheap to clone (an `Arc` inside), `Send + Sync`.
/// Buffered accesses and counters are flushed when the last clone drops.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("directory", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// A value with its expiry and tag (diskcache `get(expire_time=True, tag=True)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Unix seconds after which the entry is expired; `None` never expires.
    pub expire_time: Option<f64>,
    /// Tag given at `set`, for [`Cache::evict`].
    pub tag: Option<String>,
}

/// One row read by [`Cache::record`]: metadata plus a value ready to stream.
#[derive(Debug)]
pub struct Record {
    /// Small metadata stored beside the value ([`Cache::set_meta`] replaces it alone).
    pub meta: Vec<u8>,
    /// Inline bytes, or an already open file.
    pub value: Value,
    /// Unix seconds when the value was stored.
    pub store_time: f64,
    /// Unix seconds after which the entry is expired; `None` never expires.
    pub expire_time: Option<f64>,
    /// Tag given at `set`.
    pub tag: Option<String>,
}

impl Record {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        self.value.len()
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// A reader over the value (file values stream; never loaded whole).
    pub fn into_reader(self) -> ValueReader {
        ValueReader::new(self.value)
    }
}

/// One row listed by [`Cache::scan`] (no value).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Accounted size: key + meta + value bytes.
    pub size: u64,
    /// Unix seconds when stored.
    pub store_time: f64,
    /// Expiry in Unix seconds, if any.
    pub expire_time: Option<f64>,
    /// Tag, if any.
    pub tag: Option<String>,
}

/// Opens a [`Cache`] with settings that are persisted to the database.
#[derive(Debug)]
pub struct CacheBuilder {
    dir: PathBuf,
    size_limit: Option<u64>,
    cull_limit: Option<u32>,
    eviction_policy: Option<EvictionPolicy>,
    min_file_size: Option<u64>,
    statistics: Option<bool>,
    sqlite_mmap_size: Option<u64>,
    sqlite_cache_size: Option<i64>,
    clock: Option<Arc<dyn Clock>>,
    flush_interval: Duration,
    recover_corrupt: bool,
    memory_cache_size: u64,
}

impl CacheBuilder {
    /// How old buffered LRU/LFU accesses and hit/miss counts may get before the next
    /// access flushes them (default [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL), 1 s;
    /// per handle, not persisted).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
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
    /// [`DEFAULT_MEMORY_CACHE_SIZE`](super::DEFAULT_MEMORY_CACHE_SIZE), 32 MiB; 0 turns
    /// it off). A copy is served only while no process has changed its key since it was
    /// read (shared counters in `cache.gen`), so reads stay exact across processes; see
    /// the `store` module docs. Per handle, not persisted.
    pub fn memory_cache_size(mut self, bytes: u64) -> Self {
        self.memory_cache_size = bytes;
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
    fn overlay(&self, s: &mut Settings) {
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
        for name in super::STORE_FILES {
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

    fn open_db(&self) -> Result<Cache> {
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
        let checkpointer = Checkpointer::start(self.dir.clone());
        checkpointer.watch(&mut conn)?;
        let gens = Generations::open(&self.dir);
        let memory = (gens.is_some() && self.memory_cache_size > 0)
            .then(|| MemoryLayer::new(self.memory_cache_size));
        let inner = Inner {
            gens,
            memory,
            dir: self.dir.clone(),
            pool: Mutex::new(vec![conn]),
            clock: self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock)),
            policy: AtomicU8::new(0),
            statistics: AtomicBool::new(false),
            min_file_size: AtomicU64::new(0),
            tuning: Mutex::new((settings.sqlite_mmap_size, settings.sqlite_cache_size)),
            settings: Mutex::new(settings.clone()),
            checkpointer,
            buffer: AccessBuffer::new(self.flush_interval),
        };
        inner.cache_settings(&settings);
        Ok(Cache {
            inner: Arc::new(inner),
        })
    }
}

/// Temporary files not written to for [`TEMP_GRACE`]: values being written by a process that
/// died (a live writer touches its file with every chunk), and `cache.gen` being created.
fn stale_temp_files(dir: &Path) -> Vec<PathBuf> {
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
fn database_is_damaged(dir: &Path) -> bool {
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
fn move_aside_corrupt(dir: &Path) -> Result<PathBuf> {
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

/// Shared state behind every clone of a [`Cache`].
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pool: Mutex<Vec<Connection>>,
    pub(crate) clock: Arc<dyn Clock>,
    policy: AtomicU8,
    statistics: AtomicBool,
    min_file_size: AtomicU64,
    tuning: Mutex<(u64, i64)>,
    /// Last settings read from the database.
    settings: Mutex<Settings>,
    checkpointer: Checkpointer,
    pub(crate) buffer: AccessBuffer,
    /// Shared change counters (`cache.gen`); every write bumps them (see `memory`).
    gens: Option<Generations>,
    /// Copies of recently read small values, valid under `gens`.
    memory: Option<MemoryLayer>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.flush();
        self.checkpointer.stop();
    }
}

/// A pooled connection, returned to the pool on drop.
struct Conn<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && c.is_autocommit()
        {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_IDLE_CONNECTIONS {
                pool.push(c);
            }
        }
    }
}

/// Files to clean up when a write transaction ends.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Files renamed into place by this transaction: removed if it rolls back.
    created: Vec<PathBuf>,
    /// Files of rows deleted or replaced by this transaction: removed after it commits.
    unlink: Vec<PathBuf>,
    /// Hashes of keys whose rows this transaction changed: their generation counters are
    /// bumped again when it ends.
    changed: Vec<u64>,
    /// The transaction changed rows it cannot name: bump the global counter when it ends.
    changed_all: bool,
}

/// Rolls back an open transaction unless disarmed (also on panic).
struct Rollback<'a> {
    conn: &'a Connection,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A value about to be stored.
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    /// Bytes to store inline.
    Bytes(&'a [u8]),
    /// A temporary file to rename into place.
    File(TempFile),
}

/// A decoded row.
#[derive(Debug)]
struct Row {
    rowid: i64,
    mode: i64,
    filename: Option<String>,
    value: Option<Vec<u8>>,
    expire_time: Option<f64>,
    value_len: u64,
    meta: Vec<u8>,
    store_time: f64,
    tag: Option<String>,
}

/// Outcome of looking a key up.
#[derive(Debug)]
enum Found {
    Missing,
    Expired,
    Live(Row),
    /// A row exists but cannot be decoded.
    Undecodable(i64),
}

fn is_live(expire_time: Option<f64>, now: f64) -> bool {
    expire_time.is_none_or(|t| t > now)
}

/// Validates a stored relative file name before it is joined to the directory.
fn value_path(dir: &Path, rel: &str) -> Option<PathBuf> {
    let ok = !rel.is_empty()
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(':'));
    ok.then(|| dir.join(rel))
}

fn is_decode_error(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// Decodes a row selected with [`ROW_COLS`]; `Ok(None)` when it is inconsistent.
fn decode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Row>> {
    let rowid: i64 = r.get(0)?;
    let mode: i64 = r.get(1)?;
    let filename: Option<String> = r.get(2)?;
    let value: Option<Vec<u8>> = match r.get_ref(3)? {
        ValueRef::Null => None,
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
        _ => return Ok(None),
    };
    let expire_time: Option<f64> = r.get(4)?;
    let size: i64 = r.get(5)?;
    let klen: i64 = r.get(6)?;
    let mlen: i64 = r.get::<_, Option<i64>>(7)?.unwrap_or(0);
    let meta: Vec<u8> = r.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default();
    let store_time: f64 = r.get(9)?;
    let tag: Option<String> = r.get(10)?;
    let value_len = size - klen - mlen;
    let consistent = match mode {
        MODE_INLINE => value.as_ref().is_some_and(|v| v.len() as i64 == value_len),
        MODE_FILE => filename.is_some() && value_len >= 0,
        _ => false,
    };
    Ok(consistent.then_some(Row {
        rowid,
        mode,
        filename,
        value,
        expire_time,
        value_len: value_len.max(0) as u64,
        meta,
        store_time,
        tag,
    }))
}

fn found_from(r: &rusqlite::Row<'_>, now: f64) -> Result<Found> {
    let rowid: i64 = r.get(0)?;
    match decode_row(r) {
        Ok(Some(row)) if is_live(row.expire_time, now) => Ok(Found::Live(row)),
        Ok(Some(_)) => Ok(Found::Expired),
        Ok(None) => Ok(Found::Undecodable(rowid)),
        Err(e) if is_decode_error(&e) => Ok(Found::Undecodable(rowid)),
        Err(e) => Err(e.into()),
    }
}

fn lookup(c: &Connection, key: &[u8], now: f64) -> Result<Found> {
    let mut stmt = c.prepare_cached(concat!(
        "SELECT ",
        row_cols!(),
        " FROM cache WHERE key = ?1"
    ))?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        None => Ok(Found::Missing),
        Some(r) => found_from(r, now),
    }
}

/// The volume (`volume()`): bytes of keys, values and meta plus the database's own pages.
macro_rules! volume_expr {
    () => {
        "(SELECT size FROM counters WHERE id = 0) + \
         (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size())"
    };
}

/// Columns of the settings row, in the order [`settings_from`] reads them.
macro_rules! settings_cols {
    () => {
        "size_limit, cull_limit, eviction_policy, min_file_size, statistics, \
         sqlite_mmap_size, sqlite_cache_size"
    };
}

/// Decodes a row selected with [`settings_cols`]; the policy is returned as text.
fn settings_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Settings, String)> {
    Ok((
        Settings {
            size_limit: r.get::<_, i64>(0)?.max(0) as u64,
            cull_limit: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32,
            eviction_policy: EvictionPolicy::default(),
            min_file_size: r.get::<_, i64>(3)?.max(0) as u64,
            statistics: r.get::<_, i64>(4)? != 0,
            sqlite_mmap_size: r.get::<_, i64>(5)?.max(0) as u64,
            sqlite_cache_size: r.get(6)?,
        },
        r.get::<_, String>(2)?,
    ))
}

fn with_policy((s, policy): (Settings, String)) -> Result<Settings> {
    Ok(Settings {
        eviction_policy: policy.parse()?,
        ..s
    })
}

/// Reads the settings row.
pub(crate) fn read_settings(c: &Connection) -> Result<Settings> {
    let row = c
        .prepare_cached(concat!(
            "SELECT ",
            settings_cols!(),
            " FROM settings WHERE id = 0"
        ))?
        .query_row([], settings_from)?;
    with_policy(row)
}

/// The settings and [`volume_in`], in one statement (every write needs both).
fn read_settings_and_volume(c: &Connection) -> Result<(Settings, u64)> {
    let (row, volume) = c
        .prepare_cached(concat!(
            "SELECT ",
            settings_cols!(),
            ", ",
            volume_expr!(),
            " FROM settings WHERE id = 0"
        ))?
        .query_row([], |r| Ok((settings_from(r)?, r.get::<_, i64>(7)?)))?;
    Ok((with_policy(row)?, volume.max(0) as u64))
}

fn write_settings(c: &Connection, s: &Settings) -> Result<()> {
    let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
    c.prepare_cached(
        "UPDATE settings SET size_limit = ?1, cull_limit = ?2, eviction_policy = ?3, \
         min_file_size = ?4, statistics = ?5, sqlite_mmap_size = ?6, sqlite_cache_size = ?7 \
         WHERE id = 0",
    )?
    .execute(params![
        clamp(s.size_limit),
        s.cull_limit as i64,
        s.eviction_policy.as_str(),
        clamp(s.min_file_size),
        s.statistics as i64,
        clamp(s.sqlite_mmap_size),
        s.sqlite_cache_size,
    ])?;
    Ok(())
}

/// Volume in bytes: accounted row sizes plus the database size.
fn volume_in(c: &Connection) -> Result<u64> {
    let v: i64 = c
        .prepare_cached(concat!("SELECT ", volume_expr!()))?
        .query_row([], |r| r.get(0))?;
    Ok(v.max(0) as u64)
}

fn policy_to_u8(p: EvictionPolicy) -> u8 {
    EvictionPolicy::ALL
        .iter()
        .position(|x| *x == p)
        .unwrap_or(0) as u8
}

impl Inner {
    fn policy(&self) -> EvictionPolicy {
        EvictionPolicy::ALL[self.policy.load(Ordering::Relaxed) as usize % 4]
    }

    fn cache_settings(&self, s: &Settings) {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(s);
        self.policy
            .store(policy_to_u8(s.eviction_policy), Ordering::Relaxed);
        self.statistics.store(s.statistics, Ordering::Relaxed);
        self.min_file_size.store(s.min_file_size, Ordering::Relaxed);
    }

    fn conn(&self) -> Result<Conn<'_>> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let (mmap, cache) = *self.tuning.lock().unwrap_or_else(|p| p.into_inner());
                let mut c = schema::open_connection(&self.dir, mmap, cache)?;
                self.checkpointer.watch(&mut c)?;
                c
            }
        };
        Ok(Conn {
            inner: self,
            conn: Some(conn),
        })
    }

    /// Runs `f` on a pooled connection, retrying on `SQLITE_BUSY`.
    fn read<T>(&self, mut f: impl FnMut(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn()?;
        with_retry(|| f(&conn))
    }

    /// Runs `f` inside `BEGIN IMMEDIATE` ... `COMMIT`; cleans up files either way.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection, &mut Pending) -> Result<T>,
    ) -> Result<T> {
        let conn = self.conn()?;
        with_retry(|| {
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            Ok(())
        })?;
        let mut guard = Rollback {
            conn: &conn,
            armed: true,
        };
        let mut pending = Pending::default();
        let mut wal_too_big = false;
        let result = f(&conn, &mut pending).and_then(|v| {
            with_retry(|| {
                conn.prepare_cached("COMMIT")?.execute([])?;
                Ok(())
            })?;
            guard.armed = false;
            wal_too_big = self.checkpointer.committed();
            Ok(v)
        });
        drop(guard);
        let cleanup = if result.is_ok() {
            &pending.unlink
        } else {
            &pending.created
        };
        for p in cleanup {
            files::unlink(p);
        }
        if let Some(g) = &self.gens {
            for &h in &pending.changed {
                g.bump(h);
            }
            if pending.changed_all {
                g.bump_all();
            }
        }
        if wal_too_big {
            // Back-pressure (see `checkpoint`): this writer restarts the WAL, waiting for
            // readers at most RESTART_WAIT (the whole busy timeout would stall every writer
            // that long); on failure a later commit tries again.
            let _ = conn.busy_timeout(checkpoint::RESTART_WAIT);
            let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
            let _ = conn.busy_timeout(schema::BUSY_TIMEOUT);
        }
        result
    }

    /// Registers a change to `key`'s row inside a write transaction: invalidates copies of
    /// it now and again when the transaction ends (see `memory`).
    fn changed(&self, p: &mut Pending, key: &[u8]) {
        if let Some(g) = &self.gens {
            let h = memory::key_hash(key);
            g.bump(h);
            p.changed.push(h);
        }
    }

    /// Registers changes to rows that cannot be named: invalidates every copy.
    fn changed_all(&self, p: &mut Pending) {
        if let Some(g) = &self.gens {
            g.bump_all();
            p.changed_all = true;
        }
    }

    /// Records a hit/miss and (LRU/LFU) an access. `may_flush` must be false inside a
    /// write transaction: a flush needs the write lock that transaction holds.
    fn note_access(&self, key: &[u8], hit: bool, now: f64, may_flush: bool) {
        let mut due = false;
        if self.statistics.load(Ordering::Relaxed) {
            due |= self.buffer.count(hit);
        }
        if hit && self.policy().tracks_access() {
            due |= self.buffer.access(key, now);
        }
        if due && may_flush {
            self.try_flush();
        }
    }

    /// Flushes if no other thread is flushing; errors keep the counters for the next try.
    fn try_flush(&self) {
        if let Ok(_g) = self.buffer.flushing.try_lock() {
            let _ = self.flush_drained();
        }
    }

    /// Writes what the buffer holds, [`FLUSH_CHUNK`](super::buffer::FLUSH_CHUNK) keys per
    /// transaction. On error the counters are put back (accesses are dropped).
    fn flush_drained(&self) -> Result<()> {
        let policy = self.policy();
        for part in self.buffer.drain().into_chunks() {
            self.write(|c, _| part.apply(c, policy)).inspect_err(|_| {
                self.buffer.restore_counts(&part);
            })?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<()> {
        let _g = self
            .buffer
            .flushing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.flush_drained()
    }

    /// Deletes a faulty row (missing/short file, undecodable) if it is still the same row.
    fn remove_bad(&self, key: &[u8], rowid: i64, filename: Option<&str>) -> Result<()> {
        self.write(|c, p| self.remove_bad_in(c, p, key, rowid, filename))
    }

    fn remove_bad_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        rowid: i64,
        filename: Option<&str>,
    ) -> Result<()> {
        let n = c
            .prepare_cached(
                "DELETE FROM cache WHERE rowid = ?1 AND key = ?2 AND (?3 IS NULL OR filename = ?3)",
            )?
            .execute(params![rowid, key, filename])?;
        if n == 1 {
            self.changed(p, key);
        }
        if let Some(path) = filename
            .filter(|_| n == 1)
            .and_then(|f| value_path(&self.dir, f))
        {
            p.unlink.push(path);
        }
        Ok(())
    }

    /// Loads a row's whole value; `None` when its file is missing or has the wrong length.
    fn load_bytes(&self, row: &mut Row) -> Result<Option<Vec<u8>>> {
        match row.mode {
            MODE_INLINE => Ok(row.value.take()),
            _ => match row
                .filename
                .as_deref()
                .and_then(|f| value_path(&self.dir, f))
            {
                Some(path) => files::read_value_file(&path, row.value_len),
                None => Ok(None),
            },
        }
    }

    /// Opens a row's value for streaming; `None` when its file is missing or short.
    fn load_value(&self, row: &mut Row) -> Result<Option<Value>> {
        match row.mode {
            MODE_INLINE => Ok(row.value.take().map(Value::Inline)),
            _ => match row
                .filename
                .as_deref()
                .and_then(|f| value_path(&self.dir, f))
            {
                Some(path) => {
                    Ok(
                        files::open_value_file(&path, row.value_len)?.map(|file| Value::File {
                            file,
                            len: row.value_len,
                        }),
                    )
                }
                None => Ok(None),
            },
        }
    }

    /// The read path: one SELECT, then the value; faults become misses and are removed.
    fn fetch<T>(
        &self,
        key: &[u8],
        load: impl Fn(&Inner, &mut Row) -> Result<Option<T>>,
    ) -> Result<Option<(Row, T)>> {
        let now = self.clock.now();
        let found = self.read(|c| lookup(c, key, now))?;
        let out = match found {
            Found::Live(mut row) => match load(self, &mut row)? {
                Some(v) => Some((row, v)),
                None => {
                    self.remove_bad(key, row.rowid, row.filename.as_deref())?;
                    None
                }
            },
            Found::Undecodable(rowid) => {
                self.remove_bad(key, rowid, None)?;
                None
            }
            Found::Missing | Found::Expired => None,
        };
        self.note_access(key, out.is_some(), now, true);
        Ok(out)
    }

    /// `get`: from this handle's memory layer when its copy is current, else through
    /// [`fetch`](Self::fetch), keeping a copy of small values.
    pub(crate) fn get_held(&self, key: &[u8]) -> Result<Option<Held>> {
        let (Some(memory), Some(gens)) = (&self.memory, &self.gens) else {
            return Ok(self.fetch(key, |i, row| i.load_bytes(row))?.map(held));
        };
        let now = self.clock.now();
        let h = memory::key_hash(key);
        // Sampled before the database read: a change committed after it bumps the stamp.
        let stamp = gens.stamp(h);
        if let Some(known) = memory.get(h, key, stamp, now) {
            self.note_access(key, known.is_some(), now, true);
            return Ok(known);
        }
        let Some((row, value)) = self.fetch(key, |i, row| i.load_bytes(row))? else {
            memory.put(h, key, None, stamp, now);
            return Ok(None);
        };
        let inline = row.mode == MODE_INLINE;
        let out = held((row, value));
        if inline {
            memory.put(h, key, Some(out.clone()), stamp, now);
        }
        Ok(Some(out))
    }

    /// Turns a payload into a stored form inside the transaction (renaming files into place).
    fn install<'p>(&self, payload: &'p mut Payload<'_>, p: &mut Pending) -> Result<Stored<'p>> {
        match payload {
            Payload::Bytes(b) => Ok(Stored::Inline(b)),
            Payload::File(t) => {
                let len = t.len;
                let (rel, full) = t.install(&self.dir)?;
                p.created.push(full);
                Ok(Stored::File { rel, len })
            }
        }
    }

    /// Inserts or replaces the row for `key`. Returns its rowid.
    #[allow(clippy::too_many_arguments)]
    fn put_row(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        stored: &Stored<'_>,
        meta: &[u8],
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<i64> {
        let (mode, filename, value, vlen): (i64, Option<&str>, Option<&[u8]>, u64) = match stored {
            Stored::Inline(b) => (MODE_INLINE, None, Some(b), b.len() as u64),
            Stored::File { rel, len } => (MODE_FILE, Some(rel.as_str()), None, *len),
        };
        let size = (key.len() as u64 + meta.len() as u64 + vlen) as i64;
        self.changed(p, key);
        // Old row: columns are only assigned when they change, so unchanged indexed
        // columns (expire_time, tag, access_count) and the size trigger cost no page writes.
        #[allow(clippy::type_complexity)]
        let old: Option<(i64, Option<String>, Option<f64>, Option<String>, i64, i64)> = c
            .prepare_cached(
                "SELECT rowid, filename, expire_time, tag, access_count, size FROM cache WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get_ref(1)?.as_str_or_null().ok().flatten().map(String::from),
                    r.get_ref(2)?.as_f64_or_null().ok().flatten(),
                    r.get_ref(3)?.as_str_or_null().ok().flatten().map(String::from),
                    r.get_ref(4)?.as_i64().unwrap_or(-1),
                    r.get_ref(5)?.as_i64().unwrap_or(-1),
                ))
            })
            .optional()?;
        match old {
            Some((rowid, old_file, old_expire, old_tag, old_count, old_size)) => {
                let mut sql = String::from(
                    "UPDATE cache SET raw = 1, store_time = :now, access_time = :now, mode = :mode, \
                     filename = :filename, value = :value, meta = :meta",
                );
                let set_expire = old_expire != expire_time;
                let set_tag = old_tag.as_deref() != tag;
                let set_size = old_size != size;
                if set_expire {
                    sql.push_str(", expire_time = :expire_time");
                }
                if set_tag {
                    sql.push_str(", tag = :tag");
                }
                if set_size {
                    sql.push_str(", size = :size");
                }
                if old_count != 0 {
                    sql.push_str(", access_count = 0");
                }
                sql.push_str(" WHERE rowid = :rowid");
                let mut stmt = c.prepare_cached(&sql)?;
                let mut named: Vec<(&str, &dyn ToSql)> = vec![
                    (":now", &now),
                    (":mode", &mode),
                    (":filename", &filename),
                    (":value", &value),
                    (":meta", &meta),
                    (":rowid", &rowid),
                ];
                if set_expire {
                    named.push((":expire_time", &expire_time));
                }
                if set_tag {
                    named.push((":tag", &tag));
                }
                if set_size {
                    named.push((":size", &size));
                }
                stmt.execute(named.as_slice())?;
                if let Some(path) = old_file.and_then(|f| value_path(&self.dir, &f)) {
                    p.unlink.push(path);
                }
                Ok(rowid)
            }
            None => {
                c.prepare_cached(
                    "INSERT INTO cache (key, raw, store_time, expire_time, access_time, access_count, \
                     tag, size, mode, filename, value, meta) \
                     VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![key, now, expire_time, tag, size, mode, filename, value, meta])?;
                Ok(c.last_insert_rowid())
            }
        }
    }

    /// Deletes up to `limit` rows matching `filter` (with `?1` = `arg`) in `order`,
    /// never `protect`. Returns how many were deleted.
    #[allow(clippy::too_many_arguments)]
    fn delete_where(
        &self,
        c: &Connection,
        p: &mut Pending,
        filter: &str,
        order: &str,
        arg: &dyn ToSql,
        limit: i64,
        protect: i64,
    ) -> Result<u64> {
        let sql = format!(
            "DELETE FROM cache WHERE rowid IN (SELECT rowid FROM cache WHERE ({filter}) \
             AND rowid != ?2 ORDER BY {order} LIMIT ?3) RETURNING filename, key"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![arg, protect, limit])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            if let ValueRef::Blob(key) | ValueRef::Text(key) = r.get_ref(1)? {
                self.changed(p, key);
            }
            if let Some(path) = r
                .get_ref(0)?
                .as_str_or_null()
                .ok()
                .flatten()
                .and_then(|f| value_path(&self.dir, f))
            {
                p.unlink.push(path);
            }
        }
        Ok(n)
    }

    fn delete_expired(
        &self,
        c: &Connection,
        p: &mut Pending,
        now: f64,
        limit: i64,
        protect: i64,
    ) -> Result<u64> {
        self.delete_where(
            c,
            p,
            "expire_time IS NOT NULL AND expire_time <= ?1",
            "expire_time",
            &now,
            limit,
            protect,
        )
    }

    /// Culls inside the caller's transaction while the volume is over the limit:
    /// expired rows first, then by policy, in batches of `batch` rows, at most `max`
    /// rows in all. Never deletes `protect`.
    #[allow(clippy::too_many_arguments)]
    fn cull_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        s: &Settings,
        now: f64,
        protect: i64,
        batch: i64,
        max: u64,
    ) -> Result<u64> {
        let mut deleted = 0;
        let mut drained = false;
        while deleted < max && volume_in(c)? > s.size_limit {
            let mut n = self.delete_expired(c, p, now, batch, protect)?;
            if n == 0 {
                let Some(order) = s.eviction_policy.order_by() else {
                    break;
                };
                if s.eviction_policy.tracks_access() && !drained {
                    // Make this process's buffered accesses count before choosing victims.
                    Drained {
                        accesses: self.buffer.take_accesses(),
                        ..Drained::default()
                    }
                    .apply(c, s.eviction_policy)?;
                    drained = true;
                }
                n = self.delete_where(c, p, "1", order, &rusqlite::types::Null, batch, protect)?;
            }
            if n == 0 {
                break;
            }
            deleted += n;
        }
        Ok(deleted)
    }

    /// The cull every write runs (diskcache semantics, continued until under the limit).
    fn cull_on_write(
        &self,
        c: &Connection,
        p: &mut Pending,
        now: f64,
        protect: i64,
    ) -> Result<u64> {
        let (s, volume) = read_settings_and_volume(c)?;
        self.cache_settings(&s);
        if s.cull_limit == 0 || volume <= s.size_limit {
            return Ok(0);
        }
        self.cull_in(
            c,
            p,
            &s,
            now,
            protect,
            s.cull_limit as i64,
            MAX_CULL_PER_WRITE,
        )
    }

    fn payload_for<'a>(&self, value: &'a [u8]) -> Result<Payload<'a>> {
        if value.len() as u64 >= self.min_file_size.load(Ordering::Relaxed) {
            Ok(Payload::File(TempFile::write_all(&self.dir, value)?))
        } else {
            Ok(Payload::Bytes(value))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        payload: &mut Payload<'_>,
        meta: &[u8],
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<()> {
        let stored = self.install(payload, p)?;
        let rowid = self.put_row(c, p, key, &stored, meta, expire_time, tag, now)?;
        self.cull_on_write(c, p, now, rowid)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        payload: &mut Payload<'_>,
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<bool> {
        if let Found::Live(_) = lookup(c, key, now)? {
            return Ok(false);
        }
        self.put_in(c, p, key, payload, &[], expire_time, tag, now)?;
        Ok(true)
    }

    /// Reads a live value inside a transaction; faulty rows are removed and read as misses.
    fn get_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        now: f64,
    ) -> Result<Option<Entry>> {
        let out = match lookup(c, key, now)? {
            Found::Live(mut row) => match self.load_bytes(&mut row)? {
                Some(value) => Some(Entry {
                    value,
                    expire_time: row.expire_time,
                    tag: row.tag,
                }),
                None => {
                    self.remove_bad_in(c, p, key, row.rowid, row.filename.as_deref())?;
                    None
                }
            },
            Found::Undecodable(rowid) => {
                self.remove_bad_in(c, p, key, rowid, None)?;
                None
            }
            _ => None,
        };
        self.note_access(key, out.is_some(), now, false);
        Ok(out)
    }

    fn delete_in(&self, c: &Connection, p: &mut Pending, key: &[u8], now: f64) -> Result<bool> {
        // SELECT then DELETE by rowid: cheaper than DELETE ... RETURNING, which buffers
        // its output in an ephemeral table.
        let old: Option<(i64, Option<String>, Option<f64>)> = c
            .prepare_cached("SELECT rowid, filename, expire_time FROM cache WHERE key = ?1")?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get_ref(1)?
                        .as_str_or_null()
                        .ok()
                        .flatten()
                        .map(String::from),
                    r.get_ref(2)?.as_f64_or_null().ok().flatten(),
                ))
            })
            .optional()?;
        let old = match old {
            Some((rowid, file, expire_time)) => {
                c.prepare_cached("DELETE FROM cache WHERE rowid = ?1")?
                    .execute([rowid])?;
                self.changed(p, key);
                Some((file, expire_time))
            }
            None => None,
        };
        Ok(match old {
            Some((file, expire_time)) => {
                if let Some(path) = file.and_then(|f| value_path(&self.dir, &f)) {
                    p.unlink.push(path);
                }
                is_live(expire_time, now)
            }
            None => false,
        })
    }

    fn pop_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        now: f64,
    ) -> Result<Option<Vec<u8>>> {
        let value = match lookup(c, key, now)? {
            Found::Live(mut row) => self.load_bytes(&mut row)?,
            _ => None,
        };
        self.delete_in(c, p, key, now)?;
        Ok(value)
    }

    fn incr_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        delta: i64,
        default: Option<i64>,
        now: f64,
    ) -> Result<i64> {
        match lookup(c, key, now)? {
            Found::Live(row) => {
                let current = match (row.mode, &row.value) {
                    (MODE_INLINE, Some(v)) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .ok_or(Error::NotAnInteger)?,
                    _ => return Err(Error::NotAnInteger),
                };
                let next = current.checked_add(delta).ok_or(Error::NotAnInteger)?;
                let bytes = next.to_string();
                c.prepare_cached(
                    "UPDATE cache SET value = ?1, size = length(key) + length(meta) + ?2 WHERE rowid = ?3",
                )?
                .execute(params![bytes.as_bytes(), bytes.len() as i64, row.rowid])?;
                self.changed(p, key);
                Ok(next)
            }
            _ => {
                let start = default.ok_or(Error::KeyNotFound)?;
                let next = start.checked_add(delta).ok_or(Error::NotAnInteger)?;
                let bytes = next.to_string();
                let stored = Stored::Inline(bytes.as_bytes());
                let rowid = self.put_row(c, p, key, &stored, &[], None, None, now)?;
                self.cull_on_write(c, p, now, rowid)?;
                Ok(next)
            }
        }
    }

    fn touch_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        expire_time: Option<f64>,
        now: f64,
    ) -> Result<bool> {
        let n = c
            .prepare_cached(
                "UPDATE cache SET expire_time = ?1 WHERE key = ?2 \
                 AND (expire_time IS NULL OR expire_time > ?3)",
            )?
            .execute(params![expire_time, key, now])?;
        if n == 1 {
            self.changed(p, key);
        }
        Ok(n == 1)
    }

    fn contains_in(&self, c: &Connection, key: &[u8], now: f64) -> Result<bool> {
        let row: Option<Option<f64>> = c
            .prepare_cached("SELECT expire_time FROM cache WHERE key = ?1")?
            .query_row([key], |r| Ok(r.get_ref(0)?.as_f64_or_null().ok().flatten()))
            .optional()?;
        Ok(row.is_some_and(|e| is_live(e, now)))
    }
}

/// A value as stored by one row.
#[derive(Debug)]
pub(crate) enum Stored<'a> {
    Inline(&'a [u8]),
    File { rel: String, len: u64 },
}

fn held((row, value): (Row, Vec<u8>)) -> Held {
    Held {
        value,
        meta: row.meta,
        expire_time: row.expire_time,
        tag: row.tag,
    }
}

fn expire_at(now: f64, expire: Option<Duration>) -> Option<f64> {
    expire.map(|d| now + d.as_secs_f64())
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir` with the settings stored there
    /// (diskcache defaults for a new directory).
    pub fn open(dir: impl AsRef<Path>) -> Result<Cache> {
        Cache::builder(dir).open()
    }

    /// A builder whose settings are persisted to the database on [`CacheBuilder::open`].
    pub fn builder(dir: impl AsRef<Path>) -> CacheBuilder {
        CacheBuilder {
            dir: dir.as_ref().to_path_buf(),
            size_limit: None,
            cull_limit: None,
            eviction_policy: None,
            min_file_size: None,
            statistics: None,
            sqlite_mmap_size: None,
            sqlite_cache_size: None,
            clock: None,
            flush_interval: super::buffer::FLUSH_INTERVAL,
            recover_corrupt: false,
            memory_cache_size: memory::DEFAULT_BUDGET,
        }
    }

    /// The cache directory.
    pub fn directory(&self) -> &Path {
        &self.inner.dir
    }

    /// The clock this cache uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Current settings, re-read from the database (the last known copy if that read fails).
    pub fn settings(&self) -> Settings {
        match self.inner.read(read_settings) {
            Ok(s) => {
                self.inner.cache_settings(&s);
                s
            }
            Err(_) => self
                .inner
                .settings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Changes settings for every process using the directory; returns the new settings.
    /// SQLite tuning applies to connections opened afterwards (the idle pool is dropped).
    pub fn configure(&self, f: impl FnOnce(&mut Settings)) -> Result<Settings> {
        let s = self.inner.write(|c, _| {
            let mut s = read_settings(c)?;
            f(&mut s);
            write_settings(c, &s)?;
            schema::ensure_policy_index(c, s.eviction_policy)?;
            Ok(s)
        })?;
        self.inner.cache_settings(&s);
        *self.inner.tuning.lock().unwrap_or_else(|p| p.into_inner()) =
            (s.sqlite_mmap_size, s.sqlite_cache_size);
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(s)
    }

    /// Stores `value` under `key`, replacing any previous value; then culls.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.set_with_meta(key, value, &[], expire, tag)
    }

    /// Like [`set`](Cache::set), also storing `meta` beside the value.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        let payload = self.inner.payload_for(value)?;
        self.put_payload(key, payload, meta, expire, tag)
    }

    pub(crate) fn put_payload(
        &self,
        key: &[u8],
        mut payload: Payload<'_>,
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        super::fault::check(&self.inner.dir)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            self.inner
                .put_in(c, p, key, &mut payload, meta, expire_time, tag, now)
        })
    }

    /// Stores everything `reader` yields under `key`, streaming large values to a file.
    /// Returns the number of bytes stored. On error nothing is stored.
    pub fn set_reader(
        &self,
        key: &[u8],
        mut reader: impl Read,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<u64> {
        let mut w = self.writer(key, expire, tag)?;
        std::io::copy(&mut reader, &mut w)?;
        w.commit()
    }

    /// A writer for a value to be stored under `key` on [`ValueWriter::commit`].
    pub fn writer(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<ValueWriter> {
        Ok(ValueWriter {
            cache: self.clone(),
            key: key.to_vec(),
            expire,
            tag: tag.map(String::from),
            meta: Vec::new(),
            threshold: self.inner.min_file_size.load(Ordering::Relaxed).max(1),
            buf: Vec::new(),
            file: None,
            written: 0,
        })
    }

    /// The live value of `key`. Counts a hit or miss and (LRU/LFU) an access.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get_held(key)?.map(|h| h.value))
    }

    /// The live value of `key` with its expire time and tag.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        Ok(self.inner.get_held(key)?.map(|h| Entry {
            value: h.value,
            expire_time: h.expire_time,
            tag: h.tag,
        }))
    }

    /// One SELECT returning meta and value (inline bytes or an already open file).
    /// Counts hit/miss and access like [`get`](Cache::get); expired rows read as `None`.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>> {
        Ok(self
            .inner
            .fetch(key, |i, row| i.load_value(row))?
            .map(|(row, value)| Record {
                meta: row.meta,
                value,
                store_time: row.store_time,
                expire_time: row.expire_time,
                tag: row.tag,
            }))
    }

    /// Meta of a live row, read without counting a hit or miss and without recording an
    /// access (for inspection tools that must not disturb statistics or eviction order).
    pub fn peek_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.inner.clock.now();
        self.inner.read(|c| {
            Ok(c.prepare_cached(
                "SELECT meta FROM cache WHERE key = ?1 \
                 AND (expire_time IS NULL OR expire_time > ?2)",
            )?
            .query_row(params![key, now], |r| r.get::<_, Vec<u8>>(0))
            .optional()?)
        })
    }

    /// Replaces meta and expire time of a live row without touching its value.
    /// Returns false when there is no live row.
    pub fn set_meta(&self, key: &[u8], meta: &[u8], expire: Option<Duration>) -> Result<bool> {
        super::fault::check(&self.inner.dir)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            let n = c
                .prepare_cached(
                    "UPDATE cache SET meta = ?1, expire_time = ?2, \
                     size = size - length(meta) + ?3 WHERE key = ?4 \
                     AND (expire_time IS NULL OR expire_time > ?5)",
                )?
                .execute(params![meta, expire_time, meta.len() as i64, key, now])?;
            if n == 1 {
                self.inner.changed(p, key);
            }
            Ok(n == 1)
        })
    }

    /// Stores `value` only if `key` is absent or expired (atomic across processes).
    /// Returns whether it was stored.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let mut payload = self.inner.payload_for(value)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            self.inner
                .add_in(c, p, key, &mut payload, expire_time, tag, now)
        })
    }

    /// Deletes `key`. Returns whether a live entry was deleted.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let now = self.inner.clock.now();
        self.inner
            .write(|c, p| self.inner.delete_in(c, p, key, now))
    }

    /// Deletes `key` and returns its live value.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.inner.clock.now();
        self.inner.write(|c, p| self.inner.pop_in(c, p, key, now))
    }

    /// Sets a new expiry (from now) on a live entry. Returns false when absent.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        let now = self.inner.clock.now();
        self.inner
            .write(|c, p| self.inner.touch_in(c, p, key, expire_at(now, expire), now))
    }

    /// Atomically adds `delta` to the decimal integer stored at `key` and returns the result.
    /// A missing key starts at `default` (error [`Error::KeyNotFound`] without one).
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        let now = self.inner.clock.now();
        self.inner
            .write(|c, p| self.inner.incr_in(c, p, key, delta, default, now))
    }

    /// Atomically subtracts `delta`; see [`incr`](Cache::incr).
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.incr(
            key,
            delta.checked_neg().ok_or(Error::NotAnInteger)?,
            default,
        )
    }

    /// Whether a live entry exists (does not count as a hit or access).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        let now = self.inner.clock.now();
        self.inner.read(|c| self.inner.contains_in(c, key, now))
    }

    /// Runs bulk deletes in batches of [`BULK_BATCH`] rows per transaction.
    fn bulk_delete(&self, filter: &str, order: &str, arg: &dyn ToSql) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.inner.write(|c, p| {
                self.inner
                    .delete_where(c, p, filter, order, arg, BULK_BATCH, -1)
            })?;
            total += n;
            if n < BULK_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes every expired row (per the cache clock); returns how many.
    pub fn expire(&self) -> Result<u64> {
        let now = self.inner.clock.now();
        self.bulk_delete(
            "expire_time IS NOT NULL AND expire_time <= ?1",
            "expire_time",
            &now,
        )
    }

    /// Deletes every row tagged `tag`; returns how many.
    pub fn evict(&self, tag: &str) -> Result<u64> {
        self.bulk_delete("tag IS NOT NULL AND tag = ?1", "tag", &tag)
    }

    /// Deletes every row; returns how many.
    pub fn clear(&self) -> Result<u64> {
        self.bulk_delete("1", "rowid", &rusqlite::types::Null)
    }

    /// Deletes expired rows, then evicts by policy until the volume is within the limit.
    /// Returns how many rows were deleted.
    pub fn cull(&self) -> Result<u64> {
        let mut total = self.expire()?;
        let now = self.inner.clock.now();
        loop {
            let n = self.inner.write(|c, p| {
                let s = read_settings(c)?;
                self.inner.cache_settings(&s);
                self.inner.cull_in(
                    c,
                    p,
                    &s,
                    now,
                    -1,
                    (s.cull_limit as i64).max(1),
                    BULK_BATCH as u64,
                )
            })?;
            total += n;
            if n < BULK_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Returns (hits, misses) counted so far (all processes), then sets `statistics`
    /// to `enable` and zeroes the counters if `reset`.
    pub fn stats(&self, enable: bool, reset: bool) -> Result<(u64, u64)> {
        self.inner.flush()?;
        let out = self.inner.write(|c, _| {
            let (h, m): (i64, i64) = c
                .prepare_cached("SELECT hits, misses FROM counters WHERE id = 0")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if reset {
                c.execute("UPDATE counters SET hits = 0, misses = 0 WHERE id = 0", [])?;
            }
            c.execute(
                "UPDATE settings SET statistics = ?1 WHERE id = 0",
                [enable as i64],
            )?;
            Ok((h.max(0) as u64, m.max(0) as u64))
        })?;
        self.inner.statistics.store(enable, Ordering::Relaxed);
        Ok(out)
    }

    /// Bytes used: accounted row sizes (key + meta + value) plus the database size.
    pub fn volume(&self) -> Result<u64> {
        self.inner.read(volume_in)
    }

    /// Number of rows (including expired rows not yet removed).
    pub fn len(&self) -> Result<u64> {
        self.inner.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT count FROM counters WHERE id = 0")?
                .query_row([], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    /// True when the cache holds no rows.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The change counters of `key` (shared by every process; see the module docs), for
    /// callers that keep their own copies of rows: sample before reading the row, keep the
    /// stamp with the copy, and use the copy only while a new sample is equal. Any write of
    /// the key by any handle or process changes it. `None` when `cache.gen` could not be
    /// created (then only a time bound can limit staleness).
    pub fn change_stamp(&self, key: &[u8]) -> Option<ChangeStamp> {
        self.inner
            .gens
            .as_ref()
            .map(|g| g.stamp(memory::key_hash(key)))
    }

    /// Records a hit on `key` served from a copy held outside the store (an in-memory
    /// front): buffers its access time and count (for LRU/LFU) and the hit counter, exactly
    /// as a [`record`](Cache::record) hit would, but never flushes inline, so it is safe to
    /// call on a latency-sensitive thread. Call [`flush`](Cache::flush) periodically.
    pub fn note_hit(&self, key: &[u8]) {
        let i = &self.inner;
        if i.statistics.load(Ordering::Relaxed) {
            i.buffer.count(true);
        }
        if i.policy().tracks_access() {
            i.buffer.access(key, i.clock.now());
        }
    }

    /// Writes buffered access times/counts and hit/miss counters to the database.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Reports what exposes the store to other local accounts: the directory, its parents
    /// and its files (see [`exposure`](super::exposure)), and value files, temporary files
    /// and their directories wider than 0600/0700. With `fix`, narrows what this account
    /// owns: the directory to 0700, its files to 0600. Parents and anything owned by
    /// another account are reported, never changed. Not part of [`check`](Self::check): a
    /// directory the user shares on purpose is theirs to judge.
    pub fn check_exposure(&self, fix: bool) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let dir = &self.inner.dir;
        for e in super::exposure(dir)? {
            problems.push(e.to_string());
            if fix && e.path() == dir.as_path() {
                private::tighten_own_dir(dir)?;
            } else if fix && matches!(e, super::Exposure::Readable { .. }) {
                private::tighten_own_file(e.path())?;
            }
        }
        let wide = private::wide_entries(dir)?;
        if let Some(first) = wide.first() {
            problems.push(format!(
                "{} value files or directories are accessible to group/others (first: {}); \
                 fix: hoard check --fix, or chmod -R go-rwx {}",
                wide.len(),
                first.display(),
                dir.display()
            ));
            if fix {
                for p in &wide {
                    private::tighten_own(p)?;
                }
            }
        }
        Ok(problems)
    }

    /// Checks database integrity, rows against value files, and counters. Returns the
    /// problems found; with `fix`, removes faulty rows and orphan files and repairs counters.
    /// Who may access the files is [`check_exposure`](Self::check_exposure)'s job.
    pub fn check(&self, fix: bool) -> Result<Vec<String>> {
        self.inner.flush()?;
        let dir = self.inner.dir.clone();
        self.inner.write(|c, p| {
            let mut problems = Vec::new();
            let integrity: Vec<String> = c
                .prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if integrity != ["ok"] {
                problems.extend(integrity.into_iter().map(|l| format!("integrity_check: {l}")));
            }
            let mut referenced = HashSet::new();
            let mut bad_rows = Vec::new();
            let mut bad_sizes = Vec::new();
            {
                let mut stmt = c.prepare(
                    "SELECT rowid, mode, filename, size, length(key), length(meta), \
                     typeof(value), length(value) FROM cache",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let rowid: i64 = r.get(0)?;
                    let mode = r.get_ref(1)?.as_i64().unwrap_or(-1);
                    let filename = r.get_ref(2)?.as_str_or_null().ok().flatten().map(String::from);
                    let size = r.get_ref(3)?.as_i64().unwrap_or(-1);
                    let klen: i64 = r.get(4)?;
                    let mlen: i64 = r.get::<_, Option<i64>>(5)?.unwrap_or(0);
                    let vtype: String = r.get(6)?;
                    let vlen: i64 = r.get::<_, Option<i64>>(7)?.unwrap_or(0);
                    match (mode, filename) {
                        (MODE_FILE, Some(f)) => {
                            let Some(path) = value_path(&dir, &f) else {
                                problems.push(format!("row {rowid}: invalid file name {f:?}"));
                                bad_rows.push(rowid);
                                continue;
                            };
                            referenced.insert(f.clone());
                            let want = size - klen - mlen;
                            match fs::metadata(&path) {
                                Err(_) => {
                                    problems.push(format!("row {rowid}: value file {f} is missing"));
                                    bad_rows.push(rowid);
                                }
                                Ok(m) if m.len() as i64 != want => {
                                    problems.push(format!(
                                        "row {rowid}: value file {f} has {} bytes, row says {want}",
                                        m.len()
                                    ));
                                    bad_rows.push(rowid);
                                }
                                Ok(_) => {}
                            }
                        }
                        (MODE_INLINE, _) if vtype == "blob" || vtype == "text" => {
                            if size != klen + mlen + vlen {
                                problems.push(format!("row {rowid}: size {size} != {}", klen + mlen + vlen));
                                bad_sizes.push(rowid);
                            }
                        }
                        _ => {
                            problems.push(format!("row {rowid}: undecodable (mode {mode}, value {vtype})"));
                            bad_rows.push(rowid);
                        }
                    }
                }
            }
            for rel in files::list_value_files(&dir)? {
                if !referenced.contains(&rel) {
                    problems.push(format!("orphan value file {rel}"));
                    if fix {
                        files::unlink(&dir.join(&rel));
                    }
                }
            }
            for path in stale_temp_files(&dir) {
                problems.push(format!("abandoned temporary file {}", path.display()));
                if fix {
                    files::unlink(&path);
                }
            }
            if fix {
                for rowid in bad_rows {
                    self.inner.delete_where(c, p, "rowid = ?1", "rowid", &rowid, 1, -1)?;
                }
                if !bad_sizes.is_empty() {
                    self.inner.changed_all(p);
                }
                for rowid in bad_sizes {
                    c.execute(
                        "UPDATE cache SET size = length(key) + length(meta) + length(value) WHERE rowid = ?1",
                        [rowid],
                    )?;
                }
            }
            let (count, size): (i64, i64) =
                c.query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let (ccount, csize): (i64, i64) =
                c.query_row("SELECT count, size FROM counters WHERE id = 0", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            if (count, size) != (ccount, csize) {
                problems.push(format!(
                    "counters say {ccount} rows / {csize} bytes, table has {count} / {size}"
                ));
                if fix {
                    c.execute(
                        "UPDATE counters SET count = ?1, size = ?2 WHERE id = 0",
                        [count, size],
                    )?;
                }
            }
            Ok(problems)
        })
    }

    /// Keys in insertion order (including expired rows not yet removed), read in pages.
    pub fn iter_keys(&self) -> KeyIter {
        KeyIter {
            cache: self.clone(),
            last: i64::MIN,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// The first (or with `last`, the last) live item in insertion order, without
    /// counting an access.
    pub fn peekitem(&self, last: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let sql = format!(
            "SELECT {ROW_COLS} FROM cache WHERE expire_time IS NULL OR expire_time > ?1 \
             ORDER BY rowid {} LIMIT 1",
            if last { "DESC" } else { "ASC" }
        );
        // Faulty rows are removed and skipped; bounded so a broken disk cannot loop forever.
        for _ in 0..64 {
            let now = self.inner.clock.now();
            let found = self.inner.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let mut rows = stmt.query([now])?;
                match rows.next()? {
                    None => Ok(None),
                    Some(r) => Ok(Some((r.get::<_, Vec<u8>>(11)?, found_from(r, now)?))),
                }
            })?;
            match found {
                None => return Ok(None),
                Some((key, Found::Live(mut row))) => match self.inner.load_bytes(&mut row)? {
                    Some(v) => return Ok(Some((key, v))),
                    None => self
                        .inner
                        .remove_bad(&key, row.rowid, row.filename.as_deref())?,
                },
                Some((key, Found::Undecodable(rowid))) => {
                    self.inner.remove_bad(&key, rowid, None)?
                }
                Some(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Rows whose key starts with `prefix`, in key order, read in pages (no values).
    pub fn scan(&self, prefix: &[u8]) -> ScanIter {
        ScanIter {
            cache: self.clone(),
            prefix: prefix.to_vec(),
            last: None,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction; commits if it returns `Ok`,
    /// rolls back (removing any value files it wrote) otherwise.
    pub fn transact<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.inner.write(|c, p| {
            let tx = Transaction {
                cache: self,
                conn: c,
                pending: RefCell::new(p),
            };
            f(&tx)
        })
    }
}

/// Operations inside [`Cache::transact`]; all see and commit one snapshot.
pub struct Transaction<'a> {
    cache: &'a Cache,
    conn: &'a Connection,
    pending: RefCell<&'a mut Pending>,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("cache", self.cache)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    fn now(&self) -> f64 {
        self.cache.inner.clock.now()
    }

    /// [`Cache::set`] inside the transaction.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.set_with_meta(key, value, &[], expire, tag)
    }

    /// [`Cache::set_with_meta`] inside the transaction.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        let inner = &self.cache.inner;
        let mut payload = inner.payload_for(value)?;
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        inner.put_in(
            self.conn,
            &mut p,
            key,
            &mut payload,
            meta,
            expire_at(now, expire),
            tag,
            now,
        )
    }

    /// [`Cache::get`] inside the transaction.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// [`Cache::get_entry`] inside the transaction.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        let mut p = self.pending.borrow_mut();
        self.cache.inner.get_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::add`] inside the transaction.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let inner = &self.cache.inner;
        let mut payload = inner.payload_for(value)?;
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        inner.add_in(
            self.conn,
            &mut p,
            key,
            &mut payload,
            expire_at(now, expire),
            tag,
            now,
        )
    }

    /// [`Cache::delete`] inside the transaction.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .delete_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::pop`] inside the transaction.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut p = self.pending.borrow_mut();
        self.cache.inner.pop_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::incr`] inside the transaction.
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .incr_in(self.conn, &mut p, key, delta, default, self.now())
    }

    /// [`Cache::decr`] inside the transaction.
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.incr(
            key,
            delta.checked_neg().ok_or(Error::NotAnInteger)?,
            default,
        )
    }

    /// [`Cache::touch`] inside the transaction.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .touch_in(self.conn, &mut p, key, expire_at(now, expire), now)
    }

    /// [`Cache::contains`] inside the transaction.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.cache.inner.contains_in(self.conn, key, self.now())
    }
}

/// Iterator over keys in insertion order; see [`Cache::iter_keys`].
#[derive(Debug)]
pub struct KeyIter {
    cache: Cache,
    last: i64,
    buf: VecDeque<Vec<u8>>,
    done: bool,
}

impl Iterator for KeyIter {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let last = self.last;
            let page = self.cache.inner.read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT rowid, key FROM cache WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![last, PAGE], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            });
            match page {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    if let Some((rowid, _)) = rows.last() {
                        self.last = *rowid;
                    }
                    self.buf.extend(rows.into_iter().map(|(_, k)| k));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// Iterator over rows by key prefix; see [`Cache::scan`].
#[derive(Debug)]
pub struct ScanIter {
    cache: Cache,
    prefix: Vec<u8>,
    last: Option<Vec<u8>>,
    buf: VecDeque<ScanEntry>,
    done: bool,
}

impl Iterator for ScanIter {
    type Item = Result<ScanEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let (from, op) = match &self.last {
                Some(k) => (k.clone(), ">"),
                None => (self.prefix.clone(), ">="),
            };
            let sql = format!(
                "SELECT key, size, store_time, expire_time, tag FROM cache \
                 WHERE key {op} ?1 ORDER BY key LIMIT ?2"
            );
            let page = self.cache.inner.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params![from, PAGE], |r| {
                        Ok(ScanEntry {
                            key: r.get(0)?,
                            size: r.get::<_, i64>(1)?.max(0) as u64,
                            store_time: r.get(2)?,
                            expire_time: r.get(3)?,
                            tag: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            });
            match page {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    if let Some(e) = rows.last() {
                        self.last = Some(e.key.clone());
                    }
                    for e in rows {
                        if !e.key.starts_with(&self.prefix) {
                            self.done = true;
                            break;
                        }
                        self.buf.push_back(e);
                    }
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! path_ok {
        ($name:ident, $rel:expr, $ok:expr) => {
            #[test]
            fn $name() {
                assert_eq!(value_path(Path::new("/c"), $rel).is_some(), $ok);
            }
        };
    }
    path_ok!(path_normal, "ab/cd/0123.val", true);
    path_ok!(path_parent, "../etc/passwd", false);
    path_ok!(path_absolute, "/etc/passwd", false);
    path_ok!(path_empty, "", false);
    path_ok!(path_backslash, "ab\\cd", false);
    path_ok!(path_dot, "ab/./x.val", false);

    #[test]
    fn liveness_boundary() {
        let cases = [
            (None, 5.0, true),
            (Some(6.0), 5.0, true),
            (Some(5.0), 5.0, false),
            (Some(4.0), 5.0, false),
        ];
        for (exp, now, live) in cases {
            assert_eq!(is_live(exp, now), live, "{exp:?} at {now}");
        }
    }
}
