//! `HeadRecord` encode/decode: every head round-trips; arbitrary bytes decode or fail, never panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoard::http_cache::{HEAD_FORMAT_VERSION, HeadRecord, Memo, StoredHead, Vary};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use proptest::prelude::*;

use super::config;

fn header_name() -> impl Strategy<Value = HeaderName> {
    "[a-z][a-z0-9-]{0,15}".prop_map(|s| HeaderName::from_bytes(s.as_bytes()).unwrap())
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    "[!-~]([ -~]{0,38}[!-~])?".prop_map(|s| HeaderValue::from_str(&s).unwrap())
}

pub fn header_map() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((header_name(), header_value()), 0..8).prop_map(|fields| {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(n, v);
        }
        h
    })
}

fn uri() -> impl Strategy<Value = Uri> {
    (
        prop_oneof![Just("http"), Just("https")],
        "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?",
        proptest::option::of(1u16..),
        "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}){0,4}",
        proptest::option::of("[a-zA-Z0-9=&_.-]{0,20}"),
    )
        .prop_map(|(scheme, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let path = if path.is_empty() { "/".into() } else { path };
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
                .parse()
                .unwrap()
        })
}

fn time() -> impl Strategy<Value = SystemTime> {
    (0u64..1 << 40, 0u32..1_000_000_000).prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

fn duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

fn vary() -> impl Strategy<Value = Vary> {
    proptest::collection::vec(header_name(), 0..4).prop_map(|names| {
        let mut h = HeaderMap::new();
        for n in names {
            h.append(
                http::header::VARY,
                HeaderValue::from_str(n.as_str()).unwrap(),
            );
        }
        Vary::from_headers(&h)
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

prop_compose! {
    fn stored_head()(
        method in method(),
        uri in uri(),
        request_headers in header_map(),
        status in 100u16..1000,
        response_headers in header_map(),
        request_time in time(),
        response_time in time(),
        body_len in any::<u64>(),
        body_digest in any::<u64>(),
        fetch_delta in duration(),
        vary in vary(),
        forced_ttl in proptest::option::of(duration()),
        rule in proptest::option::of("[a-z0-9 _-]{1,20}"),
    ) -> StoredHead {
        StoredHead {
            method,
            uri,
            request_headers,
            status: StatusCode::from_u16(status).unwrap(),
            response_headers,
            request_time,
            response_time,
            body_len,
            body_digest,
            fetch_delta,
            vary,
            forced_ttl,
            rule,
            memo: Memo::default(),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn variant_round_trips(head in stored_head()) {
        let bytes = HeadRecord::Variant(head.clone()).encode();
        prop_assert_eq!(bytes[0], HEAD_FORMAT_VERSION);
        prop_assert_eq!(HeadRecord::decode(&bytes), Ok(HeadRecord::Variant(head.clone())));
        prop_assert_eq!(StoredHead::decode(&head.encode()), Ok(head));
    }

    #[test]
    fn vary_index_round_trips(v in vary()) {
        let bytes = HeadRecord::VaryIndex(v.clone()).encode();
        prop_assert_eq!(HeadRecord::decode(&bytes), Ok(HeadRecord::VaryIndex(v)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = HeadRecord::decode(&bytes);
    }

    #[test]
    fn valid_prefix_then_garbage_never_panics(
        head in stored_head(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = head.encode();
        // A truncated record is an error, not a shorter head.
        let n = cut.index(bytes.len());
        prop_assert!(HeadRecord::decode(&bytes[..n]).is_err());
        // One byte changed anywhere: decodes to something or fails, never panics.
        let i = flip.index(bytes.len());
        bytes[i] = byte;
        let _ = HeadRecord::decode(&bytes);
    }
}
