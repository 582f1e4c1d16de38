//! The webhook sink's delivery policy, pure: how a response is classified, how long to wait
//! before the next attempt, and when to give up. Nothing here sleeps, reads a clock or draws a
//! random number by itself; the callers pass `now` and a uniform random value, so every rule is
//! unit-tested exactly.
//!
//! - **Classification** ([`classify_status`]): 2xx delivered; 408, 429 and 5xx except 501 are
//!   transient (retry); `410 Gone` disables the endpoint; every other status, including 3xx
//!   (redirects are never followed: Standard Webhooks counts them as failures, and following one
//!   would send the signed event to a host nobody configured) and 501, is permanent (dead
//!   letter). Connection errors and timeouts are transient.
//! - **Backoff** ([`backoff`]): full jitter, a uniform random delay in
//!   `[0, min(retry_max_backoff, retry_initial · 2^n)]` before retry `n` (0-based).
//! - **`Retry-After`** ([`parse_retry_after`]): seconds or an HTTP date; it is a floor under the
//!   jittered delay, never a ceiling.
//! - **Maximum age** ([`decide`]): an event whose next attempt would start later than `max_age`
//!   after its first attempt is given up now (dead-lettered) instead of after one more wait.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What a response (or its absence) means for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the receiver has the event.
    Delivered,
    /// Worth another attempt: connect error, timeout, 408, 429, 5xx except 501.
    Transient,
    /// `410 Gone`: the receiver asks us to stop; the endpoint is disabled.
    Gone,
    /// Never going to work as is (3xx, 4xx other than 408/410/429, 501): dead letter.
    Permanent,
}

/// Classifies an HTTP status. See the module documentation.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 429 => Verdict::Transient,
        501 => Verdict::Permanent,
        500..=599 => Verdict::Transient,
        _ => Verdict::Permanent,
    }
}

/// The retry settings of one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay.
    pub initial: Duration,
    /// The largest ceiling any retry's delay can have.
    pub max_backoff: Duration,
    /// How long after an event's first attempt retries stop.
    pub max_age: Duration,
}

/// The ceiling of retry `n`'s delay (0-based): `min(max_backoff, initial · 2^n)`, without
/// overflowing.
pub fn backoff_ceiling(policy: &RetryPolicy, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    policy
        .initial
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(policy.max_backoff)
}

/// Full jitter: `unit` (uniform in `[0, 1]`) times the ceiling of retry `n`.
pub fn backoff(policy: &RetryPolicy, n: u32, unit: f64) -> Duration {
    backoff_ceiling(policy, n).mul_f64(unit.clamp(0.0, 1.0))
}

/// Parses a `Retry-After` value: a non-negative number of seconds, or an HTTP date (measured
/// from `now`; a date in the past means no wait). `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryIn(Duration),
    /// Stop: the next attempt would start more than `max_age` after the first one.
    GiveUp,
}

