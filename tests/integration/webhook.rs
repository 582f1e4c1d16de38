//! Integration tests of the webhook sink against a real HTTP receiver on 127.0.0.1 (axum): the
//! receiver verifies every Standard Webhooks signature with both rotation secrets, records what
//! it saw, and answers per a rule the test can change while the sink runs.
//!
//! Retry delays are configured in milliseconds, so the whole file runs in a few seconds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use chatwatch::event::Event;
use chatwatch::secret::Secret;
use chatwatch::sinks::deliver::Deliver;
use chatwatch::sinks::webhook::{
    dead_letter_path, deadletter_list, deadletter_redrive, decode_secret, verify, SecretSource,
    WebhookAuth, WebhookSink, WebhookSinkConfig, DISABLED_REASON,
};
use chatwatch::sinks::Record;
use tokio::net::TcpListener;
use tokio::time::Instant;
use url::Url;

use crate::support::events::event;

/// The rotation pair: the current secret in Standard Webhooks form and the previous one raw.
const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "an-older-raw-secret-of-32-bytes!";

/// Upper bound for any single test step.
const DEADLINE: Duration = Duration::from_secs(30);

fn batch(n: usize) -> Vec<Arc<Event>> {
    (0..n)
        .map(|i| Arc::new(event(i, "LeftChat", Some("Chatting"))))
        .collect()
}

/// What the runner hands the sink for `events`: their journal records.
fn records(events: &[Arc<Event>]) -> Vec<Arc<Record>> {
    events
        .iter()
        .map(|e| Arc::new(Record::from_event((**e).clone())))
        .collect()
}

fn ids(events: &[Arc<Event>]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// What the receiver answers.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: String) -> Self {
        self.body = body;
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Picks the answer from the `webhook-id` and how many requests with that id came before
/// (0 for the first).
type Rule = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    at: Instant,
    status: u16,
    body: Bytes,
    headers: HeaderMap,
}

struct ReceiverState {
    rule: Mutex<Rule>,
    seen: Mutex<Vec<Seen>>,
    redirected: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

/// A Standard Webhooks receiver on 127.0.0.1.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts on a free port.
    async fn start(rule: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, rule)
    }

    /// Serves on `listener`.
    fn serve(
        listener: TcpListener,
        rule: impl Fn(&str, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(ReceiverState {
            rule: Mutex::new(Arc::new(rule)),
            seen: Mutex::new(Vec::new()),
            redirected: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            problems: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/elsewhere", any(elsewhere))
            .with_state(Arc::clone(&state));
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn url(&self) -> Url {
        url_for(self.addr)
    }

    fn set_rule(&self, rule: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) {
        *self.state.rule.lock().unwrap() = Arc::new(rule);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The ids answered (or being answered) with 2xx, in arrival order.
    fn delivered(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| (200..300).contains(&s.status))
            .map(|s| s.id)
            .collect()
    }

    /// Fails the test if any request was malformed or badly signed.
    fn assert_no_problems(&self) {
        let problems = self.state.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "receiver problems: {problems:#?}");
    }
}

fn url_for(addr: SocketAddr) -> Url {
    Url::parse(&format!("http://{addr}/hook")).unwrap()
}

/// Checks one request the way a Standard Webhooks receiver would, recording any problem.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {name}"))
    };
    let id = get("webhook-id")?;
    let timestamp: i64 = get("webhook-timestamp")?
        .parse()
        .map_err(|_| "bad webhook-timestamp".to_owned())?;
    let signature = get("webhook-signature")?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return Err(format!(
            "{id}: timestamp {timestamp} is {}s off",
            now - timestamp
        ));
    }
    if signature.split(' ').count() != 2 {
        return Err(format!("{id}: expected two signatures, got {signature}"));
    }
    for secret in [NEW_SECRET, OLD_SECRET] {
        let key = decode_secret(secret).unwrap();
        if !verify(&key, &id, timestamp, body, &signature) {
            return Err(format!(
                "{id}: signature does not verify with a rotation secret"
            ));
        }
    }
    if get("content-type")? != "application/json" {
        return Err(format!("{id}: wrong content-type"));
    }
    let event: Event =
        serde_json::from_slice(body).map_err(|e| format!("{id}: body is not an event: {e}"))?;
    if event.event_id != id {
        return Err(format!("webhook-id {id} but event_id {}", event.event_id));
    }
    Ok(id)
}

