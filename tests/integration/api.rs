//! The operations API through the real binary and the GWS simulator: every operation reaches
//! GWS through the daemon's own session (the simulator's request log shows it), every
//! validation refusal answers 422 and sends nothing, tokens are required and checked, the
//! tracked chats show state and pending age, `wait` returns the answering event, GWS outcomes
//! map to their statuses, and schemathesis finds the server true to `openapi/chatwatch.v1.json`
//! (`bash tests/api/install.sh` installs it; without it the test fails under `CI=true` and is
//! skipped elsewhere).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{free_port, Daemon, DEADLINE};
use chatwatch::sim::{ChatOffer, Simulator};
use serde_json::{json, Value};
use tokio::time::Instant;

const PASSWORD: &str = "password1";
const TOKEN: &str = "engine-token-5f3a9c1e7b2d";
const OTHER_TOKEN: &str = "ops-token-0d4e8a6c2f1b9";

/// The daemon against the simulator, with the API on a free port (and the admin listener on
/// another), `wait_max` as given.
struct Fixture {
    sim: Simulator,
    daemon: Daemon,
    api: String,
    admin: String,
    http: reqwest::Client,
}

async fn start(wait_max: &str) -> Fixture {
    start_with(wait_max, "", "http").await
}

/// [`start`] with `extra` lines in `[api]`, reached over `scheme` (`https` for `tls`); a first
/// line `# ca <file>` (a TOML comment) makes the test client trust that CA.
async fn start_with(wait_max: &str, extra: &str, scheme: &str) -> Fixture {
    let sim = crate::support::sim::start_with(Duration::from_secs(2), Duration::from_secs(4)).await;
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let admin_port = free_port();
    let text = Daemon::gws_config_with(
        sim.base_url().as_str(),
        PASSWORD,
        dir.path(),
        "mode = \"agent\"",
        admin_port,
    ) + &format!(
        r#"
[api]
enabled = true
listen = "127.0.0.1:{api_port}"
wait_max = "{wait_max}"
{extra}
[api.tokens]
engine = "{TOKEN}"
ops = {{ env = "CW_TEST_API_TOKEN" }}
"#
    );
    let config = dir.path().join("chatwatch.toml");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start_with_env(dir, &config, &[("CW_TEST_API_TOKEN", OTHER_TOKEN)]);
    daemon.wait_listening(1).await;
    let mut http = reqwest::Client::builder().no_proxy();
    if let Some(ca) = extra.strip_prefix("# ca ").and_then(|l| l.lines().next()) {
        let pem = std::fs::read(ca).unwrap();
        http = http.tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]);
    }
    let http = http.build().unwrap();
    let host = if scheme == "https" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let f = Fixture {
        sim,
        daemon,
        api: format!("{scheme}://{host}:{api_port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        http,
    };
    let deadline = Instant::now() + DEADLINE;
    while f
        .http
        .get(format!("{}/v1/openapi.json", f.api))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the API never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f
}

