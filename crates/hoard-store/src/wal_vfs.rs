//! A SQLite VFS over the platform's own that hands the WAL each commit's frames in one
//! `write`, where SQLite makes two per page (a 24-byte frame header, then the page): a
//! `set` of 3 pages was 6 `pwrite`s, now 1. Everything else (locks, shared memory, syncs,
//! the database file) is the platform VFS's, unchanged, so processes using plain SQLite on
//! the same files interoperate.
//!
//! Invariant: a buffered frame never outlives the write of its transaction's commit frame,
//! nor any other operation on the WAL file or on the database's shared memory (a lock, a
//! barrier). So a commit is in the file (the OS page cache, exactly as without this layer:
//! `synchronous=NORMAL` does not sync a commit) before SQLite publishes it in the WAL
//! index, a failed write fails its commit (the error is the commit frame's write's), and
//! writes that rewrite earlier frames in place bypass the buffer.

use rusqlite::ffi;
use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

/// The VFS's registered name.
const NAME: &CStr = c"hoard-wal";

/// Size of a WAL frame header; bytes 4..8 are non-zero in a commit frame's.
const FRAME_HEADER: usize = 24;

/// Most bytes written at once: a transaction's frames beyond this are written out before
/// it commits (a large `transact`). The unix VFS writes at most 128 KiB per call (it masks
/// the count to 17 bits), and one write appended after this stays below that.
const MAX_PENDING: usize = 64 << 10;

/// The VFS's name for `Connection::open_with_flags_and_vfs`, registering it on first use;
/// `None` if there is no default VFS to wrap (then the default is used as is).
pub(crate) fn name() -> Option<&'static CStr> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED.get_or_init(register).then_some(NAME)
}

/// The platform VFS this one forwards to (set once, before registration).
static REAL: OnceLock<usize> = OnceLock::new();

fn register() -> bool {
    // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which lives as long as the
    // process; the copy made of it is leaked, so it does too, as `sqlite3_vfs_register`
    // requires. The copy keeps the real VFS's `pAppData` and methods (the unix VFS's take
    // the VFS pointer only to read `pAppData`), with our `xOpen` and file size.
    unsafe {
        let real = ffi::sqlite3_vfs_find(std::ptr::null());
        if real.is_null() {
            return false;
        }
        let _ = REAL.set(real as usize);
        let mut vfs: ffi::sqlite3_vfs = std::ptr::read(real);
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.szOsFile = (REAL_OFFSET + (*real).szOsFile as usize) as c_int;
        vfs.xOpen = Some(x_open);
        let vfs = Box::into_raw(Box::new(vfs));
        ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Main,
    Wal,
    Other,
}

/// Our part of an open file; the platform VFS's file follows it at [`REAL_OFFSET`].
#[repr(C)]
struct File {
    /// Must be first: SQLite sees a `sqlite3_file` whose methods are [`METHODS`].
    base: ffi::sqlite3_file,
    kind: Kind,
    /// For a database: its WAL's file while that is open (null otherwise).
    wal: *mut File,
    /// For a WAL: its database's file (null once that closes).
    main: *mut File,
    /// Frames written by SQLite but not yet to the file, starting at `pending_at`.
    pending: Vec<u8>,
    pending_at: i64,
    /// End of the furthest write in the current write transaction: a write before it
    /// rewrites a frame in place and goes straight to the file.
    high: i64,
    /// Where the commit frame's page starts, once its header is buffered (else -1).
    commit_page_at: i64,
    /// For a database: the first region of its WAL index (shared memory) once mapped.
    shm: *const u8,
}

/// Offset of the platform VFS's file inside ours (a multiple of 8).
const REAL_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(8);

unsafe fn real(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY (caller): `f` is one of our files, allocated `szOsFile` bytes.
    unsafe { (f as *mut u8).add(REAL_OFFSET) as *mut ffi::sqlite3_file }
}

unsafe fn real_methods<'a>(f: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY (caller): the real file was opened successfully (ours is installed only then).
    unsafe { &*(*real(f)).pMethods }
}

