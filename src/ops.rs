//! Operations on a cache directory for the `hoard` subcommands (stats, ls, show, purge,
//! evict, expire, clear, check): each returns a `Serialize` report that `main` prints for
//! people (its `Display`, in `render.rs`) or as JSON.
//!
//! Invariant: safe while a proxy runs on the same directory. The store is opened with
//! [`Cache::open`] (its settings are left as they are) and inspection reads use
//! [`Cache::peek_meta`], so listing neither counts hits nor changes eviction order. A running
//! proxy keeps hot rows in memory for up to `memory-cache-ttl` (1 s by default), so it may
//! serve a purged entry for that long; `PURGE` through the proxy has no such delay.

pub mod har;
pub mod render;
pub mod shared;
pub mod tiers;
pub mod warm;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Request, Uri};
use serde::Serialize;

use crate::entries::listing::{self, StoredUrl};
use crate::http_cache::{self, CacheKey, CacheStatus, Detail, Lookup, LookupOptions, Rule};
use crate::proxy::metrics::read_served;
use crate::store::{self, Cache};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The directory holds no cache (a typo in `--cache-dir` should not create an empty one).
    #[error("no cache in {0} (no cache.db; check --cache-dir)")]
    NoCache(String),
    /// The served counts could not be read.
    #[error(transparent)]
    Served(#[from] crate::proxy::metrics::ServedError),
    /// The argument is not an absolute http(s) URL.
    #[error("{0:?} is not an absolute http:// or https:// URL: {1}")]
    Url(String, String),
}

/// Result of an operation.
pub type Result<T> = std::result::Result<T, OpsError>;

/// Open the existing cache in `dir` with the settings stored there.
pub fn open(dir: &Path) -> Result<Cache> {
    if !dir.join("cache.db").is_file() {
        return Err(OpsError::NoCache(dir.display().to_string()));
    }
    Ok(Cache::open(dir)?)
}

/// The URL key of an absolute URL, as the proxy builds it.
/// The first matching rule's `ignore_query` applies, as in the proxy, so a URL is found
/// under the key the proxy stored it with.
pub fn url_key(url: &str, rules: &[Rule]) -> Result<CacheKey> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| OpsError::Url(url.to_string(), e.to_string()))?;
    let uri = match http_cache::first_match(rules, &uri) {
        Some(rule) => rule.key_uri(&uri),
        None => uri,
    };
    http_cache::cache_key(&Method::GET, &uri)
        .map_err(|e| OpsError::Url(url.to_string(), e.to_string()))
}

fn unix(t: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0))
}

fn secs_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Which tier a URL or a figure is from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreTier {
    /// This machine's store (the cache directory).
    Local,
    /// The Redis a fleet shares (`shared`).
    Shared,
}

impl StoreTier {
    /// `local` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreTier::Local => "local",
            StoreTier::Shared => "shared",
        }
    }
}

/// One URL as stored: its rows summed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UrlEntry {
    /// The tier it is stored in.
    pub tier: StoreTier,
    /// The absolute URL.
    pub url: String,
    /// Method class of the entry: `GET` (also HEAD), or a method cached by a rule (`POST`).
    pub method: String,
    /// The store key and tag of its rows (what `evict --tag` takes).
    pub key: String,
    /// `host[:port]`.
    pub host: String,
    /// Stored variants (1 for a response without `Vary`).
    pub variants: u64,
    /// Bytes of all its rows (key + head + body).
    pub size: u64,
    /// When the newest row was stored (Unix seconds).
    pub stored_at: f64,
    /// Status of the stored response (of the first variant).
    pub status: Option<u16>,
}

/// Every stored URL (of `host`, if given), in key order.
pub fn list(cache: &Cache, host: Option<&str>) -> Result<Vec<UrlEntry>> {
    listing::each_url(cache, host)
        .map(|r| url_entry(cache, r?))
        .collect()
}

/// The listing entry of a URL's rows (its head read for the status).
fn url_entry(cache: &Cache, (key, g): (String, listing::UrlRows)) -> Result<UrlEntry> {
    let (method, url) = listing::split_url_key(&key);
    Ok(UrlEntry {
        tier: StoreTier::Local,
        host: listing::authority(&key).to_string(),
        method: method.to_string(),
        url: url.to_string(),
        status: g.status(cache)?,
        variants: g.responses(),
        size: g.size,
        stored_at: g.stored_at,
        key,
    })
}

