//! Integration tests of the caching proxy, end to end over loopback TCP. Each test runs its own
//! in-process origin (counting requests), its own proxy on `127.0.0.1:0`, and a `TempDir` store.

mod bodies;
mod clients;
mod errors;
mod forward;
mod front;
pub mod harness;
mod invalidation;
mod lifecycle;
mod partial;
mod reload;
mod reuse;
mod rfc9111;
mod semantics;
mod stale;
mod uploads;
mod vary;
