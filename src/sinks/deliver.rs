//! The contract between the journal-driven sink runner and a sink implementation.
//!
//! Every sink reads the journal at its own cursor. The runner reads a batch of records after the
//! cursor (already filtered for the sink), hands it to [`Deliver::deliver`], and moves the cursor
//! past the batch only when that returns `Ok`. Each [`Record`] carries the event's JSON as the
//! journal holds it; the runner decodes beforehand what the sink declared it needs
//! ([`Deliver::needs`]) and skips records that cannot give it. So:
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

use super::record::Record;
use super::SinkError;

/// What a sink reads of each record besides its bytes ([`Record::json`]): the runner makes sure
/// it is there (decoding it before the batch is handed over) and skips, counting them, the
/// records that cannot give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only the bytes (file, audit): nothing is decoded.
    Bytes,
    /// The bytes and the `event_id` ([`Record::event_id`]; the webhook's `webhook-id`).
    EventId,
    /// The decoded event ([`Record::event`]; the log sink's human line, NATS headers).
    Event,
}

/// One running sink, as the journal runner drives it. See the module documentation.
pub trait Deliver: Send + 'static {
    /// Delivers `records` (in journal order, at least one). See the module documentation for
    /// what `Ok` promises and why dropping the future must be safe.
    fn deliver(
        &mut self,
        records: &[Arc<Record>],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// What this sink reads of each record; the runner decodes that much before
    /// [`Deliver::deliver`]. The default decodes the event.
    fn needs(&self) -> Needs {
        Needs::Event
    }

    /// Reopens output files (SIGHUP, for logrotate users). Sinks without files do nothing.
    fn reopen(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Flushes and syncs everything delivered so far; called once before shutdown.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}