/// Some of the stored URLs: how many matched, and the first of them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UrlPage {
    /// URLs that matched.
    pub total: usize,
    /// The first `limit` of them, in key order (URL order: by method, then scheme, host, path).
    pub urls: Vec<UrlEntry>,
}

/// The stored URLs (of `host`, if given) for which `keep(method, url)` holds: all counted,
/// the first `limit` returned in key order. The store is read page by page and at most
/// `limit` URLs are held (their heads read for the status, no other), so memory follows
/// `limit`, not the store (the dashboard's `/api/urls`).
pub fn list_page(
    cache: &Cache,
    host: Option<&str>,
    mut keep: impl FnMut(&str, &str) -> bool,
    limit: usize,
) -> Result<UrlPage> {
    let matching = listing::each_url(cache, host).filter(|r| match r {
        Ok((key, _)) => {
            let (method, url) = listing::split_url_key(key);
            keep(method, url)
        }
        Err(_) => true,
    });
    let (total, first) = first_of(matching, limit)?;
    let urls = first
        .into_iter()
        .map(|g| url_entry(cache, g))
        .collect::<Result<_>>()?;
    Ok(UrlPage { total, urls })
}

/// How many `items` there are, and the first `limit` of them; holds no more than those.
fn first_of<T, E>(
    items: impl Iterator<Item = std::result::Result<T, E>>,
    limit: usize,
) -> std::result::Result<(usize, Vec<T>), E> {
    let mut kept = Vec::with_capacity(limit.min(1024));
    let mut total = 0;
    for item in items {
        let item = item?;
        total += 1;
        if kept.len() < limit {
            kept.push(item);
        }
    }
    Ok((total, kept))
}

/// Bytes used by one host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostUsage {
    /// `host[:port]`.
    pub host: String,
    /// Stored URLs.
    pub urls: u64,
    /// Bytes of their rows.
    pub bytes: u64,
}

/// `hoard stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsReport {
    /// The cache directory.
    pub cache_dir: String,
    /// Rows in the store (URLs, Vary indexes and variants).
    pub entries: u64,
    /// Distinct URLs.
    pub urls: u64,
    /// Bytes used (rows plus database).
    pub bytes: u64,
    /// The store's size limit.
    pub size_limit: u64,
    /// The store's eviction policy.
    pub eviction_policy: String,
    /// Whether hits and misses are counted (the proxy's `statistics` setting).
    pub statistics: bool,
    /// Requests the proxy answered from the cache, memory front included (all processes
    /// on this directory, across restarts).
    pub hits: u64,
    /// Cacheable requests (GET/HEAD, rule-cached methods) that went to an origin.
    pub misses: u64,
    /// hits / (hits + misses), when there were such requests.
    pub hit_ratio: Option<f64>,
    /// Body bytes (of known length) sent from the cache.
    pub cache_bytes: u64,
    /// Body bytes (of known length) of cacheable requests sent from origins.
    pub origin_bytes: u64,
    /// Store lookups that found a row (a Vary lookup is two; includes re-reads).
    pub store_hits: u64,
    /// Store lookups that found nothing.
    pub store_misses: u64,
    /// Rows the store removed on its own (all processes, since the directory was created).
    pub evictions: EvictionReport,
    /// Hosts with the most bytes, largest first.
    pub top_hosts: Vec<HostUsage>,
}

/// Rows the store removed on its own, by reason (`store::Evictions`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct EvictionReport {
    /// Live rows culled to keep the store within its size limit.
    pub culled: u64,
    /// Expired rows removed.
    pub expired: u64,
}

impl From<crate::store::Evictions> for EvictionReport {
    fn from(e: crate::store::Evictions) -> Self {
        EvictionReport {
            culled: e.culled,
            expired: e.expired,
        }
    }
}

