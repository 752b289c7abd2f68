//! The tier's first connection: the proxy waits for the connector's first attempt
//! (`connection.rs`) before it accepts, bounded by [`startup_wait`].
//!
//! Invariant: start-up never fails and never waits longer than [`startup_wait`] for Redis; a
//! Redis that is down or silent is reported once (by the connector) and the tier stays a miss
//! until the connector gets through.

use std::time::Duration;

use super::SharedTier;

/// Shortest and longest bound on the start-up connection, whatever `shared-timeout` is.
const STARTUP_MIN: Duration = Duration::from_secs(1);
const STARTUP_MAX: Duration = Duration::from_secs(2);
/// How often [`SharedTier::connect_at_start`] looks at the connector's progress.
const STARTUP_POLL: Duration = Duration::from_millis(5);

/// How long start-up may wait for Redis: four operation timeouts, between 1 and 2 s (a
/// cluster connection is several round trips: every seed, `CLUSTER SLOTS`, every master).
pub fn startup_wait(op_timeout: Duration) -> Duration {
    (op_timeout * 4).clamp(STARTUP_MIN, STARTUP_MAX)
}

/// What [`SharedTier::connect_at_start`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Commands and the invalidation subscription are up: the first fill reaches Redis.
    Ready,
    /// The first attempt failed (refused, TLS, auth...): the connector keeps trying in the
    /// background and has logged why.
    Unreachable(String),
    /// Neither within the bound (a silent Redis, or the subscription still on its way).
    Pending,
}

impl Startup {
    /// For logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Startup::Ready => "ready",
            Startup::Unreachable(_) => "unreachable",
            Startup::Pending => "pending",
        }
    }
}

impl SharedTier {
    /// Wait, at most `max`, for the connector's first attempt: `Ready` as soon as the command
    /// connection and the subscription are up, `Unreachable` as soon as the attempt failed.
    /// The proxy calls it before accepting, so its first fills are shared.
    pub async fn connect_at_start(&self, max: Duration) -> Startup {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let s = self.status();
            if s.connected && s.subscribed {
                return Startup::Ready;
            }
            if !s.connected
                && let Some(why) = s.connect_error
            {
                return Startup::Unreachable(why);
            }
            if tokio::time::Instant::now() >= deadline {
                return Startup::Pending;
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! wait {
        ($name:ident, $timeout_ms:expr, $want_ms:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    startup_wait(Duration::from_millis($timeout_ms)),
                    Duration::from_millis($want_ms)
                );
            }
        };
    }
    wait!(default_timeout_waits_one_second, 50, 1000);
    wait!(a_300ms_timeout_waits_four_of_them, 300, 1200);
    wait!(a_long_timeout_waits_two_seconds_at_most, 10_000, 2000);
}
