//! Fuzz target `config_load`: see `chatwatch::fuzzing::config_load`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::config_load(data));
