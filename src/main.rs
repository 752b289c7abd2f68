//! The `hoard` binary: parse the command line, validate the configuration, run.
//! Thin on purpose: everything it calls lives in the library.

use std::process::ExitCode;

use clap::Parser;
use hoard::cli::{CaArgs, Cli, Command, ServeArgs};
use hoard::proxy::Server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Ca(a)) => return run_ca(&a),
        None => cli.serve,
    };
    init_logging(&args);
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `hoard ca`: create the CA if needed, print its path, PEM and how to trust it.
fn run_ca(args: &CaArgs) -> ExitCode {
    match hoard::proxy::ca::CertAuthority::load_or_create(&args.ca_dir()) {
        Ok(ca) => {
            println!("{}\n", ca.cert_path().display());
            println!("{}", ca.cert_pem().trim_end());
            println!();
            print!("{}", hoard::proxy::ca::trust_instructions(ca.cert_path()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoard: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(args: &ServeArgs) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = cfg.cache_dir.clone();
        let server = Server::bind(cfg).await?;
        eprintln!(
            "hoard: listening on {} (cache {})",
            server.local_addr(),
            dir.display()
        );
        server.run_until(shutdown_signal()).await;
        Ok(())
    })
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
