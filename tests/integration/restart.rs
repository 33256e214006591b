//! Rows flushed to Parquet at shutdown, read back after a restart: schema
//! evolution over old files and deletes through deletion vectors.

use crate::harness::{TestServer, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_columns_and_deletes_over_parquet_files() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .simple_query(
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, v DOUBLE PRECISION);
             INSERT INTO t VALUES ('2025-01-01 00:00:00+00', 'a', 1), ('2025-01-01 00:00:01+00', 'b', 2),
                                  ('2025-01-01 00:00:02+00', 'a', 4);
             COMMENT ON TABLE t IS 'calls';
             COMMENT ON COLUMN t.v IS 'latency'",
        )
        .await
        .expect("setup");
    drop(client);
    // Closing flushes the buffered rows to Parquet files.
    let dir = server.stop().await;
    let parquet = std::fs::read_dir(dir.path().join("data/t"))
        .expect("table dir")
        .count();
    assert_eq!(parquet, 2, "one directory per model");

    let server = TestServer::start_in(dir).await;
    let client = server.client().await;
    client
        .simple_query(
            "ALTER TABLE t ADD COLUMN region TEXT;
             INSERT INTO t VALUES ('2025-01-02 00:00:00+00', 'a', 3, 'eu')",
        )
        .await
        .expect("alter");
    assert_eq!(
        rows(&client, "SELECT model, v, region FROM t ORDER BY ts").await,
        vec![
            vec![Some("a".into()), Some("1".into()), None],
            vec![Some("b".into()), Some("2".into()), None],
            vec![Some("a".into()), Some("4".into()), None],
            vec![Some("a".into()), Some("3".into()), Some("eu".into())],
        ]
    );
    // A time range that covers one file, cuts through another and the
    // buffered rows: only the rows inside count, with or without the time
    // column in the output.
    let since = "ts >= TIMESTAMPTZ '2025-01-01 00:00:01+00'";
    assert_eq!(
        rows(
            &client,
            &format!("SELECT count(*), sum(v) FROM t WHERE {since}")
        )
        .await,
        vec![vec![Some("3".into()), Some("9".into())]]
    );
    assert_eq!(
        rows(&client, &format!("SELECT model FROM t WHERE {since} AND ts < TIMESTAMPTZ '2025-01-02 00:00:00+00' ORDER BY model")).await,
        vec![vec![Some("a".into())], vec![Some("b".into())]]
    );
    let deleted = client
        .simple_query("DELETE FROM t WHERE region IS NULL AND model = 'a'")
        .await
        .expect("delete");
    let affected = deleted.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(affected, Some(2));
    assert_eq!(
        rows(&client, "SELECT model, v FROM t ORDER BY ts").await,
        vec![
            vec![Some("b".into()), Some("2".into())],
            vec![Some("a".into()), Some("3".into())]
        ]
    );
    // Comments survive the restart; DELETE ... RETURNING returns the rows
    // it removed from a Parquet file.
    assert_eq!(
        rows(
            &client,
            "SELECT obj_description('t'::regclass, 'pg_class'), col_description('t'::regclass, 3)"
        )
        .await,
        vec![vec![Some("calls".into()), Some("latency".into())]]
    );
    let long = format!("COMMENT ON TABLE t IS '{}'", "x".repeat(70 * 1024));
    let err = client.simple_query(&long).await.expect_err("too long");
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("54000"),
        "a 70 KiB comment: {err}"
    );
    assert_eq!(
        rows(
            &client,
            "DELETE FROM t WHERE model = 'b' RETURNING model, v"
        )
        .await,
        vec![vec![Some("b".into()), Some("2".into())]]
    );
    assert_eq!(
        rows(&client, "SELECT count(*) FROM t").await,
        vec![vec![Some("1".into())]]
    );
    server.stop().await;
}

/// A server whose disk is full refuses writes with 58030; restarted with the
/// disk still full, it says where, how much is free and how much it needs
/// (not a bare chain of storage errors); once room is made, every
/// acknowledged row is there. The disk is a 48 MiB tmpfs (the tests run as
/// root, as CI does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_restart_says_where_and_how_much_room_is_needed() {
    use std::process::Command;
    let mount = tempfile::tempdir().expect("tempdir");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount");
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let data = mount.path().join("db");
    let port = crate::harness::free_port();
    let mut server = crate::harness::spawn_server(&data, port);
    let client = crate::harness::wait_ready(port).await;
    client
        .batch_execute(
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, v TEXT);
             INSERT INTO t SELECT now(), 'acknowledged' FROM generate_series(1, 1000)",
        )
        .await
        .expect("setup");
    // Fill the disk.
    let filler = mount.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 64 << 20]);
    let err = client
        .batch_execute(
            "INSERT INTO t SELECT now(), repeat('x', 1000) FROM generate_series(1, 100000)",
        )
        .await
        .expect_err("no room");
    assert_eq!(err.code().map(|c| c.code()), Some("58030"), "{err:?}");
    drop(client);
    let _ = server.kill();
    let _ = server.wait();

    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(&data)
        .env("LOOKOUT_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("restart");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("the disk holding {} is full", data.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("free at least"), "{stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");

    std::fs::remove_file(&filler).expect("make room");
    let mut server = crate::harness::spawn_server(&data, port);
    let client = crate::harness::wait_ready(port).await;
    assert_eq!(
        rows(&client, "SELECT count(*) FROM t WHERE v = 'acknowledged'").await,
        vec![vec![Some("1000".to_string())]]
    );
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
}

/// `lookout sql` (and `import`, which opens the same way) does not answer
/// from a new empty database when the path is mistyped, and on a directory
/// a server holds says how to reach that server instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_refuse_a_missing_or_served_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("typo");
    // `lookout sql [flags] --data <missing> <statement>`: success and stderr.
    let sql = |flags: &[&str], statement: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
            .arg("sql")
            .args(flags)
            .arg("--data")
            .arg(&missing)
            .arg(statement)
            .env("LOOKOUT_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .output()
            .expect("lookout");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stderr) = sql(&[], "SELECT 1");
    assert!(!ok);
    assert!(
        stderr.contains("does not exist") && stderr.contains("--create"),
        "{stderr}"
    );
    assert!(!missing.exists(), "nothing created");

    let (ok, stderr) = sql(&["--create"], "SELECT latency_quantile('a', 0.5)");
    assert!(!ok);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "Error: function latency_quantile(text, double precision) does not exist",
            "Hint: Argument 1 cannot be text; call it as latency_quantile(value numeric, q constant double precision).",
        ],
        "each error once, the hint after it"
    );
    assert!(missing.exists(), "--create made it");

    let port = crate::harness::free_port();
    let mut server = crate::harness::spawn_server(&missing, port);
    let client = crate::harness::wait_ready(port).await;
    let (ok, stderr) = sql(&[], "SELECT 1");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("process {}", server.id()))
            && stderr.contains(&format!("psql -h 127.0.0.1 -p {port} -U lookout lookout")),
        "{stderr}"
    );
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
}