/// Decides what follows transient failure number `n + 1` of an event (so `n` retries have
/// already been made) that was first attempted at `first_attempt`: the jittered backoff
/// ([`backoff`] with `unit`), raised to `retry_after` if the receiver asked for more, unless the
/// next attempt would then start after `first_attempt + max_age`.
pub fn decide(
    policy: &RetryPolicy,
    first_attempt: Instant,
    now: Instant,
    n: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Decision {
    let delay = backoff(policy, n, unit).max(retry_after.unwrap_or(Duration::ZERO));
    let next = now.checked_add(delay);
    let deadline = first_attempt.checked_add(policy.max_age);
    match (next, deadline) {
        (Some(next), Some(deadline)) if next > deadline => Decision::GiveUp,
        (None, Some(_)) => Decision::GiveUp,
        _ => Decision::RetryIn(delay),
    }
}

/// Whether an event first attempted at `first_attempt` is past its maximum age at `now`.
pub fn expired(policy: &RetryPolicy, first_attempt: Instant, now: Instant) -> bool {
    now.checked_duration_since(first_attempt)
        .is_some_and(|age| age >= policy.max_age)
}

/// A small, lock-free source of uniform values in `[0, 1)` for jitter (SplitMix64 over an atomic
/// counter, seeded from the process's random hash keys). Not for cryptography.
#[derive(Debug)]
pub struct Jitter(std::sync::atomic::AtomicU64);

impl Jitter {
    /// A generator with a random seed.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(seed)
    }

    /// A generator with a fixed seed (tests).
    pub fn with_seed(seed: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(seed))
    }

    /// The next value, uniform in `[0, 1)`.
    pub fn next_unit(&self) -> f64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .0
            .fetch_add(GAMMA, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits as a fraction of 2^53.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        max_age: Duration::from_secs(24 * 3600),
    };

    #[test]
    fn status_classes() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(s), Verdict::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Verdict::Transient, "{s}");
        }
        assert_eq!(classify_status(410), Verdict::Gone);
        for s in [100, 301, 302, 307, 308, 400, 401, 403, 404, 413, 422, 501] {
            assert_eq!(classify_status(s), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn ceiling_doubles_from_initial_up_to_the_cap_without_overflow() {
        let ceilings: Vec<u64> = (0..12)
            .map(|n| backoff_ceiling(&POLICY, n).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_ceiling(&POLICY, 40), Duration::from_secs(300));
        assert_eq!(backoff_ceiling(&POLICY, u32::MAX), Duration::from_secs(300));
        let huge = RetryPolicy {
            max_backoff: Duration::MAX,
            ..POLICY
        };
        assert_eq!(backoff_ceiling(&huge, 31), Duration::from_secs(1 << 31));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(backoff(&POLICY, 3, 0.0), Duration::ZERO);
        assert_eq!(backoff(&POLICY, 3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(&POLICY, 3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(&POLICY, 3, 7.0), Duration::from_secs(8), "clamped");
        let jitter = Jitter::with_seed(7);
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.next_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(draws.iter().any(|u| *u < 0.05) && draws.iter().any(|u| *u > 0.95));
        // Different seeds, different sequences.
        assert_ne!(
            Jitter::with_seed(1).next_unit(),
            Jitter::with_seed(2).next_unit()
        );
    }

    #[test]
    fn retry_after_in_seconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a past date means no wait"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_not_a_ceiling() {
        let t0 = Instant::now();
        // Jitter would say 4 s (half of 8): Retry-After 30 wins, Retry-After 1 does not.
        assert_eq!(
            decide(&POLICY, t0, t0, 3, 0.5, Some(Duration::from_secs(30))),
            Decision::RetryIn(Duration::from_secs(30))
        );
        assert_eq!(
            decide(&POLICY, t0, t0, 3, 0.5, Some(Duration::from_secs(1))),
            Decision::RetryIn(Duration::from_secs(4))
        );
        assert_eq!(
            decide(&POLICY, t0, t0, 3, 0.5, None),
            Decision::RetryIn(Duration::from_secs(4))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_stops_retries_before_a_wait_that_would_exceed_it() {
        let policy = RetryPolicy {
            max_age: Duration::from_secs(60),
            ..POLICY
        };
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(50)).await;
        let now = Instant::now();
        assert_eq!(
            decide(&policy, t0, now, 3, 1.0, None),
            Decision::RetryIn(Duration::from_secs(8)),
            "50 + 8 <= 60"
        );
        assert_eq!(
            decide(&policy, t0, now, 4, 1.0, None),
            Decision::GiveUp,
            "50 + 16 > 60"
        );
        assert_eq!(
            decide(&policy, t0, now, 0, 0.0, Some(Duration::from_secs(11))),
            Decision::GiveUp,
            "a Retry-After beyond the deadline gives up now"
        );
        assert!(!expired(&policy, t0, now));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(expired(&policy, t0, Instant::now()));
        let never = RetryPolicy {
            max_age: Duration::MAX,
            ..POLICY
        };
        assert_eq!(
            decide(&never, t0, Instant::now(), 100, 1.0, None),
            Decision::RetryIn(Duration::from_secs(300))
        );
    }

    /// Drives the policy through a simulated outage with tokio's paused clock: the waits grow
    /// under the ceiling, honour Retry-After, and stop at max_age.
    #[tokio::test(start_paused = true)]
    async fn simulated_outage_schedule() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_age: Duration::from_secs(20),
        };
        let jitter = Jitter::with_seed(42);
        let first = Instant::now();
        let mut waits = Vec::new();
        let mut n = 0;
        loop {
            // Every fifth failure says Retry-After: 3.
            let retry_after = (n % 5 == 4).then(|| Duration::from_secs(3));
            match decide(
                &policy,
                first,
                Instant::now(),
                n,
                jitter.next_unit(),
                retry_after,
            ) {
                Decision::RetryIn(d) => {
                    assert!(d <= backoff_ceiling(&policy, n).max(retry_after.unwrap_or_default()));
                    if let Some(ra) = retry_after {
                        assert!(d >= ra);
                    }
                    waits.push(d);
                    tokio::time::sleep(d).await;
                    n += 1;
                }
                Decision::GiveUp => break,
            }
        }
        let elapsed = Instant::now() - first;
        assert!(elapsed <= policy.max_age, "{elapsed:?}");
        assert!(elapsed >= policy.max_age - policy.max_backoff - Duration::from_secs(3));
        assert!(waits.len() > 10, "{waits:?}");
    }
}
