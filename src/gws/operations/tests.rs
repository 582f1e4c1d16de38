use super::*;
use clap::Parser;

fn invalid_message(result: Result<(), OperationError>) -> (&'static str, String) {
    match result {
        Err(OperationError::Invalid { operation, message }) => (operation, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn user_data() -> Map<String, Value> {
    let Value::Object(map) = json!({"key1": "value1", "n": 3, "none": null}) else {
        unreachable!()
    };
    map
}

// ---- TreatAs -------------------------------------------------------------------------

#[test]
fn treat_as_parses_any_case_and_displays_wire_spelling() {
    assert_eq!("Normal".parse::<TreatAs>(), Ok(TreatAs::Normal));
    assert_eq!("normal".parse::<TreatAs>(), Ok(TreatAs::Normal));
    assert_eq!("SYSTEM".parse::<TreatAs>(), Ok(TreatAs::System));
    assert_eq!("system".parse::<TreatAs>(), Ok(TreatAs::System));
    let err = "Loud".parse::<TreatAs>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "`treatAs` must be Normal or System, not \"Loud\""
    );
    assert_eq!(TreatAs::Normal.to_string(), "Normal");
    assert_eq!(TreatAs::System.to_string(), "System");
}

#[test]
fn treat_as_serde_uses_wire_spelling() {
    assert_eq!(
        serde_json::to_value(TreatAs::System).unwrap(),
        json!("System")
    );
    assert_eq!(
        serde_json::from_value::<TreatAs>(json!("Normal")).unwrap(),
        TreatAs::Normal
    );
    assert!(serde_json::from_value::<TreatAs>(json!("Loud")).is_err());
}

#[derive(Parser, Debug)]
struct Cli {
    #[arg(long, ignore_case = true)]
    treat_as: Option<TreatAs>,
}

#[test]
fn treat_as_works_as_a_clap_value() {
    let cli = Cli::try_parse_from(["x", "--treat-as", "System"]).unwrap();
    assert_eq!(cli.treat_as, Some(TreatAs::System));
    let cli = Cli::try_parse_from(["x", "--treat-as", "normal"]).unwrap();
    assert_eq!(cli.treat_as, Some(TreatAs::Normal));
    let err = Cli::try_parse_from(["x", "--treat-as", "loud"]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Normal") && text.contains("System"), "{text}");
}

// ---- the text trio -------------------------------------------------------------------

#[test]
fn trio_accepts_the_allowed_combinations() {
    assert_eq!(ClosingText::none().validate(), Ok(()));
    assert_eq!(ClosingText::text("bye").validate(), Ok(()));
    let full = ClosingText::new(
        Some("bye".into()),
        Some("Farewell".into()),
        Some(TreatAs::System),
    );
    assert_eq!(full.validate(), Ok(()));
    let with_type = ClosingText::new(Some("bye".into()), Some("Farewell".into()), None);
    assert_eq!(with_type.validate(), Ok(()));
    let with_treat = ClosingText::new(Some("bye".into()), None, Some(TreatAs::Normal));
    assert_eq!(with_treat.validate(), Ok(()));
}

#[test]
fn trio_message_type_needs_text() {
    let closing = ClosingText::new(None, Some("Farewell".into()), None);
    let op = ChatOperation::Leave(closing.clone());
    assert_eq!(
        invalid_message(op.validate()),
        (
            "Leave",
            "`messageType` can only be sent together with `text`".to_owned()
        )
    );
    assert_eq!(
        op.validate().unwrap_err().to_string(),
        "cannot send Leave: `messageType` can only be sent together with `text`"
    );
    assert_eq!(invalid_message(closing.validate()).0, "closing text");
}

#[test]
fn trio_treat_as_needs_text() {
    let closing = ClosingText::new(None, None, Some(TreatAs::System));
    let op = ChatOperation::Complete {
        queue_name: None,
        save_lar: None,
        closing,
    };
    assert_eq!(
        invalid_message(op.validate()),
        (
            "Complete",
            "`treatAs` can only be sent together with `text`".to_owned()
        )
    );
}

#[test]
fn trio_both_need_text() {
    let closing = ClosingText::new(None, Some("Farewell".into()), Some(TreatAs::Normal));
    let op = ChatOperation::Transfer {
        target: TransferTarget::Queue("Q".into()),
        closing,
    };
    assert_eq!(
        invalid_message(op.validate()),
        (
            "Transfer",
            "`messageType` and `treatAs` can only be sent together with `text`".to_owned()
        )
    );
}

#[test]
fn trio_refuses_empty_text_and_empty_message_type() {
    for text in ["", "   "] {
        let op = ChatOperation::Leave(ClosingText::text(text));
        assert_eq!(
            invalid_message(op.validate()).1,
            "`text` must not be empty (leave it out to send no message)"
        );
    }
    let op = ChatOperation::Leave(ClosingText::new(
        Some("bye".into()),
        Some(String::new()),
        None,
    ));
    assert_eq!(
        invalid_message(op.validate()).1,
        "`messageType` must not be empty (leave it out instead)"
    );
}

#[test]
fn refused_operations_produce_no_body() {
    let op = ChatOperation::Leave(ClosingText::new(None, None, Some(TreatAs::System)));
    assert!(matches!(op.body(), Err(OperationError::Invalid { .. })));
}

// ---- per-operation rules -------------------------------------------------------------

#[test]
fn send_message_requires_text() {
    for text in ["", " \n"] {
        let op = ChatOperation::SendMessage {
            text: text.into(),
            message_type: None,
            treat_as: None,
        };
        assert_eq!(
            invalid_message(op.validate()),
            ("SendMessage", "`text` must not be empty".to_owned())
        );
        assert!(op.body().is_err());
    }
}

#[test]
fn transfer_needs_exactly_one_target() {
    let both = TransferTarget::from_options(Some("u".into()), Some("q".into()));
    assert_eq!(
        invalid_message(both.map(drop)),
        (
            "Transfer",
            "give either `targetUri` or `queueName`, not both".to_owned()
        )
    );
    let neither = TransferTarget::from_options(None, None);
    assert_eq!(
        invalid_message(neither.map(drop)),
        (
            "Transfer",
            "a target is required: give `targetUri` (a user) or `queueName`".to_owned()
        )
    );
    assert_eq!(
        TransferTarget::from_options(Some("u".into()), None),
        Ok(TransferTarget::User("u".into()))
    );
    assert_eq!(
        TransferTarget::from_options(None, Some("q".into())),
        Ok(TransferTarget::Queue("q".into()))
    );
}

#[test]
fn transfer_target_must_not_be_empty() {
    let op = ChatOperation::Transfer {
        target: TransferTarget::User(String::new()),
        closing: ClosingText::none(),
    };
    assert_eq!(
        invalid_message(op.validate()).1,
        "`targetUri` must not be empty"
    );
    let op = ChatOperation::Transfer {
        target: TransferTarget::Queue(" ".into()),
        closing: ClosingText::none(),
    };
    assert_eq!(
        invalid_message(op.validate()).1,
        "`queueName` must not be empty"
    );
}

#[test]
fn set_disposition_requires_disposition() {
    let op = ChatOperation::SetDisposition {
        disposition: String::new(),
        disposition_key: None,
    };
    assert_eq!(
        invalid_message(op.validate()),
        (
            "SetDisposition",
            "`disposition` must not be empty".to_owned()
        )
    );
    let op = ChatOperation::SetDisposition {
        disposition: "Resolved".into(),
        disposition_key: Some(String::new()),
    };
    assert_eq!(
        invalid_message(op.validate()).1,
        "`dispositionKey` must not be empty (leave it out instead)"
    );
}

#[test]
fn empty_optional_strings_are_refused() {
    let op = ChatOperation::Accept {
        nickname: Some(String::new()),
    };
    assert_eq!(
        invalid_message(op.validate()),
        (
            "Accept",
            "`nickname` must not be empty (leave it out instead)".to_owned()
        )
    );
    let op = ChatOperation::Complete {
        queue_name: Some(" ".into()),
        save_lar: None,
        closing: ClosingText::none(),
    };
    assert_eq!(
        invalid_message(op.validate()).1,
        "`queueName` must not be empty (leave it out instead)"
    );
    let op = ChatOperation::SendMessage {
        text: "hi".into(),
        message_type: Some(String::new()),
        treat_as: None,
    };
    assert_eq!(
        invalid_message(op.validate()).1,
        "`messageType` must not be empty (leave it out instead)"
    );
}

#[test]
fn user_data_operations_need_something() {
    for op in [
        ChatOperation::AttachUserData(Map::new()),
        ChatOperation::UpdateUserData(Map::new()),
    ] {
        let name = op.name();
        assert_eq!(
            invalid_message(op.validate()),
            (name, "`userData` must contain at least one key".to_owned())
        );
    }
    let mut blank_key = Map::new();
    blank_key.insert(String::new(), json!(1));
    assert_eq!(
        invalid_message(ChatOperation::AttachUserData(blank_key).validate()).1,
        "`userData` keys must not be empty"
    );
    assert_eq!(
        invalid_message(ChatOperation::DeleteUserData(vec![]).validate()),
        (
            "DeleteUserData",
            "`keys` must name at least one userData key".to_owned()
        )
    );
    assert_eq!(
        invalid_message(ChatOperation::DeleteUserData(vec!["a".into(), "".into()]).validate()).1,
        "`keys` must not contain an empty key"
    );
}

// ---- bodies --------------------------------------------------------------------------

#[test]
fn bodies_are_exactly_the_documented_json() {
    let cases: Vec<(ChatOperation, Value)> = vec![
        (
            ChatOperation::Accept { nickname: None },
            json!({"operationName": "Accept"}),
        ),
        (
            ChatOperation::Accept {
                nickname: Some("Marat".into()),
            },
            json!({"operationName": "Accept", "nickname": "Marat"}),
        ),
        (ChatOperation::Reject, json!({"operationName": "Reject"})),
        (
            ChatOperation::SendMessage {
                text: "How may I help you?".into(),
                message_type: None,
                treat_as: None,
            },
            json!({"operationName": "SendMessage", "text": "How may I help you?"}),
        ),
        (
            ChatOperation::SendMessage {
                text: "Hello".into(),
                message_type: Some("Greeting".into()),
                treat_as: Some(TreatAs::System),
            },
            json!({"operationName": "SendMessage", "text": "Hello",
                   "messageType": "Greeting", "treatAs": "System"}),
        ),
        (
            ChatOperation::SendStartTypingNotification,
            json!({"operationName": "SendStartTypingNotification"}),
        ),
        (
            ChatOperation::SendStopTypingNotification,
            json!({"operationName": "SendStopTypingNotification"}),
        ),
        (
            ChatOperation::Leave(ClosingText::none()),
            json!({"operationName": "Leave"}),
        ),
        (
            ChatOperation::Leave(ClosingText::text("Goodbye")),
            json!({"operationName": "Leave", "text": "Goodbye"}),
        ),
        (
            ChatOperation::Leave(ClosingText::new(
                Some("Goodbye".into()),
                Some("Farewell".into()),
                Some(TreatAs::Normal),
            )),
            json!({"operationName": "Leave", "text": "Goodbye",
                   "messageType": "Farewell", "treatAs": "Normal"}),
        ),
        (
            ChatOperation::Complete {
                queue_name: None,
                save_lar: None,
                closing: ClosingText::none(),
            },
            json!({"operationName": "Complete"}),
        ),
        (
            ChatOperation::Complete {
                queue_name: Some("PostProcessingQueue".into()),
                save_lar: None,
                closing: ClosingText::new(Some("Thanks".into()), None, Some(TreatAs::System)),
            },
            json!({"operationName": "Complete", "queueName": "PostProcessingQueue",
                   "text": "Thanks", "treatAs": "System"}),
        ),
        (
            ChatOperation::Transfer {
                target: TransferTarget::User("http://gws/api/v2/users/123".into()),
                closing: ClosingText::none(),
            },
            json!({"operationName": "Transfer", "targetUri": "http://gws/api/v2/users/123"}),
        ),
        (
            ChatOperation::Transfer {
                target: TransferTarget::Queue("Sales".into()),
                closing: ClosingText::new(Some("One moment".into()), Some("Transfer".into()), None),
            },
            json!({"operationName": "Transfer", "queueName": "Sales",
                   "text": "One moment", "messageType": "Transfer"}),
        ),
        (
            ChatOperation::SetDisposition {
                disposition: "IssueResolved".into(),
                disposition_key: None,
            },
            json!({"operationName": "SetDisposition", "disposition": "IssueResolved"}),
        ),
        (
            ChatOperation::SetDisposition {
                disposition: "IssueResolved".into(),
                disposition_key: Some("DispositionCode".into()),
            },
            json!({"operationName": "SetDisposition", "disposition": "IssueResolved",
                   "dispositionKey": "DispositionCode"}),
        ),
        (
            ChatOperation::AttachUserData(user_data()),
            json!({"operationName": "AttachUserData",
                   "userData": {"key1": "value1", "n": 3, "none": null}}),
        ),
        (
            ChatOperation::UpdateUserData(user_data()),
            json!({"operationName": "UpdateUserData",
                   "userData": {"key1": "value1", "n": 3, "none": null}}),
        ),
        (
            ChatOperation::DeleteUserData(vec!["key1".into(), "key2".into()]),
            json!({"operationName": "DeleteUserData", "keys": ["key1", "key2"]}),
        ),
    ];
    for (op, expected) in cases {
        assert_eq!(op.body().unwrap(), expected, "{op:?}");
        assert_eq!(expected["operationName"], json!(op.name()));
    }
}

#[test]
fn names_and_capabilities_match_the_wire_spelling() {
    let ops = [
        ChatOperation::Accept { nickname: None },
        ChatOperation::Reject,
        ChatOperation::SendMessage {
            text: "x".into(),
            message_type: None,
            treat_as: None,
        },
        ChatOperation::SendStartTypingNotification,
        ChatOperation::SendStopTypingNotification,
        ChatOperation::Leave(ClosingText::none()),
        ChatOperation::Complete {
            queue_name: None,
            save_lar: None,
            closing: ClosingText::none(),
        },
        ChatOperation::Transfer {
            target: TransferTarget::Queue("q".into()),
            closing: ClosingText::none(),
        },
        ChatOperation::SetDisposition {
            disposition: "d".into(),
            disposition_key: None,
        },
        ChatOperation::AttachUserData(user_data()),
        ChatOperation::UpdateUserData(user_data()),
        ChatOperation::DeleteUserData(vec!["k".into()]),
    ];
    let names: Vec<&str> = ops.iter().map(ChatOperation::name).collect();
    assert_eq!(
        names,
        [
            "Accept",
            "Reject",
            "SendMessage",
            "SendStartTypingNotification",
            "SendStopTypingNotification",
            "Leave",
            "Complete",
            "Transfer",
            "SetDisposition",
            "AttachUserData",
            "UpdateUserData",
            "DeleteUserData",
        ]
    );
    for op in &ops {
        // Every operation here is permitted by the capability of the same name, and that
        // capability is a known one (not `Other`).
        assert_eq!(op.capability().as_str(), op.name());
        assert!(!op.capability().is_other(), "{op}");
        assert_eq!(op.to_string(), op.name());
    }
}

#[test]
fn permitted_by_reads_the_capability_list() {
    let left_chat = [
        Capability::Transfer,
        Capability::Complete,
        Capability::Leave,
        Capability::InFocus,
    ];
    assert!(ChatOperation::Leave(ClosingText::none()).permitted_by(&left_chat));
    assert!(!ChatOperation::SendStartTypingNotification.permitted_by(&left_chat));
    assert!(!ChatOperation::Reject.permitted_by(&[]));
}

#[test]
fn chat_path_addresses_one_chat() {
    assert_eq!(
        chat_path("0000Na9B26EF002X").unwrap(),
        "/api/v2/me/chats/0000Na9B26EF002X"
    );
    assert_eq!(
        chat_path("a/b?c#d e").unwrap(),
        "/api/v2/me/chats/a%2Fb%3Fc%23d%20e"
    );
    assert_eq!(chat_path(""), Err(OperationError::EmptyChatId));
    assert_eq!(chat_path("  "), Err(OperationError::EmptyChatId));
}

// ---- status codes --------------------------------------------------------------------

#[test]
fn every_documented_status_code_has_its_meaning() {
    let expected = [
        "success",
        "required parameter missing",
        "parameter not valid for the current state",
        "operation forbidden",
        "internal error (GWS, Cassandra, or a Genesys Framework component)",
        "user lacks permission",
        "resource not found",
        "partial success (bulk operations)",
        "password change demanded",
        "processing incomplete",
        "input validation error (value out of range)",
        "attempt to change a read-only property",
        "unable to retrieve resource",
        "unable to create resource",
        "unable to delete resource",
        "unable to update resource",
        "unable to assign resource",
        "unable to unassign resource",
        "resource already exists",
        "resource already in use",
        "user not authenticated; send credentials on later requests",
    ];
    for (code, meaning) in expected.iter().enumerate() {
        assert_eq!(StatusCode(code as i64).meaning(), *meaning, "code {code}");
    }
    for unknown in [-1, 21, 99, i64::MAX] {
        assert_eq!(StatusCode(unknown).meaning(), "unknown status code");
    }
    assert!(StatusCode::SUCCESS.is_success());
    assert!(!StatusCode(2).is_success());
    assert_eq!(
        StatusCode(2).to_string(),
        "2 (parameter not valid for the current state)"
    );
}

// ---- parse_response ------------------------------------------------------------------

#[test]
fn accepted_plain() {
    assert_eq!(
        parse_response(200, br#"{"statusCode":0}"#),
        Ok(OperationResponse {
            status_code: 0,
            status_message: None,
            reference_id: None,
        })
    );
}

#[test]
fn accepted_with_reference_id_as_integer_or_string() {
    let r = parse_response(200, br#"{"statusCode":0,"referenceId":35}"#).unwrap();
    assert_eq!(r.reference_id, Some(ReferenceId::Number(35)));
    let r = parse_response(200, br#"{"statusCode":0,"referenceId":"35"}"#).unwrap();
    assert_eq!(r.reference_id, Some(ReferenceId::Text("35".into())));
    // An unreadable referenceId does not turn an accepted operation into a failure.
    let r = parse_response(200, br#"{"statusCode":0,"referenceId":[1]}"#).unwrap();
    assert_eq!(r.reference_id, None);
}

#[test]
fn accepted_with_status_alias() {
    assert_eq!(
        parse_response(200, br#"{"status":0}"#).map(|r| r.status_code),
        Ok(0)
    );
    assert!(matches!(
        parse_response(200, br#"{"status":2}"#),
        Err(GwsError::Rejected { status_code: 2, .. })
    ));
}

#[test]
fn rejected_with_status_code_and_message() {
    let err = parse_response(
        400,
        br#"{"statusCode":2,"statusMessage":"Operation Leave is not valid for chat state Completed"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        GwsError::Rejected {
            status_code: 2,
            meaning: "parameter not valid for the current state",
            message: Some("Operation Leave is not valid for chat state Completed".into()),
            http_status: 400,
        }
    );
    assert_eq!(
        err.to_string(),
        "GWS refused the request: status 2 (parameter not valid for the current state): \
         Operation Leave is not valid for chat state Completed"
    );
    assert!(!err.needs_login());
}

#[test]
fn rejected_without_message_and_on_2xx() {
    let err = parse_response(200, br#"{"statusCode":1}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GWS refused the request: status 1 (required parameter missing)"
    );
    assert!(matches!(
        err,
        GwsError::Rejected {
            http_status: 200,
            ..
        }
    ));
    // A 403 with a JSON status code (not CSRF) is a refusal, not a bare Forbidden.
    let err = parse_response(403, br#"{"statusCode":5,"statusMessage":"no"}"#).unwrap_err();
    assert!(matches!(
        err,
        GwsError::Rejected {
            status_code: 5,
            http_status: 403,
            ..
        }
    ));
    // Status 20 asks for credentials: log in again.
    assert!(parse_response(400, br#"{"statusCode":20}"#)
        .unwrap_err()
        .needs_login());
}

#[test]
fn csrf_failure_is_told_apart() {
    let err = parse_response(403, b"Missing or invalid Csrf token").unwrap_err();
    assert_eq!(err, GwsError::Csrf);
    assert_eq!(
        err.to_string(),
        "missing or invalid CSRF token (log in again)"
    );
    assert!(err.needs_login());
    // Even with a JSON status code in the body.
    assert_eq!(
        parse_response(
            403,
            br#"{"statusCode":3,"statusMessage":"Missing or invalid Csrf token"}"#
        ),
        Err(GwsError::Csrf)
    );
}

#[test]
fn other_forbidden() {
    let err = parse_response(403, b"Access denied").unwrap_err();
    assert_eq!(
        err,
        GwsError::Forbidden {
            body: "Access denied".into()
        }
    );
    assert_eq!(err.to_string(), "forbidden (HTTP 403): Access denied");
}

#[test]
fn unauthorized_wins_over_body() {
    for body in [&b""[..], br#"{"statusCode":20}"#] {
        let err = parse_response(401, body).unwrap_err();
        assert_eq!(err, GwsError::Unauthorized);
        assert_eq!(
            err.to_string(),
            "authentication failed: wrong user name or password, or the session expired"
        );
        assert!(err.needs_login());
    }
}

#[test]
fn unavailable_backend() {
    let err = parse_response(
        503,
        br#"{"statusCode":4,"statusMessage":"Voice service is not available at this time"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        GwsError::Unavailable {
            message: Some("Voice service is not available at this time".into())
        }
    );
    assert_eq!(
        err.to_string(),
        "GWS backend unavailable (HTTP 503): Voice service is not available at this time"
    );
    assert!(!err.needs_login());
    assert_eq!(
        parse_response(503, b"<html>down</html>"),
        Err(GwsError::Unavailable { message: None })
    );
}

#[test]
fn not_found_without_status_code() {
    assert_eq!(parse_response(404, b"Not Found"), Err(GwsError::NotFound));
    assert!(matches!(
        parse_response(404, br#"{"statusCode":6,"statusMessage":"no chat"}"#),
        Err(GwsError::Rejected {
            status_code: 6,
            http_status: 404,
            ..
        })
    ));
}

#[test]
fn html_error_page_is_http_with_a_short_body() {
    let page = format!("<html><body>{}</body></html>", "x".repeat(500));
    let err = parse_response(500, page.as_bytes()).unwrap_err();
    let GwsError::Http { status, body } = &err else {
        panic!("expected Http, got {err:?}");
    };
    assert_eq!(*status, 500);
    assert_eq!(body.chars().count(), BODY_EXCERPT_CHARS + 1);
    assert!(
        body.starts_with("<html><body>xxx") && body.ends_with('…'),
        "{body}"
    );
    assert!(err.to_string().starts_with("GWS answered HTTP 500: <html>"));
    // A short body is kept whole, and multi-byte text is cut on a character boundary.
    assert_eq!(
        parse_response(502, b"Bad Gateway"),
        Err(GwsError::Http {
            status: 502,
            body: "Bad Gateway".into()
        })
    );
    let err = parse_response(500, "é".repeat(300).as_bytes()).unwrap_err();
    assert!(matches!(err, GwsError::Http { ref body, .. } if body.chars().count() == 201));
}

#[test]
fn malformed_success_bodies() {
    for body in [
        &b"garbage"[..],
        b"",
        b"[0]",
        br#"{"ok":true}"#,
        br#"{"statusCode":"0"}"#,
        br#"{"statusCode":0.5}"#,
    ] {
        let err = parse_response(200, body).unwrap_err();
        assert!(
            matches!(err, GwsError::Malformed { .. }),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    let err = parse_response(200, b"garbage").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("GWS answered with an unreadable body: not JSON"),
        "{err}"
    );
}

#[test]
fn zero_status_code_on_an_error_status_is_still_an_error() {
    assert!(matches!(
        parse_response(500, br#"{"statusCode":0}"#),
        Err(GwsError::Http { status: 500, .. })
    ));
}
