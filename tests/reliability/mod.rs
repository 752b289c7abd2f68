//! Reliability under faults: SIGKILL crash loops of the real binary, disk-full and read-only
//! cache directories, corrupt databases and entry heads. Each test bounds its loops in count
//! and time.

mod corrupt;
mod crash;
mod diskfull;
mod wal;
