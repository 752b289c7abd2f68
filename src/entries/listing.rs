//! Reading what the store holds, URL by URL, for the maintenance subcommands (`ls`, `stats`,
//! `show`, `evict`, `export`) and the dashboard, and writing whole responses for `import`:
//! row keys decoded into (URL key, variant), heads decoded, bodies read back.
//!
//! Invariant: this is the only reader of the row-key and head format outside the request path
//! (`load.rs`, `write.rs`); callers see URL keys, [`StoredHead`]s and bytes, never a raw row
//! key or meta blob. Reads use `peek_meta`, so they count no hits and change no LRU order.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName};

use super::shared::SharedTier;
use super::shared::admin::AdminError;
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead, Vary};
use crate::store::{self, Cache};

/// One row of a stored response, decoded from its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's store key (the URL key, or a variant key).
    pub key: Vec<u8>,
    /// `METHOD absolute-URL[ body=...]`: the URL key, also every row's tag.
    pub url_key: String,
    /// A Vary variant (not the URL's own row).
    pub variant: bool,
    /// The store tag (the URL key for rows the proxy wrote).
    pub tag: Option<String>,
    /// Accounted bytes of the row.
    pub size: u64,
    /// When it was stored (Unix seconds).
    pub store_time: f64,
}

/// Every row of a stored response, in key order; other rows (leases) are skipped.
pub fn rows(cache: &Cache) -> impl Iterator<Item = store::Result<Row>> + '_ {
    cache.scan(b"").filter_map(|r| match r {
        Err(e) => Some(Err(e)),
        Ok(r) => {
            let url_key = url_key_of(&r.key)?.to_string();
            Some(Ok(Row {
                variant: r.key.contains(&0),
                url_key,
                key: r.key,
                tag: r.tag,
                size: r.size,
                store_time: r.store_time,
            }))
        }
    })
}

/// The URL key of a response row (`GET http://h/p`, `POST http://h/p body=...`, with a
/// variant suffix after a 0 byte), or `None` for rows that are not cached responses.
fn url_key_of(key: &[u8]) -> Option<&str> {
    let url_part = key.split(|b| *b == 0).next().unwrap_or(key);
    let k = std::str::from_utf8(url_part).ok()?;
    let (method, rest) = k.split_once(' ')?;
    let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    (is_method && (rest.starts_with("http://") || rest.starts_with("https://"))).then_some(k)
}

/// `(method, URL)` of a URL key.
pub fn split_url_key(url_key: &str) -> (&str, &str) {
    url_key.split_once(' ').unwrap_or(("GET", url_key))
}

/// `host[:port]` of a URL key `METHOD scheme://authority/...`.
pub fn authority(url_key: &str) -> &str {
    let url = split_url_key(url_key).1;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Whether `authority` (`host` or `host:port`) matches `--host H`: equal, or the same host
/// on any port when `H` has no port.
pub fn host_matches(authority: &str, h: &str) -> bool {
    let h = h.trim().to_ascii_lowercase();
    if authority == h {
        return true;
    }
    let has_port = |a: &str| {
        a.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !a.ends_with(']')
        })
    };
    if has_port(&h) {
        return false;
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']') =>
        {
            host == h
        }
        _ => false,
    }
}

/// The rows of one URL summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UrlRows {
    /// Rows (the URL's own row, its variants).
    pub rows: u64,
    /// Variant rows.
    pub variants: u64,
    /// Bytes of all its rows.
    pub size: u64,
    /// When the newest row was stored (Unix seconds).
    pub stored_at: f64,
    first_key: Option<Vec<u8>>,
    variant_key: Option<Vec<u8>>,
}

impl UrlRows {
    /// Stored responses: its variants, or 1 for a response without Vary.
    pub fn responses(&self) -> u64 {
        self.variants.max(1).min(self.rows)
    }

    /// Status of the stored response (of the first variant for a varying URL).
    pub fn status(&self, cache: &Cache) -> store::Result<Option<u16>> {
        let Some(key) = self.variant_key.as_ref().or(self.first_key.as_ref()) else {
            return Ok(None);
        };
        Ok(match head(cache, key)? {
            Some(HeadRecord::Variant(h)) => Some(h.status.as_u16()),
            _ => None,
        })
    }
}

impl UrlRows {
    fn add(&mut self, row: Row) {
        self.rows += 1;
        self.size += row.size;
        self.stored_at = self.stored_at.max(row.store_time);
        if row.variant {
            self.variants += 1;
            self.variant_key.get_or_insert(row.key);
        } else {
            self.first_key = Some(row.key);
        }
    }
}

/// Stored URLs (of `host`, if given) by URL key, in key order.
pub fn urls(cache: &Cache, host: Option<&str>) -> store::Result<BTreeMap<String, UrlRows>> {
    each_url(cache, host).collect()
}

