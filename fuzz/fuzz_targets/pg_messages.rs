#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // The server catches a panic of the protocol decoder at the
        // connection (that is what is tested); libFuzzer's hook would abort
        // at the panic itself. Panics of this target still abort.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| lookout_fuzz::pg_messages(data)
);
