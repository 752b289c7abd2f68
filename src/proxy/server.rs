//! The proxy's server: binds the listener (or, per-core, a listener per thread), serves
//! HTTP/1.1 (keep-alive, upgrades for CONNECT) and HTTP/2 on each admitted connection
//! (`admission`), and shuts down gracefully.
//!
//! Invariants: with a shared tier, [`Server::bind`] returns (and the listener accepts) only
//! after the tier's first connection attempt, bounded by `startup_wait`; on shutdown the
//! listeners stop first, in-flight requests get `shutdown_timeout` to finish (on the
//! listener's connections, intercepted connections and CONNECT tunnels alike: each holds the
//! shutdown watch), then store buffers are flushed. `max_connections` is lowered to what the
//! open-files limit carries (`open_files`); admission, refusals and waiting for a slot are
//! `admission`'s. A connection with no request in flight and no bytes moving for
//! `idle_timeout` is closed gracefully (a slow response in flight is never cut by it); a
//! connection with a response whose next bytes are ready but not taken by the client, and
//! nothing written to it, for `idle_timeout` is dropped (a client that does not read holds
//! nothing for long). HTTP/2 limits (streams, header list, resets) are set in
//! [`configure_http2`], for the listener and for intercepted connections alike.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};

use super::activity::{Activity, GuardedBody, InFlight};
use super::admission::{Admission, accept};
use super::mitm::Interceptor;
use super::observed::Observed;
use super::per_core::Cores;
use super::reclaim::Reclaimer;
use super::service::State;
use super::write_round::WriteRound;
use super::{ProxyConfig, ProxyError};
use super::{listeners, open_files};
use crate::entries::shared::{Startup, startup_wait};
use crate::runtime::Siblings;
use crate::store::Cache;

/// One of the `max_connections` slots, shared by a client connection and whatever outlives it
/// after a CONNECT (tunnel, intercepted connection); freed when the last holder ends. It also
/// carries the shutdown watch: a holder is one of the connections the shutdown waits for
/// (bounded by `shutdown_timeout`), and learns through it that the shutdown began.
#[derive(Debug, Clone)]
pub struct ConnSlot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
}

impl ConnSlot {
    /// Changes to `true` when the shutdown begins (errs if the server is gone).
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }
}

/// A bound, not yet running proxy.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The per-core mode's other runtimes, and a listener for each (same port, SO_REUSEPORT).
    siblings: Option<(Siblings, Vec<std::net::TcpListener>)>,
    admin: Option<TcpListener>,
    state: Arc<State>,
    /// `max_connections` as the open-files limit allows (`open_files`).
    max_connections: usize,
}

