//! Several servers over one store: read-only replicas of a local data
//! directory and of an S3 bucket (moto's S3 server, which enforces the
//! conditional puts commits rely on), one writer at a time, and a writer
//! replaced after kill -9 without losing an acknowledged row.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{error_code, free_port, rows, wait_for_rows, wait_ready};

/// The bucket the S3 tests use.
pub(crate) const BUCKET: &str = "lookout-test";

/// `lookout serve` on `port` with these extra arguments and environment.
pub(crate) fn serve(port: u16, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("LOOKOUT_LOG", "warn")
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A configuration file with fast flushes and a replica that looks for
/// commits every 200 ms.
pub(crate) fn fast_config(dir: &Path) -> String {
    let path = dir.join("lookout.toml");
    std::fs::write(
        &path,
        "[storage]\nflush_age = \"1 second\"\nfollow_interval = \"200 ms\"\n",
    )
    .expect("config");
    path.display().to_string()
}

/// Kills the child when dropped, so a failing test leaves no server behind.
pub(crate) struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start(cmd: &mut Command) -> Running {
    Running(cmd.spawn().expect("spawn lookout"))
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// Polls `count(*)` of `table` until it is `want`.
async fn wait_count(client: &tokio_postgres::Client, table: &str, want: i64) {
    let sql = format!("SELECT count(*) FROM {table}");
    wait_for_rows(client, &sql, Duration::from_secs(30), |r| {
        r.first()
            .and_then(|row| row[0].as_deref())
            .and_then(|v| v.parse::<i64>().ok())
            == Some(want)
    })
    .await;
}

/// A replica of a local data directory answers what the writer flushed,
/// says how far it is behind, looks like a hot standby to drivers, and
/// refuses every write with 25006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_follows_a_local_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast_config(dir.path());
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let (wp, rp) = (free_port(), free_port());
    let _writer = start(&mut serve(
        wp,
        &["--data", &data_arg, "--config", &config],
        &[],
    ));
    let writer = wait_ready(wp).await;
    writer
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION); \
             INSERT INTO calls VALUES ('2026-12-01 00:00:00+00', 'a', 120), ('2026-12-01 00:01:00+00', 'b', 80)",
        )
        .await
        .expect("write");
    let _replica = start(&mut serve(
        rp,
        &["--data", &data_arg, "--config", &config, "--read-only"],
        &[],
    ));
    let replica = wait_ready(rp).await;
    wait_count(&replica, "calls", 2).await;
    writer
        .batch_execute("INSERT INTO calls VALUES ('2026-12-01 00:02:00+00', 'a', 100)")
        .await
        .expect("write");
    wait_count(&replica, "calls", 3).await;
    let sum: f64 = replica
        .query_one("SELECT sum(latency_ms) FROM calls", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(sum, 300.0);
    for write in [
        "INSERT INTO calls VALUES ('2026-12-01 00:03:00+00', 'a', 1)",
        "CREATE TABLE other (ts TIMESTAMPTZ NOT NULL)",
        "DELETE FROM calls WHERE model = 'a'",
        "DROP TABLE calls",
        // Refused before any data is sent, as by a PostgreSQL standby.
        "COPY calls FROM STDIN",
    ] {
        assert_eq!(error_code(&replica, write).await, "25006", "{write}");
    }
    assert_eq!(count(&replica, "calls").await, 3, "nothing changed");
    assert_eq!(count(&writer, "calls").await, 3);
    let shown = rows(&replica, "SHOW transaction_read_only").await;
    assert_eq!(shown, vec![vec![Some("on".to_string())]]);
    let shown = rows(&writer, "SHOW transaction_read_only").await;
    assert_eq!(shown, vec![vec![Some("off".to_string())]]);
    // Failover tools ask pg_is_in_recovery() which server is the standby.
    let asked = "SELECT pg_is_in_recovery(), pg_catalog.pg_is_in_recovery()";
    let in_recovery = rows(&replica, asked).await;
    assert_eq!(in_recovery, vec![vec![Some("t".to_string()); 2]]);
    let in_recovery = rows(&writer, asked).await;
    assert_eq!(in_recovery, vec![vec![Some("f".to_string()); 2]]);
    let status = rows(
        &replica,
        "SELECT role, manifest_version > 0, committed_at IS NOT NULL, lag_seconds < 10, following \
         FROM lookout.replication",
    )
    .await;
    let yes = Some("t".to_string());
    assert_eq!(
        status,
        vec![vec![
            Some("replica".to_string()),
            yes.clone(),
            yes.clone(),
            yes.clone(),
            yes
        ]]
    );
    let role = rows(&writer, "SELECT role FROM lookout.replication").await;
    assert_eq!(role, vec![vec![Some("writer".to_string())]]);
    // libpq's target_session_attrs tells them apart, whichever host is first.
    for (attrs, ports, want) in [
        ("read-write", format!("{rp},{wp}"), "writer"),
        ("read-only", format!("{wp},{rp}"), "replica"),
    ] {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1,127.0.0.1 port={ports} user=lookout dbname=lookout target_session_attrs={attrs}"
            ))
            .args(["-XAtc", "SELECT role FROM lookout.replication"])
            .output()
            .expect("psql");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{attrs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Alert rules made on the writer are back-tested on the replica; none
    // can be made there.
    writer
        .batch_execute(
            "CREATE ALERT slow_calls EVERY '1 minute' SEVERITY P1 WHEN value > 100 \
             AS SELECT model, avg(latency_ms) AS value FROM calls \
             WHERE ts >= now() - INTERVAL '1 hour' AND ts < now() GROUP BY model",
        )
        .await
        .expect("create alert");
    let backtest =
        "BACKTEST ALERT slow_calls FROM '2026-12-01 00:00:00+00' TO '2026-12-01 01:00:00+00'";
    let mut backtested = Err(String::new());
    for _ in 0..150 {
        backtested = replica
            .simple_query(backtest)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if backtested.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(backtested, Ok(()), "{backtest}");
    assert_eq!(
        error_code(
            &replica,
            "CREATE ALERT other EVERY '1 minute' SEVERITY P1 WHEN value > 1 AS SELECT 1.0 AS value"
        )
        .await,
        "25006"
    );
    // A table the writer drops leaves the replica too.
    writer
        .batch_execute("DROP TABLE calls")
        .await
        .expect("drop");
    let gone = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'calls'";
    wait_for_rows(&replica, gone, Duration::from_secs(30), |r| {
        r == [vec![Some("0".to_string())]]
    })
    .await;
}

/// moto's S3 server on a free port, with the test bucket created.
pub(crate) async fn moto() -> (Running, u16) {
    let port = free_port();
    let server = start(
        Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let created = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for _ in 0..300 {
            if let Ok(r) = agent.put(&format!("{url}/{BUCKET}")).send_empty() {
                return r.status().as_u16();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        0
    })
    .await
    .expect("join");
    assert_eq!(
        created, 200,
        "moto did not start (pip install 'moto[server]')"
    );
    (server, port)
}

/// The `AWS_*` variables that point the store at moto.
pub(crate) fn aws_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// Keys in the bucket under `prefix`, as S3's ListObjectsV2 gives them.
pub(crate) async fn bucket_keys(port: u16, prefix: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/{BUCKET}?list-type=2&prefix={prefix}");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("list")
            .body_mut()
            .read_to_string()
            .expect("body")
    })
    .await
    .expect("join")
}

