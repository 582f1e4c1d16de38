//! The `chatwatch` binary: parses the command line ([`chatwatch::app::cli`]), installs logging
//! and the signal handlers ([`chatwatch::signal`]), and dispatches to the library, where the
//! logic of every command (and its tests) lives. Nothing else happens here.
//!
//! The daemon runs on the system allocator. mimalloc decoded events about a tenth faster, but
//! held ~11 MiB more at start and ~50 KiB more per idle account (137 against 87 KiB at 1,000
//! accounts, `cargo bench --bench accounts`), and the per-account goal is 100 KiB.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use chatwatch::app::cli::{AuditCommand, Cli, Command, DeadletterCommand, JournalCommand};
use chatwatch::app::{self, cli};
use chatwatch::secret::ResolveMode;
use chatwatch::service::{self, config::Config, config::Purpose};
use chatwatch::signal::stop_on_signal;
use chatwatch::sim::{Scenario, SimConfig};

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
        Command::Check {
            config,
            quiet,
            outside_unit,
        } => {
            let mode = if outside_unit {
                ResolveMode::Check
            } else {
                ResolveMode::Run
            };
            let report = app::check::check(&config, mode)?;
            for warning in &report.warnings {
                eprintln!("chatwatch: warning: {warning}");
            }
            if !quiet {
                println!("# {}: valid\n{}", config.display(), report.render()?);
            }
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let log = service::init_logging(&cfg.log);
            let reload = service::Reload { file: config, log };
            with_signals(|shutdown| service::run_reloadable(cfg, reload, shutdown))?;
            Ok(())
        }
        Command::Reload { socket, timeout } => {
            let path = socket.unwrap_or_else(service::control::client_socket_path);
            let summary = runtime()?.block_on(service::control::request_reload(&path, timeout))?;
            println!("reloaded: {summary}");
            Ok(())
        }
        Command::Chat(args) => {
            init_cli_logging();
            let cfg = Config::load_for(&args.config, Purpose::Command)?;
            let (chat_id, op) = args.op.into_operation()?;
            let wait = args.wait.then_some(args.timeout);
            let outcome = runtime()?.block_on(app::chat::run(
                &cfg,
                args.account.as_deref(),
                &chat_id,
                &op,
                wait,
            ))?;
            println!("{}", outcome.summary(&chat_id, &op));
            if let Some(event) = outcome.event {
                println!(
                    "{}",
                    serde_json::to_string(&event).context("cannot print the event")?
                );
            }
            Ok(())
        }
        Command::Sim(args) => {
            init_cli_logging();
            let opts = sim_options(args);
            with_signals(|shutdown| app::sim::run(opts, shutdown))?;
            Ok(())
        }
        Command::Demo(args) => {
            service::init_logging(&service::config::LogConfig::default());
            let opts = app::demo::DemoOptions {
                dir: args.dir,
                listen: args.listen,
                step: args.step,
                live_every: args.live_every,
                rule_after: args.rule_after,
            };
            with_signals(|shutdown| app::demo::run(opts, shutdown))?;
            Ok(())
        }
        Command::Journal { command } => {
            let mut out = std::io::stdout().lock();
            match command {
                JournalCommand::Status { config } => app::journal::status(&config, &mut out)?,
                JournalCommand::Tail { config, lines } => {
                    app::journal::tail(&config, lines, &mut out)?
                }
            }
            Ok(())
        }
        Command::Deadletter { command } => match command {
            DeadletterCommand::List { config, sink } => {
                app::deadletter::list(&config, sink.as_deref(), &mut std::io::stdout().lock())?;
                Ok(())
            }
            DeadletterCommand::Redrive { config, sink } => {
                init_cli_logging();
                let report = runtime()?.block_on(app::deadletter::redrive(&config, &sink))?;
                println!("{}", app::deadletter::summary(&sink, &report));
                anyhow::ensure!(
                    report.is_complete(),
                    "some dead letters could not be delivered; they stay in the file"
                );
                Ok(())
            }
        },
        Command::Audit {
            command:
                AuditCommand::Verify {
                    dir,
                    name,
                    hmac_key_file,
                },
        } => {
            let report = app::audit::verify(&dir, &name, hmac_key_file.as_deref())?;
            println!("{report}");
            anyhow::ensure!(
                report.is_ok(),
                "the audit chain of `{name}` in {} is broken",
                dir.display()
            );
            Ok(())
        }
    }
}

fn sim_options(args: cli::SimArgs) -> app::sim::SimOptions {
    let config = SimConfig {
        users: if args.users.is_empty() {
            SimConfig::default().users
        } else {
            args.users
        },
        bayeux_timeout: args.timeout,
        max_interval: args.max_interval,
        csrf: !args.no_csrf,
        external_base: None,
    };
    let scenario = (args.offer > 0).then(|| Scenario {
        chats: args.offer,
        rate_per_sec: args.rate,
        agents: args.agents.clone(),
    });
    app::sim::SimOptions {
        listen: args.listen,
        config,
        scenario,
    }
}

/// Runs `f` on a new runtime with a token that the first SIGINT or SIGTERM cancels.
fn with_signals<F, Fut, T, E>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    Ok(runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        f(shutdown).await
    })?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logging for one-shot commands: warnings and errors on standard error, so standard output
/// carries only the result. `RUST_LOG` overrides the level.
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