/// Stored URLs (of `host`, if given) one at a time, in key order, with their rows summed:
/// the store is read page by page and one URL's rows are held at a time, so a caller that
/// keeps a few URLs holds a few, whatever the store holds.
pub fn each_url<'c>(
    cache: &'c Cache,
    host: Option<&'c str>,
) -> impl Iterator<Item = store::Result<(String, UrlRows)>> + 'c {
    Grouped::new(rows(cache).filter(move |r| match r {
        Ok(row) => host.is_none_or(|h| host_matches(authority(&row.url_key), h)),
        Err(_) => true,
    }))
}

/// Rows in key order grouped by URL key. A URL's rows are adjacent in key order (its own
/// key, then its variants: the key followed by a 0 byte, which sorts before any other byte),
/// so one group is open at a time.
struct Grouped<I> {
    rows: I,
    open: Option<(String, UrlRows)>,
}

impl<I> Grouped<I> {
    fn new(rows: I) -> Self {
        Grouped { rows, open: None }
    }
}

impl<I: Iterator<Item = store::Result<Row>>> Iterator for Grouped<I> {
    type Item = store::Result<(String, UrlRows)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.rows.next() {
                None => return self.open.take().map(Ok),
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(row)) => match &mut self.open {
                    Some((key, g)) if *key == row.url_key => g.add(row),
                    open => {
                        let mut g = UrlRows::default();
                        let key = row.url_key.clone();
                        g.add(row);
                        if let Some(done) = open.replace((key, g)) {
                            return Some(Ok(done));
                        }
                    }
                },
            }
        }
    }
}

/// A URL held by the shared tier: its rows summed, read from their headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedUrlRows {
    /// Rows (the URL's own row, its variants).
    pub rows: u64,
    /// Variant rows.
    pub variants: u64,
    /// Bytes of all its rows.
    pub size: u64,
    /// When the newest response was received (Unix seconds; 0 when no head was readable).
    pub stored_at: f64,
    /// Status of the stored response (of a variant for a varying URL).
    pub status: Option<u16>,
}

impl SharedUrlRows {
    /// Stored responses: its variants, or 1 for a response without Vary.
    pub fn responses(&self) -> u64 {
        self.variants.max(1).min(self.rows)
    }
}

/// URLs the shared tier holds (of `host`, if given) by URL key, from a SCAN of every master.
pub async fn shared_urls(
    tier: &SharedTier,
    host: Option<&str>,
) -> Result<BTreeMap<String, SharedUrlRows>, AdminError> {
    let mut out: BTreeMap<String, SharedUrlRows> = BTreeMap::new();
    tier.for_each_row(|row| {
        let Some(url_key) = url_key_of(&row.row_key) else {
            return;
        };
        if host.is_some_and(|h| !host_matches(authority(url_key), h)) {
            return;
        }
        let g = out.entry(url_key.to_string()).or_default();
        g.rows += 1;
        g.size += row.bytes;
        if row.row_key.contains(&0) {
            g.variants += 1;
        }
        if let Some(HeadRecord::Variant(h)) = row.meta.and_then(|m| HeadRecord::decode(&m).ok()) {
            g.status.get_or_insert(h.status.as_u16());
            let t = h
                .response_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            g.stored_at = g.stored_at.max(t);
        }
    })
    .await?;
    Ok(out)
}

fn head(cache: &Cache, key: &[u8]) -> store::Result<Option<HeadRecord>> {
    Ok(cache
        .peek_meta(key)?
        .and_then(|m| HeadRecord::decode(&m).ok()))
}

/// What is stored under one URL key.
#[derive(Debug)]
pub enum StoredUrl {
    /// One response (no Vary).
    Plain(StoredHead),
    /// A varying response: the header names, every stored variant, and the variant a
    /// request with the given headers selects, if stored.
    Varying {
        /// The `Vary` header names.
        names: Vec<HeaderName>,
        /// Every stored variant, in key order.
        variants: Vec<StoredHead>,
        /// The variant the request headers passed to [`stored_url`] select.
        selected: Option<StoredHead>,
    },
}

/// The stored head(s) of `key`, selecting a variant for `headers`; `None` when nothing is
/// stored.
pub fn stored_url(
    cache: &Cache,
    key: &CacheKey,
    headers: &HeaderMap,
) -> store::Result<Option<StoredUrl>> {
    Ok(match head(cache, key.as_bytes())? {
        None => None,
        Some(HeadRecord::Variant(h)) => Some(StoredUrl::Plain(h)),
        Some(HeadRecord::VaryIndex(vary)) => {
            let mut variants = Vec::new();
            let mut prefix = key.as_bytes().to_vec();
            prefix.push(0);
            for row in cache.scan(&prefix) {
                let row = row?;
                if !row.key.starts_with(&prefix) {
                    break;
                }
                if let Some(HeadRecord::Variant(h)) = head(cache, &row.key)? {
                    variants.push(h);
                }
            }
            let selected = match head(cache, &http_cache::variant_key(key, vary.names(), headers))?
            {
                Some(HeadRecord::Variant(h)) => Some(h),
                _ => None,
            };
            Some(StoredUrl::Varying {
                names: vary.names().to_vec(),
                variants,
                selected,
            })
        }
    })
}

