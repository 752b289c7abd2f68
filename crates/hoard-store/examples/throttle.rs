//! `Throttle` across processes: two copies of this program make 15 calls each through a
//! throttle of 10 calls per second shared by both; the 30 calls take about 2 s.
//!
//! Run: `cargo run -p hoard-store --example throttle`

mod common;

use std::time::{Duration, Instant};

use hoard_store::{Cache, Throttle};

fn main() -> common::Outcome {
    let start = Instant::now();
    let Some(dir) = common::in_processes(2, |dir| {
        let cache = Cache::open(dir)?;
        let throttle = Throttle::new(&cache, b"throttle", 10, Duration::from_secs(1));
        for _ in 0..15 {
            throttle.call(|| cache.incr(b"calls", 1, Some(0)))??;
        }
        Ok(())
    })?
    else {
        return Ok(());
    };
    let calls = Cache::open(dir.path())?.incr(b"calls", 0, None)?;
    println!(
        "{calls} calls at 10 per second (10 at once, then one each 0.1 s) took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
