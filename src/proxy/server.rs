//! Accept loop: binds the listener, serves HTTP/1.1 (keep-alive, upgrades for CONNECT) and
//! HTTP/2 on each connection, and shuts down gracefully.
//!
//! Invariant: on shutdown the listener stops first, in-flight requests get
//! `shutdown_timeout` to finish, then store buffers are flushed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use super::mitm::Interceptor;
use super::service::State;
use super::{ProxyConfig, ProxyError};
use crate::store::Cache;

/// One of the `max_connections` slots, shared by a client connection and whatever outlives it
/// after a CONNECT (tunnel, intercepted connection); freed when the last holder ends.
#[derive(Debug, Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// A bound, not yet running proxy.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<State>,
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
    /// Open the store and bind the listener.
    pub async fn bind(cfg: ProxyConfig) -> Result<Server, ProxyError> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local = listener.local_addr()?;
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
        Ok(Server {
            listener,
            admin,
            state,
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
            admin,
            state,
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
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(state.cfg.max_connections));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.cfg.header_timeout)
            // hyper's own limits sit above ours, so oversized header blocks reach
            // `State::handle`, which answers 431 with Cache-Status.
            .max_buf_size((state.cfg.max_header_size * 4).max(256 * 1024))
            .max_headers(200)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
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
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "max_connections reached, refusing connection");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let st = state.clone();
                    let slot = ConnSlot(Arc::new(permit));
                    let task_slot = slot.clone();
                    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        if req.method() == http::Method::CONNECT {
                            // A tunnel or an intercepted connection outlives this connection's
                            // task: it keeps the connection's slot until it ends.
                            req.extensions_mut().insert(slot.clone());
                        }
                        async move { Ok::<_, std::convert::Infallible>(st.handle(req, peer).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with error");
                        }
                        drop(task_slot);
                    });
                }
            }
        }
        drop(listener);
        flusher.abort();
        drop(admin_stop);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        let timeout = state.cfg.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        if tokio::time::timeout(timeout, graceful.shutdown())
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
