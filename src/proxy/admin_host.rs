//! Which `Host` the admin listener answers: the DNS-rebinding defence. A page on a name the
//! attacker controls can make that name resolve to 127.0.0.1 after it loaded; the browser
//! then treats the admin server as the page's own origin and sends `Host: that.name`.
//!
//! Invariant: a request is answered only when its `Host` (and the authority of an
//! absolute-form target) is an IP literal, `localhost` or a name under `.localhost` (which
//! browsers and resolvers keep on loopback, RFC 6761 6.3), or a name in `admin-hosts`; the
//! port is not part of the check. A request with no `Host` at all (HTTP/1.0 tools) is
//! answered: a browser always sends one.

use std::net::IpAddr;

use http::{HeaderMap, Uri, header};

/// Why a request's host is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// A DNS name that is neither `localhost` nor in `admin-hosts`.
    NotAdminHost,
    /// A `Host` field that is not valid text, or several of them.
    Malformed,
}

impl HostRefusal {
    /// The reason, for the response body and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            HostRefusal::NotAdminHost => {
                "the admin server answers only IP literals, localhost and the names in admin-hosts"
            }
            HostRefusal::Malformed => "malformed Host",
        }
    }
}

/// The host part of an authority `host[:port]` or `[v6]:port`, without the port.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Whether `authority` names this admin server: an IP literal, `localhost`, `*.localhost`
/// or one of `names` (case-insensitive; a trailing dot ignored).
pub fn admin_host(authority: &str, names: &[String]) -> bool {
    let host = host_of(authority.trim());
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    !host.is_empty()
        && names
            .iter()
            .any(|n| n.strip_suffix('.').unwrap_or(n).eq_ignore_ascii_case(&host))
}

/// Check a request's `Host` and target authority against [`admin_host`].
pub fn check(uri: &Uri, headers: &HeaderMap, names: &[String]) -> Result<(), HostRefusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostRefusal::Malformed);
    }
    if let Some(h) = host {
        let h = h.to_str().map_err(|_| HostRefusal::Malformed)?;
        if !admin_host(h, names) {
            return Err(HostRefusal::NotAdminHost);
        }
    }
    match uri.authority() {
        Some(a) if !admin_host(a.as_str(), names) => Err(HostRefusal::NotAdminHost),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! host {
        ($name:ident, $authority:expr, $want:expr) => {
            #[test]
            fn $name() {
                let names = vec!["hoard.internal".to_string(), "Admin.Example.".to_string()];
                assert_eq!(admin_host($authority, &names), $want, "{}", $authority);
            }
        };
    }

    host!(ipv4_with_port, "127.0.0.1:3129", true);
    host!(ipv4_without_port, "10.1.2.3", true);
    host!(ipv6_bracketed, "[::1]:3129", true);
    host!(ipv6_bracketed_no_port, "[::1]", true);
    host!(localhost, "localhost:3129", true);
    host!(localhost_any_case_trailing_dot, "LocalHost.:3129", true);
    host!(under_localhost, "dash.localhost:3129", true);
    host!(configured_name, "hoard.internal:3129", true);
    host!(configured_name_case_and_dot, "admin.example:80", true);
    host!(rebinding_name, "rebind.attacker.test:3129", false);
    host!(localhost_as_a_prefix, "localhost.attacker.test", false);
    host!(ends_in_localhost_without_dot, "evillocalhost:3129", false);
    host!(configured_name_as_suffix, "x.hoard.internal", false);
    host!(numeric_lookalike, "127.1:3129", false);
    host!(empty, "", false);

    #[test]
    fn check_reads_host_and_target() {
        let names: Vec<String> = Vec::new();
        let h = |pairs: &[&str]| {
            let mut m = HeaderMap::new();
            for v in pairs {
                m.append(header::HOST, v.parse().unwrap());
            }
            m
        };
        let origin_form: Uri = "/api/urls".parse().unwrap();
        let absolute: Uri = "http://rebind.attacker.test/api/urls".parse().unwrap();
        let cases: Vec<(&Uri, HeaderMap, Result<(), HostRefusal>)> = vec![
            (&origin_form, h(&["127.0.0.1:3129"]), Ok(())),
            (&origin_form, h(&[]), Ok(())),
            (
                &origin_form,
                h(&["rebind.attacker.test:3129"]),
                Err(HostRefusal::NotAdminHost),
            ),
            (
                &origin_form,
                h(&["127.0.0.1", "rebind.attacker.test"]),
                Err(HostRefusal::Malformed),
            ),
            (&absolute, h(&["127.0.0.1"]), Err(HostRefusal::NotAdminHost)),
        ];
        for (i, (uri, headers, want)) in cases.into_iter().enumerate() {
            assert_eq!(check(uri, &headers, &names), want, "case {i}");
        }
    }
}
