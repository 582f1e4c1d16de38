//! The on-disk record and segment formats: encoding, segment file names, and the scanner that
//! validates a segment record by record (used by recovery, the offline tools and tests).
//!
//! A record is `len u32 LE | crc32c u32 LE | seq u64 LE | payload`, where `len` is the payload
//! length and the CRC32C covers the eight bytes of `seq` followed by the payload. A segment is a
//! plain concatenation of records whose sequence numbers increase by exactly one, starting at
//! the number in the file name (`seg-<first_seq, 20 digits>.log`).

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes of a record header: `len`, `crc`, `seq`.
pub const HEADER_LEN: u64 = 16;

/// The highest sequence number a record may carry (`i64::MAX`; a journal appending a million
/// records a second reaches it after 290,000 years). A record, segment name or cursor above it
/// can only come from a damaged or hand-edited file; keeping every seq at or below it leaves
/// room for `seq + 1` everywhere.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Size on disk of a record carrying `payload_len` bytes.
pub fn record_len(payload_len: usize) -> u64 {
    HEADER_LEN + payload_len as u64
}

/// The checksum stored in a record: CRC32C over `seq` (little endian) and the payload.
pub fn checksum(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Appends the encoded record to `out`. The caller has checked that the payload fits in a u32.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// The first sequence number encoded in a segment file name, `None` for any other name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, sorted by first sequence number. Other entries are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            segments.push((first, entry.path()));
        }
    }
    segments.sort_by_key(|(first, _)| *first);
    Ok(segments)
}

/// Why a scan stopped before the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file ends inside a record header or payload (a torn write).
    Short,
    /// The stored checksum does not match the record.
    BadCrc,
    /// The record's sequence number is above [`MAX_SEQ`].
    SeqOutOfRange {
        /// The sequence number it carries.
        found: u64,
    },
    /// The record's sequence number is not the expected one.
    OutOfSequence {
        /// The sequence number the record should carry.
        expected: u64,
        /// The sequence number it carries.
        found: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Short => f.write_str("short record (torn write)"),
            Problem::BadCrc => f.write_str("checksum mismatch"),
            Problem::SeqOutOfRange { found } => {
                write!(
                    f,
                    "sequence number {found} is above the highest valid one ({MAX_SEQ})"
                )
            }
            Problem::OutOfSequence { expected, found } => {
                write!(f, "out of sequence (expected {expected}, found {found})")
            }
        }
    }
}

/// What scanning one segment found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Length of the valid prefix: where the next record would start.
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Valid records.
    pub records: u64,
    /// Sequence number of the last valid record (meaningless when `records == 0`).
    pub last_seq: u64,
    /// Sparse index of the valid records: `(seq, offset)` about every [`INDEX_STEP`] bytes,
    /// always including the first record.
    pub index: Vec<(u64, u64)>,
    /// Where and why the scan stopped early, if it did.
    pub problem: Option<(u64, Problem)>,
}

/// Distance in bytes between two entries of a segment's sparse index.
pub const INDEX_STEP: u64 = 4096;

/// Adds `(seq, offset)` to `index` when it is the first record or far enough from the last
/// entry.
pub fn maybe_index(index: &mut Vec<(u64, u64)>, seq: u64, offset: u64) {
    match index.last() {
        Some(&(_, last)) if offset.saturating_sub(last) < INDEX_STEP => {}
        _ => index.push((seq, offset)),
    }
}

/// Reads up to `buf.len()` bytes; fewer only at end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One record read from a stream.
pub enum Next {
    /// A record whose checksum matches: its sequence number (the payload is in the buffer).
    Record(u64),
    /// Clean end of the stream at a record boundary.
    End,
    /// The stream ends inside a record.
    Short,
    /// The record's checksum does not match.
    BadCrc,
}

