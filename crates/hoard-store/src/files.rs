//! Value files: naming, temporary files, streaming readers and writers.
//!
//! Invariant: a value file gets its final name (`ab/cd/<random>.val`) only by `rename`
//! inside the write transaction that inserts its row, so with the write lock held every
//! final-named file has a row (except files whose row's delete just committed and which
//! are about to be unlinked). Temporary files live in `tmp/` and are removed when their
//! writer is dropped. Every file is created 0600 and every directory 0700 (`private`), and
//! a rename keeps the mode, so a value is never readable by another account.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Cache;
use super::error::Result;

/// Sub-directory for files being written.
pub(crate) const TMP_DIR: &str = "tmp";
/// Extension of value files.
pub(crate) const VALUE_EXT: &str = "val";

fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        s.push_str(&format!("{:02x}", fastrand::u8(..)));
    }
    s
}

/// A fresh relative file name `ab/cd/<hex>.val` (forward slashes, as stored in the row).
pub(crate) fn new_value_name() -> String {
    let hex = random_hex(16);
    format!("{}/{}/{}.{VALUE_EXT}", &hex[0..2], &hex[2..4], &hex[4..])
}

/// A temporary file in `dir/tmp`, removed on drop unless installed.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: Option<PathBuf>,
    pub(crate) len: u64,
}

impl TempFile {
    /// Creates an empty temporary file and returns it open for writing.
    pub(crate) fn create(dir: &Path) -> Result<(TempFile, File)> {
        super::fault::check(dir)?;
        let tmp = dir.join(TMP_DIR);
        super::private::create_dir_all(&tmp)?;
        let path = tmp.join(format!("{}.tmp", random_hex(12)));
        let file = super::private::create_new_file(&path)?;
        Ok((
            TempFile {
                path: Some(path),
                len: 0,
            },
            file,
        ))
    }

    /// Writes `bytes` to a new temporary file.
    pub(crate) fn write_all(dir: &Path, bytes: &[u8]) -> Result<TempFile> {
        let (mut t, mut f) = TempFile::create(dir)?;
        f.write_all(bytes)?;
        t.len = bytes.len() as u64;
        Ok(t)
    }

    /// Renames the file to a fresh final name under `dir`; returns the relative name.
    /// The caller must record the final path for removal if its transaction fails.
    pub(crate) fn install(&mut self, dir: &Path) -> Result<(String, PathBuf)> {
        let rel = new_value_name();
        let full = dir.join(&rel);
        let from = self.path.as_ref().expect("temp file installed twice");
        // `unlink` removes emptied `ab/cd` directories, possibly between our create_dir_all
        // and rename (another thread or process): then create it again.
        let mut attempts = 0;
        loop {
            if let Some(parent) = full.parent() {
                super::private::create_dir_all(parent)?;
            }
            match fs::rename(from, &full) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.path = None;
        Ok((rel, full))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Removes a file, ignoring "not found" (someone else already removed it), then its
/// directory and that directory's parent if they are now empty, so a long-lived cache does
/// not keep up to 65,536 empty `ab/cd` directories (4 KiB each) beyond its size limit.
pub(crate) fn unlink(path: &Path) {
    // Best effort: a file that cannot be removed shows up as an orphan in `check`.
    let _ = fs::remove_file(path);
    if path.extension().is_some_and(|e| e == VALUE_EXT)
        && let Some(cd) = path.parent()
        && fs::remove_dir(cd).is_ok()
        && let Some(ab) = cd.parent()
    {
        // Fails (not empty) unless this was its last sub-directory.
        let _ = fs::remove_dir(ab);
    }
}

/// Whether `path` (a temp file) is older than `age` by its modification time.
pub(crate) fn older_than(path: &Path, age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e >= age)
}

/// Lists value files (relative names with `/`) under `dir/??/??/`.
pub(crate) fn list_value_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for a in read_dir_names(dir)? {
        if a.len() != 2 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for b in read_dir_names(&dir.join(&a))? {
            for f in read_dir_names(&dir.join(&a).join(&b))? {
                if f.ends_with(VALUE_EXT) {
                    out.push(format!("{a}/{b}/{f}"));
                }
            }
        }
    }
    Ok(out)
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(names);
        }
        Err(e) => return Err(e.into()),
    };
    for entry in rd {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// A stored value: inline bytes from the row, or an already open value file.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use hoard_store::Value;
/// let cache = hoard_store::Cache::open(dir.path())?;
/// cache.set(b"small", b"abc", None, None)?;
/// match cache.record(b"small")?.unwrap().value {
///     Value::Inline(bytes) => assert_eq!(bytes, b"abc"),
///     Value::File { len, .. } => panic!("a file of {len} bytes"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub enum Value {
    /// Value stored in the database row.
    Inline(Vec<u8>),
    /// Value stored in a file, opened before the row could be deleted; `len` is the recorded length.
    File {
        /// The open value file (unaffected by a concurrent unlink).
        file: File,
        /// Number of bytes the row says the file holds.
        len: u64,
    },
}

