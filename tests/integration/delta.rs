//! External Delta tables written by the Python `deltalake` package
//! (`tests/clients/delta_tables.py`) and read over a Postgres connection:
//! the same rows, sums and NULLs as `deltalake` reads, deletes applied,
//! new commits seen without re-creating the table, and the file access
//! rules of server-side COPY.

use std::path::Path;
use std::process::Command;

use lookout_query::{FileAccess, LookoutOptions};
use serde_json::Value;

use crate::harness::TestServer;

/// Runs `tests/clients/<script>` with `args`; its standard output.
fn python_client(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    python_client_with(script, args, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`python_client`], with these environment variables; the error
/// output when the script fails.
fn python_client_with(
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("python3 (tests/run.sh installs deltalake and polars)");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn delta_tables(command: &str, dir: &Path) -> String {
    let out = python_client("delta_tables.py", &[command.as_ref(), dir.as_os_str()]);
    String::from_utf8_lossy(&out).into_owned()
}

fn answers(dir: &Path) -> Value {
    serde_json::from_str(&delta_tables("answers", dir)).expect("answers JSON")
}

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// What Lookout reads from `events_delta`, in the shape of the answers.
async fn read(client: &tokio_postgres::Client) -> (i64, f64, i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), sum(latency_ms), sum(tokens)::bigint, \
             count(*) FILTER (WHERE tokens IS NULL), count(*) FILTER (WHERE NOT ok) \
             FROM events_delta",
            &[],
        )
        .await
        .expect("read events_delta");
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_written_by_deltalake_read_the_same() {
    let lake = tempfile::tempdir().expect("tempdir");
    let table = lake.path().join("events");
    delta_tables("create", &table);
    let expected = answers(&table);

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE events_delta STORED AS DELTA LOCATION '{}'",
            table.display()
        ))
        .await
        .expect("create external table");

    // Two appends and a delete (remove + add actions): every row deltalake
    // reads, none it does not.
    let (rows, latency, tokens, nulls, not_ok) = read(&client).await;
    assert_eq!(rows, expected["rows"].as_i64().unwrap());
    assert!((latency - expected["latency_sum"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(tokens, expected["tokens_sum"].as_i64().unwrap());
    assert_eq!(nulls, expected["tokens_nulls"].as_i64().unwrap());
    assert_eq!(not_ok, expected["not_ok"].as_i64().unwrap());
    assert!(rows < 800, "the delete took effect ({rows} rows)");

    // The partition column comes back from the file paths, per model.
    let per_model = client
        .query(
            "SELECT model, count(*), sum(latency_ms) FROM events_delta GROUP BY model ORDER BY model",
            &[],
        )
        .await
        .expect("per model");
    let models = expected["models"].as_object().unwrap();
    assert_eq!(per_model.len(), models.len());
    for row in &per_model {
        let model: String = row.get(0);
        let want = &models[&model];
        assert_eq!(
            row.get::<_, i64>(1),
            want["rows"].as_i64().unwrap(),
            "{model}"
        );
        let sum: f64 = row.get(2);
        assert!((sum - want["latency_sum"].as_f64().unwrap()).abs() < 1e-6);
    }

    // Columns arrive typed as PostgreSQL types, filters and LIMIT work.
    let row = client
        .query_one(
            "SELECT ts, model, tokens FROM events_delta WHERE ts >= '2025-03-01 00:10:00+00' \
             ORDER BY ts LIMIT 1",
            &[],
        )
        .await
        .expect("typed row");
    let ts: std::time::SystemTime = row.get(0);
    assert_eq!(
        ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        1_740_787_200 + 600
    );
    assert_eq!(row.get::<_, Option<i64>>(2), Some(10));

    // A join with a Lookout table: monitoring data beside the warehouse's.
    client
        .batch_execute(
            "CREATE TABLE owners (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, team TEXT);
             INSERT INTO owners VALUES ('2025-03-01 00:00:00+00', 'm-a', 'search'),
                                       ('2025-03-01 00:00:00+00', 'm-b', 'ads');",
        )
        .await
        .expect("owners");
    let joined: i64 = client
        .query_one(
            "SELECT count(*) FROM events_delta e JOIN owners o ON e.model = o.model",
            &[],
        )
        .await
        .expect("join")
        .get(0);
    let a_and_b = models["m-a"]["rows"].as_i64().unwrap() + models["m-b"]["rows"].as_i64().unwrap();
    assert_eq!(joined, a_and_b);

    // Another writer commits: the next query reads the new version.
    delta_tables("append", &table);
    let expected = answers(&table);
    let (rows, latency, ..) = read(&client).await;
    assert_eq!(rows, expected["rows"].as_i64().unwrap());
    assert!((latency - expected["latency_sum"].as_f64().unwrap()).abs() < 1e-6);

    // Listed in the catalog like a table; read-only.
    let listed: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events_delta'",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(listed, 5);
    for write in [
        "INSERT INTO events_delta (ts, model) VALUES (now(), 'x')",
        "DELETE FROM events_delta WHERE model = 'm-a'",
        "UPDATE events_delta SET ok = true",
        "TRUNCATE events_delta",
    ] {
        let err = client
            .batch_execute(write)
            .await
            .expect_err("external tables are read-only");
        assert_eq!(sqlstate(&err), "42809", "{write}: {err:?}");
    }
    assert_eq!(read(&client).await.0, expected["rows"].as_i64().unwrap());

    // The definition survives a restart; dropping it leaves the data.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    let client = server.client().await;
    assert_eq!(read(&client).await.0, expected["rows"].as_i64().unwrap());
    client
        .batch_execute("DROP EXTERNAL TABLE events_delta")
        .await
        .expect("drop");
    let err = client
        .query_one("SELECT count(*) FROM events_delta", &[])
        .await
        .expect_err("dropped");
    assert_eq!(sqlstate(&err), "42P01");
    assert_eq!(answers(&table)["rows"], expected["rows"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_locations_follow_the_file_access_rules() {
    let lake = tempfile::tempdir().expect("tempdir");
    let allowed = lake.path().join("allowed");
    let outside = lake.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let table = allowed.join("events");
    delta_tables("create", &table);
    let other = outside.join("events");
    delta_tables("create", &other);

    let options = LookoutOptions {
        file_access: FileAccess::Only(vec![allowed.clone()]),
        ..LookoutOptions::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), options).await;
    let client = server.client().await;

    // Not a Delta table, not there, outside the allowed directories.
    let empty = allowed.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (location, state) in [
        (empty.display().to_string(), "58P01"),
        (other.display().to_string(), "42501"),
        ("relative/path".to_string(), "42602"),
    ] {
        let err = client
            .batch_execute(&format!(
                "CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '{location}'"
            ))
            .await
            .expect_err(&location);
        assert_eq!(sqlstate(&err), state, "{location}: {err:?}");
    }
    let err = client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE t STORED AS ICEBERG LOCATION '{}'",
            table.display()
        ))
        .await
        .expect_err("iceberg");
    assert_eq!(sqlstate(&err), "0A000");

    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE events_delta STORED AS DELTA LOCATION '{}'",
            table.display()
        ))
        .await
        .expect("inside the allowed directory");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM events_delta", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(rows, answers(&table)["rows"].as_i64().unwrap());

    // The data files swapped for links to copies outside: the scan is
    // refused before anything is read.
    for (n, data_file) in parquet_files(&table).into_iter().enumerate() {
        let stolen = outside.join(format!("stolen-{n}.parquet"));
        std::fs::copy(&data_file, &stolen).unwrap();
        std::fs::remove_file(&data_file).unwrap();
        std::os::unix::fs::symlink(&stolen, &data_file).unwrap();
    }
    let err = client
        .query_one("SELECT count(*) FROM events_delta", &[])
        .await
        .expect_err("link outside");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    server.stop().await;
}

