//! The fuzz smoke on stable: every committed corpus and regression input of every fuzz target
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) goes through the same harness the
//! libFuzzer target calls (`chatwatch::fuzzing`), so a regression fails `cargo test` in
//! seconds. Plus the issue 16 G1 reproducer through a real journal.

use std::path::{Path, PathBuf};

use chatwatch::bayeux::Delivery;
use chatwatch::event::Event;
use chatwatch::fuzzing::{event_round_trip, TARGETS};
use chatwatch::journal::{Journal, JournalConfig, JournalFsync};
use chatwatch::json::RawJson;
use chatwatch::tracker::ChatTracker;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("list the corpus").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_passes_its_harness() {
    let mut failures = Vec::new();
    let mut total_bytes = 0u64;
    for (target, harness) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "no corpus for fuzz target {target}");
        assert!(
            corpus.len() <= 64,
            "the corpus of {target} has {} files: minimise it (cargo fuzz cmin)",
            corpus.len()
        );
        let regressions = inputs(&fuzz_dir().join("regressions").join(target));
        for path in corpus.iter().chain(&regressions) {
            let bytes = std::fs::read(path).expect("read a fuzz input");
            total_bytes += bytes.len() as u64;
            let outcome = std::panic::catch_unwind(|| harness(&bytes));
            if outcome.is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        total_bytes < 1 << 20,
        "the committed fuzz inputs take {total_bytes} bytes"
    );
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
}

/// G1 (issue 16): a large integer in `userData` changed its last digit between the event built
/// and the copy sinks read back from the journal (serde_json parsed floats inexactly). With
/// `float_roundtrip` the copy equals the event, for that integer and for floats; the exact
/// text stays in `data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_in_user_data_survive_the_journal_round_trip() {
    let text = r#"{"messageType":"ChatStateChangeMessage","notificationType":"PropertiesUpdated","chat":{"id":"c1","state":"Chatting","userData":{"big":1111111111111111111111,"tenth":0.1,"huge":1e300,"tiny":5e-324,"third":0.3333333333333333}}}"#;
    let raw = serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
    let delivery = Delivery {
        channel: "/v2/me/chats".to_owned(),
        data: RawJson::from_raw(&raw),
        id: None,
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let event = chatwatch::pipeline::to_event("main", &delivery, &mut ChatTracker::new(16));
    let user_data = event
        .chat
        .as_ref()
        .and_then(|c| c.user_data.as_ref())
        .expect("userData decoded");
    assert_eq!(user_data["tenth"].as_f64(), Some(0.1));
    assert_eq!(user_data["huge"].as_f64(), Some(1e300));
    assert_eq!(user_data["big"].as_f64(), Some(1111111111111111111111.0));
    event_round_trip(&event);

    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        fsync: JournalFsync::Always,
        ..JournalConfig::new(dir.path())
    })
    .unwrap();
    let seqs = journal
        .append(vec![serde_json::to_vec(&event).unwrap()])
        .await
        .unwrap();
    let records = journal.read(*seqs.start() - 1, 1).unwrap();
    let back: Event = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(back, event, "what sinks read back is what was built");
    assert_eq!(back.data.get(), text, "the raw data is exact");
    journal.close().await.unwrap();
}
