//! Cache keys: any parsable URI yields a key or an error, never a panic; keys are idempotent.
#![no_main]
use hoard::http_cache::{cache_key, normalize_uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = http::Uri::try_from(data) else {
        return;
    };
    let _ = cache_key(&http::Method::GET, &uri);
    if let Ok(once) = normalize_uri(&uri)
        && let Ok(u) = once.parse::<http::Uri>()
    {
        assert_eq!(normalize_uri(&u).ok().as_deref(), Some(once.as_str()));
    }
});