async fn hook(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let _in_flight = InFlight::enter(&state);
    let id = match check(&headers, &body) {
        Ok(id) => id,
        Err(problem) => {
            state.problems.lock().unwrap().push(problem);
            "?".to_owned()
        }
    };
    // Recorded on arrival: a request the sink gives up on (timeout) is dropped mid-answer.
    let answer = {
        let mut seen = state.seen.lock().unwrap();
        let before = seen.iter().filter(|s| s.id == id).count();
        let rule = Arc::clone(&state.rule.lock().unwrap());
        let answer = rule(&id, before);
        seen.push(Seen {
            id,
            at,
            status: answer.status,
            body,
            headers,
        });
        answer
    };
    tokio::time::sleep(answer.delay).await;
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Counts a request in flight until dropped (also when the client hangs up).
struct InFlight(Arc<ReceiverState>);

impl InFlight {
    fn enter(state: &Arc<ReceiverState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn elsewhere(State(state): State<Arc<ReceiverState>>) -> StatusCode {
    state.redirected.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

/// A sink configuration for `url` with both rotation secrets and millisecond retries.
fn config(url: Url, dead_letters: &Path) -> WebhookSinkConfig {
    let mut cfg = WebhookSinkConfig::new(
        url,
        vec![
            SecretSource::Value(Secret::new(NEW_SECRET)),
            SecretSource::Value(Secret::new(OLD_SECRET)),
        ],
        dead_letters,
    );
    cfg.retry_initial = Duration::from_millis(20);
    cfg.retry_max_backoff = Duration::from_millis(200);
    cfg.timeout = Duration::from_secs(5);
    cfg.use_env_proxy = false;
    cfg
}

async fn deliver(sink: &mut WebhookSink, events: &[Arc<Event>]) {
    tokio::time::timeout(DEADLINE, sink.deliver(&records(events)))
        .await
        .expect("deliver finished in time")
        .expect("deliver succeeded");
}

#[tokio::test]
async fn receiver_down_then_503_with_retry_after_then_200_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port and close it: the receiver is down.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut sink = config(url_for(addr), dir.path())
        .build("crm")
        .await
        .expect("build");
    let events = batch(10);
    let sent = records(&events);
    let delivery = tokio::spawn(async move {
        let result = tokio::time::timeout(DEADLINE, sink.deliver(&sent)).await;
        (sink, result)
    });
    // Down for a while: the head event is retried against a closed port.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!delivery.is_finished());
    // Up, but overloaded: the first two requests get 503 with Retry-After: 1, then 200.
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let receiver = Receiver::serve(TcpListener::bind(addr).await.unwrap(), move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Answer::status(503).header("retry-after", "1")
        } else {
            Answer::status(200)
        }
    });
    let (sink, result) = delivery.await.unwrap();
    result.expect("in time").expect("delivered");
    receiver.assert_no_problems();
    // Every event, once, in batch order.
    assert_eq!(receiver.delivered(), ids(&events));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 12, "two 503s, then ten deliveries");
    assert_eq!(seen[0].id, events[0].event_id);
    assert_eq!(
        seen[1].id, events[0].event_id,
        "the head event is retried first"
    );
    // Retry-After is a floor under the 20..200 ms backoff.
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
    assert!(seen[2].at - seen[1].at >= Duration::from_secs(1));
    // Duplicates only ever with the same webhook-id and the same body.
    let mut bodies: HashMap<&str, &Bytes> = HashMap::new();
    for s in &seen {
        let first = bodies.entry(s.id.as_str()).or_insert(&s.body);
        assert_eq!(*first, &s.body, "a retry of {} sent a different body", s.id);
    }
    assert_eq!(
        seen[0].body,
        serde_json::to_vec(&*events[0]).unwrap(),
        "the body is the event record"
    );
    assert!(deadletter_list(dir.path(), Some("crm")).unwrap().is_empty());
    assert!(!sink.is_disabled());
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_dead_letters_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_, _| Answer::status(410).body("gone for good".into())).await;
    let mut sink = config(receiver.url(), dir.path())
        .build("crm")
        .await
        .unwrap();
    let events = batch(3);
    deliver(&mut sink, &events).await;
    assert!(sink.is_disabled());
    deliver(&mut sink, &batch(5)[3..]).await;
    receiver.assert_no_problems();
    assert_eq!(receiver.seen().len(), 1, "nothing is sent once disabled");
    let letters = deadletter_list(dir.path(), Some("crm")).unwrap();
    let summary: Vec<(Option<u16>, &str, u32)> = letters
        .iter()
        .map(|l| (l.status, l.reason.as_str(), l.attempts))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(410), DISABLED_REASON, 1),
            (None, DISABLED_REASON, 0),
            (None, DISABLED_REASON, 0),
            (None, DISABLED_REASON, 0),
            (None, DISABLED_REASON, 0),
        ]
    );
    assert_eq!(letters[0].body_start, "gone for good");
    assert_eq!(
        letters
            .iter()
            .map(|l| l.event_id.clone())
            .collect::<Vec<_>>(),
        ids(&batch(5))
    );
}

