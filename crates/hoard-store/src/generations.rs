//! `cache.gen`: the change counters every process sharing a cache directory maps, so a copy of
//! a row kept in memory (the store's memory layer, the proxy's front) is used only while no
//! process changed the row. Invariant: every opener reads the slot count from the file itself,
//! so all processes on one directory bump and sample the same counters whatever the version of
//! the code that created the file.
//!
//! The file holds one global counter and a power of two of per-key counters (key → slot by
//! the low bits of its xxh3). Every write transaction bumps the counter of each key whose row
//! it inserts, replaces, changes or deletes, once when the change is made (before `COMMIT`)
//! and once after the transaction ends; changes that cannot name their keys (`check --fix`,
//! recovery) bump the global one. A reader samples (global, slot) *before* it reads the row and
//! files its copy under that [`Stamp`]; the copy is current while a new sample is equal.
//!
//! Formats (one decoder, [`Format::of`]):
//! - `hoardgn1` (before this version): a 64-byte header (the magic, then zeros) and 65,537
//!   counters ([`LEGACY_SLOTS`] per key). Kept as it is: an older process may have it mapped,
//!   and replacing it under that process would split the directory's processes between two
//!   files.
//! - `hoardgn2`: the magic, the slot count (u64, little-endian) at byte 8, zeros to byte 64,
//!   then 1 + slots counters. Directories are created with [`SLOTS`] (2^20: 8 MiB, written
//!   whole). Keys sharing a slot only cost a re-read; with 65,536 slots, storing 32,000 new
//!   URLs bumped the slots of about 40% of a front of 100,000, with 2^20 about 3%.
//!
//! The pages of the file are shared by every process (page cache): only the pages holding
//! counters in use are resident, at most the whole file.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// Name of the generation file inside the cache directory.
pub(crate) const GEN_FILE: &str = "cache.gen";
/// Per-key counters of a generation file created now (a power of two).
pub const SLOTS: usize = 1 << 20;
/// Per-key counters of a `hoardgn1` file (the format before the slot count was recorded).
pub const LEGACY_SLOTS: usize = 1 << 16;
/// Slot counts a `hoardgn2` header may name (powers of two in between).
const MIN_SLOTS: usize = 1 << 10;
const MAX_SLOTS: usize = 1 << 26;
const MAGIC_V1: &[u8; 8] = b"hoardgn1";
const MAGIC_V2: &[u8; 8] = b"hoardgn2";
/// Header bytes before the counters (a cache line).
const HEADER: usize = 64;

/// The layout of a generation file, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `hoardgn1`: [`LEGACY_SLOTS`].
    V1,
    /// `hoardgn2` with its recorded slot count.
    V2 { slots: usize },
}

/// Why a generation file is not used (the handle then keeps no copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a magic this version knows (a newer format, or not ours).
    UnknownFormat,
    /// A `hoardgn2` header naming a slot count that is not a power of two in range.
    BadSlotCount,
    /// Shorter than its layout (never extended: a sparse page written through the map would
    /// be a SIGBUS on a full disk).
    Short,
    /// It could not be created, opened or mapped (a full or read-only disk, permissions).
    Unavailable,
}

impl Format {
    /// The one decoder: the layout of a file of `len` bytes starting with `header`.
    fn of(header: &[u8], len: usize) -> Result<Format, Refused> {
        let format = match header.get(..8) {
            Some(m) if m == MAGIC_V1 => Format::V1,
            Some(m) if m == MAGIC_V2 => {
                let raw = header.get(8..16).ok_or(Refused::Short)?;
                let n = u64::from_le_bytes(raw.try_into().expect("8 bytes"));
                let slots = usize::try_from(n).map_err(|_| Refused::BadSlotCount)?;
                if !slots.is_power_of_two() || !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
                    return Err(Refused::BadSlotCount);
                }
                Format::V2 { slots }
            }
            Some(_) => return Err(Refused::UnknownFormat),
            None => return Err(Refused::Short),
        };
        if len < format.len() {
            return Err(Refused::Short);
        }
        Ok(format)
    }

    fn slots(self) -> usize {
        match self {
            Format::V1 => LEGACY_SLOTS,
            Format::V2 { slots } => slots,
        }
    }

    /// Bytes of a file of this layout.
    fn len(self) -> usize {
        HEADER + 8 * (self.slots() + 1)
    }

    /// A whole file of this layout, all counters zero.
    fn new_file(self) -> Vec<u8> {
        let mut bytes = vec![0u8; self.len()];
        match self {
            Format::V1 => bytes[..8].copy_from_slice(MAGIC_V1),
            Format::V2 { slots } => {
                bytes[..8].copy_from_slice(MAGIC_V2);
                bytes[8..16].copy_from_slice(&(slots as u64).to_le_bytes());
            }
        }
        bytes
    }
}

