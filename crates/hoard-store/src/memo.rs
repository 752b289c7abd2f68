//! `memoize` and `memoize_stampede` (XFetch, "Optimal Probabilistic Cache Stampede
//! Prevention", Vattani et al. 2015) as store primitives.
//!
//! Invariant: the decision is a pure function of (now, delta, beta, expire, U); the clock
//! is the cache's and U comes from a caller-supplied source, so tests are exact.

use std::time::Duration;

use super::cache::Cache;
use super::error::Result;

/// Version byte of the meta blob written by [`Cache::memoize_stampede`].
const MEMO_META_V1: u8 = 1;

/// XFetch: recompute early when `now - delta * beta * ln(u) >= expire_time`.
/// `u` is uniform in (0, 1]; `delta` is the last compute time in seconds.
pub fn xfetch_should_recompute(now: f64, delta: f64, beta: f64, expire_time: f64, u: f64) -> bool {
    now - delta * beta * u.ln() >= expire_time
}

/// A uniform sample in (0, 1] from `fastrand`, for production use of
/// [`Cache::memoize_stampede`].
pub fn default_uniform() -> f64 {
    1.0 - fastrand::f64()
}

fn encode_delta(delta: f64) -> Vec<u8> {
    let mut m = Vec::with_capacity(9);
    m.push(MEMO_META_V1);
    m.extend_from_slice(&delta.to_le_bytes());
    m
}

fn decode_delta(meta: &[u8]) -> Option<f64> {
    match meta {
        [MEMO_META_V1, rest @ ..] => Some(f64::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

impl Cache {
    /// Returns the live value of `key`, or computes, stores and returns it.
    pub fn memoize(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        let v = compute()?;
        self.set(key, &v, expire, tag)?;
        Ok(v)
    }

    /// Like [`memoize`](Cache::memoize) but recomputes *before* expiry with a probability
    /// that rises as expiry nears and with the compute time `delta` (XFetch): with the
    /// stored `delta` and `expire_time`, recompute when
    /// `now - delta * beta * ln(uniform()) >= expire_time`. `beta` > 1 favours earlier
    /// recomputation (1.0 is the paper's default). `delta` is measured with the cache's
    /// clock around `compute` and stored in the row's meta. Returns the value and whether
    /// it was (re)computed.
    pub fn memoize_stampede(
        &self,
        key: &[u8],
        expire: Duration,
        beta: f64,
        uniform: &mut dyn FnMut() -> f64,
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<(Vec<u8>, bool)> {
        // Through the memory layer, like `get`: a hot memoized value costs no SQLite read.
        if let Some(held) = self.inner.get_held(key)?
            && let (Some(delta), Some(expire_time)) = (decode_delta(&held.meta), held.expire_time)
        {
            let now = self.clock().now();
            if !xfetch_should_recompute(now, delta, beta, expire_time, uniform()) {
                return Ok((held.value, false));
            }
        }
        let start = self.clock().now();
        let value = compute()?;
        let delta = (self.clock().now() - start).max(0.0);
        self.set_with_meta(key, &value, &encode_delta(delta), Some(expire), None)?;
        Ok((value, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! xfetch {
        ($name:ident, now=$now:expr, delta=$d:expr, beta=$b:expr, expire=$e:expr, u=$u:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(xfetch_should_recompute($now, $d, $b, $e, $u), $want);
            }
        };
    }
    // -ln(1) = 0: only at or after expiry.
    xfetch!(
        u_one_before_expiry,
        now = 99.0,
        delta = 10.0,
        beta = 1.0,
        expire = 100.0,
        u = 1.0,
        false
    );
    xfetch!(
        u_one_at_expiry,
        now = 100.0,
        delta = 10.0,
        beta = 1.0,
        expire = 100.0,
        u = 1.0,
        true
    );
    // -ln(e^-1) = 1: recompute once now + delta*beta >= expire.
    xfetch!(
        early_within_delta,
        now = 90.5,
        delta = 10.0,
        beta = 1.0,
        expire = 100.0,
        u = (-1.0f64).exp(),
        true
    );
    xfetch!(
        not_early_enough,
        now = 89.0,
        delta = 10.0,
        beta = 1.0,
        expire = 100.0,
        u = (-1.0f64).exp(),
        false
    );
    xfetch!(
        beta_two_doubles_window,
        now = 81.0,
        delta = 10.0,
        beta = 2.0,
        expire = 100.0,
        u = (-1.0f64).exp(),
        true
    );
    xfetch!(
        zero_delta_never_early,
        now = 99.9,
        delta = 0.0,
        beta = 1.0,
        expire = 100.0,
        u = 0.001,
        false
    );

    #[test]
    fn delta_meta_round_trips() {
        assert_eq!(decode_delta(&encode_delta(1.25)), Some(1.25));
        assert_eq!(decode_delta(b""), None);
        assert_eq!(decode_delta(&[2, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_delta(&[1, 0]), None);
    }

    #[test]
    fn default_uniform_is_in_half_open_unit_interval() {
        for _ in 0..1000 {
            let u = default_uniform();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}