/// The response stored in `row` (a row of [`rows`]) with its whole body, when the row holds
/// a response (not a Vary index) whose body is still there and has its head's length.
pub fn response(cache: &Cache, row: &Row) -> std::io::Result<Option<(StoredHead, Vec<u8>)>> {
    let Some(HeadRecord::Variant(head)) = head(cache, &row.key).map_err(std::io::Error::other)?
    else {
        return Ok(None);
    };
    let Some(rec) = cache.record(&row.key).map_err(std::io::Error::other)? else {
        return Ok(None); // removed meanwhile
    };
    let mut body = Vec::with_capacity(rec.len() as usize);
    std::io::Read::read_to_end(&mut rec.into_reader(), &mut body)?;
    Ok((body.len() as u64 == head.body_len).then_some((head, body)))
}

/// A whole response to store as a fill would (`hoard import`).
#[derive(Debug)]
pub struct Whole {
    /// The URL key.
    pub key: CacheKey,
    /// The response's `Vary` (not `Vary::Any`).
    pub vary: Vary,
    /// The request headers (select the variant).
    pub request_headers: HeaderMap,
    /// The head to store.
    pub head: StoredHead,
    /// The body.
    pub body: Vec<u8>,
}

/// Store every response in one transaction, with the rows, tags and Vary index a fill would
/// write: all of them or (on error) none.
pub fn store_all(cache: &Cache, all: &[Whole]) -> store::Result<()> {
    cache.transact(|tx| {
        for w in all {
            let tag = w.key.as_str();
            let row_key = match &w.vary {
                Vary::Headers(names) => http_cache::variant_key(&w.key, names, &w.request_headers),
                _ => w.key.as_bytes().to_vec(),
            };
            let meta = HeadRecord::Variant(w.head.clone()).encode();
            tx.set_with_meta(&row_key, &w.body, &meta, None, Some(tag))?;
            if let Vary::Headers(_) = &w.vary {
                let index = HeadRecord::VaryIndex(w.vary.clone()).encode();
                tx.set_with_meta(w.key.as_bytes(), b"", &index, None, Some(tag))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching() {
        let cases = [
            ("example.com", "example.com", true),
            ("example.com:8080", "example.com", true),
            ("example.com:8080", "example.com:8080", true),
            ("example.com", "example.com:8080", false),
            ("example.com:81", "example.com:8080", false),
            ("example.community", "example.com", false),
            ("127.0.0.1:4000", "127.0.0.1", true),
            ("[::1]:4000", "[::1]", true),
            ("[::1]", "[::1]", true),
        ];
        for (authority, h, want) in cases {
            assert_eq!(host_matches(authority, h), want, "{authority} vs {h}");
        }
    }

    #[test]
    fn authorities_of_keys() {
        let cases = [
            ("GET http://a.example/x", "a.example"),
            ("GET https://a.example:8443/", "a.example:8443"),
            ("GET http://a.example?q", "a.example"),
            ("POST http://a.example:81/p body=00ff", "a.example:81"),
        ];
        for (k, want) in cases {
            assert_eq!(authority(k), want);
        }
    }

    #[test]
    fn rows_group_by_url_one_url_at_a_time() {
        use std::cell::Cell;
        let row = |key: &[u8], size: u64| Row {
            key: key.to_vec(),
            url_key: url_key_of(key).unwrap().to_string(),
            variant: key.contains(&0),
            tag: None,
            size,
            store_time: size as f64,
        };
        // Key order: a URL, its variants, then a longer URL it is a prefix of.
        let rows = vec![
            row(b"GET http://a/x", 1),
            row(b"GET http://a/x\0accept\x02br", 2),
            row(b"GET http://a/x\0accept\x02gzip", 4),
            row(b"GET http://a/x/y", 8),
            row(b"GET http://b/", 16),
        ];
        let pulled = Cell::new(0);
        let counted = rows.into_iter().inspect(|_| pulled.set(pulled.get() + 1));
        let mut groups = Grouped::new(counted.map(Ok));
        let (k, g) = groups.next().unwrap().unwrap();
        assert_eq!(
            (k.as_str(), g.rows, g.variants, g.size),
            ("GET http://a/x", 3, 2, 7)
        );
        assert_eq!(g.responses(), 2);
        // The first URL was complete once the next URL's first row was read: nothing more.
        assert_eq!(pulled.get(), 4);
        let rest: Vec<(String, u64)> = groups
            .map(|r| r.map(|(k, g)| (k, g.size)).unwrap())
            .collect();
        assert_eq!(
            rest,
            [
                ("GET http://a/x/y".to_string(), 8),
                ("GET http://b/".to_string(), 16)
            ]
        );
    }

    #[test]
    fn url_keys_of_rows() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"GET http://a/x", Some("GET http://a/x")),
            (b"GET http://a/x\0accept\x02gzip", Some("GET http://a/x")),
            (
                b"POST https://a/p body=00",
                Some("POST https://a/p body=00"),
            ),
            (b"hoard-lease\0GET http://a/x", None),
            (b"get http://a/x", None),
            (b"GET ftp://a/x", None),
            (b"\xffGET http://a/x", None),
        ];
        for (key, want) in cases {
            assert_eq!(url_key_of(key), *want, "{key:?}");
        }
    }
}