/// A database on S3: its files and manifests are in the bucket, a second
/// writer is refused while the first holds the lease, a replica follows,
/// and the writer killed with SIGKILL is replaced on its WAL directory
/// without losing an acknowledged row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_on_s3_has_one_writer_and_replicas() {
    let (_moto, s3_port) = moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast_config(dir.path());
    let env = aws_env(s3_port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = format!("s3://{BUCKET}/team/lookout");
    let wal = |name: &str| dir.path().join(name).display().to_string();
    let (wal_a, wal_b, wal_r) = (wal("wal-a"), wal("wal-b"), wal("wal-r"));
    let writer_args = |wal: &str| {
        ["--data", &location, "--wal-dir", wal, "--config", &config].map(str::to_string)
    };
    let args_a = writer_args(&wal_a);
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let (wp, bp, rp) = (free_port(), free_port(), free_port());
    let writer_process = start(&mut serve(wp, &args_a, &env));
    let writer = wait_ready(wp).await;
    writer
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION); \
             INSERT INTO calls SELECT now(), 'm' || (i % 3), i FROM generate_series(1, 100) AS g(i)",
        )
        .await
        .expect("write");

    // A second writer with its own WAL directory is refused.
    let args_b = writer_args(&wal_b);
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let mut second = serve(bp, &args_b, &env);
    second.stderr(Stdio::piped());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || second.output()),
    )
    .await
    .expect("the second writer exits")
    .expect("join")
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("in use by another Lookout process") && stderr.contains(&wal_a),
        "{stderr}"
    );

    let mut replica_args = vec![
        "--data",
        &location,
        "--wal-dir",
        &wal_r,
        "--config",
        &config,
    ];
    replica_args.push("--read-only");
    let _replica_process = start(&mut serve(rp, &replica_args, &env));
    let replica = wait_ready(rp).await;
    wait_count(&replica, "calls", 100).await;
    assert_eq!(
        error_code(&replica, "INSERT INTO calls VALUES (now(), 'x', 1)").await,
        "25006"
    );
    let keys = bucket_keys(s3_port, "team/lookout/").await;
    assert!(keys.contains("team/lookout/_manifest/"), "{keys}");
    assert!(keys.contains(".parquet"), "{keys}");
    assert!(
        keys.contains("team/lookout/_lookout/writer-lease.json"),
        "{keys}"
    );
    assert!(
        !dir.path().join("wal-a/data").exists(),
        "no table file is kept locally"
    );

    // Rows acknowledged just before a SIGKILL are in the WAL only.
    writer
        .batch_execute("INSERT INTO calls SELECT now(), 'm', i FROM generate_series(1, 50) AS g(i)")
        .await
        .expect("write");
    drop(writer);
    drop(writer_process);
    let replacement_process = start(&mut serve(wp, &args_a, &env));
    let replacement = wait_ready(wp).await;
    assert_eq!(count(&replacement, "calls").await, 150);
    wait_count(&replica, "calls", 150).await;
    let sum: f64 = replica
        .query_one("SELECT sum(latency_ms) FROM calls", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(sum, 5050.0 + 1275.0);

    // Stopped cleanly, the writer releases its lease: another machine's
    // writer (here: another WAL directory) starts at once.
    let status = Command::new("kill")
        .args(["-TERM", &replacement_process.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    drop(replacement);
    let mut replacement_process = replacement_process;
    let mut exit = None;
    for _ in 0..300 {
        exit = replacement_process.0.try_wait().expect("wait");
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = exit.expect("the writer stops within 30 s");
    assert!(exit.success(), "{exit:?}");
    let _other = start(&mut serve(bp, &args_b, &env));
    let other = wait_ready(bp).await;
    assert_eq!(count(&other, "calls").await, 150);
}

/// Roles created and dropped in SQL on the writer reach its replica: a
/// dropped role stops logging in there too, and no role can be made there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_follow_the_writer_to_its_replica() {
    use crate::auth::{login, verifier};
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = verifier("admin pw");
    let config = dir.path().join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nflush_age = \"1 second\"\nfollow_interval = \"200 ms\"\n\n\
             [[auth.users]]\nname = \"admin\"\npassword = \"{admin}\"\nrole = \"admin\"\n"
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let data = dir.path().join("data").display().to_string();
    let (wp, rp) = (free_port(), free_port());
    let _writer = start(&mut serve(wp, &["--data", &data, "--config", &config], &[]));
    let mut writer = None;
    for _ in 0..300 {
        if let Ok(c) = login(wp, "admin", "admin pw").await {
            writer = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writer = writer.expect("the writer serves");
    let _replica = start(&mut serve(
        rp,
        &["--data", &data, "--config", &config, "--read-only"],
        &[],
    ));
    writer
        .batch_execute("CREATE ROLE grafana LOGIN PASSWORD 'g pw' IN ROLE reader")
        .await
        .expect("create role");
    let until = |want_ok: bool| async move {
        for _ in 0..300 {
            if login(rp, "grafana", "g pw").await.is_ok() == want_ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("grafana's login on the replica never became {want_ok}");
    };
    until(true).await;
    let on_replica = login(rp, "admin", "admin pw").await.expect("admin");
    assert_eq!(
        error_code(&on_replica, "CREATE ROLE other LOGIN PASSWORD 'x'").await,
        "25006"
    );
    writer
        .batch_execute("DROP ROLE grafana")
        .await
        .expect("drop role");
    until(false).await;
    assert_eq!(
        login(rp, "grafana", "g pw").await.err().as_deref(),
        Some("28P01")
    );
}
