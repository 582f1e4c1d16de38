//! `chatwatch sim`: the GWS simulator as a standalone server, with an optional scenario that
//! offers chats at a steady rate, until Ctrl-C.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::sim::{run_scenario, Scenario, SimConfig, Simulator};

/// Options of `chatwatch sim`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The simulator's behaviour (users, timing, CSRF).
    pub config: SimConfig,
    /// Traffic to generate, if any.
    pub scenario: Option<Scenario>,
}

/// Runs the simulator until `shutdown` is cancelled.
pub async fn run(opts: SimOptions, shutdown: CancellationToken) -> std::io::Result<()> {
    let users: Vec<String> = opts
        .config
        .users
        .iter()
        .map(|u| u.username.clone())
        .collect();
    let sim = Simulator::start(opts.listen, opts.config).await?;
    println!("GWS simulator listening on {}", sim.base_url());
    println!("  users: {}", users.join(", "));
    println!("  CometD endpoint: {}api/v2/notifications", sim.base_url());
    println!("  side door: POST /sim/offer {{\"agent\":\"agent1\",\"customer\":\"Pat\"}}, /sim/expire-bayeux, /sim/expire-http, /sim/restart; GET /sim/requests");
    if let Some(scenario) = &opts.scenario {
        let offered = tokio::select! {
            n = run_scenario(&sim, scenario, shutdown.clone()) => n,
            _ = shutdown.cancelled() => 0,
        };
        if offered > 0 {
            println!("scenario offered {offered} chats");
        }
    }
    shutdown.cancelled().await;
    sim.shutdown().await;
    Ok(())
}
