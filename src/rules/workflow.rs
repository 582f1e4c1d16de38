//! One account's workflow state, sans I/O: the chats it tracks (state, capabilities, disposition
//! code), which of them are **pending disposition** (entered `LeftChat`, not yet `Completed` or
//! `Revoked`) and since when, the `overdue_after` timer of each, and the runs of the rules that
//! apply to the account.
//!
//! The account's pipeline feeds it every event it built ([`Workflow::observe`]), asks it what is
//! due ([`Workflow::poll`]) and hands it the outcome of each operation attempt
//! ([`Workflow::reported`]); each returns the events chatwatch derives (`disposition_set`,
//! `disposition_overdue`, `action`), which the pipeline appends to the journal like any other
//! event, and the operations to perform, which the account's actor ([`super::actor`]) sends
//! through the account's GWS session. The workflow reads no clock (`now` is an argument) and
//! does no I/O, so every rule of it is tested row by row.
//!
//! # Exactly once, across restarts
//!
//! What must survive a restart (pending since when, overdue fired or not, the disposition code
//! known, each rule run's step and status) is [`Workflow::saved`] into a small state file after
//! every batch that changed it, *after* the batch's events are in the journal; a restart
//! [`Workflow::restore`]s it, so timers are rebuilt from that state and not fired again. A crash
//! between the journal append and the state file can derive an event a second time: a
//! `disposition_overdue` has a deterministic `event_id` ([`crate::event::derived_event_id`] of
//! the chat, the time it entered `LeftChat` and the due time), so both copies have the same
//! idempotency key; a `disposition_set` may come twice under two ids (at least once). An
//! operation in flight when the daemon died (status `running`) is performed again after the
//! restart: GWS answers a repeated `SetDisposition` with the same result and a repeated
//! `Complete` with a refusal that the `action` event records.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::config::RuleConfig;
use crate::event::{
    derived_event_id, ActionRecord, DispositionChange, Event, EventKind, PendingRecord,
};
use crate::gws::notification::{Capability, ChatState, Participant, ReferenceId};
use crate::gws::operations::ChatOperation;

/// The state file's format version.
pub const STATE_VERSION: u32 = 1;

/// The user-data key of the disposition code unless an account says otherwise (GWS's
/// `dispositionKey` default, Workspace's `interaction.disposition.key-name`).
pub const DEFAULT_DISPOSITION_KEY: &str = "DispositionCode";

/// One tracked chat as the operations API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatView {
    /// The chat (interaction) id.
    pub id: String,
    /// The last state seen, `null` when only transcript updates were seen.
    pub state: Option<ChatState>,
    /// The state before `state` (the last different one seen), `null` when none is known.
    pub previous_state: Option<ChatState>,
    /// The operations GWS said are valid now (the last list seen).
    pub capabilities: Vec<Capability>,
    /// The participants (the last list seen).
    pub participants: Vec<Participant>,
    /// The disposition code (the account's `disposition_key` in the chat's user data).
    pub disposition: Option<String>,
    /// When the chat entered `LeftChat`, if it is pending disposition.
    #[serde(with = "time::serde::rfc3339::option")]
    pub pending_since: Option<OffsetDateTime>,
    /// When chatwatch last received an event about the chat.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A configured rule with the rate limiter every account shares; [`WorkflowSettings::rules`]
/// holds those that apply to one account.
#[derive(Debug)]
pub struct Rule {
    /// The configuration.
    pub config: RuleConfig,
    limiter: Mutex<Bucket>,
}

impl Rule {
    /// The rules of a configuration, each with its own rate limiter.
    pub fn build_all(configs: &[RuleConfig]) -> Vec<Arc<Rule>> {
        configs
            .iter()
            .map(|config| {
                Arc::new(Rule {
                    config: config.clone(),
                    limiter: Mutex::new(Bucket::new(config.max_per_minute)),
                })
            })
            .collect()
    }
}