/// The Parquet data files below `dir` (the partition directories).
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            found.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
    found
}

/// What `deltalake` and Polars read from a Lookout table's directory.
pub(crate) fn read_as_delta(dir: &Path, column: &str) -> Value {
    let out = python_client("lookout_delta.py", &[dir.as_os_str(), column.as_ref()]);
    serde_json::from_slice(&out).expect("lookout_delta.py JSON")
}

/// Publishes the Delta logs, then checks both readers see what Lookout
/// answers: the same rows and the same sum.
async fn same_through_delta(
    server: &TestServer,
    client: &tokio_postgres::Client,
    step: &str,
    readers: &[&str],
) {
    table_through_delta(server, client, step, "calls", "latency_ms", readers).await;
}

/// As [`same_through_delta`] for any table and numeric column.
async fn table_through_delta(
    server: &TestServer,
    client: &tokio_postgres::Client,
    step: &str,
    table: &str,
    column: &str,
    readers: &[&str],
) {
    let mut publisher = lookout_delta::publish::Publisher::new(server.lookout.storage().clone())
        .expect("a writer's store")
        .with_checkpoint_every(4)
        .with_metrics(&lookout_metrics::Registry::new());
    publisher.publish().await.expect("publish");
    assert!(
        publisher.failures().is_empty(),
        "{step}: {:?}",
        publisher.failures()
    );
    let row = client
        .query_one(
            &format!("SELECT count(*), sum(\"{column}\")::float8 FROM {table}"),
            &[],
        )
        .await
        .expect("count");
    let (rows, sum): (i64, Option<f64>) = (row.get(0), row.get(1));
    let read = read_as_delta(&server.dir.path().join("data").join(table), column);
    for reader in readers {
        assert_eq!(
            read[reader]["rows"].as_i64(),
            Some(rows),
            "{step}: {reader} rows ({read})"
        );
        let theirs = read[reader]["sum"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (theirs - sum.unwrap_or(0.0)).abs() < 1e-6,
            "{step}: {reader} sum {theirs} vs {sum:?}"
        );
    }
}

