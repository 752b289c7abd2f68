//! A slow origin for `benches/stampede.sh`: every response waits `--delay-ms`, carries
//! `Cache-Control: max-age=N` and an `ETag` that changes every second (304 when it matches).
//! It counts the requests it serves and records when each arrived; `GET /__count` returns the
//! count and `GET /__fetches` the arrival times (Unix milliseconds, one a line). On SIGTERM it
//! prints the count and exits.
//!
//! `cargo run --release --example slow_origin -- --listen 127.0.0.1:0 --delay-ms 100 --max-age 1`

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listen = arg("--listen", "127.0.0.1:0");
    let delay = Duration::from_millis(arg("--delay-ms", "100").parse().expect("--delay-ms"));
    let max_age: u64 = arg("--max-age", "1").parse().expect("--max-age");
    let listener = TcpListener::bind(&listen).await?;
    println!("slow_origin: listening on {}", listener.local_addr()?);
    let fetches = Arc::new(Mutex::new(Vec::<u64>::new()));
    let body = Bytes::from(vec![b'x'; 2048]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = term.recv() => break,
        };
        let (fetches, body) = (fetches.clone(), body.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (fetches, body) = (fetches.clone(), body.clone());
            async move {
                let text = |s: String| Response::new(Full::new(Bytes::from(s)));
                match req.uri().path() {
                    "/__count" => {
                        return Ok::<_, Infallible>(text(format!(
                            "{}\n",
                            fetches.lock().unwrap().len()
                        )));
                    }
                    "/__fetches" => {
                        let list = fetches
                            .lock()
                            .unwrap()
                            .iter()
                            .map(|t| format!("{t}\n"))
                            .collect();
                        return Ok(text(list));
                    }
                    _ => {}
                }
                fetches.lock().unwrap().push(unix_ms());
                tokio::time::sleep(delay).await;
                let etag = format!("\"{}\"", unix_ms() / 1000);
                let cc = format!("max-age={max_age}");
                let matches = req
                    .headers()
                    .get("if-none-match")
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes());
                let res = Response::builder()
                    .status(if matches {
                        StatusCode::NOT_MODIFIED
                    } else {
                        StatusCode::OK
                    })
                    .header("cache-control", cc)
                    .header("etag", etag)
                    .body(Full::new(if matches { Bytes::new() } else { body }))
                    .expect("response");
                Ok(res)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    println!("slow_origin: {} requests", fetches.lock().unwrap().len());
    Ok(())
}
