//! Cache-key normalisation: idempotent, case-insensitive in scheme and host, default ports
//! removed, escaped unreserved characters decoded; any parsable URI yields a key or an error.

use hoard::http_cache::{cache_key, normalize_uri};
use http::{Method, Uri};
use proptest::prelude::*;

use super::config;

fn host() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9.-]{0,20}[a-zA-Z0-9])?"
}

fn path_and_query() -> impl Strategy<Value = String> {
    "(/([a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9a-fA-F]{2}){0,10}){1,4}(\\?([a-zA-Z0-9=&_.~-]|%[0-9a-fA-F]{2}){0,20})?"
}

fn key(uri: &str) -> String {
    let u: Uri = uri.parse().unwrap();
    cache_key(&Method::GET, &u).unwrap().as_str().to_string()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn normalising_twice_changes_nothing(
        https in any::<bool>(), host in host(), port in proptest::option::of(1u16..), pq in path_and_query()
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let once = normalize_uri(&format!("{scheme}://{host}{port}{pq}").parse().unwrap()).unwrap();
        let again = normalize_uri(&once.parse().unwrap()).unwrap();
        prop_assert_eq!(once, again);
    }

    #[test]
    fn scheme_and_host_are_case_insensitive(
        https in any::<bool>(), host in host(), pq in path_and_query(), mask in any::<u64>()
    ) {
        let scheme = if https { "https" } else { "http" };
        let flip = |s: &str| -> String {
            s.chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect()
        };
        prop_assert_eq!(
            key(&format!("{scheme}://{}{pq}", host.to_ascii_lowercase())),
            key(&format!("{}://{}{pq}", flip(scheme), flip(&host)))
        );
    }

    #[test]
    fn default_port_is_the_same_key(https in any::<bool>(), host in host(), pq in path_and_query()) {
        let (scheme, port) = if https { ("https", 443) } else { ("http", 80) };
        prop_assert_eq!(
            key(&format!("{scheme}://{host}{pq}")),
            key(&format!("{scheme}://{host}:{port}{pq}"))
        );
    }

    #[test]
    fn escaped_unreserved_characters_are_decoded(
        host in host(), c in "[a-zA-Z0-9._~-]", lower in any::<bool>()
    ) {
        let b = c.as_bytes()[0];
        let esc = if lower { format!("%{b:02x}") } else { format!("%{b:02X}") };
        prop_assert_eq!(key(&format!("http://{host}/a{esc}b")), key(&format!("http://{host}/a{c}b")));
    }

    #[test]
    fn head_and_get_share_a_key(host in host(), pq in path_and_query()) {
        let u: Uri = format!("http://{host}{pq}").parse().unwrap();
        prop_assert_eq!(cache_key(&Method::GET, &u).unwrap(), cache_key(&Method::HEAD, &u).unwrap());
    }

    #[test]
    fn any_parsable_uri_never_panics(s in "[ -~]{0,60}") {
        if let Ok(u) = s.parse::<Uri>() {
            let _ = cache_key(&Method::GET, &u);
        }
    }
}
