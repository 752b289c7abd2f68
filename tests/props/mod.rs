//! Property tests (proptest, bounded case counts so the suite stays fast) of the pure
//! `http_cache` codecs and parsers: the entry head codec, cache-key normalisation and the
//! Cache-Control / RFC 5861 parser. Arbitrary input never panics; valid input round-trips.

mod directives;
mod entry;
mod key;

/// Cases per property: enough to find shallow bugs, few enough to run in about a second.
pub const CASES: u32 = 256;

/// The proptest configuration every property here uses.
pub fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: CASES,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
