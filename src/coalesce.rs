//! Single-flight per key: one fetch per cache key, waiters share its outcome. Permits release themselves on drop.