/// Summary of the store: size, counters and the `top` hosts by bytes.
pub fn stats(cache: &Cache, top: usize) -> Result<StatsReport> {
    let settings = cache.settings();
    // Keeps `statistics` as it is: this reads the counters without turning counting on or off.
    let (store_hits, store_misses) = cache.stats(settings.statistics, false)?;
    let served = read_served(cache.directory())?;
    let mut hosts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut urls = 0;
    for url in listing::each_url(cache, None) {
        let (key, g) = url?;
        urls += 1;
        let e = hosts
            .entry(listing::authority(&key).to_string())
            .or_default();
        e.0 += 1;
        e.1 += g.size;
    }
    let mut top_hosts: Vec<HostUsage> = hosts
        .into_iter()
        .map(|(host, (urls, bytes))| HostUsage { host, urls, bytes })
        .collect();
    top_hosts.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.host.cmp(&b.host)));
    top_hosts.truncate(top);
    Ok(StatsReport {
        cache_dir: cache.directory().display().to_string(),
        entries: cache.len()?,
        urls,
        bytes: cache.volume()?,
        size_limit: settings.size_limit,
        eviction_policy: settings.eviction_policy.to_string(),
        statistics: settings.statistics,
        hits: served.hits,
        misses: served.misses,
        hit_ratio: served.ratio(),
        cache_bytes: served.cache_bytes,
        origin_bytes: served.origin_bytes,
        store_hits,
        store_misses,
        evictions: cache.evictions()?.into(),
        top_hosts,
    })
}

/// One stored response of a URL.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VariantReport {
    /// The varying request headers' stored values (`name: value`), empty without Vary.
    pub request_headers: Vec<(String, String)>,
    /// Response status.
    pub status: u16,
    /// Stored response headers.
    pub headers: Vec<(String, String)>,
    /// Body length.
    pub body_len: u64,
    /// When the response was received (Unix seconds).
    pub stored_at: f64,
    /// Current age in seconds.
    pub age: u64,
    /// Freshness lifetime in seconds.
    pub freshness_lifetime: u64,
    /// Remaining freshness in seconds (0 when stale).
    pub ttl: u64,
    /// Whether it is fresh now.
    pub fresh: bool,
    /// The `Cache-Status` a request with this variant's headers would get now.
    pub cache_status: String,
    /// The configuration rule that applied when it was stored, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The TTL that rule forced, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced_ttl: Option<u64>,
}

/// `hoard show URL`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShowReport {
    /// The normalised URL.
    pub url: String,
    /// Header names the response varies on (empty without Vary).
    pub vary: Vec<String>,
    /// Stored variants.
    pub variants: Vec<VariantReport>,
    /// The `Cache-Status` a plain `GET URL` (no other headers) would get now.
    pub cache_status: String,
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The `Cache-Status` a request would get from `head` at `now` (without going forward).
fn would_get(head: &http_cache::StoredHead, req: &http::request::Parts, now: SystemTime) -> String {
    let cs = match http_cache::lookup(head, req, now, &LookupOptions::default()) {
        Lookup::Fresh { ttl, .. } => CacheStatus::hit(Some(ttl.as_secs() as i64)),
        Lookup::Stale {
            serve_stale_while_revalidate: true,
            ..
        } => CacheStatus::stale().with_detail(Detail::StaleWhileRevalidate),
        Lookup::Stale { .. } => CacheStatus::stale(),
        Lookup::Mismatch => CacheStatus::miss(),
    };
    let cs = match (&cs.detail, &head.rule) {
        (None, Some(rule)) => cs.with_detail(Detail::Other(format!("rule={rule}").into())),
        _ => cs,
    };
    cs.to_string()
}

/// The stored head(s) of `url`, or `None` when nothing is stored.
pub fn show(
    cache: &Cache,
    url: &str,
    rules: &[Rule],
    now: SystemTime,
) -> Result<Option<ShowReport>> {
    let key = url_key(url, rules)?;
    let uri: Uri = key
        .url()
        .parse()
        .map_err(|e: http::uri::InvalidUri| OpsError::Url(url.into(), e.to_string()))?;
    let (plain, _) = Request::get(uri)
        .body(())
        .map_err(|e| OpsError::Url(url.into(), e.to_string()))?
        .into_parts();
    let Some(stored) = listing::stored_url(cache, &key, &plain.headers)? else {
        return Ok(None);
    };
    let opts = LookupOptions::default();
    let variant = |head: &http_cache::StoredHead| {
        let mut req = plain.clone();
        req.headers = head.request_headers.clone();
        VariantReport {
            request_headers: header_pairs(&head.request_headers),
            status: head.status.as_u16(),
            headers: header_pairs(&head.response_headers),
            body_len: head.body_len,
            stored_at: secs_since_epoch(head.response_time),
            age: head.current_age(now).as_secs(),
            freshness_lifetime: head.freshness_lifetime(&opts).as_secs(),
            ttl: head.ttl(now, &opts).as_secs(),
            fresh: head.ttl(now, &opts) > Duration::ZERO,
            cache_status: would_get(head, &req, now),
            rule: head.rule.clone(),
            forced_ttl: head.forced_ttl.map(|d| d.as_secs()),
        }
    };
    let report = match stored {
        StoredUrl::Plain(head) => ShowReport {
            url: key.url().to_string(),
            vary: vec![],
            cache_status: would_get(&head, &plain, now),
            variants: vec![variant(&head)],
        },
        StoredUrl::Varying {
            names,
            variants,
            selected,
        } => ShowReport {
            url: key.url().to_string(),
            vary: names.iter().map(|n| n.as_str().to_string()).collect(),
            variants: variants.iter().map(variant).collect(),
            cache_status: match selected {
                Some(h) => would_get(&h, &plain, now),
                None => CacheStatus::vary_miss().to_string(),
            },
        },
    };
    Ok(Some(report))
}

