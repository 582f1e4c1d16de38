//! The fuzz harnesses: one function per target, taking arbitrary bytes, shared by the
//! libFuzzer targets in `fuzz/` (nightly, `cargo fuzz`) and the corpus replay in
//! `tests/fuzz_corpus.rs` (stable, part of `cargo test`). Compiled only with the `fuzzing`
//! feature, so it is no part of the library's API.
//!
//! A harness returns normally for every input the code under test handles as the project
//! promises (a clean error included) and panics when a promise is broken: a panic in the code
//! itself, a wrong record, a fast/fallback disagreement, a journal the next start refuses.
//! Every harness also runs with overflow checks on (debug builds and `cargo fuzz`), so an
//! unchecked `+ 1` on an untrusted number is a finding too.

use std::path::Path;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::time::Instant;

use crate::bayeux::protocol::TransportError;
use crate::bayeux::protocol::{Protocol, ProtocolConfig, Request, RequestKind};
use crate::bayeux::Delivery;
use crate::event::Event;
use crate::gws::notification::{decode, decode_raw, DecodeError};
use crate::journal::{self, format, Journal, JournalConfig, JournalFsync};
use crate::json::RawJson;
use crate::tracker::ChatTracker;

/// A harness: returns for inputs handled as promised, panics otherwise.
pub type Harness = fn(&[u8]);

/// The targets, by name: the file names in `fuzz/fuzz_targets/` and the corpus directories.
pub const TARGETS: &[(&str, Harness)] = &[
    ("bayeux_response", bayeux_response),
    ("websocket_frame", websocket_frame),
    ("gws_decode", gws_decode),
    ("journal_recovery", journal_recovery),
    ("audit_verify", audit_verify),
    ("config_load", config_load),
];

const CHATS: &str = "/v2/me/chats";

/// A little reader over the fuzzer's bytes; past the end everything is zero.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u16(&mut self) -> u16 {
        let bytes = self.take(2);
        bytes
            .iter()
            .rev()
            .fold(0u16, |acc, &b| (acc << 8) | u16::from(b))
    }

    fn u64(&mut self) -> u64 {
        let bytes = self.take(8);
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

fn message_id(request: &Request, index: usize) -> String {
    request
        .messages
        .get(index)
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn reply(body: Value) -> Vec<u8> {
    body.to_string().into_bytes()
}

/// A protocol that has handshaken, subscribed to `/v2/me/chats` and has its long-poll
/// `/meta/connect` outstanding (returned), the state in which almost every response arrives.
fn established(connection_type: &str, now: Instant) -> (Protocol, Request) {
    let cfg = ProtocolConfig {
        channels: vec![CHATS.to_owned()],
        connection_type: connection_type.to_owned(),
        ..ProtocolConfig::default()
    };
    let mut p = Protocol::new(cfg, now);
    let hs = p.poll_transmit(now).expect("a handshake is due");
    let body = reply(serde_json::json!([{
        "id": message_id(&hs, 0), "channel": "/meta/handshake", "successful": true,
        "version": "1.0", "clientId": "fuzz-client",
        "supportedConnectionTypes": ["long-polling", "websocket"],
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}
    }]));
    p.handle_response(now, hs.id, Ok(&body));
    let mut connect = None;
    let mut controls = Vec::new();
    while let Some(request) = p.poll_transmit(now) {
        match request.kind {
            RequestKind::Connect => connect = Some(request),
            _ => controls.push(request),
        }
    }
    for control in controls {
        let replies: Vec<Value> = control
            .messages
            .iter()
            .map(|m| {
                serde_json::json!({"id": m["id"], "channel": m["channel"], "successful": true,
                                   "subscription": m["subscription"]})
            })
            .collect();
        p.handle_response(now, control.id, Ok(&reply(Value::Array(replies))));
    }
    let connect = connect.expect("a first connect");
    let body = reply(serde_json::json!([{
        "id": message_id(&connect, 0), "channel": "/meta/connect", "successful": true,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}
    }]));
    p.handle_response(now, connect.id, Ok(&body));
    let held = p.poll_transmit(now).expect("the held connect");
    assert_eq!(held.kind, RequestKind::Connect);
    while p.poll_event().is_some() {}
    (p, held)
}

