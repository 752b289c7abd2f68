//! Cache fill: stream an origin body to the client while writing it to the store.
//!
//! Invariants: the entry commits only after the origin body ended cleanly with the declared
//! length and within `max_object_size`; otherwise the half-written value is dropped (no row,
//! no file). A client that goes away, or takes no chunk for its stall bound (it is then
//! dropped), does not stop a fill that is still storing, so waiters coalesced behind it still
//! get the entry. An origin failure mid-body reaches the client as a body error, so its
//! connection is aborted rather than ending with a short body. No blocking thread waits on the
//! origin or a client: the async loop owns the store writer and hands it one batch at a time.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::body::BodySender;
use super::origin::OriginBody;
use crate::coalesce::{Outcome, Permit};
use crate::entries::lease::Lease;
use crate::entries::{EntryWriter, FillPlan};

/// Bytes a fill holds for a client that reads slower than the origin sends (beyond its
/// channel). Past that the fill waits for the client, but never longer than its stall bound.
const CLIENT_LAG: usize = 4 * 1024 * 1024;

/// The client a fill streams to.
#[derive(Debug)]
pub struct ToClient {
    /// The client's response body.
    pub body: BodySender,
    /// A client that takes no chunk for this long is dropped (its body fails) while the fill
    /// goes on storing for everyone else.
    pub stall: Duration,
}

/// Chunks waiting for the client, and when it last took one.
struct Feed {
    to: ToClient,
    queue: VecDeque<Bytes>,
    queued: usize,
    since: tokio::time::Instant,
}

impl Feed {
    fn push(&mut self, b: Bytes) {
        if self.queue.is_empty() {
            self.since = tokio::time::Instant::now();
        }
        self.queued += b.len();
        self.queue.push_back(b);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let b = self.queue.pop_front()?;
        self.queued -= b.len();
        self.since = tokio::time::Instant::now();
        Some(b)
    }

    /// Hand the rest to the client, then end its body cleanly; a client that takes nothing
    /// for the stall bound is dropped.
    async fn drain(mut self) {
        while !self.queue.is_empty() {
            let tx = self.to.body.tx().clone();
            match tokio::time::timeout(self.to.stall, tx.reserve_owned()).await {
                Ok(Ok(permit)) => {
                    if let Some(b) = self.pop() {
                        permit.send(Ok(b));
                    }
                }
                Ok(Err(_)) => return, // the client went away
                Err(_) => {
                    tracing::info!(stall = ?self.to.stall, "client not reading a fill: dropped");
                    self.to.body.abort();
                    return;
                }
            }
        }
        self.to.body.finish();
    }
}

/// Run the fill to completion. `to_client` receives the body; a client that goes away or
/// takes no chunk for its stall bound is dropped, and the fill goes on storing. The origin
/// body is abandoned (not stored, the client's body fails) when no chunk arrives within
/// `chunk_timeout` or it is not complete within `body_timeout`.
pub async fn run(
    plan: FillPlan,
    mut body: OriginBody,
    to_client: Option<ToClient>,
    permit: Option<Permit>,
    lease: Option<Lease>,
    chunk_timeout: Duration,
    body_timeout: Option<Duration>,
) {
    let deadline = body_timeout.map(|t| tokio::time::Instant::now() + t);
    let (max_object_size, expected_len) = (plan.max_object_size(), plan.expected_len());
    let mut feed = to_client.map(|to| Feed {
        to,
        queue: VecDeque::new(),
        queued: 0,
        since: tokio::time::Instant::now(),
    });
    let mut writer = Some(plan.start());
    let mut total = 0u64;
    let mut too_large = false;
    let mut origin_since = tokio::time::Instant::now();
    let complete = loop {
        let storing = writer.as_ref().is_some_and(EntryWriter::is_storing);
        if !storing && feed.is_none() {
            break false;
        }
        // The origin is read unless a slow client already has `CLIENT_LAG` bytes waiting;
        // while it is not read, its chunk timeout does not run.
        let read_origin = feed.as_ref().is_none_or(|f| f.queued < CLIENT_LAG);
        if !read_origin {
            origin_since = tokio::time::Instant::now();
        }
        let wake = origin_since + chunk_timeout;
        let wake = deadline.map_or(wake, |d| d.min(wake));
        let waiting = feed.as_ref().is_some_and(|f| !f.queue.is_empty());
        let (room, stalled) = match &feed {
            Some(f) if waiting => (
                Some(f.to.body.tx().clone().reserve_owned()),
                f.since + f.to.stall,
            ),
            _ => (None, wake),
        };
        tokio::select! {
            biased;
            r = async { room?.await.ok() }, if waiting => {
                match (r, feed.as_mut()) {
                    (Some(permit), Some(f)) => {
                        if let Some(b) = f.pop() {
                            permit.send(Ok(b));
                        }
                    }
                    // The client went away: the fill goes on for the store.
                    _ => feed = None,
                }
                continue;
            }
            _ = tokio::time::sleep_until(stalled), if waiting => {
                if let Some(f) = feed.take() {
                    tracing::info!(stall = ?f.to.stall, "client not reading a fill: dropped");
                    f.to.body.abort();
                }
                continue;
            }
            frame = tokio::time::timeout_at(wake, body.frame()), if read_origin => {
                let frame = match frame {
                    Err(_) => {
                        tracing::debug!("origin body stalled");
                        break false;
                    }
                    Ok(None) => break expected_len.is_none_or(|n| n == total),
                    Ok(Some(Err(e))) => {
                        tracing::debug!(error = %e, "origin body failed");
                        break false;
                    }
                    Ok(Some(Ok(f))) => f,
                };
                origin_since = tokio::time::Instant::now();
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not stored
                };
                total += data.len() as u64;
                if total > max_object_size && storing {
                    too_large = true;
                    if let Some(w) = writer.take() {
                        w.abandon().await;
                    }
                }
                if let Some(w) = writer.as_mut() {
                    w.push(data.clone()).await;
                }
                if let Some(f) = feed.as_mut() {
                    f.push(data);
                }
            }
        }
    };
    // The client's body ends now (once it has taken what is queued), not after the commit.
    if let Some(f) = feed.take() {
        if complete {
            tokio::spawn(f.drain());
        } else {
            f.to.body.abort();
        }
    }
    let stored = match writer {
        Some(w) if complete => w.commit().await,
        Some(w) => {
            w.abandon().await;
            false
        }
        None => false,
    };
    // Other processes polling for this key see the entry before the lease goes.
    drop(lease);
    if let Some(p) = permit {
        p.finish(if stored {
            Outcome::Stored
        } else if too_large {
            Outcome::Uncacheable
        } else {
            Outcome::Abandoned
        });
    }
}