impl Value {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Value::Inline(v) => v.len() as u64,
            Value::File { len, .. } => *len,
        }
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Streams a [`Value`]. A file shorter than recorded fails with
/// [`io::ErrorKind::UnexpectedEof`] instead of a silently short read.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::io::Read;
/// let cache = hoard_store::Cache::open(dir.path())?;
/// cache.set(b"k", &vec![1; 64 * 1024], None, None)?; // a value file
/// let mut reader: hoard_store::ValueReader = cache.record(b"k")?.unwrap().into_reader();
/// let mut first = [0; 10];
/// reader.read_exact(&mut first)?;
/// assert_eq!(reader.remaining(), 64 * 1024 - 10);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ValueReader {
    inner: ReaderInner,
    len: u64,
    pos: u64,
}

#[derive(Debug)]
enum ReaderInner {
    Inline(io::Cursor<Vec<u8>>),
    File(File),
}

impl ValueReader {
    /// A reader over `value`.
    pub fn new(value: Value) -> ValueReader {
        let len = value.len();
        let inner = match value {
            Value::Inline(v) => ReaderInner::Inline(io::Cursor::new(v)),
            Value::File { file, .. } => ReaderInner::File(file),
        };
        ValueReader { inner, len, pos: 0 }
    }

    /// Total length of the value in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.len - self.pos
    }
}

impl ValueReader {
    /// How many bytes a read of at most `max` may take (0: at the end, or `max` is 0).
    fn next_len(&self, max: usize) -> usize {
        max.min(usize::try_from(self.len - self.pos).unwrap_or(usize::MAX))
    }

