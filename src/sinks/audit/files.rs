//! The audit sink's files on disk: names, listing, reading the last record, compression and
//! retention of rotated files (the latter two on a background thread, [`Housekeeper`]).

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use metrics::Counter;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::fs::sync_dir;
use crate::sinks::TARGET;

/// `YYYYMMDDTHHMMSSZ`, UTC.
const STAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// The active file: `<dir>/<name>.jsonl`.
pub(crate) fn active_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.jsonl"))
}

/// A rotated file's name: `<name>-<UTC YYYYMMDDTHHMMSSZ>-<seq>.jsonl`, `seq` being the first
/// record's, zero-padded to 12 digits so names sort like the chain.
pub(crate) fn rotated_name(name: &str, at: OffsetDateTime, first_seq: u64) -> String {
    let stamp = at
        .to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .unwrap_or_else(|_| "00000000T000000Z".to_owned());
    format!("{name}-{stamp}-{first_seq:012}.jsonl")
}

/// One rotated file (plain, compressed, or both while compression finishes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotated {
    /// The path without `.gz`: `<dir>/<name>-<stamp>-<seq>.jsonl`.
    pub(crate) plain: PathBuf,
    /// When it was rotated (from its name).
    pub(crate) at: OffsetDateTime,
    /// Its first record's seq (from its name).
    pub(crate) first_seq: u64,
    /// Whether the plain file exists.
    pub(crate) has_plain: bool,
    /// Whether `<plain>.gz` exists (complete: it is renamed into place only once synced).
    pub(crate) has_gz: bool,
}

impl Rotated {
    /// `<plain>.gz`.
    pub(crate) fn gz(&self) -> PathBuf {
        gz_path(&self.plain)
    }

    /// The file to read: the plain one while it exists (same content), else the `.gz`.
    pub(crate) fn readable(&self) -> (PathBuf, bool) {
        if self.has_plain {
            (self.plain.clone(), false)
        } else {
            (self.gz(), true)
        }
    }
}

fn gz_path(plain: &Path) -> PathBuf {
    let mut s = plain.as_os_str().to_owned();
    s.push(".gz");
    PathBuf::from(s)
}

fn tmp_path(plain: &Path) -> PathBuf {
    let mut s = plain.as_os_str().to_owned();
    s.push(".gz.tmp");
    PathBuf::from(s)
}

/// Parses a rotated file name of sink `name`: (rotation time, first seq, compressed).
fn parse_rotated(name: &str, file_name: &str) -> Option<(OffsetDateTime, u64, bool)> {
    let rest = file_name.strip_prefix(name)?.strip_prefix('-')?;
    let (rest, gz) = match rest.strip_suffix(".jsonl.gz") {
        Some(rest) => (rest, true),
        None => (rest.strip_suffix(".jsonl")?, false),
    };
    let (stamp, seq) = rest.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = PrimitiveDateTime::parse(stamp, STAMP).ok()?.assume_utc();
    Some((at, seq.parse().ok()?, gz))
}

/// The rotated files of sink `name` in `dir`, oldest first (by first seq, then time).
pub(crate) fn list_rotated(dir: &Path, name: &str) -> io::Result<Vec<Rotated>> {
    let mut found: Vec<Rotated> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some((at, first_seq, gz)) = parse_rotated(name, &file_name) else {
            continue;
        };
        let plain_name = file_name.strip_suffix(".gz").unwrap_or(&file_name);
        let plain = dir.join(plain_name);
        match found.iter_mut().find(|r| r.plain == plain) {
            Some(r) if gz => r.has_gz = true,
            Some(r) => r.has_plain = true,
            None => found.push(Rotated {
                plain,
                at,
                first_seq,
                has_plain: !gz,
                has_gz: gz,
            }),
        }
    }
    found.sort_by(|a, b| (a.first_seq, a.at, &a.plain).cmp(&(b.first_seq, b.at, &b.plain)));
    Ok(found)
}

/// Left-over `.gz.tmp` files of sink `name` (an interrupted compression).
fn stale_tmps(dir: &Path, name: &str) -> io::Result<Vec<PathBuf>> {
    let mut tmps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(file_name) = entry.file_name().to_str() {
            if let Some(plain) = file_name.strip_suffix(".gz.tmp") {
                if parse_rotated(name, plain).is_some() {
                    tmps.push(entry.path());
                }
            }
        }
    }
    Ok(tmps)
}

/// Opens a file for reading, transparently decompressing a `.gz`.
pub(crate) fn open_reader(path: &Path, gz: bool) -> io::Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path)?;
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            BufReader::new(file),
        )))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// The last complete line (without `\n`) of a plain file of length `len`, reading backwards;
