//! The `hoard` binary: parse the command line, validate the configuration, run.
fn main() {}
