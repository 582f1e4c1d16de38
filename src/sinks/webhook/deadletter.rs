//! Dead letters: events the webhook sink gave up on, kept in `<dir>/<sink>.jsonl`.
//!
//! One [`DeadLetter`] per line: the event id, when and why delivery failed (the last HTTP status,
//! a reason, the first 512 bytes of the response body), how many attempts were made, and the
//! full event, so [`deadletter_redrive`] can send it again with the same `webhook-id`.
//!
//! Durability and concurrency:
//! - an append is `write` + `fdatasync` (and an fsync of the directory when the file is new)
//!   before the sink reports the batch handled, so the journal cursor never moves past an
//!   event that is neither delivered nor on disk here;
//! - a crash mid-append can leave a torn last line: the next append first ends it with `\n`,
//!   and readers skip (and log) lines that do not parse; nothing ever deletes them;
//! - the running sink (appending) and a redrive (rewriting) may be different processes: both
//!   take an exclusive `flock` on `<sink>.jsonl.lock` around their change, and a redrive
//!   rewrites through a temporary file, `fsync`, `rename` and an fsync of the directory, so
//!   the file is always either the old or the new version and no append is lost.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::event::Event;
use crate::fs::sync_dir;
use crate::sinks::record::Record;
use crate::sinks::SinkError;

use super::config::{validate_sink_name, WebhookSinkConfig};
use super::service::{post_once, Failure, HttpPoster};

/// Tracing target of the dead-letter files.
const TARGET: &str = "chatwatch::sinks::webhook";

/// One event the webhook sink could not deliver, as one JSON line of `<sink>.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sink that gave up (the file's name without `.jsonl`).
    pub sink: String,
    /// The event's `event_id`, sent again as `webhook-id` by a redrive.
    pub event_id: String,
    /// When the sink gave up (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
    /// The HTTP status of the last attempt; `null` when there was no response (connection
    /// error, timeout) or no attempt (endpoint disabled).
    pub status: Option<u16>,
    /// Why, in words: `HTTP 400 Bad Request`, `endpoint disabled (410 Gone)`, `max_age ...`.
    pub reason: String,
    /// The first 512 bytes of the last response body (lossy UTF-8), empty if none.
    pub body_start: String,
    /// How many attempts were made (0 when the endpoint was already disabled).
    pub attempts: u32,
    /// The event record the sink posted (the journal record, as a JSON value: its keys come
    /// out sorted; [`DeadLetter::body`] gives the posted bytes back).
    pub event: Value,
}

impl DeadLetter {
    /// A dead letter for `record` given up by `sink` now.
    pub(crate) fn new(sink: &str, record: &Record, failure: &Failure, attempts: u32) -> Self {
        Self {
            sink: sink.to_owned(),
            event_id: record.id_or_empty().to_owned(),
            failed_at: OffsetDateTime::now_utc(),
            status: failure.status,
            reason: failure.reason.clone(),
            body_start: failure.body_start.clone(),
            attempts,
            event: record_value(record),
        }
    }

    /// The request body a redrive sends: the event re-encoded through [`Event`] (so its bytes
    /// match what the sink sent), or the stored JSON as is if it is not (or no longer) a valid
    /// event.
    pub fn body(&self) -> Vec<u8> {
        match serde_json::from_value::<Event>(self.event.clone()) {
            Ok(event) => serde_json::to_vec(&event),
            Err(_) => serde_json::to_vec(&self.event),
        }
        .unwrap_or_default()
    }
}

/// The event of a dead letter: the journal payload as a JSON value (from its bytes, so nothing
/// is lost), or `Null` for a record that is not JSON at all.
pub(crate) fn record_value(record: &Record) -> Value {
    serde_json::from_slice(record.json()).unwrap_or(Value::Null)
}

/// The dead-letter file of `sink` in `dir`: `<dir>/<sink>.jsonl`.
pub fn dead_letter_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("{sink}.jsonl"))
}