/// A running proxy spawned on the current runtime.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Open the store and bind the listener; the proxy runs on the current runtime.
    pub async fn bind(cfg: ProxyConfig) -> Result<Server, ProxyError> {
        Self::bind_with(cfg, None).await
    }

    /// Open the store and bind a listener for the current runtime and one for each of
    /// `siblings` (`scheduler = "per-core"`), all on the configured address; the proxy runs
    /// on the current runtime and, once running, on a thread per sibling too.
    pub async fn bind_per_core(cfg: ProxyConfig, siblings: Siblings) -> Result<Server, ProxyError> {
        Self::bind_with(cfg, Some(siblings)).await
    }

    async fn bind_with(cfg: ProxyConfig, siblings: Option<Siblings>) -> Result<Server, ProxyError> {
        let n = 1 + siblings.as_ref().map_or(0, Siblings::count);
        let (listener, others) =
            listeners::bind_group(cfg.listen, n).map_err(|source| ProxyError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let siblings = siblings.map(|s| (s, others));
        let local = listener.local_addr()?;
        if let Some(w) = super::exposure_warning(&cfg) {
            tracing::warn!("{w}");
        }
        let admin = match cfg.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })?,
            ),
            None => None,
        };
        let dir = cfg.cache_dir.clone();
        let (size_limit, policy, statistics) =
            (cfg.size_limit, cfg.eviction_policy, cfg.statistics);
        let store = tokio::task::spawn_blocking(move || {
            Cache::builder(&dir)
                .size_limit(size_limit)
                .eviction_policy(policy)
                .statistics(statistics)
                .recover_corrupt(true)
                // LRU order exact to ten minutes: a store whose many entries are hit all
                // the time rewrites each row's page at most once per ten minutes, not once
                // per flush (100,000 rows hit every few seconds: 170 row writes a second,
                // not 1,700 with a minute, each a WAL page and its checkpoint).
                .access_granularity(ACCESS_GRANULARITY)
                // The periodic flusher below writes buffered accesses; a request never does.
                .flush_on_access(false)
                .sqlite_cache_size(SQLITE_CACHE_KIB)
                .open()
                .map_err(|source| ProxyError::Store { dir, source })
        })
        .await
        .map_err(|e| ProxyError::Config(format!("store open task failed: {e}")))??;
        let mitm = if cfg.mitm {
            let c = cfg.clone();
            let m = tokio::task::spawn_blocking(move || Interceptor::new(&c))
                .await
                .map_err(|e| ProxyError::Config(format!("CA load task failed: {e}")))??;
            Some(Arc::new(m))
        } else {
            None
        };
        let state = Arc::new(State::new(cfg, store, local, mitm)?);
        if let Some(tier) = state.entries.shared_tier() {
            // Connect before accepting, so the first fills are shared; bounded, and a Redis
            // that is down only costs misses (the connector logged why and keeps trying).
            let max = startup_wait(state.cfg.shared_timeout);
            let outcome = tier.connect_at_start(max).await;
            if outcome == Startup::Pending {
                tracing::warn!(url = %tier.url(), waited = ?max,
                    "shared tier: not connected yet; serving from the local tier meanwhile");
            }
        }
        let max_connections =
            open_files::connection_budget(state.cfg.max_connections, open_files::raise());
        if max_connections < state.cfg.max_connections {
            tracing::warn!(
                max_connections = state.cfg.max_connections,
                admitted = max_connections,
                "the open-files limit (ulimit -n) carries fewer connections than \
                 max-connections: admitting {max_connections} (raise the hard limit, \
                 e.g. LimitNOFILE= in a systemd unit)"
            );
        }
        Ok(Server {
            listener,
            siblings,
            admin,
            state,
            max_connections,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    /// The admin server's bound address, when `admin` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Run on the current runtime until [`ServerHandle::shutdown`].
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let admin = self.admin_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            self.run_until(async {
                let _ = rx.await;
            })
            .await
        });
        ServerHandle {
            addr,
            admin,
            stop: Some(tx),
            task,
        }
    }

    /// Serve until `signal` completes, then shut down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        let Server {
            listener,
            siblings,
            admin,
            state,
            max_connections,
        } = self;
        let (admin_stop, admin_task) = match admin {
            Some(l) => {
                let (tx, rx) = oneshot::channel::<()>();
                let task = tokio::spawn(super::admin::run(l, state.clone(), async {
                    let _ = rx.await;
                }));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        // Each connection task holds a receiver, and so does each tunnel and intercepted
        // connection (in its `ConnSlot`); `closed()` resolves when all have ended.
        let (graceful, stop) = watch::channel(false);
        let limits = ConnLimits::of(&state.cfg);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.cfg.header_timeout)
            .max_buf_size(head_buffer(state.cfg.max_header_size))
            // hyper's default of 100 header fields: its parse buffers then live on the stack
            // (any explicit count is two zero-filled heap allocations per request); a request
            // with more fields gets hyper's 431.
            .keep_alive(true);
        configure_http2(&mut builder, &state.cfg);
        let serving = Arc::new(Serving {
            state: state.clone(),
            builder,
            stop,
            limits,
            reclaimer: Arc::new(Reclaimer::default()),
        });
        let admission = Arc::new(Admission::new(serving, max_connections));
        let mut cores = siblings.map(|(s, listeners)| Cores::start(&s, listeners, &admission));
        // Buffered LRU/LFU accesses and hit counters reach the database at least once a second.
        let flusher = {
            let store = state.store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let s = store.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush()).await {
                        tracing::debug!(error = %e, "periodic store flush failed");
                    }
                }
            })
        };
        accept(&listener, &admission, 0, signal).await;
        if let Some(cores) = cores.as_mut() {
            cores.stop_accepting().await;
        }
        drop(listener);
        drop(admission); // its receiver: `graceful.closed()` waits for the connections only
        flusher.abort();
        drop(admin_stop);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        let timeout = state.cfg.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = graceful.send(true);
        if tokio::time::timeout(timeout, graceful.closed())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "shutdown timeout: dropping remaining connections");
        }
        // Fills still writing what clients already received, and background refreshes.
        state.background.close();
        if tokio::time::timeout_at(deadline, state.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = state.background.len(),
                "shutdown timeout: abandoning unfinished cache fills"
            );
        }
        let store = state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        if let Some(cores) = cores {
            cores.finish().await;
        }
        tracing::info!("stopped");
    }
}

