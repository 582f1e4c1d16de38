use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::gws::notification::decode;
use crate::json::RawJson;
use crate::rules::config::RuleConfig;

const T0: OffsetDateTime = datetime!(2026-12-04 09:00 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

/// A chat state change of `chat` in `state` received at `t`, with `previous` as the tracker's.
fn change(
    chat: &str,
    state: &str,
    previous: Option<&str>,
    t: OffsetDateTime,
    extra: Value,
) -> Event {
    let mut data = json!({"messageType": "ChatStateChangeMessage", "notificationType": "StatusChange",
        "chat": {"id": chat, "state": state}});
    if let (Value::Object(chat), Value::Object(extra)) = (&mut data["chat"], extra.clone()) {
        chat.extend(extra);
    }
    if extra.get("userData").is_some() {
        data["notificationType"] = json!("PropertiesUpdated");
    }
    Event::new(
        crate::event::new_event_id(),
        "main",
        "/v2/me/chats".into(),
        t,
        RawJson::from_value(&data),
        decode(&data),
        previous.map(ChatState::from),
    )
}

fn rules(text: &str) -> Vec<Arc<Rule>> {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    Rule::build_all(&toml::from_str::<File>(text).expect("rules parse").rules)
}

const README_RULE: &str = r#"
[[rules]]
name = "auto-close"
when = { entered_states = ["LeftChat"] }
after = "10m"
unless = ["Completed", "disposition_set"]
do = [{ set_disposition = { code = "AutoClosed" } }, { complete = {} }]
"#;

fn workflow(overdue: Option<u64>, rule_text: &str) -> Workflow {
    Workflow::new(WorkflowSettings {
        account: "main".into(),
        disposition_key: DEFAULT_DISPOSITION_KEY.into(),
        overdue_after: overdue.map(Duration::from_secs),
        rules: if rule_text.is_empty() {
            Vec::new()
        } else {
            rules(rule_text)
        },
        max_chats: 100,
    })
}

fn accepted(request: &ActionRequest, t: OffsetDateTime) -> ActionReport {
    ActionReport {
        request: request.clone(),
        attempt: 1,
        outcome: "accepted",
        is_final: true,
        gws_status: Some(0),
        http_status: Some(200),
        reference_id: Some(ReferenceId::Number(7)),
        message: None,
        at: t,
    }
}

#[test]
fn a_chat_is_pending_from_left_chat_until_completed() {
    let mut wf = workflow(None, "");
    wf.observe(&change("c1", "Chatting", None, at(0), json!({})));
    assert_eq!(wf.pending(), (0, None));
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(5),
        json!({}),
    ));
    assert_eq!(wf.pending(), (1, Some(at(5))));
    // A repeated LeftChat (a recovered one after a restart) keeps the first time.
    wf.observe(&change("c1", "LeftChat", None, at(50), json!({})));
    assert_eq!(wf.pending(), (1, Some(at(5))));
    let view = wf.chat("c1").expect("tracked");
    assert_eq!(view.state, Some(ChatState::LeftChat));
    assert_eq!(view.pending_since, Some(at(5)));
    assert!(wf.take_dirty());
    wf.observe(&change(
        "c1",
        "Completed",
        Some("LeftChat"),
        at(60),
        json!({}),
    ));
    assert_eq!(wf.pending(), (0, None));
    assert!(wf.chat("c1").is_none(), "an ended chat is forgotten");
    assert!(
        wf.take_dirty(),
        "forgetting a durable chat changes the state file"
    );
}

#[test]
fn disposition_set_is_derived_once_per_change() {
    let mut wf = workflow(None, "");
    let derived = wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    assert!(derived.is_empty());
    let with_code = |code: &str, t| {
        change(
            "c1",
            "LeftChat",
            Some("LeftChat"),
            t,
            json!({"userData": {"DispositionCode": code, "Other": 1}}),
        )
    };
    let derived = wf.observe(&with_code("Sale", at(10)));
    assert_eq!(derived.len(), 1);
    let event = &derived[0];
    assert_eq!(event.kind, EventKind::DispositionSet);
    assert_eq!(event.chat_id(), Some("c1"));
    assert_eq!(
        event.disposition,
        Some(DispositionChange {
            key: "DispositionCode".into(),
            old: None,
            new: Some("Sale".into())
        })
    );
    assert!(
        wf.observe(&with_code("Sale", at(11))).is_empty(),
        "same code: nothing"
    );
    let derived = wf.observe(&with_code("NoSale", at(12)));
    assert_eq!(
        derived[0].disposition.as_ref().map(|d| d.old.clone()),
        Some(Some("Sale".into()))
    );
    assert_eq!(
        wf.chat("c1").unwrap().disposition.as_deref(),
        Some("NoSale")
    );
}

#[test]
fn a_configured_disposition_key_is_followed() {
    let mut wf = Workflow::new(WorkflowSettings {
        disposition_key: "Outcome".into(),
        ..WorkflowSettings::plain("main", 10)
    });
    let derived = wf.observe(&change(
        "c1",
        "Chatting",
        None,
        at(0),
        json!({"userData": {"DispositionCode": "X", "Outcome": "Y"}}),
    ));
    assert_eq!(derived.len(), 1);
    assert_eq!(derived[0].disposition.as_ref().unwrap().key, "Outcome");
    assert_eq!(
        derived[0].disposition.as_ref().unwrap().new.as_deref(),
        Some("Y")
    );
}

