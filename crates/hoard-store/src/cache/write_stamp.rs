//! The change stamp a write may claim as its own, so a copy of what it stored can be kept in
//! memory at once (the proxy's front files a fill this way) instead of being read back.
//! Invariant: a stamp is handed out only when no other change of the key's counter can have
//! come between this write's change and the sample, so the copy is exactly the row as of the
//! stamp, as a copy read under it would be.
//!
//! Sampling the stamp after the commit is not enough: another process may commit a newer
//! version of the key between our `COMMIT` and our sample, and our older copy would be filed
//! under its stamp. Instead [`Cache::write_stamp`] samples the key's counters inside the
//! transaction, after the change's first bump (see `generations`), and
//! [`Cache::stamp_after_write`] samples them again after the transaction ended and accepts the
//! new stamp only when it is the first one plus exactly one bump (the transaction's own bump
//! after its end) and no global bump. Any other write that committed after ours bumps the
//! counter after its own commit, and, if it did not bump before ours (a lone statement bumps
//! before it waits for the write lock), also before its commit, hence after our change: one
//! more bump, refused. A write that has not bumped after its commit by the second sample is
//! still in progress, and its bump will move the stamp away from the copy.

use crate::generations::key_hash;
use crate::memory::Stamp;

use super::*;

/// A key's change stamp sampled inside the write transaction that changed the key
/// ([`Cache::write_stamp`]); after the commit, [`Cache::stamp_after_write`] says whether the
/// key's stamp then is this write's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStamp(Stamp);

impl Cache {
    /// Inside a write transaction of this handle on this thread ([`Cache::transact`]) that
    /// has changed `key` (set, delete, a committed [`ValueWriter`](crate::ValueWriter)...):
    /// the key's change stamp now, before `COMMIT`. `None` outside a transaction, when the
    /// transaction has not changed `key` (yet), or without `cache.gen`.
    pub fn write_stamp(&self, key: &[u8]) -> Option<WriteStamp> {
        let g = self.inner.gens.as_ref()?;
        let h = key_hash(key);
        let changed = self
            .inner
            .joined(|_, p| p.try_borrow().is_ok_and(|p| p.changed.contains(&h)))?;
        changed.then(|| WriteStamp(g.stamp(h)))
    }

    /// After the transaction in which `w` was taken for `key` **committed** (its `transact`
    /// returned `Ok`): the key's change stamp now, if it provably belongs to that write
    /// (see the module documentation), so a copy of what the write stored may be used under
    /// it exactly like a copy read under it ([`Cache::change_stamp`]). `None` when another
    /// change of the key (or of a key sharing its counter) may have come between, when the
    /// transaction changed the key's counter more than once, or while still inside a
    /// transaction of this handle on this thread: then the copy must not be kept.
    pub fn stamp_after_write(&self, key: &[u8], w: WriteStamp) -> Option<Stamp> {
        if self.inner.joined(|_, _| ()).is_some() {
            return None;
        }
        let now = self.change_stamp(key)?;
        now.one_bump_after(w.0).then_some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Cache {
        Cache::open(dir).unwrap()
    }

    /// A write's own stamp is the key's stamp after the commit, and a copy filed under it is
    /// current (equal to a fresh sample) until the next write.
    #[test]
    fn a_committed_write_owns_the_stamp_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path());
        assert_eq!(cache.write_stamp(b"k"), None, "outside a transaction");
        let w = cache
            .transact(|_| {
                assert_eq!(cache.write_stamp(b"k"), None, "not changed yet");
                cache.set(b"k", b"v", None, None)?;
                let w = cache
                    .write_stamp(b"k")
                    .expect("changed in this transaction");
                assert_eq!(cache.stamp_after_write(b"k", w), None, "not committed yet");
                Ok(w)
            })
            .unwrap();
        let own = cache
            .stamp_after_write(b"k", w)
            .expect("nobody came between");
        assert_eq!(cache.change_stamp(b"k"), Some(own));
        cache.set(b"k", b"w", None, None).unwrap();
        assert_ne!(cache.change_stamp(b"k"), Some(own));
    }

    /// Regression for the naive design: another handle (as another process would) commits
    /// a newer version of the key after our `COMMIT`, before we sample. A sample then is
    /// theirs, and our copy must not be filed under it: `stamp_after_write` refuses.
    #[test]
    fn a_write_by_another_handle_after_our_commit_takes_the_stamp_away() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (open(dir.path()), open(dir.path()));
        let w = ours
            .transact(|_| {
                ours.set(b"k", b"ours", None, None)?;
                Ok(ours.write_stamp(b"k").unwrap())
            })
            .unwrap();
        theirs.set(b"k", b"theirs", None, None).unwrap();
        let naive = ours.change_stamp(b"k").unwrap();
        assert_eq!(theirs.change_stamp(b"k"), Some(naive), "their stamp now");
        assert_eq!(ours.stamp_after_write(b"k", w), None);
        assert_eq!(ours.get(b"k").unwrap().as_deref(), Some(&b"theirs"[..]));
    }

    /// A write by another handle that commits between our change and our `COMMIT` cannot
    /// happen (we hold the write lock), but one whose bumps land in between (a lone
    /// statement bumps before it waits for the lock) must not be mistaken for ours either;
    /// neither may a transaction that changed the key twice, nor a global bump.
    #[test]
    fn foreign_and_extra_bumps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (open(dir.path()), open(dir.path()));
        type Between = fn(&Cache, &Cache);
        let cases: [(&str, Between); 3] = [
            ("their counter bump inside our transaction", |_, t| {
                t.inner.gens.as_ref().unwrap().bump(key_hash(b"k"))
            }),
            ("our second change of the key", |o, _| {
                o.delete(b"k").unwrap();
            }),
            ("a global bump", |_, t| {
                t.inner.gens.as_ref().unwrap().bump_all()
            }),
        ];
        for (name, between) in cases {
            let w = ours
                .transact(|_| {
                    ours.set(b"k", b"v", None, None)?;
                    let w = ours.write_stamp(b"k").unwrap();
                    between(&ours, &theirs);
                    Ok(w)
                })
                .unwrap();
            assert_eq!(ours.stamp_after_write(b"k", w), None, "{name}");
        }
    }
}
