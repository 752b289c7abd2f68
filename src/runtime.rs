//! The tokio runtime of `hoard serve`: how many worker threads (`--threads`).

use std::num::NonZeroUsize;

/// Most worker threads accepted.
pub const MAX_THREADS: usize = 1024;

/// `--threads N`: a worker count from 1 to [`MAX_THREADS`], or `auto` (`None`: tokio's
/// default, the CPUs this process may run on, which honours `taskset` and cgroup CPU limits).
pub fn parse_threads(s: &str) -> Result<Option<NonZeroUsize>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let n: usize = s.parse().map_err(|_| {
        format!("expected a number of threads (1-{MAX_THREADS}) or auto, got {s:?}")
    })?;
    match NonZeroUsize::new(n) {
        Some(n) if n.get() <= MAX_THREADS => Ok(Some(n)),
        _ => Err(format!(
            "threads must be 1-{MAX_THREADS} (or auto), got {n}"
        )),
    }
}

/// A multi-threaded runtime with `threads` workers (`None`: tokio's default).
pub fn build(threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = threads {
        b.worker_threads(n.get());
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thread_counts() {
        assert_eq!(parse_threads("1"), Ok(NonZeroUsize::new(1)));
        assert_eq!(parse_threads(" 8 "), Ok(NonZeroUsize::new(8)));
        assert_eq!(parse_threads("auto"), Ok(None));
        assert_eq!(parse_threads("1024"), Ok(NonZeroUsize::new(1024)));
        for bad in ["0", "1025", "-1", "", "two", "1.5"] {
            assert!(parse_threads(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_a_runtime_with_that_many_workers() {
        let rt = build(NonZeroUsize::new(1)).unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        let rt = build(NonZeroUsize::new(3)).unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
    }
}
