//! The GWS simulator over real HTTP: login, cookies and CSRF, the chat life cycle with its
//! notifications received over a hand-written CometD long-poll, session expiry and recovery
//! helpers. Every wait is a condition polled against a deadline.

use std::time::Duration;

use chatwatch::sim::{run_scenario, ChatOffer, Scenario, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::sim::start;
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start_default() -> Simulator {
    start(SimConfig {
        bayeux_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    })
    .await
}

fn url(sim: &Simulator, path: &str) -> String {
    sim.base_url()
        .join(path.trim_start_matches('/'))
        .unwrap()
        .to_string()
}

async fn body_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// An agent's HTTP client with a cookie jar, logged in with `GET /api/v2/me`.
struct Agent {
    http: reqwest::Client,
    base: url::Url,
    csrf_name: String,
    csrf: String,
}

impl Agent {
    async fn login(sim: &Simulator, user: &str, password: &str) -> Agent {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let resp = http
            .get(url(sim, "/api/v2/me"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let csrf_name = header(&resp, "X-CSRF-HEADER");
        let csrf = header(&resp, &csrf_name);
        Agent {
            http,
            base: sim.base_url(),
            csrf_name,
            csrf,
        }
    }

    fn url(&self, path: &str) -> String {
        self.base
            .join(path.trim_start_matches('/'))
            .unwrap()
            .to_string()
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header(&self.csrf_name, &self.csrf)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        body_json(resp).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        body_json(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn op(&self, chat: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/api/v2/me/chats/{chat}"), body).await
    }

    /// A successful operation's `referenceId`.
    async fn op_ok(&self, chat: &str, body: Value) -> u64 {
        let (status, v) = self.op(chat, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body} → {v}");
        assert_eq!(v["statusCode"], 0, "{v}");
        v["referenceId"]
            .as_u64()
            .expect("referenceId in the response")
    }
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A hand-written CometD long-polling client over an [`Agent`]'s cookie jar.
struct Cometd<'a> {
    agent: &'a Agent,
    client_id: String,
    next_id: u64,
}

impl<'a> Cometd<'a> {
    async fn send(agent: &Agent, messages: Value) -> Vec<Value> {
        let (status, v) = agent.post("/api/v2/notifications", messages).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v.as_array().cloned().expect("a message array")
    }

    /// Handshake, subscribe to `subscription`, first connect with `advice.timeout: 0`.
    async fn open(agent: &'a Agent, subscription: &str) -> Cometd<'a> {
        let r = Cometd::send(
            agent,
            json!([{"id":"1","channel":"/meta/handshake","version":"1.0",
                    "supportedConnectionTypes":["long-polling"]}]),
        )
        .await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert_eq!(
            r[0]["supportedConnectionTypes"],
            json!(["long-polling", "websocket"])
        );
        assert_eq!(r[0]["advice"]["reconnect"], "retry");
        assert_eq!(r[0]["advice"]["interval"], 0);
        assert!(r[0]["advice"]["timeout"].as_u64().is_some());
        let mut c = Cometd {
            agent,
            client_id: r[0]["clientId"].as_str().unwrap().to_owned(),
            next_id: 2,
        };
        let r = c
            .request(json!({"channel":"/meta/subscribe","subscription":subscription}))
            .await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert_eq!(r[0]["subscription"], subscription);
        let start = Instant::now();
        let r = c.connect(Some(0)).await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "first connect not held"
        );
        c
    }

    async fn request(&mut self, mut msg: Value) -> Vec<Value> {
        msg["id"] = json!(self.next_id.to_string());
        msg["clientId"] = json!(self.client_id);
        self.next_id += 1;
        Cometd::send(self.agent, json!([msg])).await
    }

    async fn connect(&mut self, timeout: Option<u64>) -> Vec<Value> {
        let mut msg = json!({"channel":"/meta/connect","connectionType":"long-polling"});
        if let Some(t) = timeout {
            msg["advice"] = json!({"timeout": t});
        }
        self.request(msg).await
    }

    /// Held connects until `n` deliveries arrived (or the deadline).
    async fn deliveries(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n}: {got:?}",
                got.len()
            );
            let r = self.connect(None).await;
            assert_eq!(r[0]["channel"], "/meta/connect", "{r:?}");
            assert_eq!(r[0]["successful"], true, "{r:?}");
            got.extend(r.into_iter().skip(1));
        }
        assert_eq!(got.len(), n, "more deliveries than expected: {got:?}");
        for d in &got {
            assert_eq!(d["channel"], "/v2/me/chats");
            assert!(d.get("successful").is_none());
        }
        got.into_iter().map(|d| d["data"].clone()).collect()
    }
}

#[tokio::test]
async fn login_sets_jsessionid_and_the_csrf_pair() {
    let sim = start_default().await;
    let http = reqwest::Client::new();
    let resp = http
        .get(url(&sim, "/api/v2/me"))
        .basic_auth("agent1", Some("password1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = header(&resp, "set-cookie");
    assert!(cookie.starts_with("JSESSIONID="), "{cookie}");
    assert!(
        cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(header(&resp, "X-CSRF-HEADER"), "X-CSRF-TOKEN");
    let token = header(&resp, "X-CSRF-TOKEN");
    assert!(token.len() >= 16);
    let (_, me) = body_json(resp).await;
    assert_eq!(me["statusCode"], 0);
    assert_eq!(me["user"]["userName"], "agent1");
    assert_eq!(me["user"]["firstName"], "Alice");
    assert_eq!(me["user"]["roles"], json!(["ROLE_AGENT"]));
    assert_eq!(
        me["user"]["enabledFeatures"],
        json!(["api-multimedia", "api-multimedia-chat"])
    );
    assert!(me["user"].get("chats").is_none(), "no subresources asked");

    // The same session's next GET carries the same token and sets no new cookie.
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let resp = agent
        .http
        .get(agent.url("/api/v2/me"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(header(&resp, "X-CSRF-TOKEN"), agent.csrf);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_post_without_the_csrf_header_is_403() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    for (path, body) in [
        (
            "/api/v2/me",
            json!({"operationName":"StartContactCenterSession","channels":["chat"]}),
        ),
        (
            "/api/v2/notifications",
            json!([{"channel":"/meta/handshake"}]),
        ),
    ] {
        let resp = agent
            .http
            .post(agent.url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(resp.text().await.unwrap(), "Missing or invalid Csrf token");
        // A wrong token is refused the same way.
        let resp = agent
            .http
            .post(agent.url(path))
            .header("X-CSRF-TOKEN", "not-the-token")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert!(!sim.contact_center_started("agent1"));
    let (status, v) = agent
        .post(
            "/api/v2/me",
            json!({"operationName":"StartContactCenterSession","channels":["chat"]}),
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"statusCode":0})));
    assert!(sim.contact_center_started("agent1"));
    let log = sim.requests();
    let refused: Vec<_> = log.iter().filter(|r| r.status == 403).collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|r| r.session_cookie));
    assert_eq!(
        refused[0].operation_name, None,
        "refused before the body is read"
    );
    let ok = log.last().unwrap();
    assert!(ok.csrf_header && ok.session_cookie);
    assert_eq!(
        ok.operation_name.as_deref(),
        Some("StartContactCenterSession")
    );
    let (status, _) = agent
        .post(
            "/api/v2/me",
            json!({"operationName":"EndContactCenterSession"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!sim.contact_center_started("agent1"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_cookie_jar_is_refused() {
    let sim = start_default().await;
    let http = reqwest::Client::new(); // no cookie store
    let resp = http
        .get(url(&sim, "/api/v2/me"))
        .basic_auth("agent1", Some("password1"))
        .send()
        .await
        .unwrap();
    let token = header(&resp, "X-CSRF-TOKEN");
    // Basic + the token, but no JSESSIONID: no session holds that token.
    let resp = http
        .post(url(&sim, "/api/v2/me"))
        .basic_auth("agent1", Some("password1"))
        .header("X-CSRF-TOKEN", &token)
        .body(r#"{"operationName":"StartContactCenterSession"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(resp.text().await.unwrap(), "Missing or invalid Csrf token");
    // Neither Basic nor a cookie: 401.
    let resp = http
        .post(url(&sim, "/api/v2/notifications"))
        .header("X-CSRF-TOKEN", &token)
        .body(r#"[{"channel":"/meta/handshake"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, v) = body_json(resp).await;
    assert_eq!(
        v,
        json!({"statusCode":20,"statusMessage":"user not authenticated"})
    );
    assert!(!sim.contact_center_started("agent1"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_401() {
    let sim = start_default().await;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    for (user, password) in [("agent1", "nope"), ("nobody", "password1"), ("agent1", "")] {
        let resp = http
            .get(url(&sim, "/api/v2/me"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{user}");
        assert!(resp.headers().get("set-cookie").is_none());
        assert!(resp.headers().get("X-CSRF-TOKEN").is_none());
        let (_, v) = body_json(resp).await;
        assert_eq!(v["statusCode"], 20);
    }
    let resp = http.get(url(&sim, "/api/v2/me")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(sim.requests().iter().all(|r| r.user.is_none()));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_whole_life_cycle_over_http_and_cometd() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/*").await;

    let mut user_data = serde_json::Map::new();
    user_data.insert("Subject".into(), json!("Billing"));
    let chat = sim.offer_chat(
        "agent1",
        ChatOffer {
            customer_nickname: "Pat".into(),
            user_data,
            conference: false,
            first_message: Some("Hi there".into()),
        },
    );
    let offer = cometd.deliveries(1).await;
    let n = &offer[0];
    assert_eq!(n["messageType"], "ChatStateChangeMessage");
    assert_eq!(n["notificationType"], "StatusChange");
    assert!(
        n.get("referenceId").is_none(),
        "an offer has no referenceId"
    );
    assert_eq!(n["chat"]["id"], chat.as_str());
    assert_eq!(n["chat"]["state"], "Invited");
    assert_eq!(n["chat"]["capabilities"], json!(["Accept", "Reject"]));
    assert_eq!(n["chat"]["participants"], json!([]));
    assert_eq!(n["chat"]["userData"]["Subject"], "Billing");
    assert_eq!(
        n["chat"]["uri"],
        format!("{}api/v2/chats/{chat}", sim.base_url())
    );

    // Accept → Chatting, ParticipantsUpdated, MessageLogUpdated.
    let r = agent
        .op_ok(&chat, json!({"operationName":"Accept","nickname":"Ally"}))
        .await;
    let n = cometd.deliveries(3).await;
    assert!(n.iter().all(|n| n["referenceId"] == r), "{n:?}");
    assert_eq!(n[0]["notificationType"], "StatusChange");
    assert_eq!(n[0]["chat"]["state"], "Chatting");
    assert_eq!(n[0]["chat"]["participants"], json!([]));
    assert_eq!(
        n[0]["chat"]["capabilities"],
        json!([
            "Transfer",
            "Complete",
            "Leave",
            "InFocus",
            "SendMessage",
            "SendStartTypingNotification",
            "SendStopTypingNotification",
            "SetDisposition",
            "AttachUserData",
            "UpdateUserData",
            "DeleteUserData"
        ])
    );
    assert_eq!(n[1]["notificationType"], "ParticipantsUpdated");
    let parts = n[1]["chat"]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "Agent");
    assert_eq!(parts[0]["nickname"], "Ally");
    assert_eq!(parts[1]["type"], "Customer");
    assert_eq!(parts[1]["nickname"], "Pat");
    assert!(parts.iter().all(|p| p["participantId"].as_str().is_some()));
    assert_eq!(n[2]["messageType"], "MessageLogUpdated");
    assert_eq!(n[2]["notificationType"], "NewMessages");
    assert_eq!(n[2]["chatPath"], format!("/chats/{chat}"));
    assert!(n[2]["chatUri"].as_str().unwrap().ends_with(&chat));
    let history = n[2]["messages"].as_array().unwrap();
    assert!(history.iter().any(|m| m["text"] == "Hi there"));

    // SendMessage → MessageLogUpdated with a Text message.
    let r = agent
        .op_ok(
            &chat,
            json!({"operationName":"SendMessage","text":"How can I help?"}),
        )
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["referenceId"], r);
    let m = &n[0]["messages"][0];
    assert_eq!(m["type"], "Text");
    assert_eq!(m["text"], "How can I help?");
    assert_eq!(m["visibility"], "All");
    assert_eq!(m["from"]["type"], "Agent");
    assert_eq!(m["from"]["nickname"], "Ally");
    assert!(m["index"].as_u64().unwrap() > history.last().unwrap()["index"].as_u64().unwrap());
    assert!(m["timestamp"].as_str().is_some());
    assert!(m["timestampSeconds"].as_i64().unwrap() > 1_600_000_000_000);

    // Leave, alone → LeftChat with exactly the sample capabilities.
    let r = agent.op_ok(&chat, json!({"operationName":"Leave"})).await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["referenceId"], r);
    assert_eq!(n[0]["notificationType"], "StatusChange");
    assert_eq!(n[0]["chat"]["state"], "LeftChat");
    assert_eq!(
        n[0]["chat"]["capabilities"],
        json!(["Transfer", "Complete", "Leave", "InFocus"])
    );

    // SetDisposition in LeftChat → PropertiesUpdated with DispositionCode.
    let r = agent
        .op_ok(
            &chat,
            json!({"operationName":"SetDisposition","disposition":"Resolved"}),
        )
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["referenceId"], r);
    assert_eq!(n[0]["notificationType"], "PropertiesUpdated");
    assert_eq!(n[0]["chat"]["userData"]["DispositionCode"], "Resolved");
    assert_eq!(n[0]["chat"]["userData"]["Subject"], "Billing");
    let (_, open) = agent.get("/api/v2/me/chats").await;
    assert_eq!(open["chats"].as_array().unwrap().len(), 1);

    // Complete → Completed, participants [], gone from the open chats.
    let r = agent
        .op_ok(
            &chat,
            json!({"operationName":"Complete","queueName":"PostProcessing"}),
        )
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["referenceId"], r);
    assert_eq!(n[0]["chat"]["state"], "Completed");
    assert_eq!(n[0]["chat"]["participants"], json!([]));
    assert!(n[0]["chat"].get("capabilities").is_none());
    let (_, open) = agent.get("/api/v2/me/chats").await;
    assert_eq!(open, json!({"statusCode":0,"chats":[]}));
    assert_eq!(sim.chat(&chat).unwrap()["state"], "Completed");

    // referenceIds increase per request.
    let refs: Vec<String> = sim
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/api/v2/me/chats/"))
        .filter_map(|q| q.operation_name.clone())
        .collect();
    assert_eq!(
        refs,
        vec![
            "Accept",
            "SendMessage",
            "Leave",
            "SetDisposition",
            "Complete"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn leave_in_a_conference_ends_completed() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/chats").await;

    let offered = sim.offer_chat(
        "agent1",
        ChatOffer {
            conference: true,
            ..ChatOffer::new("Pat")
        },
    );
    let invited = sim.offer_chat("agent1", ChatOffer::new("Quinn"));
    cometd.deliveries(2).await;

    // A conference from the offer.
    agent
        .op_ok(&offered, json!({"operationName":"Accept"}))
        .await;
    let n = cometd.deliveries(3).await;
    assert_eq!(n[1]["chat"]["participants"].as_array().unwrap().len(), 3);
    let r = agent
        .op_ok(&offered, json!({"operationName":"Leave","text":"Bye"}))
        .await;
    let n = cometd.deliveries(2).await;
    assert_eq!(n[0]["messageType"], "MessageLogUpdated");
    assert_eq!(n[1]["chat"]["state"], "Completed");
    assert_eq!(n[1]["referenceId"], r);

    // A conference after Invite.
    agent
        .op_ok(&invited, json!({"operationName":"Accept"}))
        .await;
    cometd.deliveries(3).await;
    let r = agent
        .op_ok(
            &invited,
            json!({"operationName":"Invite","targetUri":"http://gws/api/v2/users/bob"}),
        )
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["notificationType"], "ParticipantsUpdated");
    assert_eq!(n[0]["referenceId"], r);
    agent
        .op_ok(&invited, json!({"operationName":"Leave"}))
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["chat"]["state"], "Completed");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_operation_in_the_wrong_state_is_status_2_and_an_error_notification() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/**").await;
    let chat = sim.offer_chat("agent1", ChatOffer::new("Pat"));
    cometd.deliveries(1).await;
    let accepted = agent.op_ok(&chat, json!({"operationName":"Accept"})).await;
    cometd.deliveries(3).await;

    let (status, v) = agent.op(&chat, json!({"operationName":"Accept"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"statusCode":2,"statusMessage":"Operation Accept is not valid for chat state Chatting"})
    );
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["notificationType"], "Error");
    assert_eq!(n[0]["errorMessage"], "Request failed");
    assert!(n[0]["referenceId"].as_u64().unwrap() > accepted);
    assert!(n[0].get("chat").is_none());
    assert_eq!(sim.chat(&chat).unwrap()["state"], "Chatting");

    // Parameter errors: 400 with their codes, nothing reaches the chat, no notification.
    for (body, code) in [
        (json!({"operationName":"Leave","messageType":"Text"}), 1),
        (json!({"operationName":"Leave","treatAs":"System"}), 1),
        (
            json!({"operationName":"Leave","text":"x","treatAs":"Shout"}),
            10,
        ),
        (json!({"operationName":"SendMessage"}), 1),
        (json!({"operationName":"SetDisposition"}), 1),
        (json!({"operationName":"Transfer"}), 1),
        (json!({"operationName":"Levitate"}), 1),
        (json!({"text":"no operation"}), 1),
    ] {
        let (status, v) = agent.op(&chat, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["statusCode"], code, "{body} → {v}");
        assert!(v["statusMessage"].as_str().is_some());
    }
    // Malformed JSON.
    let resp = agent
        .http
        .post(agent.url(&format!("/api/v2/me/chats/{chat}")))
        .header(&agent.csrf_name, &agent.csrf)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Unknown chat.
    let (status, v) = agent
        .op("0000NOSUCHCHAT00", json!({"operationName":"Accept"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["statusCode"], 6);
    // Still nothing queued: a held connect (timeout 300 ms) comes back empty.
    let r = cometd.connect(Some(300)).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(sim.chat(&chat).unwrap()["state"], "Chatting");

    // Another agent cannot see or touch agent1's chat.
    let other = Agent::login(&sim, "agent2", "password2").await;
    let (status, _) = other.op(&chat, json!({"operationName":"Complete"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_cometd_session_is_an_unknown_client() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/chats").await;
    assert_eq!(sim.expire_bayeux_sessions(), 1);
    for r in [
        cometd.connect(None).await,
        cometd
            .request(json!({"channel":"/meta/subscribe","subscription":"/v2/me/chats"}))
            .await,
    ] {
        assert_eq!(r[0]["successful"], false, "{r:?}");
        assert_eq!(r[0]["error"], "402::Unknown client");
        assert_eq!(r[0]["advice"]["reconnect"], "handshake");
        assert_eq!(r[0]["advice"]["interval"], 0);
    }
    // A re-handshake works; the HTTP session was not touched.
    let mut again = Cometd::open(&agent, "/v2/me/chats").await;
    assert_ne!(again.client_id, cometd.client_id);

    // restart(): the old cookie is refused with 401, and a new login brings everything back.
    sim.restart();
    let (status, v) = agent.get("/api/v2/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["statusCode"], 20);
    let resp = agent
        .http
        .post(agent.url("/api/v2/notifications"))
        .header(&agent.csrf_name, &agent.csrf)
        .body(json!([{"channel":"/meta/connect","clientId":again.client_id}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let chat = sim.offer_chat("agent1", ChatOffer::new("Pat"));
    let relogged = Agent::login(&sim, "agent1", "password1").await;
    assert_ne!(relogged.csrf, agent.csrf, "a new session has a new token");
    again.agent = &relogged;
    let r = again.connect(Some(0)).await;
    assert_eq!(r[0]["error"], "402::Unknown client");
    let (_, open) = relogged.get("/api/v2/me/chats").await;
    assert_eq!(
        open["chats"][0]["id"],
        chat.as_str(),
        "chats survive a restart"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_cometd_session_is_bound_to_its_browser_cookie_and_user() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let cometd = Cometd::open(&agent, "/v2/me/chats").await;
    // The same user from another cookie jar (another browser) cannot use that clientId.
    let stranger = Agent::login(&sim, "agent1", "password1").await;
    let r = Cometd::send(
        &stranger,
        json!([{"channel":"/meta/connect","clientId":cometd.client_id,"connectionType":"long-polling"}]),
    )
    .await;
    assert_eq!(r[0]["error"], "402::Unknown client");
    // Subscriptions are limited to the user's own channels.
    let mut cometd = cometd;
    for bad in ["/meta/connect", "/v2/users/agent2/chats", "/service/x"] {
        let r = cometd
            .request(json!({"channel":"/meta/subscribe","subscription":bad}))
            .await;
        assert_eq!(r[0]["successful"], false, "{bad}");
        assert_eq!(r[0]["subscription"], bad);
    }
    // Notifications for agent2 never reach agent1's session.
    sim.offer_chat("agent2", ChatOffer::new("Pat"));
    let r = cometd.connect(Some(200)).await;
    assert_eq!(r.len(), 1, "{r:?}");
    // Unsubscribed: nothing is queued any more.
    let r = cometd
        .request(json!({"channel":"/meta/unsubscribe","subscription":"/v2/me/chats"}))
        .await;
    assert_eq!(r[0]["successful"], true);
    sim.offer_chat("agent1", ChatOffer::new("Pat"));
    assert_eq!(sim.bayeux_sessions()[0].queued, 0);
    // Malformed Bayeux bodies are 400.
    let (status, _) = agent.post("/api/v2/notifications", json!(42)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_held_connect_is_answered_when_a_notification_is_queued() {
    let sim = start(SimConfig {
        bayeux_timeout: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let cometd = Cometd::open(&agent, "/v2/me/chats").await;
    let client_id = cometd.client_id.clone();
    let held = tokio::spawn({
        let http = agent.http.clone();
        let url = agent.url("/api/v2/notifications/connect");
        let token = agent.csrf.clone();
        let cid = client_id.clone();
        async move {
            let resp = http
                .post(url)
                .header("X-CSRF-TOKEN", token)
                .body(json!([{"channel":"/meta/connect","clientId":cid,"connectionType":"long-polling"}]).to_string())
                .send()
                .await
                .unwrap();
            (Instant::now(), body_json(resp).await.1)
        }
    });
    wait_until("the connect to be held", || {
        sim.bayeux_sessions().iter().any(|s| s.holding)
    })
    .await;
    let offered_at = Instant::now();
    let chat = sim.offer_chat("agent1", ChatOffer::new("Pat"));
    let (answered_at, r) = held.await.unwrap();
    assert!(
        answered_at - offered_at < Duration::from_secs(2),
        "answered {:?} after the offer",
        answered_at - offered_at
    );
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["advice"]["timeout"], 10_000);
    assert_eq!(r[1]["data"]["chat"]["id"], chat.as_str());
    assert_eq!(r.as_array().unwrap().len(), 2, "delivered exactly once");
    assert_eq!(sim.bayeux_sessions()[0].queued, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_second_connect_releases_the_held_one() {
    let sim = start(SimConfig {
        bayeux_timeout: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let cometd = Cometd::open(&agent, "/v2/me/chats").await;
    let connect = |id: &'static str| {
        let http = agent.http.clone();
        let url = agent.url("/api/v2/notifications");
        let token = agent.csrf.clone();
        let cid = cometd.client_id.clone();
        async move {
            let resp = http
                .post(url)
                .header("X-CSRF-TOKEN", token)
                .body(json!([{"id":id,"channel":"/meta/connect","clientId":cid,"connectionType":"long-polling"}]).to_string())
                .send()
                .await
                .unwrap();
            body_json(resp).await.1
        }
    };
    let first = tokio::spawn(connect("a"));
    wait_until("the first connect to be held", || {
        sim.bayeux_sessions().iter().any(|s| s.holding)
    })
    .await;
    let started = Instant::now();
    let second = tokio::spawn(connect("b"));
    let r = first.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r[0]["id"], "a");
    assert_eq!(r[0]["successful"], true);
    // The second one is now the held one, and a notification releases it.
    wait_until("the second connect to be held", || {
        sim.bayeux_sessions().iter().any(|s| s.holding)
    })
    .await;
    sim.offer_chat("agent1", ChatOffer::new("Pat"));
    let r = second.await.unwrap();
    assert_eq!(r[0]["id"], "b");
    assert_eq!(r[1]["data"]["chat"]["state"], "Invited");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_session_expires_max_interval_after_its_last_connect() {
    let sim = start(SimConfig {
        bayeux_timeout: Duration::from_millis(800),
        max_interval: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/chats").await;
    // A held connect (800 ms > max_interval) keeps the session alive.
    let started = Instant::now();
    let r = cometd.connect(None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "it was held"
    );
    assert_eq!(r[0]["successful"], true, "{r:?}");
    // Without a new connect, the session goes.
    let left_at = Instant::now();
    wait_until("the session to expire", || sim.bayeux_sessions().is_empty()).await;
    assert!(left_at.elapsed() >= Duration::from_millis(250));
    let r = cometd.connect(Some(0)).await;
    assert_eq!(r[0]["error"], "402::Unknown client");
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    sim.shutdown().await;
}

#[tokio::test]
async fn get_me_with_subresources_lists_open_chats() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let a = sim.offer_chat("agent1", ChatOffer::new("Pat"));
    let b = sim.offer_chat("agent1", ChatOffer::new("Quinn"));
    let done = sim.offer_chat("agent1", ChatOffer::new("Rae"));
    sim.offer_chat("agent2", ChatOffer::new("Sky"));
    agent.op_ok(&b, json!({"operationName":"Accept"})).await;
    agent.op_ok(&done, json!({"operationName":"Reject"})).await;
    for query in ["subresources=*", "subresources=chats,devices"] {
        let (status, me) = agent.get(&format!("/api/v2/me?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        let chats = me["user"]["chats"].as_array().expect("user.chats");
        let ids: Vec<&str> = chats.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(ids, vec![a.as_str(), b.as_str()], "{query}");
        assert_eq!(chats[0]["state"], "Invited");
        assert_eq!(chats[1]["state"], "Chatting");
        assert_eq!(chats[1]["participants"].as_array().unwrap().len(), 2);
        for c in chats {
            for field in [
                "uri",
                "capabilities",
                "participants",
                "userData",
                "chatType",
            ] {
                assert!(c.get(field).is_some(), "{field} in {c}");
            }
        }
    }
    let (_, one) = agent.get(&format!("/api/v2/me/chats/{b}")).await;
    assert_eq!(one["chat"]["state"], "Chatting");
    let (_, me) = agent.get("/api/v2/me?subresources=devices").await;
    assert!(me["user"].get("chats").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn paused_notifications_and_silent_state_changes_are_never_delivered() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/chats").await;
    let chat = sim.offer_chat("agent1", ChatOffer::new("Pat"));
    cometd.deliveries(1).await;
    agent.op_ok(&chat, json!({"operationName":"Accept"})).await;
    cometd.deliveries(3).await;

    sim.pause_notifications("agent1", true);
    agent
        .op_ok(&chat, json!({"operationName":"SendMessage","text":"lost"}))
        .await;
    let lost = sim.offer_chat("agent1", ChatOffer::new("Quinn"));
    assert!(sim.set_chat_state(&chat, "LeftChat"));
    assert!(!sim.set_chat_state("0000NOSUCHCHAT00", "LeftChat"));
    sim.pause_notifications("agent1", false);
    assert_eq!(sim.bayeux_sessions()[0].queued, 0);
    let r = cometd.connect(Some(200)).await;
    assert_eq!(r.len(), 1, "nothing was queued: {r:?}");
    // The state is visible to recovery, though.
    let (_, me) = agent.get("/api/v2/me?subresources=*").await;
    let chats = me["user"]["chats"].as_array().unwrap();
    assert_eq!(chats[0]["state"], "LeftChat");
    assert_eq!(
        chats[0]["capabilities"],
        json!(["Transfer", "Complete", "Leave", "InFocus"])
    );
    assert_eq!(chats[1]["id"], lost.as_str());
    // After the pause, notifications flow again.
    agent
        .op_ok(&chat, json!({"operationName":"Complete"}))
        .await;
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["chat"]["state"], "Completed");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_side_door_drives_the_simulator_over_http() {
    let sim = start_default().await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let mut cometd = Cometd::open(&agent, "/v2/me/chats").await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(url(&sim, path)).body(body.to_string()).send();
    let (status, v) = body_json(
        post(
            "/sim/offer",
            json!({"agent":"agent1","customer":"Pat","userData":{"k":"v"},"conference":false}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chat = v["chatId"].as_str().unwrap().to_owned();
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["chat"]["userData"]["k"], "v");
    // The offer went to an agent without a contact-centre session: noted in the log.
    let log: Vec<Value> = serde_json::from_value(
        body_json(http.get(url(&sim, "/sim/requests")).send().await.unwrap())
            .await
            .1,
    )
    .unwrap();
    let offer = log.iter().find(|r| r["path"] == "/sim/offer").unwrap();
    assert!(offer["note"].as_str().unwrap().contains("contact-centre"));
    let (_, c) = body_json(
        http.get(url(&sim, &format!("/sim/chats/{chat}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(c["state"], "Invited");

    agent.op_ok(&chat, json!({"operationName":"Accept"})).await;
    cometd.deliveries(3).await;
    let (status, _) = body_json(
        post(
            "/sim/customer-message",
            json!({"chatId":chat,"text":"hello?"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let n = cometd.deliveries(1).await;
    assert_eq!(n[0]["messages"][0]["from"]["type"], "Customer");
    assert!(n[0].get("referenceId").is_none());

    let (status, _) = body_json(
        post("/sim/set-state", json!({"chatId":chat,"state":"LeftChat"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.chat(&chat).unwrap()["state"], "LeftChat");
    let (status, _) = body_json(
        post(
            "/sim/set-state",
            json!({"chatId":"nope","state":"LeftChat"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, v) = body_json(
        post("/sim/pause", json!({"agent":"agent1","paused":true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["paused"], true);
    sim.offer_chat("agent1", ChatOffer::new("Lost"));
    assert_eq!(sim.bayeux_sessions()[0].queued, 0);
    let (_, v) = body_json(post("/sim/expire-bayeux", Value::Null).await.unwrap()).await;
    assert_eq!(v["expired"], 1);
    let (_, v) = body_json(post("/sim/restart", Value::Null).await.unwrap()).await;
    assert_eq!(v["bayeuxSessions"], 0);
    assert_eq!(v["httpSessions"], 1);
    let (status, _) = body_json(post("/sim/offer", json!({"customer":"x"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "agent is required");
    let (status, _) = body_json(
        http.post(url(&sim, "/sim/offer"))
            .body("{{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = body_json(http.get(url(&sim, "/sim/nothing")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn csrf_can_be_turned_off() {
    let sim = start(SimConfig {
        csrf: false,
        ..SimConfig::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    // A POST with Basic only opens a session when CSRF is off.
    let resp = http
        .post(url(&sim, "/api/v2/me"))
        .basic_auth("agent1", Some("password1"))
        .body(r#"{"operationName":"StartContactCenterSession","channels":["chat"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("set-cookie").is_some());
    assert!(sim.contact_center_started("agent1"));
    let resp = http.get(url(&sim, "/api/v2/me")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("X-CSRF-TOKEN").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_scenario_offers_chats_round_robin_at_its_rate() {
    let sim = start_default().await;
    let scenario = Scenario {
        chats: 6,
        rate_per_sec: 50.0,
        agents: vec!["agent1".into(), "agent2".into()],
    };
    let started = Instant::now();
    let n = run_scenario(&sim, &scenario, CancellationToken::new()).await;
    assert_eq!(n, 6);
    // Six offers at 50/s: the first at once, then five 20 ms periods.
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.open_chats("agent1").len(), 3);
    assert_eq!(sim.open_chats("agent2").len(), 3);

    // Unlimited until stopped.
    let stop = CancellationToken::new();
    let endless = Scenario {
        chats: 0,
        rate_per_sec: 200.0,
        agents: vec!["agent1".into()],
    };
    let stopper = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        }
    };
    let (n, ()) = tokio::join!(run_scenario(&sim, &endless, stop), stopper);
    assert!(n >= 1, "{n}");
    assert_eq!(sim.open_chats("agent1").len(), 3 + n);
    let none = Scenario {
        chats: 5,
        rate_per_sec: 0.0,
        agents: vec![],
    };
    assert_eq!(run_scenario(&sim, &none, CancellationToken::new()).await, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_a_held_connect() {
    let sim = start(SimConfig {
        bayeux_timeout: Duration::from_secs(30),
        ..SimConfig::default()
    })
    .await;
    let agent = Agent::login(&sim, "agent1", "password1").await;
    let cometd = Cometd::open(&agent, "/v2/me/chats").await;
    let held = tokio::spawn({
        let http = agent.http.clone();
        let url = agent.url("/api/v2/notifications");
        let token = agent.csrf.clone();
        let cid = cometd.client_id.clone();
        async move {
            http.post(url)
                .header("X-CSRF-TOKEN", token)
                .body(json!([{"channel":"/meta/connect","clientId":cid,"connectionType":"long-polling"}]).to_string())
                .send()
                .await
                .map(|r| r.status())
        }
    });
    wait_until("the connect to be held", || {
        sim.bayeux_sessions().iter().any(|s| s.holding)
    })
    .await;
    let started = Instant::now();
    sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = held.await.unwrap();
    assert_eq!(status.ok(), Some(StatusCode::OK));
}
