//! The GWS simulator (`chatwatch::sim`) in-process on a free loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use chatwatch::sim::{SimConfig, Simulator};

/// Starts the simulator with `cfg` on 127.0.0.1, any free port.
pub async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
        .await
        .expect("simulator starts")
}

/// Starts the simulator holding connects `bayeux_timeout` and expiring CometD sessions
/// `max_interval` after their last connect.
pub async fn start_with(bayeux_timeout: Duration, max_interval: Duration) -> Simulator {
    start(SimConfig {
        bayeux_timeout,
        max_interval,
        ..SimConfig::default()
    })
    .await
}
