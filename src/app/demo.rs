//! `chatwatch demo`: the whole chat life cycle on one machine, in seconds.
//!
//! It starts the GWS simulator in-process, runs the real daemon against it (log sink, a JSON
//! Lines file of every event, and a second file filtered to transitions into `LeftChat`, the
//! disposition trigger), and plays an agent through a scripted life cycle with chatwatch's own
//! chat operations: offer → accept → messages → leave → disposition → complete, then a conference
//! leave that ends in `Completed`. Then it keeps offering chats until stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;
use url::Url;

use crate::gws::operations::{ChatOperation, ClosingText};
use crate::gws::session::{GwsSession, SessionError};
use crate::http::HttpSettings;
use crate::secret::{Secret, SecretSource};
use crate::service::config::{
    AccountConfig, Accounts, AdminConfig, BayeuxConfig, Config, LogConfig, ServerKind,
    ShutdownConfig, TrackerConfig,
};
use crate::service::{self, ServiceError};
use crate::sim::{ChatOffer, SimConfig, SimUser, Simulator};
use crate::filter::FilterConfig;
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
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            step: Duration::from_millis(400),
            live_every: Duration::from_secs(5),
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

/// The daemon configuration the demo runs: the simulator as account `main`, a log sink, every
/// event in `dir/events.jsonl`, and transitions into `LeftChat` in `dir/left-chat.jsonl`.
pub fn demo_config(sim_url: &Url, dir: &std::path::Path) -> Config {
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
        overdue_after: None,
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
        api: Default::default(),
        rules: Vec::new(),
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
    let config = demo_config(&sim.base_url(), &dir);
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
            r = script(&sim, &desk, step) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        }
        info!("demo script done: one chat left alone (LeftChat → disposition → Completed), one conference chat left (Completed)");
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
            tokio::select! {
                r = life_cycle(&sim, &desk, step, &customer, n.is_multiple_of(4)) => r?,
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

fn desk_session(base: &Url) -> Result<GwsSession, SessionError> {
    let mut http = HttpSettings::new(
        base.join("/api/v2/notifications")
            .unwrap_or_else(|_| base.clone()),
    );
    http.basic_auth = Some((AGENT.to_owned(), Secret::new(PASSWORD)));
    GwsSession::new("desk", base.clone(), http, Duration::from_secs(10))
}

/// The scripted part: a standalone chat through disposition, then a conference leave.
async fn script(sim: &Simulator, desk: &GwsSession, step: Duration) -> Result<(), SessionError> {
    life_cycle(sim, desk, step, "Pat", false).await?;
    life_cycle(sim, desk, step, "Sam (conference)", true).await
}

/// One chat: offered, accepted, a few messages, left; a standalone chat then gets its
/// disposition and is completed (a conference leave already ends in `Completed`).
async fn life_cycle(
    sim: &Simulator,
    desk: &GwsSession,
    step: Duration,
    customer: &str,
    conference: bool,
) -> Result<(), SessionError> {
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
    desk.operate(
        &chat,
        &ChatOperation::Leave(ClosingText::text("Goodbye, and thanks for chatting.")),
    )
    .await?;
    tokio::time::sleep(step).await;
    if conference {
        return Ok(());
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
    Ok(())
}
