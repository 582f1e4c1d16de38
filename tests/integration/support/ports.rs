//! Loopback ports and waits: a free port on 127.0.0.1, the deadline every wait shares, and the
//! one polling wait for a condition. Also compiled into `benches/common` for the free port.

use std::net::TcpListener;
use std::time::Duration;

use tokio::time::Instant;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` holds, polling every 10 ms, failing with `what` after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
