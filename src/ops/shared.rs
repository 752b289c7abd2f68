//! The shared tier from the maintenance subcommands, when the configuration names one
//! (`shared` in the file, or `HOARD_SHARED`): `hoard purge` also removes the URL there (and
//! tells every subscribed hoard to drop its copy); `stats` adds a block about the tier;
//! `ls`, `evict` and `clear` act on it with `--tier shared|all`.
//!
//! Invariant: every removal goes through the tier's purge (one URL at a time, each publishing
//! its invalidation) or its batched UNLINK (what is left: leases, rows no URL set names);
//! keys are found with SCAN on every master, never KEYS.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::{Removed, StoreTier, UrlEntry};
use crate::config::ConfigFile;
use crate::entries::listing;
use crate::entries::shared::admin::Census;
use crate::entries::shared::{ClientIdentity, SharedConfig, SharedTier};

/// How long a subcommand waits for Redis before reporting it unreachable.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// The shared tier a subcommand should reach: `HOARD_SHARED`, else the file's `shared` key,
/// with the file's (or environment's) prefix, timeout, CA file and client certificate. `None` when none is
/// configured.
pub fn configured(file: Option<&ConfigFile>) -> Option<SharedConfig> {
    let pick = |key: &str| {
        let env = format!("HOARD_{}", key.to_ascii_uppercase().replace('-', "_"));
        std::env::var(env)
            .ok()
            .or_else(|| file.and_then(|f| f.get(key)).map(|(v, _)| v.as_text()))
    };
    let url = pick("shared").filter(|u| !matches!(u.trim(), "" | "off" | "none"))?;
    let mut cfg = SharedConfig::new(&url);
    if let Some(p) = pick("shared-prefix") {
        cfg.prefix = p;
    }
    let path = |key: &str| {
        pick(key)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
    };
    cfg.ca_file = path("shared-ca-file");
    // `purge` signs the invalidation it publishes with the fleet's key.
    cfg.secret_file = path("shared-secret-file");
    // Half a pair was refused when the configuration was read; here it is simply not used.
    cfg.client_identity =
        ClientIdentity::from_pair(path("shared-cert-file"), path("shared-key-file"))
            .ok()
            .flatten();
    if let Some(t) = pick("shared-timeout").and_then(|t| crate::config::parse_duration(&t).ok()) {
        cfg.timeout = t.max(Duration::from_millis(500));
    } else {
        cfg.timeout = Duration::from_millis(500);
    }
    Some(cfg)
}

/// Run `f` with the tier of `cfg`, connected, on a runtime of its own.
fn with_tier<T>(
    cfg: SharedConfig,
    f: impl AsyncFnOnce(&SharedTier) -> Result<T, String>,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tier = SharedTier::start(cfg).map_err(|e| e.to_string())?;
        if !tier.wait_ready(CONNECT_WAIT).await {
            let why = tier.status().connect_error.unwrap_or_default();
            return Err(format!("{} is not reachable: {why}", tier.url()));
        }
        f(&tier).await
    })
}

/// Remove `url_key` from the shared tier and publish the invalidation. `Err` says why not.
pub fn purge(cfg: SharedConfig, url_key: &str) -> Result<(), String> {
    with_tier(cfg, async |tier| match tier.purge(url_key).await {
        true => Ok(()),
        false => Err(format!("{} refused the purge", tier.url())),
    })
}

/// `hoard stats`' shared-tier block.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SharedStats {
    /// Always `shared`: the figures below are the shared tier's.
    pub tier: StoreTier,
    /// The Redis URL, password redacted.
    pub url: String,
    /// The key prefix.
    pub prefix: String,
    /// Whether Redis answered.
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the tier holds, and each master's memory figures (when reachable).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub census: Option<Census>,
}

/// `hoard stats --json`: the local report, and the shared tier's under `shared`.
#[derive(Debug, Serialize)]
pub struct WithShared<'a> {
    /// The local tier's report, its fields at the top level as without a shared tier.
    #[serde(flatten)]
    pub local: &'a super::StatsReport,
    /// The shared tier's block, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedStats>,
}

