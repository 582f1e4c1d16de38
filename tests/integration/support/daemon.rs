//! The real `chatwatch` binary running `run` with a generated configuration (against Faye or a
//! GWS server such as the simulator), its JSON log and its JSON Lines output, signals and exit.
//!
//! Every wait is a condition polled against [`DEADLINE`]; nothing sleeps for a fixed long time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::DEADLINE;

/// The chatwatch binary running `run` with a generated configuration.
pub struct Daemon {
    child: Option<Child>,
    /// Working directory holding the config, the log and the event file.
    pub dir: tempfile::TempDir,
    /// Per file read back: how many of its lines were already checked against the event schema
    /// (files only grow; a shorter read starts over).
    checked: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Daemon {
    /// The configuration used by the tests, pointing at `port`, on long-polling; `extra` is
    /// appended verbatim to `[bayeux]`.
    pub fn config(port: u16, dir: &Path, extra: &str) -> String {
        Self::config_on(port, dir, r#"["long-polling"]"#, extra)
    }

    /// [`config`](Self::config) with the account's `transports` list (TOML).
    pub fn config_on(port: u16, dir: &Path, transports: &str, extra: &str) -> String {
        format!(
            r#"
[accounts.main]
url = "http://127.0.0.1:{port}"
username = "agent1"
password = "test-password-not-for-logs"
use_env_proxy = false
server = "bayeux"
transports = {transports}

[bayeux]
max_network_delay = "2s"
backoff_increment = "100ms"
max_backoff = "1s"
default_max_interval = "2s"
reauth_delay = "1s"
{extra}

[admin]
listen = "127.0.0.1:0"

[journal]
dir = "{journal}"

[log]
level = "info,chatwatch=debug"
format = "json"

[sinks.events]
type = "file"
path = "{events}"
fsync = "never"
"#,
            events = dir.join("events.jsonl").display(),
            journal = dir.join("journal").display(),
        )
    }

    /// The configuration for a GWS server (the simulator) at `url`, logging in as `agent1`
    /// with `password`; a file sink of every event and one of transitions into `LeftChat`.
    /// The account runs in `mode = "agent"`: these tests drive the agent's contact-centre
    /// session (bring-up order, End on shutdown); the listener default has tests of its own
    /// (tests/integration/workflow.rs).
    pub fn gws_config(url: &str, password: &str, dir: &Path) -> String {
        Self::gws_config_with(url, password, dir, "mode = \"agent\"", 0)
    }

    /// [`gws_config`](Self::gws_config) with `account` lines in the account table (e.g.
    /// `overdue_after = "2s"`; nothing for the listener default) and the admin listener on
    /// `admin` (0: any port).
    pub fn gws_config_with(
        url: &str,
        password: &str,
        dir: &Path,
        account: &str,
        admin: u16,
    ) -> String {
        format!(
            r#"
[accounts.main]
url = "{url}"
username = "agent1"
password = "{password}"
use_env_proxy = false
{account}

[bayeux]
max_network_delay = "2s"
backoff_increment = "200ms"
max_backoff = "2s"
default_max_interval = "2s"
reauth_delay = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[journal]
dir = "{journal}"

[log]
level = "info,chatwatch=debug"
format = "json"

[sinks.events]
type = "file"
path = "{events}"
fsync = "never"

[sinks.left_chat]
type = "file"
path = "{left}"
fsync = "always"
filter = {{ entered_states = ["LeftChat"] }}
"#,
            events = dir.join("events.jsonl").display(),
            left = dir.join("left-chat.jsonl").display(),
            journal = dir.join("journal").display(),
        )
    }

    /// Starts `chatwatch run` against a GWS server (the simulator) at `url`.
    pub fn start_gws(url: &str, password: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("chatwatch.toml");
        std::fs::write(&config, Self::gws_config(url, password, dir.path())).unwrap();
        Self::start_with_config(dir, &config)
    }

    /// Complete lines of another JSON Lines file in the working directory.
    pub fn lines_of(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let values: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        self.check_schema(name, &values);
        values
    }

    /// Checks the lines of `name` not checked before against the event schema.
    fn check_schema(&self, name: &str, values: &[Value]) {
        let mut checked = self.checked.lock().unwrap();
        let seen = checked.entry(name.to_owned()).or_default();
        if *seen > values.len() {
            *seen = 0;
        }
        for value in &values[*seen..] {
            super::schema::check_event(name, value);
        }
        *seen = values.len();
    }

    /// Waits until some event satisfies `pred`, and returns all events at that moment.
    pub async fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events();
            if events.iter().any(&pred) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no event {what}; {} events; log:\n{}",
                events.len(),
                tail(&self.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `chatwatch run` against the server on `port`, on long-polling. `bayeux_extra`
    /// lines go into the `[bayeux]` table.
    pub fn start(port: u16, bayeux_extra: &str) -> Daemon {
        Self::start_on(port, r#"["long-polling"]"#, bayeux_extra)
    }

    /// [`start`](Self::start) with the account's `transports` list (TOML), e.g.
    /// `["websocket"]`.
    pub fn start_on(port: u16, transports: &str, bayeux_extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("chatwatch.toml");
        std::fs::write(
            &config,
            Self::config_on(port, dir.path(), transports, bayeux_extra),
        )
        .unwrap();
        Self::start_with_config(dir, &config)
    }

    /// Starts `chatwatch run --config <config>`; the log goes to `dir/chatwatch.log`.
    pub fn start_with_config(dir: tempfile::TempDir, config: &Path) -> Daemon {
        Self::start_with_env(dir, config, &[])
    }

    /// [`start_with_config`](Self::start_with_config) with extra environment variables.
    pub fn start_with_env(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(dir.path().join("chatwatch.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            dir,
            checked: Default::default(),
        }
    }

    /// The event file.
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Complete lines of the event file, parsed.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.events_path()).unwrap_or_default();
        let values: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect();
        self.check_schema("events.jsonl", &values);
        values
    }

    /// The daemon's log lines (JSON), parsed; unparseable lines are kept as strings.
    pub fn log(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("chatwatch.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_owned())))
            .collect()
    }

    /// The raw log text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chatwatch.log")).unwrap_or_default()
    }

    /// How many log lines have this `message`.
    pub fn count_log(&self, message: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l["message"] == message)
            .count()
    }

    /// Waits until the log has more than `after` lines with this `message`.
    pub async fn wait_log(&self, message: &str, after: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.count_log(message) <= after {
            assert!(
                self.running(),
                "chatwatch exited; log:\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "no new {message:?} in the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some log line contains `needle`.
    pub async fn wait_log_text(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the session is connected and subscribed for the `n`-th time.
    pub async fn wait_listening(&self, n: usize) {
        self.wait_log("listening: connected and subscribed", n - 1)
            .await;
    }

    /// Waits until the event file holds at least `n` complete lines, and returns them.
    pub async fn wait_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events arrived; log:\n{}",
                events.len(),
                tail(&self.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&self) -> bool {
        // `try_wait` needs `&mut`; ask the kernel instead.
        self.child
            .as_ref()
            .is_some_and(|c| Path::new(&format!("/proc/{}", c.id())).exists() && !is_zombie(c.id()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (`INT`, `TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "chatwatch did not exit; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