#[tokio::test]
async fn bad_request_dead_letters_with_status_and_the_start_of_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let long_body = format!("{{\"error\":\"{}\"}}", "é".repeat(400));
    let body = long_body.clone();
    let receiver = Receiver::start(move |_, _| Answer::status(400).body(body.clone())).await;
    let mut sink = config(receiver.url(), dir.path())
        .build("crm")
        .await
        .unwrap();
    let events = batch(2);
    deliver(&mut sink, &events).await;
    receiver.assert_no_problems();
    assert_eq!(receiver.seen().len(), 2, "no retry for a 400");
    assert!(!sink.is_disabled());
    let letters = deadletter_list(dir.path(), Some("crm")).unwrap();
    assert_eq!(letters.len(), 2);
    let letter = &letters[0];
    assert_eq!(letter.event_id, events[0].event_id);
    assert_eq!(letter.status, Some(400));
    assert_eq!(letter.reason, "HTTP 400 Bad Request");
    assert_eq!(letter.attempts, 1);
    // The first 512 bytes (a split character becomes U+FFFD).
    let start = String::from_utf8_lossy(&long_body.as_bytes()[..512]).into_owned();
    assert_eq!(letter.body_start, start);
    assert_eq!(
        serde_json::from_value::<Event>(letter.event.clone()).unwrap(),
        *events[0]
    );
    assert_eq!(sink.dead_letter_path(), dead_letter_path(dir.path(), "crm"));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver =
        Receiver::start(|_, _| Answer::status(307).header("location", "/elsewhere")).await;
    let mut sink = config(receiver.url(), dir.path())
        .build("crm")
        .await
        .unwrap();
    deliver(&mut sink, &batch(1)).await;
    receiver.assert_no_problems();
    assert_eq!(receiver.state.redirected.load(Ordering::SeqCst), 0);
    assert_eq!(receiver.seen().len(), 1);
    let letters = deadletter_list(dir.path(), Some("crm")).unwrap();
    assert_eq!(letters[0].status, Some(307));
    assert!(
        letters[0].reason.contains("redirects are not followed"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test]
async fn deadletter_list_and_redrive_once_the_receiver_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_, _| Answer::status(422).body("schema mismatch".into())).await;
    let cfg = config(receiver.url(), dir.path());
    let mut crm = cfg.build("crm").await.unwrap();
    let mut audit = cfg.build("audit").await.unwrap();
    let events = batch(4);
    deliver(&mut crm, &events[..3]).await;
    deliver(&mut audit, &events[3..]).await;
    let listed: Vec<(String, String)> = deadletter_list(dir.path(), None)
        .unwrap()
        .into_iter()
        .map(|l| (l.sink, l.event_id))
        .collect();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0], ("audit".to_owned(), events[3].event_id.clone()));
    assert_eq!(deadletter_list(dir.path(), Some("crm")).unwrap().len(), 3);

    // Partly fixed: the second event still fails (transiently).
    let stubborn = events[1].event_id.clone();
    receiver.set_rule(move |id, _| {
        if id == stubborn {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    });
    let report = deadletter_redrive(dir.path(), "crm", &cfg).await.unwrap();
    assert_eq!(
        (report.attempted, report.delivered, report.remaining),
        (3, 2, 1)
    );
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].event_id, events[1].event_id);
    assert_eq!(report.failed[0].status, Some(503));
    let left = deadletter_list(dir.path(), Some("crm")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_id, events[1].event_id);
    assert_eq!(left[0].status, Some(503));
    assert_eq!(left[0].attempts, 2, "one by the sink, one by the redrive");

    // Fixed: the redrive delivers the rest and empties the file.
    receiver.set_rule(|_, _| Answer::status(204));
    let report = deadletter_redrive(dir.path(), "crm", &cfg).await.unwrap();
    assert_eq!(
        (report.attempted, report.delivered, report.remaining),
        (1, 1, 0)
    );
    assert!(deadletter_list(dir.path(), Some("crm")).unwrap().is_empty());
    assert_eq!(
        std::fs::read(dead_letter_path(dir.path(), "crm")).unwrap(),
        b""
    );
    // The other sink's dead letters are untouched.
    assert_eq!(deadletter_list(dir.path(), Some("audit")).unwrap().len(), 1);
    // A sink without dead letters: nothing sent, no file created.
    let report = deadletter_redrive(dir.path(), "nobody", &cfg)
        .await
        .unwrap();
    assert_eq!((report.attempted, report.remaining), (0, 0));
    assert!(!dead_letter_path(dir.path(), "nobody").exists());

    receiver.assert_no_problems();
    // Every crm event finally delivered once, with its original webhook-id and body.
    let mut delivered = receiver.delivered();
    delivered.sort();
    assert_eq!(delivered, ids(&events[..3]));
    for s in receiver.seen() {
        let original = events.iter().find(|e| e.event_id == s.id).unwrap();
        assert_eq!(s.body, serde_json::to_vec(&**original).unwrap());
    }
}