/// Writes out the buffered frames, if any. The buffer is emptied either way.
unsafe fn flush(s: *mut File) -> c_int {
    // SAFETY (caller): `s` is an open file of ours.
    unsafe {
        let s = &mut *s;
        s.commit_page_at = -1;
        if s.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let f = s as *mut File as *mut ffi::sqlite3_file;
        let rc = write_out(
            f,
            s.pending.as_ptr() as *const c_void,
            s.pending.len() as c_int,
            s.pending_at,
        );
        s.pending.clear();
        rc
    }
}

/// Writes to the platform VFS's file.
unsafe fn write_out(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    #[cfg(test)]
    if unsafe { (*(f as *mut File)).kind } == Kind::Wal {
        tests::WAL_WRITES.with(|n| n.set(n.get() + 1));
    }
    // SAFETY (caller): `f` is an open file of ours and `buf` holds `amt` bytes.
    unsafe { real_methods(f).xWrite.expect("every VFS writes")(real(f), buf, amt, off) }
}

/// Flushes the WAL of a database file (defensive: by the invariant, nothing is pending
/// when SQLite touches the shared memory). Its result cannot be reported there.
unsafe fn flush_wal_of(f: *mut ffi::sqlite3_file) {
    // SAFETY (caller): `f` is an open file of ours; `wal` is cleared when the WAL closes.
    unsafe {
        let s = &mut *(f as *mut File);
        if s.kind == Kind::Main && !s.wal.is_null() {
            #[cfg(test)]
            if !(*s.wal).pending.is_empty() {
                tests::LATE.with(|n| n.set(n.get() + 1));
            }
            let _ = flush(s.wal);
        }
    }
}