impl ServerHandle {
    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin server's address, when `admin` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Stop accepting, finish in-flight requests (bounded), flush the store.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Drive one client connection until it ends: close it gracefully on shutdown, or when it has
/// been idle (no request in flight, no bytes read or written) for `limits.idle`. A connection
/// told to close that has not finished within `limits.shutdown` (shutdown) or `limits.idle`
/// (idle) is dropped, and so is one whose client has not taken a ready response's bytes
/// for `limits.send` (see [`Activity::send_stall_deadline`]).
pub(super) async fn drive<C, E>(
    conn: C,
    close: impl Fn(Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
    limits: ConnLimits,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let idle = limits.idle;
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let stall = activity.send_stall_deadline(limits.send);
        let wake = match closing {
            Some(deadline) => deadline,
            None => activity.idle_deadline(idle).into(),
        };
        let wake = stall.map_or(wake, |s| wake.min(s.into()));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            _ = activity.asked_to_close(), if closing.is_none() => {
                // Another client needs the slot (`reclaim`): a connection stalled in a head
                // is dropped (hyper would wait for the head), an idle one closed gracefully.
                if activity.head_pending() {
                    tracing::debug!(%peer, "slot reclaimed: dropping a connection stalled in its request head");
                    return;
                }
                tracing::debug!(%peer, "slot reclaimed: closing an idle connection");
                close(conn.as_mut());
                closing = Some(tokio::time::Instant::now() + limits.shutdown);
            }
            _ = stop.changed(), if closing.is_none() => {
                // Shutdown (or the server gone): finish the exchange in flight, then close.
                // After `shutdown_timeout` the connection is dropped.
                close(conn.as_mut());
                closing = Some(tokio::time::Instant::now() + limits.shutdown);
            }
            _ = tokio::time::sleep_until(wake) => {
                if activity
                    .send_stall_deadline(limits.send)
                    .is_some_and(|s| s <= Instant::now())
                {
                    // Bytes are ready and the client takes none: it holds a response (a store
                    // stream, a place in a fill) for nothing. Closing gracefully would wait on
                    // that same response, so the connection is dropped.
                    tracing::info!(%peer, send_timeout = ?limits.send,
                        "client not reading its response; dropping the connection");
                    return;
                }
                if closing.is_some() {
                    tracing::debug!(%peer, "connection did not close in time; dropping it");
                    return;
                }
                if activity.is_idle(idle) {
                    tracing::debug!(%peer, ?idle, "closing idle connection");
                    close(conn.as_mut());
                    closing = Some(tokio::time::Instant::now() + idle);
                }
            }
        }
    }
}

/// How long a connection may stay idle, may leave a ready response untaken, and may take to
/// close on shutdown.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnLimits {
    idle: Duration,
    send: Duration,
    shutdown: Duration,
}

impl ConnLimits {
    /// The limits of a client connection under `cfg`.
    pub(super) fn of(cfg: &ProxyConfig) -> Self {
        ConnLimits {
            idle: cfg.idle_timeout,
            send: cfg.idle_timeout,
            shutdown: cfg.shutdown_timeout,
        }
    }
}

/// The most a connection's read buffer holds of a request head (hyper's `max_buf_size`), for
/// the listener's connections and intercepted ones alike: a quarter above `max_header_size`
/// (and 1 KiB), so a head somewhat over the limit still reaches `State::handle`, which answers
/// 431 with `Cache-Status`; a larger one gets hyper's own 431. It bounds what a client that
/// trickles an endless head holds: 81 KiB with the default 64 KiB (it was a flat 256 KiB, 265
/// KiB per connection measured, 1.3 GB for 5,000 such connections; session 12's review).
pub fn head_buffer(max_header_size: usize) -> usize {
    // hyper refuses a maximum under 8 KiB.
    (max_header_size + max_header_size / 4 + 1024).max(8192)
}