    /// Counts `n` bytes read of a read that asked for some: none means the file is shorter
    /// than recorded.
    fn advance(&mut self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("value file is short: {} of {} bytes", self.pos, self.len),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for ValueReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.next_len(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = match &mut self.inner {
            ReaderInner::Inline(c) => c.read(&mut buf[..want])?,
            ReaderInner::File(f) => f.read(&mut buf[..want])?,
        };
        self.advance(n)
    }
}

impl ValueReader {
    /// Appends to `out` up to `max` bytes of the value, like [`Read::read`], but only bytes
    /// already in memory: an inline value, or the part of a value file in the page cache
    /// (Linux `preadv2` with `RWF_NOWAIT`), never waiting for a disk. `Ok(None)`: nothing
    /// could be read without waiting (or the platform or file system cannot tell), so the
    /// caller reads on a thread that may block. Fills `out`'s spare capacity without zeroing
    /// it first.
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = hoard_store::Cache::open(dir.path())?;
    /// cache.set(b"k", &vec![7; 64 * 1024], None, None)?; // a value file, just written
    /// let mut reader = cache.record(b"k")?.unwrap().into_reader();
    /// let mut buf = Vec::new();
    /// if let Some(n) = reader.read_nowait(&mut buf, 1024)? {
    ///     assert!(n > 0 && buf.len() == n && buf.iter().all(|&b| b == 7));
    ///     assert_eq!(reader.remaining(), 64 * 1024 - n as u64);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_nowait(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<Option<usize>> {
        let want = self.next_len(max);
        if want == 0 {
            return Ok(Some(0));
        }
        let n = match &mut self.inner {
            ReaderInner::Inline(c) => {
                let start = out.len();
                out.resize(start + want, 0);
                let n = c.read(&mut out[start..])?;
                out.truncate(start + n);
                n
            }
            ReaderInner::File(f) => match nowait::append(f, out, want)? {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        self.advance(n).map(Some)
    }
}

/// Reads from the page cache only, at the file's offset (which it advances).
#[cfg(all(target_os = "linux", not(hoard_store_portable)))]
mod nowait {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    /// Set once a file system refused `RWF_NOWAIT` (it cannot tell): never asked again.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// Appends up to `want` bytes read at `f`'s offset into `out`'s spare capacity.
    pub(super) fn append(f: &File, out: &mut Vec<u8>, want: usize) -> io::Result<Option<usize>> {
        if UNSUPPORTED.load(Relaxed) {
            return Ok(None);
        }
        out.reserve(want);
        let iov = libc::iovec {
            iov_base: out.spare_capacity_mut().as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: one iovec over `want` bytes of `out`'s spare capacity (reserved above); offset
        // -1 reads at (and advances) the file's own offset, as `read` does.
        let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the kernel wrote `n <= want` bytes there.
            unsafe { out.set_len(out.len() + n) };
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                UNSUPPORTED.store(true, Relaxed);
                Ok(None)
            }
            _ => Err(e),
        }
    }
}

/// Elsewhere nothing tells whether a read would wait: always "ask a blocking thread".
#[cfg(not(all(target_os = "linux", not(hoard_store_portable))))]
mod nowait {
    pub(super) fn append(
        _: &std::fs::File,
        _: &mut Vec<u8>,
        _: usize,
    ) -> std::io::Result<Option<usize>> {
        Ok(None)
    }
}

/// Reads a whole value file, returning `None` when it is missing or its length differs
/// from `len` (a fault the caller turns into a miss).
pub(crate) fn read_value_file(path: &Path, len: u64) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut f).take(len + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 == len).then_some(buf))
}

/// Opens a value file, returning `None` when it is missing or shorter than `len`.
pub(crate) fn open_value_file(path: &Path, len: u64) -> Result<Option<File>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok((f.metadata()?.len() >= len).then_some(f))
}

/// Writes one value, in memory until it reaches the cache's `min_file_size`, then into a
/// temporary file in the cache directory. [`commit`](ValueWriter::commit) stores it;
/// dropping it without commit removes the temporary file and stores nothing.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::io::Write;
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let mut w: hoard_store::ValueWriter = cache.writer(b"log", None, None)?;
/// for _ in 0..1000 {
///     w.write_all(b"a line of the log\n")?;
/// }
/// assert_eq!(w.commit()?, 18_000);
/// assert_eq!(cache.record(b"log")?.unwrap().len(), 18_000);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ValueWriter {
    pub(crate) cache: Cache,
    pub(crate) key: Vec<u8>,
    pub(crate) expire: Option<Duration>,
    pub(crate) tag: Option<String>,
    pub(crate) meta: Vec<u8>,
    pub(crate) threshold: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) file: Option<(TempFile, BufWriter<File>)>,
    pub(crate) written: u64,
}