#[test]
fn overdue_fires_once_and_not_again_after_a_restore() {
    let mut wf = workflow(Some(120), "");
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    assert_eq!(wf.next_deadline(), Some(at(120)));
    assert!(
        wf.poll(at(119)).events.is_empty(),
        "not before overdue_after"
    );
    let due = wf.poll(at(121));
    assert_eq!(due.events.len(), 1);
    let overdue = &due.events[0];
    assert_eq!(overdue.kind, EventKind::DispositionOverdue);
    let pending = overdue.pending.as_ref().expect("pending record");
    assert_eq!(pending.since, at(0));
    assert_eq!(pending.overdue_after_seconds, 120);
    assert!(wf.poll(at(500)).events.is_empty(), "once per chat");
    assert_eq!(wf.next_deadline(), None);

    // A restart from the saved state does not fire it again...
    let saved = wf.saved();
    let mut again = Workflow::restore(wf.settings().clone(), saved.clone());
    assert!(again.poll(at(600)).events.is_empty());
    assert_eq!(again.pending(), (1, Some(at(0))));

    // ...and a restart from a state saved before it fired fires it once, with the same id.
    let mut before = workflow(Some(120), "");
    before.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let mut restored = Workflow::restore(before.settings().clone(), before.saved());
    let due = restored.poll(at(700));
    assert_eq!(due.events.len(), 1);
    assert_eq!(
        due.events[0].event_id, overdue.event_id,
        "a derived event derived twice carries one id"
    );
}

#[test]
fn saved_state_round_trips_through_json() {
    let mut wf = workflow(Some(60), README_RULE);
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let text = serde_json::to_string(&wf.saved()).unwrap();
    let back: SavedWorkflow = serde_json::from_str(&text).unwrap();
    assert_eq!(back, wf.saved());
    assert_eq!(back.version, STATE_VERSION);
}

#[test]
fn the_readme_rule_sets_the_disposition_then_completes() {
    let mut wf = workflow(None, README_RULE);
    wf.observe(&change("c1", "Chatting", None, at(0), json!({})));
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(10),
        json!({}),
    ));
    assert_eq!(wf.next_deadline(), Some(at(610)));
    assert!(wf.poll(at(609)).requests.is_empty(), "not before `after`");
    let due = wf.poll(at(610));
    assert_eq!(due.requests.len(), 1);
    let first = &due.requests[0];
    assert_eq!(first.rule, "auto-close");
    assert_eq!(first.step, 0);
    assert_eq!(
        first.operation,
        ChatOperation::SetDisposition {
            disposition: "AutoClosed".into(),
            disposition_key: Some("DispositionCode".into())
        }
    );
    assert!(
        wf.poll(at(611)).requests.is_empty(),
        "one request in flight"
    );
    let events = wf.reported(accepted(first, at(611)));
    assert_eq!(events.len(), 1);
    let action = events[0].action.as_ref().expect("an action record");
    assert_eq!(
        (
            action.operation.as_str(),
            action.outcome.as_str(),
            action.step
        ),
        ("SetDisposition", "accepted", 0)
    );
    assert_eq!(events[0].reference_id, Some(ReferenceId::Number(7)));
    // Its own disposition_set (from the PropertiesUpdated that follows) does not cancel a run
    // that already started.
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("LeftChat"),
        at(611),
        json!({"userData": {"DispositionCode": "AutoClosed"}}),
    ));
    let due = wf.poll(at(612));
    assert_eq!(due.requests.len(), 1);
    assert_eq!(due.requests[0].operation.name(), "Complete");
    wf.reported(accepted(&due.requests[0], at(613)));
    assert_eq!(wf.run("c1", "auto-close").unwrap().status, RunStatus::Done);
    assert!(wf.poll(at(10_000)).requests.is_empty());
    // A LeftChat seen again (recovered after a restart) does not start the rule again.
    wf.observe(&change("c1", "LeftChat", None, at(10_001), json!({})));
    assert!(wf.poll(at(20_000)).requests.is_empty());
}

