//! The `hoard` binary: parse the command line, validate the configuration, run.
//! Thin on purpose: everything it calls lives in the library; this file maps outcomes to
//! exit codes and renders reports.
//!
//! Exit codes: 0 success; 1 nothing found (purge, evict, show) or problems left (check);
//! 2 usage or configuration error (including a cache directory or CA another local account
//! could read the key of or replace: the files named by the configuration are unsafe);
//! 3 runtime failure.

use std::process::ExitCode;
use std::time::SystemTime;

use hoard::access_log::{self, Destination};
use hoard::cli::{CaCmd, Cli, Command, Resolved, ServeArgs, StoreArgs, TierChoice};
use hoard::config::{ConfigError, LogFormat};
use hoard::entries::shared::SharedConfig;
use hoard::logging;
use hoard::ops::{self, OpsError, Removed};
use hoard::proxy::Server;
use hoard::proxy::ca::CaError;
use serde::Serialize;

/// `println!` that ignores a closed stdout (`hoard ls | head`) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Success.
const OK: u8 = 0;
/// Nothing found, or problems left.
const NEGATIVE: u8 = 1;
/// Usage or configuration error.
const USAGE: u8 = 2;
/// Runtime failure.
const FAILURE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let code = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(a)) => serve(&a),
        Some(Command::Config(c)) => match c.serve.resolve() {
            Ok(r) => print_config(&r, c.json),
            Err(e) => config_error(&e),
        },
        Some(Command::Ca(c)) => run_ca(&c),
        Some(Command::Warm(w)) => {
            logging::init(false, 0, LogFormat::Text, "warn", logging::Access::Inline);
            run_warm(&w)
        }
        Some(cmd) => {
            logging::init(false, 0, LogFormat::Text, "warn", logging::Access::Inline);
            run_op(cmd)
        }
    };
    ExitCode::from(code)
}

/// `hoard ca`: create the CA if needed, print its path, PEM and how to trust it.
fn run_ca(c: &CaCmd) -> u8 {
    let dir = match c.resolve_ca_dir() {
        Ok(d) => d,
        Err(e) => return config_error(&e),
    };
    match hoard::proxy::ca::CertAuthority::load_or_create(&dir) {
        Ok(ca) => {
            out!("{}\n", ca.cert_path().display());
            out!("{}\n", ca.cert_pem().trim_end());
            out!(
                "{}",
                hoard::proxy::ca::trust_instructions(ca.cert_path()).trim_end()
            );
            OK
        }
        Err(e) => {
            eprintln!("hoard: {e}");
            match e {
                CaError::Unsafe(_) => USAGE,
                _ => FAILURE,
            }
        }
    }
}

fn config_error(e: &ConfigError) -> u8 {
    eprintln!("hoard: {e}");
    USAGE
}

fn print_config(r: &Resolved, json: bool) -> u8 {
    if json {
        return print_json(&r.effective);
    }
    match toml::to_string(&r.effective) {
        Ok(t) => {
            match &r.file {
                Some(f) => out!("# effective configuration (file: {})", f.display()),
                None => out!("# effective configuration (no configuration file)"),
            }
            out!("{}", t.trim_end());
            OK
        }
        Err(e) => {
            eprintln!("hoard: cannot render the configuration: {e}");
            FAILURE
        }
    }
}

fn print_json(v: &impl Serialize) -> u8 {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            out!("{s}");
            OK
        }
        Err(e) => {
            eprintln!("hoard: cannot render JSON: {e}");
            FAILURE
        }
    }
}

