#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout_fuzz::copy_text(data));