/// The lock file guarding `<sink>.jsonl`.
fn lock_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("{sink}.jsonl.lock"))
}

/// Creates `dir` (mode `0700`) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Takes the exclusive lock of `sink`'s dead-letter file (released when the handle drops).
pub(crate) fn lock(dir: &Path, sink: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path(dir, sink))?;
    // `flock` (not `File::lock`, which needs Rust 1.89); released when `file` is closed.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(io::Error::from)?;
    Ok(file)
}

/// Creates `dir` if needed and takes (and releases) `sink`'s lock once: proves at startup that
/// dead letters can be written there.
pub(crate) fn check_writable(dir: &Path, sink: &str) -> io::Result<()> {
    ensure_dir(dir)?;
    lock(dir, sink).map(drop)
}

/// Appends `letters` to `sink`'s file durably (write, fdatasync; the directory too when the
/// file is new). Blocking: call from a blocking thread.
pub(crate) fn append(dir: &Path, sink: &str, letters: &[DeadLetter]) -> io::Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for letter in letters {
        serde_json::to_writer(&mut buf, letter).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    ensure_dir(dir)?;
    let _lock = lock(dir, sink)?;
    let path = dead_letter_path(dir, sink);
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            tracing::warn!(target: TARGET, sink, path = %path.display(), "dead-letter file ends with a torn line (a crash mid-append?); ending it before appending");
            buf.insert(0, b'\n');
        }
    }
    file.write_all(&buf)?;
    file.sync_data()?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// One line of a dead-letter file: its exact text and what it parsed to.
struct Line {
    text: String,
    letter: Option<DeadLetter>,
}

/// Reads `path` line by line; a missing file is empty.
fn read_lines(path: &Path) -> io::Result<Vec<Line>> {
    let content = match std::fs::read(path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let content = String::from_utf8_lossy(&content);
    Ok(content
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(|line| Line {
            text: line.to_owned(),
            letter: serde_json::from_str(line).ok(),
        })
        .collect())
}

/// The dead letters of `sink` (or of every sink when `None`: every `*.jsonl` in `dir`, by file
/// name), in file order. A missing directory or file has none. Lines that do not parse (a torn
/// line after a crash) are skipped and logged.
pub fn deadletter_list(dir: &Path, sink: Option<&str>) -> Result<Vec<DeadLetter>, SinkError> {
    let sinks = match sink {
        Some(sink) => {
            validate_sink_name(sink)?;
            vec![sink.to_owned()]
        }
        None => list_sinks(dir)?,
    };
    let mut letters = Vec::new();
    for sink in sinks {
        let path = dead_letter_path(dir, &sink);
        let lines = read_lines(&path).map_err(|error| SinkError::Open {
            sink: sink.clone(),
            path: path.clone(),
            error,
        })?;
        for (i, line) in lines.into_iter().enumerate() {
            match line.letter {
                Some(letter) => letters.push(letter),
                None => tracing::warn!(
                    target: TARGET,
                    sink = %sink,
                    path = %path.display(),
                    line = i + 1,
                    "skipping a dead-letter line that does not parse"
                ),
            }
        }
    }
    Ok(letters)
}

/// The sinks that have a dead-letter file in `dir`, sorted.
fn list_sinks(dir: &Path) -> Result<Vec<String>, SinkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(SinkError::Open {
                sink: "*".to_owned(),
                path: dir.to_owned(),
                error,
            })
        }
    };
    let mut sinks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| SinkError::Open {
            sink: "*".to_owned(),
            path: dir.to_owned(),
            error,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(sink) = name.strip_suffix(".jsonl") {
            if validate_sink_name(sink).is_ok() {
                sinks.push(sink.to_owned());
            }
        }
    }
    sinks.sort();
    Ok(sinks)
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Dead letters sent again.
    pub attempted: usize,
    /// Of those, delivered (2xx) and removed from the file.
    pub delivered: usize,
    /// Those that failed again, kept in the file with the new status, reason and attempt count.
    pub failed: Vec<RedriveFailure>,
    /// Dead letters not attempted because the endpoint answered `410 Gone` to an earlier one.
    pub skipped: usize,
    /// Lines that do not parse, left in the file untouched.
    pub unparseable: usize,
    /// Dead letters left in the file afterwards (including any appended meanwhile).
    pub remaining: usize,
}

