//! The `[[rules]]` tables: what starts a rule (`when`, in the sink filter vocabulary), how long
//! it waits (`after`), what cancels it (`unless`), what it does (`do`, a list of chat
//! operations), whether it only pretends (`dry_run`) and how often it may act
//! (`max_per_minute`). Validation is pure and names the key at fault (`rules[0].do[1]`).

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::filter::FilterConfig;
use crate::gws::operations::{ChatOperation, ClosingText, TreatAs};

/// A rule's configuration is unusable; `key` is the dotted path (`rules[0].do[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RuleError {
    /// The dotted key path.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// One `[[rules]]` table. Example (README): a chat still in `LeftChat` 10 minutes after the agent
/// left gets `DispositionCode = AutoClosed` and is completed:
///
/// ```toml
/// [[rules]]
/// name = "auto-close"
/// when = { entered_states = ["LeftChat"] }
/// after = "10m"
/// unless = ["Completed", "Revoked", "disposition_set"]
/// do = [{ set_disposition = { code = "AutoClosed" } }, { complete = {} }]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, in every `action` event, log line and metric. Letters, digits, `_`,
    /// `-`, `.`; at most 64; unique.
    pub name: String,
    /// The accounts the rule applies to. Default: empty, meaning every account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Which events start the rule for their chat, in the sink filter vocabulary (`kinds`,
    /// `states`, `entered_states`, `notification_types`, ...). Required and not empty. Events of
    /// kind `action` never start a rule.
    pub when: FilterConfig,
    /// How long after the starting event the rule acts. Default: 0s (at once).
    #[serde(default, with = "humantime_serde")]
    pub after: Duration,
    /// Chat states (`Completed`) or event kinds (`disposition_set`) that cancel the rule for a
    /// chat while it waits: an event about the chat whose `chat.state` or `kind` is listed. A
    /// chat that ends (`Completed`, `Revoked`, vanished) always cancels it. Default: empty.
    #[serde(default)]
    pub unless: Vec<String>,
    /// The chat operations, performed in order through the account's GWS session; an operation
    /// that is not accepted stops the list. Required and not empty.
    #[serde(rename = "do")]
    pub actions: Vec<ActionConfig>,
    /// Record what the rule would do (`action` events with outcome `dry_run`) and send nothing.
    /// Default: false.
    #[serde(default)]
    pub dry_run: bool,
    /// The rate limit: at most this many chats acted on per minute, over all accounts; chats
    /// beyond it wait their turn (nothing is dropped). Default: 60.
    #[serde(default = "default_rate")]
    pub max_per_minute: u32,
}

fn default_rate() -> u32 {
    60
}

/// One chat operation of a rule's `do` list, e.g. `{ set_disposition = { code = "AutoClosed" } }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionConfig {
    /// `SetDisposition`: `code`, and `key` (default: the account's `disposition_key`).
    SetDisposition {
        /// The disposition code.
        code: String,
        /// The user-data key; default the account's `disposition_key`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// `Complete`: optional `queue_name`, `save_lar` and the closing text trio.
    Complete {
        /// Place the interaction in this queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_name: Option<String>,
        /// Save last-agent-routing information (`saveLAR`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        save_lar: Option<bool>,
        /// A closing message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Its `messageType` (only with `text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_type: Option<String>,
        /// Its `treatAs`, `Normal` or `System` (only with `text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        treat_as: Option<TreatAs>,
    },
    /// `Leave`, with the optional closing text trio.
    Leave {
        /// A goodbye message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Its `messageType` (only with `text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_type: Option<String>,
        /// Its `treatAs` (only with `text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        treat_as: Option<TreatAs>,
    },
    /// `SendMessage`.
    SendMessage {
        /// The message.
        text: String,
        /// Its `messageType`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_type: Option<String>,
        /// Its `treatAs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        treat_as: Option<TreatAs>,
    },
    /// `UpdateUserData`: the table is the user data to write, e.g.
    /// `{ update_user_data = { Outcome = "auto" } }`.
    UpdateUserData(Map<String, Value>),
    /// `AttachUserData`: the table is the user data to add.
    AttachUserData(Map<String, Value>),
    /// `DeleteUserData`: `keys` to remove.
    DeleteUserData {
        /// The keys.
        keys: Vec<String>,
    },
}

