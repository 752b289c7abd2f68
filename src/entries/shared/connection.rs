//! The command connection to Redis: made (one server or a cluster, through `tls`), kept up
//! by the background connector (reconnecting with backoff after a call dropped it), and
//! every call run through it under the breakers and the timeout ([`Inner::call`]).
//!
//! Invariant: a call never waits for a connection: without one it is skipped (a miss) and
//! counted as a breaker failure; only the connector task ever connects.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisFuture, Value};

use super::{BreakerState, Inner, inc, tls};

/// Bound on establishing a connection (requests never wait for it; start-up waits at most
/// [`super::startup_wait`], in `connect.rs`).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: first and largest pause between attempts.
pub(super) const RECONNECT_MIN: Duration = Duration::from_millis(100);
pub(super) const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// A command connection: one server (multiplexed) or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Which breakers a call answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Reads: the general breaker only.
    Read,
    /// Writes that need memory (SET): both breakers; `OOM` feeds the write breaker only.
    Write,
    /// Deletes and publishes (allowed at maxmemory): the general breaker only.
    Free,
}

/// Why a call produced no answer (already counted and logged as needed).
#[derive(Debug)]
pub(super) enum Failed {
    Skipped,
    Error,
}

fn is_oom(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

impl Inner {
    pub(super) fn current(&self) -> Option<(u64, Conn)> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget connection `generation` (if still current) and wake the connector.
    fn drop_conn(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_some_and(|(n, _)| *n == generation) {
            *g = None;
            drop(g);
            tracing::warn!(
                url = %self.url.redacted(),
                error = %why,
                "shared tier: connection to Redis lost; reconnecting (calls are misses meanwhile)"
            );
            self.reconnect.notify_one();
        }
    }

    /// Run one Redis call on keys in hash slot `slot` under the breakers and the timeout.
    pub(super) async fn call<T, F, Fut>(&self, kind: Kind, slot: u16, f: F) -> Result<T, Failed>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let c = &self.counters;
        if !self.all.for_slot(slot).allow() || (kind == Kind::Write && !self.writes.allow()) {
            inc(&c.skipped);
            return Err(Failed::Skipped);
        }
        let Some((generation, conn)) = self.current() else {
            // Unreachable Redis is a failure too: the breaker (and `status`) shows it, and
            // after a reconnect the next call probes at once.
            inc(&c.skipped);
            self.all.outcome(slot, Some(&"not connected"));
            return Err(Failed::Skipped);
        };
        let start = Instant::now();
        let r = tokio::time::timeout(self.cfg.timeout, f(conn)).await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        c.latency_sum.fetch_add(micros, Ordering::Relaxed);
        inc(&c.latency_count);
        match r {
            Ok(Ok(v)) => {
                self.all.outcome(slot, None);
                if kind == Kind::Write {
                    self.writes.success();
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                inc(&c.errors);
                if kind == Kind::Write && is_oom(&e) {
                    // Redis is up but full: stop writing, keep reading.
                    self.writes.failure(&e);
                    self.all.outcome(slot, None);
                } else if e.is_timeout() {
                    inc(&c.timeouts);
                    self.all.outcome(slot, Some(&e));
                } else {
                    tracing::debug!(error = %e, "shared tier: Redis call failed");
                    self.all.outcome(slot, Some(&e));
                    self.rebuild_cluster_if_due(generation);
                    if !self.url.cluster
                        && (e.is_connection_dropped()
                            || e.is_io_error()
                            || e.is_connection_refusal()
                            || e.is_unrecoverable_error())
                    {
                        self.drop_conn(generation, &e);
                    }
                }
                Err(Failed::Error)
            }
            Err(_) => {
                inc(&c.errors);
                inc(&c.timeouts);
                let why = format!("no answer within {:?}", self.cfg.timeout);
                self.all.outcome(slot, Some(&why));
                // A connection that keeps timing out while the breaker is open may be
                // half-dead (no RST ever came): replace it.
                if self.all.state() == BreakerState::Open && !self.url.cluster {
                    self.drop_conn(generation, &why);
                }
                self.rebuild_cluster_if_due(generation);
                Err(Failed::Error)
            }
        }
    }

    /// A cluster on which every slot range keeps failing: replace the cluster connection
    /// (at most every `ranges::REBUILD_EVERY`), in case the client is what is stuck.
    fn rebuild_cluster_if_due(&self, generation: u64) {
        if self.url.cluster && self.all.rebuild_due(Instant::now()) {
            self.drop_conn(
                generation,
                &"every cluster slot range failing: making a new cluster connection",
            );
        }
    }
}

async fn connect(inner: &Inner) -> redis::RedisResult<Conn> {
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
