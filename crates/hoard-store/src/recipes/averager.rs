//! [`Averager`]: a running average kept in the cache (diskcache.recipes `Averager`).
//!
//! Invariant: the row holds `(total, count)`, updated by one write transaction per
//! [`add`](Averager::add), so values added by concurrent processes are all counted.

use std::time::Duration;

use super::StateRow;
use crate::cache::Cache;
use crate::error::Result;

/// A running average shared by every process using the cache.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let latency = hoard_store::Averager::new(&cache, b"avg:latency", None);
/// assert_eq!(latency.get()?, None);
/// latency.add(10.0)?;
/// latency.add(20.0)?;
/// assert_eq!(latency.get()?, Some(15.0));
/// assert_eq!(latency.pop()?, Some(15.0));
/// assert_eq!(latency.get()?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Averager {
    row: StateRow,
}

impl Averager {
    /// An average kept at `key`; each `add` sets the row to expire after `expire`.
    pub fn new(cache: &Cache, key: &[u8], expire: Option<Duration>) -> Averager {
        Averager {
            row: StateRow::new(cache, key, expire),
        }
    }

    /// Tags the row (for [`Cache::evict`]).
    pub fn with_tag(self, tag: &str) -> Averager {
        Averager {
            row: self.row.tagged(tag),
        }
    }

    /// Adds `value` to the average.
    pub fn add(&self, value: f64) -> Result<()> {
        self.row.cache.transact(|tx| {
            let (total, count) = self.row.read::<(f64, u64)>(tx)?.unwrap_or((0.0, 0));
            self.row.write(tx, &(total + value, count + 1))
        })
    }

    /// The average of the values added, `None` if none was.
    pub fn get(&self) -> Result<Option<f64>> {
        Ok(average(self.row.load()?))
    }

    /// The average, removing it.
    pub fn pop(&self) -> Result<Option<f64>> {
        Ok(average(self.row.take()?))
    }
}

fn average(state: Option<(f64, u64)>) -> Option<f64> {
    state.and_then(|(total, count)| (count > 0).then(|| total / count as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let avg = Averager::new(&cache, b"a", None).with_tag("stats");
        std::thread::scope(|s| {
            for t in 0..4 {
                let avg = avg.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        avg.add(f64::from(t * 25 + i)).unwrap();
                    }
                });
            }
        });
        assert_eq!(avg.get().unwrap(), Some(49.5)); // mean of 0..100
        assert_eq!(cache.evict("stats").unwrap(), 1);
        assert_eq!(avg.pop().unwrap(), None);
    }
}
