use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_util::debugging::DebuggingRecorder;

use super::*;
use crate::event::{Event, EventKind, SCHEMA};
use crate::sinks::test_support::Counters;
use crate::sinks::webhook::deadletter_list;
use crate::sinks::webhook::service::Response;

/// Decides the response to the `n`th attempt (1-based) for an event id.
type Rule = Box<dyn Fn(&str, u32) -> Response + Send + Sync>;

/// A scripted receiver: records every attempt, how many overlap, and answers per `rule`
/// after `latency` (on tokio's clock).
struct Script {
    rule: Rule,
    latency: Duration,
    calls: Mutex<Vec<(String, Instant)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Script {
    fn new(
        latency: Duration,
        rule: impl Fn(&str, u32) -> Response + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            rule: Box::new(rule),
            latency,
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> Vec<(String, Instant)> {
        lock(&self.calls).clone()
    }

    fn ids(&self) -> Vec<String> {
        self.calls().into_iter().map(|(id, _)| id).collect()
    }
}

impl Poster for Arc<Script> {
    async fn post(&self, id: &str, _body: Bytes) -> Response {
        let n = {
            let mut calls = lock(&self.calls);
            calls.push((id.to_owned(), Instant::now()));
            calls.iter().filter(|(i, _)| i == id).count() as u32
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        (self.rule)(id, n)
    }
}

fn status(status: u16) -> Response {
    Response::Status {
        status,
        retry_after: None,
        body_start: String::new(),
    }
}

fn status_after(code: u16, after: u64) -> Response {
    Response::Status {
        status: code,
        retry_after: Some(Duration::from_secs(after)),
        body_start: String::new(),
    }
}

fn refused() -> Response {
    Response::NoAnswer {
        reason: "cannot connect: connection refused".to_owned(),
    }
}

/// The journal record of event `i`, as the runner hands it to the sink.
fn event(i: usize) -> Arc<Record> {
    Arc::new(Record::from_event(Event {
        schema: SCHEMA.to_owned(),
        event_id: format!("ev-{i:03}"),
        fingerprint: "00".repeat(16),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        account: "a".to_owned(),
        channel: "/v2/me/chats".to_owned(),
        kind: EventKind::Other,
        message_type: None,
        notification_type: None,
        reference_id: None,
        chat: None,
        messages: None,
        error_message: None,
        decode_error: None,
        recovered: false,
        disposition: None,
        pending: None,
        action: None,
        data: serde_json::json!({ "i": i }).into(),
    }))
}

fn events(n: usize) -> Vec<Arc<Record>> {
    (0..n).map(event).collect()
}

const POLICY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max_backoff: Duration::from_secs(300),
    max_age: Duration::from_secs(24 * 3600),
};

fn engine(
    script: &Arc<Script>,
    policy: RetryPolicy,
    in_flight: usize,
    dir: &std::path::Path,
) -> Engine<Arc<Script>> {
    Engine::new(
        "hook",
        &Url::parse("http://user:pw@127.0.0.1:9/x").unwrap(),
        Arc::clone(script),
        policy,
        in_flight,
        dir.to_owned(),
        Jitter::with_seed(3),
    )
}

#[tokio::test(start_paused = true)]
async fn backs_off_with_jitter_honours_retry_after_then_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::ZERO, |_, n| match n {
        1 => refused(),
        2 => status_after(503, 30),
        3 => status(429),
        _ => status(200),
    });
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    let engine = metrics::with_local_recorder(&recorder, || engine(&script, POLICY, 1, dir.path()));
    engine.deliver(&events(1)).await.unwrap();
    let times: Vec<Instant> = script.calls().into_iter().map(|(_, t)| t).collect();
    assert_eq!(times.len(), 4);
    // Retry 0: jitter under the 1 s ceiling; retry 1: Retry-After 30 s beats the 2 s
    // ceiling; retry 2: under the 4 s ceiling.
    assert!(times[1] - times[0] <= Duration::from_secs(1));
    assert_eq!(times[2] - times[1], Duration::from_secs(30));
    assert!(times[3] - times[2] <= Duration::from_secs(4));
    let labels = [("sink", "hook")];
    assert_eq!(counters.get(ATTEMPTS, &[("result", "retry")]), 3);
    assert_eq!(counters.get(ATTEMPTS, &[("result", "ok")]), 1);
    assert_eq!(counters.get(RETRIES, &labels), 3);
    assert_eq!(counters.get(crate::sinks::DELIVERED_EVENTS, &labels), 1);
    assert_eq!(counters.get(DEAD_LETTERS, &labels), 0);
    assert!(deadletter_list(dir.path(), Some("hook"))
        .unwrap()
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn max_age_dead_letters_with_the_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::ZERO, |_, _| Response::Status {
        status: 503,
        retry_after: None,
        body_start: "busy".to_owned(),
    });
    let policy = RetryPolicy {
        initial: Duration::from_secs(1),
        max_backoff: Duration::from_secs(4),
        max_age: Duration::from_secs(60),
    };
    let engine = engine(&script, policy, 1, dir.path());
    let start = Instant::now();
    engine.deliver(&events(2)).await.unwrap();
    let elapsed = Instant::now() - start;
    // Two events, each given up before its next wait would pass 60 s.
    assert!(elapsed <= Duration::from_secs(120), "{elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2 * (60 - 4)), "{elapsed:?}");
    let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
    assert_eq!(letters.len(), 2);
    for (letter, id) in letters.iter().zip(["ev-000", "ev-001"]) {
        assert_eq!(letter.event_id, id);
        assert_eq!(letter.status, Some(503));
        assert_eq!(letter.body_start, "busy");
        assert!(
            letter.reason.starts_with("max_age 1m reached after"),
            "{}",
            letter.reason
        );
        assert!(
            letter
                .reason
                .ends_with("last: HTTP 503 Service Unavailable"),
            "{}",
            letter.reason
        );
        let attempts = script.ids().iter().filter(|i| *i == id).count() as u32;
        assert_eq!(letter.attempts, attempts);
        assert!(attempts > 10, "{attempts}");
        assert_eq!(letter.event["event_id"], id);
    }
}

#[tokio::test(start_paused = true)]
async fn gone_disables_and_dead_letters_everything_after_without_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::ZERO, |id, _| {
        if id == "ev-000" {
            status(200)
        } else {
            Response::Status {
                status: 410,
                retry_after: None,
                body_start: "bye".to_owned(),
            }
        }
    });
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    let engine = metrics::with_local_recorder(&recorder, || engine(&script, POLICY, 1, dir.path()));
    engine.deliver(&events(4)).await.unwrap();
    assert!(engine.is_disabled());
    assert_eq!(script.ids(), ["ev-000", "ev-001"]);
    engine.deliver(&[event(7)]).await.unwrap();
    assert_eq!(script.calls().len(), 2, "no attempt while disabled");
    let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
    let summary: Vec<(&str, Option<u16>, u32, &str)> = letters
        .iter()
        .map(|l| (l.event_id.as_str(), l.status, l.attempts, l.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("ev-001", Some(410), 1, DISABLED_REASON),
            ("ev-002", None, 0, DISABLED_REASON),
            ("ev-003", None, 0, DISABLED_REASON),
            ("ev-007", None, 0, DISABLED_REASON),
        ]
    );
    assert_eq!(letters[0].body_start, "bye");
    assert_eq!(counters.get(ATTEMPTS, &[("result", "dead_letter")]), 1);
    assert_eq!(counters.get(ATTEMPTS, &[("result", "disabled")]), 3);
    assert_eq!(counters.get(DEAD_LETTERS, &[("sink", "hook")]), 4);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_dead_letter_at_once_with_status_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::ZERO, |id, _| {
        let code = match id {
            "ev-000" => 400,
            "ev-001" => 302,
            "ev-002" => 501,
            "ev-003" => 404,
            _ => 204,
        };
        Response::Status {
            status: code,
            retry_after: None,
            body_start: format!("body of {id}"),
        }
    });
    let engine = engine(&script, POLICY, 1, dir.path());
    engine.deliver(&events(5)).await.unwrap();
    assert_eq!(script.calls().len(), 5, "one attempt each, no retry");
    let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
    let summary: Vec<(Option<u16>, &str, &str)> = letters
        .iter()
        .map(|l| (l.status, l.reason.as_str(), l.body_start.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(400), "HTTP 400 Bad Request", "body of ev-000"),
            (
                Some(302),
                "HTTP 302 Found (redirects are not followed)",
                "body of ev-001"
            ),
            (Some(501), "HTTP 501 Not Implemented", "body of ev-002"),
            (Some(404), "HTTP 404 Not Found", "body of ev-003"),
        ]
    );
    assert!(!engine.is_disabled());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_delivery_keeps_the_max_age_clock_and_attempt_count() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::ZERO, |_, _| refused());
    let policy = RetryPolicy {
        initial: Duration::from_secs(1),
        max_backoff: Duration::from_secs(2),
        max_age: Duration::from_secs(60),
    };
    let engine = engine(&script, policy, 1, dir.path());
    let batch = events(1);
    let cancelled = tokio::time::timeout(Duration::from_secs(20), engine.deliver(&batch)).await;
    assert!(cancelled.is_err(), "still retrying at 20 s");
    let attempts_before = script.calls().len();
    assert!(attempts_before >= 10, "{attempts_before}");
    assert!(
        deadletter_list(dir.path(), None).unwrap().is_empty(),
        "nothing lost or given up yet"
    );
    // The runner comes back with the same batch after the event's max_age has passed.
    tokio::time::advance(Duration::from_secs(45)).await;
    engine.deliver(&batch).await.unwrap();
    assert_eq!(
        script.calls().len(),
        attempts_before,
        "given up without another attempt"
    );
    let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts as usize, attempts_before);
    assert!(
        letters[0].reason.contains("connection refused"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].status, None);
}