/// Rows removed by `purge`, `evict`, `expire` or `clear`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removed {
    /// URLs affected (when known).
    pub urls: u64,
    /// Rows deleted.
    pub rows: u64,
}

/// Remove every stored variant of `url`.
pub fn purge(cache: &Cache, url: &str, rules: &[Rule]) -> Result<Removed> {
    let key = url_key(url, rules)?;
    let rows = cache.evict(key.as_str())?;
    Ok(Removed {
        urls: u64::from(rows > 0),
        rows,
    })
}

/// Remove every URL of `host` (`host` matches every port; `host:port` one port), both
/// schemes, every cached method.
pub fn evict_host(cache: &Cache, host: &str) -> Result<Removed> {
    let mut removed = Removed { urls: 0, rows: 0 };
    let mut tags: Vec<String> = Vec::new();
    let mut untagged = Vec::new();
    for row in listing::rows(cache) {
        let row = row?;
        if !listing::host_matches(listing::authority(&row.url_key), host) {
            continue;
        }
        match row.tag {
            Some(t) if tags.last() != Some(&t) => tags.push(t),
            Some(_) => {}
            None => untagged.push(row.key),
        }
    }
    tags.sort();
    tags.dedup();
    for t in tags {
        let n = cache.evict(&t)?;
        if n > 0 {
            removed.urls += 1;
            removed.rows += n;
        }
    }
    for k in untagged {
        if cache.delete(&k)? {
            removed.rows += 1;
        }
    }
    Ok(removed)
}

/// Remove every row tagged `tag` (the proxy tags rows with their URL key).
pub fn evict_tag(cache: &Cache, tag: &str) -> Result<Removed> {
    let rows = cache.evict(tag)?;
    Ok(Removed {
        urls: u64::from(rows > 0),
        rows,
    })
}

/// Remove rows whose store expiry has passed.
pub fn expire(cache: &Cache) -> Result<Removed> {
    Ok(Removed {
        urls: 0,
        rows: cache.expire()?,
    })
}

/// Remove every row.
pub fn clear(cache: &Cache) -> Result<Removed> {
    Ok(Removed {
        urls: 0,
        rows: cache.clear()?,
    })
}

/// `hoard check`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems found.
    pub problems: Vec<String>,
    /// Whether they were repaired (`--fix`).
    pub fixed: bool,
}

impl CheckReport {
    /// True when problems remain.
    pub fn failed(&self) -> bool {
        !self.problems.is_empty() && !self.fixed
    }
}

/// Check the store (integrity, rows against files, counters, who else may read or replace
/// it); with `fix`, repair. `fixed` is false when `fix` left an exposure it may not change
/// (a parent directory, files owned by another account).
pub fn check(cache: &Cache, fix: bool) -> Result<CheckReport> {
    let mut problems = cache.check(fix)?;
    problems.extend(cache.check_exposure(fix)?);
    let fixed = fix
        && store::exposure(cache.directory())
            .map_err(store::Error::from)?
            .is_empty();
    Ok(CheckReport { problems, fixed })
}

