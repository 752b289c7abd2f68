//! Test harness for the proxy: the in-process origins (from `tests/support`, re-exported here
//! under their old names), a raw HTTP/1.1
//! client for exact control over the bytes, proxy startup on a `TempDir` store, and a parser for
//! the `Cache-Status` header. Everything binds `127.0.0.1:0`; every read is bounded by a timeout.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use hoard::proxy::{ProxyConfig, Server, ServerHandle};

// The origin lives in `tests/support`; these names stay importable from here.
#[allow(unused_imports)]
pub use crate::support::{Body, Origin, Seen, full, reply};
use crate::support::{Listening, listen};

/// Upper bound for any single network wait in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A body of unknown length: hyper sends it with `Transfer-Encoding: chunked`.
pub fn chunked(chunks: Vec<Bytes>) -> Body {
    ChunkedBody(chunks.into()).boxed()
}

struct ChunkedBody(VecDeque<Bytes>);

impl HttpBody for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// An origin handler answering every request with `body` and `Cache-Control: max-age=60`.
pub fn max_age_60(
    body: impl Into<Bytes>,
) -> impl Fn(&Request<Bytes>) -> Response<Body> + Send + Sync + 'static {
    let body: Bytes = body.into();
    move |_| reply(200, &[("cache-control", "max-age=60")], body.clone())
}

/// The value of a request header, if present and valid UTF-8.
pub fn header<'a>(req: &'a Request<Bytes>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Deterministic, non-repeating-looking test bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 251) as u8).collect()
}

/// A TCP origin that answers each request head with exact bytes, for misbehaving origins.
pub struct RawOrigin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _listening: Listening,
}

