//! The chat tracker: the last [`ChatState`] seen for each live chat of one account, so every event
//! can say which state a chat came *from* (`previous_state`).
//!
//! The tracker owns nothing but that memory, and keeps it bounded: a chat is forgotten when it
//! reaches a terminal state (`Completed`, `Revoked`; §7 of the GWS reference), and when more than
//! `max_chats` chats are live the least recently touched one is evicted, counted in
//! [`ChatTracker::evictions`] and in the `chatwatch_tracker_evictions_total` metric. An evicted chat
//! that shows up again simply reports no previous state. The caller holds one tracker per account;
//! the tracker does no locking and no I/O.

use lru::LruCache;

use crate::gws::notification::{ChatState, Notification};

/// The metric counting chats evicted because the tracker was full.
pub use crate::metrics::TRACKER_EVICTIONS as EVICTIONS_METRIC;

/// Remembers each live chat's last state, bounded by a chat count (see the module docs).
#[derive(Debug)]
pub struct ChatTracker {
    /// Chat id → last state seen, in recency order.
    chats: LruCache<String, ChatState>,
    /// The bound on `chats`, enforced here: an `LruCache` built with a capacity allocates its
    /// whole table up front (megabytes per account at the default bound), so it is unbounded
    /// and grows with the chats actually seen.
    max_chats: usize,
    /// Chats evicted because the tracker was full, since it was created.
    evictions: u64,
}

impl ChatTracker {
    /// A tracker that remembers at most `max_chats` chats (a `max_chats` of 0 is taken as 1).
    pub fn new(max_chats: usize) -> Self {
        Self {
            chats: LruCache::unbounded(),
            max_chats: max_chats.max(1),
            evictions: 0,
        }
    }

    /// Records that `chat_id` was seen, and returns the state it had before (`None` when the chat
    /// is new to the tracker, or was forgotten or evicted).
    ///
    /// With `Some(state)` the state is recorded, or, if it is terminal, the chat is forgotten. With
    /// `None` (a transcript update, an error naming the chat) nothing is recorded; the known state
    /// is returned and the chat counts as recently touched. Idempotent for repeated states.
    pub fn observe(&mut self, chat_id: &str, state: Option<&ChatState>) -> Option<ChatState> {
        let Some(state) = state else {
            return self.chats.get(chat_id).cloned();
        };
        if state.is_terminal() {
            return self.chats.pop(chat_id);
        }
        if let Some(known) = self.chats.get_mut(chat_id) {
            return Some(std::mem::replace(known, state.clone()));
        }
        if self.chats.len() >= self.max_chats && self.chats.pop_lru().is_some() {
            self.evictions += 1;
            metrics::counter!(EVICTIONS_METRIC).increment(1);
        }
        self.chats.put(chat_id.to_owned(), state.clone());
        None
    }

    /// [`observe`](Self::observe) for a decoded notification: the chat it names (if it names
    /// one) is observed with the state it reports (a chat state change) or with none (a
    /// transcript update, an error naming the chat), and the previous state is returned. Other
    /// notifications leave the tracker untouched.
    pub fn observe_notification(&mut self, notification: &Notification) -> Option<ChatState> {
        match notification {
            Notification::ChatStateChange(change) => {
                let chat = &change.chat;
                self.observe(chat.id.as_deref()?, chat.state.as_ref())
            }
            Notification::MessageLogUpdated(log) => self.observe(log.chat_id.as_deref()?, None),
            Notification::Error(error) => self.observe(error.chat_id.as_deref()?, None),
            Notification::Other { .. } => None,
        }
    }

    /// The state known for `chat_id`, without touching its recency.
    pub fn peek(&self, chat_id: &str) -> Option<&ChatState> {
        self.chats.peek(chat_id)
    }

    /// Forgets `chat_id` (a chat GWS no longer lists), returning its last state.
    pub fn forget(&mut self, chat_id: &str) -> Option<ChatState> {
        self.chats.pop(chat_id)
    }

