use super::*;

fn clock() -> Clock {
    Clock {
        timestamp: "2024-01-02 03:04:05.006+0000".into(),
        millis: 1_704_164_645_006,
    }
}

fn customer() -> Party {
    Party {
        nickname: "Pat".into(),
        kind: "Customer",
        participant_id: "00000000000000C1".into(),
        visibility: None,
    }
}

fn offered(conference: bool) -> ChatRec {
    let mut ud = Map::new();
    ud.insert("Subject".into(), "Help".into());
    let colleague = conference.then(|| Party {
        nickname: "Sam".into(),
        kind: "Agent",
        participant_id: "00000000000000A2".into(),
        visibility: None,
    });
    ChatRec::offer(
        "0000TEST00000001".into(),
        "agent1".into(),
        1,
        "http://gws:8080/api/v2/chats/0000TEST00000001".into(),
        customer(),
        ud,
        colleague,
        Some("Hello".into()),
        &clock(),
    )
}

fn run(chat: &mut ChatRec, op: &str, body: Value, reference: u64) -> Result<Vec<Value>, OpError> {
    let body = body.as_object().cloned().unwrap_or_default();
    let c = clock();
    let ctx = OpContext {
        reference_id: reference,
        agent_nickname: "Alice",
        clock: &c,
    };
    let mut n = 0;
    apply(chat, op, &body, &ctx, &mut || {
        n += 1;
        format!("{n:016X}")
    })
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

#[test]
fn an_offer_is_invited_with_accept_reject_and_no_participants() {
    let chat = offered(false);
    let n = chat.offer_notification();
    assert_eq!(n["messageType"], "ChatStateChangeMessage");
    assert_eq!(n["notificationType"], "StatusChange");
    assert!(n.get("referenceId").is_none());
    assert_eq!(n["chat"]["state"], "Invited");
    assert_eq!(n["chat"]["capabilities"], json!(["Accept", "Reject"]));
    assert_eq!(n["chat"]["participants"], json!([]));
    assert_eq!(n["chat"]["userData"]["Subject"], "Help");
    assert_eq!(n["chat"]["chatType"], "Inbound");
}

#[test]
fn accept_gives_chatting_then_participants_then_the_history() {
    let mut chat = offered(false);
    let out = run(&mut chat, "Accept", json!({"nickname":"Ally"}), 17).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["notificationType"], "StatusChange");
    assert_eq!(out[0]["chat"]["state"], "Chatting");
    assert_eq!(out[0]["chat"]["participants"], json!([]));
    assert_eq!(
        keys(&out[0]["chat"]),
        vec!["capabilities", "id", "participants", "state", "uri"]
    );
    assert_eq!(
        out[0]["chat"]["capabilities"],
        json!(CHATTING_CAPS),
        "the Chatting capability list"
    );
    assert_eq!(out[1]["notificationType"], "ParticipantsUpdated");
    let parts = out[1]["chat"]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "Agent");
    assert_eq!(parts[0]["nickname"], "Ally");
    assert_eq!(parts[1]["type"], "Customer");
    assert_eq!(parts[1]["nickname"], "Pat");
    assert_eq!(out[2]["messageType"], "MessageLogUpdated");
    assert_eq!(out[2]["chatPath"], "/chats/0000TEST00000001");
    let msgs = out[2]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "customer joined, Hello, agent joined");
    assert_eq!(msgs[1]["text"], "Hello");
    for n in &out {
        assert_eq!(n["referenceId"], 17);
    }
}