impl RawOrigin {
    /// `respond` gets the request head and returns the bytes to write. With `close`, the
    /// connection is closed after each response; otherwise the next request is awaited.
    pub async fn start(
        close: bool,
        respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let respond = Arc::new(respond);
        let listening = listen({
            let hits = hits.clone();
            move |stream| {
                let (hits, respond) = (hits.clone(), respond.clone());
                async move {
                    let mut io = BufReader::new(stream);
                    while let Ok(head) = read_head_text(&mut io).await {
                        hits.fetch_add(1, Ordering::SeqCst);
                        if io.get_mut().write_all(&respond(&head)).await.is_err() || close {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        RawOrigin {
            addr: listening.addr,
            hits,
            _listening: listening,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads a request or response head (up to and including the blank line) as text.
async fn read_head_text(io: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
    }
}

/// A server that accepts connections and never answers; returns its address.
pub async fn silent_origin() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind silent origin");
    let addr = listener.local_addr().expect("silent origin addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// An address on which nothing listens: bound once, then released.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A TCP echo server.
pub async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, task)
}

/// Starts a proxy on a fresh `TempDir` store. `upstream: None` is forward-proxy mode.
pub async fn start_proxy(upstream: Option<SocketAddr>) -> (ServerHandle, SocketAddr, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let (handle, addr) = start_proxy_in(dir.path(), upstream, |_| {}).await;
    (handle, addr, dir)
}

/// Starts a proxy on the store in `dir`; `tweak` adjusts the test defaults.
pub async fn start_proxy_in(
    dir: &Path,
    upstream: Option<SocketAddr>,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (ServerHandle, SocketAddr) {
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    cfg.upstream = upstream.map(|addr| format!("http://{addr}").parse().unwrap());
    cfg.max_object_size = 256 << 20;
    cfg.size_limit = 1 << 30;
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.response_timeout = Duration::from_secs(2);
    // The tests tunnel to ephemeral loopback ports (the default allows only 443).
    cfg.allowed_connect_ports = (1..=u16::MAX).collect();
    tweak(&mut cfg);
    let server = Server::bind(cfg).await.expect("proxy binds");
    let addr = server.local_addr();
    (server.spawn(), addr)
}

/// A reqwest client that sends every `http://` request through the proxy.
pub fn client_via(proxy: SocketAddr) -> reqwest::Client {
    // reqwest is built with `rustls-no-provider` (no aws-lc): it needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).expect("proxy url"))
        .timeout(IO_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// A response read off the wire by [`RawConn`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus::parse(&self.header_all("cache-status").join(", "))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection speaking raw HTTP/1.1.
pub struct RawConn {
    io: BufReader<TcpStream>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        RawConn {
            io: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        bounded(self.io.get_mut().write_all(bytes)).await
    }

    /// Reads a status line and header block.
    pub async fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let head = bounded(read_head_text(&mut self.io)).await?;
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok((status, headers))
    }

    /// Reads one response to a request with `method`, framing the body like a client must.
    pub async fn read_response(&mut self, method: &str) -> io::Result<RawResponse> {
        let (mut status, mut headers) = self.read_head().await?;
        while (100..200).contains(&status) && status != 101 {
            (status, headers) = self.read_head().await?;
        }
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        let is_chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if is_chunked {
            resp.body = bounded(read_chunked(&mut self.io)).await?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            resp.body = vec![0; len];
            bounded(self.io.read_exact(&mut resp.body)).await?;
        } else {
            bounded(self.io.read_to_end(&mut resp.body)).await?;
        }
        Ok(resp)
    }

    /// Sends `method target` with `headers` and reads the response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<RawResponse> {
        self.send(&request_text(method, target, headers, b""))
            .await?;
        self.read_response(method).await
    }

    /// A connection from its buffered stream (after [`RawConn::into_io`]).
    pub fn from_io(io: BufReader<TcpStream>) -> Self {
        RawConn { io }
    }

    /// The buffered connection, e.g. to split a tunnel into its two directions.
    pub fn into_io(self) -> BufReader<TcpStream> {
        self.io
    }

    /// Reads until the peer closes the connection.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        bounded(self.io.read_to_end(&mut rest)).await?;
        Ok(rest)
    }

    /// Reads exactly `n` bytes (tunnel payloads).
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        bounded(self.io.read_exact(&mut buf)).await?;
        Ok(buf)
    }
}

async fn read_chunked(io: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            read_head_text(io).await?; // trailers and the final blank line
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        io.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        io.read_exact(&mut crlf).await?;
    }
}

async fn bounded<T>(fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer within IO_TIMEOUT",
        )),
    }
}

/// The bytes of an HTTP/1.1 request. `Host` comes from an absolute-form target unless given.
pub fn request_text(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        let host = target
            .strip_prefix("http://")
            .map_or("localhost", |rest| rest.split('/').next().unwrap_or(rest));
        text.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection; panics on I/O errors.
pub async fn send(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    RawConn::connect(proxy)
        .await
        .request(method, target, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {target} through the proxy: {e}"))
}

/// `GET target` on a fresh connection.
pub async fn get(proxy: SocketAddr, target: &str) -> RawResponse {
    send(proxy, "GET", target, &[]).await
}

/// `GET target` to populate the cache, then [`wait_stored`].
pub async fn fill(proxy: SocketAddr, target: &str) -> RawResponse {
    let resp = get(proxy, target).await;
    wait_stored(proxy, target).await;
    resp
}

/// Waits (bounded) until `target` is served by `only-if-cached`. The client may hold the whole
/// body before the fill commits, and requests that do not wait on the in-flight fill would
/// otherwise race it. Needs an entry that is fresh or servable with `max-stale`.
pub async fn wait_stored(proxy: SocketAddr, target: &str) {
    wait_stored_with(proxy, target, &[]).await
}

/// [`wait_stored`] for the variant of the request fields `headers` (a Vary'd response).
pub async fn wait_stored_with(proxy: SocketAddr, target: &str, headers: &[(&str, &str)]) {
    let mut probe = vec![("Cache-Control", "only-if-cached, max-stale=3600")];
    probe.extend_from_slice(headers);
    for _ in 0..200 {
        if send(proxy, "GET", target, &probe).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{target} was not stored within 2 s");
}

/// `POST target` with `body` on a fresh connection.
pub async fn post(proxy: SocketAddr, target: &str, body: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(proxy).await;
    conn.send(&request_text("POST", target, &[], body))
        .await
        .expect("send POST");
    conn.read_response("POST").await.expect("POST response")
}

/// The `hoard` member of a `Cache-Status` header (RFC 9211), reduced to its stable parts.
#[derive(Clone, Debug, Default)]
pub struct CacheStatus {
    pub raw: String,
    pub hit: bool,
    pub fwd: Option<String>,
    pub fwd_status: Option<u16>,
    pub stored: bool,
    pub ttl: Option<i64>,
}

impl CacheStatus {
    /// Parses the last member named `hoard` (the cache closest to the client comes last).
    pub fn parse(value: &str) -> Self {
        let mut status = CacheStatus {
            raw: value.to_owned(),
            ..Default::default()
        };
        let Some(member) = value.split(',').rev().find(|m| {
            m.split(';')
                .next()
                .is_some_and(|name| name.trim() == "hoard")
        }) else {
            return status;
        };
        for param in member.split(';').skip(1) {
            let (key, val) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (param.trim(), None),
            };
            match key {
                "hit" => status.hit = true,
                "stored" => status.stored = true,
                "fwd" => status.fwd = val.map(str::to_owned),
                "fwd-status" => status.fwd_status = val.and_then(|v| v.parse().ok()),
                "ttl" => status.ttl = val.and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        status
    }

    pub fn from_headers(headers: &HeaderMap) -> Self {
        let values: Vec<&str> = headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Self::parse(&values.join(", "))
    }

    /// True when the header has a `hoard` member at all.
    pub fn present(&self) -> bool {
        self.raw.contains("hoard")
    }

    #[track_caller]
    pub fn assert_hit(&self) {
        assert!(
            self.hit && self.fwd.is_none(),
            "expected a hit, Cache-Status: {:?}",
            self.raw
        );
    }

    /// Asserts the response was forwarded for reason `fwd` (e.g. "miss", "stale").
    #[track_caller]
    pub fn assert_fwd(&self, fwd: &str) {
        assert!(
            !self.hit && self.fwd.as_deref() == Some(fwd),
            "expected fwd={fwd}, Cache-Status: {:?}",
            self.raw
        );
    }

    /// Asserts a cold miss: `fwd=uri-miss` (nothing stored under the URI) or plain `fwd=miss`.
    #[track_caller]
    pub fn assert_miss(&self) {
        assert!(
            !self.hit && matches!(self.fwd.as_deref(), Some("miss" | "uri-miss")),
            "expected fwd=miss or fwd=uri-miss, Cache-Status: {:?}",
            self.raw
        );
    }

    #[track_caller]
    pub fn assert_stored(&self) {
        assert!(
            self.stored,
            "expected `stored`, Cache-Status: {:?}",
            self.raw
        );
    }

    #[track_caller]
    pub fn assert_not_hit(&self) {
        assert!(!self.hit, "expected no hit, Cache-Status: {:?}", self.raw);
    }
}

/// Starts the real `hoard` binary with `args` (which should include `--listen 127.0.0.1:0`)
/// and returns it with the address it printed (`hoard: listening on ADDR ...` on stderr).
/// The child is killed when dropped; its further stderr is drained.
pub async fn spawn_hoard<I, S>(args: I) -> (tokio::process::Child, SocketAddr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    spawn_hoard_until(args, "`listening on ADDR`", |line| {
        line.split_once("listening on ")?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
    .await
}

/// Like [`spawn_hoard`], returning the first address `find` reads from a stderr line (`what`
/// names it in the failure message).
pub async fn spawn_hoard_until<I, S>(
    args: I,
    what: &str,
    find: impl Fn(&str) -> Option<SocketAddr>,
) -> (tokio::process::Child, SocketAddr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoard"));
    cmd.args(args);
    spawn_hoard_command(cmd, what, find).await
}

/// The admin server's address in hoard's `admin on http://ADDR/ ...` start-up line.
pub fn admin_address(line: &str) -> Option<SocketAddr> {
    line.split_once("admin on http://")?
        .1
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Like [`spawn_hoard_until`], for a command of the caller's (e.g. hoard under a shell that
/// lowers a limit first); `find` sees every stderr line until it returns an address.
pub async fn spawn_hoard_command(
    mut cmd: tokio::process::Command,
    what: &str,
    find: impl Fn(&str) -> Option<SocketAddr>,
) -> (tokio::process::Child, SocketAddr) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hoard");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let addr = tokio::time::timeout(IO_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = find(&line) {
                return Some(a);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("hoard prints {what} to stderr"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// An HTTP/2 (prior knowledge) connection to `proxy` that has done `GET path` and read the
/// answer, expected to be `200 ok`; returns the connection's task, which ends when the
/// proxy closes the connection.
pub async fn h2_connection_after_one_get(
    proxy: SocketAddr,
    path: &str,
) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = TcpStream::connect(proxy).await.expect("connect to proxy");
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{proxy}{path}"))
        .body(Empty::new())
        .expect("request");
    let res = tokio::time::timeout(IO_TIMEOUT, send.send_request(req))
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("h2 body").to_bytes();
    assert_eq!(&body[..], b"ok");
    conn
}
