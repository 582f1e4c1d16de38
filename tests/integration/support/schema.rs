//! The event record's JSON Schema (`schema/chatwatch.event.v1.json`), applied to every event the
//! integration tests read back from the daemon's event files, so an event that the code makes
//! but the schema does not describe fails the test that produced it.

use std::sync::OnceLock;

use serde_json::Value;

/// The compiled schema, once per test process.
fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/chatwatch.event.v1.json");
        let text = std::fs::read_to_string(&path).expect("the event schema");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema compiles")
    })
}

/// Asserts that `value`, when it is an event record (`"schema": "chatwatch.event.v1"`), matches
/// the schema; other JSON (log lines, dead letters, audit lines) is left alone. `origin` names
/// where it was read.
pub fn check_event(origin: &str, value: &Value) {
    if value.get("schema").and_then(Value::as_str) != Some("chatwatch.event.v1") {
        return;
    }
    let errors: Vec<String> = validator()
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{origin}: an event does not match schema/chatwatch.event.v1.json: {errors:?}\n{value}"
    );
}