/// A token bucket: `per_minute` tokens, refilled continuously.
#[derive(Debug)]
struct Bucket {
    per_minute: u32,
    tokens: f64,
    last: Option<OffsetDateTime>,
}

impl Bucket {
    fn new(per_minute: u32) -> Bucket {
        Bucket {
            per_minute: per_minute.max(1),
            tokens: f64::from(per_minute.max(1)),
            last: None,
        }
    }

    /// Takes a token at `now`, or says when one will be there.
    fn take(&mut self, now: OffsetDateTime) -> Result<(), OffsetDateTime> {
        let rate = f64::from(self.per_minute) / 60.0;
        if let Some(last) = self.last {
            let elapsed = (now - last).as_seconds_f64().max(0.0);
            self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.per_minute));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate;
            Err(now + time::Duration::seconds_f64(wait))
        }
    }
}

/// What one account's workflow needs to know.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// The account name.
    pub account: String,
    /// The user-data key of the disposition code.
    pub disposition_key: String,
    /// Emit `disposition_overdue` once per chat pending longer than this; `None`: never.
    pub overdue_after: Option<Duration>,
    /// The rules that apply to this account.
    pub rules: Vec<Arc<Rule>>,
    /// The most chats tracked at once (the tracker's bound).
    pub max_chats: usize,
}

impl WorkflowSettings {
    /// Settings for `account` with the default key, no overdue timer and no rule.
    pub fn plain(account: &str, max_chats: usize) -> WorkflowSettings {
        WorkflowSettings {
            account: account.to_owned(),
            disposition_key: DEFAULT_DISPOSITION_KEY.to_owned(),
            overdue_after: None,
            rules: Vec::new(),
            max_chats,
        }
    }
}

/// Where a rule run of one chat stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for `due` (or for the rate limit).
    Scheduled,
    /// An operation was handed to the actor; its outcome is awaited.
    Running,
    /// Every operation was accepted (or recorded as a dry run).
    Done,
    /// An operation was not accepted; the rest of the list was not attempted.
    Failed,
    /// An `unless` event came first.
    Cancelled,
}

/// One rule's run for one chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRun {
    /// When the next step may run.
    #[serde(with = "time::serde::rfc3339")]
    pub due: OffsetDateTime,
    /// The event that started the run.
    pub trigger: String,
    /// The next operation of the `do` list, from 0.
    pub step: usize,
    /// The status.
    pub status: RunStatus,
}

/// Everything known about one chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChatEntry {
    state: Option<ChatState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_state: Option<ChatState>,
    #[serde(default)]
    capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    participants: Vec<Participant>,
    #[serde(default)]
    disposition: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pending_since: Option<OffsetDateTime>,
    #[serde(default)]
    overdue_fired: bool,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(default)]
    runs: BTreeMap<String, RuleRun>,
}

impl ChatEntry {
    fn new(at: OffsetDateTime) -> ChatEntry {
        ChatEntry {
            state: None,
            previous_state: None,
            capabilities: Vec::new(),
            participants: Vec::new(),
            disposition: None,
            pending_since: None,
            overdue_fired: false,
            updated_at: at,
            runs: BTreeMap::new(),
        }
    }

    /// Whether losing this entry at a restart would lose something GWS cannot tell again.
    fn durable(&self) -> bool {
        self.pending_since.is_some() || self.disposition.is_some() || !self.runs.is_empty()
    }
}

/// The persisted part of a workflow (the state file's content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedWorkflow {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The account.
    pub account: String,
    /// The chats with something durable (pending, a disposition code, rule runs), by id.
    chats: BTreeMap<String, ChatEntry>,
}

/// One operation for the actor to perform.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// The chat.
    pub chat_id: String,
    /// The rule's name.
    pub rule: String,
    /// The position in the rule's `do` list.
    pub step: usize,
    /// The operation.
    pub operation: ChatOperation,
}

