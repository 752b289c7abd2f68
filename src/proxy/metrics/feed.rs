//! The dashboard's live request feed: one [`AccessEvent`] per request, broadcast to
//! [`Subscription`]s.
//!
//! Invariant: an unwatched proxy builds no event (one relaxed load per request), and sending
//! never blocks: a subscriber that falls behind loses the oldest events. An event holds at
//! most [`EVENT_TEXT_BYTES`] of text ([`AccessEvent::bound`]: a 60 KiB URL is cut to 2 KiB),
//! so the ring of [`FEED_CAPACITY`] events is bounded in bytes, not only in events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Metrics;

/// Events kept for a subscriber that is behind; beyond this it loses the oldest (a slow
/// dashboard drops events, it never slows the proxy).
pub const FEED_CAPACITY: usize = 1024;

/// Bytes of URL an event carries at most; a longer one is cut (at a character boundary)
/// and ends in [`CUT_MARK`].
pub const MAX_EVENT_URL: usize = 2048;
/// Bytes of method, `Cache-Status` and outcome an event carries at most, each.
const MAX_EVENT_FIELD: usize = 256;
/// What ends a field that was cut.
pub const CUT_MARK: &str = "…";
/// Text bytes of one event at most (URL, method, `Cache-Status`, outcome, marks included).
pub const EVENT_TEXT_BYTES: usize = MAX_EVENT_URL + 3 * MAX_EVENT_FIELD + 4 * CUT_MARK.len();

/// Cut `s` to at most `max` bytes at a character boundary, marked with [`CUT_MARK`], and
/// give back the memory the cut freed.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT_MARK);
    s.shrink_to_fit();
}

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

impl AccessEvent {
    /// Cut the URL to [`MAX_EVENT_URL`] bytes and the other text fields to 256 bytes each,
    /// so one event holds at most [`EVENT_TEXT_BYTES`] of text.
    pub fn bound(&mut self) {
        cut(&mut self.url, MAX_EVENT_URL);
        cut(&mut self.method, MAX_EVENT_FIELD);
        cut(&mut self.cache_status, MAX_EVENT_FIELD);
        cut(&mut self.outcome, MAX_EVENT_FIELD);
        debug_assert!(self.text_bytes() <= EVENT_TEXT_BYTES);
    }

    /// Text bytes the event holds (its fields' lengths).
    pub fn text_bytes(&self) -> usize {
        self.url.len() + self.method.len() + self.cache_status.len() + self.outcome.len()
    }
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
    /// so an unwatched proxy builds no event; the event is [bounded](AccessEvent::bound);
    /// sending never blocks.
    pub fn publish(&self, make: impl FnOnce() -> AccessEvent) {
        if self.watched() {
            let mut ev = make();
            ev.bound();
            let _ = self.feed.send(Arc::new(ev));
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

    #[test]
    fn an_event_with_a_60_kib_url_carries_at_most_the_bound() {
        let m = Metrics::new();
        let mut sub = m.subscribe();
        // Multi-byte characters straddle the cut: it stays on a character boundary.
        let long = format!("http://a.example/{}", "é".repeat(30 * 1024));
        let cases: Vec<(String, String, usize, bool)> = vec![
            (long.clone(), "GET".into(), MAX_EVENT_URL, true),
            ("http://a/".into(), "X".repeat(70_000), 9, false),
            (
                "x".repeat(MAX_EVENT_URL),
                "GET".into(),
                MAX_EVENT_URL,
                false,
            ),
        ];
        for (url, method, url_max, url_cut) in cases {
            m.publish(|| AccessEvent {
                time_ms: 1,
                method,
                url: url.clone(),
                status: 200,
                cache_status: "hoard; hit".repeat(1_000),
                outcome: "hit".into(),
                bytes: None,
                elapsed_us: 1,
            });
            let ev = sub.rx.try_recv().unwrap();
            assert!(ev.url.len() <= url_max + CUT_MARK.len(), "{}", ev.url.len());
            assert_eq!(ev.url.ends_with(CUT_MARK), url_cut);
            assert!(url.starts_with(ev.url.trim_end_matches(CUT_MARK)));
            assert!(ev.method.len() <= MAX_EVENT_FIELD + CUT_MARK.len());
            assert!(ev.cache_status.ends_with(CUT_MARK));
            assert!(ev.text_bytes() <= EVENT_TEXT_BYTES, "{}", ev.text_bytes());
            // The memory the cut freed is given back.
            assert!(ev.url.capacity() <= MAX_EVENT_URL + CUT_MARK.len());
            let json = serde_json::to_string(&*ev).unwrap();
            assert!(json.len() < EVENT_TEXT_BYTES + 256, "{}", json.len());
        }
    }
}