impl ActionConfig {
    /// The chat operation this entry performs, on an account whose disposition key is
    /// `disposition_key`. Not validated (see [`RuleConfig::validate`]).
    pub fn operation(&self, disposition_key: &str) -> ChatOperation {
        let closing = |text: &Option<String>, mt: &Option<String>, ta: &Option<TreatAs>| {
            ClosingText::new(text.clone(), mt.clone(), *ta)
        };
        match self {
            Self::SetDisposition { code, key } => ChatOperation::SetDisposition {
                disposition: code.clone(),
                disposition_key: Some(key.clone().unwrap_or_else(|| disposition_key.to_owned())),
            },
            Self::Complete {
                queue_name,
                save_lar,
                text,
                message_type,
                treat_as,
            } => ChatOperation::Complete {
                queue_name: queue_name.clone(),
                save_lar: *save_lar,
                closing: closing(text, message_type, treat_as),
            },
            Self::Leave {
                text,
                message_type,
                treat_as,
            } => ChatOperation::Leave(closing(text, message_type, treat_as)),
            Self::SendMessage {
                text,
                message_type,
                treat_as,
            } => ChatOperation::SendMessage {
                text: text.clone(),
                message_type: message_type.clone(),
                treat_as: *treat_as,
            },
            Self::UpdateUserData(data) => ChatOperation::UpdateUserData(data.clone()),
            Self::AttachUserData(data) => ChatOperation::AttachUserData(data.clone()),
            Self::DeleteUserData { keys } => ChatOperation::DeleteUserData(keys.clone()),
        }
    }
}

impl RuleConfig {
    /// Whether the rule applies to `account`.
    pub fn applies_to(&self, account: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|a| a == account)
    }

    /// Checks the rule (the `index`-th `[[rules]]` table) against the configured account names:
    /// a plain, non-empty name; known accounts; a valid, non-empty `when`; non-empty `unless`
    /// entries; a non-empty `do` list whose operations pass the same validation as the CLI's
    /// (`messageType` and `treatAs` only with `text`, ...); a rate of at least 1 per minute.
    pub fn validate(&self, index: usize, accounts: &HashSet<&str>) -> Result<(), RuleError> {
        let err = |key: String, message: String| Err(RuleError { key, message });
        let at = format!("rules[{index}]");
        let plain = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return err(
                format!("{at}.name"),
                format!("`{}`: use 1 to 64 of A-Z a-z 0-9 _ - .", self.name),
            );
        }
        for (i, account) in self.accounts.iter().enumerate() {
            if !accounts.contains(account.as_str()) {
                return err(
                    format!("{at}.accounts[{i}]"),
                    format!("no account `{account}` is configured"),
                );
            }
        }
        if self.when.is_empty() {
            return err(
                format!("{at}.when"),
                "must say which events start the rule, e.g. { entered_states = [\"LeftChat\"] }"
                    .to_owned(),
            );
        }
        if let Err(e) = self.when.validate() {
            return err(
                format!("{at}.when.{}", e.field.trim_start_matches("filter.")),
                e.reason,
            );
        }
        for (i, entry) in self.unless.iter().enumerate() {
            if entry.trim().is_empty() {
                return err(format!("{at}.unless[{i}]"), "must not be empty".to_owned());
            }
        }
        if self.actions.is_empty() {
            return err(
                format!("{at}.do"),
                "must list at least one operation".to_owned(),
            );
        }
        for (i, action) in self.actions.iter().enumerate() {
            if let Err(e) = action.operation("DispositionCode").validate() {
                return err(format!("{at}.do[{i}]"), e.to_string());
            }
        }
        if self.max_per_minute == 0 {
            return err(
                format!("{at}.max_per_minute"),
                "must be at least 1".to_owned(),
            );
        }
        Ok(())
    }
}