#[tokio::test]
async fn unordered_delivers_everything_with_bounded_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|id, before| {
        // Every event whose id ends in an even digit fails once.
        let even = id.ends_with(['0', '2', '4', '6', '8']);
        let status = if even && before == 0 { 503 } else { 200 };
        Answer::status(status).delay(Duration::from_millis(30))
    })
    .await;
    let mut cfg = config(receiver.url(), dir.path());
    cfg.ordered = false;
    cfg.concurrency = 3;
    let mut sink = cfg.build("crm").await.unwrap();
    let events = batch(20);
    deliver(&mut sink, &events).await;
    receiver.assert_no_problems();
    let max = receiver.state.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "the receiver saw {max} requests at once");
    assert!(max >= 2, "requests were not parallel ({max})");
    let mut delivered = receiver.delivered();
    delivered.sort();
    assert_eq!(delivered, ids(&events), "each event delivered exactly once");
    assert_eq!(receiver.seen().len(), 30, "ten failed once");
    assert!(deadletter_list(dir.path(), None).unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_the_event_is_retried_with_auth_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let receiver = Receiver::start(|_, before| {
        let delay = if before == 0 { 1_000 } else { 0 };
        Answer::status(200).delay(Duration::from_millis(delay))
    })
    .await;
    let mut cfg = config(receiver.url(), &dir.path().join("dl"));
    cfg.timeout = Duration::from_millis(200);
    cfg.auth = Some(WebhookAuth::Bearer(SecretSource::File(token_file)));
    cfg.headers = BTreeMap::from([("x-tenant".to_owned(), Secret::new("acme"))]);
    let mut sink = cfg.build("crm").await.unwrap();
    let started = Instant::now();
    deliver(&mut sink, &batch(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "did not wait for the slow answer"
    );
    receiver.assert_no_problems();
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].id, seen[1].id);
    for s in &seen {
        assert_eq!(s.headers["authorization"], "Bearer s3cr3t-token");
        assert_eq!(s.headers["x-tenant"], "acme");
    }
    assert!(deadletter_list(&dir.path().join("dl"), None)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn dropping_deliver_mid_retry_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_, _| Answer::status(503)).await;
    let mut sink = config(receiver.url(), dir.path())
        .build("crm")
        .await
        .unwrap();
    let events = batch(3);
    // Shutdown in the middle of the retries: the future is dropped.
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), sink.deliver(&records(&events))).await;
    assert!(dropped.is_err(), "still retrying");
    assert!(receiver.seen().len() >= 2);
    assert!(deadletter_list(dir.path(), None).unwrap().is_empty());
    // The runner delivers the same batch again once the receiver recovers.
    receiver.set_rule(|_, _| Answer::status(200));
    deliver(&mut sink, &events).await;
    receiver.assert_no_problems();
    // A request abandoned by the drop may still reach the receiver after the switch to 200:
    // at least once, so a duplicate is possible, but only of the head event with its own id.
    let mut delivered = receiver.delivered();
    delivered.dedup();
    assert_eq!(delivered, ids(&events));
    assert!(deadletter_list(dir.path(), None).unwrap().is_empty());
}

#[tokio::test]
async fn build_errors_name_the_sink_and_key_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Url::parse("http://127.0.0.1:9/hook").unwrap(), dir.path());
    cfg.secrets
        .push(SecretSource::Value(Secret::new("whsec_leak?me")));
    let err = cfg.build("crm").await.unwrap_err().to_string();
    assert!(
        err.starts_with("sink `crm`: invalid `secrets[2].value`"),
        "{err}"
    );
    assert!(!err.contains("leak"), "{err}");
    cfg.secrets.pop();
    cfg.secrets
        .push(SecretSource::File(dir.path().join("missing-secret")));
    let err = cfg.build("crm").await.unwrap_err().to_string();
    assert!(
        err.starts_with("sink `crm`: invalid `secrets[2].file`: cannot read"),
        "{err}"
    );
    cfg.secrets.pop();
    let err = cfg.build("../escape").await.unwrap_err().to_string();
    assert!(err.contains("dead-letter file"), "{err}");
    // A dead-letter directory that cannot be created fails at build.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    cfg.dead_letter_dir = Some(blocker.join("sub"));
    let err = cfg.build("crm").await.unwrap_err().to_string();
    assert!(err.starts_with("sink `crm`: cannot open"), "{err}");
}
