//! The network layer: accepts clients, talks to origins, and glues `http_cache` to the `store`.
