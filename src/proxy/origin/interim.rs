//! Interim (1xx) responses of an origin: hyper's client parses each and drops it (hoard does
//! not pass them on: README, "Deliberate deviations"), and goes on reading for as long as the
//! origin sends them. An origin that sends 1xx heads without end would keep its connection's
//! thread busy parsing them until `response-timeout` (one such request held a per-core thread
//! at 100% CPU for the whole minute and stalled the thread's other clients by over a second:
//! session 12's review). At most [`MAX_INTERIM`] per request: past that the exchange fails
//! (502, `detail=bad-response`), and hyper closes the connection once its request is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Request;
use tokio::sync::Notify;

/// Interim responses accepted before a final one (RFC 9110 15.2 sets no bound; origins send
/// a `100 Continue` or a few `103 Early Hints`).
pub const MAX_INTERIM: usize = 16;

/// The interim responses of one origin request (all its attempts): one allocation, shared
/// with hyper's callback.
#[derive(Debug, Clone, Default)]
pub struct Interim(Arc<Counted>);

#[derive(Debug, Default)]
struct Counted {
    seen: AtomicUsize,
    over: Notify,
}

impl Interim {
    /// Count the interim responses `req` gets (hyper calls back for each).
    pub fn watch<B>(&self, req: &mut Request<B>) {
        let me = self.0.clone();
        hyper::ext::on_informational(req, move |_| {
            if me.seen.fetch_add(1, Ordering::Relaxed) == MAX_INTERIM {
                // The first one past the bound; a permit is kept if nobody waits yet.
                me.over.notify_one();
            }
        });
    }

    /// Completes once more than [`MAX_INTERIM`] have come.
    pub async fn exceeded(&self) {
        self.0.over.notified().await;
    }
}
