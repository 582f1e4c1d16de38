//! Retry backoff: linear steps, capped, reset on success (the CometD clients' reconnect policy,
//! `reference/bayeux.md` §1.7). Pure arithmetic; the caller owns the clock. A crate-level
//! primitive: the Bayeux protocol paces its reconnects with it and the delivery loop its sink
//! retries, and it knows neither.

use std::time::Duration;

/// A linear backoff: `increment`, `2 × increment`, ... up to `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    increment: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff that grows by `increment` per failure up to `max`.
    pub fn new(increment: Duration, max: Duration) -> Backoff {
        Backoff {
            increment,
            max,
            current: Duration::ZERO,
        }
    }

    /// The delay before the next attempt; grows the backoff for the one after.
    pub fn next_delay(&mut self) -> Duration {
        self.current = (self.current + self.increment).min(self.max);
        self.current
    }

    /// The delay [`next_delay`](Self::next_delay) would return, without growing it.
    pub fn peek(&self) -> Duration {
        (self.current + self.increment).min(self.max)
    }

    /// The delay last returned (zero after a reset).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Back to no delay, after a success.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_linearly_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!(b.peek(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(3));
        assert_eq!(b.next_delay(), Duration::from_secs(3));
        b.reset();
        assert_eq!(b.current(), Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