const BOTH: &[&str] = &["deltalake", "polars"];

/// The latest `lookout.definition` domain metadata a table's Delta log
/// holds, read from its commit files as any Delta reader would.
fn recorded_definition(table: &Path) -> String {
    let mut commits: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .expect("log")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let mut recorded = String::new();
    for commit in commits {
        let text = std::fs::read_to_string(&commit).expect("commit");
        for action in text.lines() {
            let action: Value = serde_json::from_str(action).expect("action");
            let domain = &action["domainMetadata"];
            if domain["domain"] == lookout_delta::publish::DEFINITION_DOMAIN {
                recorded = domain["configuration"].as_str().unwrap_or_default().into();
            }
        }
    }
    recorded
}

fn vector_files(server: &TestServer) -> usize {
    std::fs::read_dir(server.dir.path().join("data/calls"))
        .expect("table directory")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("deletion_vector_")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookout_tables_read_as_delta_by_deltalake_and_polars() {
    // No grace period: superseded files and deletion vectors go at once.
    let options = LookoutOptions {
        storage: lookout_storage::StorageOptions {
            gc_grace: std::time::Duration::ZERO,
            background: false,
            ..lookout_storage::StorageOptions::default()
        },
        ..LookoutOptions::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().expect("tempdir"), options).await;
    let client = server.client().await;
    let storage = server.lookout.storage().clone();
    client
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, \
             latency_ms DOUBLE PRECISION, tokens BIGINT, ok BOOLEAN)",
        )
        .await
        .expect("create");
    // Four flushed writes (compaction takes four files), two partitions.
    for batch in 0..4 {
        client
            .batch_execute(&format!(
                "INSERT INTO calls SELECT to_timestamp(1735689600 + i * 60), \
                 CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, \
                 (i % 97) + 0.5, i, i % 7 <> 0 \
                 FROM generate_series({}, {}) AS g(i)",
                batch * 500,
                batch * 500 + 499
            ))
            .await
            .expect("insert");
        storage.flush().await.expect("flush");
    }
    same_through_delta(&server, &client, "appends", BOTH).await;
    // A rollup is a table too: its delta rows add up to the raw rows.
    client
        .batch_execute(
            "CREATE ROLLUP calls_hourly ON calls GROUP BY model EVERY '1 hour' \
             AS (count(*), sum(latency_ms))",
        )
        .await
        .expect("rollup");
    storage.flush().await.expect("flush");
    table_through_delta(&server, &client, "rollup", "calls_hourly", "count", BOTH).await;
    let read = read_as_delta(&server.dir.path().join("data/calls_hourly"), "count");
    assert_eq!(read["deltalake"]["sum"].as_f64(), Some(2000.0), "{read}");
    // Each log records its table's definition as domain metadata: the
    // rollup's statement, and a comment set later (a commit of its own).
    let recorded = recorded_definition(&server.dir.path().join("data/calls_hourly"));
    assert!(
        recorded.contains(r#"CREATE ROLLUP \"calls_hourly\" ON \"calls\""#),
        "{recorded}"
    );
    client
        .batch_execute("COMMENT ON TABLE calls IS 'inference calls'")
        .await
        .expect("comment");
    table_through_delta(&server, &client, "comment", "calls", "latency_ms", BOTH).await;
    let recorded = recorded_definition(&server.dir.path().join("data/calls"));
    assert!(recorded.contains("inference calls"), "{recorded}");
    // A table no row reached yet is an empty Delta table; the engine's own
    // catalog tables (password verifiers among them) get no log.
    client
        .batch_execute("CREATE TABLE quiet (ts TIMESTAMPTZ NOT NULL, x DOUBLE PRECISION)")
        .await
        .expect("create");
    let mut publisher = lookout_delta::publish::Publisher::new(storage.clone()).expect("a writer");
    publisher.publish().await.expect("publish");
    let read = read_as_delta(&server.dir.path().join("data/quiet"), "x");
    assert_eq!(read["deltalake"]["rows"].as_i64(), Some(0), "{read}");
    assert!(
        storage
            .manifest()
            .expect("manifest")
            .tables
            .contains_key("lookout.roles")
    );
    assert!(
        !server
            .dir
            .path()
            .join("data/lookout.roles")
            .join("_delta_log")
            .exists()
    );
    // A table name is never a path: ".." publishes inside the store.
    client
        .batch_execute(
            "CREATE TABLE \"..\" (ts TIMESTAMPTZ NOT NULL, x DOUBLE PRECISION); \
             INSERT INTO \"..\" VALUES (now(), 1.5)",
        )
        .await
        .expect("create ..");
    storage.flush().await.expect("flush");
    publisher.publish().await.expect("publish");
    assert!(!server.dir.path().join("_delta_log").exists());
    assert!(
        server
            .dir
            .path()
            .join("data/%2E%2E/_delta_log/00000000000000000001.json")
            .exists()
    );

    client
        .batch_execute("DELETE FROM calls WHERE tokens % 5 = 0")
        .await
        .expect("delete");
    same_through_delta(&server, &client, "deletion vectors", BOTH).await;
    client
        .batch_execute("DELETE FROM calls WHERE tokens % 3 = 0")
        .await
        .expect("delete");
    same_through_delta(&server, &client, "deletion vectors grown", BOTH).await;
    // The first deletes' vectors were superseded and collected: one file
    // per data file with deletes remains.
    let with_deletes = storage.manifest().expect("manifest").tables["calls"]
        .files
        .iter()
        .filter(|f| f.deletes.is_some())
        .count();
    assert_eq!(vector_files(&server), with_deletes);
    assert!(with_deletes > 0);

    assert!(storage.compact().await.expect("compact") > 0);
    same_through_delta(&server, &client, "compaction", BOTH).await;
    assert_eq!(vector_files(&server), 0, "compacted files have no deletes");
    let log = server.dir.path().join("data/calls/_delta_log");
    assert!(
        log.join("_last_checkpoint").exists(),
        "a checkpoint every 4 versions"
    );

    client
        .batch_execute(
            "ALTER TABLE calls ADD COLUMN note TEXT; \
             INSERT INTO calls VALUES (now(), 'b', 1000.25, 1, true, 'added')",
        )
        .await
        .expect("alter");
    storage.flush().await.expect("flush");
    same_through_delta(&server, &client, "a column added", BOTH).await;

    // A publisher that starts over (as after a restart) finds nothing to do.
    let registry = lookout_metrics::Registry::new();
    let mut again = lookout_delta::publish::Publisher::new(storage.clone())
        .expect("local")
        .with_metrics(&registry);
    assert_eq!(again.publish().await.expect("publish"), 0);
    assert!(again.failures().is_empty(), "{:?}", again.failures());
    let metrics = registry.encode().expect("metrics");
    assert!(
        metrics.contains("lookout_delta_lag_versions 0"),
        "{metrics}"
    );
    client
        .batch_execute("INSERT INTO calls VALUES (now(), 'b', 1.0, 1, true, 'lag')")
        .await
        .expect("insert");
    storage.flush().await.expect("flush");
    let metrics = registry.encode().expect("metrics");
    assert!(
        metrics.contains("lookout_delta_lag_versions ")
            && !metrics.contains("lookout_delta_lag_versions 0"),
        "a flush the log has not seen: {metrics}"
    );
    assert_eq!(
        again.publish().await.expect("publish"),
        2,
        "calls and its rollup"
    );
    assert!(
        registry
            .encode()
            .expect("metrics")
            .contains("lookout_delta_commits_total 2")
    );

    // A Delta table another system keeps in the data directory is never
    // taken for a dropped table's log (checked after the drop below).
    let foreign = server.dir.path().join("data/foreign");
    delta_tables("create", &foreign);

    // A dropped table's log goes; one created under its name starts anew.
    client
        .batch_execute("DROP ROLLUP calls_hourly; DROP TABLE calls")
        .await
        .expect("drop");
    again.publish().await.expect("publish");
    assert!(!server.dir.path().join("data/calls/_delta_log").exists());
    assert!(foreign.join("_delta_log").is_dir(), "left alone");
    client
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, \
             latency_ms DOUBLE PRECISION); \
             INSERT INTO calls VALUES (now(), 'c', 2.5), (now(), 'c', 4.0)",
        )
        .await
        .expect("create again");
    storage.flush().await.expect("flush");
    same_through_delta(&server, &client, "re-created", BOTH).await;

    // A partition value that is no plain path segment: its directory name
    // is escaped on disk and again in the log. Polars 2.1 finds the files
    // but not their deletion vectors (it matches them by unescaped path),
    // so only deltalake checks the deletes here (docs/storage.md).
    client
        .batch_execute(
            "INSERT INTO calls SELECT now(), 'org/model a%', i FROM generate_series(1, 50) AS g(i)",
        )
        .await
        .expect("insert");
    storage.flush().await.expect("flush");
    same_through_delta(&server, &client, "escaped names", BOTH).await;
    client
        .batch_execute("DELETE FROM calls WHERE latency_ms > 40")
        .await
        .expect("delete");
    same_through_delta(&server, &client, "escaped names, deletes", &["deltalake"]).await;

    // A versioned table holds every version: Lookout shows the latest of
    // each key, a Delta reader sees them all (docs/storage.md).
    client
        .batch_execute(
            "CREATE TABLE labels (ts TIMESTAMPTZ NOT NULL, id BIGINT, version BIGINT, \
             score DOUBLE PRECISION) WITH (key = 'id', version = 'version'); \
             INSERT INTO labels SELECT now(), i, 1, 0.5 FROM generate_series(1, 10) AS g(i); \
             INSERT INTO labels SELECT now(), i, 2, 1.0 FROM generate_series(1, 5) AS g(i)",
        )
        .await
        .expect("versioned");
    storage.flush().await.expect("flush");
    let mut publisher = lookout_delta::publish::Publisher::new(storage.clone()).expect("a writer");
    publisher.publish().await.expect("publish");
    let shown: i64 = client
        .query_one("SELECT count(*) FROM labels", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(shown, 10);
    let read = read_as_delta(&server.dir.path().join("data/labels"), "score");
    assert_eq!(read["deltalake"]["rows"].as_i64(), Some(15), "{read}");
}