/// `stored_at` for people: an HTTP date.
pub fn human_time(t: f64) -> String {
    http_cache::fmt_http_date(unix(t))
}

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn purge_of_a_bad_url_is_an_error() {
        assert!(matches!(
            open(Path::new("/nonexistent/hoard")),
            Err(OpsError::NoCache(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        assert!(matches!(
            purge(&c, "not a url", &[]),
            Err(OpsError::Url(..))
        ));
        assert_eq!(purge(&c, "http://x.example/", &[]).unwrap().rows, 0);
    }

    #[test]
    fn list_groups_variants_and_filters_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let put = |key: &[u8], tag: &str| {
            c.set(key, b"body", None, Some(tag)).unwrap();
        };
        put(b"GET http://a.example/one", "GET http://a.example/one");
        put(b"GET http://a.example/v", "GET http://a.example/v");
        put(b"GET http://a.example/v\0gzip", "GET http://a.example/v");
        put(b"GET http://a.example/v\0br", "GET http://a.example/v");
        put(
            b"GET https://b.example:8443/",
            "GET https://b.example:8443/",
        );
        put(b"hoard-lease\0GET http://a.example/one", "lease");
        let post = "POST http://a.example/api body=0123";
        put(post.as_bytes(), post);
        let all = list(&c, None).unwrap();
        let summary: Vec<(&str, u64)> = all.iter().map(|e| (e.url.as_str(), e.variants)).collect();
        assert_eq!(
            summary,
            vec![
                ("http://a.example/one", 1),
                ("http://a.example/v", 2),
                ("https://b.example:8443/", 1),
                ("http://a.example/api body=0123", 1),
            ]
        );
        assert_eq!(list(&c, Some("b.example")).unwrap().len(), 1);
        let r = evict_host(&c, "a.example").unwrap();
        assert_eq!(r, Removed { urls: 3, rows: 5 });
        assert_eq!(c.len().unwrap(), 2, "b.example and the lease row remain");
        let s = stats(&c, 5).unwrap();
        assert_eq!((s.entries, s.urls), (2, 1));
        assert_eq!(s.top_hosts[0].host, "b.example:8443");
    }

    #[test]
    fn list_page_counts_every_match_and_keeps_the_first_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        for i in 0..40 {
            let host = if i % 2 == 0 { "a.example" } else { "b.example" };
            let key = format!("GET http://{host}/item/{i:02}");
            c.set(key.as_bytes(), b"body", None, Some(&key)).unwrap();
            let variant = format!("{key}\0gzip");
            c.set(variant.as_bytes(), b"body", None, Some(&key))
                .unwrap();
        }
        let post = "POST http://a.example/item/99 body=00";
        c.set(post.as_bytes(), b"body", None, Some(post)).unwrap();
        let all = list(&c, None).unwrap();
        // (host, keep, limit) -> the same as filtering the whole listing.
        type Keep = fn(&str, &str) -> bool;
        let cases: &[(Option<&str>, Keep, usize)] = &[
            (None, |m, _| m == "GET", 5),
            (Some("b.example"), |m, _| m == "GET", 3),
            (None, |m, u| m == "GET" && u.ends_with('7'), 2),
            (None, |_, u| u.contains("nomatch"), 50),
            (None, |_, _| true, 0),
            (None, |_, _| true, 500),
        ];
        for (i, (host, keep, limit)) in cases.iter().enumerate() {
            let page = list_page(&c, *host, keep, *limit).unwrap();
            let want: Vec<&UrlEntry> = all
                .iter()
                .filter(|e| host.is_none_or(|h| listing::host_matches(&e.host, h)))
                .filter(|e| keep(&e.method, &e.url))
                .collect();
            assert_eq!(page.total, want.len(), "case {i}");
            assert_eq!(page.urls.len(), want.len().min(*limit), "case {i}");
            let want: Vec<UrlEntry> = want.into_iter().take(*limit).cloned().collect();
            assert_eq!(page.urls, want, "case {i}");
        }
    }

    #[test]
    fn first_of_holds_at_most_limit_items_whatever_the_count() {
        use std::cell::Cell;
        use std::rc::Rc;
        /// An item counting how many of its kind are alive, and the most ever alive.
        struct Live(Rc<(Cell<usize>, Cell<usize>)>);
        impl Live {
            fn new(c: &Rc<(Cell<usize>, Cell<usize>)>) -> Live {
                c.0.set(c.0.get() + 1);
                c.1.set(c.1.get().max(c.0.get()));
                Live(c.clone())
            }
        }
        impl Drop for Live {
            fn drop(&mut self) {
                self.0.0.set(self.0.0.get() - 1);
            }
        }
        for (count, limit) in [(100_000, 10), (5, 10), (1_000, 0)] {
            let c = Rc::new((Cell::new(0), Cell::new(0)));
            let items = (0..count).map(|_| Ok::<_, ()>(Live::new(&c)));
            let (total, kept) = first_of(items, limit).unwrap();
            assert_eq!((total, kept.len()), (count, count.min(limit)));
            assert!(c.1.get() <= limit + 1, "{} alive at once", c.1.get());
        }
    }
}
