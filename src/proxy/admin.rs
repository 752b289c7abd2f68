//! The admin server (`--admin ADDR`, off by default): `GET /metrics` in Prometheus text
//! format, `GET /healthz`, and the dashboard (`/`, `/events`, `/api/...`; see
//! [`dashboard`](super::dashboard)). HTTP/1.1 only, separate from the proxy listener.
//!
//! Invariants: store gauges are read on a blocking thread at scrape time; nothing here
//! touches the request path of the proxy. Only clients in `admin_allow` are served (others
//! are closed unanswered), at most [`MAX_CONNECTIONS`] at once (the excess is closed at
//! once); a request head must arrive within `header_timeout` (hyper's timer, which also
//! bounds an idle keep-alive connection), and a connection with no bytes moving for
//! `idle_timeout` is closed, so no client can hold the admin server. A request whose `Host`
//! is not this server's ([`admin_host`]: IP literal, `localhost`, `admin-hosts`) gets 421
//! Misdirected Request on every path but `/healthz`, so a DNS-rebinding page reads nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::admin_host;
use super::dashboard::{self, AdminBody};
use super::observed::{LastMoved, Observed};
use super::service::State;

/// Admin connections served at once. Scrapers and health checks need a handful; beyond this
/// a connection is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 32;

/// Why an accepted admin connection is closed without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The client address is outside `admin_allow`.
    NotAllowed,
    /// [`MAX_CONNECTIONS`] are being served.
    TooMany,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "client address not in admin-allow",
            Refusal::TooMany => "too many admin connections",
        }
    }
}

/// Serve admin requests until `signal` completes.
pub async fn run(listener: TcpListener, state: Arc<State>, signal: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let gate = dashboard::Gate::new();
    let idle = state.cfg.idle_timeout;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.header_timeout)
        .max_buf_size(16 * 1024)
        .max_headers(64)
        .keep_alive(true);
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            conn = super::listeners::accept_or_pause(&listener, "admin") => {
                let Some((stream, peer)) = conn else { continue };
                let permit = if !state.cfg.admin_allow.iter().any(|n| n.contains(peer.ip())) {
                    Err(Refusal::NotAllowed)
                } else {
                    permits.clone().try_acquire_owned().map_err(|_| Refusal::TooMany)
                };
                let permit = match permit {
                    Ok(p) => p,
                    Err(why) => {
                        // Dropping the stream closes it: a flood costs no task and no buffer.
                        tracing::info!(%peer, reason = why.as_str(), "admin connection closed");
                        continue;
                    }
                };
                let st = state.clone();
                let gate = gate.clone();
                let svc = service_fn(move |req| {
                    let (st, gate) = (st.clone(), gate.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(respond(&st, req, peer, &gate).await)
                    }
                });
                let last = Arc::new(LastMoved::new());
                let io = TokioIo::new(Observed { io: stream, observer: last.clone() });
                let conn = builder.serve_connection(io, svc);
                tokio::spawn(async move {
                    let _permit = permit;
                    drive(conn, last, idle, peer).await;
                });
            }
        }
    }
}

/// Run one admin connection until it ends or has moved no bytes for `idle` (a client that
/// stopped reading its response, or keeps a connection open without asking anything).
async fn drive<C, E>(conn: C, last: Arc<LastMoved>, idle: Duration, peer: SocketAddr)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "admin connection ended with error");
                }
                return;
            }
            _ = tokio::time::sleep_until(last.at() + idle) => {
                if last.at().elapsed() >= idle {
                    tracing::debug!(%peer, ?idle, "admin connection idle: closed");
                    return; // dropping the connection closes the socket
                }
            }
        }
    }
}

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<AdminBody> {
    let mut res = Response::new(AdminBody::full(Bytes::from(body)));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res
}

async fn respond(
    st: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    gate: &dashboard::Gate,
) -> Response<AdminBody> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    // `/healthz` tells nothing but "ok", so it answers health checkers whatever name they
    // put in `Host`; every other path is refused to a name that is not this server's.
    if req.uri().path() != "/healthz"
        && let Err(why) = admin_host::check(req.uri(), req.headers(), &st.cfg.admin_hosts)
    {
        tracing::info!(%peer, reason = why.as_str(), "admin request refused");
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            PLAIN,
            format!("{}\n", why.as_str()),
        );
    }
    let req = match req.uri().path() {
        "/healthz" | "/metrics" => req,
        _ => match dashboard::route(st, req, peer, gate).await {
            Some(res) => return res,
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    PLAIN,
                    "not found: try /, /metrics or /healthz\n".into(),
                );
            }
        },
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/metrics" => {
            let store = st.store.clone();
            let gauges = tokio::task::spawn_blocking(move || {
                let served = super::metrics::read_served(store.directory());
                Ok::<_, crate::store::Error>((
                    store.len()?,
                    store.volume()?,
                    store.settings().size_limit,
                    served,
                    store.evictions()?,
                ))
            })
            .await;
            match gauges {
                Ok(Ok((n, v, l, served, evicted))) => {
                    st.metrics.set_store(n, v, l);
                    st.metrics.set_evictions(evicted.culled, evicted.expired);
                    match served {
                        Ok(s) => st.metrics.set_served(&s),
                        Err(e) => tracing::warn!(error = %e, "metrics: served counts unavailable"),
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "metrics: store gauges unavailable"),
                Err(e) => tracing::warn!(error = %e, "metrics: store gauge task failed"),
            }
            st.metrics
                .set_front(st.entries.hot.bytes(), st.entries.hot.entries());
            st.metrics
                .set_sqlite_heap(crate::store::sqlite_heap_bytes());
            if let Some(tier) = st.entries.shared_tier() {
                st.metrics.set_shared(&tier.status());
            }
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                st.metrics.encode(),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /, /metrics or /healthz\n".into(),
        ),
    }
}
