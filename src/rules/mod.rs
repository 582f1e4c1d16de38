//! The post-leave workflow: what chatwatch derives about chats waiting for a disposition, and
//! the rules that act on them.
//!
//! - [`workflow`]: one account's derived state, sans I/O: the chats it tracks, which are
//!   **pending disposition** (entered `LeftChat`, not yet `Completed`/`Revoked`) and since when,
//!   their disposition codes, the `overdue_after` timers and the runs of the rules. It turns
//!   events into derived events (`disposition_set`, `disposition_overdue`, `action`) that the
//!   pipeline appends to the journal like any other, so every sink and filter sees them.
//! - [`config`]: the `[[rules]]` tables and their validation.
//! - [`actor`]: performs a rule's operations through the account's own GWS session, with
//!   retries on 503, and reports each attempt.
//! - [`state`]: the small per-account state file that makes derived events and actions happen
//!   once, across restarts.
//! - [`directory`]: the running accounts as the operations API reaches them (session, workflow
//!   view, event stream).
//!
//! Nothing here bypasses the journal: the workflow only proposes events and operations; the
//! account's pipeline appends the events and hands the operations to the actor.

pub mod actor;
pub mod config;
pub mod directory;
pub mod state;
pub mod workflow;

pub use config::{ActionConfig, RuleConfig, RuleError};
pub use directory::{AccountHandle, Directory};
pub use workflow::{
    ActionReport, ActionRequest, ChatView, Rule, Workflow, WorkflowSettings,
    DEFAULT_DISPOSITION_KEY,
};