/// A database on S3 publishes its tables' Delta logs in the bucket:
/// `deltalake` and Polars read them from there with the deletes applied,
/// deletion vectors included, and a dropped table's log goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_s3_read_as_delta_from_the_bucket() {
    use crate::replicas::{BUCKET, aws_env, bucket_keys, fast_config, moto, serve, start};
    let (_moto, s3_port) = moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast_config(dir.path());
    let env = aws_env(s3_port);
    let location = format!("s3://{BUCKET}/lake");
    let wal = dir.path().join("wal").display().to_string();
    let port = crate::harness::free_port();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _writer = start(&mut serve(
        port,
        &["--data", &location, "--wal-dir", &wal, "--config", &config],
        &env_refs,
    ));
    let client = crate::harness::wait_ready(port).await;
    client
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION); \
             INSERT INTO calls SELECT now(), 'm' || (i % 3), i FROM generate_series(1, 100) AS g(i); \
             CREATE TABLE scratch (ts TIMESTAMPTZ NOT NULL, x DOUBLE PRECISION); \
             INSERT INTO scratch VALUES (now(), 1)",
        )
        .await
        .expect("write");
    // The rows reach Parquet files and the log within seconds (flush_age
    // 1 s, a publishing pass every second); the delete becomes a deletion
    // vector in the bucket.
    let table = format!("{location}/calls");
    let wait_for = |rows: i64, sum: f64| {
        let (table, env) = (table.clone(), env.clone());
        tokio::task::spawn_blocking(move || {
            let mut read = Value::Null;
            for _ in 0..60 {
                // Until the first pass the table has no log to read.
                read = match python_client_with(
                    "lookout_delta.py",
                    &[table.as_ref(), "latency_ms".as_ref()],
                    &env,
                ) {
                    Ok(out) => serde_json::from_slice(&out).expect("lookout_delta.py JSON"),
                    Err(e) => Value::String(e),
                };
                let agree = BOTH.iter().all(|r| {
                    read[r]["rows"].as_i64() == Some(rows) && read[r]["sum"].as_f64() == Some(sum)
                });
                if agree {
                    return read;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            panic!("deltalake and Polars never read {rows} rows summing to {sum}: {read}");
        })
    };
    wait_for(100, 5050.0).await.expect("join");
    client
        .batch_execute("DELETE FROM calls WHERE latency_ms <= 10")
        .await
        .expect("delete");
    let row = client
        .query_one("SELECT count(*), sum(latency_ms) FROM calls", &[])
        .await
        .expect("count");
    let (rows, sum): (i64, f64) = (row.get(0), row.get(1));
    assert_eq!((rows, sum), (90, 4995.0));
    wait_for(rows, sum).await.expect("join");
    let keys = bucket_keys(s3_port, "lake/calls/").await;
    assert!(keys.contains("lake/calls/_delta_log/"), "{keys}");
    assert!(keys.contains("lake/calls/deletion_vector_"), "{keys}");

    // Whether the bucket holds objects under `prefix`, once it does (or
    // no longer does) within 30 s.
    let holds = |prefix: &'static str, wanted: bool| async move {
        for _ in 0..60 {
            if bucket_keys(s3_port, prefix).await.contains("<Key>") == wanted {
                return wanted;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        !wanted
    };
    assert!(
        holds("lake/scratch/_delta_log/", true).await,
        "the second table is published too"
    );
    client
        .batch_execute("DROP TABLE scratch")
        .await
        .expect("drop");
    assert!(
        !holds("lake/scratch/_delta_log/", false).await,
        "a dropped table's log goes"
    );
}
