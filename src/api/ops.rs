//! The operations the API offers, by their path spelling, and the one mapping from a JSON body
//! of GWS's parameter names to a [`ChatOperation`], the same value the CLI builds.
//!
//! | path | GWS `operationName` | body (GWS names) |
//! | --- | --- | --- |
//! | `accept` | `Accept` | `nickname` |
//! | `reject` | `Reject` | |
//! | `send-message` | `SendMessage` | `text` (required), `messageType`, `treatAs` |
//! | `start-typing` | `SendStartTypingNotification` | |
//! | `stop-typing` | `SendStopTypingNotification` | |
//! | `leave` | `Leave` | `text`, `messageType`, `treatAs` |
//! | `complete` | `Complete` | `queueName`, `saveLAR`, `text`, `messageType`, `treatAs` |
//! | `transfer` | `Transfer` | `targetUri` or `queueName`, `text`, `messageType`, `treatAs` |
//! | `set-disposition` | `SetDisposition` | `disposition` (required), `dispositionKey` |
//! | `attach-user-data` | `AttachUserData` | `userData` (required object) |
//! | `update-user-data` | `UpdateUserData` | `userData` (required object) |
//! | `delete-user-data` | `DeleteUserData` | `keys` (required list) |
//!
//! The path names are the CLI's subcommand names (`chatwatch chat send-message`). A body is a
//! JSON object; unknown fields, a `null` for a field, and wrong types are refused (the
//! [`serde_json::Error`] says which); an empty body is `{}`. The rules of
//! [`ChatOperation::validate`] are checked by the caller, as the CLI does.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::gws::operations::{ChatOperation, ClosingText, OperationError, TransferTarget, TreatAs};

/// Every operation: (path name, GWS `operationName`).
pub const OPERATIONS: &[(&str, &str)] = &[
    ("accept", "Accept"),
    ("reject", "Reject"),
    ("send-message", "SendMessage"),
    ("start-typing", "SendStartTypingNotification"),
    ("stop-typing", "SendStopTypingNotification"),
    ("leave", "Leave"),
    ("complete", "Complete"),
    ("transfer", "Transfer"),
    ("set-disposition", "SetDisposition"),
    ("attach-user-data", "AttachUserData"),
    ("update-user-data", "UpdateUserData"),
    ("delete-user-data", "DeleteUserData"),
];

/// Whether `name` is an operation's path name.
pub fn is_operation(name: &str) -> bool {
    OPERATIONS.iter().any(|(n, _)| *n == name)
}

/// Why a body does not make an operation.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or not the operation's parameters.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("the body must be a JSON object of the operation's parameters")]
    NotObject,
    /// The parameters break a rule (a `transfer` without exactly one target).
    #[error(transparent)]
    Rule(#[from] OperationError),
}

