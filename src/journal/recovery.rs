//! Opening a journal directory: creating it, scanning every segment, truncating a torn tail of
//! the last segment, reporting corruption in earlier ones, and loading the cursors. See the
//! module documentation of [`super`] for the rules.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;

use super::format::{self, Problem, MAX_SEQ};
use super::state::{create_dirs, sync_dir, Metrics, Segment, State};
use super::{cursor, JournalConfig, JournalError, RecoveryReport, Repair, REPAIRS, TARGET};

/// A recovered journal, ready for the writer.
pub(crate) struct Opened {
    pub report: RecoveryReport,
    pub state: State,
    /// The last segment, open for appending.
    pub active: File,
    /// The last valid record: the initial head.
    pub head: u64,
    /// `LOCK`, locked exclusively for as long as this journal is open.
    pub lock: File,
}

/// The lock file's name inside the journal directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Creates the directory if needed and recovers it.
pub(crate) fn open(cfg: &JournalConfig, metrics: &Metrics) -> Result<Opened, JournalError> {
    let dir = &cfg.dir;
    if !dir.is_dir() {
        create_dirs(dir).map_err(|e| JournalError::io("create the directory", dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| JournalError::io("fsync", parent, e))?;
        }
    }
    // One writer per directory: a second daemon on the same journal would interleave records.
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| JournalError::io("open", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(JournalError::Locked { dir: dir.clone() });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(JournalError::io("lock", &lock_path, e));
        }
    }
    let cursors_dir = cursor::dir(dir);
    if !cursors_dir.is_dir() {
        create_dirs(&cursors_dir)
            .map_err(|e| JournalError::io("create the directory", &cursors_dir, e))?;
        sync_dir(dir).map_err(|e| JournalError::io("fsync", dir, e))?;
    }
    let mut cursors = cursor::load_all(dir, true)?;

    let mut files = format::list_segments(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let mut report = RecoveryReport {
        segments_scanned: files.len(),
        ..RecoveryReport::default()
    };
    // A segment named above the seq range can hold no valid record (the scanner refuses every
    // seq above MAX_SEQ), and appending after it would overflow: set it aside, as evidence.
    let in_range = files.partition_point(|(first, _)| *first <= MAX_SEQ);
    for (first_seq, path) in files.split_off(in_range) {
        set_aside(&path, first_seq, &mut report)?;
    }
    let mut segments = VecDeque::with_capacity(files.len());
    let mut last_good = 0u64;
    for (i, (first_seq, path)) in files.iter().enumerate() {
        let first_seq = *first_seq;
        if first_seq == 0 || first_seq <= last_good {
            return Err(JournalError::Inconsistent {
                path: path.clone(),
                reason: format!(
                    "its first seq {first_seq} is not after the previous segment's last record \
                     {last_good}"
                ),
            });
        }
        let scan = format::scan_segment(path, first_seq, |_, _| {})
            .map_err(|e| JournalError::io("read", path, e))?;
        let is_last = i + 1 == files.len();
        let mut disk_bytes = scan.file_len;
        if let Some((offset, problem)) = &scan.problem {
            if is_last {
                truncate_tail(path, scan.valid_len, offset, problem, scan.file_len)?;
                let cut = scan.file_len.saturating_sub(scan.valid_len);
                metrics.truncated_bytes.increment(cut);
                report.truncated_bytes += cut;
                disk_bytes = scan.valid_len;
                report.repairs.push(Repair {
                    path: path.clone(),
                    offset: *offset,
                    problem: problem.to_string(),
                    truncated_bytes: cut,
                    corrupt_records: 0,
                });
            } else {
                let expected = if scan.records > 0 {
                    // The scanner only accepts seqs up to MAX_SEQ: no overflow.
                    scan.last_seq.saturating_add(1)
                } else {
                    first_seq
                };
                let lost = files[i + 1].0.saturating_sub(expected).max(1);
                tracing::error!(
                    target: TARGET,
                    path = %path.display(),
                    offset,
                    %problem,
                    lost_records = lost,
                    "corrupt record in the middle of the journal; the rest of this segment is \
                     skipped and its records are lost"
                );
                metrics.corrupt_records.increment(lost);
                report.corrupt_records += lost;
                report.repairs.push(Repair {
                    path: path.clone(),
                    offset: *offset,
                    problem: problem.to_string(),
                    truncated_bytes: 0,
                    corrupt_records: lost,
                });
            }
        }
        if scan.records > 0 {
            if report.records == 0 {
                report.first_seq = first_seq;
            }
            report.records += scan.records;
            last_good = scan.last_seq;
        }
        segments.push_back(Segment {
            first_seq,
            path: path.clone(),
            records: scan.records,
            last_seq: if scan.records > 0 {
                scan.last_seq
            } else {
                first_seq - 1
            },
            len: scan.valid_len,
            disk_bytes,
            index: scan.index,
        });
    }
    report.last_seq = last_good;

    // The next seq: after the last good record, never below a segment's name (seqs up to it
    // were issued) nor at or below a cursor (a sink that saw a record lost in the crash must
    // not skip the new record that would reuse its seq).
    // Every seq here is at most MAX_SEQ (segments above it were set aside, records above it
    // refused), so `+ 1` cannot overflow.
    let mut next_seq = last_good + 1;
    if let Some(last) = segments.back() {
        next_seq = next_seq.max(last.first_seq);
    }
    repair_out_of_range_cursors(dir, &mut cursors, next_seq - 1, &mut report)?;
    let max_cursor = cursors
        .iter()
        .filter_map(|(sink, c)| c.as_ref().ok().map(|seq| (*seq, sink)))
        .max();
    if let Some((max_cursor, sink)) = max_cursor.filter(|(seq, _)| *seq >= next_seq) {
        let path = cursor::path(dir, sink);
        tracing::warn!(
            target: TARGET,
            path = %path.display(),
            last_record = last_good,
            cursor = max_cursor,
            "a sink's cursor is past the last record on disk (records lost in a crash?); new \
             records continue after the cursor"
        );
        metrics::counter!(REPAIRS, "cause" => "cursor_ahead").increment(1);
        // At most MAX_SEQ + 1: the journal is then exhausted, and appends say so.
        next_seq = max_cursor + 1;
    }
    if next_seq > MAX_SEQ {
        tracing::error!(
            target: TARGET,
            dir = %dir.display(),
            next_seq,
            "the journal's sequence numbers are exhausted (a cursor file or segment at the top \
             of the range); every append will fail until the journal directory is moved aside"
        );
    }

    if segments.is_empty() {
        let path = dir.join(format::segment_name(next_seq));
        super::state::private_file_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io("create", &path, e))?;
        sync_dir(dir).map_err(|e| JournalError::io("fsync", dir, e))?;
        segments.push_back(Segment {
            first_seq: next_seq,
            path,
            records: 0,
            last_seq: next_seq - 1,
            len: 0,
            disk_bytes: 0,
            index: Vec::new(),
        });
    }
    let Some(last) = segments.back() else {
        return Err(JournalError::Inconsistent {
            path: dir.clone(),
            reason: "no segment after recovery".into(),
        });
    };
    let active = super::state::private_file_options()
        .read(true)
        .append(true)
        .open(&last.path)
        .map_err(|e| JournalError::io("open", &last.path, e))?;
    // What recovery found is what sinks will see: make it durable whatever the policy.
    active
        .sync_data()
        .map_err(|e| JournalError::io("fsync", &last.path, e))?;

    let total_bytes = segments.iter().map(|s| s.disk_bytes).sum();
    metrics.bytes.set(total_bytes as f64);
    if report.records > 0 || !report.repairs.is_empty() {
        tracing::info!(
            target: TARGET,
            dir = %dir.display(),
            segments = segments.len(),
            records = report.records,
            first_seq = report.first_seq,
            last_seq = report.last_seq,
            truncated_bytes = report.truncated_bytes,
            corrupt_records = report.corrupt_records,
            "journal recovered"
        );
    }
    Ok(Opened {
        lock,
        report,
        state: State {
            segments,
            next_seq,
            total_bytes,
            cursors,
            retained: None,
            poisoned: None,
            writing_from: None,
        },
        active,
        head: last_good,
    })
}

