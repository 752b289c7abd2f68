//! The admin server (`--admin ADDR`, off by default): `GET /metrics` in Prometheus text
//! format and `GET /healthz`. HTTP/1.1 only, separate from the proxy listener.
//!
//! Invariant: store gauges are read on a blocking thread at scrape time; nothing here
//! touches the request path of the proxy.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::service::State;

/// Serve admin requests until `signal` completes.
pub async fn run(listener: TcpListener, state: Arc<State>, signal: impl Future<Output = ()>) {
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let st = state.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&st, req).await) }
                });
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "admin connection ended with error");
                    }
                });
            }
        }
    }
}

fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res
}

async fn respond(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/metrics" => {
            let store = st.store.clone();
            let gauges = tokio::task::spawn_blocking(move || {
                Ok::<_, crate::store::Error>((
                    store.len()?,
                    store.volume()?,
                    store.settings().size_limit,
                ))
            })
            .await;
            match gauges {
                Ok(Ok((n, v, l))) => st.metrics.set_store(n, v, l),
                Ok(Err(e)) => tracing::warn!(error = %e, "metrics: store gauges unavailable"),
                Err(e) => tracing::warn!(error = %e, "metrics: store gauge task failed"),
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
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}