#[tokio::test(start_paused = true)]
async fn ordered_is_one_at_a_time_in_order_with_head_of_line_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::from_millis(10), |id, n| {
        if id == "ev-002" && n < 3 {
            status(503)
        } else {
            status(200)
        }
    });
    let engine = engine(&script, POLICY, 1, dir.path());
    engine.deliver(&events(5)).await.unwrap();
    assert_eq!(
        script.ids(),
        ["ev-000", "ev-001", "ev-002", "ev-002", "ev-002", "ev-003", "ev-004"]
    );
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unordered_keeps_concurrency_bounded_and_finishes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(Duration::from_millis(100), |id, n| {
        // Every third event fails twice first.
        let i: usize = id[3..].parse().unwrap();
        if i.is_multiple_of(3) && n < 3 {
            status(503)
        } else {
            status(200)
        }
    });
    let engine = engine(&script, POLICY, 4, dir.path());
    engine.deliver(&events(30)).await.unwrap();
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 4);
    let ids = script.ids();
    for i in 0..30 {
        let id = format!("ev-{i:03}");
        let expected = if i % 3 == 0 { 3 } else { 1 };
        assert_eq!(ids.iter().filter(|x| **x == id).count(), expected, "{id}");
    }
    assert!(deadletter_list(dir.path(), None).unwrap().is_empty());
    // A failing event did not hold back the others: ev-001 went before ev-000's retry.
    let first_retry = ids
        .iter()
        .enumerate()
        .filter(|(_, x)| *x == "ev-000")
        .nth(1)
        .unwrap()
        .0;
    assert!(ids[..first_retry].contains(&"ev-001".to_owned()));
}

#[tokio::test]
async fn an_unwritable_dead_letter_file_fails_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let script = Script::new(Duration::ZERO, |_, _| status(400));
    let engine = engine(&script, POLICY, 1, &not_a_dir);
    let err = engine
        .deliver(&events(1))
        .await
        .expect_err("cannot dead-letter");
    let text = err.to_string();
    assert!(
        text.starts_with("sink `hook`: cannot write dead letters to"),
        "{text}"
    );
}
