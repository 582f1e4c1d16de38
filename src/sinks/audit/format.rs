//! The audit line format: building a chained line, and reading one back from its raw bytes.
//!
//! See the [module documentation](super) for the format. Everything here works on bytes: the
//! hash covers the exact bytes written, and reading never re-serialises.

use std::io::Write;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::sinks::record::{Record as JournalRecord, RecordError};

/// A SHA-256 or HMAC-SHA256 output.
pub(crate) type Hash = [u8; 32];

/// The `prev` of the very first line of a chain.
pub(crate) const ZERO_HASH: Hash = [0; 32];

/// What every line starts with.
const HEAD: &[u8] = b"{\"seq\":";
/// Between the seq and the previous hash.
const PREV: &[u8] = b",\"prev\":\"";
/// Between the previous hash and the event.
const EVENT: &[u8] = b"\",\"event\":";
/// Before the line's own hash.
const HASH: &[u8] = b",\"hash\":\"";
/// After the line's own hash (before the newline).
const TAIL: &[u8] = b"\"}";
/// Length of the hashed-over suffix `,"hash":"<64 hex>"}`.
const SUFFIX_LEN: usize = HASH.len() + 64 + TAIL.len();

/// Computes line hashes: plain SHA-256, or HMAC-SHA256 with a key.
#[derive(Clone)]
pub(crate) enum Hasher {
    /// SHA-256 of the line's hashed bytes.
    Sha256,
    /// HMAC-SHA256 of the line's hashed bytes (a prototype keyed once, cloned per line).
    Hmac(Box<Hmac<Sha256>>),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never show key material.
        f.write_str(match self {
            Self::Sha256 => "Sha256",
            Self::Hmac(_) => "HmacSha256",
        })
    }
}

impl Hasher {
    /// HMAC-SHA256 with `key` when given, else SHA-256.
    pub(crate) fn new(key: Option<&[u8]>) -> Self {
        match key {
            Some(key) => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mac) => Self::Hmac(Box::new(mac)),
                // HMAC accepts keys of any length; this arm is unreachable in practice.
                Err(_) => Self::Sha256,
            },
            None => Self::Sha256,
        }
    }

    /// The hash of `bytes`.
    pub(crate) fn hash(&self, bytes: &[u8]) -> Hash {
        match self {
            Self::Sha256 => Sha256::digest(bytes).into(),
            Self::Hmac(proto) => {
                let mut mac = (**proto).clone();
                mac.update(bytes);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

/// Appends the line for `record` (with its `\n`) to `out` and returns its hash. The line's
/// `event` is the journal payload as it is ([`JournalRecord::line`]). On an error `out` is left as it
/// was.
pub(crate) fn encode(
    seq: u64,
    prev: &Hash,
    record: &JournalRecord,
    hasher: &Hasher,
    out: &mut Vec<u8>,
) -> Result<Hash, RecordError> {
    let event = record.line()?;
    let start = out.len();
    out.extend_from_slice(HEAD);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{seq}");
    out.extend_from_slice(PREV);
    out.extend_from_slice(hex::encode(prev).as_bytes());
    out.extend_from_slice(EVENT);
    out.extend_from_slice(&event);
    let hash = hasher.hash(&out[start..]);
    out.extend_from_slice(HASH);
    out.extend_from_slice(hex::encode(hash).as_bytes());
    out.extend_from_slice(TAIL);
    out.push(b'\n');
    Ok(hash)
}

/// The chain fields of one line, read from its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// `seq`.
    pub(crate) seq: u64,
    /// `prev`: the hash of the line before.
    pub(crate) prev: Hash,
    /// `hash`: this line's hash as written.
    pub(crate) hash: Hash,
}

/// Reads the chain fields of `line` (without its `\n`) and whether its stated hash matches its
/// bytes. `Err` says why it is not an audit line at all.
pub(crate) fn parse(line: &[u8], hasher: &Hasher) -> Result<(Record, bool), &'static str> {
    let record = parse_fields(line)?;
    let valid = hasher.hash(&line[..line.len() - SUFFIX_LEN]) == record.hash;
    Ok((record, valid))
}

/// Reads the chain fields without checking the hash.
pub(crate) fn parse_fields(line: &[u8]) -> Result<Record, &'static str> {
    const SHAPE: &str = "not an audit record {\"seq\":…,\"prev\":…,\"event\":…,\"hash\":…}";
    let rest = line.strip_prefix(HEAD).ok_or(SHAPE)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return Err("its `seq` is not a number");
    }
    let seq = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("its `seq` is not a number")?;
    let rest = rest[digits..].strip_prefix(PREV).ok_or(SHAPE)?;
    let prev = rest
        .get(..64)
        .and_then(decode_hash)
        .ok_or("its `prev` is not a hash")?;
    let rest = rest[64..].strip_prefix(EVENT).ok_or(SHAPE)?;
    if rest.len() < SUFFIX_LEN + 2 {
        return Err(SHAPE);
    }
    let suffix = &rest[rest.len() - SUFFIX_LEN..];
    let hex = suffix
        .strip_prefix(HASH)
        .and_then(|s| s.strip_suffix(TAIL))
        .ok_or(SHAPE)?;
    let hash = decode_hash(hex).ok_or("its `hash` is not a hash")?;
    Ok(Record { seq, prev, hash })
}

/// Decodes 64 lowercase hex digits (the writer never writes uppercase).
fn decode_hash(hex: &[u8]) -> Option<Hash> {
    if hex.len() != 64 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// Short hex of a hash for messages.
pub(crate) fn short(hash: &Hash) -> String {
    hex::encode(&hash[..6])
}
