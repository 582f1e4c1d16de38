//! Fuzz target `journal_recovery`: see `chatwatch::fuzzing::journal_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::journal_recovery(data));
