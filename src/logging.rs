//! Logging set-up for the binary: one `tracing` subscriber, log lines on stderr (text or JSON),
//! access lines (target `hoard::access`) inline, off, or through the access log's writer:
//! formatted by `access_line` without tracing, or by a fmt layer when they carry colours.
//!
//! Invariant: installed once, by `main.rs`, before anything logs; the library itself only
//! emits events.

use crate::access_line;
use crate::access_log::{self, AccessLog};
use crate::config::LogFormat;

/// Where access lines (target `hoard::access`) go.
#[derive(Debug)]
pub enum Access {
    /// With the other log lines, on stderr, written by the thread that logs (subcommands).
    Inline,
    /// Nowhere (`--access-log off`).
    Off,
    /// Through the access log's writer thread (`serve`); `true` when it writes to stderr.
    Writer(AccessLog, bool),
}

/// One fmt layer in the chosen format (also the reference of `access_line`'s tests and bench).
pub fn fmt_layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let l = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => l.boxed(),
        LogFormat::Json => l.json().flatten_event(true).boxed(),
    }
}

/// Install the global subscriber: `RUST_LOG`, else `base` raised by `-v`/`-vv` or lowered by
/// `--quiet`; log lines on stderr, access lines where `access` says.
pub fn init(quiet: bool, verbose: u8, format: LogFormat, base: &str, access: Access) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => base,
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let inline = matches!(access, Access::Inline);
    let stderr = fmt_layer(format, ansi, std::io::stderr).with_filter(filter_fn(move |m| {
        inline || m.target() != access_log::TARGET
    }));
    let access = match access {
        // Coloured lines on a terminal: the fmt layer writes them (colours are its format).
        Access::Writer(w, true) if ansi => Some(
            fmt_layer(format, true, w).with_filter(filter_fn(|m| m.target() == access_log::TARGET)),
        ),
        // Plain lines: formatted by hand, no tracing event, when the filter lets them through.
        Access::Writer(w, _) => {
            if access_enabled(filter()) {
                access_line::install(w, format);
            }
            None
        }
        Access::Inline | Access::Off => None,
    };
    tracing_subscriber::registry()
        .with(filter())
        .with(stderr)
        .with(access)
        .init();
}

/// Whether `filter` lets `hoard::access` lines through at INFO (decided once: the filter
/// never changes while hoard runs).
fn access_enabled(filter: tracing_subscriber::EnvFilter) -> bool {
    use tracing_subscriber::layer::SubscriberExt as _;
    let probe = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(
        probe,
        || tracing::enabled!(target: access_log::TARGET, tracing::Level::INFO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_on_where_the_filter_lets_info_of_their_target_through() {
        for (directives, on) in [
            ("info", true),
            ("debug", true),
            ("warn", false),
            ("off", false),
            ("warn,hoard::access=info", true),
            ("info,hoard::access=warn", false),
            ("hoard=debug", true),
            ("hoard::proxy=debug", false),
        ] {
            let filter = tracing_subscriber::EnvFilter::new(directives);
            assert_eq!(access_enabled(filter), on, "{directives}");
        }
    }
}
