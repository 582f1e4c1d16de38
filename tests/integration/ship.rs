//! Shipping chatwatch as operators install it, through the real binary: `chatwatch reload`
//! (systemd's `ExecReload=`) gets the daemon's verdict over the control socket; event files are
//! created with their configured mode whatever the umask; every event the simulator life cycle
//! and odd notifications produce validates against `schema/chatwatch.event.v1.json`, which the
//! admin listener serves; the Prometheus rules pass `promtool check rules` and their unit tests;
//! the Debian package's metadata names files that exist.
//!
//! The real-systemd half (the .deb under systemd 252 in systemd-nspawn) is
//! `tests/systemd/run.sh`, run by the README test command after `cargo test`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Daemon, Faye, DEADLINE};
use serde_json::{json, Value};
use tokio::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chatwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(args)
        .env_remove("CHATWATCH_CONTROL_SOCKET")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const MORE_SINK: &str = "\n[sinks.more]\ntype = \"file\"\npath = \"{dir}/more.jsonl\"\n";

#[tokio::test]
async fn reload_reports_the_daemons_verdict_and_a_broken_file_changes_nothing() {
    let faye = Faye::start(0, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let socket = dir.join("control.sock");
    let config = dir.join("chatwatch.toml");
    let base = Daemon::config(faye.port, &dir, "");
    std::fs::write(&config, &base).unwrap();
    let daemon = Daemon::start_with_env(
        tmp,
        &config,
        &[("CHATWATCH_CONTROL_SOCKET", socket.to_str().unwrap())],
    );
    daemon.wait_listening(1).await;
    wait_until("the control socket", || socket.exists()).await;
    assert_eq!(mode_of(&socket) & 0o777, 0o600);
    let reload = || chatwatch(&["reload", "--socket", socket.to_str().unwrap()]);

    // A good file: exit 0, the daemon's summary on stdout, the new sink running.
    let more = MORE_SINK.replace("{dir}", &dir.display().to_string());
    std::fs::write(&config, format!("{base}{more}")).unwrap();
    let out = reload();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("sinks added more"), "{stdout}");
    faye.publish(0, 3).await;
    wait_until("3 events in more.jsonl", || {
        lines(&dir.join("more.jsonl")).len() >= 3
    })
    .await;

    // A broken file: non-zero, the reason on stderr, the previous configuration keeps working.
    std::fs::write(
        &config,
        format!("{base}{more}\n[sinks.bad]\ntype = \"file\"\npaht = \"x\"\n"),
    )
    .unwrap();
    let out = reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("reload failed, still running on the previous configuration")
            && stderr.contains("paht"),
        "{stderr}"
    );
    faye.publish(3, 3).await;
    wait_until("6 events in both files", || {
        lines(&dir.join("more.jsonl")).len() >= 6 && daemon.events().len() >= 6
    })
    .await;
    assert!(daemon.running());

    // Not TOML at all: refused the same way.
    std::fs::write(&config, "[[accounts]\nnot toml").unwrap();
    let out = reload();
    assert!(!out.status.success(), "{out:?}");

    // No daemon behind the socket: a clear error, non-zero.
    let out = chatwatch(&[
        "reload",
        "--socket",
        dir.join("none.sock").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");

    // Plain SIGHUP still reloads (the good file again, without `more`: the sink is removed).
    std::fs::write(&config, &base).unwrap();
    let before = daemon.count_log("SIGHUP: configuration reloaded");
    daemon.signal("HUP");
    daemon
        .wait_log("SIGHUP: configuration reloaded", before)
        .await;
}

/// Starts the real binary under `umask 0077` (as `UMask=0077` in the unit does).
fn run_under_umask_077(config: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_chatwatch"))
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CHATWATCH_CONTROL_SOCKET")
        .env_remove("RUNTIME_DIRECTORY")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn event_files_are_created_0640_under_umask_0077_and_after_a_reopen() {
    let faye = Faye::start(0, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("chatwatch.toml");
    let sinks = format!(
        "\n[sinks.private]\ntype = \"file\"\npath = \"{d}/private.jsonl\"\nmode = \"0600\"\n\
         \n[sinks.trail]\ntype = \"audit\"\ndir = \"{d}/audit\"\n",
        d = dir.display()
    );
    std::fs::write(
        &config,
        format!("{}{sinks}", Daemon::config(faye.port, dir, "")),
    )
    .unwrap();
    let mut child = run_under_umask_077(&config, &dir.join("chatwatch.log"));
    let events = dir.join("events.jsonl");
    let audit = dir.join("audit/trail.jsonl");
    wait_until("the sink files", || {
        events.exists() && audit.exists() && dir.join("private.jsonl").exists()
    })
    .await;
    assert_eq!(mode_of(&events), 0o640, "file sink, default mode");
    assert_eq!(mode_of(&audit), 0o640, "audit sink, default mode");
    assert_eq!(
        mode_of(&dir.join("private.jsonl")),
        0o600,
        "mode = \"0600\""
    );

    // logrotate moves the file away and sends SIGHUP: the new file gets the mode too.
    let log = dir.join("chatwatch.log");
    let log_has = |needle: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
    };
    wait_until("the subscription", || {
        log_has("listening: connected and subscribed")
    })
    .await;
    faye.publish(0, 2).await;
    wait_until("2 events", || lines(&events).len() >= 2).await;
    std::fs::rename(&events, dir.join("events.jsonl.1")).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_until("the reopened file", || events.exists()).await;
    assert_eq!(mode_of(&events), 0o640, "reopened file sink");
    faye.publish(2, 2).await;
    wait_until("2 events in the new file", || lines(&events).len() >= 2).await;

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("chatwatch.log")).unwrap();
    assert!(log.contains("chatwatch stopped"), "{log}");
}

#[test]
fn a_decimal_file_mode_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[sinks.x]\ntype = \"file\"\npath = \"{}/x.jsonl\"\nmode = 640\n",
            Daemon::config(1, dir.path(), ""),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = chatwatch(&["check", "--quiet", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("octal"), "{stderr}");
}

fn schema() -> Value {
    let text = std::fs::read_to_string(repo().join("schema/chatwatch.event.v1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn validate_all(validator: &jsonschema::Validator, events: &[Value], origin: &str) {
    for event in events {
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{origin}: an event does not match the schema: {errors:?}\n{event}"
        );
    }
}

#[test]
fn the_schema_rejects_what_the_readme_says_cannot_be() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let good = json!({
        "schema": "chatwatch.event.v1",
        "event_id": "01a20ef2-e8d9-7047-8bbf-7a13f995f503",
        "fingerprint": "392857e2a66d205383c5f56aa2739c5f",
        "received_at": "2026-11-24T19:05:30.073287438Z",
        "account": "main",
        "channel": "/v2/me/chats",
        "kind": "chat_state",
        "message_type": "ChatStateChangeMessage",
        "notification_type": "StatusChange",
        "reference_id": 4,
        "chat": {"id": "0000M51R00000009", "state": "LeftChat", "previous_state": "Chatting"},
        "recovered": false,
        "data": {"messageType": "ChatStateChangeMessage"}
    });
    assert!(validator.is_valid(&good));
    for (field, bad) in [
        ("schema", json!("chatwatch.event.v2")),
        ("kind", json!("chat")),
        ("event_id", json!("not-a-uuid")),
        ("received_at", json!("yesterday")),
        ("recovered", json!("no")),
        ("extra_field", json!(1)),
    ] {
        let mut event = good.clone();
        event[field] = bad;
        assert!(!validator.is_valid(&event), "{field} should be refused");
    }
    let mut event = good.clone();
    event.as_object_mut().unwrap().remove("chat");
    assert!(!validator.is_valid(&event), "chat_state without chat");
    let mut event = good;
    event.as_object_mut().unwrap().remove("data");
    assert!(!validator.is_valid(&event), "no data");
}

#[tokio::test]
async fn every_event_of_the_life_cycle_and_of_odd_notifications_matches_the_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    // The simulator's scripted life cycle (offer, accept, messages, leave, complete, conference)
    // through the daemon's file sinks.
    let demo = tempfile::tempdir().unwrap();
    let out = chatwatch(&[
        "demo",
        "--step",
        "20ms",
        "--live-every",
        "0s",
        "--dir",
        demo.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let events = lines(&demo.path().join("events.jsonl"));
    let kinds: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains("chat_state") && kinds.contains("message_log"),
        "{kinds:?}"
    );
    validate_all(&validator, &events, "demo events.jsonl");
    validate_all(
        &validator,
        &lines(&demo.path().join("left-chat.jsonl")),
        "demo left-chat.jsonl",
    );

    // Odd notifications from a Bayeux server: an Error, an undecodable state change, an
    // unknown message type, an unknown state.
    let faye = Faye::start(0, 2);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("chatwatch.toml");
    std::fs::write(&config, Daemon::config(faye.port, tmp.path(), "")).unwrap();
    let daemon = Daemon::start_with_config(tmp, &config);
    daemon.wait_listening(1).await;
    for data in [
        json!({"messageType": "ChatStateChangeMessage", "notificationType": "Error",
               "errorMessage": "chat not found", "referenceId": "r-1"}),
        json!({"notificationType": "Error", "errorMessage": "no type", "referenceId": 7}),
        json!({"messageType": "ChatStateChangeMessage", "chat": "not an object"}),
        json!({"messageType": "SomethingNew", "notificationType": "Surprise", "x": [1, 2]}),
        json!({"messageType": "ChatStateChangeMessage", "notificationType": "StatusChange",
               "chat": {"id": "c1", "state": "Levitating", "capabilities": ["Fly"],
                        "participants": [{"nickname": "A", "type": "Agent", "participantId": "1", "x": 1}],
                        "userData": {"k": "v"}}}),
        json!({"messageType": "MessageLogUpdated", "chatPath": "/api/v2/chats/c1",
               "messages": [{"type": "Text", "text": "hi", "index": 1}]}),
    ] {
        faye.publish_data("/v2/me/chats", data).await;
    }
    let events = daemon.wait_events(6).await;
    let kinds: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["error", "undecodable", "other", "chat_state", "message_log"] {
        assert!(kinds.contains(kind), "no {kind} event: {kinds:?}");
    }
    validate_all(&validator, &events, "odd notifications");
}

#[tokio::test]
async fn the_admin_listener_serves_the_schema_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("chatwatch.toml");
    let admin = crate::support::free_port();
    std::fs::write(
        &config,
        Daemon::config(crate::support::free_port(), tmp.path(), "").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        ),
    )
    .unwrap();
    let _daemon = Daemon::start_with_config(tmp, &config);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{admin}/schema/event.v1.json");
    let deadline = Instant::now() + DEADLINE;
    let response = loop {
        if let Ok(r) = http.get(&url).send().await {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the admin listener never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/schema+json"
    );
    let served: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(served, schema());
}