/// What became of one attempt of an [`ActionRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    /// The request.
    pub request: ActionRequest,
    /// The attempt, from 1.
    pub attempt: u32,
    /// `accepted`, `rejected`, `unavailable`, `failed` or `invalid`.
    pub outcome: &'static str,
    /// Whether the actor gives up after this attempt (always true unless `unavailable` or
    /// `failed` with attempts left).
    pub is_final: bool,
    /// GWS's `statusCode`, when it sent one.
    pub gws_status: Option<i64>,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// GWS's `referenceId` of an accepted operation.
    pub reference_id: Option<ReferenceId>,
    /// What went wrong.
    pub message: Option<String>,
    /// When the attempt ended.
    pub at: OffsetDateTime,
}

/// What [`Workflow::poll`] found due.
#[derive(Debug, Default)]
pub struct Due {
    /// Derived events to append (`disposition_overdue`, dry-run `action` events).
    pub events: Vec<Event>,
    /// Operations to hand to the actor.
    pub requests: Vec<ActionRequest>,
}

/// One account's workflow (see the module documentation).
#[derive(Debug)]
pub struct Workflow {
    settings: WorkflowSettings,
    chats: HashMap<String, ChatEntry>,
    /// A durable part changed since the last [`take_dirty`](Self::take_dirty).
    dirty: bool,
}

impl Workflow {
    /// An empty workflow.
    pub fn new(settings: WorkflowSettings) -> Workflow {
        Workflow {
            settings,
            chats: HashMap::new(),
            dirty: false,
        }
    }

    /// A workflow that goes on from `saved` (its state file). Runs that were `running` when the
    /// state was saved are scheduled again (see the module documentation); runs of rules no
    /// longer configured are dropped.
    pub fn restore(settings: WorkflowSettings, saved: SavedWorkflow) -> Workflow {
        let mut workflow = Workflow::new(settings);
        for (id, mut entry) in saved.chats {
            entry.runs.retain(|rule, _| workflow.rule(rule).is_some());
            for run in entry.runs.values_mut() {
                if run.status == RunStatus::Running {
                    run.status = RunStatus::Scheduled;
                }
            }
            workflow.chats.insert(id, entry);
        }
        workflow
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.settings.account
    }

    /// The settings.
    pub fn settings(&self) -> &WorkflowSettings {
        &self.settings
    }

    /// The persisted part, for the state file.
    pub fn saved(&self) -> SavedWorkflow {
        SavedWorkflow {
            version: STATE_VERSION,
            account: self.settings.account.clone(),
            chats: self
                .chats
                .iter()
                .filter(|(_, e)| e.durable())
                .map(|(id, e)| (id.clone(), e.clone()))
                .collect(),
        }
    }

