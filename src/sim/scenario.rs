//! The scenario driver: offers chats to agents at a steady rate, so demos and benchmarks have
//! traffic without a script of their own.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{ChatOffer, Simulator};

/// What [`run_scenario`] offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// How many chats to offer; 0 means "until stopped".
    pub chats: usize,
    /// Offers per second. Zero, negative or not finite means "as fast as possible" (yielding to
    /// the runtime between offers).
    pub rate_per_sec: f64,
    /// The agents (usernames) the chats go to, round-robin. Empty: nothing is offered.
    pub agents: Vec<String>,
}

/// The pause between offers, or `None` for no pacing.
fn period(rate_per_sec: f64) -> Option<Duration> {
    if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
        return None;
    }
    // A very low rate is capped at one offer a day; a very high one is not paced at all.
    let p = Duration::try_from_secs_f64(1.0 / rate_per_sec)
        .unwrap_or(Duration::from_secs(86_400))
        .min(Duration::from_secs(86_400));
    (p >= Duration::from_micros(1)).then_some(p)
}

/// The `n`-th offer of a scenario (1-based).
fn offer(n: usize) -> ChatOffer {
    let mut user_data = Map::new();
    user_data.insert("Subject".into(), Value::from(format!("Scenario chat {n}")));
    user_data.insert("ScenarioIndex".into(), json!(n));
    ChatOffer {
        customer_nickname: format!("Customer {n}"),
        user_data,
        conference: false,
        first_message: Some(format!("Hello, this is customer {n}.")),
    }
}

/// Offers `scenario.chats` chats round-robin to `scenario.agents` at `scenario.rate_per_sec`
/// (the first at once), until done or `stop` is cancelled. Returns how many were offered.
pub async fn run_scenario(sim: &Simulator, scenario: &Scenario, stop: CancellationToken) -> usize {
    if scenario.agents.is_empty() {
        return 0;
    }
    let mut ticker = period(scenario.rate_per_sec).map(|p| {
        let mut t = tokio::time::interval(p);
        // Burst keeps the average rate when the runtime falls behind.
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut offered = 0;
    while scenario.chats == 0 || offered < scenario.chats {
        match ticker.as_mut() {
            Some(t) => {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = t.tick() => {}
                }
            }
            None => {
                if stop.is_cancelled() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let agent = &scenario.agents[offered % scenario.agents.len()];
        sim.offer_chat(agent, offer(offered + 1));
        offered += 1;
    }
    offered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing() {
        assert_eq!(period(0.0), None);
        assert_eq!(period(-3.0), None);
        assert_eq!(period(f64::NAN), None);
        assert_eq!(period(f64::INFINITY), None);
        assert_eq!(period(1e12), None);
        assert_eq!(period(4.0), Some(Duration::from_millis(250)));
        assert_eq!(period(1e-300), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn offers_are_numbered() {
        let o = offer(3);
        assert_eq!(o.customer_nickname, "Customer 3");
        assert_eq!(o.user_data["ScenarioIndex"], 3);
    }
}
