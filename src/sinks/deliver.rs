//! The contract between the journal-driven sink runner and a sink implementation.
//!
//! Every sink reads the journal at its own cursor. The runner reads a batch of events after the
//! cursor (already filtered for the sink), hands it to [`Deliver::deliver`], and moves the cursor
//! past the batch only when that returns `Ok`. So:
//! - `Ok` means every event of the batch is delivered (durably, for a file: written, flushed and
//!   synced per its fsync policy) or definitively handled (for a webhook: dead-lettered, or the
//!   endpoint disabled and the event dead-lettered);
//! - retries happen inside `deliver`; a dead webhook holds back only its own cursor;
//! - dropping the future before it completes (shutdown, reload) loses nothing: the cursor did not
//!   move, so the batch is delivered again later — delivery is at least once, and every event
//!   carries its stable `event_id` for the receiver to deduplicate;
//! - `Err` means this sink instance cannot continue (e.g. a failed fsync, after which the page
//!   cache cannot be trusted): the runner logs it, rebuilds the sink and resumes at the cursor.

use std::future::Future;
use std::sync::Arc;

use crate::event::Event;

use super::SinkError;

/// One running sink, as the journal runner drives it. See the module documentation.
pub trait Deliver: Send + 'static {
    /// Delivers `events` (in journal order, at least one). See the module documentation for what
    /// `Ok` promises and why dropping the future must be safe.
    fn deliver(
        &mut self,
        events: &[Arc<Event>],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Reopens output files (SIGHUP, for logrotate users). Sinks without files do nothing.
    fn reopen(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Flushes and syncs everything delivered so far; called once before shutdown.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}