impl ValueWriter {
    /// Sets the metadata stored beside the value (see [`Record::meta`](super::Record::meta)).
    pub fn set_meta(&mut self, meta: Vec<u8>) {
        self.meta = meta;
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Stores the value (replacing any previous one) and returns its length.
    pub fn commit(mut self) -> Result<u64> {
        let written = self.written;
        let buf = std::mem::take(&mut self.buf);
        let payload = match self.file.take() {
            Some((mut temp, w)) => {
                w.into_inner().map_err(|e| e.into_error())?;
                temp.len = written;
                super::cache::Payload::File(temp)
            }
            None => super::cache::Payload::Bytes(&buf),
        };
        let cache = self.cache.clone();
        cache.put_payload(
            &self.key,
            payload,
            &self.meta,
            self.expire,
            self.tag.as_deref(),
        )?;
        Ok(written)
    }
}

impl Write for ValueWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && (self.buf.len() + data.len()) as u64 >= self.threshold {
            let (temp, file) = TempFile::create(self.cache.directory()).map_err(|e| match e {
                super::Error::Io(e) => e,
                e => io::Error::other(e),
            })?;
            let mut w = BufWriter::with_capacity(256 * 1024, file);
            w.write_all(&self.buf)?;
            self.buf = Vec::new();
            self.file = Some((temp, w));
        }
        match &mut self.file {
            Some((_, w)) => w.write_all(data)?,
            None => self.buf.extend_from_slice(data),
        }
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some((_, w)) => w.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_are_two_level_hex() {
        let n = new_value_name();
        let parts: Vec<&str> = n.split('/').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 2);
        assert_eq!(parts[1].len(), 2);
        assert!(parts[2].ends_with(".val"));
    }

    /// Reads `r` to its end taking turns: `read_nowait` (a `None` is retried with `read`), then
    /// `read`, in 1000-byte steps. Returns the bytes and how many came without waiting.
    fn read_alternating(r: &mut ValueReader) -> io::Result<(Vec<u8>, usize)> {
        let (mut out, mut nowait) = (Vec::new(), 0);
        let mut buf = [0u8; 1000];
        for turn in 0.. {
            if r.remaining() == 0 {
                break;
            }
            if turn % 2 == 0
                && let Some(n) = r.read_nowait(&mut out, 1000)?
            {
                nowait += n;
                continue;
            }
            let n = r.read(&mut buf)?;
            out.extend_from_slice(&buf[..n]);
        }
        Ok((out, nowait))
    }

    #[test]
    fn reads_without_waiting_and_blocking_reads_share_one_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let mut r = ValueReader::new(Value::File {
            file: f,
            len: data.len() as u64,
        });
        let (out, nowait) = read_alternating(&mut r).unwrap();
        assert_eq!(out, data);
        // The file was just written: its pages are in the page cache, and Linux says so.
        if cfg!(all(target_os = "linux", not(hoard_store_portable))) {
            assert_eq!(nowait, 5000, "half the reads should not have waited");
        }
        let mut inline = ValueReader::new(Value::Inline(data.clone()));
        let (out, nowait) = read_alternating(&mut inline).unwrap();
        assert_eq!((out, nowait), (data, 5000));
        assert_eq!(
            inline.read_nowait(&mut Vec::new(), 10).unwrap(),
            Some(0),
            "at the end"
        );
    }

    #[test]
    fn a_short_file_read_without_waiting_is_unexpected_eof() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let mut r = ValueReader::new(Value::File { file: f, len: 5 });
        let mut buf = Vec::new();
        if cfg!(all(target_os = "linux", not(hoard_store_portable))) {
            assert_eq!(r.read_nowait(&mut buf, 8).unwrap(), Some(3));
            assert_eq!(buf, b"abc");
            let err = r.read_nowait(&mut buf, 8).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        } else {
            assert_eq!(r.read_nowait(&mut buf, 8).unwrap(), None);
        }
    }

    #[test]
    fn short_file_is_unexpected_eof() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let mut r = ValueReader::new(Value::File { file: f, len: 5 });
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reader_stops_at_recorded_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        fs::write(&p, b"abcdef").unwrap();
        let f = File::open(&p).unwrap();
        let mut r = ValueReader::new(Value::File { file: f, len: 4 });
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn temp_file_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let t = TempFile::write_all(dir.path(), b"x").unwrap();
        let p = t.path.clone().unwrap();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
    }
}
