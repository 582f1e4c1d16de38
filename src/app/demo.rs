//! `chatwatch demo`: the whole chat life cycle on one machine, in seconds.
//!
//! It starts the GWS simulator in-process, runs the real daemon against it (log sink, a JSON
//! Lines file of every event, and a second file filtered to transitions into `LeftChat`, the
//! disposition trigger), and plays an agent through a scripted life cycle with chatwatch's own
//! chat operations: offer → accept → messages → leave → disposition → complete, then a conference
//! leave that ends in `Completed`, then the post-leave workflow: a chat the agent leaves alone and
//! forgets becomes pending disposition, is reported overdue, and the demo's `auto-close` rule (the
//! README's, with its 10 minutes shortened to a few seconds) sets `DispositionCode = AutoClosed`
//! and completes it through the account's own GWS session. Then it opens a chat and leaves it
//! to the visitor, printing the `curl` lines that list the tracked chats and leave that chat
//! through the operations API (after which the rule completes it too), and keeps offering chats
//! until stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;
use url::Url;

use crate::api::config::ApiConfig;
use crate::filter::FilterConfig;
use crate::gws::operations::{ChatOperation, ClosingText};
use crate::gws::session::{GwsSession, SessionError};
use crate::http::HttpSettings;
use crate::rules::RuleConfig;
use crate::secret::{Secret, SecretSource};
use crate::service::config::{
    AccountConfig, Accounts, AdminConfig, BayeuxConfig, Config, LogConfig, ServerKind,
    ShutdownConfig, TrackerConfig,
};
use crate::service::{self, ServiceError};
use crate::sim::{ChatOffer, SimConfig, SimUser, Simulator};
use crate::sinks::SinkConfig;

/// The agent the demo logs in as.
const AGENT: &str = "agent1";
const PASSWORD: &str = "demo-password";

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the event files go; a fresh directory under the system temp dir when `None`.
    pub dir: Option<PathBuf>,
    /// Where the simulator listens.
    pub listen: SocketAddr,
    /// Pause between two steps of a life cycle (so a human can follow the log).
    pub step: Duration,
    /// Pause between two live chats after the script; zero stops after the script.
    pub live_every: Duration,
    /// How long the auto-close rule waits after a chat is left alone (the README's rule says 10
    /// minutes; the demo shortens it).
    pub rule_after: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            step: Duration::from_millis(400),
            live_every: Duration::from_secs(5),
            rule_after: Duration::from_secs(4),
        }
    }
}

/// Why the demo stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or socket could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A chat operation failed.
    #[error(transparent)]
    Operation(#[from] SessionError),
    /// The daemon did not subscribe in time.
    #[error("the daemon did not subscribe to the simulator within 30 s")]
    NotListening,
}

/// The demo's version of the README rule: `after` is `rule_after` instead of 10 minutes.
pub fn demo_rule(rule_after: Duration) -> RuleConfig {
    let text = format!(
        "name = \"auto-close\"\n\
         when = {{ entered_states = [\"LeftChat\"] }}\n\
         after = \"{}ms\"\n\
         unless = [\"Completed\", \"Revoked\", \"disposition_set\"]\n\
         do = [{{ set_disposition = {{ code = \"AutoClosed\" }} }}, {{ complete = {{}} }}]\n",
        rule_after.as_millis()
    );
    toml::from_str(&text).unwrap_or_else(|e| unreachable!("built-in rule config: {e}"))
}

/// The daemon configuration the demo runs: the simulator as account `main` (in agent mode:
/// the demo drives the agent), a log sink, every event in `dir/events.jsonl`, transitions into
/// `LeftChat` in `dir/left-chat.jsonl`, chats pending disposition overdue after half of
/// `rule_after`, the auto-close rule after `rule_after`, and the operations API on a free
/// loopback port with the one bearer token `api_token` (named `demo`).
pub fn demo_config(
    sim_url: &Url,
    dir: &std::path::Path,
    rule_after: Duration,
    api_token: &str,
) -> Config {
    let account = AccountConfig {
        name: None,
        enabled: true,
        url: sim_url.clone(),
        notifications_path: "/api/v2/notifications".to_owned(),
        username: Some(AGENT.to_owned()),
        password: Some(SecretSource::Value(Secret::new(PASSWORD))),
        password_env: None,
        password_file: None,
        password_credential: None,
        channels: vec!["/v2/me/chats".to_owned()],
        ca_file: None,
        danger_accept_invalid_certs: false,
        proxy: None,
        use_env_proxy: false,
        server: ServerKind::Gws,
        mode: crate::service::config::AccountMode::Agent,
        disposition_key: crate::rules::DEFAULT_DISPOSITION_KEY.to_owned(),
        overdue_after: Some(rule_after / 2),
        contact_center_channels: vec!["chat".to_owned()],
        end_contact_center_session: true,
        recover_state: true,
        transports: vec![
            crate::service::config::Transport::Websocket,
            crate::service::config::Transport::LongPolling,
        ],
        ack: true,
    };
    let sink = |text: String| -> SinkConfig {
        toml::from_str(&text).unwrap_or_else(|e| unreachable!("built-in sink config: {e}"))
    };
    let mut sinks = BTreeMap::new();
    sinks.insert("console".to_owned(), sink("type = \"log\"".to_owned()));
    sinks.insert(
        "events".to_owned(),
        sink(format!(
            "type = \"file\"\npath = {:?}\n",
            dir.join("events.jsonl").display().to_string()
        )),
    );
    let mut left = sink(format!(
        "type = \"file\"\npath = {:?}\n",
        dir.join("left-chat.jsonl").display().to_string()
    ));
    if let SinkConfig::File(f) = &mut left {
        f.filter = FilterConfig {
            entered_states: vec!["LeftChat".to_owned()],
            ..FilterConfig::default()
        };
    }
    sinks.insert("left_chat".to_owned(), left);
    let mut journal = crate::journal::JournalConfig::new(dir.join("journal"));
    journal.fsync = crate::journal::JournalFsync::Interval;
    Config {
        accounts: Accounts(BTreeMap::from([("main".to_owned(), account)])),
        journal,
        bayeux: BayeuxConfig::default(),
        tracker: TrackerConfig::default(),
        log: LogConfig::default(),
        sinks,
        shutdown: ShutdownConfig::default(),
        // A free port: the demo must not collide with a daemon already running here.
        admin: AdminConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        },
        api: ApiConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: BTreeMap::from([(
                "demo".to_owned(),
                SecretSource::Value(Secret::new(api_token)),
            )]),
            ..ApiConfig::default()
        },
        rules: vec![demo_rule(rule_after)],
    }
}

