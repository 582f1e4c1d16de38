//! File durability helpers shared by the journal and the file-backed sinks (file, audit, the
//! webhook's dead letters), and the one [`FsyncPolicy`] they are all configured with.
//!
//! What a crash may lose is decided here, in one place: a directory is fsynced after an entry in
//! it is created, renamed or removed ([`sync_dir`]); a file is replaced atomically by writing a
//! temporary file, syncing it, renaming it over the old one and syncing the directory
//! ([`replace_file`]), so a reader finds either the old content or the new one, never a mix;
//! directories are created `0750` and private files `0600`. The secret-file reader
//! ([`read_secret_text`], [`read_secret_bytes`]) applies the one convention for secrets kept in
//! files (one trailing line break removed, empty refused) and never puts the content in an error.
//! Nothing here knows who calls it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// When a writer of durable data (the journal, the `file` and `audit` sinks) calls
/// `fdatasync`. Configured as `fsync = "always" | "interval" | "never"`, with `fsync_interval`
/// beside it; the journal's and each sink's module documentation say what is acknowledged when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every group of writes (a group of journal appends, a sink's batch), before they are
    /// acknowledged: what was acknowledged survives a power loss. Writes waiting together share
    /// one fsync. Safest, slowest.
    Always,
    /// Within `fsync_interval` of a write, also while idle (group commit). The journal
    /// acknowledges appends once written and shows sinks only synced records; the file sinks
    /// count a batch as delivered once written. A crash of the machine loses at most about one
    /// interval; a crash of the process alone loses nothing.
    #[default]
    Interval,
    /// Never, except at shutdown: the kernel decides. Not for audit files.
    Never,
}

/// fsyncs a directory so entries created, renamed or removed in it survive a crash (a no-op
/// where directories cannot be opened, i.e. not on unix).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and its missing parents (mode `0750` on unix).
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o750);
    }
    builder.create(dir)
}

/// Options for creating a private file (mode `0600` on unix); add the access mode.
pub fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Which step of [`replace_file`] failed, on which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {}: {source}", path.display())]
pub struct ReplaceError {
    /// The step: `create`, `write`, `fsync` (the temporary file or the directory) or
    /// `rename into` (the target).
    pub step: &'static str,
    /// The file or directory the step failed on.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Atomically replaces `target` with `contents`: writes them to `tmp` (created `0600`,
/// truncated; it must be in the same directory as `target`), fsyncs it, renames it over
/// `target` and fsyncs the directory. A crash at any point leaves either the old content or the
/// new one at `target`; a failure before the rename leaves the old one (and perhaps `tmp`, which
/// the next replace truncates).
pub fn replace_file(target: &Path, tmp: &Path, contents: &[u8]) -> Result<(), ReplaceError> {
    let failed = |step, path: &Path| {
        let path = path.to_owned();
        move |source| ReplaceError { step, path, source }
    };
    let mut file = private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(failed("create", tmp))?;
    file.write_all(contents).map_err(failed("write", tmp))?;
    file.sync_all().map_err(failed("fsync", tmp))?;
    drop(file);
    std::fs::rename(tmp, target).map_err(failed("rename into", target))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    sync_dir(dir).map_err(failed("fsync", dir))
}

/// Why a secret file gave no secret. Neither variant carries any of the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read (or, for text, was not UTF-8).
    #[error("{0}")]
    Read(#[source] io::Error),
    /// The file holds nothing but an optional line break.
    #[error("the file is empty")]
    Empty,
}

/// Reads a secret kept in a text file: its content less one trailing `\n` or `\r\n`; empty is
/// refused.
pub fn read_secret_text(path: &Path) -> Result<String, SecretFileError> {
    let mut text = std::fs::read_to_string(path).map_err(SecretFileError::Read)?;
    let keep = trimmed_len(text.as_bytes());
    text.truncate(keep);
    if text.is_empty() {
        return Err(SecretFileError::Empty);
    }
    Ok(text)
}

/// Reads a secret kept in a file as raw bytes (an HMAC key): the bytes less one trailing `\n` or
/// `\r\n`; empty is refused.
pub fn read_secret_bytes(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let mut bytes = std::fs::read(path).map_err(SecretFileError::Read)?;
    let keep = trimmed_len(&bytes);
    bytes.truncate(keep);
    if bytes.is_empty() {
        return Err(SecretFileError::Empty);
    }
    Ok(bytes)
}

/// The length of `bytes` without one trailing `\n` or `\r\n`.
fn trimmed_len(bytes: &[u8]) -> usize {
    match bytes {
        [.., b'\r', b'\n'] => bytes.len() - 2,
        [.., b'\n'] => bytes.len() - 1,
        _ => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_keeps_its_config_spelling_and_default() {
        for (text, policy) in [
            ("always", FsyncPolicy::Always),
            ("interval", FsyncPolicy::Interval),
            ("never", FsyncPolicy::Never),
        ] {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::from_str::<FsyncPolicy>(&json).unwrap(), policy);
            assert_eq!(serde_json::to_string(&policy).unwrap(), json);
        }
        assert!(serde_json::from_str::<FsyncPolicy>("\"Always\"").is_err());
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::Interval);
    }

    #[test]
    fn replace_file_swaps_the_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cursor");
        let tmp = dir.path().join("cursor.tmp");
        replace_file(&target, &tmp, b"1\n").unwrap();
        replace_file(&target, &tmp, b"22\n").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"22\n");
        assert!(!tmp.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = dir.path().join("no/such/dir/file");
        let err = replace_file(&missing, &dir.path().join("no/such/tmp"), b"x").unwrap_err();
        assert_eq!(err.step, "create");
        assert_eq!(std::fs::read(&target).unwrap(), b"22\n", "old content kept");
    }

    #[test]
    fn secret_files_lose_one_line_break_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let cases: [(&[u8], &str); 4] = [
            (b"s3cret\n", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret\n\n", "s3cret\n"),
            (b"s3cret", "s3cret"),
        ];
        for (content, expected) in cases {
            let path = write("secret", content);
            assert_eq!(read_secret_text(&path).unwrap(), expected);
            assert_eq!(read_secret_bytes(&path).unwrap(), expected.as_bytes());
        }
        for empty in [&b""[..], b"\n", b"\r\n"] {
            let path = write("empty", empty);
            assert!(matches!(
                read_secret_text(&path),
                Err(SecretFileError::Empty)
            ));
            assert!(matches!(
                read_secret_bytes(&path),
                Err(SecretFileError::Empty)
            ));
        }
        let err = read_secret_text(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(&err, SecretFileError::Read(e) if e.kind() == io::ErrorKind::NotFound));
        let path = write("binary", b"\xff\xfe\n");
        assert!(matches!(
            read_secret_text(&path),
            Err(SecretFileError::Read(_))
        ));
        assert_eq!(read_secret_bytes(&path).unwrap(), b"\xff\xfe");
    }
}
