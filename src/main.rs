//! The `chatwatch` command line: `run` the daemon, `check` a configuration file, perform `chat`
//! operations, run the GWS simulator (`sim`) or the whole life cycle on one machine (`demo`).
//!
//! Everything here is thin: it parses arguments, loads the configuration, installs logging and
//! the Ctrl-C / SIGTERM handler, and calls into the library, where the logic (and its tests) live.
//!
//! The daemon runs on the system allocator. mimalloc decoded events about a tenth faster, but
//! held ~11 MiB more at start and ~50 KiB more per idle account (137 against 87 KiB at 1,000
//! accounts, `cargo bench --bench accounts`), and the per-account goal is 100 KiB.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use chatwatch::app;
use chatwatch::gws::operations::{ChatOperation, ClosingText, TransferTarget, TreatAs};
use chatwatch::service::{self, config::Config};
use chatwatch::sim::{Scenario, SimConfig, SimUser};

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
    /// Exit code 0 when valid (systemd's `ExecReload=` runs it before sending SIGHUP).
    #[command(alias = "validate")]
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
        /// Print only errors, not the effective configuration.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Ask the running daemon to reload its configuration file and wait for the verdict
    /// (systemd's `ExecReload=`): exit 0 once the new configuration is in force; non-zero, with
    /// the daemon's reason, when it keeps running on the previous one.
    Reload {
        /// The daemon's control socket [default: `$CHATWATCH_CONTROL_SOCKET`, else
        /// `$RUNTIME_DIRECTORY/control.sock`, else /run/chatwatch/control.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// How long to wait for the daemon's verdict.
        #[arg(long, default_value = "50s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Perform a GWS chat operation as the configured agent.
    Chat(ChatArgs),
    /// Run the GWS simulator until Ctrl-C.
    Sim(SimArgs),
    /// Run the simulator, the daemon and a scripted chat life cycle on this machine.
    Demo(DemoArgs),
    /// Inspect the durable journal (read-only; safe while the daemon runs).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// List or redrive the webhook sinks' dead letters.
    Deadletter {
        #[command(subcommand)]
        command: DeadletterCommand,
    },
    /// Tamper evidence of audit files.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit sink's files (rotated and compressed ones included);
    /// reports the first line that was changed, removed, inserted or reordered, and exits
    /// non-zero if there is one.
    Verify {
        /// The audit sink's directory.
        dir: PathBuf,
        /// The sink name (the files are `<name>.jsonl` and `<name>-*.jsonl[.gz]`).
        #[arg(long, default_value = "audit")]
        name: String,
        /// The HMAC key file, when the sink uses one.
        #[arg(long)]
        hmac_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Sizes, sequence numbers and each sink's backlog, as JSON.
    Status {
        /// The configuration file naming the journal directory.
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
    },
    /// Print the most recent events, one JSON line each, oldest first.
    Tail {
        /// The configuration file naming the journal directory.
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DeadletterCommand {
    /// Print the dead letters (one JSON line each) of every webhook sink, or of one.
    List {
        /// The configuration file naming the sinks.
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Send a webhook sink's dead letters again; delivered ones leave the file.
    Redrive {
        /// The configuration file naming the sinks.
        #[arg(short, long, default_value = "config/chatwatch.toml")]
        config: PathBuf,
        /// The webhook sink.
        #[arg(long)]
        sink: String,
    },
}

#[derive(Debug, Args)]
struct ChatArgs {
    /// The configuration file (TOML) naming the account.
    #[arg(short, long, default_value = "config/chatwatch.toml", global = true)]
    config: PathBuf,
    /// The account to act as (default: the only enabled one).
    #[arg(long, global = true)]
    account: Option<String>,
    /// Wait for the notification the operation causes, and print it.
    #[arg(long, global = true)]
    wait: bool,
    /// How long to wait with --wait.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    op: ChatOp,
}

/// The optional closing text of Leave, Complete and Transfer.
#[derive(Debug, Args)]
struct ClosingArgs {
    /// A text sent to the chat as the agent leaves.
    #[arg(long)]
    text: Option<String>,
    /// The message type of --text (GWS default `Text`); only with --text.
    #[arg(long)]
    message_type: Option<String>,
    /// How --text is shown (GWS default Normal); only with --text.
    #[arg(long, ignore_case = true)]
    treat_as: Option<TreatAs>,
}

impl ClosingArgs {
    fn into_closing(self) -> ClosingText {
        ClosingText::new(self.text, self.message_type, self.treat_as)
    }
}

#[derive(Debug, Subcommand)]
enum ChatOp {
    /// Accept an offered chat.
    Accept {
        /// The chat (interaction) id.
        chat_id: String,
        /// The name shown to the customer.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Reject an offered chat.
    Reject {
        /// The chat id.
        chat_id: String,
    },
    /// Send a message to the chat.
    SendMessage {
        /// The chat id.
        chat_id: String,
        /// The text.
        #[arg(long)]
        text: String,
        /// An optional message type label.
        #[arg(long)]
        message_type: Option<String>,
        /// Normal or System.
        #[arg(long, ignore_case = true)]
        treat_as: Option<TreatAs>,
    },
    /// Leave the chat (LeftChat when alone, Completed in a conference).
    Leave {
        /// The chat id.
        chat_id: String,
        #[command(flatten)]
        closing: ClosingArgs,
    },
    /// Complete the interaction.
    Complete {
        /// The chat id.
        chat_id: String,
        /// Place the interaction in this queue.
        #[arg(long)]
        queue_name: Option<String>,
        #[command(flatten)]
        closing: ClosingArgs,
    },
    /// Transfer the chat to an agent (--target-uri) or a queue (--queue-name).
    Transfer {
        /// The chat id.
        chat_id: String,
        /// The target agent's URI.
        #[arg(long)]
        target_uri: Option<String>,
        /// The target queue.
        #[arg(long)]
        queue_name: Option<String>,
        #[command(flatten)]
        closing: ClosingArgs,
    },
    /// Set the disposition code.
    SetDisposition {
        /// The chat id.
        chat_id: String,
        /// The disposition value.
        #[arg(long)]
        disposition: String,
        /// The user-data key (GWS default: the configured key, normally DispositionCode).
        #[arg(long)]
        disposition_key: Option<String>,
    },
    /// Attach user data (--data key=value, repeatable; values that parse as JSON are kept typed).
    AttachUserData {
        /// The chat id.
        chat_id: String,
        /// key=value pairs.
        #[arg(long = "data", value_parser = parse_pair, required = true)]
        data: Vec<(String, Value)>,
    },
    /// Update user data (--data key=value, repeatable).
    UpdateUserData {
        /// The chat id.
        chat_id: String,
        /// key=value pairs.
        #[arg(long = "data", value_parser = parse_pair, required = true)]
        data: Vec<(String, Value)>,
    },
    /// Delete user data keys (--key K, repeatable).
    DeleteUserData {
        /// The chat id.
        chat_id: String,
        /// The keys to delete.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// Send a typing-started notification.
    StartTyping {
        /// The chat id.
        chat_id: String,
    },
    /// Send a typing-stopped notification.
    StopTyping {
        /// The chat id.
        chat_id: String,
    },
}

impl ChatOp {
    fn into_operation(self) -> anyhow::Result<(String, ChatOperation)> {
        let map = |pairs: Vec<(String, Value)>| pairs.into_iter().collect::<Map<String, Value>>();
        Ok(match self {
            ChatOp::Accept { chat_id, nickname } => (chat_id, ChatOperation::Accept { nickname }),
            ChatOp::Reject { chat_id } => (chat_id, ChatOperation::Reject),
            ChatOp::SendMessage {
                chat_id,
                text,
                message_type,
                treat_as,
            } => (
                chat_id,
                ChatOperation::SendMessage {
                    text,
                    message_type,
                    treat_as,
                },
            ),
            ChatOp::Leave { chat_id, closing } => {
                (chat_id, ChatOperation::Leave(closing.into_closing()))
            }
            ChatOp::Complete {
                chat_id,
                queue_name,
                closing,
            } => (
                chat_id,
                ChatOperation::Complete {
                    queue_name,
                    closing: closing.into_closing(),
                },
            ),
            ChatOp::Transfer {
                chat_id,
                target_uri,
                queue_name,
                closing,
            } => (
                chat_id,
                ChatOperation::Transfer {
                    target: TransferTarget::from_options(target_uri, queue_name)?,
                    closing: closing.into_closing(),
                },
            ),
            ChatOp::SetDisposition {
                chat_id,
                disposition,
                disposition_key,
            } => (
                chat_id,
                ChatOperation::SetDisposition {
                    disposition,
                    disposition_key,
                },
            ),
            ChatOp::AttachUserData { chat_id, data } => {
                (chat_id, ChatOperation::AttachUserData(map(data)))
            }
            ChatOp::UpdateUserData { chat_id, data } => {
                (chat_id, ChatOperation::UpdateUserData(map(data)))
            }
            ChatOp::DeleteUserData { chat_id, keys } => {
                (chat_id, ChatOperation::DeleteUserData(keys))
            }
            ChatOp::StartTyping { chat_id } => {
                (chat_id, ChatOperation::SendStartTypingNotification)
            }
            ChatOp::StopTyping { chat_id } => (chat_id, ChatOperation::SendStopTypingNotification),
        })
    }
}

fn parse_pair(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not key=value"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// A user as NAME:PASSWORD[:NICKNAME] (repeatable). Default: agent1:password1, agent2:password2.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<SimUser>,
    /// How long a /meta/connect is held.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long a CometD session lives without a connect.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_interval: Duration,
    /// Do not enforce CSRF tokens.
    #[arg(long)]
    no_csrf: bool,
    /// Offer this many chats (scenario driver); 0: none.
    #[arg(long, default_value_t = 0)]
    offer: usize,
    /// Offers per second for --offer.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Agents the offered chats go to, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "agent1")]
    agents: Vec<String>,
}

fn parse_user(s: &str) -> Result<SimUser, String> {
    let mut parts = s.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(p), nick) if !n.is_empty() && !p.is_empty() => {
            Ok(SimUser::new(n, p, nick.unwrap_or(n)))
        }
        _ => Err(format!("`{s}` is not NAME:PASSWORD[:NICKNAME]")),
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the event files (default: a new one under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Pause between the steps of a chat.
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Pause between live chats after the script (0s: stop after the script).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    live_every: Duration,
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
        Command::Check { config, quiet } => {
            let cfg = Config::load(&config)?;
            for (name, account) in cfg.accounts.iter().filter(|(_, a)| a.enabled) {
                account.resolve_password(name)?;
            }
            if quiet {
                return Ok(());
            }
            let text = toml::to_string_pretty(&cfg).context("cannot render the configuration")?;
            println!("# {}: valid\n{text}", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let log = service::init_logging(&cfg.log);
            let reload = service::Reload { file: config, log };
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                service::run_reloadable(cfg, reload, shutdown).await
            })?;
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
            let cfg = Config::load(&args.config)?;
            let (chat_id, op) = args.op.into_operation()?;
            let wait = args.wait.then_some(args.timeout);
            let outcome = runtime()?.block_on(app::chat::run(
                &cfg,
                args.account.as_deref(),
                &chat_id,
                &op,
                wait,
            ))?;
            let reference = outcome
                .response
                .reference_id
                .as_ref()
                .map(|r| {
                    format!(
                        ", referenceId {}",
                        serde_json::to_string(r).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            println!(
                "{} accepted for chat {chat_id} (statusCode 0{reference})",
                op.name()
            );
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
            let opts = app::sim::SimOptions {
                listen: args.listen,
                config,
                scenario,
            };
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                app::sim::run(opts, shutdown).await
            })?;
            Ok(())
        }
        Command::Journal { command } => journal_command(command),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    dir,
                    name,
                    hmac_key_file,
                },
        } => {
            use chatwatch::sinks::audit;
            let key = match &hmac_key_file {
                Some(path) => Some(
                    audit::read_hmac_key(path)
                        .with_context(|| format!("cannot read the HMAC key {}", path.display()))?,
                ),
                None => None,
            };
            let report = audit::verify(&dir, &name, key.as_deref())?;
            println!("{report}");
            anyhow::ensure!(
                report.is_ok(),
                "the audit chain of `{name}` in {} is broken",
                dir.display()
            );
            Ok(())
        }
        Command::Deadletter { command } => deadletter_command(command),
        Command::Demo(args) => {
            service::init_logging(&chatwatch::service::config::LogConfig::default());
            let opts = app::demo::DemoOptions {
                dir: args.dir,
                listen: args.listen,
                step: args.step,
                live_every: args.live_every,
            };
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                app::demo::run(opts, shutdown).await
            })?;
            Ok(())
        }
    }
}

fn webhook_sinks(cfg: &Config) -> Vec<(&String, &chatwatch::sinks::webhook::WebhookSinkConfig)> {
    cfg.sinks
        .iter()
        .filter_map(|(name, sink)| match sink {
            chatwatch::sinks::SinkConfig::Webhook(w) => Some((name, w)),
            _ => None,
        })
        .collect()
}

fn journal_command(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Status { config } => {
            let cfg = Config::load(&config)?;
            let status = chatwatch::journal::status_offline(&cfg.journal.dir)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        JournalCommand::Tail { config, lines } => {
            let cfg = Config::load(&config)?;
            for (_, payload) in chatwatch::journal::tail_offline(&cfg.journal.dir, lines)? {
                println!("{}", String::from_utf8_lossy(&payload));
            }
        }
    }
    Ok(())
}

fn deadletter_command(command: DeadletterCommand) -> anyhow::Result<()> {
    use chatwatch::sinks::webhook;
    match command {
        DeadletterCommand::List { config, sink } => {
            let cfg = Config::load(&config)?;
            let sinks = webhook_sinks(&cfg);
            if let Some(name) = &sink {
                anyhow::ensure!(
                    sinks.iter().any(|(n, _)| *n == name),
                    "no webhook sink `{name}` in {}",
                    config.display()
                );
            }
            let mut dirs: Vec<&std::path::Path> = sinks
                .iter()
                .filter_map(|(_, w)| w.dead_letter_dir.as_deref())
                .collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                for letter in webhook::deadletter_list(dir, sink.as_deref())? {
                    println!("{}", serde_json::to_string(&letter)?);
                }
            }
        }
        DeadletterCommand::Redrive { config, sink } => {
            init_cli_logging();
            let cfg = Config::load(&config)?;
            let (_, w) = webhook_sinks(&cfg)
                .into_iter()
                .find(|(n, _)| **n == sink)
                .ok_or_else(|| {
                    anyhow::anyhow!("no webhook sink `{sink}` in {}", config.display())
                })?;
            let dir = w
                .dead_letter_dir
                .clone()
                .context("the sink has no dead_letter_dir")?;
            let report = runtime()?.block_on(webhook::deadletter_redrive(&dir, &sink, w))?;
            println!(
                "redrive of {sink}: {} attempted, {} delivered, {} failed again, {} skipped (410), {} remaining",
                report.attempted,
                report.delivered,
                report.failed.len(),
                report.skipped,
                report.remaining
            );
            anyhow::ensure!(
                report.failed.is_empty() && report.skipped == 0,
                "some dead letters could not be delivered; they stay in the file"
            );
        }
    }
    Ok(())
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
