//! The options of `hoard serve`, each declared once: doc text (for `--help` and the field docs),
//! the `ProxyConfig` field and its type, the file key (also the flag; the variable is `HOARD_`
//! and the key in upper case), the default, the parser (`parse.rs`) and how `hoard config`
//! prints it (`show.rs`). Everything else is generated from this table (`table.rs`).
//!
//! The order is the order of `hoard config`. Adding an option is adding a row here (and a key
//! in `config/hoard.toml` and a row in README's option table: the tests below insist).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::Kind::{List, Switch};
use super::proxy::default_random;
use super::table::options_table;
use super::{ConfigError, ConfigFile, EffectiveRule, Given, IpNet, LogFormat};
use crate::access_log::Destination;
use crate::entries::shared::config::ClientIdentity;
use crate::http_cache::{ForwardingHeaders, Rule};
use crate::runtime::Scheduler;
use crate::store::EvictionPolicy;

options_table! {
    options {
        /// Address to listen on.
        listen: SocketAddr {
            key: "listen", default: "127.0.0.1:3128", parse: socket_addr, show: given => String,
        }
        /// Cache directory (SQLite index and value files), shared safely by several processes;
        /// by default $XDG_CACHE_HOME/hoard, else ~/.cache/hoard.
        cache_dir: PathBuf {
            key: "cache-dir", default: super::default_cache_dir().display().to_string(),
            parse: path, show: given => String,
        }
        /// Gateway mode: send origin-form requests to this base URL (http:// or https://).
        upstream: Option<http::Uri> {
            key: "upstream", default: "", parse: upstream, show: given_if_set => Option<String>,
        }
        /// Store size limit, e.g. 1GiB, 500MB.
        size_limit: u64 {
            key: "size-limit", default: "1GiB", parse: size, show: given => String,
        }
        /// Eviction policy: least-recently-used, least-recently-stored, least-frequently-used,
        /// none.
        eviction_policy: EvictionPolicy {
            key: "eviction-policy", default: "least-recently-used", parse: eviction_policy,
            show: given => String,
        }
        /// Larger responses stream through uncached.
        max_object_size: u64 {
            key: "max-object-size", default: "256MiB", parse: size, show: given => String,
        }
        /// Count store hits and misses, shown by `hoard stats` (true/false).
        statistics: bool {
            key: "statistics", default: "true", parse: boolean, show: value => bool,
        }
        /// XFetch beta: how early hot entries are refreshed in the background before they
        /// expire (0 disables; 1 is the standard setting; larger refreshes earlier).
        xfetch_beta: f64 {
            key: "xfetch-beta", default: "1", parse: nonnegative, show: value => f64,
        }
        /// Serve stale entries for this long when the origin fails and the response named no
        /// stale-if-error window (RFC 5861); off disables.
        stale_if_error: Option<Duration> {
            key: "stale-if-error", default: "off", parse: off_or_duration, show: given => String,
        }
        /// Serve a stale entry for up to this long past its expiry while one background
        /// revalidation runs, when the response named no stale-while-revalidate window (like
        /// nginx's `proxy_cache_use_stale updating`; beyond what RFC 9111 lets a cache do on its
        /// own, so off by default; never for must-revalidate / no-cache responses).
        stale_while_revalidate: Option<Duration> {
            key: "stale-while-revalidate", default: "off", parse: off_or_duration,
            show: given => String,
        }
        /// Never contact an origin: answer from the cache whatever the age, 504 on a miss
        /// (`--offline` or `--offline=false`).
        offline: bool {
            key: "offline", default: "false", parse: boolean, show: value => bool, arg: Switch,
        }
        /// Time allowed to connect to an origin: TCP connect and, for https origins, the TLS
        /// handshake (exceeded: 504).
        connect_timeout: Duration {
            key: "connect-timeout", default: "10s", parse: duration, show: given => String,
        }
        /// Time allowed for an origin's response headers, counted from the end of the request
        /// body forwarded (from the send without one), and between body chunks (exceeded: 504).
        response_timeout: Duration {
            key: "response-timeout", default: "60s", parse: duration, show: given => String,
        }
        /// Time allowed for a client to send its request headers.
        header_timeout: Duration {
            key: "header-timeout", default: "30s", parse: duration, show: given => String,
        }
        /// Close client connections idle (no request in flight, no bytes moving) this long
        /// (HTTP/1 keep-alive and HTTP/2 alike); cut a request body with no byte coming this
        /// long (408).
        idle_timeout: Duration {
            key: "idle-timeout", default: "60s", parse: nonzero_duration, show: given => String,
        }
        /// Close CONNECT tunnels (both sides) with no bytes moving either way this long.
        tunnel_idle_timeout: Duration {
            key: "tunnel-idle-timeout", default: "10m", parse: nonzero_duration,
            show: given => String,
        }
        /// Time allowed for a whole origin response body after its head, so an origin that
        /// trickles cannot hold a client forever; off: only the per-chunk response timeout.
        body_timeout: Option<Duration> {
            key: "body-timeout", default: "10m", parse: off_or_duration, show: given => String,
        }
        /// How long concurrent requests for one URL wait for the first one's fetch.
        lock_timeout: Duration {
            key: "lock-timeout", default: "5s", parse: duration, show: given => String,
        }
        /// How long in-flight requests may run after a shutdown signal.
        shutdown_timeout: Duration {
            key: "shutdown-timeout", default: "10s", parse: duration, show: given => String,
        }
        /// Maximum simultaneous client connections (lowered to what `ulimit -n` carries); at the
        /// limit, connections waiting for a request give their slot to new clients, and the
        /// excess is refused when every connection has a request in flight.
        max_connections: usize {
            key: "max-connections", default: "10000", parse: count, show: value => usize,
        }
        /// Largest request header block accepted (larger: 431).
        max_header_size: usize {
            key: "max-header-size", default: "64KiB", parse: bytes, show: given => String,
        }
        /// Memory for hot entries in front of the store (decoded, or packed once full), 0
        /// disables.
        memory_cache_size: usize {
            key: "memory-cache-size", default: "512MiB", parse: bytes, show: given => String,
        }
        /// Longest a row held in memory is used before re-reading the store when the store
        /// cannot tell changes (btrfs/ZFS, or cache.gen not writable); otherwise writes by
        /// hoard processes are seen at once and a row is used for up to max(this, 10m).
        memory_cache_ttl: Duration {
            key: "memory-cache-ttl", default: "1s", parse: duration, show: given => String,
        }
        /// Name used in Via headers (and loop detection).
        pseudonym: String {
            key: "pseudonym", default: "hoard", parse: token, show: value => String,
        }
        /// Client-sent Forwarded / X-Forwarded-* / X-Original-URL fields: strip (removed before
        /// caching) or pass (forwarded; such requests bypass the cache).
        forwarding_headers: ForwardingHeaders {
            key: "forwarding-headers", default: "strip", parse: forwarding,
            show: forwarding => String,
        }
        /// Store a POST response whose Content-Location names the POST's own URI (with explicit
        /// freshness) as that URI's GET response, as RFC 9110 9.3.3 allows (true/false); false:
        /// one client's POST never decides what other clients GET.
        store_post_responses: bool {
            key: "store-post-responses", default: "true", parse: boolean, show: value => bool,
        }
        /// Clients allowed to send PURGE, comma-separated IPs or networks; empty: nobody.
        purge_allow: Vec<IpNet> {
            key: "purge-allow", default: "127.0.0.0/8,::1", parse: ip_list,
            show: each => Vec<String>,
        }
        /// Clients allowed to use the proxy, comma-separated IPs or networks; others get 403.
        allow: Vec<IpNet> {
            key: "allow", default: "127.0.0.0/8,::1", parse: ip_list, show: each => Vec<String>,
        }
        /// Require Proxy-Authorization: Basic with one of these comma-separated user:password
        /// pairs; empty: no authentication.
        proxy_auth: Vec<String> {
            key: "proxy-auth", default: "", parse: credentials, show: redacted => Vec<String>,
        }
        /// Admin server address for /metrics and /healthz, e.g. 127.0.0.1:3129; off: disabled.
        admin: Option<SocketAddr> {
            key: "admin", default: "off", parse: admin, show: given_if_set => Option<String>,
        }
        /// Clients the admin server answers, comma-separated IPs or networks; others are
        /// closed unanswered.
        admin_allow: Vec<IpNet> {
            key: "admin-allow", default: "127.0.0.0/8,::1", parse: ip_list,
            show: each => Vec<String>,
        }
        /// Host names the admin server answers besides IP literals, localhost and *.localhost,
        /// repeatable or comma-separated; any other Host gets 421 (DNS-rebinding defence;
        /// /healthz excepted).
        admin_hosts: Vec<String> {
            key: "admin-hosts", default: "", parse: list, show: value => Vec<String>,
            arg: List { value_name: "NAME" },
        }
        /// Where the access lines go: a file (appended to, created 0600, reopened on SIGHUP),
        /// stderr (or -), or off; written by a thread of their own, never blocking a request.
        access_log: Destination {
            key: "access-log", default: "stderr", parse: access_log, show: given => String,
        }
        /// Threads serving connections; auto: the CPUs hoard may run on (honours taskset and
        /// cgroup limits); one is a single-threaded runtime. Use 1 when hoard is pinned to one
        /// core.
        threads: Option<NonZeroUsize> {
            key: "threads", default: "auto", parse: threads, show: given => String,
        }
        /// How several threads share connections: per-core (a single-threaded runtime per
        /// thread, each accepting on its own SO_REUSEPORT listener; a connection stays on its
        /// thread) or work-stealing (one runtime whose workers share one listener).
        scheduler: Scheduler {
            key: "scheduler", default: "per-core", parse: scheduler, show: value => Scheduler,
        }
        /// After a request, a single-threaded runtime (one thread, or each per-core thread)
        /// polls its sockets without sleeping this long, so a client's next request is read
        /// without waking an idle CPU (lower latency, more CPU while clients are active;
        /// nothing while idle); 0: never.
        busy_poll: Duration {
            key: "busy-poll", default: "200us", parse: duration, show: given => String,
        }
        /// Log format: text or json.
        log_format: LogFormat {
            key: "log-format", default: "text", parse: log_format, show: value => LogFormat,
        }
        /// Intercept CONNECT (HTTPS) with hoard's CA so HTTPS responses are cached too
        /// (`--mitm` or `--mitm=false`).
        mitm: bool {
            key: "mitm", default: "false", parse: boolean, show: value => bool, arg: Switch,
        }
        /// Host pattern never intercepted, always tunnelled (`host`, `*.domain`: the domain and
        /// every name under it); repeatable or comma-separated.
        mitm_bypass: Vec<String> {
            key: "mitm-bypass", default: "", parse: list, show: value => Vec<String>,
            arg: List { value_name: "PATTERN" },
        }
        /// Directory of the interception CA, created there if absent; by default `<cache-dir>/ca`.
        ca_dir: Option<PathBuf> {
            key: "ca-dir", default: "", parse: optional_path,
            show: given_if_set => Option<String>,
        }
        /// PEM file of CA certificates trusted for origins besides the webpki roots; repeatable.
        extra_ca_files: Vec<PathBuf> {
            key: "extra-ca-files", default: "", parse: paths, show: items => Vec<String>,
            arg: List { value_name: "PEM" }, flag: "extra-ca-file",
        }
        /// Do not verify origin TLS certificates (dangerous).
        insecure_upstream: bool {
            key: "insecure-upstream", default: "false", parse: boolean, show: value => bool,
            arg: Switch,
        }
        /// Connect to ADDR for HOST:PORT, like curl's --resolve; repeatable.
        resolve: Vec<(String, u16, IpAddr)> {
            key: "resolve", default: "", parse: resolve, show: items => Vec<String>,
            arg: List { value_name: "HOST:PORT:ADDR" },
        }
        /// Ports CONNECT may reach for any host, comma-separated; a --resolve entry also opens
        /// its own HOST:PORT.
        allowed_connect_ports: Vec<u16> {
            key: "allowed-connect-ports", default: "443", parse: ports, show: each => Vec<String>,
        }
        /// Shared tier across machines: redis://[user:pass@]host:port[/db], rediss://...,
        /// redis+cluster://h1:p1,h2:p2,...; off: none.
        shared: Option<String> {
            key: "shared", default: "off", parse: shared_url,
            show: shared_url => Option<String>,
        }
        /// Prefix of every shared-tier key and channel (several fleets can share one Redis).
        shared_prefix: String {
            key: "shared-prefix", default: "hoard:", parse: shared_prefix, show: value => String,
        }
        /// Responses larger than this stay in the local tier only.
        shared_max_object_size: u64 {
            key: "shared-max-object-size", default: "8MiB", parse: size, show: given => String,
        }
        /// Bound on every shared-tier (Redis) operation; past it the tier is a miss.
        shared_timeout: Duration {
            key: "shared-timeout", default: "50ms", parse: nonzero_duration,
            show: given => String,
        }
        /// PEM file of CA certificates trusted for rediss:// besides the system's roots.
        shared_ca_file: Option<PathBuf> {
            key: "shared-ca-file", default: "", parse: optional_path,
            show: given_if_set => Option<String>,
        }
        /// PEM client certificate (chain) presented to a rediss:// server that asks for one
        /// (mutual TLS); goes with shared-key-file.
        shared_cert_file: Option<PathBuf> {
            key: "shared-cert-file", default: "", parse: optional_path,
            show: given_if_set => Option<String>,
        }
        /// PEM private key of shared-cert-file.
        shared_key_file: Option<PathBuf> {
            key: "shared-key-file", default: "", parse: optional_path,
            show: given_if_set => Option<String>,
        }
        /// File of the fleet's secret (at least 16 bytes; one trailing newline ignored): every
        /// shared-tier row and invalidation is sealed with HMAC-SHA256 under it, and one that
        /// does not verify is never used. Give every hoard of the fleet the same file.
        shared_secret_file: Option<PathBuf> {
            key: "shared-secret-file", default: "", parse: optional_path,
            show: given_if_set => Option<String>,
        }
    }
    more {
        /// Intercepted hosts whose leaf certificates are kept in memory.
        mitm_cert_cache_size: usize = 1024,
        /// Uniform random numbers in (0, 1] for XFetch; injectable so tests are exact.
        random: fn() -> f64 = default_random,
        /// Development-caching rules (`[[rules]]` of the file), first match wins.
        rules: Vec<Rule> = Vec::new(),
    }
}

