//! Fuzz target `bayeux_response`: see `chatwatch::fuzzing::bayeux_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::bayeux_response(data));