/// Checks every rule and that no two share a name.
pub fn validate_all(rules: &[RuleConfig], accounts: &HashSet<&str>) -> Result<(), RuleError> {
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(i, accounts)?;
        if !names.insert(rule.name.as_str()) {
            return Err(RuleError {
                key: format!("rules[{i}].name"),
                message: format!("two rules are named `{}`", rule.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<RuleConfig> {
        #[derive(Deserialize)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        toml::from_str::<File>(text).expect("parses").rules
    }

    #[test]
    fn the_readme_rule_parses_and_validates() {
        let rules = parse(
            r#"
            [[rules]]
            name = "auto-close"
            when = { entered_states = ["LeftChat"] }
            after = "10m"
            unless = ["Completed", "disposition_set"]
            do = [{ set_disposition = { code = "AutoClosed" } }, { complete = {} }]
            "#,
        );
        let accounts = HashSet::from(["main"]);
        validate_all(&rules, &accounts).expect("valid");
        let rule = &rules[0];
        assert_eq!(rule.after, Duration::from_secs(600));
        assert_eq!(rule.max_per_minute, 60);
        assert!(!rule.dry_run);
        assert!(rule.applies_to("main") && rule.applies_to("any"));
        assert_eq!(
            rule.actions[0].operation("DispositionCode"),
            ChatOperation::SetDisposition {
                disposition: "AutoClosed".into(),
                disposition_key: Some("DispositionCode".into())
            }
        );
        assert_eq!(rule.actions[1].operation("X").name(), "Complete");
    }

    #[test]
    fn user_data_and_leave_entries_parse() {
        let rules = parse(
            r#"
            [[rules]]
            name = "r"
            when = { kinds = ["disposition_overdue"] }
            do = [{ update_user_data = { Outcome = "auto", Score = 3 } },
                  { leave = { text = "Bye", treat_as = "System" } }]
            "#,
        );
        validate_all(&rules, &HashSet::new()).expect("valid");
        let ChatOperation::UpdateUserData(data) = rules[0].actions[0].operation("K") else {
            panic!("update_user_data");
        };
        assert_eq!(data["Score"], 3);
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let accounts = HashSet::from(["main"]);
        let check = |text: &str| {
            validate_all(&parse(text), &accounts)
                .expect_err("invalid")
                .to_string()
        };
        let base = |extra: &str| {
            format!("[[rules]]\nname = \"r\"\nwhen = {{ states = [\"LeftChat\"] }}\ndo = [{{ complete = {{}} }}]\n{extra}")
        };
        assert!(check(&base("accounts = [\"nope\"]")).starts_with("rules[0].accounts[0]"));
        assert!(check(&base("max_per_minute = 0")).starts_with("rules[0].max_per_minute"));
        assert!(check(&format!("{}{}", base(""), base(""))).contains("two rules are named"));
        let trio = "[[rules]]\nname = \"r\"\nwhen = { states = [\"LeftChat\"] }\ndo = [{ complete = {} }, { leave = { treat_as = \"System\" } }]";
        let message = check(trio);
        assert!(message.starts_with("rules[0].do[1]"), "{message}");
        assert!(message.contains("`treatAs` can only be sent together with `text`"));
        let empty_when = "[[rules]]\nname = \"r\"\nwhen = {}\ndo = [{ complete = {} }]";
        assert!(check(empty_when).starts_with("rules[0].when"));
        let bad_name =
            "[[rules]]\nname = \"a b\"\nwhen = { states = [\"X\"] }\ndo = [{ complete = {} }]";
        assert!(check(bad_name).starts_with("rules[0].name"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        let text = "[[rules]]\nname = \"r\"\nwhen = { states = [\"X\"] }\ndo = [{ complete = { queue = \"q\" } }]";
        assert!(toml::from_str::<File>(text).is_err());
        let text = "[[rules]]\nname = \"r\"\nwhen = { states = [\"X\"] }\ndo = [{ explode = {} }]";
        assert!(toml::from_str::<File>(text).is_err());
    }
}
