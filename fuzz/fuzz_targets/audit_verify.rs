//! Fuzz target `audit_verify`: see `chatwatch::fuzzing::audit_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::audit_verify(data));
