//! Criterion benchmark of formatting one access line on the request path (never timed
//! tests): `cargo bench --bench access_line`. Both ways then append the same bytes to the
//! access log (`AccessLog::push`, a `memcpy` under a mutex), left out here: the lines go to
//! `io::sink`.
//!
//! - `tracing_text`: the `hoard::access` event through a subscriber set up like `serve`'s
//!   before the direct writer (global default: `EnvFilter` `info`, a stderr fmt layer that
//!   rejects the target, the access fmt layer);
//! - `tracing_json`: the same in JSON (a thread-default subscriber);
//! - `direct_text` / `direct_json`: `access_line::format_line` into a reused buffer, with
//!   `SystemTime::now()` per line (what `access_line::emit` does before the push).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use hoard::access_line::{self, AccessLine, Clock};
use hoard::access_log;
use hoard::config::LogFormat;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;

fn bench(c: &mut Criterion) {
    let subscriber = |format| {
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(
                hoard::logging::fmt_layer(format, false, std::io::stderr)
                    .with_filter(filter_fn(|m| m.target() != access_log::TARGET)),
            )
            .with(
                hoard::logging::fmt_layer(format, false, std::io::sink)
                    .with_filter(filter_fn(|m| m.target() == access_log::TARGET)),
            )
    };
    tracing::subscriber::set_global_default(subscriber(LogFormat::Text)).unwrap();
    let method = http::Method::GET;
    let uri: http::Uri = "/1k".parse().unwrap();
    let line = AccessLine {
        peer: "127.0.0.1:44234".parse().unwrap(),
        method: &method,
        uri: &uri,
        status: 200,
        cache_status: "hoard; hit; ttl=3582",
        bytes: Some(1024),
        upstream_us: 0,
        intercepted: false,
        elapsed_us: 17,
    };
    let mut g = c.benchmark_group("access_line");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    g.bench_function("tracing_text", |b| {
        b.iter(|| access_line::event(black_box(&line)))
    });
    {
        let _json = tracing::subscriber::set_default(subscriber(LogFormat::Json));
        g.bench_function("tracing_json", |b| {
            b.iter(|| access_line::event(black_box(&line)))
        });
    }
    for (name, format) in [
        ("direct_text", LogFormat::Text),
        ("direct_json", LogFormat::Json),
    ] {
        let mut buf = Vec::new();
        let mut clock = Clock::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                access_line::format_line(
                    &mut buf,
                    &mut clock,
                    black_box(&line),
                    format,
                    SystemTime::now(),
                );
                black_box(&buf);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
