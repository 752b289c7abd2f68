//! Whose turn it is in a CONNECT tunnel: which side sent bytes last, and when bytes last moved
//! either way. The tunnel's idle timeout reads the clock; its shutdown reads both.
//!
//! A blind tunnel's protocol is opaque, so "a request in flight" can only be guessed. The
//! guess: when the client sent last, it waits for an answer (the origin is thinking, as with
//! an HTTP request inside TLS); when the origin sent last, or nothing moved at all, the client
//! has what it asked for and the tunnel is at rest between exchanges. Quiet alone cannot
//! tell: an origin that takes 1.5 s to answer and a browser's idle keep-alive tunnel look the
//! same for that long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::observed::{LastMoved, Observer};

/// The turn of one tunnel, shared by the observers of its two ends ([`Turn::end`]).
#[derive(Debug)]
pub struct Turn {
    moved: LastMoved,
    /// The client's bytes were the last to arrive, and nothing came back since.
    client_waits: AtomicBool,
}

impl Turn {
    /// Nothing moved yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Turn {
            moved: LastMoved::new(),
            client_waits: AtomicBool::new(false),
        })
    }

    /// The observer of the client's end (`client`) or the origin's.
    pub fn end(self: &Arc<Self>, client: bool) -> TunnelEnd {
        TunnelEnd {
            turn: self.clone(),
            client,
        }
    }

    /// When bytes last moved either way.
    pub fn moved_at(&self) -> Instant {
        self.moved.at()
    }

    /// At rest for `quiet`: the origin answered last (or nothing moved) and nothing moved
    /// since for `quiet`. `None` while the client waits for an answer; else when it is (or
    /// will be, if nothing moves) at rest.
    pub fn at_rest_from(&self, quiet: Duration) -> Option<Instant> {
        if self.client_waits.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.moved.at() + quiet)
    }
}

/// Reports the bytes of one end of a tunnel to its [`Turn`].
#[derive(Debug, Clone)]
pub struct TunnelEnd {
    turn: Arc<Turn>,
    client: bool,
}

impl Observer for TunnelEnd {
    fn on_read(&self, _: &[u8]) {
        self.turn.moved.touch();
        self.turn.client_waits.store(self.client, Ordering::Relaxed);
    }

    fn on_write(&self) {
        self.turn.moved.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_tunnel_is_at_rest_only_once_the_origin_spoke_last_and_quiet_passed() {
        let turn = Turn::new();
        let (client, origin) = (turn.end(true), turn.end(false));
        // Nothing moved: at rest from the tunnel's start plus the quiet period.
        let start = turn.moved_at();
        assert_eq!(turn.at_rest_from(QUIET), Some(start + QUIET));
        client.on_read(b"GET / HTTP/1.1\r\n\r\n");
        origin.on_write();
        assert_eq!(
            turn.at_rest_from(QUIET),
            None,
            "the client waits for its answer"
        );
        // Writes (the request reaching the origin, keep-alive echoes) do not change the turn.
        client.on_write();
        assert_eq!(turn.at_rest_from(QUIET), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        origin.on_read(b"HTTP/1.1 200 OK\r\n\r\n");
        client.on_write();
        let answered = turn.moved_at();
        assert!(answered > start, "the clock follows the answer");
        assert_eq!(turn.at_rest_from(QUIET), Some(answered + QUIET));
    }
}
