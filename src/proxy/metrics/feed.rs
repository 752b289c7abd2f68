//! The dashboard's live request feed: one [`AccessEvent`] per request, broadcast to
//! [`Subscription`]s.
//!
//! Invariant: an unwatched proxy builds no event (one relaxed load per request), and sending
//! never blocks: a subscriber that falls behind loses the oldest events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Metrics;

/// Events kept for a subscriber that is behind; beyond this it loses the oldest (a slow
/// dashboard drops events, it never slows the proxy).
pub const FEED_CAPACITY: usize = 1024;

/// One request as the dashboard shows it (the access line's fields).
#[derive(Debug, Clone, Serialize)]
pub struct AccessEvent {
    /// When the response head was ready (Unix milliseconds).
    pub time_ms: u64,
    /// Request method.
    pub method: String,
    /// Request target as received (absolute URL, or path in gateway mode / inside CONNECT).
    pub url: String,
    /// Response status.
    pub status: u16,
    /// Our `Cache-Status` value.
    pub cache_status: String,
    /// Its outcome token (`hit`, `uri-miss`, `bypass`, ...).
    pub outcome: String,
    /// Body bytes when known in advance.
    pub bytes: Option<u64>,
    /// Time to the response head in microseconds.
    pub elapsed_us: u64,
}

/// A subscription to the request feed; counts as a watcher until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The events.
    pub rx: tokio::sync::broadcast::Receiver<Arc<AccessEvent>>,
    watchers: Arc<AtomicU64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    /// Whether anyone watches the request feed (one relaxed load).
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Send one request to the feed's subscribers. `make` runs only when someone watches,
    /// so an unwatched proxy builds no event; sending never blocks.
    pub fn publish(&self, make: impl FnOnce() -> AccessEvent) {
        if self.watched() {
            let _ = self.feed.send(Arc::new(make()));
        }
    }

    /// Watch the request feed.
    pub fn subscribe(&self) -> Subscription {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.feed.subscribe(),
            watchers: self.watchers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_builds_events_only_when_watched() {
        let m = Metrics::new();
        m.publish(|| unreachable!("nobody watches"));
        let mut sub = m.subscribe();
        assert!(m.watched());
        let ev = || AccessEvent {
            time_ms: 1,
            method: "GET".into(),
            url: "http://a/".into(),
            status: 200,
            cache_status: "hoard; hit".into(),
            outcome: "hit".into(),
            bytes: Some(3),
            elapsed_us: 5,
        };
        m.publish(ev);
        assert_eq!(sub.rx.try_recv().unwrap().url, "http://a/");
        // A subscriber that falls behind loses the oldest events; sending never blocks.
        for _ in 0..FEED_CAPACITY + 10 {
            m.publish(ev);
        }
        assert!(matches!(
            sub.rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(10))
        ));
        drop(sub);
        assert!(!m.watched());
    }
}
