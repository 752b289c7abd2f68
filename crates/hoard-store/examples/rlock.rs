//! `RLock` across processes: three copies of this program each add 1 to a counter 20
//! times under a re-entrant lock (taken twice per round); the counter ends at 60.
//!
//! Run: `cargo run -p hoard-store --example rlock`

mod common;

use std::time::Duration;

use hoard_store::{Acquire, Cache, RLock};

fn main() -> common::Outcome {
    let Some(dir) = common::in_processes(3, |dir| {
        let cache = Cache::open(dir)?;
        let lock = RLock::new(&cache, b"rlock", Some(Duration::from_secs(30)));
        for _ in 0..20 {
            let _outer = lock.hold(Duration::from_secs(30))?;
            let _inner = lock.hold(Duration::from_secs(30))?; // same thread: re-enters
            let n: u64 = match cache.get(b"n")? {
                Some(v) => String::from_utf8(v)?.parse()?,
                None => 0,
            };
            cache.set(b"n", (n + 1).to_string().as_bytes(), None, None)?;
        }
        Ok(())
    })?
    else {
        return Ok(());
    };
    let n = String::from_utf8(Cache::open(dir.path())?.get(b"n")?.unwrap_or_default())?;
    println!("3 processes x 20 increments under one RLock: counter = {n}");
    Ok(())
}
