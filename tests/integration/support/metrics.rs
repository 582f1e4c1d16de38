//! Cumulative counters read from a [`DebuggingRecorder`] installed locally
//! (`metrics::with_local_recorder`), never globally: the tests share one process.

use std::collections::HashMap;
use std::sync::Mutex;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric name and its sorted label pairs.
type Series = (String, Vec<(String, String)>);

/// Cumulative counter values of a [`DebuggingRecorder`], whose snapshots reset counters.
pub struct Counters {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<Series, u64>>,
}

impl Counters {
    /// Reads the counters of `recorder`.
    pub fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            totals: Mutex::new(HashMap::new()),
        }
    }

    /// The total of counter `name` over the series whose labels include every `labels` pair.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let DebugValue::Counter(n) = value else {
                continue;
            };
            let key = key.key();
            let mut pairs: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            pairs.sort();
            *totals.entry((key.name().to_owned(), pairs)).or_default() += n;
        }
        totals
            .iter()
            .filter(|((n, pairs), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v))
            })
            .map(|(_, total)| *total)
            .sum()
    }
}