/// Runs the protocol's timers and transmissions for a while after an input, so that whatever
/// the input changed (advice, backoff, state) is exercised: never a panic.
fn run_on(p: &mut Protocol, mut now: Instant) {
    for _ in 0..8 {
        while p.poll_event().is_some() {}
        let mut sent = 0;
        while let Some(request) = p.poll_transmit(now) {
            let _ = request.body();
            sent += 1;
            if sent > 16 {
                break;
            }
        }
        match p.poll_timeout() {
            // Never further than a day: the clock must stay representable.
            Some(at) if at > now => now = at.min(now + Duration::from_secs(86_400)),
            _ => now += Duration::from_secs(1),
        }
    }
}

/// Target `bayeux_response`: `data` as the body of the response to the outstanding
/// `/meta/connect` of an established session (long-polling and WebSocket advice), and as the
/// handshake response of a fresh one.
pub fn bayeux_response(data: &[u8]) {
    let now = Instant::now();
    for transport in ["long-polling", "websocket"] {
        let _ = crate::bayeux::message::parse_response(data, transport);
        let (mut p, held) = established(transport, now);
        p.handle_response(now, held.id, Ok(data));
        run_on(&mut p, now);
    }
    let mut p = Protocol::new(
        ProtocolConfig {
            channels: vec![CHATS.to_owned()],
            ..ProtocolConfig::default()
        },
        now,
    );
    let hs = p.poll_transmit(now).expect("a handshake is due");
    p.handle_response(now, hs.id, Ok(data));
    run_on(&mut p, now);
}

/// Target `websocket_frame`: `data` as one text frame read by the WebSocket transport, with
/// replies pending for message ids `1` and `2`; what it hands on goes to an established
/// session as a push.
pub fn websocket_frame(data: &[u8]) {
    let (rest, replies) = crate::bayeux::websocket::dispatch_for_fuzzing(data);
    let now = Instant::now();
    let (mut p, held) = established("websocket", now);
    if let Some(rest) = rest {
        // What is handed on is the frame itself (not JSON) or a JSON array of messages.
        let is_array = serde_json::from_slice::<Value>(&rest).is_ok_and(|v| v.is_array());
        assert!(
            is_array || rest[..] == data[..],
            "dispatch handed on {rest:?}"
        );
        p.handle_push(&rest);
    }
    for body in replies {
        let value: Value = serde_json::from_slice(&body).expect("a reply body is JSON");
        assert!(value.is_array(), "a reply body is an array: {value}");
        p.handle_response(now, held.id, Ok(&body));
    }
    run_on(&mut p, now);
}

/// What sinks read back from the journal record of `event`: it must be `event`; and encoding it
/// again must give the record's bytes (the file, audit, webhook and NATS sinks write the record
/// as it is, where they once wrote the event decoded and encoded again), on one line.
pub fn event_round_trip(event: &Event) {
    let bytes = serde_json::to_vec(event).expect("an event serialises");
    assert!(
        !bytes.contains(&b'\n'),
        "a journal record is one line: {}",
        String::from_utf8_lossy(&bytes)
    );
    let back: Event = match serde_json::from_slice(&bytes) {
        Ok(back) => back,
        Err(e) => panic!(
            "sinks cannot read the record back: {e}: {}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(
        &back, event,
        "the record read back differs from the event built"
    );
    let again = serde_json::to_vec(&back).expect("an event serialises");
    assert!(
        again == bytes,
        "decoding and encoding the record changes its bytes: {} became {}",
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&again)
    );
}

/// Target `gws_decode`: `data` as a delivery's `data` text. The fast decoder must agree with
/// the `Value` decoder (and report `InvalidJson` exactly when a `Value` cannot hold the text),
/// and the event built from it must survive the journal record's round trip.
pub fn gws_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else {
        return;
    };
    let fast = decode_raw(&raw);
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(value) => assert_eq!(fast, decode(&value), "fast and Value decoders differ"),
        Err(e) => assert!(
            matches!(fast, Err(DecodeError::InvalidJson { .. })),
            "a Value cannot hold it ({e}), but decode_raw gave {fast:?}"
        ),
    }
    let delivery = Delivery {
        channel: CHATS.to_owned(),
        data: RawJson::from_raw(&raw),
        id: None,
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let event = crate::pipeline::to_event("fuzz", &delivery, &mut ChatTracker::new(16));
    event_round_trip(&event);
}