/// Flushes `f` if it is a WAL, before an operation that reads, sizes, syncs or truncates it.
unsafe fn flush_if_wal(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY (caller): `f` is an open file of ours.
    unsafe {
        if (*(f as *mut File)).kind == Kind::Wal {
            flush(f as *mut File)
        } else {
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes `szOsFile` bytes at `f`; the real VFS opens its file after ours.
    unsafe {
        let real_vfs = *REAL.get().expect("registered") as *mut ffi::sqlite3_vfs;
        (*f).pMethods = std::ptr::null();
        let open = (*real_vfs).xOpen.expect("every VFS opens");
        let rc = open(real_vfs, name, real(f), flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real(f)).pMethods.is_null() {
            return rc;
        }
        let kind = if flags & ffi::SQLITE_OPEN_WAL != 0 {
            Kind::Wal
        } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            Kind::Main
        } else {
            Kind::Other
        };
        let mut main = std::ptr::null_mut();
        if kind == Kind::Wal && !name.is_null() {
            let db = ffi::sqlite3_database_file_object(name);
            if !db.is_null() && std::ptr::eq((*db).pMethods, &METHODS) {
                main = db as *mut File;
            }
        }
        std::ptr::write(
            f as *mut File,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                kind,
                wal: std::ptr::null_mut(),
                main,
                pending: Vec::new(),
                pending_at: 0,
                high: 0,
                commit_page_at: -1,
                shm: std::ptr::null(),
            },
        );
        if !main.is_null() {
            (*main).wal = f as *mut File;
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open file once; ours is dropped in place after the real one
    // closes, and the links to it from its database / WAL are cleared.
    unsafe {
        let flushed = flush_if_wal(f);
        let close = real_methods(f).xClose.expect("every VFS closes");
        let rc = close(real(f));
        let s = f as *mut File;
        if !(*s).main.is_null() {
            (*(*s).main).wal = std::ptr::null_mut();
        }
        if !(*s).wal.is_null() {
            (*(*s).wal).main = std::ptr::null_mut();
        }
        std::ptr::drop_in_place(s);
        (*f).pMethods = std::ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            rc
        }
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite passes `amt` readable bytes at `buf` and one of our open files.
    unsafe {
        let s = &mut *(f as *mut File);
        if s.kind != Kind::Wal {
            return write_out(f, buf, amt, off);
        }
        // Kept across a flush below: the commit frame's page may start a new buffer.
        let commit_page_at = s.commit_page_at;
        let contiguous = s.pending.is_empty()
            || (off == s.pending_at + s.pending.len() as i64
                && s.pending.len() + amt.max(0) as usize <= MAX_PENDING);
        if off < s.high || !contiguous {
            let rc = flush(s);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            if off < s.high {
                // Rewriting an earlier frame (checksums, a page written twice): in place.
                #[cfg(test)]
                tests::IN_PLACE.with(|n| n.set(n.get() + 1));
                return write_out(f, buf, amt, off);
            }
        }
        let data = std::slice::from_raw_parts(buf as *const u8, amt.max(0) as usize);
        if s.pending.is_empty() {
            s.pending_at = off;
        }
        s.pending.extend_from_slice(data);
        let end = off + data.len() as i64;
        s.high = s.high.max(end);
        if data.len() == FRAME_HEADER && data[4..8] != [0; 4] {
            // A commit frame's header: its page follows, then the commit is complete.
            s.commit_page_at = end;
            return ffi::SQLITE_OK;
        }
        if off == commit_page_at {
            return flush(s);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded as given, after buffered frames reached the file.
    unsafe {
        let rc = flush_if_wal(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        real_methods(f).xRead.expect("every VFS reads")(real(f), buf, amt, off)
    }
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: forwarded as given, after buffered frames reached the file.
    unsafe {
        let rc = flush_if_wal(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        real_methods(f).xTruncate.expect("every VFS truncates")(real(f), size)
    }
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwarded as given, after buffered frames reached the file.
    unsafe {
        let rc = flush_if_wal(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        real_methods(f).xSync.expect("every VFS syncs")(real(f), flags)
    }
}

unsafe extern "C" fn x_file_size(
    f: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded as given, after buffered frames reached the file.
    unsafe {
        let rc = flush_if_wal(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        real_methods(f).xFileSize.expect("every VFS sizes")(real(f), size)
    }
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as given.
    unsafe { real_methods(f).xLock.expect("every VFS locks")(real(f), level) }
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as given.
    unsafe { real_methods(f).xUnlock.expect("every VFS unlocks")(real(f), level) }
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarded as given.
    unsafe {
        real_methods(f)
            .xCheckReservedLock
            .expect("every VFS checks locks")(real(f), out)
    }
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded as given, after buffered frames reached the file.
    unsafe {
        let rc = flush_if_wal(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match real_methods(f).xFileControl {
            Some(fc) => fc(real(f), op, arg),
            None => ffi::SQLITE_NOTFOUND,
        }
    }
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as given.
    unsafe { real_methods(f).xSectorSize.map_or(4096, |m| m(real(f))) }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as given.
    unsafe {
        real_methods(f)
            .xDeviceCharacteristics
            .map_or(0, |m| m(real(f)))
    }
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded as given; the first region's address is kept until unmapped.
    unsafe {
        let rc = match real_methods(f).xShmMap {
            Some(m) => m(real(f), region, size, extend, out),
            None => ffi::SQLITE_IOERR,
        };
        if rc == ffi::SQLITE_OK && region == 0 && !(*out).is_null() {
            (*(f as *mut File)).shm = *out as *const u8;
        }
        rc
    }
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    ofst: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    #[cfg(test)]
    tests::SHM_LOCKS.with(|n| n.set(n.get() + 1));
    // SAFETY: forwarded as given, after the WAL's buffered frames (none, by the invariant)
    // reached the file.
    unsafe {
        flush_wal_of(f);
        let rc = match real_methods(f).xShmLock {
            Some(m) => m(real(f), ofst, n, flags),
            None => ffi::SQLITE_IOERR,
        };
        // WAL_WRITE_LOCK (slot 0) taken: a write transaction starts appending frames.
        let s = &mut *(f as *mut File);
        if rc == ffi::SQLITE_OK
            && ofst == 0
            && n == 1
            && flags == ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE
            && s.kind == Kind::Main
            && !s.wal.is_null()
        {
            (*s.wal).high = 0;
        }
        rc
    }
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: forwarded as given, after the WAL's buffered frames (none, by the invariant)
    // reached the file: SQLite calls this between the two copies of a new WAL-index header.
    unsafe {
        flush_wal_of(f);
        if let Some(m) = real_methods(f).xShmBarrier {
            m(real(f))
        }
    }
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: forwarded as given.
    unsafe {
        flush_wal_of(f);
        (*(f as *mut File)).shm = std::ptr::null();
        match real_methods(f).xShmUnmap {
            Some(m) => m(real(f), delete),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded as given.
    unsafe {
        match real_methods(f).xFetch {
            Some(m) => m(real(f), off, amt, out),
            None => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    // SAFETY: forwarded as given.
    unsafe {
        match real_methods(f).xUnfetch {
            Some(m) => m(real(f), off, p),
            None => ffi::SQLITE_OK,
        }
    }
}

/// Size of the WAL file's header; frames follow it.
const WAL_HEADER: u64 = 32;

/// Our main database file behind `f` with its WAL index mapped, if it is one.
///
/// # Safety
/// `f` is null or an open `sqlite3_file` from SQLite; the result is used while it stays open.
unsafe fn mapped_main<'a>(f: *mut ffi::sqlite3_file) -> Option<&'a File> {
    // SAFETY (caller): an open file; it is one of ours only if its methods are ours.
    unsafe {
        if f.is_null() || !std::ptr::eq((*f).pMethods, &METHODS) {
            return None;
        }
        let s = &*(f as *const File);
        (s.kind == Kind::Main && !s.shm.is_null()).then_some(s)
    }
}

/// A 32-bit word of the mapped WAL index at byte `at` (native byte order, volatile: other
/// processes write it).
///
/// # Safety
/// `s.shm` is mapped and `at + 4` is within its first region.
unsafe fn shm_word(s: &File, at: usize) -> u32 {
    // SAFETY (caller): in bounds of the mapped region.
    unsafe { std::ptr::read_volatile(s.shm.add(at) as *const u32) }
}

/// For a database file opened through this VFS, inside a write transaction: an upper bound
/// of its size in bytes (`PRAGMA page_count` x page size) without a system call, read from
/// the WAL index's header (the page size and the database's size in pages as of the last
/// commit, which cannot move while this connection holds the write lock), plus the frames
/// this transaction has already written to the WAL (pages spilled from its cache). The
/// transaction's pages still in its cache are the caller's to add. `None` when that is not
/// known: another VFS's file, no WAL index mapped yet, no commit recorded in it (size 0),
/// or the header's two copies differ.
pub(crate) fn size_bound_without_cache(f: *mut ffi::sqlite3_file) -> Option<u64> {
    // SAFETY: `f` is an open `sqlite3_file` from SQLite. The mapped region stays mapped
    // while the file is open (it is cleared when unmapped); the header is its first 96 bytes.
    unsafe {
        let s = mapped_main(f)?;
        // The WAL-index header, twice (48 bytes each, native byte order): szPage (u16) at
        // 14, mxFrame at 16, nPage at 20 (SQLite's walformat documentation).
        let word = |at: usize| shm_word(s, at);
        let half = |at: usize| std::ptr::read_volatile(s.shm.add(at) as *const u16);
        let (page, frames, pages) = (half(14), word(16), word(20));
        if (page, frames, pages) != (half(48 + 14), word(48 + 16), word(48 + 20)) || pages == 0 {
            return None;
        }
        let page = if page == 1 { 65536 } else { u64::from(page) };
        let committed_end = WAL_HEADER + u64::from(frames) * (page + FRAME_HEADER as u64);
        let spilled = if s.wal.is_null() {
            0
        } else {
            ((*s.wal).high.max(0) as u64).saturating_sub(committed_end)
        };
        Some(u64::from(pages) * page + spilled)
    }
}

/// For a database file opened through this VFS: what identifies its latest commit in the
/// WAL index's header (the change counter, the WAL's length in frames and its first
/// salt), or `None` when not known (another VFS's file, no WAL index mapped, the header's
/// two copies differ). Two reads that differ mean a commit (or a WAL restart) in between.
pub(crate) fn commit_stamp(f: *mut ffi::sqlite3_file) -> Option<u128> {
    // SAFETY: as in `size_bound_without_cache`.
    unsafe {
        let s = mapped_main(f)?;
        // iChange at 8, mxFrame at 16, aSalt[0] at 32 (SQLite's walformat documentation).
        let stamp = |h: usize| {
            u128::from(shm_word(s, h + 8))
                | u128::from(shm_word(s, h + 16)) << 32
                | u128::from(shm_word(s, h + 32)) << 64
        };
        let first = stamp(0);
        (first == stamp(48)).then_some(first)
    }
}

/// The WAL's length in frames at the commit a [`commit_stamp`] identifies.
pub(crate) fn stamp_frames(stamp: u128) -> u64 {
    u64::from((stamp >> 32) as u32)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
#[path = "wal_vfs_tests.rs"]
pub(crate) mod tests;
