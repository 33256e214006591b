//! A smoke run of the fuzz targets (`fuzz/`): every input of their kept
//! corpora, replayed through the same entry points without a fuzzer. The
//! corpora hold the inputs the fuzzer found new coverage with, and each
//! crash it ever found, once fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).expect("corpus input");
        run(&data);
    }
}

#[test]
fn fuzz_corpora_replay_without_a_crash() {
    replay("copy_text", lookout_fuzz::copy_text);
    replay("copy_csv", lookout_fuzz::copy_csv);
    replay("statement_grammars", lookout_fuzz::statement_grammars);
    replay("sql_front_end", lookout_fuzz::sql_front_end);
    replay("pg_messages", lookout_fuzz::pg_messages);
    replay("otlp_traces", lookout_fuzz::otlp_traces);
}