#[test]
fn an_unless_event_or_a_chat_completed_by_hand_cancels_the_rule() {
    let mut wf = workflow(None, README_RULE);
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    wf.observe(&change(
        "c2",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    // c1: the agent sets a disposition by hand (disposition_set is in `unless`).
    let derived = wf.observe(&change(
        "c1",
        "LeftChat",
        Some("LeftChat"),
        at(30),
        json!({"userData": {"DispositionCode": "Sale"}}),
    ));
    assert_eq!(derived[0].kind, EventKind::DispositionSet);
    assert_eq!(
        wf.run("c1", "auto-close").unwrap().status,
        RunStatus::Cancelled
    );
    // c2: completed by a person.
    wf.observe(&change(
        "c2",
        "Completed",
        Some("LeftChat"),
        at(40),
        json!({}),
    ));
    assert!(wf.run("c2", "auto-close").is_none());
    assert!(wf.poll(at(1_000)).requests.is_empty());
}

#[test]
fn a_dry_run_records_every_operation_and_requests_nothing() {
    let mut wf = workflow(
        None,
        &README_RULE.replace("after = \"10m\"", "after = \"1m\"\ndry_run = true"),
    );
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let due = wf.poll(at(60));
    assert!(due.requests.is_empty());
    let outcomes: Vec<_> = due
        .events
        .iter()
        .map(|e| {
            let a = e.action.as_ref().unwrap();
            (a.operation.clone(), a.outcome.clone(), a.dry_run)
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("SetDisposition".into(), "dry_run".into(), true),
            ("Complete".into(), "dry_run".into(), true)
        ]
    );
    assert_eq!(wf.run("c1", "auto-close").unwrap().status, RunStatus::Done);
    assert!(wf.poll(at(120)).events.is_empty());
}

#[test]
fn a_refused_operation_fails_the_run_and_stops_the_list() {
    let mut wf = workflow(None, README_RULE);
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let request = wf.poll(at(600)).requests.remove(0);
    let mut report = accepted(&request, at(601));
    report.outcome = "rejected";
    report.gws_status = Some(2);
    report.message = Some("GWS refused the request: status 2".into());
    let events = wf.reported(report);
    assert_eq!(events[0].action.as_ref().unwrap().gws_status, Some(2));
    assert_eq!(
        wf.run("c1", "auto-close").unwrap().status,
        RunStatus::Failed
    );
    assert!(wf.poll(at(700)).requests.is_empty());
}

#[test]
fn retries_are_recorded_and_only_the_final_attempt_moves_the_run() {
    let mut wf = workflow(None, README_RULE);
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let request = wf.poll(at(600)).requests.remove(0);
    let mut unavailable = accepted(&request, at(601));
    unavailable.outcome = "unavailable";
    unavailable.is_final = false;
    unavailable.http_status = Some(503);
    let first = wf.reported(unavailable);
    assert_eq!(
        wf.run("c1", "auto-close").unwrap().status,
        RunStatus::Running
    );
    let mut ok = accepted(&request, at(603));
    ok.attempt = 2;
    let second = wf.reported(ok);
    assert_ne!(first[0].event_id, second[0].event_id);
    assert_eq!(wf.run("c1", "auto-close").unwrap().step, 1);
}

#[test]
fn the_rate_limit_holds_chats_back_without_dropping_them() {
    let text = README_RULE.replace("after = \"10m\"", "after = \"0s\"\nmax_per_minute = 1");
    let mut wf = workflow(None, &text);
    wf.observe(&change("a", "LeftChat", Some("Chatting"), at(0), json!({})));
    wf.observe(&change("b", "LeftChat", Some("Chatting"), at(0), json!({})));
    let due = wf.poll(at(1));
    assert_eq!(due.requests.len(), 1, "one chat per minute");
    let later = wf.next_deadline().expect("the other waits");
    assert!(later > at(1) && later <= at(61), "{later}");
    assert_eq!(wf.poll(later).requests.len(), 1);
}

#[test]
fn an_operation_in_flight_at_a_crash_is_scheduled_again_and_an_unperformed_one_put_back() {
    let mut wf = workflow(None, README_RULE);
    wf.observe(&change(
        "c1",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    let request = wf.poll(at(600)).requests.remove(0);
    let mut restored = Workflow::restore(wf.settings().clone(), wf.saved());
    assert_eq!(
        restored.run("c1", "auto-close").unwrap().status,
        RunStatus::Scheduled
    );
    assert_eq!(restored.poll(at(601)).requests, vec![request.clone()]);
    wf.not_performed(&request, at(602));
    assert_eq!(wf.poll(at(602)).requests, vec![request]);
}

#[test]
fn rules_of_other_accounts_and_action_events_start_nothing() {
    let mut wf = workflow(None, &format!("{README_RULE}accounts = [\"other\"]\n"));
    // `workflow` builds the settings from every rule given; an account's settings only hold the
    // rules that apply to it (AccountPlan filters them), so check the filter itself here.
    assert!(!wf.settings().rules[0].config.applies_to("main"));
    let request_event = {
        let mut e = change("c1", "LeftChat", Some("Chatting"), at(0), json!({}));
        e.kind = EventKind::Action;
        e
    };
    wf.observe(&request_event);
    assert!(wf.run("c1", "auto-close").is_none());
}

#[test]
fn the_chat_bound_evicts_the_oldest_chat_without_durable_state_first() {
    let mut wf = Workflow::new(WorkflowSettings::plain("main", 2));
    wf.observe(&change(
        "pending",
        "LeftChat",
        Some("Chatting"),
        at(0),
        json!({}),
    ));
    wf.observe(&change("old", "Chatting", None, at(1), json!({})));
    wf.observe(&change("new", "Chatting", None, at(2), json!({})));
    let ids: Vec<_> = wf.chats().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["new".to_owned(), "pending".to_owned()]);
}
