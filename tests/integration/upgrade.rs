//! A data directory written by an earlier release
//! (`tests/data/upgrade-fixture`, made by `tests/data/make_upgrade_fixture.sh`
//! with that release's binary, before Delta logs existed) opens with this
//! one: every row, delete, rollup, versioned record, sampling policy and
//! held row, alert rule and review item is there, and the first start gives
//! every table its Delta log.

use std::path::Path;
use std::time::Duration;

use crate::harness::{free_port, rows, spawn_server_with, wait_ready};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let r = rows(client, sql).await;
    r.first()
        .and_then(|row| row.first().cloned().flatten())
        .unwrap_or_else(|| panic!("{sql}: {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_release_opens_intact() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upgrade-fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    copy_dir(&fixture, &db);
    let port = free_port();
    let mut server = spawn_server_with(&db, port, &[]);
    let client = wait_ready(port).await;

    // 600 calls, those of latency up to 60 deleted; the rollup kept all 600.
    assert_eq!(one(&client, "SELECT count(*) FROM calls").await, "540");
    assert_eq!(
        one(&client, "SELECT sum(latency_ms) FROM calls").await,
        "178470"
    );
    assert_eq!(
        one(&client, "SELECT sum(count) FROM calls_hourly").await,
        "600"
    );
    assert_eq!(
        one(&client, "SELECT sum(latency_sum) FROM calls_hourly").await,
        "180300"
    );
    // The versioned table answers each record's latest version.
    assert_eq!(
        rows(
            &client,
            "SELECT request_id, value FROM feedback ORDER BY request_id"
        )
        .await,
        vec![
            vec![Some("r1".into()), Some("-1".into())],
            vec![Some("r2".into()), Some("1".into())]
        ]
    );
    // Sampling: the policy stands, and the rows the old release held are
    // decided by the new one: every error kept, every row accounted for.
    let policies = rows(&client, "SHOW SAMPLING").await;
    assert!(
        policies.iter().flatten().flatten().any(|c| c == "traces"),
        "{policies:?}"
    );
    // Decided now, whenever their window ends (the server may have decided
    // some already).
    client
        .batch_execute("ALTER TABLE traces RESET SAMPLING")
        .await
        .expect("reset sampling");
    assert_eq!(
        one(&client, "SELECT sum(seen) FROM lookout.traces_sampling").await,
        "100"
    );
    assert_eq!(
        one(&client, "SELECT count(*) FROM traces WHERE status <> 'ok'").await,
        "10"
    );
    assert_eq!(
        one(&client, "SELECT count(*) FROM traces").await,
        one(
            &client,
            "SELECT sum(kept_by_rule + kept_by_rate + kept_for_minimum) FROM lookout.traces_sampling"
        )
        .await
    );
    assert_eq!(
        one(&client, "SELECT name FROM lookout.alerts").await,
        "slow_calls"
    );
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM lookout.review_queue_items WHERE queue = 'triage' AND status = 'pending'"
        )
        .await,
        "10"
    );

    // The first start publishes the Delta logs the old release never wrote.
    let mut read = serde_json::Value::Null;
    for _ in 0..150 {
        if db.join("data/calls/_delta_log").exists() {
            read = crate::delta::read_as_delta(&db.join("data/calls"), "latency_ms");
            if read["deltalake"]["rows"].as_i64() == Some(540) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read["deltalake"]["rows"].as_i64(), Some(540), "{read}");
    assert_eq!(read["deltalake"]["sum"].as_f64(), Some(178470.0), "{read}");
    assert_eq!(read["polars"]["rows"].as_i64(), Some(540), "{read}");
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
}
