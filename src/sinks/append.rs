//! Appending complete lines to a file without ever leaving a torn one: the file operations the
//! file-backed sinks (the [`file`](super::file) sink and the [`audit`](super::audit) sink)
//! share, beside the [`writer`](super::writer) thread that calls them.
//!
//! This module owns the [`SinkFile`] view of an output file (so tests can inject failures),
//! [`append_at`] (one attempt: truncate a partial earlier attempt away, write, flush, and
//! truncate back at once if the write fails) and [`append_retrying`] (the same with the
//! writer's backoff, counted and logged), and the directory helpers [`create_dirs`] and
//! [`sync_dir`].

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::writer::{OutputError, Retry};
use super::TARGET;
pub(crate) use crate::fs::{create_dirs, sync_dir};

/// A sink's view of its output file, so tests can inject failures.
pub(crate) trait SinkFile: Send {
    /// Appends all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Flushes user-space buffers (none for `std::fs::File`).
    fn flush(&mut self) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates (or extends) to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The last byte of a non-empty regular file; `None` when empty or not a regular file.
    fn last_byte(&mut self) -> io::Result<Option<u8>>;
}

impl SinkFile for std::fs::File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(self)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    fn last_byte(&mut self) -> io::Result<Option<u8>> {
        let metadata = self.metadata()?;
        if !metadata.is_file() || metadata.len() == 0 {
            return Ok(None);
        }
        // Reading moves the cursor only: with O_APPEND every write still goes to the end.
        self.seek(SeekFrom::End(-1))?;
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        Ok(Some(byte[0]))
    }
}

/// Appends `batch` at `*end` with [`append_at`], retrying with `retry`'s backoff until it
/// succeeds: each failure is counted in `failed_write` and logged, and a recovery after failures
/// is logged once. `what` names the file in those lines ("the file", "the audit file").
pub(crate) fn append_retrying<F: SinkFile>(
    file: &mut F,
    end: &mut u64,
    batch: &[u8],
    (sink, path, what): (&str, &Path, &str),
    retry: &Retry<'_>,
    failed_write: &metrics::Counter,
) -> Result<(), OutputError> {
    let ((), attempts) = retry.run(
        || append_at(file, end, batch, sink, path),
        |error, attempt, delay| {
            failed_write.increment(1);
            tracing::error!(
                target: TARGET,
                sink = %sink,
                path = %path.display(),
                %error,
                attempt,
                retry_in = ?delay,
                "cannot write to {what}; truncated the partial write, will retry it"
            );
        },
    )?;
    if attempts > 1 {
        tracing::info!(
            target: TARGET,
            sink = %sink,
            path = %path.display(),
            attempts,
            "writing to {what} works again"
        );
    }
    Ok(())
}

/// One attempt at appending `batch` (complete lines) at `*end`, the file length after the last
/// good write. Anything beyond `*end` (a partial earlier attempt) is truncated first; if this
/// write fails, the file is truncated back to `*end` at once (and checked again by the next
/// attempt in case that failed too), so no torn line stays. On success `*end` moves past the
/// batch.
pub(crate) fn append_at<F: SinkFile>(
    file: &mut F,
    end: &mut u64,
    batch: &[u8],
    sink: &str,
    path: &Path,
) -> io::Result<()> {
    let size = file.size()?;
    if size > *end {
        file.set_len(*end)?;
    } else if size < *end {
        tracing::warn!(
            target: TARGET,
            sink = %sink,
            path = %path.display(),
            expected = *end,
            actual = size,
            "the file is shorter than this writer left it (truncated by another process?)"
        );
        *end = size;
    }
    match file.write_all(batch).and_then(|()| file.flush()) {
        Ok(()) => {
            *end += batch.len() as u64;
            Ok(())
        }
        Err(error) => {
            if let Err(truncate_error) = file.set_len(*end) {
                tracing::warn!(
                    target: TARGET,
                    sink = %sink,
                    path = %path.display(),
                    error = %truncate_error,
                    "cannot truncate the partial write yet; will retry before the next write"
                );
            }
            Err(error)
        }
    }
}
