//! The `chatwatch check` command as an operator uses it: a valid file prints the effective
//! configuration with secrets masked; a broken one fails with one line naming the file and the
//! key; environment overrides apply.

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwatch"));
    cmd.args(["check", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[accounts.main]
url = "https://gws.example.com:8443"
username = "agent1"
password = "hunter2-secret"

[sinks.events]
type = "file"
path = "/tmp/chatwatch-check-test/events.jsonl"
filter = { entered_states = ["LeftChat"] }
"#;

#[test]
fn a_valid_file_prints_the_effective_config_with_secrets_masked() {
    let (ok, stdout, stderr) = check(GOOD, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("password = \"***\""), "{stdout}");
    assert!(!stdout.contains("hunter2-secret"), "{stdout}");
    assert!(
        stdout.contains("max_network_delay = \"10s\""),
        "defaults are shown: {stdout}"
    );
    assert!(
        stdout.contains("entered_states = [\"LeftChat\"]"),
        "{stdout}"
    );
}

#[test]
fn environment_overrides_apply_and_typos_in_them_fail() {
    let (ok, stdout, _) = check(GOOD, &[("CHATWATCH__BAYEUX__MAX_BACKOFF", "5s")]);
    assert!(ok);
    assert!(stdout.contains("max_backoff = \"5s\""), "{stdout}");
    let (ok, _, stderr) = check(GOOD, &[("CHATWATCH__BAYEUX__MAX_BACKOF", "5s")]);
    assert!(!ok);
    assert!(stderr.contains("max_backof"), "{stderr}");
}

#[test]
fn a_broken_file_fails_with_one_line_naming_the_file_and_the_key() {
    let (ok, _, stderr) = check(&GOOD.replace("username", "user_name"), &[]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("chatwatch.toml")
            && stderr.contains("user_name")
            && stderr.contains("accounts.main"),
        "{stderr}"
    );
    let (ok, _, stderr) = check(&GOOD.replace("\"file\"", "\"fiel\""), &[]);
    assert!(!ok);
    assert!(stderr.contains("fiel"), "{stderr}");
}

#[test]
fn a_missing_password_file_is_reported_without_running() {
    let config = GOOD.replace(
        "password = \"hunter2-secret\"",
        "password_file = \"/nonexistent/chatwatch-pw\"",
    );
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("accounts.main.password_file")
            && stderr.contains("/nonexistent/chatwatch-pw"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_config_file_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["check", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/chatwatch.toml"
        ))
        .env("CHATWATCH_MAIN_PASSWORD", "from-the-environment")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("from-the-environment"));
}
