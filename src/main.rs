//! The `chatwatch` command line: `run` the daemon, `check` a configuration file.
//!
//! Everything here is thin: it parses arguments, loads the configuration, installs logging and
//! the Ctrl-C / SIGTERM handler, and calls into the library, where the logic (and its tests) live.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use chatwatch::service::{self, config::Config};

/// Listens to Genesys Web Services chat notifications and delivers typed events to sinks.
#[derive(Debug, Parser)]
#[command(name = "chatwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until Ctrl-C or SIGTERM.
    Run {
        /// The configuration file (TOML); `CHATWATCH__SECTION__KEY` variables override it.
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration, secrets masked.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            for (name, account) in cfg.accounts.iter().filter(|(_, a)| a.enabled) {
                account.resolve_password(name)?;
            }
            let text = toml::to_string_pretty(&cfg).context("cannot render the configuration")?;
            println!("# {}: valid\n{text}", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            service::init_logging(&cfg.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                service::run(cfg, shutdown).await
            })?;
            Ok(())
        }
    }
}

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM.
async fn stop_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested; shutting down");
    token.cancel();
}
