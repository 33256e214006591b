//! Times the monitoring queries through the embedded library (no server),
//! over a data directory loaded beforehand (see `compare.sh`).
//!
//! ```sh
//! cargo bench --profile quick-release --bench queries -- <data dir> <query.sql>...
//! ```
//! Prints one JSON object: query file name -> {median_ms, runs_ms, rows}.

use std::path::PathBuf;
use std::time::Instant;

use lookout_query::{Lookout, LookoutOptions};
use lookout_storage::StorageOptions;

const RUNS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: queries <data dir> <query.sql>...")?,
    );
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let options = LookoutOptions {
        storage: StorageOptions {
            background: false,
            ..StorageOptions::default()
        },
        ..LookoutOptions::default()
    };
    let db = Lookout::open_with(&dir, options).await?;
    let mut out = serde_json::Map::new();
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        let mut rows = 0;
        let mut times = Vec::with_capacity(RUNS);
        for run in 0..=RUNS {
            let start = Instant::now();
            let batches = db.sql(&sql).await?;
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
            if run > 0 {
                times.push(elapsed);
            }
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        eprintln!(
            "[lookout lib] {name}: median {:.1} ms, {rows} rows",
            sorted[RUNS / 2]
        );
        out.insert(
            name,
            serde_json::json!({ "median_ms": sorted[RUNS / 2], "runs_ms": times, "rows": rows }),
        );
    }
    db.close().await?;
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
