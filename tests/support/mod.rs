//! Test support shared by every area: one in-process origin (`origin.rs`: hyper on
//! `127.0.0.1:0`, plain or TLS, counting and logging every request on arrival) and the one
//! accept loop every hand-written test server runs on (`listen.rs`); where headless Chromium is
//! and the flags that keep it on loopback (`chromium.rs`).
//!
//! Invariant: everything binds loopback only, and a server's accept loop ends when its handle
//! is dropped.

pub mod chromium;
pub mod listen;
pub mod origin;

pub use listen::{Listening, listen};
pub use origin::{Act, Body, Origin, Seen, full, reply};