/// What the shared tier holds; an unreachable Redis is a report, not an error.
pub fn stats(cfg: SharedConfig) -> SharedStats {
    let (url, prefix) = (redacted(&cfg), cfg.prefix.clone());
    let got = with_tier(cfg, async |tier| {
        tier.census().await.map_err(|e| e.to_string())
    });
    SharedStats {
        tier: StoreTier::Shared,
        url,
        prefix,
        reachable: got.is_ok(),
        error: got.as_ref().err().cloned(),
        census: got.ok(),
    }
}

impl std::fmt::Display for SharedStats {
    /// The block `hoard stats` prints after the local figures, every line naming its tier.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::human_bytes as b;
        writeln!(f, "shared tier {} (prefix {:?})", self.url, self.prefix)?;
        let Some(c) = self.census.as_ref().filter(|_| self.reachable) else {
            let why = self.error.as_deref().unwrap_or("not reachable");
            return write!(f, "  shared: {why}");
        };
        writeln!(f, "  shared: reachable, {} master(s)", c.servers.len())?;
        writeln!(
            f,
            "  shared: {} rows ({} URLs), {} of row data, {} leases held",
            c.rows,
            c.urls,
            b(c.row_bytes),
            c.leases
        )?;
        for (i, s) in c.servers.iter().enumerate() {
            let limit = match s.maxmemory {
                0 => "no maxmemory".to_string(),
                m => format!("of maxmemory {}", b(m)),
            };
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "  shared: redis {}: {} hoard keys, used {} {limit}, policy {}, evicted {} keys",
                s.addr,
                s.keys,
                b(s.used_memory),
                s.maxmemory_policy,
                s.evicted_keys
            )?;
        }
        Ok(())
    }
}

fn redacted(cfg: &SharedConfig) -> String {
    cfg.validate()
        .map_or_else(|_| cfg.url.clone(), |u| u.redacted())
}

/// Every URL the shared tier holds (of `host`, if given), in key order.
pub fn list(cfg: SharedConfig, host: Option<&str>) -> Result<Vec<UrlEntry>, String> {
    let urls = with_tier(cfg, async |tier| {
        listing::shared_urls(tier, host)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(urls
        .into_iter()
        .map(|(key, g)| {
            let (method, url) = listing::split_url_key(&key);
            UrlEntry {
                tier: StoreTier::Shared,
                host: listing::authority(&key).to_string(),
                method: method.to_string(),
                url: url.to_string(),
                variants: g.responses(),
                size: g.size,
                stored_at: g.stored_at,
                status: g.status,
                key,
            }
        })
        .collect())
}

/// Purge each URL key (rows deleted, invalidation published); counts what went.
async fn purge_all(tier: &SharedTier, keys: BTreeSet<String>) -> Result<Removed, String> {
    let mut removed = Removed { urls: 0, rows: 0 };
    for key in keys {
        let n = tier
            .purge_rows(&key)
            .await
            .ok_or_else(|| format!("{} refused the purge of {key}", tier.url()))?;
        if n > 0 {
            removed.urls += 1;
            removed.rows += n;
        }
    }
    Ok(removed)
}

/// Remove every URL of `host` (as `evict --host` does locally), else the URL whose key (the
/// proxy's tag) is `tag`, from the shared tier.
pub fn evict(cfg: SharedConfig, host: Option<&str>, tag: Option<&str>) -> Result<Removed, String> {
    with_tier(cfg, async |tier| {
        let keys = match (host, tag) {
            (Some(h), _) => listing::shared_urls(tier, Some(h))
                .await
                .map_err(|e| e.to_string())?
                .into_keys()
                .collect(),
            (None, Some(t)) => BTreeSet::from([t.to_string()]),
            (None, None) => BTreeSet::new(),
        };
        purge_all(tier, keys).await
    })
}

/// Remove everything of this tier from Redis: every URL through its purge (so every hoard
/// drops its local copy), then whatever keys remain under the prefix (leases, strays).
/// `rows` counts every key removed.
pub fn clear(cfg: SharedConfig) -> Result<Removed, String> {
    with_tier(cfg, async |tier| {
        let urls = listing::shared_urls(tier, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut removed = purge_all(tier, urls.into_keys().collect()).await?;
        removed.rows += tier.unlink_all().await.map_err(|e| e.to_string())?;
        Ok(removed)
    })
}
