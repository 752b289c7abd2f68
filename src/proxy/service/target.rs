//! Where a request goes: the target URI (absolute-form in forward mode, upstream base plus
//! path in gateway mode), loop detection, and CONNECT targets (host check, allowed ports,
//! interception or blind tunnel).
//!
//! Invariant: no tunnel, interception or leaf certificate for a CONNECT whose host is not a
//! plain DNS name or IP literal, or whose port is not allowed for that host or not plain
//! digits (no sign, no leading zero; the same for an absolute-form URL's port).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::http_cache::{BypassReason, CacheStatus};
use crate::proxy::body::ProxyBody;
use crate::proxy::server::ConnSlot;
use crate::proxy::{hostname, mitm, tunnel};

use super::State;

/// Whether the path of `path_and_query` has a `.` or `..` segment, literal or
/// percent-encoded (`%2e`, `%2E`).
fn has_dot_segment(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    path.split('/').any(|seg| {
        let decoded = seg.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    })
}

impl State {
    /// The absolute URI a request is for: absolute-form in forward mode, the upstream base
    /// plus path in gateway mode.
    pub(super) fn target_uri(&self, req: &Request<Incoming>) -> Result<Uri, &'static str> {
        if let Some(base) = &self.cfg.upstream {
            let base_path = base.path().trim_end_matches('/');
            // The common case (an upstream URL without a path, an origin-form target) reuses
            // the parsed parts: no text to build and parse again.
            if let (true, Some(pq)) = (base_path.is_empty(), req.uri().path_and_query())
                && pq.as_str().starts_with('/')
            {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(base.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP));
                parts.authority = base.authority().cloned();
                parts.path_and_query = Some(pq.clone());
                return Uri::from_parts(parts)
                    .map_err(|_| "request target cannot be joined to the upstream URL\n");
            }
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            // Only an origin-form path joins the base: `*` (OPTIONS/GET *) would make
            // `http://host:port*`, which parses as port 80 of the host.
            if !pq.starts_with('/') {
                return Err("gateway mode serves origin-form targets (/path) only\n");
            }
            // Under a base path, `..` (or `%2e%2e`) would climb out of it at an origin that
            // resolves dot-segments: `/../admin` joined to `/api` is `/api/../admin`.
            if !base_path.is_empty() && has_dot_segment(pq) {
                return Err("dot-segments (. or ..) are not allowed under the upstream's path\n");
            }
            let joined = format!(
                "{}://{}{}{}",
                base.scheme_str().unwrap_or("http"),
                base.authority().map(|a| a.as_str()).unwrap_or(""),
                base_path,
                pq
            );
            return joined
                .parse()
                .map_err(|_| "request target cannot be joined to the upstream URL\n");
        }
        let uri = req.uri();
        match (uri.scheme_str(), uri.authority()) {
            (Some("http") | Some("https"), Some(a)) => {
                match hostname::check_authority_port(a.as_str()) {
                    Ok(()) => Ok(uri.clone()),
                    Err(_) => {
                        Err("the URL's port must be digits, without a sign or a leading zero\n")
                    }
                }
            }
            (Some(_), Some(_)) => Err("only http and https URLs can be proxied\n"),
            _ => Err(
                "hoard is a forward proxy: send absolute-form requests (GET http://host/path), \
                 or start it with --upstream URL for gateway mode\n",
            ),
        }
    }

    /// Is `target` this proxy itself?
    pub(super) fn is_loop(&self, target: &Uri) -> bool {
        let Some(host) = target.host() else {
            return false;
        };
        let default_port = if target.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let port = target.port_u16().unwrap_or(default_port);
        if port != self.local_addr.port() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                // `[::ffff:127.0.0.1]` reaches 127.0.0.1.
                let ip = ip.to_canonical();
                let ours = self.local_addr.ip().to_canonical();
                ip == ours || (ours.is_unspecified() || ip.is_unspecified()) || {
                    ip.is_loopback() && ours.is_loopback()
                }
            }
            Err(_) => false,
        }
    }

    /// May CONNECT reach `host:port`? Any host on `allowed_connect_ports`; otherwise only the
    /// exact `(host, port)` pairs named by `--resolve` (a `--resolve` entry opens its port for
    /// its own host, never for every host).
    fn connect_port_allowed(&self, host: &str, port: u16) -> bool {
        self.cfg.allowed_connect_ports.contains(&port)
            || self.upstream.resolve().lookup(host, port).is_some()
    }

    /// CONNECT host:port -> interception (`--mitm`, host not bypassed) or a blind tunnel.
    pub(super) async fn connect(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let slot = req.extensions_mut().remove::<ConnSlot>();
        if self.cfg.offline {
            return self.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::bypass(BypassReason::Tunnel).with_detail("offline"),
                "hoard is offline: tunnels are not opened\n",
            );
        }
        let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT needs host:port\n",
            );
        };
        // `+443` and `0443` would both be read as 443 (and match a `--resolve` entry for it).
        if let Err(why) = hostname::check_authority_port(&authority) {
            tracing::info!(%peer, %authority, reason = why.as_str(), "CONNECT port refused");
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-connect-host"),
                &format!(
                    "CONNECT needs a port of digits, without a sign or a leading zero: {why}\n"
                ),
            );
        }
        let (Some(port), Some(host)) = (req.uri().port_u16(), req.uri().host()) else {
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT needs host:port\n",
            );
        };
        // Before any tunnel or interception: a leaf is only ever made for a plain name.
        if let Err(why) = hostname::check_authority_host(host) {
            tracing::info!(%peer, %authority, reason = why.as_str(), "CONNECT host refused");
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-connect-host"),
                &format!("CONNECT needs a DNS name or an IP address (IPv6 in brackets): {why}\n"),
            );
        }
        let host = host.to_string();
        if !self.connect_port_allowed(&host, port) {
            return self.error(
                StatusCode::FORBIDDEN,
                CacheStatus::bypass(BypassReason::Refused).with_detail("port-not-allowed"),
                &format!(
                    "CONNECT to port {port} is not allowed for this host \
                     (allowed_connect_ports, or a resolve entry for it)\n"
                ),
            );
        }
        if let Some(m) = &self.mitm
            && !m.bypassed(&host)
        {
            // Origin connections are made per inner request, through the pooled client.
            mitm::serve(
                self.clone(),
                hyper::upgrade::on(req),
                host,
                port,
                peer,
                slot,
            );
            let mut res = Response::new(ProxyBody::Empty);
            self.stamp(
                &mut res,
                CacheStatus::bypass(BypassReason::Tunnel).with_detail("intercept"),
            );
            return res;
        }
        let origin = match tunnel::connect(
            &authority,
            &host,
            port,
            self.upstream.resolve(),
            self.cfg.connect_timeout,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => return self.upstream_error(&e, CacheStatus::bypass(BypassReason::Tunnel)),
        };
        tunnel::splice(
            hyper::upgrade::on(req),
            origin,
            authority,
            slot,
            self.cfg.tunnel_idle_timeout,
            self.cfg.shutdown_timeout,
        );
        let mut res = Response::new(ProxyBody::Empty);
        self.stamp(&mut res, CacheStatus::bypass(BypassReason::Tunnel));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::has_dot_segment;

    #[test]
    fn dot_segments_literal_or_encoded() {
        let cases = [
            ("/a/b", false),
            ("/", false),
            ("/..", true),
            ("/../admin", true),
            ("/x/./y", true),
            ("/x/%2e%2e/y", true),
            ("/x/%2E%2e", true),
            ("/x/.%2e/y", true),
            ("/x/...", false),
            ("/x/..a/y", false),
            ("/x/a..", false),
            ("/x?q=/../", false),
        ];
        for (pq, want) in cases {
            assert_eq!(has_dot_segment(pq), want, "{pq}");
        }
    }
}
