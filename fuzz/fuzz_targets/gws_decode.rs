//! Fuzz target `gws_decode`: see `chatwatch::fuzzing::gws_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::gws_decode(data));