/// `promtool` (Debian package `prometheus`; `tests/ci-deps.sh` installs it). Missing is a
/// failure under CI=true and a skip elsewhere.
fn promtool() -> Option<Command> {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing (Debian package `prometheus`; run tests/ci-deps.sh)"
        );
        eprintln!("SKIPPED: promtool is not installed (Debian package `prometheus`)");
        return None;
    }
    Some(Command::new("promtool"))
}

#[test]
fn the_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(mut check) = promtool() else { return };
    let out = check
        .args(["check", "rules"])
        .arg(repo().join("contrib/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let Some(mut test) = promtool() else { return };
    let out = test
        .args(["test", "rules"])
        .arg(repo().join("contrib/prometheus/alerts.test.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Every alert in the rules file has a unit test that fires it.
    let rules = std::fs::read_to_string(repo().join("contrib/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo().join("contrib/prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no unit test fires {alert}"
        );
    }
}

#[test]
fn the_dashboard_queries_only_metrics_that_chatwatch_exports() {
    let text = std::fs::read_to_string(repo().join("contrib/grafana/chatwatch.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Every chatwatch_* name in a query appears in the source (a counter!/gauge!/histogram!
    // name or a constant), with the Prometheus suffixes of histograms stripped.
    let mut source = String::new();
    collect_sources(&repo().join("src"), &mut source);
    for expr in &exprs {
        for name in metric_names(expr) {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                source.contains(&format!("\"{base}\"")) || source.contains(&format!("\"{name}\"")),
                "the dashboard queries {name}, which chatwatch does not export: {expr}"
            );
        }
    }
}

fn collect_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("chatwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_package_metadata_names_files_that_exist() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let mut targets = Vec::new();
    for asset in assets {
        let source = asset[0].as_str().unwrap();
        targets.push(asset[1].as_str().unwrap().to_owned());
        if source.starts_with("target/") {
            continue;
        }
        assert!(repo().join(source).exists(), "asset {source} is missing");
    }
    for want in [
        "usr/bin/",
        "etc/chatwatch/config.toml",
        "usr/share/doc/chatwatch/README.md",
        "usr/share/chatwatch/schema/chatwatch.event.v1.json",
        "usr/share/chatwatch/prometheus/alerts.yml",
        "usr/share/chatwatch/grafana/chatwatch.json",
    ] {
        assert!(
            targets.iter().any(|t| t == want),
            "no asset installs {want}"
        );
    }
    assert_eq!(
        deb["conf-files"].as_array().unwrap()[0].as_str(),
        Some("/etc/chatwatch/config.toml")
    );
    for script in ["postinst", "postrm", "prerm"] {
        let path = repo().join("packaging/debian").join(script);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("#DEBHELPER#"), "{script}");
        assert!(mode_of(&path) & 0o111 != 0, "{script} is not executable");
    }
    // The shipped configuration is valid (with its credential present) and its sinks write
    // under LogsDirectory.
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("gws-password"), "x\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["check", "--quiet", "--config"])
        .arg(repo().join("packaging/config.toml"))
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The unit reloads through the control socket in its RuntimeDirectory.
    let unit = std::fs::read_to_string(repo().join("systemd/chatwatch.service")).unwrap();
    assert!(unit.contains("\nExecReload=/usr/bin/chatwatch reload\n"));
    assert!(unit.contains("\nRuntimeDirectory=chatwatch\n"));
    assert!(!unit.contains("ExecReload=/bin/kill"));
}