/// An answer: status, headers, JSON body (`Null` when not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Fixture {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{path}", self.api))
                .bearer_auth(TOKEN),
        )
        .await
    }

    /// `POST /v1/accounts/main/chats/{chat}/{op}{query}` with `body`.
    async fn op(&self, chat: &str, op: &str, query: &str, body: Value) -> Answer {
        let url = format!("{}/v1/accounts/main/chats/{chat}/{op}{query}", self.api);
        self.send(
            self.http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// The GWS operations the simulator received for `chat`, in order.
    fn sent(&self, chat: &str) -> Vec<String> {
        let path = format!("/api/v2/me/chats/{chat}");
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .filter_map(|r| r.operation_name)
            .collect()
    }

    /// Offers a chat to agent1 and waits until the daemon tracks it.
    async fn offer(&self, customer: &str) -> String {
        let id = self.sim.offer_chat("agent1", ChatOffer::new(customer));
        self.daemon
            .wait_event("the offer", |e| e["chat"]["id"] == id.as_str())
            .await;
        id
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn is_problem(a: &Answer, status: u16, name: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(
        a.headers["content-type"], "application/problem+json",
        "{}",
        a.body
    );
    assert_eq!(
        a.body["type"],
        format!("urn:chatwatch:problem:{name}"),
        "{}",
        a.body
    );
    assert_eq!(a.body["status"], status);
    assert!(a.body["title"].is_string() && a.body["detail"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_reaches_gws_and_the_chat_list_shows_state_and_pending_age() {
    let f = start("10s").await;
    let chat = f.offer("Pat").await;

    let list = f.get("/v1/accounts/main/chats").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed = &list.body["chats"][0];
    assert_eq!(listed["id"], chat.as_str());
    assert_eq!(listed["state"], "Invited");
    assert_eq!(listed["capabilities"], json!(["Accept", "Reject"]));
    assert_eq!(listed["pending_since"], Value::Null);

    // With wait: the event that answers the operation.
    let accepted = f
        .op(&chat, "accept", "?wait=10s", json!({"nickname": "Alice"}))
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.body["operation"], "Accept");
    assert_eq!(accepted.body["response"]["statusCode"], 0);
    assert_eq!(accepted.body["event"]["kind"], "chat_state");
    assert_eq!(accepted.body["event"]["chat"]["state"], "Chatting");
    assert_eq!(
        accepted.body["event"]["reference_id"],
        accepted.body["response"]["referenceId"]
    );
    let said = f
        .op(
            &chat,
            "send-message",
            "?wait=10s",
            json!({"text": "Hello", "treatAs": "Normal"}),
        )
        .await;
    assert_eq!(said.status, 200, "{}", said.body);
    assert_eq!(said.body["event"]["kind"], "message_log");

    // Without wait: 202 and GWS's answer.
    for (op, body) in [
        ("start-typing", json!({})),
        ("stop-typing", json!({})),
        (
            "attach-user-data",
            json!({"userData": {"Topic": "billing", "Score": 3}}),
        ),
        ("update-user-data", json!({"userData": {"Topic": "refund"}})),
        ("delete-user-data", json!({"keys": ["Score"]})),
    ] {
        let a = f.op(&chat, op, "", body).await;
        assert_eq!(a.status, 202, "{op}: {}", a.body);
        assert_eq!(a.body["response"]["statusCode"], 0, "{op}");
    }
    let left = f
        .op(
            &chat,
            "leave",
            "?wait=10s",
            json!({"text": "Goodbye", "treatAs": "System"}),
        )
        .await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(left.body["event"]["chat"]["state"], "LeftChat");

    // Pending disposition, with its age.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let one = f.get(&format!("/v1/accounts/main/chats/{chat}")).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["state"], "LeftChat");
    assert_eq!(one.body["previous_state"], "Chatting");
    assert!(one.body["pending_since"].is_string(), "{}", one.body);
    assert!(
        one.body["pending_seconds"].as_i64().unwrap() >= 1,
        "{}",
        one.body
    );
    assert!(one.body["participant_count"].as_u64().is_some());

    let disposed = f
        .op(
            &chat,
            "set-disposition",
            "?wait=10s",
            json!({"disposition": "Resolved"}),
        )
        .await;
    assert_eq!(disposed.status, 200, "{}", disposed.body);
    let completed = f
        .op(&chat, "complete", "?wait=10s", json!({"saveLAR": false}))
        .await;
    assert_eq!(completed.status, 200, "{}", completed.body);
    assert_eq!(completed.body["event"]["chat"]["state"], "Completed");
    assert_eq!(
        f.sent(&chat),
        [
            "Accept",
            "SendMessage",
            "SendStartTypingNotification",
            "SendStopTypingNotification",
            "AttachUserData",
            "UpdateUserData",
            "DeleteUserData",
            "Leave",
            "SetDisposition",
            "Complete"
        ]
    );
    // A completed chat is forgotten.
    let gone = f.get(&format!("/v1/accounts/main/chats/{chat}")).await;
    is_problem(&gone, 404, "unknown-chat");

    // Reject and Transfer, each on a chat of its own.
    let rejected = f.offer("Sam").await;
    let a = f.op(&rejected, "reject", "?wait=10s", json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(f.sent(&rejected), ["Reject"]);
    let moved = f.offer("Kim").await;
    assert_eq!(f.op(&moved, "accept", "", json!({})).await.status, 202);
    let a = f
        .op(
            &moved,
            "transfer",
            "?wait=10s",
            json!({"queueName": "Billing", "text": "One moment"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(f.sent(&moved), ["Accept", "Transfer"]);

    // Every request was logged with its token's name, never a token.
    let log = f.daemon.log_text();
    assert!(!log.contains(TOKEN), "a token in the log");
    let requests: Vec<Value> = f
        .daemon
        .log()
        .into_iter()
        .filter(|l| l["message"] == "api request" && l["path"] != "/v1/openapi.json")
        .collect();
    assert_eq!(requests.len(), 16, "{requests:?}");
    assert!(requests
        .iter()
        .all(|l| l["token"] == "engine" && l["status"].is_u64()));
    let metrics = f.metrics().await;
    assert!(
        metrics.contains(r#"chatwatch_api_requests_total{route="/v1/accounts/{account}/chats/{chat_id}/{operation}",status="202"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_refusals_answer_422_and_nothing_reaches_gws() {
    let f = start("5s").await;
    let chat = f.offer("Pat").await;
    assert_eq!(f.op(&chat, "accept", "", json!({})).await.status, 202);
    let before = f.sent(&chat);
    let refused = [
        (
            "leave",
            json!({"treatAs": "System"}),
            "`treatAs` can only be sent together with `text`",
        ),
        (
            "leave",
            json!({"messageType": "Note"}),
            "`messageType` can only be sent together with `text`",
        ),
        ("leave", json!({"text": "  "}), "`text` must not be empty"),
        (
            "complete",
            json!({"queueName": " "}),
            "`queueName` must not be empty",
        ),
        (
            "complete",
            json!({"treatAs": "Normal", "saveLAR": true}),
            "`treatAs` can only be sent together with `text`",
        ),
        (
            "send-message",
            json!({"text": ""}),
            "`text` must not be empty",
        ),
        (
            "send-message",
            json!({"text": "hi", "messageType": ""}),
            "`messageType` must not be empty",
        ),
        ("transfer", json!({}), "a target is required"),
        (
            "transfer",
            json!({"targetUri": "a", "queueName": "q"}),
            "not both",
        ),
        (
            "transfer",
            json!({"queueName": "q", "treatAs": "System"}),
            "`treatAs` can only be sent together with `text`",
        ),
        (
            "set-disposition",
            json!({"disposition": " "}),
            "`disposition` must not be empty",
        ),
        (
            "set-disposition",
            json!({"disposition": "X", "dispositionKey": ""}),
            "`dispositionKey` must not be empty",
        ),
        (
            "attach-user-data",
            json!({"userData": {}}),
            "at least one key",
        ),
        (
            "update-user-data",
            json!({"userData": {" ": 1}}),
            "keys must not be empty",
        ),
        ("delete-user-data", json!({"keys": []}), "at least one"),
        ("delete-user-data", json!({"keys": [""]}), "empty key"),
        (
            "accept",
            json!({"nickname": ""}),
            "`nickname` must not be empty",
        ),
    ];
    for (op, body, rule) in &refused {
        let a = f.op(&chat, op, "?wait=1s", body.clone()).await;
        is_problem(&a, 422, "validation");
        assert!(
            a.body["detail"].as_str().unwrap().contains(rule),
            "{op} {body}: {}",
            a.body
        );
    }
    // Bodies that are not the parameters.
    for (op, body) in [
        ("leave", r#"{"text":"Bye","extra":1}"#),
        ("leave", r#"{"text":null}"#),
        ("leave", r#"{"text":"Bye","treatAs":"system"}"#),
        ("complete", r#"{"saveLAR":"yes"}"#),
        ("reject", r#"{"why":"busy"}"#),
        ("send-message", r#"{}"#),
        ("accept", r#"[]"#),
    ] {
        let url = format!("{}/v1/accounts/main/chats/{chat}/{op}", f.api);
        let a = f
            .send(
                f.http
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        is_problem(&a, 422, "invalid-body");
    }
    let url = format!("{}/v1/accounts/main/chats/{chat}/leave", f.api);
    let bad_json = f
        .send(
            f.http
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{\"text\":"),
        )
        .await;
    is_problem(&bad_json, 400, "bad-request");
    let form = f
        .send(
            f.http
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    is_problem(&form, 415, "unsupported-media-type");
    let bad_wait = f.op(&chat, "leave", "?wait=soon", json!({})).await;
    is_problem(&bad_wait, 400, "bad-request");
    assert_eq!(f.sent(&chat), before, "a refused request reached GWS");
    let metrics = f.metrics().await;
    assert!(
        metrics.contains(r#"chatwatch_api_request_failures_total{reason="validation"} 17"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_token_or_with_a_wrong_one_are_refused() {
    let f = start("5s").await;
    let chat = f.offer("Pat").await;
    let url = format!("{}/v1/accounts/main/chats", f.api);
    let none = f.send(f.http.get(&url)).await;
    is_problem(&none, 401, "missing-token");
    assert_eq!(
        none.headers["www-authenticate"],
        r#"Bearer realm="chatwatch""#
    );
    let wrong = f
        .send(f.http.get(&url).bearer_auth("engine-token-5f3a9c1e7b2e"))
        .await;
    is_problem(&wrong, 401, "wrong-token");
    assert!(wrong.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));
    let basic = f
        .send(f.http.get(&url).basic_auth("agent1", Some(PASSWORD)))
        .await;
    is_problem(&basic, 401, "missing-token");
    // An operation without a token sends nothing.
    let op = f
        .send(
            f.http
                .post(format!("{url}/{chat}/reject"))
                .bearer_auth("nope-nope-nope-nope"),
        )
        .await;
    is_problem(&op, 401, "wrong-token");
    assert!(f.sent(&chat).is_empty());
    // The second token works, and is logged by its name; the document needs none.
    let other = f.send(f.http.get(&url).bearer_auth(OTHER_TOKEN)).await;
    assert_eq!(other.status, 200, "{}", other.body);
    let doc = f
        .send(f.http.get(format!("{}/v1/openapi.json", f.api)))
        .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let log = f.daemon.log();
    let tokens: Vec<&str> = log
        .iter()
        .filter(|l| l["message"] == "api request" && l["path"] != "/v1/openapi.json")
        .filter_map(|l| l["token"].as_str())
        .collect();
    assert_eq!(tokens, ["-", "-", "-", "-", "ops"], "{tokens:?}");
    let text = f.daemon.log_text();
    assert!(!text.contains(TOKEN) && !text.contains(OTHER_TOKEN));
    let metrics = f.metrics().await;
    assert!(
        metrics.contains(r#"chatwatch_api_request_failures_total{reason="wrong-token"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chatwatch_api_request_failures_total{reason="missing-token"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gws_outcomes_map_to_documented_statuses() {
    let f = start("1s").await;
    let chat = f.offer("Pat").await;
    // Not valid in the current state: GWS statusCode 2 → 409.
    let a = f.op(&chat, "complete", "", json!({})).await;
    is_problem(&a, 409, "gws-conflict");
    assert_eq!(a.body["gws_status"], 2);
    assert_eq!(a.body["operation"], "Complete");
    // No such chat at GWS: statusCode 6 → 404.
    let a = f.op("0000NoSuchChat01", "leave", "", json!({})).await;
    is_problem(&a, 404, "gws-not-found");
    assert_eq!(a.body["gws_status"], 6);
    // Unknown account, operation, chat, path.
    let a = f
        .send(
            f.http
                .post(format!("{}/v1/accounts/other/chats/{chat}/leave", f.api))
                .bearer_auth(TOKEN),
        )
        .await;
    is_problem(&a, 404, "unknown-account");
    let a = f.op(&chat, "Leave", "", json!({})).await;
    is_problem(&a, 404, "unknown-operation");
    assert!(a.body["operations"].as_array().unwrap().len() == 12);
    is_problem(
        &f.get("/v1/accounts/main/chats/nope").await,
        404,
        "unknown-chat",
    );
    is_problem(&f.get("/v1/nothing").await, 404, "not-found");
    let put = f
        .send(
            f.http
                .put(format!("{}/v1/accounts/main/chats", f.api))
                .bearer_auth(TOKEN),
        )
        .await;
    is_problem(&put, 405, "method-not-allowed");
    assert!(put.headers["allow"].to_str().unwrap().contains("GET"));
    // Accepted, but no event answers a typing notification within `wait`: 504 with GWS's answer.
    assert_eq!(f.op(&chat, "accept", "", json!({})).await.status, 202);
    let started = Instant::now();
    let a = f.op(&chat, "start-typing", "?wait=1m", json!({})).await;
    if a.status == 504 {
        is_problem(&a, 504, "wait-timeout");
        assert_eq!(a.body["response"]["statusCode"], 0);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "wait_max cuts the wait"
        );
    } else {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // GWS forgets the daemon's HTTP session: the operation logs in again and succeeds.
    f.sim.expire_http_sessions();
    let a = f
        .op(&chat, "send-message", "", json!({"text": "still here"}))
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    // The backend unavailable: 503, and the API does not retry on the caller's behalf.
    let before = f.sent(&chat).len();
    f.sim.fail_next_operations(1);
    let a = f
        .op(&chat, "send-message", "", json!({"text": "anyone?"}))
        .await;
    is_problem(&a, 503, "gws-unavailable");
    assert_eq!(a.body["operation"], "SendMessage", "{}", a.body);
    assert_eq!(f.sent(&chat).len(), before + 1, "one request, not retried");
}

/// The schemathesis CLI: `$SCHEMATHESIS_BIN`, or `target/api-venv/bin/schemathesis`.
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("SCHEMATHESIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/api-venv/bin/schemathesis")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis is missing at {}: run `bash tests/api/install.sh` (the README test command does)",
        path.display()
    );
    eprintln!(
        "SKIPPED: schemathesis is missing at {}; run `bash tests/api/install.sh`",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_server_true_to_its_document() {
    let Some(bin) = schemathesis() else {
        return;
    };
    let f = start("1s").await;
    // Chats in every state, so generated requests reach GWS and not only 404s.
    let mut chats = Vec::new();
    for i in 0..8 {
        chats.push(f.offer(&format!("Customer{i}")).await);
    }
    for chat in &chats[2..] {
        assert_eq!(f.op(chat, "accept", "", json!({})).await.status, 202);
    }
    for chat in &chats[5..] {
        assert_eq!(f.op(chat, "leave", "", json!({})).await.status, 202);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    let ids: Vec<String> = chats.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        &config,
        format!(
            r#"
[parameters]
"path.account" = "main"
"path.chat_id" = {{ dictionary = "chats", probability = 0.7 }}

[dictionaries.chats]
values = [{}]

# 502, 503 and 504 are documented GWS outcomes (a wait that ran out is 504), not server bugs;
# a 500 still fails.
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
"#,
            ids.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("schemathesis.out")).unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/v1/openapi.json", f.api)])
        .args(["--url", &f.api, "--checks", "all", "--max-examples", "30"])
        // One worker: with several threads, CPython 3.11's parser can fail inside Hypothesis
        // ("AST constructor recursion depth mismatch"), a crash of the tool, not a finding.
        .args(["--seed", "1", "--workers", "1"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(dir.path().join("schemathesis.out")).unwrap();
    assert!(status.success(), "schemathesis found problems:\n{stdout}");
    // It reached GWS: accepted operations, not only refusals.
    let accepted = f
        .daemon
        .log()
        .iter()
        .filter(|l| l["message"] == "api request" && (l["status"] == 200 || l["status"] == 202))
        .count();
    assert!(
        accepted > 0,
        "no generated operation was accepted:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_the_configured_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) = (
        files.path().join("ca.pem"),
        files.path().join("api.crt"),
        files.path().join("api.key"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let extra = format!(
        "# ca {}\ntls = {{ cert_file = {:?}, key_file = {:?} }}",
        ca_file.display(),
        cert_file.display().to_string(),
        key_file.display().to_string()
    );
    let f = start_with("5s", &extra, "https").await;
    let chat = f.offer("Pat").await;
    let a = f.op(&chat, "accept", "?wait=5s", json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["event"]["chat"]["state"], "Chatting");
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let port = f.api.rsplit(':').next().unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_bayeux_account_lists_its_chats_and_refuses_operations_with_409() {
    let faye = crate::support::faye::Faye::start(0, 2);
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let text = Daemon::config(faye.port, dir.path(), "")
        + &format!(
            "\n[api]\nenabled = true\nlisten = \"127.0.0.1:{api_port}\"\n[api.tokens]\nengine = \"{TOKEN}\"\n"
        );
    let config = dir.path().join("chatwatch.toml");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start_with_config(dir, &config);
    daemon.wait_listening(1).await;
    faye.publish_data(
        "/v2/me/chats",
        json!({"messageType": "ChatStateChangeMessage", "notificationType": "StatusChange",
               "referenceId": 1, "chat": {"id": "faye-chat-1", "state": "LeftChat",
               "capabilities": ["Complete"]}}),
    )
    .await;
    daemon
        .wait_event("the LeftChat", |e| e["chat"]["id"] == "faye-chat-1")
        .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{api_port}/v1/accounts/main/chats");
    let list: Value = serde_json::from_slice(
        &http
            .get(&base)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let chat = &list["chats"][0];
    assert_eq!(chat["id"], "faye-chat-1", "{list}");
    assert_eq!(chat["state"], "LeftChat");
    assert!(chat["pending_since"].is_string(), "{chat}");
    let r = http
        .post(format!("{base}/faye-chat-1/complete"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        problem["type"], "urn:chatwatch:problem:no-gws-session",
        "{problem}"
    );
}
