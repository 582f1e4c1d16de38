//! `verify`: checks an audit chain on disk and names the first line that breaks it.
//!
//! The files of sink `name` in `dir` are read in chain order — rotated files by the first seq in
//! their names (the same as name order while the clock never stepped back), `.gz` ones
//! decompressed on the fly, then the active file — and every line is checked from its raw
//! bytes: its hash is recomputed, its `prev` must be the hash of the line before and its `seq`
//! must be one more. The first failure is classified:
//!
//! | what the line shows | kind |
//! | --- | --- |
//! | not an audit record, or its hash does not match its bytes | [`ProblemKind::Changed`] |
//! | a valid line whose `prev` is not the hash of the line before, with the expected seq, and the next line does not repeat that seq: the line before was edited and re-hashed | [`ProblemKind::Changed`] (reported at the line before) |
//! | the same, but the next line has the same seq: this line was slipped in | [`ProblemKind::Inserted`] |
//! | a seq lower than expected: a seq seen already (a copied line) | [`ProblemKind::Inserted`] |
//! | a seq higher than expected, and the expected seq comes later in the file | [`ProblemKind::Reordered`] |
//! | a seq higher than expected that never comes | [`ProblemKind::Removed`] |
//! | a last line without its newline, or a `.gz` that ends early | [`ProblemKind::Truncated`] |
//! | a file's first line does not continue the previous file | [`ProblemKind::ChainBreakAcrossFiles`] |
//!
//! (A pure reordering always first shows a seq *higher* than expected: every lower one has been
//! seen. So a lower seq can only be a repeat.)
//!
//! Limits: a chain whose oldest records are gone looks like one pruned by retention
//! ([`VerifyReport::first_seq`] says where it starts), and records cut from the end of the
//! active file leave no trace in the files themselves; compare with a `(seq, hash)` kept off
//! the host. Without an HMAC key, someone who can write the files can rebuild a consistent
//! chain.

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::files::{active_path, list_rotated, open_reader};
use super::format::{self, Hash, Hasher, ZERO_HASH};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read (all of them when there is no problem; up to the problem's otherwise).
    pub files: usize,
    /// Lines that verified, before the first problem if any.
    pub lines: u64,
    /// The seq of the first record: 1 for a complete chain, higher when older files were
    /// removed (by retention, or by someone else).
    pub first_seq: Option<u64>,
    /// The seq of the last record that verified.
    pub last_seq: Option<u64>,
    /// The first line that breaks the chain; `None` when the chain is intact.
    pub first_problem: Option<Problem>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_problem {
            Some(problem) => write!(f, "{problem}"),
            None => {
                write!(
                    f,
                    "the chain is intact: {} records in {} files",
                    self.lines, self.files
                )?;
                match (self.first_seq, self.last_seq) {
                    (Some(1), Some(last)) => write!(f, " (seq 1 to {last})"),
                    (Some(first), Some(last)) => write!(
                        f,
                        " (seq {first} to {last}; records before {first} are no longer there)"
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line number in the file, from 1 (in the decompressed content of a `.gz`).
    pub line: u64,
    /// What kind of damage it shows.
    pub kind: ProblemKind,
    /// The specifics (seqs, hashes).
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`, line {}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

/// How a line breaks the chain. See the module documentation for how each is told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line's content does not match its hash (or it is not an audit record at all).
    Changed,
    /// Records are missing before this line.
    Removed,
    /// This line does not belong here: a copy of an earlier line, or a forged one.
    Inserted,
    /// This line comes before a record it should follow.
    Reordered,
    /// The file ends in the middle of a line.
    Truncated,
    /// The file's first line does not continue the previous file.
    ChainBreakAcrossFiles,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Changed => "a line was changed",
            Self::Removed => "lines were removed",
            Self::Inserted => "a line was inserted",
            Self::Reordered => "lines are out of order",
            Self::Truncated => "the file is truncated",
            Self::ChainBreakAcrossFiles => "the chain breaks between files",
        })
    }
}

/// Why [`verify`] could not check the chain at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file or the directory could not be read.
    #[error("cannot read `{}`: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// There is nothing to verify.
    #[error(
        "no audit files of sink `{name}` in `{}` (expected `{name}.jsonl` or \
         `{name}-<YYYYMMDDTHHMMSSZ>-<seq>.jsonl[.gz]`)",
        dir.display()
    )]
    NoFiles {
        /// The directory searched.
        dir: PathBuf,
        /// The sink name.
        name: String,
    },
}

/// Verifies the audit chain of sink `name` in `dir`, with HMAC-SHA256 and `hmac_key` when given
/// (plain SHA-256 otherwise). `Ok` whatever the chain's state: see
/// [`VerifyReport::first_problem`]. See the module documentation.
pub fn verify(
    dir: &Path,
    name: &str,
    hmac_key: Option<&[u8]>,
) -> Result<VerifyReport, VerifyError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |error| VerifyError::Io { path, error }
    };
    let mut sources: Vec<(PathBuf, bool)> = list_rotated(dir, name)
        .map_err(io_error(dir))?
        .iter()
        .map(|rotated| rotated.readable())
        .collect();
    let active = active_path(dir, name);
    if active.exists() {
        sources.push((active, false));
    }
    if sources.is_empty() {
        return Err(VerifyError::NoFiles {
            dir: dir.to_owned(),
            name: name.to_owned(),
        });
    }
    let mut chain = Chain {
        hasher: Hasher::new(hmac_key),
        expected: None,
        last: ZERO_HASH,
        previous_file: None,
        report: VerifyReport {
            files: 0,
            lines: 0,
            first_seq: None,
            last_seq: None,
            first_problem: None,
        },
    };
    for (path, gz) in sources {
        chain.report.files += 1;
        let reader = open_reader(&path, gz).map_err(io_error(&path))?;
        if let Err(problem) = chain.file(&path, gz, reader)? {
            chain.report.first_problem = Some(problem);
            break;
        }
        chain.previous_file = Some(path);
    }
    Ok(chain.report)
}

/// The verifier's state along the chain.
struct Chain {
    hasher: Hasher,
    /// The seq the next line must have; `None` before the first line.
    expected: Option<u64>,
    /// The hash of the last line.
    last: Hash,
    previous_file: Option<PathBuf>,
    report: VerifyReport,
}

impl Chain {
    /// Checks one file. The outer `Err` is an I/O error; the inner one the first problem.
    fn file(
        &mut self,
        path: &Path,
        gz: bool,
        mut reader: Box<dyn BufRead>,
    ) -> Result<Result<(), Problem>, VerifyError> {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return Ok(Ok(())),
                Ok(_) => {}
                Err(error) if gz => {
                    return Ok(Err(Problem {
                        file: path.to_owned(),
                        line: line_no + 1,
                        kind: ProblemKind::Truncated,
                        detail: format!(
                            "the compressed file ends early or is corrupt after line {line_no} \
                             ({error})"
                        ),
                    }))
                }
                Err(error) => {
                    return Err(VerifyError::Io {
                        path: path.to_owned(),
                        error,
                    })
                }
            }
            line_no += 1;
            let Some(line) = buf.strip_suffix(b"\n") else {
                return Ok(Err(Problem {
                    file: path.to_owned(),
                    line: line_no,
                    kind: ProblemKind::Truncated,
                    detail: "the last line is incomplete (no newline): the file was cut short, \
                             or a write was in progress"
                        .to_owned(),
                }));
            };
            if let Err(problem) = self.line(path, line_no, line, &mut *reader) {
                return Ok(Err(problem));
            }
        }
    }

    /// Checks one line (without its newline); `rest` is the rest of the file, read only to
    /// classify a problem.
    fn line(
        &mut self,
        path: &Path,
        line_no: u64,
        line: &[u8],
        rest: &mut dyn BufRead,
    ) -> Result<(), Problem> {
        let problem = |line, kind, detail: String| Problem {
            file: path.to_owned(),
            line,
            kind,
            detail,
        };
        let (record, valid) = format::parse(line, &self.hasher)
            .map_err(|why| problem(line_no, ProblemKind::Changed, format!("the line is {why}")))?;
        if !valid {
            let mut detail = format!(
                "the line (seq {}) does not match its hash: its content was edited",
                record.seq
            );
            if self.report.lines == 0 {
                detail.push_str(
                    ", or the chain was written with a different HMAC key (or with none, or \
                     with one where none was given)",
                );
            }
            return Err(problem(line_no, ProblemKind::Changed, detail));
        }
        let seq = record.seq;
        if seq == u64::MAX {
            // No chain can reach it (and nothing could follow it): only a forged line holds it.
            return Err(problem(
                line_no,
                ProblemKind::Inserted,
                format!(
                    "seq {seq} is the highest possible number, which no audit chain reaches: \
                     this line was forged"
                ),
            ));
        }
        match self.expected {
            None => {
                if seq == 1 && record.prev != ZERO_HASH {
                    return Err(problem(
                        line_no,
                        ProblemKind::Changed,
                        "the first record (seq 1) must have a `prev` of 64 zeros".to_owned(),
                    ));
                }
                self.report.first_seq = Some(seq);
            }
            Some(expected) if seq == expected && record.prev == self.last => {}
            Some(expected) if line_no == 1 => {
                let previous = self
                    .previous_file
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string());
                let detail = if seq == expected {
                    format!(
                        "its first record (seq {seq}) does not chain to the last record of \
                         `{previous}` (prev {} where that record's hash is {})",
                        format::short(&record.prev),
                        format::short(&self.last)
                    )
                } else if seq > expected {
                    format!(
                        "it starts at seq {seq} but `{previous}` ends at seq {}: {} missing \
                         (a rotated file removed?)",
                        expected - 1,
                        missing(expected, seq)
                    )
                } else {
                    format!(
                        "it starts at seq {seq} but `{previous}` already reached seq {}",
                        expected - 1
                    )
                };
                return Err(problem(line_no, ProblemKind::ChainBreakAcrossFiles, detail));
            }
            Some(expected) if seq < expected => {
                return Err(problem(
                    line_no,
                    ProblemKind::Inserted,
                    format!(
                        "seq {seq} appears again after seq {}: a copy of an earlier line was \
                         inserted",
                        expected - 1
                    ),
                ));
            }
            Some(expected) if seq == expected => {
                // Valid, with the right seq, but not chained to the line before.
                let next = lookahead(rest).first().map(|(_, seq)| *seq);
                return Err(if next == Some(seq) {
                    problem(
                        line_no,
                        ProblemKind::Inserted,
                        format!(
                            "it claims seq {seq} but does not chain to the line before, and the \
                             next line has seq {seq} too: this line was slipped in"
                        ),
                    )
                } else {
                    problem(
                        line_no - 1,
                        ProblemKind::Changed,
                        format!(
                            "line {line_no} (seq {seq}) names {} as the hash of its predecessor, \
                             but this line's hash is {}: this line was edited and its hash \
                             recomputed",
                            format::short(&record.prev),
                            format::short(&self.last)
                        ),
                    )
                });
            }
            Some(expected) => {
                // seq > expected: is the expected seq further down (reordered) or gone?
                let later = lookahead(rest)
                    .into_iter()
                    .find(|(_, s)| *s == expected)
                    .map(|(offset, _)| line_no + offset);
                return Err(match later {
                    Some(at) => problem(
                        line_no,
                        ProblemKind::Reordered,
                        format!("seq {seq} comes before seq {expected} (which is on line {at})"),
                    ),
                    None => problem(
                        line_no,
                        ProblemKind::Removed,
                        format!(
                            "seq {seq} follows seq {}: {} missing",
                            expected - 1,
                            missing(expected, seq)
                        ),
                    ),
                });
            }
        }
        // seq < u64::MAX (checked above).
        self.expected = Some(seq + 1);
        self.last = record.hash;
        self.report.lines += 1;
        self.report.last_seq = Some(seq);
        Ok(())
    }
}

/// "seq 5 is" / "seq 5 to 9 (5 records) are".
fn missing(from: u64, to_exclusive: u64) -> String {
    if to_exclusive == from + 1 {
        format!("seq {from} is")
    } else {
        format!(
            "seq {from} to {} ({} records) are",
            to_exclusive - 1,
            to_exclusive - from
        )
    }
}

/// The seqs of the remaining readable lines of a file, with their offsets from the current
/// line (1 = the next line).
fn lookahead(rest: &mut dyn BufRead) -> Vec<(u64, u64)> {
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    let mut offset = 0;
    loop {
        buf.clear();
        match rest.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return seqs,
            Ok(_) => {}
        }
        offset += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Ok(record) = format::parse_fields(line) {
            seqs.push((offset, record.seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One audit line for `event_json` with a correct SHA-256 hash.
    fn line(seq: u64, prev: &Hash, event_json: &str) -> (Vec<u8>, Hash) {
        let mut out = format!(
            "{{\"seq\":{seq},\"prev\":\"{}\",\"event\":{event_json}",
            hex::encode(prev)
        )
        .into_bytes();
        let hash = Hasher::new(None).hash(&out);
        out.extend_from_slice(format!(",\"hash\":\"{}\"}}\n", hex::encode(hash)).as_bytes());
        (out, hash)
    }

    /// A1 (issue 16): a line with seq `u64::MAX` and a correct hash (anyone can build one
    /// without an HMAC key) crashed `audit verify` on `seq + 1`; it is reported instead.
    #[test]
    fn a_line_with_the_highest_seq_is_reported_not_a_crash() {
        for lines in [vec![u64::MAX], vec![1, 2, u64::MAX]] {
            let dir = tempfile::tempdir().unwrap();
            let mut file = Vec::new();
            let mut prev = ZERO_HASH;
            for seq in &lines {
                let (bytes, hash) = line(*seq, &prev, "{}");
                file.extend_from_slice(&bytes);
                prev = hash;
            }
            std::fs::write(dir.path().join("audit.jsonl"), &file).unwrap();
            let report = verify(dir.path(), "audit", None).expect("verify runs");
            let problem = report.first_problem.expect("a problem");
            assert_eq!(problem.kind, ProblemKind::Inserted, "{problem}");
            assert_eq!(problem.line, lines.len() as u64, "{problem}");
            assert!(problem.detail.contains("18446744073709551615"), "{problem}");
            assert_eq!(report.lines, lines.len() as u64 - 1);
        }
    }
}