/// Layer `given` (flags and `HOARD_*` variables) over `file` over the defaults, validate, and
/// render the result for `hoard config`; the rules come from the file.
pub fn resolve(
    given: &Given,
    file: Option<&ConfigFile>,
) -> Result<(ProxyConfig, Effective), ConfigError> {
    let (mut proxy, mut effective) = layer(given, file)?;
    let (cert, key) = (&proxy.shared_cert_file, &proxy.shared_key_file);
    ClientIdentity::from_pair(cert.clone(), key.clone()).map_err(|e| ConfigError::Value {
        key: "shared-cert-file",
        reason: e.to_string(),
    })?;
    proxy.rules = file.map(|f| f.rules.clone()).unwrap_or_default();
    effective.rules = proxy.rules.iter().map(EffectiveRule::from).collect();
    Ok((proxy, effective))
}

/// The table's defaults, for [`ProxyConfig::new`].
pub(super) fn defaults() -> ProxyConfig {
    match layer(&Given::default(), None) {
        Ok((proxy, _)) => proxy,
        Err(e) => unreachable!("the option table's defaults are valid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn rows_are_consistent() {
        let mut seen = BTreeSet::new();
        for o in OPTIONS {
            assert!(seen.insert(o.key), "{} declared twice", o.key);
            assert_eq!(o.field.replace('_', "-"), o.key, "field and key differ");
            let env = format!("HOARD_{}", o.key.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(o.env, env);
            assert!(!o.doc.is_empty(), "{} has no doc", o.key);
        }
        assert_eq!(FILE_KEYS, OPTIONS.iter().map(|o| o.key).collect::<Vec<_>>());
    }

    #[test]
    fn shared_cert_and_key_go_together() {
        let f = |text: &str| ConfigFile::parse(std::path::Path::new("/etc/h.toml"), text).unwrap();
        let both = f("shared-cert-file = \"/c.pem\"\nshared-key-file = \"/k.pem\"\n");
        let (c, _) = resolve(&Given::default(), Some(&both)).unwrap();
        assert_eq!(c.shared_cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.shared_key_file, Some(PathBuf::from("/k.pem")));
        for half in [
            "shared-cert-file = \"/c.pem\"\n",
            "shared-key-file = \"/k.pem\"\n",
        ] {
            let e = resolve(&Given::default(), Some(&f(half))).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Value { key: "shared-cert-file", reason }
                    if reason.contains("both or neither")),
                "{e}"
            );
        }
    }

    #[test]
    fn every_default_parses() {
        let (c, e) = layer(&Given::default(), None).unwrap();
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(600));
        assert_eq!(e.tunnel_idle_timeout, "10m");
    }

    /// The keys `config/hoard.toml` sets or shows commented out, before its `[[rules]]` part.
    fn shipped_file_keys() -> Vec<String> {
        let text = include_str!("../../config/hoard.toml");
        let plain = text.split("[[rules]]").next().unwrap_or("");
        plain
            .lines()
            .filter_map(|l| {
                let l = l.strip_prefix('#').unwrap_or(l).trim_start();
                let (k, _) = l.split_once(" = ")?;
                let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
                ok.then(|| k.to_string())
            })
            .collect()
    }

    #[test]
    fn shipped_file_has_every_option_and_nothing_else() {
        let keys = shipped_file_keys();
        let set: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(
            set.len(),
            keys.len(),
            "a key twice in config/hoard.toml: {keys:?}"
        );
        let table: BTreeSet<&str> = FILE_KEYS.iter().copied().collect();
        assert_eq!(
            table.difference(&set).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "options missing from config/hoard.toml"
        );
        assert_eq!(
            set.difference(&table).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "keys of config/hoard.toml that are no option"
        );
    }

    /// (flag, env) of each `--flag` row of README's option table under "## Running".
    fn readme_rows() -> Vec<(String, String)> {
        let text = include_str!("../../README.md");
        let running = text.split("\n## Running").nth(1).unwrap_or("");
        let running = running.split("\n## ").next().unwrap_or("");
        running
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `--")?.split('|');
                let flag = cells.next()?;
                let flag = flag.split([' ', '[', '=', '`']).next()?.to_string();
                let env = cells.next()?.trim().trim_matches('`').to_string();
                Some((flag, env))
            })
            .collect()
    }

    #[test]
    fn readme_has_a_row_for_every_option_and_nothing_else() {
        let rows = readme_rows();
        for o in OPTIONS {
            assert!(
                rows.contains(&(o.flag.to_string(), o.env.to_string())),
                "README.md has no row `--{}` | `{}` in its option table",
                o.flag,
                o.env
            );
        }
        for (flag, _) in &rows {
            assert!(
                OPTIONS.iter().any(|o| o.flag == flag),
                "README.md documents --{flag}, which is no option"
            );
        }
    }
}
