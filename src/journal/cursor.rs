//! Cursor files: `<dir>/cursors/<sink>.cursor`, each holding the seq its sink has delivered as
//! decimal text and a newline, replaced atomically (write `<sink>.cursor.tmp`, fsync, rename,
//! fsync the directory).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::state::{remove_file, sync_dir};
use super::{JournalError, TARGET};

const SUFFIX: &str = ".cursor";
const TMP_SUFFIX: &str = ".cursor.tmp";

/// The directory of the cursor files.
pub(crate) fn dir(journal: &Path) -> PathBuf {
    journal.join("cursors")
}

/// The cursor file of `sink`.
pub(crate) fn path(journal: &Path, sink: &str) -> PathBuf {
    dir(journal).join(format!("{sink}{SUFFIX}"))
}

/// Refuses names that cannot safely be a file name in the cursors directory.
pub(crate) fn validate_name(journal: &Path, sink: &str) -> Result<(), JournalError> {
    let bad = sink.is_empty()
        || sink.starts_with('.')
        || sink.contains("..")
        || sink.contains(['/', '\\', '\0']);
    if bad {
        return Err(JournalError::SinkName {
            dir: journal.to_path_buf(),
            name: sink.to_owned(),
        });
    }
    Ok(())
}

/// Parses the content of a cursor file.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    text.trim_end_matches('\n')
        .parse::<u64>()
        .map_err(|e| format!("expected a sequence number, found {text:?} ({e})"))
}

/// Every cursor in `journal/cursors`: its seq, or why it is unreadable. With `repair`,
/// leftover temporary files (a crash during a store) are deleted.
pub(crate) fn load_all(
    journal: &Path,
    repair: bool,
) -> Result<BTreeMap<String, Result<u64, String>>, JournalError> {
    let dir = dir(journal);
    let mut cursors = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !repair => return Ok(cursors),
        Err(e) => return Err(JournalError::io("list", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list", &dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            if repair {
                tracing::info!(
                    target: TARGET,
                    path = %entry.path().display(),
                    "removing a cursor file left half-written by a crash"
                );
                remove_file(&entry.path())
                    .map_err(|e| JournalError::io("delete", entry.path(), e))?;
            }
            continue;
        }
        let Some(sink) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        let cursor = match std::fs::read_to_string(entry.path()) {
            Ok(text) => parse(&text),
            Err(e) => Err(format!("cannot read it: {e}")),
        };
        if let Err(reason) = &cursor {
            tracing::error!(
                target: TARGET,
                path = %entry.path().display(),
                %reason,
                "unreadable cursor file; it pins the whole journal until it is fixed or removed"
            );
        }
        cursors.insert(sink.to_owned(), cursor);
    }
    Ok(cursors)
}

/// Atomically replaces the cursor of `sink` with `seq`.
pub(crate) fn store(journal: &Path, sink: &str, seq: u64) -> Result<(), JournalError> {
    let dir = dir(journal);
    let tmp = dir.join(format!("{sink}{TMP_SUFFIX}"));
    let target = path(journal, sink);
    // A failed sync here loses nothing that was promised: the old cursor stays in place, and
    // the next store writes a fresh file.
    crate::fs::replace_file(&target, &tmp, format!("{seq}\n").as_bytes())
        .map_err(|e| JournalError::io(e.step, &e.path, e.source))
}

/// Deletes the cursor files of sinks not in `keep`; returns their names, sorted.
pub(crate) fn remove_others(
    journal: &Path,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, JournalError> {
    let dir = dir(journal);
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| JournalError::io("list", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list", &dir, e))?;
        let name = entry.file_name();
        let Some(sink) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if !keep.contains(sink) {
            remove_file(&entry.path()).map_err(|e| JournalError::io("delete", entry.path(), e))?;
            removed.push(sink.to_owned());
        }
    }
    if !removed.is_empty() {
        sync_dir(&dir).map_err(|e| JournalError::io("fsync", &dir, e))?;
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_path_syntax_are_refused() {
        let dir = Path::new("/j");
        for good in ["audit", "webhook-1", "a.b", "left_chat"] {
            assert!(validate_name(dir, good).is_ok(), "{good}");
        }
        for bad in [
            "", ".", "..", "a/b", "../x", "a..b", ".hidden", "a\\b", "a\0b",
        ] {
            let err = validate_name(dir, bad).expect_err(bad).to_string();
            assert!(err.contains("/j"), "{err}");
        }
    }

    #[test]
    fn parse_accepts_only_a_number() {
        assert_eq!(parse("42\n"), Ok(42));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("").is_err());
        assert!(parse("-1\n").is_err());
        assert!(parse("4 2").is_err());
    }
}
