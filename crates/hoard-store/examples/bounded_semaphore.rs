//! `BoundedSemaphore` across processes: four copies of this program each enter a section
//! 10 times; at most 2 are ever inside at once.
//!
//! Run: `cargo run -p hoard-store --example bounded_semaphore`

mod common;

use std::time::Duration;

use hoard_store::{Acquire, BoundedSemaphore, Cache};

fn main() -> common::Outcome {
    let Some(dir) = common::in_processes(4, |dir| {
        let cache = Cache::open(dir)?;
        let sem = BoundedSemaphore::new(&cache, b"sem", 2, Some(Duration::from_secs(30)));
        for _ in 0..10 {
            let _slot = sem.hold(Duration::from_secs(30))?;
            let inside = cache.incr(b"inside", 1, Some(0))?;
            cache.transact(|tx| {
                let most = tx.get(b"most")?.map_or(0, |v| v[0]);
                tx.set(b"most", &[most.max(inside as u8)], None, None)
            })?;
            std::thread::sleep(Duration::from_millis(5));
            cache.decr(b"inside", 1, None)?;
        }
        Ok(())
    })?
    else {
        return Ok(());
    };
    let most = Cache::open(dir.path())?.get(b"most")?.map_or(0, |v| v[0]);
    println!("4 processes, semaphore of 2: at most {most} inside at once");
    Ok(())
}
