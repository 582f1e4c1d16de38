//! Sink readiness: which running sinks cannot deliver right now, and why.
//!
//! A sink that depends on a remote peer (the NATS sink) reports here whether it can deliver;
//! the daemon's health (`/readyz`, the systemd status line) reads [`not_ready`] and lists each
//! entry as `sink NAME: REASON`. The registry is process-wide because the sink layer sits below
//! the service layer and must not import it. Each report carries an owner token, so a sink
//! instance being replaced (reload, rebuild after an error) cannot clear the report of the
//! instance that replaced it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Sink name → (owner token, reason).
type Registry = BTreeMap<String, (u64, String)>;

/// The process-wide registry.
fn global() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// One sink instance's handle on its readiness entry. Dropping it clears the entry (if this
/// instance still owns it).
#[derive(Debug)]
pub struct SinkReadiness {
    sink: String,
    token: u64,
    registry: &'static Mutex<Registry>,
}

impl SinkReadiness {
    /// A handle for the sink `name`, which starts out not ready for `reason`.
    pub fn new(name: &str, reason: impl Into<String>) -> Self {
        Self::in_registry(global(), name, reason)
    }

    fn in_registry(
        registry: &'static Mutex<Registry>,
        name: &str,
        reason: impl Into<String>,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let handle = Self {
            sink: name.to_owned(),
            token: NEXT.fetch_add(1, Ordering::Relaxed),
            registry,
        };
        handle.not_ready(reason);
        handle
    }

    /// Marks the sink not ready for `reason` (one short phrase, no secrets).
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.lock()
            .insert(self.sink.clone(), (self.token, reason.into()));
    }

    /// Marks the sink ready.
    pub fn ready(&self) {
        let mut registry = self.lock();
        if registry
            .get(&self.sink)
            .is_some_and(|(t, _)| *t == self.token)
        {
            registry.remove(&self.sink);
        }
    }

    /// The current reason this sink is not ready, if it is not.
    pub fn reason(&self) -> Option<String> {
        self.lock().get(&self.sink).map(|(_, r)| r.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SinkReadiness {
    fn drop(&mut self) {
        self.ready();
    }
}

/// Every sink that is not ready, by name, with its reason.
pub fn not_ready() -> Vec<(String, String)> {
    list(global())
}

fn list(registry: &Mutex<Registry>) -> Vec<(String, String)> {
    registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(name, (_, reason))| (name.clone(), reason.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_instance_does_not_clear_its_successor() {
        // A registry of its own: the global one is read by health tests running meanwhile.
        let registry: &'static Mutex<Registry> = Box::leak(Box::default());
        let old = SinkReadiness::in_registry(registry, "readiness-test", "connecting");
        let new = SinkReadiness::in_registry(registry, "readiness-test", "still connecting");
        drop(old);
        assert_eq!(new.reason().as_deref(), Some("still connecting"));
        assert!(list(registry)
            .iter()
            .any(|(n, r)| n == "readiness-test" && r == "still connecting"));
        new.ready();
        assert_eq!(new.reason(), None);
        new.not_ready("down");
        drop(new);
        assert!(!list(registry).iter().any(|(n, _)| n == "readiness-test"));
    }
}