#[test]
fn leave_alone_is_left_chat_with_exactly_the_sample_capabilities() {
    let mut chat = offered(false);
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    let out = run(&mut chat, "Leave", json!({"text":"Bye"}), 2).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["messageType"], "MessageLogUpdated");
    assert_eq!(out[0]["messages"][0]["text"], "Bye");
    assert_eq!(out[0]["messages"][0]["from"]["type"], "Agent");
    assert_eq!(out[1]["chat"]["state"], "LeftChat");
    assert_eq!(
        out[1]["chat"]["capabilities"],
        json!(["Transfer", "Complete", "Leave", "InFocus"])
    );
    // Disposition work is accepted in LeftChat although not advertised.
    let out = run(
        &mut chat,
        "SetDisposition",
        json!({"disposition":"Done"}),
        3,
    )
    .unwrap();
    assert_eq!(out[0]["notificationType"], "PropertiesUpdated");
    assert_eq!(out[0]["chat"]["userData"]["DispositionCode"], "Done");
    assert_eq!(out[0]["chat"]["userData"]["Subject"], "Help");
    let out = run(&mut chat, "Complete", json!({"queueName":"Post"}), 4).unwrap();
    assert_eq!(out[0]["chat"]["state"], "Completed");
    assert!(out[0]["chat"].get("capabilities").is_none());
    assert_eq!(out[0]["chat"]["participants"], json!([]));
    assert!(!is_open(&chat.state));
}

#[test]
fn leave_in_a_conference_completes_this_agent() {
    for how in ["offer", "invite", "consult"] {
        let mut chat = offered(how == "offer");
        run(&mut chat, "Accept", json!({}), 1).unwrap();
        if how != "offer" {
            let op = if how == "invite" { "Invite" } else { "Consult" };
            let out = run(
                &mut chat,
                op,
                json!({"targetUri":"http://gws/api/v2/users/bob"}),
                2,
            )
            .unwrap();
            assert_eq!(out[0]["notificationType"], "ParticipantsUpdated");
            assert_eq!(out[0]["chat"]["participants"].as_array().unwrap().len(), 3);
        }
        let out = run(&mut chat, "Leave", json!({}), 3).unwrap();
        assert_eq!(out.len(), 1, "{how}");
        assert_eq!(out[0]["chat"]["state"], "Completed", "{how}");
    }
}

#[test]
fn text_trio_rules() {
    let mut chat = offered(false);
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    let e = run(&mut chat, "Leave", json!({"messageType":"Text"}), 2).unwrap_err();
    assert_eq!(e.status_code(), 1);
    assert!(e.to_string().contains("messageType"), "{e}");
    let e = run(&mut chat, "Leave", json!({"treatAs":"System"}), 2).unwrap_err();
    assert_eq!(e.status_code(), 1);
    assert!(e.to_string().contains("treatAs"), "{e}");
    let e = run(
        &mut chat,
        "Complete",
        json!({"text":"x","treatAs":"Loud"}),
        2,
    )
    .unwrap_err();
    assert_eq!(e.status_code(), 10);
    let e = run(&mut chat, "Leave", json!({"text":5}), 2).unwrap_err();
    assert_eq!(e.status_code(), 10);
    assert!(!e.notifies());
    assert_eq!(chat.state, "Chatting", "a refused request changes nothing");
    let out = run(
        &mut chat,
        "Leave",
        json!({"text":"bye","messageType":"Text","treatAs":"System"}),
        3,
    )
    .unwrap();
    assert_eq!(out.last().unwrap()["chat"]["state"], "LeftChat");
}

#[test]
fn required_parameters_and_unknown_operations() {
    let mut chat = offered(false);
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    for (op, body) in [
        ("SendMessage", json!({})),
        ("SetDisposition", json!({})),
        ("AttachUserData", json!({})),
        ("DeleteUserData", json!({})),
        ("Transfer", json!({"text":"x"})),
        ("Invite", json!({})),
    ] {
        let e = run(&mut chat, op, body, 2).unwrap_err();
        assert_eq!(e.status_code(), 1, "{op}");
    }
    let e = run(&mut chat, "UpdateUserData", json!({"userData":[1]}), 2).unwrap_err();
    assert_eq!(e.status_code(), 10);
    let e = run(&mut chat, "DeleteUserData", json!({"keys":[1]}), 2).unwrap_err();
    assert_eq!(e.status_code(), 10);
    let e = run(&mut chat, "Dance", json!({}), 2).unwrap_err();
    assert_eq!(e, OpError::Unknown("Dance".into()));
    assert_eq!(e.status_code(), 1);
}

