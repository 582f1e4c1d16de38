//! The command line's shape: the clap definitions of every `chatwatch` subcommand, and the one
//! mapping from the `chat` subcommand's arguments to a [`ChatOperation`]. `main.rs` parses these
//! and dispatches to the `app` modules; keeping them in the library lets tests parse argument
//! lists without running the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::gws::operations::{ChatOperation, ClosingText, OperationError, TransferTarget, TreatAs};
use crate::sim::SimUser;

/// Listens to Genesys Web Services chat notifications and delivers typed events to sinks.
#[derive(Debug, Parser)]
#[command(name = "chatwatch", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// The check runs outside the service's credential context (e.g. `ExecReload=`, a
        /// shell): report systemd credentials that cannot be read here as "not checked here"
        /// warnings instead of errors.
        #[arg(long)]
        outside_unit: bool,
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
        /// The journal subcommand.
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// List or redrive the webhook sinks' dead letters.
    Deadletter {
        /// The deadletter subcommand.
        #[command(subcommand)]
        command: DeadletterCommand,
    },
    /// Tamper evidence of audit files.
    Audit {
        /// The audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `chatwatch audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
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

/// `chatwatch journal ...`.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
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

/// `chatwatch deadletter ...`.
#[derive(Debug, Subcommand)]
pub enum DeadletterCommand {
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

/// `chatwatch chat ...`: the options every operation shares, and the operation.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The configuration file (TOML) naming the account.
    #[arg(short, long, default_value = "config/chatwatch.toml", global = true)]
    pub config: PathBuf,
    /// The account to act as (default: the only enabled one).
    #[arg(long, global = true)]
    pub account: Option<String>,
    /// Wait for the notification the operation causes, and print it.
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long to wait with --wait.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    /// The operation.
    #[command(subcommand)]
    pub op: ChatOp,
}

/// The optional closing text of Leave, Complete and Transfer.
#[derive(Debug, Args)]
pub struct ClosingArgs {
    /// A text sent to the chat as the agent leaves.
    #[arg(long)]
    pub text: Option<String>,
    /// The message type of --text (GWS default `Text`); only with --text.
    #[arg(long)]
    pub message_type: Option<String>,
    /// How --text is shown (GWS default Normal); only with --text.
    #[arg(long, ignore_case = true)]
    pub treat_as: Option<TreatAs>,
}

impl ClosingArgs {
    /// The closing text these arguments describe.
    pub fn into_closing(self) -> ClosingText {
        ClosingText::new(self.text, self.message_type, self.treat_as)
    }
}

/// One chat operation and its arguments.
#[derive(Debug, Subcommand)]
pub enum ChatOp {
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
        /// The closing text.
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
        /// Save last-agent-routing information in the Contact Profile (saveLAR).
        #[arg(long)]
        save_lar: Option<bool>,
        /// The closing text.
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
        /// The closing text.
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
    /// The chat id and the operation these arguments ask for (the clap args → [`ChatOperation`]
    /// mapping). Fails on a Transfer without exactly one target.
    pub fn into_operation(self) -> Result<(String, ChatOperation), OperationError> {
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
                save_lar,
                closing,
            } => (
                chat_id,
                ChatOperation::Complete {
                    queue_name,
                    save_lar,
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

/// Parses `key=value`; a value that parses as JSON is kept typed.
pub fn parse_pair(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not key=value"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

/// `chatwatch sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// A user as NAME:PASSWORD[:NICKNAME] (repeatable). Default: agent1:password1, agent2:password2.
    #[arg(long = "user", value_parser = parse_user)]
    pub users: Vec<SimUser>,
    /// How long a /meta/connect is held.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// How long a CometD session lives without a connect.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_interval: Duration,
    /// Do not enforce CSRF tokens.
    #[arg(long)]
    pub no_csrf: bool,
    /// Offer this many chats (scenario driver); 0: none.
    #[arg(long, default_value_t = 0)]
    pub offer: usize,
    /// Offers per second for --offer.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Agents the offered chats go to, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "agent1")]
    pub agents: Vec<String>,
}

/// Parses `NAME:PASSWORD[:NICKNAME]`.
pub fn parse_user(s: &str) -> Result<SimUser, String> {
    let mut parts = s.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(p), nick) if !n.is_empty() && !p.is_empty() => {
            Ok(SimUser::new(n, p, nick.unwrap_or(n)))
        }
        _ => Err(format!("`{s}` is not NAME:PASSWORD[:NICKNAME]")),
    }
}

/// `chatwatch demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the event files (default: a new one under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Pause between the steps of a chat.
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Pause between live chats after the script (0s: stop after the script).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub live_every: Duration,
    /// How long the demo's auto-close rule waits after a chat is left alone (the README's rule:
    /// 10 minutes).
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub rule_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(args: &[&str]) -> Result<(String, ChatOperation), OperationError> {
        let cli = Cli::try_parse_from(["chatwatch", "chat"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Chat(chat) => chat.op.into_operation(),
            other => panic!("not a chat command: {other:?}"),
        }
    }

    #[test]
    fn chat_arguments_map_to_operations() {
        let (id, o) = op(&["accept", "c1", "--nickname", "Ann"]).unwrap();
        assert_eq!(id, "c1");
        assert_eq!(
            o,
            ChatOperation::Accept {
                nickname: Some("Ann".into())
            }
        );
        let (_, o) = op(&["attach-user-data", "c1", "--data", "n=3", "--data", "s=x"]).unwrap();
        let ChatOperation::AttachUserData(map) = o else {
            panic!("{o:?}")
        };
        assert_eq!(map["n"], Value::from(3));
        assert_eq!(map["s"], Value::from("x"));
        let (_, o) = op(&["transfer", "c1", "--queue-name", "Q"]).unwrap();
        assert!(
            matches!(o, ChatOperation::Transfer { target: TransferTarget::Queue(ref q), .. } if q == "Q"),
            "{o:?}"
        );
        assert!(
            op(&["transfer", "c1"]).is_err(),
            "a transfer needs a target"
        );
        assert!(op(&["transfer", "c1", "--queue-name", "Q", "--target-uri", "u"]).is_err());
    }

    #[test]
    fn pairs_and_users_parse() {
        assert_eq!(parse_pair("a=b").unwrap(), ("a".into(), Value::from("b")));
        assert_eq!(
            parse_pair("a=true").unwrap(),
            ("a".into(), Value::from(true))
        );
        assert!(parse_pair("ab").is_err());
        assert!(parse_user("agent1:pw").is_ok());
        assert!(parse_user("agent1").is_err());
    }
}