/// One dead letter a redrive could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveFailure {
    /// The event id.
    pub event_id: String,
    /// The HTTP status, if there was a response.
    pub status: Option<u16>,
    /// Why.
    pub reason: String,
}

/// Sends every dead letter of `sink` in `dir` again, once each and in file order, to the
/// receiver `cfg` describes (its URL, secrets, headers, auth, timeout, TLS and proxy), with the
/// same `webhook-id` and a fresh timestamp and signature. Delivered ones are removed from the
/// file, failed ones stay with their new status; the file is rewritten atomically (temporary
/// file, fsync, rename, directory fsync) under the file's lock, so dead letters the running
/// sink appends meanwhile are kept. A `410 Gone` stops the redrive (the rest stay). The
/// requests run without the lock held, so a running sink is never blocked for long.
pub async fn deadletter_redrive(
    dir: &Path,
    sink: &str,
    cfg: &WebhookSinkConfig,
) -> Result<RedriveReport, SinkError> {
    validate_sink_name(sink)?;
    let mut cfg = cfg.clone();
    cfg.dead_letter_dir = Some(dir.to_owned());
    let poster = HttpPoster::new(sink, &cfg)?;
    let path = dead_letter_path(dir, sink);
    let open_err = |error: io::Error| SinkError::Open {
        sink: sink.to_owned(),
        path: path.clone(),
        error,
    };
    let snapshot = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || read_lines(&path))
            .await
            .map_err(|e| failed(sink, format!("reading dead letters: {e}")))?
            .map_err(open_err)?
    };
    let lines_before = snapshot.len();
    let mut report = RedriveReport::default();
    // Exact line text → what replaces it (`None`: delivered, remove it).
    let mut changes: HashMap<String, Vec<Option<String>>> = HashMap::new();
    let mut gone = false;
    for line in snapshot {
        let Some(mut letter) = line.letter else {
            report.unparseable += 1;
            continue;
        };
        if gone {
            report.skipped += 1;
            continue;
        }
        report.attempted += 1;
        let outcome = post_once(&poster, &letter.event_id, letter.body().into()).await;
        match outcome {
            Ok(()) => {
                report.delivered += 1;
                changes.entry(line.text).or_default().push(None);
            }
            Err(failure) => {
                gone = failure.gone;
                report.failed.push(RedriveFailure {
                    event_id: letter.event_id.clone(),
                    status: failure.status,
                    reason: failure.reason.clone(),
                });
                letter.failed_at = OffsetDateTime::now_utc();
                letter.status = failure.status;
                letter.reason = failure.reason;
                letter.body_start = failure.body_start;
                letter.attempts = letter.attempts.saturating_add(1);
                let text = serde_json::to_string(&letter)
                    .map_err(|e| failed(sink, format!("encoding a dead letter: {e}")))?;
                changes.entry(line.text).or_default().push(Some(text));
            }
        }
    }
    let remaining = if changes.is_empty() {
        // Nothing sent (no file, or only unparseable lines): leave the file alone.
        lines_before
    } else {
        let dir = dir.to_owned();
        let sink_name = sink.to_owned();
        tokio::task::spawn_blocking(move || rewrite(&dir, &sink_name, changes))
            .await
            .map_err(|e| failed(sink, format!("rewriting dead letters: {e}")))?
            .map_err(open_err)?
    };
    report.remaining = remaining;
    tracing::info!(
        target: TARGET,
        sink,
        attempted = report.attempted,
        delivered = report.delivered,
        failed = report.failed.len(),
        skipped = report.skipped,
        remaining = report.remaining,
        "dead-letter redrive finished"
    );
    Ok(report)
}