/// The shared counters of one cache directory.
pub(crate) struct Generations {
    map: MmapMut,
    /// Slots − 1 (a power of two minus one), as the file says.
    mask: usize,
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("slots", &(self.mask + 1))
            .finish_non_exhaustive()
    }
}

/// The change counters of a key, sampled before reading its row (see
/// [`Cache::change_stamp`](super::Cache::change_stamp)): a copy read after sampling is
/// current while a new sample is equal.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let before: Option<hoard_store::ChangeStamp> = cache.change_stamp(b"k");
/// cache.set(b"k", b"v", None, None)?;
/// if let Some(before) = before {
///     assert_ne!(cache.change_stamp(b"k"), Some(before)); // a write moved it
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub(crate) u64, pub(crate) u64);

impl Stamp {
    /// Whether `self` is `earlier` plus exactly one bump of the key's slot and none of the
    /// global counter: exactly one change was registered in between.
    pub(crate) fn one_bump_after(self, earlier: Stamp) -> bool {
        self.0 == earlier.0 && self.1 == earlier.1.wrapping_add(1)
    }
}

impl Generations {
    /// Maps `dir/cache.gen`, creating it first if needed. `None` when it cannot be created
    /// or mapped (a full or read-only disk, no write permission on the file, a format this
    /// version does not know) or the directory is on a copy-on-write filesystem; the handle
    /// then keeps no copies, and copies other processes hold of keys it changes are trusted
    /// only for their time bound (a warning is logged, except on copy-on-write filesystems,
    /// where every process decides the same).
    pub(crate) fn open(dir: &Path) -> Option<Generations> {
        if copy_on_write(dir) {
            return None;
        }
        let found = Generations::map(dir);
        if let Err(why) = &found {
            tracing::warn!(
                target: "hoard::store",
                dir = %dir.display(),
                reason = ?why,
                "cannot map {GEN_FILE}: this handle keeps no copies in memory, and other \
                 processes see its writes only when their copies age out"
            );
        }
        found.ok()
    }

    pub(crate) fn map(dir: &Path) -> Result<Generations, Refused> {
        let path = dir.join(GEN_FILE);
        if !path.exists() {
            create(dir, &path, Format::V2 { slots: SLOTS });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|_| Refused::Unavailable)?;
        // A file shorter than its header or its layout is refused by `Format::of`, never
        // extended: `create` never publishes a partial file.
        let len = file.metadata().map_err(|_| Refused::Unavailable)?.len();
        if len < HEADER as u64 {
            return Err(Refused::Short);
        }
        // SAFETY: the file is at least a header long, made of allocated blocks (written, not
        // extended), and this crate never truncates it; all access to the counters goes
        // through atomics, and only the counters the header's layout covers are touched.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|_| Refused::Unavailable)?;
        let format = Format::of(&map[..HEADER], map.len())?;
        Ok(Generations {
            map,
            mask: format.slots() - 1,
        })
    }

