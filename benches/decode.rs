//! The per-event hot path: the bytes of one Bayeux response carrying a ~600-byte
//! `ChatStateChangeMessage` (the ParticipantsUpdated sample of `reference/gws-api.md` §3.6 with
//! `userData`) turned into an [`Event`], and, in the second function, also into a JSON line.
//!
//! Run with `cargo bench --bench decode -- --quick`. Throughput is one element per iteration, so
//! criterion reports events per second; the target is ≥ 500,000 events/s on one core for `event`.
//! The bench runs with the daemon's allocator, the system one (mimalloc was ~10% faster here but
//! cost ~50 KiB more per idle account, see README "Many accounts").
//!
//! - `decode/event`: bytes → the protocol's parser ([`parse_response`], `data` kept as its JSON
//!   text) → [`Delivery`] → [`pipeline::to_event`] (decode, tracker, record; copies `data`);
//! - `decode/event_json_line`: the same, then the event serialised as one JSON line;
//! - `decode/event_owned`: bytes → [`pipeline::into_event`] (moves `data`, as the pipeline
//!   can, since the delivery is not needed afterwards);
//! - `decode_parts/*`: the pieces on their own (parsing; the builder on an already parsed
//!   delivery; GWS decoding of the text, copying `data`, the fingerprint, the event id), to show
//!   where the time goes.

use std::hint::black_box;

use chatwatch::bayeux::message::parse_response;
use chatwatch::bayeux::Delivery;
use chatwatch::event::{fingerprint, new_event_id, EventKind};
use chatwatch::pipeline;
use chatwatch::tracker::ChatTracker;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// One Bayeux response: a JSON array holding one delivery on `/v2/me/chats`.
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

/// What the Bayeux client does with a response: parse it (the protocol's own parser) and hand the
/// delivery downstream.
fn parse_delivery(bytes: &[u8]) -> Delivery {
    let mut parsed =
        parse_response(bytes, "long-polling").expect("the bench payload is a Bayeux response");
    let message = parsed.messages.pop().expect("one message");
    Delivery {
        channel: message.channel,
        data: message.data.expect("the bench payload is a delivery"),
        id: message.id,
        received_at: time::OffsetDateTime::now_utc(),
    }
}

fn decode(c: &mut Criterion) {
    let bytes = RESPONSE.as_bytes();
    assert!(
        (550..700).contains(&bytes.len()),
        "the bench payload should be about 600 bytes, it is {}",
        bytes.len()
    );
    let mut tracker = ChatTracker::new(10_000);
    let sample = pipeline::to_event("bench", &parse_delivery(bytes), &mut tracker);
    assert_eq!(
        sample.kind,
        EventKind::ChatState,
        "the bench payload decodes"
    );
    assert_eq!(
        sample
            .chat
            .as_ref()
            .and_then(|c| c.participants.as_ref())
            .map(Vec::len),
        Some(2)
    );

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event", |b| {
        b.iter(|| {
            let delivery = parse_delivery(black_box(bytes));
            black_box(pipeline::to_event("bench", &delivery, &mut tracker))
        })
    });
    let mut line = Vec::with_capacity(4096);
    group.bench_function("event_json_line", |b| {
        b.iter(|| {
            let delivery = parse_delivery(black_box(bytes));
            let event = pipeline::to_event("bench", &delivery, &mut tracker);
            line.clear();
            serde_json::to_writer(&mut line, &event).expect("an event serialises");
            line.push(b'\n');
            black_box(line.len())
        })
    });
    group.bench_function("event_owned", |b| {
        b.iter(|| {
            let delivery = parse_delivery(black_box(bytes));
            black_box(pipeline::into_event("bench", delivery, &mut tracker))
        })
    });
    group.finish();

    let delivery = parse_delivery(bytes);
    let mut parts = c.benchmark_group("decode_parts");
    parts.throughput(Throughput::Elements(1));
    parts.bench_function("parse", |b| {
        b.iter(|| black_box(parse_delivery(black_box(bytes))))
    });
    parts.bench_function("from_delivery", |b| {
        b.iter(|| {
            black_box(pipeline::to_event(
                "bench",
                black_box(&delivery),
                &mut tracker,
            ))
        })
    });
    parts.bench_function("gws_decode", |b| {
        b.iter(|| {
            black_box(chatwatch::gws::decode_raw(black_box(
                delivery.data.as_raw(),
            )))
        })
    });
    parts.bench_function("clone_data", |b| {
        b.iter(|| black_box(black_box(&delivery.data).clone()))
    });
    parts.bench_function("fingerprint", |b| {
        b.iter(|| {
            black_box(fingerprint(
                "bench",
                &delivery.channel,
                black_box(&delivery.data),
            ))
        })
    });
    parts.bench_function("event_id", |b| b.iter(|| black_box(new_event_id())));
    parts.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