/// Renames a segment whose name is above [`MAX_SEQ`] to `<name>.out-of-range` (which recovery
/// ignores), logs it and counts it.
fn set_aside(path: &Path, first_seq: u64, report: &mut RecoveryReport) -> Result<(), JournalError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".out-of-range");
    let aside = std::path::PathBuf::from(aside);
    tracing::error!(
        target: TARGET,
        path = %path.display(),
        first_seq,
        max_seq = MAX_SEQ,
        moved_to = %aside.display(),
        "a journal segment is named above the highest valid sequence number (a damaged or \
         hand-edited file?); it cannot hold a valid record and is set aside"
    );
    std::fs::rename(path, &aside).map_err(|e| JournalError::io("rename", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(|e| JournalError::io("fsync", dir, e))?;
    }
    metrics::counter!(REPAIRS, "cause" => "segment_out_of_range").increment(1);
    report.repairs.push(Repair {
        path: path.to_owned(),
        offset: 0,
        problem: format!("segment named seq {first_seq}, above the highest valid seq {MAX_SEQ}"),
        truncated_bytes: 0,
        corrupt_records: 0,
    });
    Ok(())
}

/// Rewrites every cursor above [`MAX_SEQ`] (no record can carry such a seq, and continuing
/// after it would overflow) to `issued`, the last seq the journal has issued: the sink claimed
/// to have delivered everything, and that is everything there is.
fn repair_out_of_range_cursors(
    dir: &Path,
    cursors: &mut std::collections::BTreeMap<String, Result<u64, String>>,
    issued: u64,
    report: &mut RecoveryReport,
) -> Result<(), JournalError> {
    for (sink, value) in cursors.iter_mut() {
        let Ok(seq) = *value else { continue };
        if seq <= MAX_SEQ {
            continue;
        }
        let path = cursor::path(dir, sink);
        tracing::warn!(
            target: TARGET,
            path = %path.display(),
            cursor = seq,
            max_seq = MAX_SEQ,
            reset_to = issued,
            "a cursor file holds a seq above the highest valid one (a damaged or hand-edited \
             file?); it is reset to the last seq the journal issued"
        );
        cursor::store(dir, sink, issued)?;
        *value = Ok(issued);
        metrics::counter!(REPAIRS, "cause" => "cursor_out_of_range").increment(1);
        report.repairs.push(Repair {
            path,
            offset: 0,
            problem: format!(
                "cursor {seq} above the highest valid seq {MAX_SEQ}, reset to {issued}"
            ),
            truncated_bytes: 0,
            corrupt_records: 0,
        });
    }
    Ok(())
}

/// Cuts the last segment at `valid_len` and fsyncs it.
fn truncate_tail(
    path: &Path,
    valid_len: u64,
    offset: &u64,
    problem: &Problem,
    file_len: u64,
) -> Result<(), JournalError> {
    tracing::warn!(
        target: TARGET,
        path = %path.display(),
        offset,
        %problem,
        truncated_bytes = file_len.saturating_sub(valid_len),
        "torn or corrupt tail in the last journal segment (a crash during a write?); truncating it"
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io("open", path, e))?;
    file.set_len(valid_len)
        .map_err(|e| JournalError::io("truncate", path, e))?;
    file.sync_all()
        .map_err(|e| JournalError::io("fsync", path, e))
}
