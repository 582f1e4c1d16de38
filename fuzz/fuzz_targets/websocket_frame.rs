//! Fuzz target `websocket_frame`: see `chatwatch::fuzzing::websocket_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatwatch::fuzzing::websocket_frame(data));