#[test]
fn wrong_state_is_status_2_and_notifies() {
    let mut chat = offered(false);
    let e = run(&mut chat, "SendMessage", json!({"text":"hi"}), 1).unwrap_err();
    assert_eq!(e.status_code(), 2);
    assert!(e.notifies());
    assert_eq!(
        e.to_string(),
        "Operation SendMessage is not valid for chat state Invited"
    );
    run(&mut chat, "Accept", json!({}), 2).unwrap();
    let e = run(&mut chat, "Accept", json!({}), 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Operation Accept is not valid for chat state Chatting"
    );
    run(&mut chat, "Complete", json!({}), 4).unwrap();
    for op in ["Complete", "Leave", "SetDisposition"] {
        let body = json!({"disposition":"x"});
        let e = run(&mut chat, op, body, 5).unwrap_err();
        assert_eq!(e.status_code(), 2, "{op}");
    }
    let n = error_notification(5);
    assert_eq!(n["notificationType"], "Error");
    assert_eq!(n["errorMessage"], "Request failed");
    assert_eq!(n["referenceId"], 5);
    assert!(n.get("chat").is_none());
}

#[test]
fn reject_and_transfer_complete_the_agents_copy() {
    let mut chat = offered(false);
    let out = run(&mut chat, "Reject", json!({}), 1).unwrap();
    assert_eq!(out[0]["chat"]["state"], "Completed");
    let mut chat = offered(false);
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    let out = run(&mut chat, "Transfer", json!({"queueName":"Q"}), 2).unwrap();
    assert_eq!(out[0]["chat"]["state"], "Completed");
    assert_eq!(out[0]["referenceId"], 2);
}

#[test]
fn messages_and_user_data() {
    let mut chat = offered(false);
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    let out = run(&mut chat, "SendMessage", json!({"text":"Hi Pat"}), 2).unwrap();
    let m = &out[0]["messages"][0];
    assert_eq!(m["type"], "Text");
    assert_eq!(m["index"], 4);
    assert_eq!(m["visibility"], "All");
    assert_eq!(m["timestampSeconds"], 1_704_164_645_006_i64);
    let out = run(&mut chat, "SendStartTypingNotification", json!({}), 3).unwrap();
    assert_eq!(out[0]["messages"][0]["type"], "TypingStarted");
    assert_eq!(out[0]["messages"][0]["index"], 5);
    let out = run(
        &mut chat,
        "AttachUserData",
        json!({"userData":{"a":1,"b":null}}),
        4,
    )
    .unwrap();
    assert_eq!(out[0]["chat"]["userData"]["a"], 1);
    let out = run(&mut chat, "DeleteUserData", json!({"keys":["a","zzz"]}), 5).unwrap();
    assert!(out[0]["chat"]["userData"].get("a").is_none());
    assert!(out[0]["chat"]["userData"].get("b").is_some());
    let out = run(
        &mut chat,
        "SetDisposition",
        json!({"disposition":"Sale","dispositionKey":"Outcome"}),
        6,
    )
    .unwrap();
    assert_eq!(out[0]["chat"]["userData"]["Outcome"], "Sale");
    assert!(run(&mut chat, "SetInFocus", json!({}), 7)
        .unwrap()
        .is_empty());
}

#[test]
fn customer_actions_carry_no_reference() {
    let mut chat = offered(false);
    assert!(chat.customer_says("early".into(), &clock()).is_none());
    run(&mut chat, "Accept", json!({}), 1).unwrap();
    let out = chat.customer_says("hello?".into(), &clock()).unwrap();
    assert!(out[0].get("referenceId").is_none());
    assert_eq!(out[0]["messages"][0]["from"]["type"], "Customer");
    let out = chat.customer_leaves(&clock()).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["chat"]["participants"].as_array().unwrap().len(), 1);
    assert!(chat.customer_leaves(&clock()).is_none());
    let mut offer = offered(false);
    let out = offer.revoke().unwrap();
    assert_eq!(out[0]["chat"]["state"], "Revoked");
    assert!(!is_open(&offer.state));
}

#[test]
fn clock_formats_like_gws() {
    let c = Clock::now();
    // 2024-01-02 03:04:05.006+0000
    assert_eq!(c.timestamp.len(), 28, "{}", c.timestamp);
    assert!(c.timestamp.ends_with("+0000"));
    assert!(c.millis > 1_600_000_000_000);
}