/// `None` when it holds no complete line.
pub(crate) fn last_line(file: &mut std::fs::File, len: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(end) = last_newline(file, len)? else {
        return Ok(None);
    };
    // The line ends at `end` (the newline); find where it starts.
    let start = match last_newline(file, end)? {
        Some(previous) => previous + 1,
        None => 0,
    };
    let mut line = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Some(line))
}

/// The offset of the last `\n` before `before`, reading backwards in chunks.
pub(crate) fn last_newline(file: &mut std::fs::File, before: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = before;
    let mut buf = vec![0; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The first line (without `\n`) of a plain file, if complete.
pub(crate) fn first_line(file: &mut std::fs::File) -> io::Result<Option<Vec<u8>>> {
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(&mut *file).read_until(b'\n', &mut line)?;
    Ok(line.strip_suffix(b"\n").map(<[u8]>::to_vec))
}

/// The last complete line of a rotated file (streaming through a `.gz`).
pub(crate) fn last_line_of(rotated: &Rotated) -> io::Result<Option<Vec<u8>>> {
    let (path, gz) = rotated.readable();
    if !gz {
        let mut file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        return last_line(&mut file, len);
    }
    let mut reader = open_reader(&path, true)?;
    let mut last = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(last);
        }
        if let Some(complete) = line.strip_suffix(b"\n") {
            last = Some(complete.to_vec());
        }
    }
}

/// Compresses `plain` to `<plain>.gz`: writes `<plain>.gz.tmp`, syncs it, renames it into place,
/// syncs the directory, and only then removes `plain` (and syncs the directory again).
pub(crate) fn compress(plain: &Path) -> io::Result<()> {
    let dir = plain.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(plain);
    let mut source = std::fs::File::open(plain)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let out = options.open(&tmp)?;
    // The compressed file is readable by whom the plain one was (the sink's `mode`).
    out.set_permissions(source.metadata()?.permissions())?;
    let mut encoder = flate2::write::GzEncoder::new(
        io::BufWriter::with_capacity(256 * 1024, out),
        flate2::Compression::default(),
    );
    io::copy(&mut source, &mut encoder)?;
    let mut buffered = encoder.finish()?;
    buffered.flush()?;
    let out = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, gz_path(plain))?;
    sync_dir(dir)?;
    std::fs::remove_file(plain)?;
    sync_dir(dir)
}

/// Which rotated files retention removes: all but the newest `keep_files`, and those rotated
/// more than `keep_age` before `now`. `rotated` is oldest first.
pub(crate) fn expired(
    rotated: &[Rotated],
    keep_files: Option<usize>,
    keep_age: Option<Duration>,
    now: OffsetDateTime,
) -> Vec<Rotated> {
    let by_count = keep_files.map_or(0, |keep| rotated.len().saturating_sub(keep));
    rotated
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < by_count || keep_age.is_some_and(|age| now - r.at > age))
        .map(|(_, r)| r.clone())
        .collect()
}

/// What the housekeeping thread does.
#[derive(Debug, Clone)]
pub(crate) struct HousekeepingSettings {
    pub(crate) sink: String,
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    pub(crate) compress: bool,
    pub(crate) keep_files: Option<usize>,
    pub(crate) keep_age: Option<Duration>,
    pub(crate) failed_compress: Counter,
    pub(crate) failed_retention: Counter,
}

