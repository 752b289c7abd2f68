//! Load client for `benches/stampede.sh`: `--connections` keep-alive HTTP/1.1 connections GET
//! one URL for `--duration-s` seconds and record, per request, its start time and latency
//! (wrk's Lua API gives no per-request latency, which this split needs). Afterwards it reads
//! the origin's request times (`slow_origin`'s `/__fetches`) and classifies each request as
//! "during expiry" when it started within `--window-ms` before an origin fetch and up to
//! `--delay-ms + --window-ms` after it, else "steady". An origin fetch that starts while the
//! previous one is still in flight (within `--delay-ms` of it) belongs to the same expiry: the
//! largest such group is the herd size. The last line is tab-separated for the script:
//! `RESULT label fetches seconds expiries fetches/expiry max-in-one-expiry p99-steady-ms
//! p99-expiry-ms ratio requests errors`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn addr_of(uri: &Uri) -> SocketAddr {
    let host = uri.host().expect("URL host");
    let port = uri.port_u16().unwrap_or(80);
    format!("{host}:{port}")
        .parse()
        .expect("URL must name IP:port")
}

/// (start, Unix µs; latency, µs)
type Rec = (u64, u64);

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;

async fn worker(uri: Uri, deadline: Instant) -> (Vec<Rec>, usize) {
    let addr = addr_of(&uri);
    let host = uri.authority().expect("authority").to_string();
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let (mut recs, mut errors) = (Vec::new(), 0);
    'connect: while Instant::now() < deadline && recs.len() < MAX_REQUESTS_PER_CONNECTION {
        let Ok(stream) = TcpStream::connect(addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline && recs.len() < MAX_REQUESTS_PER_CONNECTION {
            let req = Request::get(path.as_str())
                .header(http::header::HOST, host.as_str())
                .body(Empty::<Bytes>::new())
                .expect("request");
            let (wall, t0) = (unix_us(), Instant::now());
            let res = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let res = sender.send_request(req).await.ok()?;
                let ok =
                    res.status().is_success() || res.status() == http::StatusCode::NOT_MODIFIED;
                let body = res.into_body().collect().await.ok()?;
                (ok && !body.to_bytes().is_empty()).then_some(())
            })
            .await;
            match res {
                Ok(Some(())) => recs.push((wall, t0.elapsed().as_micros() as u64)),
                _ => {
                    errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    (recs, errors)
}

async fn get_text(base: &Uri, path: &str) -> String {
    let stream = TcpStream::connect(addr_of(base))
        .await
        .expect("connect to origin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("origin handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, base.authority().unwrap().as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.expect("origin answers");
    let body = res
        .into_body()
        .collect()
        .await
        .expect("origin body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn p99_ms(v: &mut [u64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64) * 0.99).ceil() as usize;
    v[i.saturating_sub(1).min(v.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let uri: Uri = arg("--url", "http://127.0.0.1:8080/hot")
        .parse()
        .expect("--url");
    let origin: Uri = arg("--origin", "http://127.0.0.1:8081")
        .parse()
        .expect("--origin");
    let label = arg("--label", "run");
    let connections: usize = arg("--connections", "1000").parse().expect("--connections");
    let duration = Duration::from_secs(arg("--duration-s", "20").parse().expect("--duration-s"));
    let delay_us = 1000 * arg("--delay-ms", "100").parse::<u64>().expect("--delay-ms");
    let window_us = 1000
        * arg("--window-ms", "100")
            .parse::<u64>()
            .expect("--window-ms");

    let (start, deadline) = (unix_us(), Instant::now() + duration);
    let out = Arc::new(Mutex::new((Vec::<Rec>::new(), 0usize)));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (uri, out) = (uri.clone(), out.clone());
            tokio::spawn(async move {
                let (recs, errors) = worker(uri, deadline).await;
                let mut o = out.lock().unwrap();
                o.0.extend(recs);
                o.1 += errors;
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let end = unix_us();
    let (recs, errors) = std::mem::take(&mut *out.lock().unwrap());

    let mut fetches: Vec<u64> = get_text(&origin, "/__fetches")
        .await
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .map(|ms| ms * 1000)
        .filter(|t| (start..end).contains(t))
        .collect();
    fetches.sort_unstable();
    let mut expiries: Vec<Vec<u64>> = Vec::new();
    for &f in &fetches {
        match expiries.last_mut() {
            // Started while the previous fetch was still in flight: the same expiry (a herd).
            Some(c) if f - c[c.len() - 1] < delay_us => c.push(f),
            _ => expiries.push(vec![f]),
        }
    }
    let max_in_one = expiries.iter().map(Vec::len).max().unwrap_or(0);
    let (mut steady, mut during) = (Vec::new(), Vec::new());
    for &(t, lat) in &recs {
        let near = fetches
            .iter()
            .any(|&f| t + window_us >= f && t <= f + delay_us + window_us);
        if near {
            during.push(lat)
        } else {
            steady.push(lat)
        }
    }
    let seconds = (end - start) as f64 / 1e6;
    let per_expiry = fetches.len() as f64 / expiries.len().max(1) as f64;
    let (p_steady, p_during) = (p99_ms(&mut steady), p99_ms(&mut during));
    println!(
        "{label}: {} requests ({:.0}/s), {errors} errors; {} origin fetches in {seconds:.1} s over {} expiries \
         ({per_expiry:.2}/expiry, max {max_in_one}); p99 steady {p_steady:.1} ms ({} req), \
         p99 during expiry {p_during:.1} ms ({} req), ratio {:.2}",
        recs.len(),
        recs.len() as f64 / seconds,
        fetches.len(),
        expiries.len(),
        steady.len(),
        during.len(),
        p_during / p_steady
    );
    println!(
        "RESULT\t{label}\t{}\t{seconds:.1}\t{}\t{per_expiry:.2}\t{max_in_one}\t{p_steady:.1}\t{p_during:.1}\t{:.2}\t{}\t{errors}",
        fetches.len(),
        expiries.len(),
        p_during / p_steady,
        recs.len()
    );
}
