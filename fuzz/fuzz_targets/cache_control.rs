//! Cache-Control and RFC 5861 parsing: any field value parses, never panics.
#![no_main]
use hoard::http_cache::{Freshness5861, parse_cache_control};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = http::HeaderMap::new();
    h.append(http::header::CACHE_CONTROL, v);
    let cc = parse_cache_control(&h);
    for (name, _) in cc.iter() {
        let _ = cc.seconds(name);
    }
    let _ = Freshness5861::from_response(&h);
});