/// A background thread that compresses closed files and applies retention. Each kick runs one
/// full pass over the directory, so an interrupted pass (a crash) is finished by the next.
#[derive(Debug)]
pub(crate) struct Housekeeper {
    tx: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Housekeeper {
    /// Starts the thread; it runs one pass at once.
    pub(crate) fn start(settings: HousekeepingSettings) -> io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<()>();
        let thread_name: String = format!("audit-{}", settings.sink)
            .chars()
            .filter(|c| *c != '\0')
            .take(15)
            .collect();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                pass(&settings);
                while rx.recv().is_ok() {
                    // Coalesce kicks that queued up meanwhile: one pass covers them all.
                    while rx.try_recv().is_ok() {}
                    pass(&settings);
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A housekeeper without a thread (a placeholder until [`Housekeeper::start`]).
    pub(crate) fn idle() -> Self {
        Self {
            tx: None,
            thread: None,
        }
    }

    /// Asks for a pass (after a rotation).
    pub(crate) fn kick(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Lets the thread finish its queued passes and waits for it.
    pub(crate) fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One housekeeping pass: remove stale temporary files, compress closed plain files, apply
/// retention. Failures are logged and counted; the next pass tries again.
fn pass(s: &HousekeepingSettings) {
    if s.compress {
        compress_pass(s);
    }
    if s.keep_files.is_some() || s.keep_age.is_some() {
        retention_pass(s);
    }
}

fn compress_pass(s: &HousekeepingSettings) {
    let result = (|| -> io::Result<()> {
        for tmp in stale_tmps(&s.dir, &s.name)? {
            tracing::warn!(
                target: TARGET,
                sink = %s.sink,
                path = %tmp.display(),
                "removing an incomplete compressed file (compression was interrupted)"
            );
            std::fs::remove_file(&tmp)?;
        }
        for rotated in list_rotated(&s.dir, &s.name)? {
            if !rotated.has_plain {
                continue;
            }
            if rotated.has_gz {
                // A crash after the .gz was complete and in place, before the plain one was
                // removed.
                std::fs::remove_file(&rotated.plain)?;
                sync_dir(&s.dir)?;
                continue;
            }
            compress(&rotated.plain).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("compressing `{}`: {error}", rotated.plain.display()),
                )
            })?;
            tracing::debug!(
                target: TARGET,
                sink = %s.sink,
                path = %rotated.plain.display(),
                "compressed a rotated audit file"
            );
        }
        Ok(())
    })();
    if let Err(error) = result {
        s.failed_compress.increment(1);
        tracing::error!(
            target: TARGET,
            sink = %s.sink,
            dir = %s.dir.display(),
            %error,
            "cannot compress rotated audit files; will try again after the next rotation"
        );
    }
}

fn retention_pass(s: &HousekeepingSettings) {
    let result = (|| -> io::Result<()> {
        let rotated = list_rotated(&s.dir, &s.name)?;
        let now = OffsetDateTime::from(SystemTime::now());
        for old in expired(&rotated, s.keep_files, s.keep_age, now) {
            for (exists, path) in [(old.has_gz, old.gz()), (old.has_plain, old.plain.clone())] {
                if exists {
                    std::fs::remove_file(&path)?;
                    tracing::info!(
                        target: TARGET,
                        sink = %s.sink,
                        path = %path.display(),
                        "removed a rotated audit file (retention)"
                    );
                }
            }
        }
        sync_dir(&s.dir)
    })();
    if let Err(error) = result {
        s.failed_retention.increment(1);
        tracing::error!(
            target: TARGET,
            sink = %s.sink,
            dir = %s.dir.display(),
            %error,
            "cannot apply retention to rotated audit files"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_round_trip_and_foreign_names_are_ignored() {
        let at = time::macros::datetime!(2026-11-03 04:05:06 UTC);
        let name = rotated_name("audit", at, 42);
        assert_eq!(name, "audit-20261103T040506Z-000000000042.jsonl");
        assert_eq!(parse_rotated("audit", &name), Some((at, 42, false)));
        assert_eq!(
            parse_rotated("audit", &format!("{name}.gz")),
            Some((at, 42, true))
        );
        for foreign in [
            "audit.jsonl",
            "audit-x-20261103T040506Z-000000000042.jsonl",
            "audit-20261103T040506Z-.jsonl",
            "audit-20261103T040506Z-42.jsonl.gz.tmp",
            "audit-2026-11-03-42.jsonl",
            "other-20261103T040506Z-000000000042.jsonl",
        ] {
            assert_eq!(parse_rotated("audit", foreign), None, "{foreign}");
        }
        // The sink `audit-x` does not see `audit`'s files.
        assert_eq!(parse_rotated("audit-x", &name), None);
    }

    #[test]
    fn retention_by_count_and_by_age() {
        let day = Duration::from_secs(86_400);
        let now = time::macros::datetime!(2026-11-10 00:00:00 UTC);
        let rotated: Vec<Rotated> = (0..5)
            .map(|i| Rotated {
                plain: PathBuf::from(format!("f{i}")),
                at: now - day * (5 - i),
                first_seq: u64::from(i) * 10 + 1,
                has_plain: true,
                has_gz: false,
            })
            .collect();
        let names = |v: Vec<Rotated>| -> Vec<String> {
            v.into_iter()
                .map(|r| r.plain.display().to_string())
                .collect()
        };
        assert_eq!(
            names(expired(&rotated, Some(2), None, now)),
            ["f0", "f1", "f2"]
        );
        assert_eq!(
            names(expired(&rotated, Some(9), None, now)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(expired(&rotated, None, Some(day * 3 + day / 2), now)),
            ["f0", "f1"]
        );
        assert_eq!(
            names(expired(&rotated, Some(4), Some(day * 4 + day / 2), now)),
            ["f0"]
        );
        assert!(expired(&rotated, None, None, now).is_empty());
    }
}