/// Runs the demo until `shutdown` is cancelled (or, with `live_every` zero, until the script is
/// done). Prints where the files are written.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<PathBuf, DemoError> {
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("chatwatch-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let sim_cfg = SimConfig {
        users: vec![SimUser::new(AGENT, PASSWORD, "Alice Agent")],
        ..SimConfig::default()
    };
    let sim = Simulator::start(opts.listen, sim_cfg).await?;
    // Loopback only, and printed below: a per-run token, not a secret worth more than the demo.
    let api_token = format!("demo-{}", crate::event::new_event_id().replace('-', ""));
    let config = demo_config(&sim.base_url(), &dir, opts.rule_after, &api_token);
    config
        .validate(std::path::Path::new("(demo)"))
        .map_err(|e| DemoError::Service(e.into()))?;
    println!("chatwatch demo");
    println!("  GWS simulator:     {}", sim.base_url());
    println!(
        "  every event:       {}",
        dir.join("events.jsonl").display()
    );
    println!(
        "  LeftChat triggers: {}",
        dir.join("left-chat.jsonl").display()
    );
    println!("  Ctrl-C to stop.");

    let daemon_stop = shutdown.child_token();
    let (ready_tx, ready_rx) = oneshot::channel();
    let daemon = tokio::spawn(service::run_with(
        config,
        daemon_stop.clone(),
        move |running| {
            let _ = ready_tx.send(running);
        },
    ));
    let outcome = async {
        let mut running = ready_rx.await.map_err(|_| DemoError::NotListening)?;
        let (_, status) = running.status.first_mut().ok_or(DemoError::NotListening)?;
        // Never keep the `Ref` that `wait_for` returns: it holds the watch's lock, and the
        // session would block on its next status update.
        let listening = matches!(
            tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.subscribed)).await,
            Ok(Ok(_))
        );
        if !listening {
            return Err(DemoError::NotListening);
        }
        // Let the daemon read its first state snapshot before chats appear: a chat offered
        // while it is read could be reported once more as `recovered` (see README).
        let snapshot_read = || {
            sim.requests().iter().any(|r| {
                r.path == "/api/v2/me" && r.query.as_deref().is_some_and(|q| q.contains("subresources"))
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !snapshot_read() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The agent's desktop: a second GWS session of the same agent that performs operations.
        let desk = desk_session(&sim.base_url())?;
        desk.login().await?;
        let step = opts.step;
        tokio::select! {
            r = script(&sim, &desk, step, opts.rule_after) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        }
        if let Some(api) = running.api {
            let chat = tokio::select! {
                r = life_cycle(&sim, &desk, step, "Casey (waits for you)", Ending::Open) => r?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            print_api_lines(api, &api_token, &chat, opts.rule_after);
        }
        info!("demo script done: one chat left alone (LeftChat → disposition → Completed), one conference chat left (Completed), one chat left and forgotten (pending → overdue → completed by the auto-close rule)");
        if opts.live_every.is_zero() {
            return Ok(());
        }
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(opts.live_every) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            n += 1;
            let customer = format!("Live customer {n}");
            let ending = if n.is_multiple_of(4) {
                Ending::Conference
            } else {
                Ending::ByHand
            };
            tokio::select! {
                r = life_cycle(&sim, &desk, step, &customer, ending) => { r?; }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    daemon_stop.cancel();
    let served = daemon
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    sim.shutdown().await;
    outcome?;
    served?;
    println!("events written to {}", dir.join("events.jsonl").display());
    Ok(dir)
}

/// Prints the `curl` lines that list the tracked chats and leave `chat` through the API.
fn print_api_lines(api: SocketAddr, token: &str, chat: &str, rule_after: Duration) {
    let base = format!("http://{api}/v1/accounts/main/chats");
    println!();
    println!("Operations API: {base} (bearer token {token})");
    println!("  the chats chatwatch tracks, with state, capabilities and pending-disposition age:");
    println!("    curl -sS -H 'Authorization: Bearer {token}' {base}");
    println!("  chat {chat} waits in Chatting: leave it through the API, and the auto-close rule");
    println!("  completes it {rule_after:?} later:");
    println!(
        "    curl -sS -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n      -d '{{\"text\": \"Goodbye\", \"treatAs\": \"System\"}}' '{base}/{chat}/leave?wait=10s'"
    );
    println!();
}

fn desk_session(base: &Url) -> Result<GwsSession, SessionError> {
    let mut http = HttpSettings::new(
        base.join("/api/v2/notifications")
            .unwrap_or_else(|_| base.clone()),
    );
    http.basic_auth = Some((AGENT.to_owned(), Secret::new(PASSWORD)));
    GwsSession::new("desk", base.clone(), http, Duration::from_secs(10))
}

/// The scripted part: a standalone chat through disposition, a conference leave, then a chat
/// left alone that the auto-close rule completes.
async fn script(
    sim: &Simulator,
    desk: &GwsSession,
    step: Duration,
    rule_after: Duration,
) -> Result<(), SessionError> {
    life_cycle(sim, desk, step, "Pat", Ending::ByHand).await?;
    life_cycle(sim, desk, step, "Sam (conference)", Ending::Conference).await?;
    let chat = life_cycle(sim, desk, step, "Robin (left alone)", Ending::LeftAlone).await?;
    info!(
        chat = %chat,
        "the agent left chat {chat} alone and forgot it: it is pending disposition; the auto-close rule acts in {rule_after:?}"
    );
    let deadline = tokio::time::Instant::now() + rule_after + Duration::from_secs(30);
    loop {
        let state = sim.chat(&chat);
        let state = state.as_ref().and_then(|c| c["state"].as_str());
        if state == Some("Completed") {
            info!(chat = %chat, "the auto-close rule set DispositionCode = AutoClosed and completed chat {chat}");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(chat = %chat, "the auto-close rule did not complete chat {chat} in time");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a demo chat ends after the agent's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Not left: the chat stays in `Chatting`, for the visitor to leave through the API.
    Open,
    /// Alone in the chat: `LeftChat`, then the agent sets the disposition and completes it.
    ByHand,
    /// A conference: the leave ends it in `Completed`.
    Conference,
    /// Alone in the chat, and then forgotten: `LeftChat` until a rule acts.
    LeftAlone,
}

/// One chat: offered, accepted, a few messages, then left and ended as `ending` says (or left
/// open). Returns the chat id.
async fn life_cycle(
    sim: &Simulator,
    desk: &GwsSession,
    step: Duration,
    customer: &str,
    ending: Ending,
) -> Result<String, SessionError> {
    let conference = ending == Ending::Conference;
    let mut user_data = Map::new();
    user_data.insert("Subject".into(), json!("Billing question"));
    let chat = sim.offer_chat(
        AGENT,
        ChatOffer {
            customer_nickname: customer.to_owned(),
            user_data,
            conference,
            first_message: Some("Hi, my last invoice looks wrong.".to_owned()),
        },
    );
    tokio::time::sleep(step).await;
    desk.operate(
        &chat,
        &ChatOperation::Accept {
            nickname: Some("Alice".into()),
        },
    )
    .await?;
    tokio::time::sleep(step).await;
    let say = |text: &str| ChatOperation::SendMessage {
        text: text.to_owned(),
        message_type: None,
        treat_as: None,
    };
    desk.operate(&chat, &say("Hello! Let me look at that invoice."))
        .await?;
    tokio::time::sleep(step).await;
    sim.customer_message(&chat, "Thanks, it is number 4711.");
    tokio::time::sleep(step).await;
    desk.operate(&chat, &say("Fixed: the duplicate charge is refunded."))
        .await?;
    tokio::time::sleep(step).await;
    if ending == Ending::Open {
        return Ok(chat);
    }
    desk.operate(
        &chat,
        &ChatOperation::Leave(ClosingText::text("Goodbye, and thanks for chatting.")),
    )
    .await?;
    tokio::time::sleep(step).await;
    if ending != Ending::ByHand {
        return Ok(chat);
    }
    let disposition = ChatOperation::SetDisposition {
        disposition: "Resolved".to_owned(),
        disposition_key: None,
    };
    desk.operate(&chat, &disposition).await?;
    tokio::time::sleep(step).await;
    let complete = ChatOperation::Complete {
        queue_name: None,
        save_lar: None,
        closing: ClosingText::none(),
    };
    desk.operate(&chat, &complete).await?;
    Ok(chat)
}