    /// Whether a durable part changed since the last call (then the state file must be written).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The tracked chats, by id.
    pub fn chats(&self) -> Vec<ChatView> {
        let mut views: Vec<ChatView> = self
            .chats
            .iter()
            .map(|(id, entry)| view(id, entry))
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// One tracked chat.
    pub fn chat(&self, id: &str) -> Option<ChatView> {
        self.chats.get(id).map(|entry| view(id, entry))
    }

    /// How many chats are pending disposition, and since when the oldest of them is.
    pub fn pending(&self) -> (usize, Option<OffsetDateTime>) {
        let mut count = 0;
        let mut oldest: Option<OffsetDateTime> = None;
        for since in self.chats.values().filter_map(|e| e.pending_since) {
            count += 1;
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
        }
        (count, oldest)
    }

    /// A rule run, for tests and `chatwatch` diagnostics.
    pub fn run(&self, chat_id: &str, rule: &str) -> Option<&RuleRun> {
        self.chats.get(chat_id)?.runs.get(rule)
    }

    fn rule(&self, name: &str) -> Option<&Arc<Rule>> {
        self.settings.rules.iter().find(|r| r.config.name == name)
    }

    /// Takes in one event the pipeline built (received or derived) and returns the events it
    /// derives from it (`disposition_set`). Updates the chat's state, capabilities, disposition
    /// and pending time; starts the runs of rules whose `when` matches; cancels those whose
    /// `unless` matches; forgets a chat that ended.
    pub fn observe(&mut self, event: &Event) -> Vec<Event> {
        let mut derived = Vec::new();
        self.observe_one(event, &mut derived);
        let mut i = 0;
        while i < derived.len() {
            let next = derived[i].clone();
            let mut more = Vec::new();
            self.observe_one(&next, &mut more);
            derived.extend(more);
            i += 1;
        }
        derived
    }

    fn observe_one(&mut self, event: &Event, derived: &mut Vec<Event>) {
        let Some(chat) = event.chat.as_ref() else {
            return;
        };
        let Some(id) = chat.id.as_deref() else {
            return;
        };
        if event.kind == EventKind::Action {
            return;
        }
        if event.kind == EventKind::ChatVanished
            || chat.state.as_ref().is_some_and(ChatState::is_terminal)
        {
            self.cancel_for(id, event, true);
            if let Some(entry) = self.chats.remove(id) {
                if entry.durable() {
                    self.dirty = true;
                }
            }
            return;
        }
        if !event.kind.is_derived() {
            let at = event.received_at;
            let key = self.settings.disposition_key.clone();
            let account = self.settings.account.clone();
            self.make_room(id);
            let entry = self
                .chats
                .entry(id.to_owned())
                .or_insert_with(|| ChatEntry::new(at));
            entry.updated_at = at;
            if let Some(state) = &chat.state {
                if entry.state.as_ref() != Some(state) {
                    let before = entry.state.take().or_else(|| chat.previous_state.clone());
                    entry.previous_state = before.filter(|b| b != state);
                }
                entry.state = Some(state.clone());
                if *state == ChatState::LeftChat {
                    if entry.pending_since.is_none() {
                        entry.pending_since = Some(at);
                        self.dirty = true;
                    }
                } else if entry.pending_since.take().is_some() {
                    entry.overdue_fired = false;
                    self.dirty = true;
                }
            }
            if let Some(capabilities) = &chat.capabilities {
                entry.capabilities = capabilities.clone();
            }
            if let Some(participants) = &chat.participants {
                entry.participants = participants.clone();
            }
            if let Some(user_data) = &chat.user_data {
                let code = user_data.get(&key).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                // A notification whose user data lacks the key says the key is gone only when
                // it is a property update; other notifications may carry partial user data.
                let removed = code.is_none()
                    && event.notification_type.as_ref().map(|n| n.as_str())
                        == Some("PropertiesUpdated");
                if (code.is_some() || removed) && code != entry.disposition {
                    let old = std::mem::replace(&mut entry.disposition, code.clone());
                    self.dirty = true;
                    let change = DispositionChange {
                        key: key.clone(),
                        old,
                        new: code,
                    };
                    let mut e = Event::derived(
                        derived_event_id(at, &[&account, id, "disposition_set", &event.event_id]),
                        &account,
                        EventKind::DispositionSet,
                        id,
                        entry.state.clone(),
                        at,
                        json!({"derived": "disposition_set", "chat": {"id": id},
                            "disposition": change, "cause": event.event_id}),
                    );
                    e.disposition = Some(change);
                    derived.push(e);
                }
            }
        }
        if !self.chats.contains_key(id) {
            return;
        }
        self.cancel_for(id, event, false);
        self.start_runs(id, event);
    }

    /// Keeps the chat count within `max_chats`: drops the least recently updated chat, one
    /// without durable state if there is one.
    fn make_room(&mut self, incoming: &str) {
        if self.chats.len() < self.settings.max_chats.max(1) || self.chats.contains_key(incoming) {
            return;
        }
        let victim = self
            .chats
            .iter()
            .min_by_key(|(_, e)| (e.durable(), e.updated_at))
            .map(|(id, _)| id.clone());
        if let Some(victim) = victim {
            if self.chats.remove(&victim).is_some_and(|e| e.durable()) {
                self.dirty = true;
            }
        }
    }

    /// Cancels the scheduled runs of `chat` that `event` cancels (all of them when the chat
    /// ended).
    fn cancel_for(&mut self, chat: &str, event: &Event, ended: bool) {
        let state = event.chat_state().map(ChatState::as_str);
        let kind = event.kind.as_str();
        let rules = &self.settings.rules;
        let Some(entry) = self.chats.get_mut(chat) else {
            return;
        };
        for (name, run) in entry.runs.iter_mut() {
            // `unless` cancels a run that waits for its first operation; a run under way (its
            // own SetDisposition causes a disposition_set) goes on unless the chat ended.
            if run.status != RunStatus::Scheduled || (run.step > 0 && !ended) {
                continue;
            }
            let cancels = ended
                || rules
                    .iter()
                    .find(|r| &r.config.name == name)
                    .is_some_and(|r| {
                        r.config
                            .unless
                            .iter()
                            .any(|u| u == kind || Some(u.as_str()) == state)
                    });
            if cancels {
                tracing::info!(account = %self.settings.account, chat_id = chat, rule = %name, cause = kind, state = ?state, "rule cancelled for this chat");
                metrics::counter!(crate::metrics::RULE_RUNS, "rule" => name.clone(), "result" => "cancelled").increment(1);
                run.status = RunStatus::Cancelled;
                self.dirty = true;
            }
        }
    }

    /// Starts the runs of the rules whose `when` matches `event`, unless the chat already has
    /// a run of that rule that was not cancelled.
    fn start_runs(&mut self, chat: &str, event: &Event) {
        let Some(entry) = self.chats.get_mut(chat) else {
            return;
        };
        for rule in &self.settings.rules {
            let config = &rule.config;
            if !config.when.matches(event) {
                continue;
            }
            if entry
                .runs
                .get(&config.name)
                .is_some_and(|r| r.status != RunStatus::Cancelled)
            {
                continue;
            }
            let after = time::Duration::try_from(config.after).unwrap_or(time::Duration::MAX);
            let due = event
                .received_at
                .checked_add(after)
                .unwrap_or(event.received_at);
            tracing::info!(account = %self.settings.account, chat_id = chat, rule = %config.name, due = %due, "rule scheduled for this chat");
            metrics::counter!(crate::metrics::RULE_RUNS, "rule" => config.name.clone(), "result" => "scheduled").increment(1);
            entry.runs.insert(
                config.name.clone(),
                RuleRun {
                    due,
                    trigger: event.event_id.clone(),
                    step: 0,
                    status: RunStatus::Scheduled,
                },
            );
            self.dirty = true;
        }
    }

    /// The earliest moment something may be due: an overdue timer or a scheduled run.
    pub fn next_deadline(&self) -> Option<OffsetDateTime> {
        let overdue = self.settings.overdue_after.and_then(|after| {
            let after = time::Duration::try_from(after).ok()?;
            self.chats
                .values()
                .filter(|e| !e.overdue_fired)
                .filter_map(|e| e.pending_since?.checked_add(after))
                .min()
        });
        let runs = self
            .chats
            .values()
            .flat_map(|e| e.runs.values())
            .filter(|r| r.status == RunStatus::Scheduled)
            .map(|r| r.due)
            .min();
        match (overdue, runs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: `disposition_overdue` events for chats pending longer than
    /// `overdue_after` (once per chat), and the next operation of every scheduled run whose time
    /// came and whose rule's rate limit allows it (a run held back by the limit stays scheduled,
    /// due when a token is there). A dry run records each of its operations as an `action` event
    /// with outcome `dry_run` and sends nothing.
    pub fn poll(&mut self, now: OffsetDateTime) -> Due {
        let mut due = Due::default();
        let account = self.settings.account.clone();
        if let Some(after) = self
            .settings
            .overdue_after
            .and_then(|a| time::Duration::try_from(a).ok())
        {
            let mut ids: Vec<&String> = self.chats.keys().collect();
            ids.sort();
            let ids: Vec<String> = ids.into_iter().cloned().collect();
            for id in ids {
                let Some(entry) = self.chats.get_mut(&id) else {
                    continue;
                };
                let Some(since) = entry.pending_since else {
                    continue;
                };
                if entry.overdue_fired || since + after > now {
                    continue;
                }
                entry.overdue_fired = true;
                self.dirty = true;
                let pending = PendingRecord {
                    since,
                    overdue_after_seconds: after.whole_seconds().max(0) as u64,
                    disposition: entry.disposition.clone(),
                };
                let since_text = since.unix_timestamp_nanos().to_string();
                let mut event = Event::derived(
                    derived_event_id(
                        since + after,
                        &[&account, &id, "disposition_overdue", &since_text],
                    ),
                    &account,
                    EventKind::DispositionOverdue,
                    &id,
                    entry.state.clone(),
                    now,
                    json!({"derived": "disposition_overdue", "chat": {"id": id}, "pending": pending}),
                );
                event.pending = Some(pending);
                due.events.push(event);
            }
        }
        // Overdue events may start or cancel rules too.
        let overdue: Vec<Event> = due.events.clone();
        for event in &overdue {
            let more = self.observe(event);
            due.events.extend(more);
        }
        let mut ready: Vec<(OffsetDateTime, String, String)> = self
            .chats
            .iter()
            .flat_map(|(id, e)| {
                e.runs
                    .iter()
                    .filter(|(_, r)| r.status == RunStatus::Scheduled && r.due <= now)
                    .map(move |(rule, r)| (r.due, id.clone(), rule.clone()))
            })
            .collect();
        ready.sort();
        for (_, id, rule_name) in ready {
            let Some(rule) = self.rule(&rule_name).cloned() else {
                continue;
            };
            let key = self.settings.disposition_key.clone();
            let Some(entry) = self.chats.get_mut(&id) else {
                continue;
            };
            let Some(run) = entry.runs.get_mut(&rule_name) else {
                continue;
            };
            // The rate limit counts chats, not operations: only a run's first step takes a token.
            if run.step == 0 {
                let taken = rule
                    .limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(now);
                if let Err(when) = taken {
                    tracing::debug!(account = %account, chat_id = %id, rule = %rule_name, "rate limit: the rule waits");
                    run.due = when;
                    self.dirty = true;
                    continue;
                }
            }
            self.dirty = true;
            if rule.config.dry_run {
                for (step, action) in rule.config.actions.iter().enumerate().skip(run.step) {
                    let operation = action.operation(&key);
                    let record = ActionRecord {
                        rule: rule_name.clone(),
                        operation: operation.name().to_owned(),
                        step,
                        attempt: 1,
                        outcome: "dry_run".to_owned(),
                        is_final: true,
                        dry_run: true,
                        gws_status: None,
                        http_status: None,
                        reference_id: None,
                        message: None,
                    };
                    metrics::counter!(crate::metrics::RULE_ACTIONS, "rule" => rule_name.clone(), "operation" => operation.name(), "outcome" => "dry_run").increment(1);
                    due.events.push(action_event(
                        &account,
                        &id,
                        entry.state.clone(),
                        &run.trigger,
                        record,
                        &operation,
                        now,
                    ));
                }
                run.step = rule.config.actions.len();
                run.status = RunStatus::Done;
                metrics::counter!(crate::metrics::RULE_RUNS, "rule" => rule_name.clone(), "result" => "done").increment(1);
                continue;
            }
            let Some(action) = rule.config.actions.get(run.step) else {
                run.status = RunStatus::Done;
                continue;
            };
            run.status = RunStatus::Running;
            due.requests.push(ActionRequest {
                chat_id: id.clone(),
                rule: rule_name.clone(),
                step: run.step,
                operation: action.operation(&key),
            });
        }
        due
    }

    /// Takes in the outcome of one attempt: returns its `action` event, and moves the run on
    /// when the attempt was the last one (the next operation is due at once after an accepted
    /// one; a refused one fails the run).
    pub fn reported(&mut self, report: ActionReport) -> Vec<Event> {
        let account = self.settings.account.clone();
        let request = &report.request;
        metrics::counter!(crate::metrics::RULE_ACTIONS, "rule" => request.rule.clone(), "operation" => request.operation.name(), "outcome" => report.outcome).increment(1);
        let record = ActionRecord {
            rule: request.rule.clone(),
            operation: request.operation.name().to_owned(),
            step: request.step,
            attempt: report.attempt,
            outcome: report.outcome.to_owned(),
            is_final: report.is_final,
            dry_run: false,
            gws_status: report.gws_status,
            http_status: report.http_status,
            reference_id: report.reference_id.clone(),
            message: report.message.clone(),
        };
        let actions = self
            .rule(&request.rule)
            .map_or(0, |r| r.config.actions.len());
        let (state, trigger) = match self.chats.get_mut(&request.chat_id) {
            Some(entry) => {
                let state = entry.state.clone();
                let trigger = match entry.runs.get_mut(&request.rule) {
                    Some(run) if run.status == RunStatus::Running && run.step == request.step => {
                        if report.is_final {
                            self.dirty = true;
                            if report.outcome == "accepted" {
                                run.step += 1;
                                if run.step >= actions {
                                    run.status = RunStatus::Done;
                                    metrics::counter!(crate::metrics::RULE_RUNS, "rule" => request.rule.clone(), "result" => "done").increment(1);
                                } else {
                                    run.status = RunStatus::Scheduled;
                                    run.due = report.at;
                                }
                            } else {
                                run.status = RunStatus::Failed;
                                metrics::counter!(crate::metrics::RULE_RUNS, "rule" => request.rule.clone(), "result" => "failed").increment(1);
                            }
                        }
                        run.trigger.clone()
                    }
                    Some(run) => run.trigger.clone(),
                    None => String::new(),
                };
                (state, trigger)
            }
            // The chat ended meanwhile (its Completed came before the answer).
            None => (None, String::new()),
        };
        vec![action_event(
            &account,
            &request.chat_id,
            state,
            &trigger,
            record,
            &request.operation,
            report.at,
        )]
    }

    /// Puts back a request the actor did not perform (it stopped first): the run is scheduled
    /// again, at once.
    pub fn not_performed(&mut self, request: &ActionRequest, now: OffsetDateTime) {
        if let Some(run) = self
            .chats
            .get_mut(&request.chat_id)
            .and_then(|e| e.runs.get_mut(&request.rule))
        {
            if run.status == RunStatus::Running && run.step == request.step {
                run.status = RunStatus::Scheduled;
                run.due = now;
                self.dirty = true;
            }
        }
    }
}

/// The `action` event of one attempt.
fn action_event(
    account: &str,
    chat_id: &str,
    state: Option<ChatState>,
    trigger: &str,
    record: ActionRecord,
    operation: &ChatOperation,
    at: OffsetDateTime,
) -> Event {
    let body = operation.body().unwrap_or(Value::Null);
    let mut event = Event::derived(
        derived_event_id(
            at,
            &[
                account,
                chat_id,
                "action",
                &record.rule,
                trigger,
                &record.step.to_string(),
                &record.attempt.to_string(),
            ],
        ),
        account,
        EventKind::Action,
        chat_id,
        state,
        at,
        json!({"derived": "action", "chat": {"id": chat_id}, "action": record,
            "request": body, "cause": trigger}),
    );
    event.reference_id = record.reference_id.clone();
    event.action = Some(record);
    event
}

fn view(id: &str, entry: &ChatEntry) -> ChatView {
    ChatView {
        id: id.to_owned(),
        state: entry.state.clone(),
        previous_state: entry.previous_state.clone(),
        capabilities: entry.capabilities.clone(),
        participants: entry.participants.clone(),
        disposition: entry.disposition.clone(),
        pending_since: entry.pending_since,
        updated_at: entry.updated_at,
    }
}

#[cfg(test)]
mod tests;