/// How often the proxy gives the heap's free pages back (`trim_heap_every`).
const HEAP_TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives glibc's free heap pages back to the kernel every `period`, on a thread of its own.
/// glibc returns memory freed in the middle of an arena only when asked (`malloc_trim`);
/// a proxy's arenas fill with buffers of connections and fills that come and go, so in
/// `benches/soak.sh` about a third of the RSS was free heap (issue 18). The allocator stays
/// glibc's: mimalloc gave no less CPU per hit and a higher RSS in the soak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap_every(period: std::time::Duration) {
    let trim = move || {
        loop {
            std::thread::sleep(period);
            // SAFETY: malloc_trim only gives free pages of glibc's arenas back to the kernel.
            unsafe { libc::malloc_trim(0) };
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(trim)
    {
        eprintln!("hoard: heap trimming not started: {e}");
    }
}

/// No `malloc_trim` outside glibc: nothing is done.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap_every(_period: std::time::Duration) {}

fn serve(args: &ServeArgs) -> u8 {
    let r = match args.resolve() {
        Ok(r) => r,
        Err(e) => return config_error(&e),
    };
    let dest = r.proxy.access_log.clone();
    // Kept until the end of `serve`: its drop writes the last access lines (after the
    // runtime, and with it every request, has ended).
    let started = match access_log::start(&dest) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hoard: cannot open the access log {dest:?}: {e}");
            return USAGE;
        }
    };
    let (access, reopener, _guard) = match started {
        Some(s) => (
            logging::Access::Writer(s.writer, dest == Destination::Stderr),
            s.reopener,
            Some(s.guard),
        ),
        None => (logging::Access::Off, None, None),
    };
    logging::init(args.quiet, args.verbose, r.log_format, "info", access);
    trim_heap_every(HEAP_TRIM_PERIOD);
    if let Err(code) = check_cache_dir(&r.proxy.cache_dir) {
        return code;
    }
    match run_proxy(r, reopener) {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            match e.downcast_ref::<hoard::proxy::ProxyError>() {
                Some(hoard::proxy::ProxyError::Ca(CaError::Unsafe(_))) => USAGE,
                _ => FAILURE,
            }
        }
    }
}

/// Refuses a cache directory another local account could replace (it, or a parent, is
/// writable by group/others or owned by another account than this one or root): exit 2.
/// Warns when others can read it; the directory's mode is the user's to change (`hoard
/// check --fix` narrows it).
fn check_cache_dir(dir: &std::path::Path) -> Result<(), u8> {
    let found = match hoard::store::exposure(dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot check who may access the cache directory");
            return Ok(());
        }
    };
    for e in &found {
        if e.is_replaceable() {
            eprintln!("hoard: refusing cache directory {}: {e}", dir.display());
            return Err(USAGE);
        }
    }
    for e in found {
        tracing::warn!(dir = %dir.display(), "cache directory exposed: {e}");
    }
    Ok(())
}

fn run_proxy(r: Resolved, reopener: Option<access_log::Reopener>) -> anyhow::Result<()> {
    let cfg = r.proxy;
    let busy_poll = cfg.busy_poll;
    let built = hoard::runtime::build(cfg.threads, cfg.scheduler, busy_poll)?;
    let (rt, flavor, siblings) = (built.runtime, built.flavor, built.siblings);
    let polling = match built.busy_poll {
        Some(_) => format!(", busy-poll {busy_poll:?}"),
        None => String::new(),
    };
    rt.block_on(async move {
        let dir = cfg.cache_dir.clone();
        // SIGHUP reopens a file access log (logrotate moves it, then signals). Registered
        // before "listening on" is printed; without a file, SIGHUP keeps its default effect.
        #[cfg(unix)]
        if let Some(reopener) = reopener {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = signal(SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reopening the access log");
                    reopener.reopen();
                }
            });
        }
        #[cfg(not(unix))]
        drop(reopener);
        let server = match siblings {
            Some(s) => Server::bind_per_core(cfg, s).await?,
            None => Server::bind(cfg).await?,
        };
        eprintln!(
            "hoard: listening on {} (cache {}; {flavor}{polling})",
            server.local_addr(),
            dir.display()
        );
        if let Some(a) = server.admin_addr() {
            eprintln!("hoard: admin on http://{a}/ (dashboard; /metrics, /healthz)");
        }
        server.run_until(shutdown_signal()).await;
        Ok(())
    })
}

fn store_of(a: &StoreArgs) -> Result<hoard::store::Cache, u8> {
    let dir = a.resolve_cache_dir().map_err(|e| config_error(&e))?;
    ops::open(&dir).map_err(|e| match e {
        OpsError::NoCache(_) => op_error(e),
        e => {
            eprintln!("hoard: cannot open cache directory {}: {e}", dir.display());
            FAILURE
        }
    })
}

fn op_error(e: OpsError) -> u8 {
    eprintln!("hoard: {e}");
    match e {
        OpsError::Url(..) => USAGE,
        OpsError::Store(_) | OpsError::NoCache(_) | OpsError::Served(_) => FAILURE,
    }
}

