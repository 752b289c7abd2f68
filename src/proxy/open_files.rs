//! The open-files limit (`RLIMIT_NOFILE`) against `max-connections`. At startup the soft
//! limit is raised to the hard one (as nginx's `worker_rlimit_nofile` and Go's runtime do:
//! Debian's default soft limit is 1024), and a `max-connections` the limit cannot carry is
//! lowered, with a warning, so clients beyond it get a 503 (or a reclaimed slot) instead of
//! `accept` failing with EMFILE and the store's files failing to open for everyone.
//!
//! Invariant: every admitted connection has [`FILES_PER_CONNECTION`] descriptors (its socket,
//! an origin connection or a value file) within the limit, after a reserve for the store's
//! SQLite connections, listeners, logs and pools.

/// Descriptors one client connection may hold at once.
pub const FILES_PER_CONNECTION: u64 = 2;

/// The soft limit raised to the hard limit (when it is lower); the limit in force afterwards,
/// `None` where it cannot be read.
pub fn raise() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local `rlimit`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some 32-bit targets
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Descriptors kept for everything but client connections: a quarter of the limit, at least
/// 32 and at most 1024.
pub fn reserve(open_files: u64) -> u64 {
    (open_files / 4).clamp(32, 1024)
}

/// The connections `open_files` descriptors carry (at least 1), or `max_connections` when
/// that is fewer or the limit is unknown.
pub fn connection_budget(max_connections: usize, open_files: Option<u64>) -> usize {
    let Some(files) = open_files else {
        return max_connections;
    };
    let carried = files.saturating_sub(reserve(files)) / FILES_PER_CONNECTION;
    max_connections.min(usize::try_from(carried).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        let cases = [
            // (max-connections, open files, admitted)
            (10_000, None, 10_000),
            (10_000, Some(1_048_576), 10_000),
            (10_000, Some(20_000), 9_488),
            (10_000, Some(1_024), 384),
            (10_000, Some(256), 96),
            (50, Some(256), 50),
            (10_000, Some(40), 4),
            (10_000, Some(10), 1),
            (10_000, Some(u64::MAX), 10_000),
        ];
        for (max, files, want) in cases {
            assert_eq!(connection_budget(max, files), want, "{max} {files:?}");
        }
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let now = raise().expect("unix: the limit is readable");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid pointer to a local `rlimit`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        #[allow(clippy::unnecessary_cast)]
        let soft = lim.rlim_cur as u64;
        assert_eq!(now, soft);
        if lim.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(lim.rlim_cur, lim.rlim_max);
        }
    }
}