/// Reads the next record from `reader` into `payload`; `remaining` is how many bytes the
/// stream still holds (a length larger than that is a torn record, not an allocation).
pub fn read_record(
    reader: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Next> {
    let mut header = [0u8; HEADER_LEN as usize];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < header.len() {
        return Ok(Next::Short);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&header[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    if u64::from(len) > remaining.saturating_sub(HEADER_LEN) {
        return Ok(Next::Short);
    }
    payload.clear();
    payload.resize(len as usize, 0);
    if read_full(reader, payload)? < payload.len() {
        return Ok(Next::Short);
    }
    if checksum(seq, payload) != crc {
        return Ok(Next::BadCrc);
    }
    Ok(Next::Record(seq))
}

/// Scans the segment at `path` whose first record must be `first_seq`, calling `visit` with
/// every valid record in order. Stops at the first short, corrupt or out-of-sequence record, or
/// at a record whose seq is above [`MAX_SEQ`].
pub fn scan_segment(
    path: &Path,
    first_seq: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> io::Result<Scan> {
    let file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut scan = Scan {
        file_len,
        ..Scan::default()
    };
    let mut payload = Vec::new();
    let mut expected = first_seq;
    loop {
        let offset = scan.valid_len;
        let remaining = file_len.saturating_sub(offset);
        let problem = match read_record(&mut reader, remaining, &mut payload)? {
            Next::End => break,
            Next::Short => Problem::Short,
            Next::BadCrc => Problem::BadCrc,
            Next::Record(seq) if seq > MAX_SEQ => Problem::SeqOutOfRange { found: seq },
            Next::Record(seq) if seq != expected => Problem::OutOfSequence {
                expected,
                found: seq,
            },
            Next::Record(seq) => {
                visit(seq, &payload);
                maybe_index(&mut scan.index, seq, offset);
                scan.valid_len += record_len(payload.len());
                scan.records += 1;
                scan.last_seq = seq;
                expected = seq + 1;
                continue;
            }
        };
        scan.problem = Some((offset, problem));
        break;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(segment_name(42), "seg-00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "seg-42.log",
            "seg-0000000000000000004x.log",
            "seg-00000000000000000042.log.tmp",
            "cursors",
            "seg-99999999999999999999.log",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }

    #[test]
    fn encode_then_read_and_detect_damage() {
        let mut bytes = Vec::new();
        encode(7, b"hello", &mut bytes);
        encode(8, b"", &mut bytes);
        assert_eq!(bytes.len() as u64, record_len(5) + record_len(0));
        assert_eq!(&bytes[..4], &5u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &7u64.to_le_bytes());
        assert_eq!(&bytes[16..21], b"hello");

        let mut payload = Vec::new();
        let mut reader = &bytes[..];
        assert!(matches!(
            read_record(&mut reader, bytes.len() as u64, &mut payload).unwrap(),
            Next::Record(7)
        ));
        assert_eq!(payload, b"hello");
        assert!(matches!(
            read_record(&mut reader, 16, &mut payload).unwrap(),
            Next::Record(8)
        ));
        assert!(matches!(
            read_record(&mut reader, 0, &mut payload).unwrap(),
            Next::End
        ));

        let mut flipped = bytes.clone();
        flipped[18] ^= 0x10;
        assert!(matches!(
            read_record(&mut &flipped[..], flipped.len() as u64, &mut payload).unwrap(),
            Next::BadCrc
        ));
        let torn = &bytes[..20];
        assert!(matches!(
            read_record(&mut &torn[..], torn.len() as u64, &mut payload).unwrap(),
            Next::Short
        ));
        // A zeroed tail (as some filesystems leave after a crash) is not a valid record.
        let zeros = [0u8; 32];
        assert!(matches!(
            read_record(&mut &zeros[..], 32, &mut payload).unwrap(),
            Next::BadCrc
        ));
    }

    /// J3: a valid record carrying seq `u64::MAX` (the reproducer of issue 16) stops the scan
    /// with a problem instead of overflowing `seq + 1`.
    #[test]
    fn a_record_at_the_top_of_the_seq_range_is_a_problem_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        for (first, seqs) in [
            (u64::MAX, vec![u64::MAX]),
            (MAX_SEQ, vec![MAX_SEQ, MAX_SEQ + 1]),
        ] {
            let mut bytes = Vec::new();
            for seq in &seqs {
                encode(*seq, b"{}", &mut bytes);
            }
            let path = dir.path().join(segment_name(first));
            std::fs::write(&path, &bytes).unwrap();
            let mut seen = Vec::new();
            let scan = scan_segment(&path, first, |seq, _| seen.push(seq)).unwrap();
            let bad = *seqs.last().unwrap();
            assert_eq!(seen, seqs[..seqs.len() - 1], "first {first}");
            assert_eq!(
                scan.problem.map(|(_, p)| p),
                Some(Problem::SeqOutOfRange { found: bad })
            );
            assert_eq!(scan.valid_len, record_len(2) * (seqs.len() as u64 - 1));
        }
    }

    #[test]
    fn sparse_index_keeps_first_and_every_step() {
        let mut index = Vec::new();
        for (seq, offset) in [
            (1, 0),
            (2, 100),
            (3, INDEX_STEP - 1),
            (4, INDEX_STEP),
            (5, 5000),
        ] {
            maybe_index(&mut index, seq, offset);
        }
        assert_eq!(index, vec![(1, 0), (4, INDEX_STEP)]);
    }
}