/// A field that, when present, must not be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    #[serde(default, deserialize_with = "present")]
    nickname: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
    #[serde(rename = "messageType", default, deserialize_with = "present")]
    message_type: Option<String>,
    #[serde(rename = "treatAs", default, deserialize_with = "present")]
    treat_as: Option<TreatAs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveBody {
    #[serde(default, deserialize_with = "present")]
    text: Option<String>,
    #[serde(rename = "messageType", default, deserialize_with = "present")]
    message_type: Option<String>,
    #[serde(rename = "treatAs", default, deserialize_with = "present")]
    treat_as: Option<TreatAs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    #[serde(rename = "queueName", default, deserialize_with = "present")]
    queue_name: Option<String>,
    #[serde(rename = "saveLAR", default, deserialize_with = "present")]
    save_lar: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    text: Option<String>,
    #[serde(rename = "messageType", default, deserialize_with = "present")]
    message_type: Option<String>,
    #[serde(rename = "treatAs", default, deserialize_with = "present")]
    treat_as: Option<TreatAs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    #[serde(rename = "targetUri", default, deserialize_with = "present")]
    target_uri: Option<String>,
    #[serde(rename = "queueName", default, deserialize_with = "present")]
    queue_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    text: Option<String>,
    #[serde(rename = "messageType", default, deserialize_with = "present")]
    message_type: Option<String>,
    #[serde(rename = "treatAs", default, deserialize_with = "present")]
    treat_as: Option<TreatAs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DispositionBody {
    disposition: String,
    #[serde(rename = "dispositionKey", default, deserialize_with = "present")]
    disposition_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDataBody {
    #[serde(rename = "userData")]
    user_data: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysBody {
    keys: Vec<String>,
}

/// The body as `T`: a JSON object (an empty body is `{}`); an array, which serde would take
/// as the fields in order, is refused like any other non-object.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::from_slice(b"{}")?);
    }
    let value: Value = serde_json::from_slice(body)?;
    if !value.is_object() {
        return Err(BodyError::NotObject);
    }
    Ok(serde_json::from_value(value)?)
}

/// The operation `name` (a path name of [`OPERATIONS`]) with the parameters in `body`, not yet
/// validated. `None` when `name` is not an operation.
pub fn operation(name: &str, body: &[u8]) -> Option<Result<ChatOperation, BodyError>> {
    let closing = |text, message_type, treat_as| ClosingText::new(text, message_type, treat_as);
    let built = || -> Result<ChatOperation, BodyError> {
        Ok(match name {
            "accept" => {
                let b: AcceptBody = parse(body)?;
                ChatOperation::Accept {
                    nickname: b.nickname,
                }
            }
            "reject" => {
                parse::<Empty>(body)?;
                ChatOperation::Reject
            }
            "send-message" => {
                let b: MessageBody = parse(body)?;
                ChatOperation::SendMessage {
                    text: b.text,
                    message_type: b.message_type,
                    treat_as: b.treat_as,
                }
            }
            "start-typing" => {
                parse::<Empty>(body)?;
                ChatOperation::SendStartTypingNotification
            }
            "stop-typing" => {
                parse::<Empty>(body)?;
                ChatOperation::SendStopTypingNotification
            }
            "leave" => {
                let b: LeaveBody = parse(body)?;
                ChatOperation::Leave(closing(b.text, b.message_type, b.treat_as))
            }
            "complete" => {
                let b: CompleteBody = parse(body)?;
                ChatOperation::Complete {
                    queue_name: b.queue_name,
                    save_lar: b.save_lar,
                    closing: closing(b.text, b.message_type, b.treat_as),
                }
            }
            "transfer" => {
                let b: TransferBody = parse(body)?;
                ChatOperation::Transfer {
                    target: TransferTarget::from_options(b.target_uri, b.queue_name)?,
                    closing: closing(b.text, b.message_type, b.treat_as),
                }
            }
            "set-disposition" => {
                let b: DispositionBody = parse(body)?;
                ChatOperation::SetDisposition {
                    disposition: b.disposition,
                    disposition_key: b.disposition_key,
                }
            }
            "attach-user-data" => {
                ChatOperation::AttachUserData(parse::<UserDataBody>(body)?.user_data)
            }
            "update-user-data" => {
                ChatOperation::UpdateUserData(parse::<UserDataBody>(body)?.user_data)
            }
            "delete-user-data" => ChatOperation::DeleteUserData(parse::<KeysBody>(body)?.keys),
            _ => unreachable!("checked by is_operation"),
        })
    };
    is_operation(name).then(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, body: &str) -> Result<ChatOperation, BodyError> {
        operation(name, body.as_bytes()).expect("an operation")
    }

    #[test]
    fn every_path_name_maps_to_its_gws_operation() {
        let bodies = [
            ("accept", "{}"),
            ("reject", ""),
            ("send-message", r#"{"text":"hi"}"#),
            ("start-typing", "{}"),
            ("stop-typing", " "),
            ("leave", r#"{"text":"Goodbye","treatAs":"System"}"#),
            ("complete", r#"{"queueName":"Q","saveLAR":true}"#),
            ("transfer", r#"{"targetUri":"agent2"}"#),
            ("set-disposition", r#"{"disposition":"Resolved"}"#),
            ("attach-user-data", r#"{"userData":{"k":1}}"#),
            ("update-user-data", r#"{"userData":{"k":"v"}}"#),
            ("delete-user-data", r#"{"keys":["k"]}"#),
        ];
        assert_eq!(bodies.len(), OPERATIONS.len());
        for ((name, body), (path, gws)) in bodies.iter().zip(OPERATIONS) {
            assert_eq!(name, path);
            let o = op(name, body).unwrap();
            assert_eq!(o.name(), *gws);
            o.validate().unwrap();
        }
        assert!(operation("Leave", b"{}").is_none());
    }

    #[test]
    fn unknown_fields_nulls_and_wrong_types_are_refused() {
        for (name, body) in [
            ("leave", r#"{"text":"x","extra":1}"#),
            ("leave", r#"{"text":null}"#),
            ("leave", r#"{"treatAs":"system"}"#),
            ("reject", r#"{"a":1}"#),
            ("complete", r#"{"saveLAR":"yes"}"#),
            ("send-message", "{}"),
            ("delete-user-data", r#"{"keys":"k"}"#),
            ("accept", "[]"),
        ] {
            assert!(
                matches!(
                    op(name, body),
                    Err(BodyError::Json(_) | BodyError::NotObject)
                ),
                "{name} {body}"
            );
        }
        assert!(matches!(
            op("transfer", r#"{"targetUri":"a","queueName":"q"}"#),
            Err(BodyError::Rule(_))
        ));
    }

    #[test]
    fn the_clis_rules_apply_after_parsing() {
        let o = op("leave", r#"{"treatAs":"System"}"#).unwrap();
        let e = o.validate().unwrap_err().to_string();
        assert!(
            e.contains("`treatAs` can only be sent together with `text`"),
            "{e}"
        );
        assert!(op("attach-user-data", r#"{"userData":{}}"#)
            .unwrap()
            .validate()
            .is_err());
    }
}
