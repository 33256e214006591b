#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout_fuzz::otlp_traces(data));
