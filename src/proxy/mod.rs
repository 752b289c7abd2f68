//! The network layer: accepts clients, talks to origins, and glues `http_cache` to the `store`.
//!
//! Invariants: only this module touches sockets; blocking store calls run on
//! `spawn_blocking` threads, never on an async worker; a body that is not complete is never
//! stored, and a client is never handed a short body that looks complete.

mod activity;
mod admin;
mod admin_host;
mod admission;
mod body;
pub mod ca;
mod dashboard;
mod dns;
mod fill;
mod framing;
mod hostname;
mod listeners;
pub mod metrics;
mod mitm;
mod observed;
mod open_files;
mod origin;
mod per_core;
mod pipeline;
mod post_store;
mod reclaim;
mod request_body;
mod server;
mod service;
mod tunnel;
mod tunnel_turn;
mod upstream;
mod write_round;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::{Server, ServerHandle, head_buffer};

/// The proxy's configuration lives in [`crate::config`] (declared with the options).
pub use crate::config::{ProxyConfig, default_random, loopback_nets};

/// The startup warning for a proxy reachable from other hosts while `allow` still names
/// loopback only (every non-local client would get 403), or `None`.
pub fn exposure_warning(cfg: &ProxyConfig) -> Option<String> {
    if cfg.listen.ip().is_loopback() || cfg.allow != loopback_nets() {
        return None;
    }
    Some(format!(
        "listening on {} but `allow` is the default (loopback only): clients from other \
         hosts get 403; set allow (e.g. --allow 10.0.0.0/8) to admit them",
        cfg.listen
    ))
}

/// Errors that stop the proxy from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The cache directory could not be opened.
    #[error("cannot open cache directory {dir}: {source}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: crate::store::Error,
    },
    /// The interception CA could not be created or loaded.
    #[error("interception CA: {0}")]
    Ca(#[from] ca::CaError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Some other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