    /// The remembered chats whose id is not in `ids`, with their last state, least recently
    /// touched first. Used to find chats that vanished while chatwatch was not listening.
    pub fn chats_not_in(
        &self,
        ids: &std::collections::HashSet<String>,
    ) -> Vec<(String, ChatState)> {
        self.chats
            .iter()
            .rev()
            .filter(|(id, _)| !ids.contains(*id))
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect()
    }

    /// How many chats the tracker remembers now.
    pub fn len(&self) -> usize {
        self.chats.len()
    }

    /// Whether the tracker remembers no chat.
    pub fn is_empty(&self) -> bool {
        self.chats.is_empty()
    }

    /// The most chats the tracker remembers at once.
    pub fn capacity(&self) -> usize {
        self.max_chats
    }

    /// How many chats were evicted because the tracker was full, since it was created.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn previous_state_follows_the_chain_and_terminal_state_forgets() {
        let mut tracker = ChatTracker::new(10);
        let chain = [
            (ChatState::Invited, None),
            (ChatState::Chatting, Some(ChatState::Invited)),
            (ChatState::LeftChat, Some(ChatState::Chatting)),
            (ChatState::Completed, Some(ChatState::LeftChat)),
        ];
        for (state, previous) in chain {
            assert_eq!(
                tracker.observe("c1", Some(&state)),
                previous,
                "observing {state}"
            );
        }
        assert_eq!(tracker.len(), 0, "Completed forgets the chat");
        assert_eq!(tracker.peek("c1"), None);
        assert_eq!(
            tracker.observe("c1", None),
            None,
            "a forgotten chat has no previous state"
        );
    }

    #[test]
    fn revoked_forgets_and_unknown_terminal_is_not_recorded() {
        let mut tracker = ChatTracker::new(10);
        assert_eq!(tracker.observe("c1", Some(&ChatState::Invited)), None);
        assert_eq!(
            tracker.observe("c1", Some(&ChatState::Revoked)),
            Some(ChatState::Invited)
        );
        assert!(tracker.is_empty());
        assert_eq!(tracker.observe("c2", Some(&ChatState::Completed)), None);
        assert!(
            tracker.is_empty(),
            "a terminal state for an unknown chat records nothing"
        );
    }

    #[test]
    fn none_state_returns_known_state_without_recording() {
        let mut tracker = ChatTracker::new(10);
        assert_eq!(tracker.observe("c1", None), None);
        assert!(
            tracker.is_empty(),
            "a None state for an unknown chat records nothing"
        );
        tracker.observe("c1", Some(&ChatState::Chatting));
        assert_eq!(tracker.observe("c1", None), Some(ChatState::Chatting));
        assert_eq!(tracker.observe("c1", None), Some(ChatState::Chatting));
        assert_eq!(tracker.peek("c1"), Some(&ChatState::Chatting));
    }

    #[test]
    fn repeated_and_unknown_states_are_recorded_verbatim() {
        let mut tracker = ChatTracker::new(10);
        let monitoring = ChatState::Other("Monitoring".to_owned());
        tracker.observe("c1", Some(&monitoring));
        assert_eq!(
            tracker.observe("c1", Some(&monitoring)),
            Some(monitoring.clone())
        );
        assert_eq!(
            tracker.observe("c1", Some(&ChatState::Chatting)),
            Some(monitoring)
        );
    }

    #[test]
    fn none_state_refreshes_recency() {
        let mut tracker = ChatTracker::new(2);
        tracker.observe("a", Some(&ChatState::Chatting));
        tracker.observe("b", Some(&ChatState::Chatting));
        // Touch "a" with a transcript update: "b" becomes the least recently touched.
        tracker.observe("a", None);
        tracker.observe("c", Some(&ChatState::Invited));
        assert_eq!(tracker.peek("a"), Some(&ChatState::Chatting));
        assert_eq!(tracker.peek("b"), None, "b was evicted");
        assert_eq!(tracker.evictions(), 1);
    }

    #[test]
    fn bounded_under_a_million_distinct_ids() {
        let mut tracker = ChatTracker::new(1000);
        assert_eq!(tracker.capacity(), 1000);
        for i in 0..1_000_000u32 {
            assert_eq!(
                tracker.observe(&format!("chat-{i}"), Some(&ChatState::Chatting)),
                None
            );
            assert!(tracker.len() <= 1000);
        }
        assert_eq!(tracker.len(), 1000);
        assert_eq!(tracker.evictions(), 999_000);
        // The newest 1000 are kept; earlier ids were evicted and come back as new.
        assert_eq!(
            tracker.observe("chat-999999", None),
            Some(ChatState::Chatting)
        );
        assert_eq!(tracker.observe("chat-0", None), None);
        assert_eq!(tracker.observe("chat-0", Some(&ChatState::Invited)), None);
        assert_eq!(tracker.observe("chat-0", None), Some(ChatState::Invited));
    }

    #[test]
    fn evictions_are_counted_in_the_metric() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let tracker = metrics::with_local_recorder(&recorder, || {
            let mut tracker = ChatTracker::new(3);
            for i in 0..10 {
                tracker.observe(&i.to_string(), Some(&ChatState::Invited));
            }
            tracker
        });
        assert_eq!(tracker.evictions(), 7);
        let counted: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == EVICTIONS_METRIC)
            .map(|(.., value)| value)
            .collect();
        assert_eq!(counted, vec![DebugValue::Counter(7)]);
    }

    #[test]
    fn forget_and_chats_not_in() {
        let mut tracker = ChatTracker::new(10);
        tracker.observe("a", Some(&ChatState::Chatting));
        tracker.observe("b", Some(&ChatState::LeftChat));
        tracker.observe("c", Some(&ChatState::Invited));
        tracker.observe("a", None); // "a" is now the most recently touched
        let listed: std::collections::HashSet<String> = ["c".to_owned()].into();
        assert_eq!(
            tracker.chats_not_in(&listed),
            vec![
                ("b".to_owned(), ChatState::LeftChat),
                ("a".to_owned(), ChatState::Chatting)
            ],
            "least recently touched first"
        );
        assert_eq!(tracker.forget("b"), Some(ChatState::LeftChat));
        assert_eq!(tracker.forget("b"), None);
        assert_eq!(tracker.len(), 2);
    }

    #[test]
    fn zero_capacity_is_taken_as_one() {
        let mut tracker = ChatTracker::new(0);
        assert_eq!(tracker.capacity(), 1);
        tracker.observe("a", Some(&ChatState::Chatting));
        tracker.observe("b", Some(&ChatState::Chatting));
        assert_eq!(tracker.len(), 1);
        assert_eq!(tracker.peek("b"), Some(&ChatState::Chatting));
    }

    #[test]
    fn a_notification_is_observed_through_the_chat_it_names() {
        use crate::gws::notification::decode;
        use serde_json::json;
        let mut tracker = ChatTracker::new(10);
        let observe = |tracker: &mut ChatTracker, data: serde_json::Value| {
            let notification = decode(&data).expect("decodes");
            tracker.observe_notification(&notification)
        };
        let change = |state: &str| json!({"messageType": "ChatStateChangeMessage", "chat": {"id": "c1", "state": state}});
        assert_eq!(observe(&mut tracker, change("Invited")), None);
        assert_eq!(
            observe(&mut tracker, change("Chatting")),
            Some(ChatState::Invited)
        );
        // A transcript update and an error naming the chat report its state and record none.
        let log =
            json!({"messageType": "MessageLogUpdated", "chatPath": "/chats/c1", "messages": []});
        assert_eq!(observe(&mut tracker, log), Some(ChatState::Chatting));
        let error = json!({"messageType": "ChatStateChangeMessage", "notificationType": "Error",
            "chat": {"id": "c1"}, "errorMessage": "no"});
        assert_eq!(observe(&mut tracker, error), Some(ChatState::Chatting));
        assert_eq!(tracker.peek("c1"), Some(&ChatState::Chatting));
        // Nothing to observe without a chat id, nor in other notifications.
        let anonymous =
            json!({"messageType": "ChatStateChangeMessage", "chat": {"state": "Chatting"}});
        assert_eq!(observe(&mut tracker, anonymous), None);
        assert_eq!(observe(&mut tracker, json!({"messageType": "Other"})), None);
        assert_eq!(tracker.len(), 1);
    }
}
