//! Entry stores beyond the local disk cache.

pub mod shared;
