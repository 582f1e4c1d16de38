//! The directory of running accounts that the operations API (and anything else outside an
//! account's own tasks) reaches them through: for each account, its GWS session (to perform
//! operations with the account's cookie jar and CSRF token), its workflow state (the chats it
//! tracks, with state, capabilities and pending-disposition age) and the stream of events its
//! pipeline appended (to wait for the outcome of an operation).
//!
//! The service inserts an account when it starts it and removes it when it stops it; readers
//! take a cheap clone of the [`AccountHandle`] and never hold the directory's lock while they
//! wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use super::workflow::{ChatView, Workflow};
use crate::event::Event;
use crate::gws::session::GwsSession;

/// Events kept for slow subscribers of one account's event stream before they lag.
pub const EVENT_STREAM_CAPACITY: usize = 1024;

/// One running account as seen from outside its tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountHandle {
    /// The account name.
    pub name: String,
    /// The account's GWS session (`None` for a plain Bayeux account, which has no operations).
    pub session: Option<Arc<GwsSession>>,
    /// The account's workflow state, owned by its pipeline task; lock only briefly.
    pub workflow: Arc<Mutex<Workflow>>,
    /// Every event the account's pipeline appended to the journal, in order, after the append.
    pub events: broadcast::Sender<Arc<Event>>,
}

impl AccountHandle {
    /// A handle for `name` with a fresh event stream.
    pub fn new(
        name: &str,
        session: Option<Arc<GwsSession>>,
        workflow: Arc<Mutex<Workflow>>,
    ) -> AccountHandle {
        AccountHandle {
            name: name.to_owned(),
            session,
            workflow,
            events: broadcast::channel(EVENT_STREAM_CAPACITY).0,
        }
    }

    /// The chats the account tracks now, by id.
    pub fn chats(&self) -> Vec<ChatView> {
        self.lock().chats()
    }

    /// One tracked chat.
    pub fn chat(&self, id: &str) -> Option<ChatView> {
        self.lock().chat(id)
    }

    /// Subscribes to the events appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Workflow> {
        self.workflow.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running accounts by name. Cheap to clone; every clone sees the same accounts.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    accounts: Arc<RwLock<BTreeMap<String, AccountHandle>>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds (or replaces) an account.
    pub fn insert(&self, handle: AccountHandle) {
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        accounts.insert(handle.name.clone(), handle);
    }

    /// Removes an account.
    pub fn remove(&self, name: &str) {
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        accounts.remove(name);
    }

    /// The account `name`, if it runs.
    pub fn get(&self, name: &str) -> Option<AccountHandle> {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        accounts.get(name).cloned()
    }

    /// The running accounts' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        accounts.keys().cloned().collect()
    }
}
