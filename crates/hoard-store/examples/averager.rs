//! `Averager` across processes: three copies of this program each add the numbers 0..100;
//! the average over all 300 values is 49.5.
//!
//! Run: `cargo run -p hoard-store --example averager`

mod common;

use hoard_store::{Averager, Cache};

fn main() -> common::Outcome {
    let Some(dir) = common::in_processes(3, |dir| {
        let avg = Averager::new(&Cache::open(dir)?, b"avg", None);
        for i in 0..100 {
            avg.add(f64::from(i))?;
        }
        Ok(())
    })?
    else {
        return Ok(());
    };
    let avg = Averager::new(&Cache::open(dir.path())?, b"avg", None);
    println!(
        "average of 3 x (0..100) added by 3 processes: {:?}",
        avg.pop()?
    );
    Ok(())
}
