//! Cache settings shared by every process that opens a directory.
//!
//! Invariant: the database row is the source of truth; in-memory copies are caches
//! refreshed on open, on every write transaction that needs them, and on [`Cache::settings`](super::Cache::settings).

use std::fmt;
use std::str::FromStr;

use super::error::Error;

/// Which entries are evicted when the cache is over its size limit (after expired ones).
///
/// ```
/// use hoard_store::EvictionPolicy;
/// let p: EvictionPolicy = "least-recently-used".parse().unwrap();
/// assert_eq!(p, EvictionPolicy::LeastRecentlyUsed);
/// assert_eq!(p.to_string(), "least-recently-used");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvictionPolicy {
    /// Oldest store time first (diskcache `least-recently-stored`, the default).
    #[default]
    LeastRecentlyStored,
    /// Oldest access time first (`least-recently-used`); accesses are buffered.
    LeastRecentlyUsed,
    /// Fewest accesses first (`least-frequently-used`); accesses are buffered.
    LeastFrequentlyUsed,
    /// Never evict live entries (`none`); only expired ones are culled.
    None,
}

impl EvictionPolicy {
    /// All policies, for table-style tests and CLIs.
    pub const ALL: [EvictionPolicy; 4] = [
        EvictionPolicy::LeastRecentlyStored,
        EvictionPolicy::LeastRecentlyUsed,
        EvictionPolicy::LeastFrequentlyUsed,
        EvictionPolicy::None,
    ];

    /// The diskcache name of the policy.
    pub fn as_str(&self) -> &'static str {
        match self {
            EvictionPolicy::LeastRecentlyStored => "least-recently-stored",
            EvictionPolicy::LeastRecentlyUsed => "least-recently-used",
            EvictionPolicy::LeastFrequentlyUsed => "least-frequently-used",
            EvictionPolicy::None => "none",
        }
    }

    /// `ORDER BY` clause choosing victims, or `None` when live entries are never evicted.
    pub(crate) fn order_by(&self) -> Option<&'static str> {
        match self {
            EvictionPolicy::LeastRecentlyStored => Some("store_time, rowid"),
            EvictionPolicy::LeastRecentlyUsed => Some("access_time, rowid"),
            EvictionPolicy::LeastFrequentlyUsed => Some("access_count, rowid"),
            EvictionPolicy::None => None,
        }
    }

    /// True when reads must record access time/count.
    pub(crate) fn tracks_access(&self) -> bool {
        matches!(
            self,
            EvictionPolicy::LeastRecentlyUsed | EvictionPolicy::LeastFrequentlyUsed
        )
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvictionPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        EvictionPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::InvalidSetting(format!("unknown eviction policy {s:?}")))
    }
}

/// Settings stored in the database (diskcache defaults). `#[non_exhaustive]`: start from
/// [`Settings::default`] or [`Cache::settings`](super::Cache::settings) and change fields.
///
/// ```
/// let mut s = hoard_store::Settings::default();
/// s.size_limit = 64 << 20;
/// assert_eq!(s.cull_limit, 10);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// Approximate maximum of [`Cache::volume`](super::Cache::volume) in bytes (default 1 GiB).
    pub size_limit: u64,
    /// Maximum rows culled per write when over the limit in diskcache terms (default 10);
    /// hoard keeps culling in batches of this size until under the limit. 0 disables culling on write.
    pub cull_limit: u32,
    /// Which live entries go first when over the limit.
    pub eviction_policy: EvictionPolicy,
    /// Values of at least this many bytes are stored in files (default 32 KiB).
    pub min_file_size: u64,
    /// Whether hits and misses are counted (default false).
    pub statistics: bool,
    /// `PRAGMA mmap_size` for each connection (default 64 MiB).
    pub sqlite_mmap_size: u64,
    /// `PRAGMA cache_size` for each connection, in pages (negative: KiB) (default 8192).
    pub sqlite_cache_size: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            size_limit: 1 << 30,
            cull_limit: 10,
            eviction_policy: EvictionPolicy::LeastRecentlyStored,
            min_file_size: 1 << 15,
            statistics: false,
            sqlite_mmap_size: 1 << 26,
            sqlite_cache_size: 8192,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        let cases = [
            ("least-recently-stored", EvictionPolicy::LeastRecentlyStored),
            ("least-recently-used", EvictionPolicy::LeastRecentlyUsed),
            ("least-frequently-used", EvictionPolicy::LeastFrequentlyUsed),
            ("none", EvictionPolicy::None),
        ];
        for (name, policy) in cases {
            assert_eq!(name.parse::<EvictionPolicy>().unwrap(), policy);
            assert_eq!(policy.as_str(), name);
        }
        assert!(matches!(
            "lru".parse::<EvictionPolicy>(),
            Err(Error::InvalidSetting(_))
        ));
    }

    #[test]
    fn defaults_are_diskcache_defaults() {
        let s = Settings::default();
        assert_eq!(s.size_limit, 1 << 30);
        assert_eq!(s.cull_limit, 10);
        assert_eq!(s.min_file_size, 32 * 1024);
        assert_eq!(s.eviction_policy, EvictionPolicy::LeastRecentlyStored);
        assert!(!s.statistics);
    }
}
