//! Cache-Control and RFC 5861 parsing: any field value parses without panicking, and
//! well-formed directive lists are read back exactly (names case-insensitive, quoted values
//! unquoted, delta-seconds capped at 2^31).

use std::time::Duration;

use hoard::http_cache::{Freshness5861, parse_cache_control, request_stale_if_error};
use http::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::config;

#[derive(Debug, Clone)]
enum Arg {
    Bare,
    Token(String),
    Quoted(String),
}

fn directive() -> impl Strategy<Value = (String, Arg)> {
    (
        "[a-zA-Z][a-zA-Z0-9-]{0,15}",
        prop_oneof![
            Just(Arg::Bare),
            "[a-zA-Z0-9_.-]{1,12}".prop_map(Arg::Token),
            "[a-zA-Z0-9 ,=;_.-]{0,12}".prop_map(Arg::Quoted),
        ],
    )
}

fn render(ds: &[(String, Arg)]) -> String {
    ds.iter()
        .map(|(n, a)| match a {
            Arg::Bare => n.clone(),
            Arg::Token(t) => format!("{n}={t}"),
            Arg::Quoted(q) => format!("{n}=\"{q}\""),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn headers(lines: &[String]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in lines {
        h.append(CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
    }
    h
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_field_values_never_panic(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4)
    ) {
        let mut h = HeaderMap::new();
        for l in lines {
            if let Ok(v) = HeaderValue::from_bytes(&l) {
                h.append(CACHE_CONTROL, v);
            }
        }
        let cc = parse_cache_control(&h);
        for (name, _) in cc.iter() {
            prop_assert!(!name.is_empty());
            prop_assert_eq!(name.to_ascii_lowercase(), name);
            let _ = cc.seconds(name);
        }
        let _ = Freshness5861::from_response(&h);
        let _ = request_stale_if_error(&h);
    }

    #[test]
    fn well_formed_directives_are_read_back(
        lines in proptest::collection::vec(proptest::collection::vec(directive(), 1..5), 1..3)
    ) {
        let cc = parse_cache_control(&headers(&lines.iter().map(|l| render(l)).collect::<Vec<_>>()));
        let all: Vec<_> = lines.concat();
        prop_assert_eq!(cc.iter().count(), all.len());
        for ((name, arg), (got_name, got_arg)) in all.iter().zip(cc.iter()) {
            prop_assert_eq!(&name.to_ascii_lowercase(), got_name);
            match arg {
                Arg::Bare => prop_assert_eq!(got_arg, None),
                Arg::Token(t) => prop_assert_eq!(got_arg, Some(t.as_str())),
                Arg::Quoted(q) => prop_assert_eq!(got_arg, Some(q.as_str())),
            }
        }
    }

    #[test]
    fn rfc5861_windows_are_read(
        swr in any::<u64>(), sie in 0u64..10_000_000_000, quoted in any::<bool>(), other in directive()
    ) {
        let q = |n: u64| if quoted { format!("\"{n}\"") } else { n.to_string() };
        let line = format!(
            "max-age=1, {}, Stale-While-Revalidate={}, stale-if-error={}",
            render(std::slice::from_ref(&other)), q(swr), q(sie)
        );
        let f = Freshness5861::from_response(&headers(&[line]));
        let cap = |n: u64| Some(Duration::from_secs(n.min(1 << 31)));
        // An earlier directive of the same name wins (first occurrence).
        let shadowed = |name: &str| other.0.eq_ignore_ascii_case(name);
        if !shadowed("stale-while-revalidate") {
            prop_assert_eq!(f.stale_while_revalidate, cap(swr));
        }
        if !shadowed("stale-if-error") {
            prop_assert_eq!(f.stale_if_error, cap(sie));
        }
    }
}
