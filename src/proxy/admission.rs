//! Admission of accepted connections, shared by every accept loop of the proxy (one per
//! listener: one, or one per per-core thread): `allow`, the `max-connections` slots, the places
//! to wait for a slot that `reclaim` frees, and the refusals (403, 503) written on the raw
//! socket.
//!
//! Invariants: a connection from outside `allow` gets 403 and one that finds no slot (none
//! free, none freed within [`RECLAIM_WAIT`]) gets 503, both with `Connection: close` on the raw
//! socket, and neither reaches hyper or the cache; refusals being written and connections
//! waiting for a slot are bounded too (a flood costs no unbounded tasks or sockets).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::server::Serving;
use super::service::CACHE_STATUS;
use crate::http_cache::{BypassReason, CacheStatus};

/// Accept on `listener` until `stop` completes, admitting each connection (`listener` is the
/// per-core index in `hoard_connections_accepted_total`).
pub(super) async fn accept(
    listener: &TcpListener,
    admission: &Admission,
    index: usize,
    stop: impl Future<Output = ()>,
) {
    let accepted = admission.serving.state.metrics.accepted_counter(index);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            conn = super::listeners::accept_or_pause(listener, "proxy") => {
                let Some((stream, peer)) = conn else { continue };
                accepted.inc();
                admission.admit(stream, peer);
            }
        }
    }
}

/// Why a connection is answered on the raw socket and closed without being served.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Beyond `max_connections`: 503.
    TooMany,
    /// The client address is outside `allow`: 403.
    NotAllowed,
}

impl Refusal {
    /// The whole HTTP/1.1 response.
    fn response(self) -> Vec<u8> {
        let (status, detail, body) = match self {
            Refusal::TooMany => (
                "503 Service Unavailable",
                "max-connections",
                "hoard: too many connections (max-connections), try again later\n",
            ),
            Refusal::NotAllowed => (
                "403 Forbidden",
                "not-allowed",
                "hoard: this address may not use the proxy (see allow)\n",
            ),
        };
        let cs = CacheStatus::bypass(BypassReason::Refused).with_detail(detail);
        let retry = match self {
            Refusal::TooMany => "retry-after: 1\r\n",
            Refusal::NotAllowed => "",
        };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\n{retry}cache-control: no-store\r\n\
             {}: {cs}\r\nconnection: close\r\n\r\n{body}",
            body.len(),
            CACHE_STATUS.as_str(),
        )
        .into_bytes()
    }
}

/// New connections waiting at once for a slot to free at `max-connections`; beyond, the 503
/// is at once.
const MAX_WAITING: usize = 256;
/// How long a new connection waits for a slot that connections asked to close free.
const RECLAIM_WAIT: Duration = Duration::from_secs(1);

/// What every accept loop shares (one per proxy, whatever the number of listeners): the
/// connection slots, the places to wait for one, the refusals being written.
pub(super) struct Admission {
    serving: Arc<Serving>,
    permits: Arc<Semaphore>,
    /// Places to wait for a slot (`places` of them).
    waiting: Arc<Semaphore>,
    places: usize,
    refusals: Arc<Semaphore>,
}

impl Admission {
    /// The admission of `serving`'s connections, with `max_connections` slots.
    pub(super) fn new(serving: Arc<Serving>, max_connections: usize) -> Admission {
        // Refused and waiting connections hold descriptors too: a quarter of the budget (at
        // least 16, which the open-files reserve covers).
        let side = (max_connections / 4).max(16);
        Admission {
            serving,
            permits: Arc::new(Semaphore::new(max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS.min(side))),
            waiting: Arc::new(Semaphore::new(MAX_WAITING.min(side))),
            places: MAX_WAITING.min(side),
        }
    }

    /// A connection just accepted: refused (403) from outside `allow`; served on a free slot;
    /// else it waits for one ([`Admission::wait_for_room`]).
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        if !self
            .serving
            .state
            .cfg
            .allow
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            tracing::info!(%peer, "client address not in allow: 403");
            refuse_bounded(&self.refusals, stream, Refusal::NotAllowed);
            return;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => self.serving.serve(stream, peer, permit),
            Err(_) => self.wait_for_room(stream, peer),
        }
    }

    /// Every slot is taken: ask connections that wait for a request to close (`reclaim`) and
    /// serve this one on the first slot that frees within [`RECLAIM_WAIT`]; when none was
    /// asked (every connection has a request in flight) or none freed in time, a 503.
    fn wait_for_room(&self, stream: TcpStream, peer: SocketAddr) {
        let place = self.waiting.clone().try_acquire_owned().ok();
        let freeing = place.as_ref().map_or(0, |_| {
            let waiters = self.places - self.waiting.available_permits();
            self.serving.reclaimer.make_room(waiters, Instant::now())
        });
        let Some(place) = place.filter(|_| freeing > 0) else {
            tracing::warn!(%peer, "max_connections reached, refusing connection");
            refuse_bounded(&self.refusals, stream, Refusal::TooMany);
            return;
        };
        let (serving, permits) = (self.serving.clone(), self.permits.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(RECLAIM_WAIT, permits.acquire_owned()).await {
                Ok(Ok(permit)) => {
                    drop(place);
                    serving.serve(stream, peer, permit);
                }
                _ => {
                    tracing::warn!(%peer, "max_connections reached, no slot freed in time: refusing");
                    refuse(stream, Refusal::TooMany).await;
                    drop(place);
                }
            }
        });
    }
}

/// Refusals being written at once; beyond that, refused connections are closed unanswered
/// (a flood must not cost unbounded tasks and sockets).
const MAX_REFUSALS: usize = 256;

fn refuse_bounded(refusals: &Arc<Semaphore>, stream: TcpStream, why: Refusal) {
    if let Ok(slot) = refusals.clone().try_acquire_owned() {
        tokio::spawn(async move {
            refuse(stream, why).await;
            drop(slot);
        });
    }
}

/// Answer a refused connection (403 or 503) and close it, within one second whatever the
/// client does. Its request is read and discarded (at most 64 KiB) until it closes its side,
/// so closing does not reset the connection under the 503 before the client has read it.
async fn refuse(mut stream: TcpStream, why: Refusal) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&why.response()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
