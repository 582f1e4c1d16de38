//! The `chatwatch check` command as an operator uses it: a valid file prints the effective
//! configuration with secrets masked; a broken one fails with one line naming the file and the
//! key; environment overrides apply. `check` and `run` accept and refuse the same secrets (every
//! form of the secret vocabulary, the old spellings as aliases, a systemd credential that cannot
//! be checked outside the unit). And `chatwatch chat` works with a file that has no sink, against
//! the GWS simulator.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

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

/// Runs `chatwatch <args> --config <config>` with `env`; returns (success, stdout, stderr). Kills
/// the process and fails the test if it is still running at the deadline. Blocking (from async
/// tests, call it in `spawn_blocking`), hence the std clock and sleep.
#[allow(clippy::disallowed_methods)]
fn chatwatch(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwatch"));
    cmd.args(args).arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chatwatch {args:?} still running at the deadline: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A daemon configuration in `dir` (admin listener off, journal in `dir`) with `sinks` appended.
fn daemon_config(dir: &Path, account: &str, sinks: &str) -> std::path::PathBuf {
    let path = dir.join("chatwatch.toml");
    let text = format!(
        r#"
[accounts.main]
url = "http://127.0.0.1:9"
username = "agent1"
{account}
use_env_proxy = false

[admin]
enabled = false

[journal]
dir = "{dir}/journal"

[sinks.console]
type = "log"
{sinks}
"#,
        dir = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The error lines of a failed run: standard error minus the JSON log lines.
fn error_lines(stderr: &str, stdout: &str) -> Vec<String> {
    stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.starts_with("chatwatch:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_and_run_refuse_an_unreadable_secret_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (sinks, key, detail) in [
        (
            "[sinks.audit]\ntype = \"audit\"\ndir = \"audit\"\nhmac_key_file = \"/nonexistent/key\"\n",
            "sinks.audit.hmac_key_file: cannot read /nonexistent/key: No such file or directory",
            "",
        ),
        (
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecrets = [{ env = \"NO_SUCH_SECRET_VAR\" }]\n",
            "sinks.hook.secrets[0].env: environment variable `NO_SUCH_SECRET_VAR` is not set or empty",
            "",
        ),
        (
            "[sinks.audit]\ntype = \"audit\"\ndir = \"audit\"\nhmac_key = { file = \"/nonexistent/key\" }\n",
            "sinks.audit.hmac_key.file: cannot read /nonexistent/key",
            "",
        ),
    ] {
        let config = daemon_config(dir.path(), "password = \"pw\"", sinks);
        let (ok, stdout, stderr) = chatwatch(&["check", "--quiet"], &config, &[]);
        assert!(!ok, "check must refuse: {sinks}");
        assert_eq!(stdout, "", "--quiet prints nothing on success or failure");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{key}{detail}: {stderr}");

        let (ok, stdout, stderr) = chatwatch(&["run"], &config, &[]);
        assert!(!ok, "run must refuse: {sinks}");
        let errors = error_lines(&stderr, &stdout);
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        assert!(errors[0].contains(key), "{key}: {errors:?}");
        assert_eq!(
            errors[0].matches("cannot read").count()
                + errors[0].matches("is not set").count(),
            1,
            "the cause is told once: {errors:?}"
        );
    }
}

#[test]
fn check_accepts_every_secret_form_and_the_old_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("gws-password"), "from-a-credential\n").unwrap();
    std::fs::write(creds.join("audit-key"), [0xffu8, 0x00, 0x80]).unwrap();
    std::fs::write(creds.join("hook"), "whsec_aGVsbG8=\n").unwrap();
    let creds_env = creds.to_str().unwrap();
    let f = file.display();
    let hook = |secret: &str| {
        format!(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecrets = [{secret}]\n"
        )
    };
    let audit = |key: &str| format!("[sinks.audit]\ntype = \"audit\"\ndir = \"audit\"\n{key}\n");
    let cases: Vec<(String, String)> = vec![
        // The vocabulary.
        (
            "password = \"inline-pw\"".into(),
            hook("\"whsec_aGVsbG8=\""),
        ),
        (
            "password = { value = \"inline-pw\" }".into(),
            hook("{ value = \"whsec_aGVsbG8=\" }"),
        ),
        (
            "password = { env = \"CW_TEST_PW\" }".into(),
            hook("{ env = \"CW_TEST_HOOK\" }"),
        ),
        (
            format!("password = {{ file = \"{f}\" }}"),
            audit(&format!("hmac_key = {{ file = \"{f}\" }}")),
        ),
        (
            "password = { credential = \"gws-password\" }".into(),
            hook("{ credential = \"hook\" }") + &audit("hmac_key = { credential = \"audit-key\" }"),
        ),
        // The old spellings, kept as aliases.
        (
            "password_env = \"CW_TEST_PW\"".into(),
            audit(&format!("hmac_key_file = \"{f}\"")),
        ),
        (
            format!("password_file = \"{f}\""),
            audit("hmac_key_credential = \"audit-key\""),
        ),
        (
            "password_credential = \"gws-password\"".into(),
            String::new(),
        ),
    ];
    let env = [
        ("CW_TEST_PW", "from-the-env"),
        ("CW_TEST_HOOK", "whsec_aGVsbG8="),
        ("CREDENTIALS_DIRECTORY", creds_env),
    ];
    for (account, sinks) in &cases {
        let config = daemon_config(dir.path(), account, sinks);
        let (ok, stdout, stderr) = chatwatch(&["check"], &config, &env);
        assert!(ok, "{account} / {sinks}: {stderr}");
        assert_eq!(stderr, "", "no warning when everything was read: {stderr}");
        for secret in [
            "inline-pw",
            "from-a-file",
            "from-the-env",
            "from-a-credential",
            "aGVsbG8",
        ] {
            assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
        }
    }
    // The effective configuration keeps the form as written, never the value.
    let config = daemon_config(dir.path(), "password = { env = \"CW_TEST_PW\" }", "");
    let (ok, stdout, _) = chatwatch(&["check"], &config, &env);
    assert!(ok);
    assert!(stdout.contains("env = \"CW_TEST_PW\""), "{stdout}");
    // A wrong table is refused naming the key.
    let config = daemon_config(dir.path(), "password = { path = \"/x\" }", "");
    let (ok, _, stderr) = chatwatch(&["check"], &config, &env);
    assert!(!ok);
    assert!(
        stderr.contains("accounts.main.password") && stderr.contains("path"),
        "{stderr}"
    );
    // A value that is read but unusable is refused too: check decodes the signing secret.
    let config = daemon_config(
        dir.path(),
        "password = \"pw\"",
        &hook("{ env = \"CW_TEST_BAD_HOOK\" }"),
    );
    let (ok, _, stderr) = chatwatch(
        &["check", "--quiet"],
        &config,
        &[("CW_TEST_BAD_HOOK", "whsec_%%")],
    );
    assert!(!ok);
    assert!(
        stderr.contains("sinks.hook.secrets[0].env") && stderr.contains("base64"),
        "{stderr}"
    );
}

#[test]
fn a_credential_outside_the_unit_is_not_checked_here_but_run_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        "password = { credential = \"gws-password\" }",
        "[sinks.audit]\ntype = \"audit\"\ndir = \"audit\"\nhmac_key_credential = \"audit-key\"\n",
    );
    let check = |args: &[&str], creds: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwatch"));
        cmd.args(args).arg("--config").arg(&config);
        cmd.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Outside the unit: each credential is one warning line naming its key; the check passes.
    let (ok, stderr) = check(&["check", "--quiet", "--outside-unit"], None);
    assert!(ok, "{stderr}");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("warning: accounts.main.password.credential")
            && warnings[0].contains("not checked here"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("sinks.audit.hmac_key_credential")
            && warnings[1].contains("not checked here"),
        "{stderr}"
    );
    // A credentials directory without the files (as systemd gives ExecReload=+): still warnings.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let (ok, stderr) = check(&["check", "--quiet", "--outside-unit"], Some(&creds));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    // Every other source is still checked outside the unit.
    let broken = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[sinks.console]", "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecrets = [{ env = \"NO_SUCH_SECRET_VAR\" }]\n\n[sinks.console]");
    let broken_path = dir.path().join("broken.toml");
    std::fs::write(&broken_path, broken).unwrap();
    let (ok, _, stderr) = chatwatch(&["check", "--quiet", "--outside-unit"], &broken_path, &[]);
    assert!(!ok);
    assert!(stderr.contains("sinks.hook.secrets[0].env"), "{stderr}");

    // Without --outside-unit, check reads the credentials as run does, and both refuse.
    let (ok, stderr) = check(&["check", "--quiet"], None);
    assert!(!ok);
    assert!(
        stderr.contains("accounts.main.password.credential")
            && stderr.contains("CREDENTIALS_DIRECTORY"),
        "{stderr}"
    );
    let (ok, stderr) = check(&["run"], None);
    assert!(!ok);
    assert!(
        stderr.contains("accounts.main.password.credential"),
        "{stderr}"
    );
    let (ok, stderr) = check(&["check", "--quiet"], Some(&creds));
    assert!(!ok);
    assert!(
        stderr.contains("accounts.main.password.credential: cannot read"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_operation_needs_no_sink() {
    use chatwatch::sim::{ChatOffer, SimConfig, Simulator};
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimConfig::default())
        .await
        .unwrap();
    let chat = sim.offer_chat("agent1", ChatOffer::default());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[accounts.main]\nurl = \"{}\"\nusername = \"agent1\"\npassword = {{ env = \"CW_TEST_PW\" }}\nuse_env_proxy = false\n\n[journal]\ndir = \"{}/journal\"\n",
            sim.base_url(),
            dir.path().display()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let config = config.clone();
        let chat = chat.clone();
        move || {
            chatwatch(
                &["chat", "accept", &chat],
                &config,
                &[("CW_TEST_PW", "password1")],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!("Accept accepted for chat {chat}")),
        "{stdout}"
    );
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.path == format!("/api/v2/me/chats/{chat}")
                && r.operation_name.as_deref() == Some("Accept")
                && r.status == 200),
        "the simulator saw the Accept: {:?}",
        sim.requests()
    );
    // The daemon still wants a sink.
    let (ok, _, stderr) = chatwatch(&["check", "--quiet"], &config, &[("CW_TEST_PW", "x")]);
    assert!(!ok);
    assert!(stderr.contains("no sink configured"), "{stderr}");
}

/// The daemon as run: after it started (an account on the simulator, a log, a webhook and an
/// audit sink), every metric family on `/metrics` carries a `# HELP` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_of_the_running_daemon_has_help() {
    use chatwatch::sim::{SimConfig, Simulator};
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimConfig::default())
        .await
        .unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[accounts.main]
url = "{url}"
username = "agent1"
password = {{ env = "CW_TEST_PW" }}
use_env_proxy = false

[admin]
listen = "127.0.0.1:{admin}"

[journal]
dir = "{dir}/journal"

[log]
format = "json"

[sinks.console]
type = "log"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/"
secrets = [{{ value = "whsec_aGVsbG8=" }}]

[sinks.audit]
type = "audit"
dir = "{dir}/audit"
"#,
            url = sim.base_url(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["run", "--config"])
        .arg(&config)
        .env("CW_TEST_PW", "password1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = TokioInstant::now() + Duration::from_secs(60);
    let text = loop {
        let ready = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            let body = http
                .get(format!("http://127.0.0.1:{admin}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            // The session families appear once the account is subscribed; the webhook's once
            // its sink is built.
            if body.contains("chatwatch_session_subscribed")
                && body.contains("chatwatch_webhook_endpoint_disabled")
            {
                break body;
            }
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "chatwatch exited before it was ready"
        );
        assert!(
            TokioInstant::now() < deadline,
            "never ready with every family"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 10, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| scrape.docs.get(**f).is_none_or(|h| h.trim().is_empty()))
        .collect();
    assert!(
        missing.is_empty(),
        "families without # HELP: {missing:?}\n{text}"
    );
    for family in [
        "chatwatch_webhook_attempts_total",
        "chatwatch_sink_dead_letters_total",
    ] {
        assert!(families.contains(&family), "{family} is exported: {text}");
    }
}
