//! The shared tier from the maintenance subcommands: `hoard purge` also removes the URL from
//! the Redis a fleet shares (and tells every subscribed hoard to drop its copy) when the
//! configuration names one (`shared` in the file, or `HOARD_SHARED`).

use std::time::Duration;

use crate::config::ConfigFile;
use crate::entries::shared::{SharedConfig, SharedTier};

/// How long a subcommand waits for Redis before reporting it unreachable.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// The shared tier a subcommand should reach: `HOARD_SHARED`, else the file's `shared` key,
/// with the file's (or environment's) prefix and timeout. `None` when none is configured.
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
    cfg.ca_file = pick("shared-ca-file")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from);
    if let Some(t) = pick("shared-timeout").and_then(|t| crate::config::parse_duration(&t).ok()) {
        cfg.timeout = t.max(Duration::from_millis(500));
    } else {
        cfg.timeout = Duration::from_millis(500);
    }
    Some(cfg)
}

/// Remove `url_key` from the shared tier and publish the invalidation. `Err` says why not.
pub fn purge(cfg: SharedConfig, url_key: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tier = SharedTier::start(cfg).map_err(|e| e.to_string())?;
        if !tier.wait_ready(CONNECT_WAIT).await {
            return Err(format!("{} is not reachable", tier.url()));
        }
        if tier.purge(url_key).await {
            Ok(())
        } else {
            Err(format!("{} refused the purge", tier.url()))
        }
    })
}
