//! Heap allocations per event on the hot path, step by step, counted by a counting global
//! allocator (dhat's, in its testing mode) around the same calls the daemon makes:
//!
//! 1. `parse`: the bytes of a Bayeux response (one ~600-byte `ChatStateChangeMessage`) through the
//!    protocol's parser into a [`Delivery`];
//! 2. `event`: the delivery into an [`Event`] ([`pipeline::into_event`]: GWS decode, tracker,
//!    record);
//! 3. `journal payload`: the event serialised for the journal (`serde_json::to_vec`, as
//!    `pipeline` does);
//! 4. `sink read`: the journal payload into the [`Record`] a sink receives (`Arc<Record>`, as
//!    `delivery::SinkRunner` hands it to every sink): nothing is decoded for a sink that needs only
//!    the bytes (file, audit, webhook, JSON log) and has no filter;
//! 5. `file line`: the record's bytes appended as a JSON line to a reused batch buffer (as the
//!    file sink does).
//!
//! Then, outside the total, what a sink that needs fields (a non-empty filter, the log sink's
//! human line, NATS headers) pays on top: `sink decode`, the record decoded into an [`Event`]
//! ([`Record::event`], what step 4 cost for every sink before sinks wrote the payload as it is).
//!
//! `cargo bench --bench allocs` prints allocations and bytes per event for each step and in all
//! (averaged over 10,000 events, after 100 to warm the tracker); under `cargo test` it runs 100.
//! The counts are exact and repeatable (the same binary gives the same numbers), unlike times.

use std::sync::Arc;

use chatwatch::bayeux::message::parse_response;
use chatwatch::bayeux::Delivery;
use chatwatch::pipeline;
use chatwatch::sinks::Record;
use chatwatch::tracker::ChatTracker;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The same response as `benches/decode.rs`.
const RESPONSE: &str = concat!(
    r#"[{"channel":"/v2/me/chats","data":{"messageType":"ChatStateChangeMessage","#,
    r#""notificationType":"ParticipantsUpdated","referenceId":18,"chat":{"id":"0000Na9B26EF002X","#,
    r#""state":"Chatting","capabilities":["Transfer","Complete","Leave","InFocus","SendMessage","#,
    r#""SendStartTypingNotification","SendStopTypingNotification"],"participants":["#,
    r#"{"type":"Agent","nickname":"Marat","participantId":"009052C5E743004C"},"#,
    r#"{"type":"Customer","nickname":"PersonP","participantId":"009052C5E6D6004A"}],"#,
    r#""userData":{"Subject":"Billing question","OrderNumber":123456789,"DispositionCode":null},"#,
    r#""uri":"http://localhost:8080/api/v2/chats/0000Na9B26EF002X"}},"id":"42"}]"#
);

fn parse_delivery(bytes: &[u8]) -> Delivery {
    let mut parsed = parse_response(bytes, "long-polling").expect("a Bayeux response");
    let message = parsed.messages.pop().expect("one message");
    Delivery {
        channel: message.channel,
        data: message.data.expect("a delivery"),
        id: message.id,
        received_at: time::OffsetDateTime::now_utc(),
    }
}

/// Allocations and bytes so far.
fn counts() -> (u64, u64) {
    let stats = dhat::HeapStats::get();
    (stats.total_blocks, stats.total_bytes)
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = if bench { 10_000 } else { 100 };
    let bytes = RESPONSE.as_bytes();
    let mut tracker = ChatTracker::new(10_000);
    let mut line = Vec::with_capacity(64 * 1024);
    const STEPS: [&str; 5] = [
        "parse",
        "event",
        "journal payload",
        "sink read",
        "file line",
    ];
    let mut totals = [(0u64, 0u64); STEPS.len()];
    let mut decode = (0u64, 0u64);
    for i in 0..(n + 100) {
        let mut marks = [(0u64, 0u64); STEPS.len() + 1];
        marks[0] = counts();
        let delivery = parse_delivery(bytes);
        marks[1] = counts();
        let event = pipeline::into_event("bench", delivery, &mut tracker);
        marks[2] = counts();
        let payload = serde_json::to_vec(&event).expect("an event serialises");
        marks[3] = counts();
        // The journal reads a record into a buffer of exactly its length (not counted, as
        // before: that is the journal's read, the same for every sink); then the runner wraps it.
        let stored = payload.clone();
        drop(payload);
        let reading = counts();
        let read = Arc::new(Record::new(stored));
        marks[4] = counts();
        if line.len() > 32 * 1024 {
            line.clear();
        }
        line.extend_from_slice(&read.line().expect("one line"));
        line.push(b'\n');
        marks[5] = counts();
        assert!(!read.is_decoded(), "a byte sink decodes nothing");
        let decode_from = counts();
        read.event().expect("a journal payload reads");
        let decode_to = counts();
        drop((event, read));
        if i >= 100 {
            for (s, total) in totals.iter_mut().enumerate() {
                // Step 4 starts after the journal's read.
                let start = if s == 3 { reading } else { marks[s] };
                total.0 += marks[s + 1].0 - start.0;
                total.1 += marks[s + 1].1 - start.1;
            }
            decode.0 += decode_to.0 - decode_from.0;
            decode.1 += decode_to.1 - decode_from.1;
        }
    }
    println!(
        "heap allocations per event ({n} events, {} bytes of response each)",
        bytes.len()
    );
    println!("| step | allocations | bytes |");
    println!("| --- | --- | --- |");
    let per = |v: u64| v as f64 / n as f64;
    for (step, (blocks, bytes)) in STEPS.iter().zip(totals) {
        println!("| {step} | {:.1} | {:.0} |", per(blocks), per(bytes));
    }
    let all = totals
        .iter()
        .fold((0, 0), |acc, t| (acc.0 + t.0, acc.1 + t.1));
    println!("| all | {:.1} | {:.0} |", per(all.0), per(all.1));
    println!(
        "| sink decode (only for a sink that needs fields; not in all) | {:.1} | {:.0} |",
        per(decode.0),
        per(decode.1)
    );
    assert!(all.0 > 0, "the counting allocator saw nothing");
}
