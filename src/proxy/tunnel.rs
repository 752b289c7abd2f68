//! CONNECT: a blind TCP tunnel between the client and `host:port`. Nothing is cached.
//!
//! Invariants: the origin connection is made before the client gets `200`, so a refused or
//! unreachable target is a 502 (504 on timeout), never a tunnel that closes at once. A tunnel
//! with no bytes moving either way for `tunnel_idle_timeout` is closed (both sides), so dead
//! peers do not hold `max_connections` slots forever. On shutdown a tunnel is waited for
//! (bounded by `shutdown_timeout`), unless it is at rest ([`SHUTDOWN_QUIET`]).

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::observed::Observed;
use super::server::ConnSlot;
use super::tunnel_turn::Turn;
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

/// How long a tunnel must be at rest (the origin spoke last, then nothing moved either way)
/// before the shutdown closes it: an idle browser tunnel does not hold `systemctl stop` for
/// the whole `shutdown_timeout`, and a response still streaming keeps moving bytes.
pub(super) const SHUTDOWN_QUIET: Duration = Duration::from_secs(1);

/// After the `200` has been sent, splice the upgraded client connection and the origin
/// until either side closes or no bytes move for `idle`. `slot` (the client connection's
/// `max_connections` slot and shutdown watch) is held until the tunnel closes: the shutdown
/// waits for it. Once the shutdown began, the tunnel is closed as soon as it is at rest for
/// [`SHUTDOWN_QUIET`] (`tunnel_turn`: a client waiting for an answer is not), and at the
/// latest after `shutdown`.
pub fn splice(
    upgrade: OnUpgrade,
    origin: TcpStream,
    authority: String,
    slot: Option<ConnSlot>,
    idle: Duration,
    shutdown: Duration,
) {
    tokio::spawn(async move {
        // Without a slot (no listener: `dispatch_to` in unit tests) nothing ever shuts down.
        let (_never, mut stop) = match &slot {
            Some(s) => (None, s.shutdown()),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                (Some(tx), rx)
            }
        };
        let _slot = slot;
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%authority, error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let turn = Turn::new();
        let mut client = Observed {
            io: TokioIo::new(upgraded),
            observer: turn.end(true),
        };
        let mut origin = Observed {
            io: origin,
            observer: turn.end(false),
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        tokio::pin!(copy);
        // Set when the shutdown began: the tunnel is dropped at this instant at the latest.
        let mut closing: Option<Instant> = None;
        loop {
            let mut wake = turn.moved_at() + idle;
            if let Some(deadline) = closing {
                // Bytes moving do not wake this loop: while the client waits, look again
                // each quiet period (the answer may have come meanwhile).
                let rest = turn
                    .at_rest_from(SHUTDOWN_QUIET)
                    .unwrap_or_else(|| Instant::now() + SHUTDOWN_QUIET);
                wake = wake.min(deadline).min(rest);
            }
            tokio::select! {
                res = &mut copy => {
                    match res {
                        Ok((up, down)) => tracing::debug!(%authority, up, down, "tunnel closed"),
                        Err(e) => tracing::debug!(%authority, error = %e, "tunnel ended with error"),
                    }
                    return;
                }
                // `Err`: the server is gone, which is a shutdown too.
                _ = stop.changed(), if closing.is_none() => {
                    closing = Some(Instant::now() + shutdown);
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if let Some(deadline) = closing {
                        if now >= deadline {
                            tracing::debug!(%authority, ?shutdown, "shutdown timeout: tunnel dropped");
                            return;
                        }
                        if turn.at_rest_from(SHUTDOWN_QUIET).is_some_and(|r| now >= r) {
                            tracing::debug!(%authority, "shutdown: tunnel at rest, closed");
                            return;
                        }
                    }
                    if now >= turn.moved_at() + idle {
                        tracing::debug!(%authority, ?idle, "tunnel idle: closed");
                        return; // dropping both ends closes them
                    }
                }
            }
        }
    });
}