/// Under the lock: re-reads the file, applies `changes` (each exact line text maps to its
/// replacements, in order; `None` removes one occurrence), and replaces the file atomically.
/// Returns how many lines remain.
fn rewrite(
    dir: &Path,
    sink: &str,
    mut changes: HashMap<String, Vec<Option<String>>>,
) -> io::Result<usize> {
    let _lock = lock(dir, sink)?;
    let path = dead_letter_path(dir, sink);
    let current = read_lines(&path)?;
    let mut out = String::new();
    let mut remaining = 0;
    for line in current {
        let replacement = match changes.get_mut(&line.text) {
            Some(list) if !list.is_empty() => list.remove(0),
            _ => Some(line.text),
        };
        if let Some(text) = replacement {
            out.push_str(&text);
            out.push('\n');
            remaining += 1;
        }
    }
    let tmp = dir.join(format!("{sink}.jsonl.tmp"));
    crate::fs::replace_file(&path, &tmp, out.as_bytes()).map_err(|e| e.source)?;
    Ok(remaining)
}

fn failed(sink: &str, reason: String) -> SinkError {
    SinkError::Failed {
        sink: sink.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(sink: &str, id: &str) -> DeadLetter {
        DeadLetter {
            sink: sink.to_owned(),
            event_id: id.to_owned(),
            failed_at: OffsetDateTime::UNIX_EPOCH,
            status: Some(400),
            reason: "HTTP 400 Bad Request".to_owned(),
            body_start: "nope".to_owned(),
            attempts: 1,
            event: serde_json::json!({"event_id": id}),
        }
    }

    #[test]
    fn append_list_and_torn_tail_repair() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("dl");
        append(&sub, "crm", &[letter("crm", "a"), letter("crm", "b")]).unwrap();
        append(&sub, "other", &[letter("other", "x")]).unwrap();
        // A crash mid-append leaves a torn line.
        let path = dead_letter_path(&sub, "crm");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"sink\":\"crm\",\"ev").unwrap();
        drop(f);
        append(&sub, "crm", &[letter("crm", "c")]).unwrap();
        let ids: Vec<String> = deadletter_list(&sub, Some("crm"))
            .unwrap()
            .into_iter()
            .map(|l| l.event_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let all: Vec<(String, String)> = deadletter_list(&sub, None)
            .unwrap()
            .into_iter()
            .map(|l| (l.sink, l.event_id))
            .collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], ("other".to_owned(), "x".to_owned()));
        assert!(deadletter_list(&sub, Some("none")).unwrap().is_empty());
        assert!(deadletter_list(&dir.path().join("missing"), None)
            .unwrap()
            .is_empty());
        assert!(deadletter_list(&sub, Some("../etc")).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rewrite_applies_changes_keeps_unknown_and_unparseable_lines() {
        let dir = tempfile::tempdir().unwrap();
        append(
            dir.path(),
            "s",
            &[letter("s", "a"), letter("s", "b"), letter("s", "a")],
        )
        .unwrap();
        let path = dead_letter_path(dir.path(), "s");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n").unwrap();
        drop(f);
        let lines = read_lines(&path).unwrap();
        let a = lines[0].text.clone();
        let mut changes = HashMap::new();
        // Remove one of the two identical `a` lines.
        changes.insert(a.clone(), vec![None]);
        let remaining = rewrite(dir.path(), "s", changes).unwrap();
        assert_eq!(remaining, 3);
        let texts: Vec<String> = read_lines(&path)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts[1], a);
        assert_eq!(texts[2], "garbage");
        assert!(!dir.path().join("s.jsonl.tmp").exists());
    }
}
