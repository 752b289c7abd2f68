//! The stored variants of a URL (RFC 9111 4.1, 4.3.1): listing those with an entity tag, so a
//! request that matches none of them can ask the origin whether one of them will do, and
//! storing the one a 304 selects under the new request's variant key as well.
//!
//! Invariant: variant rows are the rows under `<URL key>\0...` (see [`http_cache::variant_key`]);
//! at most [`MAX_VARIANTS`] are read per request; a copy carries the selected row's body
//! byte for byte, under the URL key's tag, and is never written when the URL was invalidated
//! since `generation`.

use std::sync::Arc;

use super::Entries;
use crate::http_cache::{CacheKey, HeadRecord, StoredHead};
use crate::store::Value;

/// Most variant rows read to build an `If-None-Match`.
pub const MAX_VARIANTS: usize = 32;

/// A stored variant with an entity tag.
#[derive(Debug, Clone)]
pub struct StoredVariant {
    /// Its row key.
    pub row_key: Vec<u8>,
    /// Its head (has an `ETag`).
    pub head: Arc<StoredHead>,
}

impl Entries {
    /// The stored variants of the URL `key` that carry an `ETag`, most recent response first.
    pub async fn variants_with_etags(&self, key: &CacheKey) -> Vec<StoredVariant> {
        let store = self.store.clone();
        let prefix = [key.as_bytes(), b"\0"].concat();
        let res = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for row in store.scan(&prefix).take(MAX_VARIANTS) {
                let row = row?;
                let Some(meta) = store.peek_meta(&row.key)? else {
                    continue;
                };
                if let Ok(HeadRecord::Variant(head)) = HeadRecord::decode(&meta)
                    && head.etag().is_some()
                {
                    out.push(StoredVariant {
                        row_key: row.key,
                        head: Arc::new(head),
                    });
                }
            }
            Ok::<_, crate::store::Error>(out)
        })
        .await;
        let mut out = match res {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "listing stored variants failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        out.sort_by_key(|v| std::cmp::Reverse(v.head.response_time));
        out
    }

    /// Store the body of the variant row `from` again under `to` with `head` (a 304 selected
    /// it for a request of another variant, RFC 9111 4.3.4), and give `from` its own refreshed
    /// head when `from_head` is given. `true` when `to` was written.
    pub async fn add_variant(
        &self,
        key: &CacheKey,
        from: &[u8],
        from_head: Option<StoredHead>,
        to: Vec<u8>,
        head: StoredHead,
        generation: u64,
    ) -> bool {
        let (store, hot, inv) = (self.store.clone(), self.hot.clone(), self.inv.clone());
        let (tag, from) = (key.as_str().to_string(), from.to_vec());
        let res = tokio::task::spawn_blocking(move || -> crate::store::Result<bool> {
            let Some(rec) = store.record(&from)? else {
                return Ok(false);
            };
            if rec.len() != head.body_len || inv.since(&tag, generation) {
                return Ok(false);
            }
            let mut w = store.writer(&to, None, Some(&tag))?;
            match rec.value {
                Value::Inline(v) => std::io::Write::write_all(&mut w, &v)?,
                Value::File { file, len } => {
                    use std::io::Read;
                    std::io::copy(&mut file.take(len), &mut w)?;
                }
            }
            w.set_meta(HeadRecord::Variant(head).encode());
            w.commit()?;
            hot.remove(&to);
            if let Some(h) = from_head {
                store.set_meta(&from, &HeadRecord::Variant(h).encode(), None)?;
                hot.remove(&from);
            }
            Ok(true)
        })
        .await;
        match res {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                self.health.write_failed(&e);
                false
            }
            Err(_) => false,
        }
    }
}
