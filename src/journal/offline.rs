//! Read-only views of a journal directory for the CLI (`chatwatch journal status` and
//! `chatwatch journal tail`), safe while the daemon writes to it: nothing is created, repaired
//! or locked. A record the daemon is writing at that moment is simply not complete yet and is
//! left out.

use std::collections::VecDeque;
use std::path::Path;

use super::format::{list_segments, scan_segment};
use super::{cursor, sink_status, JournalError, JournalStatus};

/// The journal in `dir` as it is on disk: positions, size and every cursor file. `head` is the
/// last complete record on disk.
pub fn status_offline(dir: &Path) -> Result<JournalStatus, JournalError> {
    std::fs::metadata(dir).map_err(|e| JournalError::io("open the journal directory", dir, e))?;
    let segments = list_segments(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let mut bytes = 0;
    for (_, path) in &segments {
        match std::fs::metadata(path) {
            Ok(metadata) => bytes += metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("stat", path, e)),
        }
    }
    let mut last_seq = 0;
    for (first, path) in segments.iter().rev() {
        let scan = match scan_segment(path, *first, |_, _| {}) {
            Ok(scan) => scan,
            // Deleted by the daemon's garbage collection meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(JournalError::io("read", path, e)),
        };
        if scan.records > 0 {
            last_seq = scan.last_seq;
            break;
        }
    }
    let first_seq = match segments.first() {
        Some((first, _)) if *first <= last_seq => *first,
        _ => last_seq + 1,
    };
    let sinks = cursor::load_all(dir, false)?
        .into_iter()
        .map(|(name, cursor)| sink_status(name, Some(cursor), last_seq))
        .collect();
    Ok(JournalStatus {
        dir: dir.to_path_buf(),
        first_seq,
        last_seq,
        head: last_seq,
        bytes,
        max_bytes: None,
        segments: segments.len(),
        sinks,
    })
}

/// The last `n` complete records in `dir`, oldest first.
pub fn tail_offline(dir: &Path, n: usize) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
    std::fs::metadata(dir).map_err(|e| JournalError::io("open the journal directory", dir, e))?;
    let segments = list_segments(dir).map_err(|e| JournalError::io("list", dir, e))?;
    let mut tail: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    for (first, path) in segments.iter().rev() {
        if tail.len() >= n {
            break;
        }
        let wanted = n - tail.len();
        let mut last: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(wanted.min(1024));
        let scanned = scan_segment(path, *first, |seq, payload| {
            if last.len() == wanted {
                last.pop_front();
            }
            last.push_back((seq, payload.to_vec()));
        });
        match scanned {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(JournalError::io("read", path, e)),
        }
        while let Some(record) = last.pop_back() {
            tail.push_front(record);
        }
    }
    Ok(tail.into())
}