/// The records of one segment made by the harness, with correct checksums: `[delta][len]
/// [payload]` items, each record's seq the previous one's plus `delta` (wrapping, so the top
/// of the range is reachable), starting at `first`.
fn encoded_records(first: u64, mut bytes: Input<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = first;
    let mut started = false;
    while let Some(delta) = bytes.byte() {
        if started {
            seq = seq.wrapping_add(u64::from(delta));
        }
        started = true;
        let len = usize::from(bytes.byte().unwrap_or(0));
        format::encode(seq, bytes.take(len), &mut out);
    }
    out
}

fn small_journal(dir: &Path) -> JournalConfig {
    JournalConfig {
        fsync: JournalFsync::Never,
        segment_bytes: 256,
        max_bytes: 1 << 20,
        ..JournalConfig::new(dir)
    }
}

/// Target `journal_recovery`: a journal directory made of arbitrary segment and cursor files.
/// Opening it either fails with an error or recovers records that are exactly records of the
/// files, in increasing order; an append then gets a seq after all of them and every cursor,
/// and the next start opens and reads that record back.
///
/// Input: items `[kind][len u16 LE][...]`: kind % 4 = 0 a segment named by a u64 LE then `len`
/// raw bytes; 1 a segment named by one byte, raw bytes; 2 a segment named by a u64 LE whose
/// bytes are [`encoded_records`]; 3 a cursor file of sink `a`, `b` or `c` (next byte) with `len`
/// bytes of text.
pub fn journal_recovery(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir_all(journal_dir.join("cursors")).expect("create the journal dir");
    let mut input = Input(data);
    let mut written: Vec<Vec<u8>> = Vec::new();
    for _ in 0..8 {
        let Some(kind) = input.byte() else { break };
        let len = usize::from(input.u16()) % 2048;
        let (name, bytes) = match kind % 4 {
            0 => (format::segment_name(input.u64()), input.take(len).to_vec()),
            1 => (
                format::segment_name(u64::from(input.byte().unwrap_or(1))),
                input.take(len).to_vec(),
            ),
            2 => {
                let first = input.u64();
                let records = encoded_records(first, Input(input.take(len)));
                (format::segment_name(first), records)
            }
            _ => {
                let sink = ["a", "b", "c"][usize::from(input.byte().unwrap_or(0) % 3)];
                let text = input.take(len).to_vec();
                std::fs::write(journal_dir.join(format!("cursors/{sink}.cursor")), &text)
                    .expect("write a cursor");
                continue;
            }
        };
        std::fs::write(journal_dir.join(name), &bytes).expect("write a segment");
        written.push(bytes);
    }
    // The read-only views never panic, whatever is there.
    let _ = journal::status_offline(&journal_dir);
    let _ = journal::tail_offline(&journal_dir, 4);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Ok(opened) = Journal::open(small_journal(&journal_dir)) else {
        return; // refused cleanly
    };
    let records = opened
        .read(0, usize::MAX)
        .expect("recovered records are readable");
    let mut previous = 0;
    for (seq, payload) in &records {
        assert!(
            *seq > previous && *seq <= format::MAX_SEQ,
            "seq {seq} after {previous}"
        );
        previous = *seq;
        let mut encoded = Vec::new();
        format::encode(*seq, payload, &mut encoded);
        assert!(
            written
                .iter()
                .any(|file| file.windows(encoded.len()).any(|w| w == encoded)),
            "record {seq} is in no file"
        );
    }
    let status = opened.status();
    let highest_cursor = status
        .sinks
        .iter()
        .filter_map(|s| s.cursor)
        .max()
        .unwrap_or(0);
    let appended = runtime.block_on(opened.append(vec![b"fuzz".to_vec()]));
    if let Ok(range) = &appended {
        assert!(
            *range.start() > previous,
            "appended {range:?} after {previous}"
        );
        assert!(
            *range.start() > highest_cursor,
            "appended {range:?} at cursor {highest_cursor}"
        );
    }
    runtime.block_on(opened.close()).expect("close");
    drop(opened);
    let reopened = match Journal::open(small_journal(&journal_dir)) {
        Ok(journal) => journal,
        Err(e) => panic!("the next start refuses the journal: {e}"),
    };
    if let Ok(range) = appended {
        let seq = *range.start();
        let back = reopened.read(seq - 1, 1).expect("read the appended record");
        assert_eq!(back, vec![(seq, b"fuzz".to_vec())]);
    }
    runtime.block_on(reopened.close()).expect("close");
}

