//! CONNECT: a blind TCP tunnel between the client and `host:port`. Nothing is cached.
//!
//! Invariants: the origin connection is made before the client gets `200`, so a refused or
//! unreachable target is a 502 (504 on timeout), never a tunnel that closes at once. A tunnel
//! with no bytes moving either way for `tunnel_idle_timeout` is closed (both sides), so dead
//! peers do not hold `max_connections` slots forever.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::observed::{LastMoved, Observed};
use super::server::ConnSlot;
use super::upstream::{ResolveMap, UpstreamError};

/// Connect to the tunnel target `host:port` (`authority`), honouring `--resolve`.
pub async fn connect(
    authority: &str,
    host: &str,
    port: u16,
    resolve: &ResolveMap,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let fut = match resolve.lookup(host, port) {
        Some(ip) => futures_util::future::Either::Left(TcpStream::connect((ip, port))),
        None => futures_util::future::Either::Right(super::dns::connect(host, port)),
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) => Err(UpstreamError::Connect(format!("{authority}: {e}"))),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// After the `200` has been sent, splice the upgraded client connection and the origin
/// until either side closes or no bytes move for `idle`. `slot` (the client connection's
/// `max_connections` slot) is held until the tunnel closes.
pub fn splice(
    upgrade: OnUpgrade,
    origin: TcpStream,
    authority: String,
    slot: Option<ConnSlot>,
    idle: Duration,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%authority, error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let last = Arc::new(LastMoved::new());
        let mut client = Observed {
            io: TokioIo::new(upgraded),
            observer: last.clone(),
        };
        let mut origin = Observed {
            io: origin,
            observer: last.clone(),
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                res = &mut copy => {
                    match res {
                        Ok((up, down)) => tracing::debug!(%authority, up, down, "tunnel closed"),
                        Err(e) => tracing::debug!(%authority, error = %e, "tunnel ended with error"),
                    }
                    return;
                }
                _ = tokio::time::sleep_until(last.at() + idle) => {
                    if last.at().elapsed() >= idle {
                        tracing::debug!(%authority, ?idle, "tunnel idle: closed");
                        return; // dropping both ends closes them
                    }
                }
            }
        }
    });
}
