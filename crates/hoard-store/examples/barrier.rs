//! `Barrier` across processes: three copies of this program run a read-modify-write 20
//! times each through a barrier on a `Lock`; no update is lost (the counter ends at 60).
//!
//! Run: `cargo run -p hoard-store --example barrier`

mod common;

use std::time::Duration;

use hoard_store::{Barrier, Cache, Lock};

fn main() -> common::Outcome {
    let Some(dir) = common::in_processes(3, |dir| {
        let cache = Cache::open(dir)?;
        let lock = Lock::new(&cache, b"barrier", Duration::from_secs(30));
        let barrier = Barrier::new(lock, Duration::from_secs(30));
        for _ in 0..20 {
            barrier.call(|| -> hoard_store::Result<()> {
                let n = cache.get(b"n")?.map_or(0, |v| v[0]);
                cache.set(b"n", &[n + 1], None, None)
            })??;
        }
        Ok(())
    })?
    else {
        return Ok(());
    };
    let n = Cache::open(dir.path())?.get(b"n")?.map_or(0, |v| v[0]);
    println!("3 processes x 20 calls through one barrier: counter = {n}");
    Ok(())
}