    fn counter(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i <= self.mask + 1);
        // SAFETY: the mapping is page-aligned and at least the layout's length (checked in
        // `map`), HEADER is a multiple of 8, so the address is in bounds and 8-byte aligned;
        // the memory lives as long as `self` and is only accessed atomically (by every
        // process).
        unsafe { &*(self.map.as_ptr().add(HEADER + 8 * i) as *const AtomicU64) }
    }

    /// Slot 0 is the global counter; keys use 1..=slots.
    fn slot(&self, h: u64) -> usize {
        1 + (h as usize & self.mask)
    }

    /// Counters to sample before reading the row of a key with hash `h`.
    pub(crate) fn stamp(&self, h: u64) -> Stamp {
        Stamp(
            self.counter(0).load(Ordering::SeqCst),
            self.counter(self.slot(h)).load(Ordering::SeqCst),
        )
    }

    /// Invalidates copies of keys with hash `h`, in every process.
    pub(crate) fn bump(&self, h: u64) {
        self.counter(self.slot(h)).fetch_add(1, Ordering::SeqCst);
    }

    /// Invalidates every copy, in every process.
    pub(crate) fn bump_all(&self) {
        self.counter(0).fetch_add(1, Ordering::SeqCst);
    }

    /// Per-key counters of this directory's file.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.mask + 1
    }
}

/// Whether `dir` is on a filesystem that allocates new blocks when a mapped page is written
/// again (btrfs, ZFS, bcachefs): there a write through the mapping on a full disk is a
/// SIGBUS, not an error, so no process on it maps `cache.gen` (all processes sharing the
/// directory see the same filesystem and decide the same).
#[cfg(all(target_os = "linux", not(hoard_store_portable)))]
fn copy_on_write(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const BTRFS: i64 = 0x9123_683E;
    const ZFS: i64 = 0x2FC1_2FC1;
    const BCACHEFS: i64 = 0xCA45_1A4E;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let kind = st.f_type as i64;
    [BTRFS, ZFS, BCACHEFS].contains(&kind)
}

/// Elsewhere the filesystem's kind is not checked: treated as copy-on-write (APFS is), so the
/// memory layer is off and every read goes to SQLite, exact and without mapped writes.
#[cfg(not(all(target_os = "linux", not(hoard_store_portable))))]
fn copy_on_write(_dir: &Path) -> bool {
    true
}

