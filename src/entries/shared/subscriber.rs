//! The `invalidate`/`filled` subscription, on its own connection: messages from other
//! processes become local invalidations and wake `filled` waiters.
//!
//! Invariant: our own invalidations are skipped (by tier id); while the subscription is down,
//! waiters are woken to fall back to polling, and nothing missed meanwhile is replayed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{RedisError, Value};

use super::connection::{CONNECT_TIMEOUT, RECONNECT_MAX, RECONNECT_MIN};
use super::{Inner, inc, tls};

/// How often the subscriber pings its connection to notice a silent loss.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);

/// Keeps the `invalidate`/`filled` subscription up on its own connection. On a cluster it
/// subscribes through one node (rotating through the listed nodes when one fails):
/// cluster PUBLISH reaches every node.
pub(super) async fn subscriber(inner: Arc<Inner>) {
    let urls = inner.url.node_urls();
    let mut next = 0usize;
    let mut pause = RECONNECT_MIN;
    let mut lost_logged = false;
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        let url = &urls[next % urls.len()];
        next = next.wrapping_add(1);
        let attempt = async {
            let client = tls::client(url, &inner.roots)?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[&inner.invalidate_channel, &inner.filled_channel])
                .await?;
            Ok::<_, RedisError>(ps)
        };
        let ps = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => r,
        };
        if let Ok(Ok(ps)) = ps {
            inner.subscribed.store(true, Ordering::Release);
            if lost_logged {
                tracing::info!("shared tier: invalidation subscription restored");
                lost_logged = false;
            }
            pause = RECONNECT_MIN;
            let (mut sink, mut stream) = ps.split();
            let mut ping = tokio::time::interval(SUBSCRIBER_PING);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    m = stream.next() => match m {
                        Some(m) => on_message(&inner, &m),
                        None => break,
                    },
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(
                            CONNECT_TIMEOUT, sink.ping::<Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            inner.subscribed.store(false, Ordering::Release);
            // Waiters fall back to polling; wake them so they check the lease at once.
            for n in inner
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                n.notify_waiters();
            }
        }
        if !lost_logged {
            tracing::warn!(
                url = %inner.url.redacted(),
                "shared tier: no invalidation subscription (Redis unreachable); retrying"
            );
            lost_logged = true;
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

fn on_message(inner: &Inner, m: &redis::Msg) {
    let channel = m.get_channel_name();
    let Ok(payload) = m.get_payload::<String>() else {
        return;
    };
    if channel == inner.filled_channel {
        let map = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(&payload) {
            n.notify_waiters();
        }
    } else if channel == inner.invalidate_channel {
        // Sealed: only a message signed with the fleet's key is one (a forged one would
        // drop every process's local copies).
        let payload = match &inner.seal {
            Some(seal) => match seal.open_message(&payload) {
                Some(p) => p,
                None => {
                    inc(&inner.counters.forged);
                    tracing::debug!("shared tier: invalidation without a valid tag ignored");
                    return;
                }
            },
            None => payload.as_str(),
        };
        let Some((id, url_key)) = payload.split_once(' ') else {
            return;
        };
        if id == inner.id {
            return;
        }
        inc(&inner.counters.invalidations);
        let _ = inner.invalidations.send(url_key.to_string());
    }
}