/// SQLite's page cache per connection of the serving store (`PRAGMA cache_size`; negative:
/// KiB): 2 MiB, not the store's diskcache default of 8192 pages (32 MiB). A busy process
/// keeps up to 32 idle connections (more while blocking threads read at once), and random
/// hits over a store larger than its 64 MiB `mmap_size` fill each connection's cache with
/// pages read from the file and the WAL: 60-110 MiB of heap with three to six connections in
/// `benches/store_rss.sh`, up to 1 GiB with the pool full. The b-tree's inner pages fit in
/// 2 MiB; leaf pages are found through the kernel's page cache, shared by every process.
/// Persisted with the settings, so `hoard stats` and other processes on the directory use it.
const SQLITE_CACHE_KIB: i64 = -2048;

/// How far a stored entry's LRU access time may lag behind its last hit.
const ACCESS_GRANULARITY: Duration = Duration::from_secs(600);

/// Concurrent HTTP/2 streams per client connection (hyper's default is 200).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams the client opens and resets before they are served (rapid reset,
/// CVE-2023-44487) before the connection gets GOAWAY(ENHANCE_YOUR_CALM).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams hoard resets for the client's protocol errors before the connection gets
/// GOAWAY(ENHANCE_YOUR_CALM).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// An HTTP/2 client is pinged after this long without frames, and dropped when it does not
/// answer within [`H2_KEEP_ALIVE_TIMEOUT`] (a peer that vanished, or that reads nothing).
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes an HTTP/2 stream may have queued for a client that does not take them before its
/// body is no longer polled (hyper's default is 400 KiB: with 100 streams of a large stored
/// body that a client never reads, 76 MiB per connection; 16.5 MiB with this and the small
/// first file chunks, the rest being each stream's last chunk).
const H2_MAX_SEND_BUF: usize = 16 * 1024;

/// The HTTP/2 limits of every client connection: the listener's and intercepted ones (the
/// one place they are set). The header list may be twice `max_header_size` (HTTP/2 counts 32
/// bytes per field on top of name and value), so a request under that size still reaches
/// `State::handle`, which answers 431 with `Cache-Status` like for HTTP/1.1.
pub fn configure_http2(builder: &mut auto::Builder<TokioExecutor>, cfg: &ProxyConfig) {
    let header_list = u32::try_from(cfg.max_header_size.saturating_mul(2)).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(header_list)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_send_buf_size(H2_MAX_SEND_BUF);
}

/// What every client connection of the listener is served with.
pub(super) struct Serving {
    pub(super) state: Arc<State>,
    builder: auto::Builder<TokioExecutor>,
    /// Changes to `true` on shutdown; each connection watches a clone.
    stop: watch::Receiver<bool>,
    limits: ConnLimits,
    pub(super) reclaimer: Arc<Reclaimer>,
}

impl Serving {
    /// Serve one admitted connection on its own task, holding `permit` until it ends (or
    /// longer, through a CONNECT's tunnel).
    pub(super) fn serve(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        #[cfg(unix)]
        activity.set_socket(std::os::fd::AsRawFd::as_raw_fd(&stream));
        let st = self.state.clone();
        let slot = ConnSlot {
            _permit: Arc::new(permit),
            stop: self.stop.clone(),
        };
        let task_slot = slot.clone();
        let svc = service_fn({
            let activity = activity.clone();
            move |mut req: http::Request<hyper::body::Incoming>| {
                let st = st.clone();
                let guard = InFlight::new(activity.clone());
                if let Some(v) = activity.framing() {
                    req.extensions_mut().insert(v);
                }
                if req.method() == http::Method::CONNECT {
                    // A tunnel or an intercepted connection outlives this connection's task:
                    // it keeps the connection's slot, and with it the shutdown's wait, until
                    // it ends.
                    req.extensions_mut().insert(slot.clone());
                }
                async move {
                    // `handle` answers what needs no waiting inside the call and boxes the
                    // rest: hyper holds and moves a few words per request, never a request's
                    // whole state machine.
                    let res = st.handle(req, peer).await;
                    Ok::<_, std::convert::Infallible>(
                        res.map(|inner| GuardedBody::new(inner, guard)),
                    )
                }
            }
        });
        // Answers of one scheduler round leave together (`write_round`).
        let observed = Observed {
            io: stream,
            observer: activity.clone(),
        };
        let io = TokioIo::new(WriteRound::new(observed));
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, svc)
            .into_owned();
        let stop = self.stop.clone();
        let limits = self.limits;
        let registration = self.reclaimer.register(activity.clone());
        tokio::spawn(async move {
            let close = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
            drive(conn, close, stop, activity, limits, peer).await;
            drop(registration);
            drop(task_slot);
        });
    }
}