/// Writes a complete generation file of `format` (mode 0600) under a temporary name and links
/// it into place, so no process ever maps a partial one and racing creators agree on one file
/// (the first link wins; the others map that one, whatever its format).
fn create(dir: &Path, path: &Path, format: Format) {
    let tmp = dir.join(format!(
        "{GEN_FILE}.tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let bytes = format.new_file();
    // Counters only matter while processes run: no fsync.
    let written = super::private::create_new_file(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .and_then(|()| std::fs::hard_link(&tmp, path));
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        tracing::debug!(target: "hoard::store", error = %e, "cannot create {GEN_FILE}");
    }
    let _ = std::fs::remove_file(&tmp);
}

/// The key hash used for slots and the memory map.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A `hoardgn1` file in `dir`, as a version before `hoardgn2` created it (for tests of the
/// upgrade path).
#[cfg(test)]
pub(crate) fn write_legacy(dir: &Path) {
    std::fs::write(dir.join(GEN_FILE), Format::V1.new_file()).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two keys whose hashes share their low 16 bits but not their low 20: one slot in a
    /// legacy file, two in a new one.
    fn legacy_neighbours() -> (u64, u64) {
        let a = 0x1234_5678_9abc_0042_u64;
        (a, a ^ (1 << 17))
    }

    #[test]
    fn formats_decode_as_their_headers_say() {
        let v2 = Format::V2 { slots: SLOTS }.new_file();
        let v1 = Format::V1.new_file();
        let mut odd = v2.clone();
        odd[8..16].copy_from_slice(&3000u64.to_le_bytes());
        let mut huge = v2.clone();
        huge[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        type Case<'a> = (&'a str, &'a [u8], usize, Result<Format, Refused>);
        let cases: [Case<'_>; 7] = [
            ("new", &v2, v2.len(), Ok(Format::V2 { slots: SLOTS })),
            ("legacy", &v1, v1.len(), Ok(Format::V1)),
            ("new, cut short", &v2, v2.len() - 8, Err(Refused::Short)),
            ("legacy, cut short", &v1, v1.len() - 1, Err(Refused::Short)),
            (
                "slot count not a power of two",
                &odd,
                v2.len(),
                Err(Refused::BadSlotCount),
            ),
            (
                "slot count out of range",
                &huge,
                v2.len(),
                Err(Refused::BadSlotCount),
            ),
            (
                "not ours",
                b"hoardgn9........",
                1 << 30,
                Err(Refused::UnknownFormat),
            ),
        ];
        for (name, header, len, want) in cases {
            assert_eq!(Format::of(&header[..16], len), want, "{name}");
        }
        assert_eq!(v2.len(), HEADER + 8 * (SLOTS + 1));
        assert_eq!(v1.len(), HEADER + 8 * (LEGACY_SLOTS + 1));
    }

    #[test]
    fn a_new_directory_gets_the_large_table() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::map(dir.path()).unwrap();
        assert_eq!(g.slots(), SLOTS);
        let (a, b) = legacy_neighbours();
        g.bump(a);
        assert_ne!(g.stamp(a), Stamp(0, 0));
        assert_eq!(
            g.stamp(b),
            Stamp(0, 0),
            "keys 2^17 apart have their own slots"
        );
    }

    /// Regression for the upgrade: a directory whose `cache.gen` an older version created
    /// keeps its 65,536 slots in every new opener (an older process may have it mapped), and
    /// a bump through one mapping is seen by the other with the legacy slot arithmetic.
    #[test]
    fn a_legacy_file_is_kept_and_every_opener_uses_its_layout() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path());
        let one = Generations::map(dir.path()).unwrap();
        let two = Generations::map(dir.path()).unwrap();
        assert_eq!((one.slots(), two.slots()), (LEGACY_SLOTS, LEGACY_SLOTS));
        let (a, b) = legacy_neighbours();
        let before = two.stamp(b);
        one.bump(a);
        assert!(two.stamp(b).one_bump_after(before), "one legacy slot");
        // What an older process bumps: counter 1 + (h & 0xffff) at byte 64 + 8 * that.
        let raw = std::fs::read(dir.path().join(GEN_FILE)).unwrap();
        let at = HEADER + 8 * (1 + (a as usize & (LEGACY_SLOTS - 1)));
        assert_eq!(u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap()), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join(GEN_FILE)).unwrap().len(),
            Format::V1.len() as u64,
            "not rewritten"
        );
    }

    #[test]
    fn one_bump_after_needs_exactly_one_slot_bump_and_no_global_one() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::map(dir.path()).unwrap();
        let h = key_hash(b"k");
        let p = g.stamp(h);
        assert!(!g.stamp(h).one_bump_after(p), "no bump");
        g.bump(h);
        let q = g.stamp(h);
        assert!(q.one_bump_after(p));
        g.bump(h);
        assert!(!g.stamp(h).one_bump_after(p), "two bumps");
        let r = g.stamp(h);
        g.bump(h);
        g.bump_all();
        assert!(!g.stamp(h).one_bump_after(r), "a global bump too");
    }

    #[test]
    fn racing_creators_share_one_file_and_short_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let gens: Vec<Generations> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Generations::map(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        gens[3].bump(42);
        gens[5].bump_all();
        assert!(gens.iter().all(|g| g.stamp(42) == Stamp(1, 1)));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "temporary files are removed");

        for short in [
            &b"hoardgn1"[..],
            &Format::V2 { slots: SLOTS }.new_file()[..4096],
        ] {
            let other = tempfile::tempdir().unwrap();
            std::fs::write(other.path().join(GEN_FILE), short).unwrap();
            assert!(Generations::open(other.path()).is_none());
            assert_eq!(
                std::fs::metadata(other.path().join(GEN_FILE))
                    .unwrap()
                    .len(),
                short.len() as u64,
                "never extended"
            );
        }
    }
}