/// The audit line suffix: `,"hash":"<64 hex>"}`.
const AUDIT_SUFFIX: usize = 9 + 64 + 2;

/// Gives each audit-shaped line of `text` the correct SHA-256 hash (and with `chain`, the
/// previous line's hash as `prev`), so the fuzzer reaches the chain checks behind the hash.
fn rehash_audit_lines(text: &[u8], chain: bool) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(text.len());
    let mut prev = [0u8; 32];
    for line in text.split_inclusive(|&b| b == b'\n') {
        let mut line = line.to_vec();
        let newline = line.last() == Some(&b'\n');
        let body_len = line.len() - usize::from(newline);
        let shaped = body_len >= 7 + AUDIT_SUFFIX
            && line.starts_with(b"{\"seq\":")
            && line[body_len - AUDIT_SUFFIX..].starts_with(b",\"hash\":\"")
            && line[..body_len].ends_with(b"\"}");
        if shaped {
            if chain {
                let digits = line[7..].iter().take_while(|b| b.is_ascii_digit()).count();
                let at = 7 + digits;
                if line[at..].starts_with(b",\"prev\":\"") && line.len() >= at + 9 + 64 {
                    line[at + 9..at + 9 + 64].copy_from_slice(hex::encode(prev).as_bytes());
                }
            }
            let hash: [u8; 32] = Sha256::digest(&line[..body_len - AUDIT_SUFFIX]).into();
            let at = body_len - AUDIT_SUFFIX + 9;
            line[at..at + 64].copy_from_slice(hex::encode(hash).as_bytes());
            prev = hash;
        }
        out.extend_from_slice(&line);
    }
    out
}

/// Target `audit_verify`: `audit verify` over arbitrary files of sink `audit`: the first byte
/// says whether lines get correct hashes (bit 0) and chained `prev`s (bit 1), and whether the
/// text up to the first `0xFE` byte is a rotated (and with bit 2 gzipped) file before the
/// active one (bit 3). Never a panic; a report or an error.
pub fn audit_verify(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (rotated, active) = match rest.iter().position(|&b| b == 0xFE) {
        Some(at) if flags & 8 != 0 => (Some(&rest[..at]), &rest[at + 1..]),
        _ => (None, rest),
    };
    let fix = |text: &[u8]| {
        if flags & 1 != 0 {
            rehash_audit_lines(text, flags & 2 != 0)
        } else {
            text.to_vec()
        }
    };
    if let Some(rotated) = rotated {
        let text = fix(rotated);
        if flags & 4 != 0 {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&text).expect("gzip in memory");
            let bytes = gz.finish().expect("gzip in memory");
            std::fs::write(dir.path().join("audit-20260101T000000Z-1.jsonl.gz"), bytes)
                .expect("write");
        } else {
            std::fs::write(dir.path().join("audit-20260101T000000Z-1.jsonl"), text).expect("write");
        }
    }
    std::fs::write(dir.path().join("audit.jsonl"), fix(active)).expect("write");
    if let Ok(report) = crate::sinks::audit::verify(dir.path(), "audit", None) {
        let _ = report.to_string();
        if let Some(problem) = &report.first_problem {
            let _ = problem.to_string();
        }
    }
}

/// Target `config_load`: a configuration file and `CHATWATCH__…` overrides: the text up to the
/// first NUL byte is the TOML file, each line after it a `KEY=VALUE` override. Loading gives a
/// configuration or an error, never a panic; a loaded one yields its protocol settings.
pub fn config_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, overrides) = text.split_once('\0').unwrap_or((&text, ""));
    let env: Vec<(String, String)> = overrides
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("chatwatch.toml");
    std::fs::write(&file, toml.as_bytes()).expect("write the config");
    match crate::service::config::Config::load_with_env(&file, env) {
        Ok(config) => {
            // The configured durations drive the protocol's timers: never an overflow.
            let now = Instant::now();
            for account in config.accounts.values() {
                let mut p = Protocol::new(account.protocol_config(&config.bayeux), now);
                if let Some(hs) = p.poll_transmit(now) {
                    p.handle_response(now, hs.id, Err(TransportError::Io("refused".into())));
                }
                run_on(&mut p, now);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
