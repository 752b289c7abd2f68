//! hoard: an HTTP caching forward proxy built on an embedded, process-safe SQLite disk cache.
//!
//! Layers, dependencies pointing down only (see ARCHITECTURE.md):
//! - [`store`]: a diskcache-style key/value store on SQLite plus value files. Knows nothing of HTTP.
//! - [`http_cache`]: pure RFC 9111 / RFC 5861 / RFC 9211 logic. Does no I/O; time is a parameter.
//! - [`coalesce`]: single-flight per key with self-releasing permits.
//! - [`proxy`]: sockets, upstream client, tunnels; glues the layers above together.
//! - [`entries`]: the one owner of HTTP responses kept in a store: the local tier (memory front
//!   over the disk store) and the shared Redis tier.
//! - [`config`]: the option table; flags, `HOARD_*` variables, the file and defaults, validated
//!   into a [`proxy::ProxyConfig`] handed to the proxy as values.
//! - [`access_line`], [`access_log`], [`logging`], [`runtime`]: the access line's formatter,
//!   the access log's writer thread, the tracing subscriber and the serve runtime (used by
//!   `main.rs`).
//! - [`ops`]: the maintenance subcommands (stats, ls, show, purge, evict, check) as a library.
#![deny(missing_docs, missing_debug_implementations)]

pub mod access_line;
pub mod access_log;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod entries;
pub mod http_cache;
pub mod logging;
pub mod ops;
pub mod proxy;
pub mod runtime;
#[cfg(test)]
mod test_alloc;
pub use hoard_store as store;
