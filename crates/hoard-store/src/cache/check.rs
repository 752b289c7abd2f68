//! [`Cache::check`] and [`Cache::check_exposure`]: consistency and permissions, with repair.

use crate::error::Result;
use crate::files;
use crate::private;
use crate::schema;
use std::collections::HashSet;
use std::fs;

use super::*;

impl Cache {
    /// Reports what exposes the store to other local accounts: the directory, its parents
    /// and its files (see [`exposure`](crate::exposure)), and value files, temporary files
    /// and their directories wider than 0600/0700. With `fix`, narrows what this account
    /// owns: the directory to 0700, its files to 0600. Parents and anything owned by
    /// another account are reported, never changed. Not part of [`check`](Self::check): a
    /// directory the user shares on purpose is theirs to judge.
    pub fn check_exposure(&self, fix: bool) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let dir = &self.inner.dir;
        for e in crate::exposure(dir)? {
            problems.push(e.to_string());
            if fix && e.path() == dir.as_path() {
                private::tighten_own_dir(dir)?;
            } else if fix && matches!(e, crate::Exposure::Readable { .. }) {
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
    /// problems found; with `fix`, removes faulty rows and orphan files, repairs counters,
    /// and then rebuilds the database (`VACUUM`, as diskcache's `check(fix=True)`; also
    /// switches a database created before incremental auto_vacuum to it). Inside
    /// [`transact`](Self::transact) the rebuild is skipped (SQLite cannot `VACUUM` in a
    /// transaction). Who may access the files is [`check_exposure`](Self::check_exposure)'s
    /// job.
    pub fn check(&self, fix: bool) -> Result<Vec<String>> {
        let problems = self.check_rows(fix)?;
        if fix && self.inner.joined(|_, _| ()).is_none() {
            let conn = self.inner.conn()?;
            crate::retry::with_retry(|| schema::vacuum(&conn))?;
        }
        Ok(problems)
    }

    fn check_rows(&self, fix: bool) -> Result<Vec<String>> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_count(cache: &Cache) -> i64 {
        cache
            .inner
            .read(|c| Ok(c.query_row("PRAGMA page_count", [], |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn bulk_deletes_give_pages_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let value = vec![7u8; 4000]; // inline: pages of the database
        for i in 0..500u32 {
            cache
                .set(&i.to_be_bytes(), &value, None, Some("t"))
                .unwrap();
        }
        let full = page_count(&cache);
        assert!(full > 400, "{full} pages");
        // One batch gives back at most its size.
        cache.delete(&7u32.to_be_bytes()).unwrap();
        cache.delete(&8u32.to_be_bytes()).unwrap();
        let free = |c: &rusqlite::Connection| -> Result<i64> {
            Ok(c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
        };
        let was_free = cache.inner.read(free).unwrap();
        assert!(was_free >= 2, "{was_free}");
        let left = cache
            .inner
            .write(|c, _| schema::reclaim_free_pages(c, 1))
            .unwrap();
        assert_eq!(left as i64, was_free - 1);
        assert_eq!(cache.inner.read(free).unwrap(), was_free - 1);
        let before = cache.volume().unwrap();
        assert_eq!(cache.evict("t").unwrap(), 498);
        let after = page_count(&cache);
        assert!(after < full / 10, "{full} pages -> {after}");
        assert!(cache.volume().unwrap() < before / 10);
    }

    #[test]
    fn check_fix_vacuums_and_converts_old_databases() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mode = |cache: &Cache| -> i64 {
            cache
                .inner
                .read(|c| Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?))
                .unwrap()
        };
        assert_eq!(mode(&cache), 2);
        {
            let conn = cache.inner.conn().unwrap();
            conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
                .unwrap();
        }
        assert_eq!(mode(&cache), 0);
        cache.set(b"k", b"v", None, None).unwrap();
        assert_eq!(cache.check(false).unwrap(), Vec::<String>::new());
        assert_eq!(mode(&cache), 0, "check without fix changes nothing");
        assert_eq!(cache.check(true).unwrap(), Vec::<String>::new());
        assert_eq!(mode(&cache), 2);
        assert_eq!(cache.get(b"k").unwrap(), Some(b"v".to_vec()));
        // Inside a transaction the rebuild is skipped, the check still runs.
        let problems = cache.transact(|_| cache.check(true)).unwrap();
        assert!(problems.is_empty());
    }
}