fn run_op(cmd: Command) -> u8 {
    let (store_args, json) = match &cmd {
        Command::Stats(c) => (&c.store, c.store.json),
        Command::Ls(c) => (&c.store, c.store.json),
        Command::Show(c) | Command::Purge(c) => (&c.store, c.store.json),
        Command::Evict(c) => (&c.store, c.store.json),
        Command::Expire(s) => (s, s.json),
        Command::Clear(c) => (&c.store, c.store.json),
        Command::Check(c) => (&c.store, c.store.json),
        Command::Export(c) => (&c.store, c.store.json),
        Command::Import(c) => (&c.store, c.store.json),
        Command::Serve(_) | Command::Config(_) | Command::Ca(_) | Command::Warm(_) => {
            unreachable!("handled in main")
        }
    };
    // `show` and `purge` find a URL under the key the proxy used: the config file's rules
    // (`ignore_query`) apply. The file also names the shared tier.
    let file = match hoard::config::load_file(store_args.config.as_deref()) {
        Ok(file) => file,
        Err(e) => return config_error(&e),
    };
    let tier = match &cmd {
        Command::Ls(c) => c.tier,
        Command::Evict(c) => c.tier,
        Command::Clear(c) => c.tier,
        _ => TierChoice::Local,
    };
    let shared = ops::shared::configured(file.as_ref());
    if tier.shared() && shared.is_none() {
        eprintln!(
            "hoard: --tier {tier:?} needs a shared tier (`shared` in the file or HOARD_SHARED)"
        );
        return USAGE;
    }
    if tier == TierChoice::Shared {
        return shared_op(&cmd, shared.expect("checked above"), json);
    }
    let cache = match &cmd {
        // Importing into a directory without a cache creates it.
        Command::Import(_) => match store_args.resolve_cache_dir() {
            Ok(dir) => match hoard::store::Cache::open(&dir) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hoard: cannot open cache directory {}: {e}", dir.display());
                    return FAILURE;
                }
            },
            Err(e) => return config_error(&e),
        },
        _ => match store_of(store_args) {
            Ok(c) => c,
            Err(code) => return code,
        },
    };
    let rules = file.as_ref().map(|f| f.rules.clone()).unwrap_or_default();
    let res = match &cmd {
        Command::Stats(c) => ops::stats(&cache, c.top).map(|r| {
            let shared = shared.map(ops::shared::stats);
            if json {
                return print_json(&ops::shared::WithShared { local: &r, shared });
            }
            out!("{r}");
            if let Some(sh) = shared {
                out!("{sh}");
            }
            OK
        }),
        Command::Ls(c) => ops::list(&cache, c.host.as_deref()).map(|mut v| {
            if tier.shared() {
                match ops::shared::list(shared.clone().expect("checked"), c.host.as_deref()) {
                    Ok(more) => v.extend(more),
                    Err(e) => return shared_failed(&e),
                }
            }
            print_ls(&v, json, tier != TierChoice::Local)
        }),
        Command::Show(c) => ops::show(&cache, &c.url, &rules, SystemTime::now()).map(|r| match r {
            None => {
                eprintln!("hoard: not cached: {}", c.url);
                NEGATIVE
            }
            Some(r) if json => print_json(&r),
            Some(r) => {
                out!("{r}");
                OK
            }
        }),
        Command::Purge(c) => ops::purge(&cache, &c.url, &rules).map(|r| {
            let code = removed(&r, json, &c.url);
            // The shared tier too, when the configuration names one.
            if let Some(cfg) = shared.clone()
                && let Ok(key) = ops::url_key(&c.url, &rules)
            {
                match ops::shared::purge(cfg, key.as_str()) {
                    Ok(()) => eprintln!("hoard: purged from the shared tier too"),
                    Err(e) => eprintln!("hoard: shared tier not purged: {e}"),
                }
            }
            code
        }),
        Command::Evict(c) => match (&c.host, &c.tag) {
            (Some(h), _) => ops::evict_host(&cache, h),
            (None, Some(t)) => ops::evict_tag(&cache, t),
            (None, None) => unreachable!("clap requires --host or --tag"),
        }
        .map(|r| match (tier, shared.clone()) {
            (TierChoice::All, Some(cfg)) => {
                let shared = ops::shared::evict(cfg, c.host.as_deref(), c.tag.as_deref());
                tiers(Some(r), shared, json, false)
            }
            _ => removed(&r, json, "the selection"),
        }),
        Command::Expire(_) => ops::expire(&cache).map(|r| counted(&r, json)),
        Command::Clear(_) => ops::clear(&cache).map(|r| match (tier, shared.clone()) {
            (TierChoice::All, Some(cfg)) => tiers(Some(r), ops::shared::clear(cfg), json, true),
            _ => counted(&r, json),
        }),
        Command::Check(c) => ops::check(&cache, c.fix).map(|r| {
            if json {
                print_json(&r);
            } else {
                out!("{r}");
            }
            if r.failed() { NEGATIVE } else { OK }
        }),
        Command::Export(c) => {
            return match ops::har::export(&cache, &c.har, c.host.as_deref(), c.prefix.as_deref()) {
                Ok(r) if json => print_json(&r),
                Ok(r) => {
                    out!("{}", ops::render::Exported(&r, &c.har));
                    if r.entries == 0 { NEGATIVE } else { OK }
                }
                Err(e) => har_error(e),
            };
        }
        Command::Import(c) => {
            return match ops::har::import(&cache, &c.har, c.ttl, &rules, SystemTime::now()) {
                Ok(r) if json => print_json(&r),
                Ok(r) => {
                    out!("{}", ops::render::Imported(&r, &c.har));
                    OK
                }
                Err(e) => har_error(e),
            };
        }
        Command::Serve(_) | Command::Config(_) | Command::Ca(_) | Command::Warm(_) => {
            unreachable!("handled in main")
        }
    };
    res.unwrap_or_else(op_error)
}

