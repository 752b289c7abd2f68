//! The admin calls that walk the store (`/api/urls`, `/api/store`) run at most
//! [`HEAVY_CALLS`] at a time; the others wait their turn (first come, first served).
//!
//! Invariant: the work runs on a blocking thread holding its permit until it returns, even
//! when the client that asked has gone, so at most [`HEAVY_CALLS`] walks of the store exist
//! at once, whatever the number of admin connections (at most 32 wait).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// Store walks at once: the dashboard asks for `/api/store` and `/api/urls` together.
pub const HEAVY_CALLS: usize = 2;

/// The admin server's permits for store walks.
#[derive(Debug, Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// A gate of [`HEAVY_CALLS`] permits.
    pub fn new() -> Gate {
        Gate::with(HEAVY_CALLS)
    }

    fn with(permits: usize) -> Gate {
        Gate(Arc::new(Semaphore::new(permits)))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// Run `work` on a blocking thread once a permit of `gate` is free.
pub async fn heavy<T: Send + 'static>(
    gate: &Gate,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JoinError> {
    // The semaphore is never closed, so acquiring fails never; run unguarded if it did.
    let permit = gate.0.clone().acquire_owned().await.ok();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_gate_s_permits_run_at_once() {
        let gate = Gate::with(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    heavy(&gate, move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Long enough that unguarded calls would overlap; not an assertion.
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        i
                    })
                    .await
                })
            })
            .collect();
        let mut done = Vec::new();
        for c in calls {
            done.push(c.await.unwrap().unwrap());
        }
        assert_eq!(done, (0..8).collect::<Vec<_>>(), "every call answered");
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{}",
            most.load(Ordering::SeqCst)
        );
        assert_eq!(gate.0.available_permits(), 2, "permits given back");
    }
}
