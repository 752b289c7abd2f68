//! Stored entry heads: any bytes decode or fail, never panic; what decodes re-encodes to itself.
#![no_main]
use hoard::http_cache::HeadRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = HeadRecord::decode(data) {
        let again = HeadRecord::decode(&rec.encode()).expect("re-encoded head decodes");
        assert_eq!(again, rec);
    }
});