/// `hoard warm`: fetch the list through the proxy; exit 1 when any URL failed.
fn run_warm(w: &hoard::cli::WarmCmd) -> u8 {
    use std::io::Read as _;
    let mut text = String::new();
    let read = if w.list.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&w.list).map(|t| text = t)
    };
    if let Err(e) = read {
        eprintln!("hoard: cannot read {}: {e}", w.list.display());
        return USAGE;
    }
    if !matches!(w.proxy.scheme_str(), Some("http")) || w.proxy.host().is_none() {
        eprintln!(
            "hoard: --proxy must be an http:// URL with a host: {}",
            w.proxy
        );
        return USAGE;
    }
    let urls = ops::warm::parse_list(&text);
    let opts = ops::warm::WarmOptions {
        proxy: w.proxy.clone(),
        concurrency: usize::from(w.concurrency),
        timeout: w.timeout,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoard: {e}");
            return FAILURE;
        }
    };
    let r = rt.block_on(ops::warm::warm(urls, &opts, tty));
    if w.json {
        print_json(&r);
    } else {
        out!("{r}");
    }
    if r.all_ok() { OK } else { NEGATIVE }
}

fn har_error(e: ops::har::HarError) -> u8 {
    eprintln!("hoard: {e}");
    match e {
        ops::har::HarError::NotHar(..) | ops::har::HarError::Entry { .. } => USAGE,
        ops::har::HarError::Io { .. } | ops::har::HarError::Store(_) => FAILURE,
    }
}

fn removed(r: &ops::Removed, json: bool, what: &str) -> u8 {
    if json {
        print_json(r);
    } else if r.rows == 0 {
        eprintln!("hoard: nothing stored for {what}");
    } else {
        out!("removed {} URL(s), {} row(s)", r.urls, r.rows);
    }
    if r.rows == 0 { NEGATIVE } else { OK }
}

fn counted(r: &ops::Removed, json: bool) -> u8 {
    if json {
        return print_json(r);
    }
    out!("removed {} row(s)", r.rows);
    OK
}

/// `ls` for people (a TIER column when more than the local tier was asked for) or JSON.
fn print_ls(v: &[ops::UrlEntry], json: bool, tiers: bool) -> u8 {
    if json {
        return print_json(&v);
    }
    if !v.is_empty() {
        out!("{}", ops::tiers::ls_table(v, tiers));
    }
    OK
}

/// `ls`, `evict` and `clear` with `--tier shared`: no local store is opened.
fn shared_op(cmd: &Command, cfg: SharedConfig, json: bool) -> u8 {
    match cmd {
        Command::Ls(c) => match ops::shared::list(cfg, c.host.as_deref()) {
            Ok(v) => print_ls(&v, json, true),
            Err(e) => shared_failed(&e),
        },
        Command::Evict(c) => tiers(
            None,
            ops::shared::evict(cfg, c.host.as_deref(), c.tag.as_deref()),
            json,
            false,
        ),
        Command::Clear(_) => tiers(None, ops::shared::clear(cfg), json, true),
        _ => unreachable!("only ls, evict and clear take --tier"),
    }
}

fn shared_failed(e: &str) -> u8 {
    eprintln!("hoard: shared tier: {e}");
    FAILURE
}

/// Print what each tier lost; exit 1 when an evict found nothing anywhere.
fn tiers(local: Option<Removed>, shared: Result<Removed, String>, json: bool, clear: bool) -> u8 {
    let shared = match shared {
        Ok(r) => r,
        Err(e) => return shared_failed(&e),
    };
    let r = ops::tiers::ByTier {
        local,
        shared: Some(shared),
        clear,
    };
    if json {
        print_json(&r);
    } else {
        out!("{r}");
    }
    if r.found_nothing() { NEGATIVE } else { OK }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}
