//! The tier's command connection: made at start-up before the proxy accepts (bounded by
//! [`startup_wait`]), kept up by the background connector afterwards.
//!
//! Invariant: start-up never fails and never waits longer than [`startup_wait`] for Redis; a
//! Redis that is down or silent is reported once (by the connector) and the tier stays a miss
//! until the connector gets through.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{CONNECT_TIMEOUT, Conn, Inner, RECONNECT_MAX, RECONNECT_MIN, SharedTier, tls};

/// Shortest and longest bound on the start-up connection, whatever `shared-timeout` is.
const STARTUP_MIN: Duration = Duration::from_secs(1);
const STARTUP_MAX: Duration = Duration::from_secs(2);
/// How often [`SharedTier::connect_at_start`] looks at the connector's progress.
const STARTUP_POLL: Duration = Duration::from_millis(5);

/// How long start-up may wait for Redis: four operation timeouts, between 1 and 2 s (a
/// cluster connection is several round trips: every seed, `CLUSTER SLOTS`, every master).
pub fn startup_wait(op_timeout: Duration) -> Duration {
    (op_timeout * 4).clamp(STARTUP_MIN, STARTUP_MAX)
}

/// What [`SharedTier::connect_at_start`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Commands and the invalidation subscription are up: the first fill reaches Redis.
    Ready,
    /// The first attempt failed (refused, TLS, auth...): the connector keeps trying in the
    /// background and has logged why.
    Unreachable(String),
    /// Neither within the bound (a silent Redis, or the subscription still on its way).
    Pending,
}

impl Startup {
    /// For logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Startup::Ready => "ready",
            Startup::Unreachable(_) => "unreachable",
            Startup::Pending => "pending",
        }
    }
}

impl SharedTier {
    /// Wait, at most `max`, for the connector's first attempt: `Ready` as soon as the command
    /// connection and the subscription are up, `Unreachable` as soon as the attempt failed.
    /// The proxy calls it before accepting, so its first fills are shared.
    pub async fn connect_at_start(&self, max: Duration) -> Startup {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let s = self.status();
            if s.connected && s.subscribed {
                return Startup::Ready;
            }
            if !s.connected
                && let Some(why) = s.connect_error
            {
                return Startup::Unreachable(why);
            }
            if tokio::time::Instant::now() >= deadline {
                return Startup::Pending;
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }
}

/// One command connection: a multiplexed connection checked with PING, or a cluster
/// connection (seeds, slot map and a connection to every master made before it returns).
pub(super) async fn connect(inner: &Inner) -> redis::RedisResult<Conn> {
    let urls = inner.url.node_urls();
    if inner.url.cluster {
        let b = tls::cluster_builder(urls, inner.url.tls, &inner.roots)
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(inner.cfg.timeout);
        let client = b.build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let client = tls::client(&urls[0], &inner.roots)?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // No client-side response timeout: `call` bounds every command itself, and
            // a late answer must not cost the whole multiplexed connection.
            .set_response_timeout(None);
        let mut c = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut c).await?;
        Ok(Conn::Single(c))
    }
}

/// Keeps a command connection up: connects, and reconnects whenever a call dropped it.
pub(super) async fn connector(inner: Arc<Inner>) {
    let mut pause = RECONNECT_MIN;
    let mut ever = false;
    let mut failing_logged = false;
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        if inner.current().is_some() {
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = inner.reconnect.notified() => continue,
            }
        }
        let attempt = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&inner)) => r,
        };
        let failed = match &attempt {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no connection within {CONNECT_TIMEOUT:?}")),
        };
        *inner
            .connect_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failed;
        match attempt {
            Ok(Ok(conn)) => {
                let generation = inner.conn_gen.fetch_add(1, Ordering::AcqRel) + 1;
                *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn));
                inner.all.probe_now();
                inner.writes.probe_now();
                tracing::info!(
                    url = %inner.url.redacted(),
                    "shared tier: {} Redis",
                    if ever { "reconnected to" } else { "connected to" }
                );
                ever = true;
                failing_logged = false;
                pause = RECONNECT_MIN;
            }
            Ok(Err(e)) => {
                if !failing_logged {
                    tracing::warn!(url = %inner.url.redacted(), error = %e,
                        "shared tier: cannot connect to Redis; retrying in the background");
                    failing_logged = true;
                }
            }
            Err(_) => {
                if !failing_logged {
                    tracing::warn!(url = %inner.url.redacted(),
                        "shared tier: connecting to Redis timed out; retrying in the background");
                    failing_logged = true;
                }
            }
        }
        if inner.current().is_none() {
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! wait {
        ($name:ident, $timeout_ms:expr, $want_ms:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    startup_wait(Duration::from_millis($timeout_ms)),
                    Duration::from_millis($want_ms)
                );
            }
        };
    }
    wait!(default_timeout_waits_one_second, 50, 1000);
    wait!(a_300ms_timeout_waits_four_of_them, 300, 1200);
    wait!(a_long_timeout_waits_two_seconds_at_most, 10_000, 2000);
}
