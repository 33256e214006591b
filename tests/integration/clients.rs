//! Real drivers and tools against a running server: psycopg 3, asyncpg,
//! SQLAlchemy + pandas (tests/clients/python_clients.py) and pgjdbc
//! (tests/clients/JdbcClient.java), each connecting, introspecting, querying
//! the bench data, inserting and recovering from errors.

use std::path::Path;
use std::process::Command;

use crate::harness::{TestServer, alert_statements, generate_events};

const ROWS: usize = 20_000;

/// A server holding `ROWS` bench events, an empty `client_notes` table and the
/// alert views in the `lookout` schema.
async fn server_with_events() -> (TestServer, lookout_alerts::AlertEngine, tempfile::TempDir) {
    let server = TestServer::start().await;
    let alerts = alert_statements(&server.lookout).await;
    let data = tempfile::tempdir().expect("tempdir");
    let files = generate_events(data.path(), ROWS, 1);
    let client = server.client().await;
    for file in &files {
        client
            .batch_execute(&format!(
                "COPY events FROM '{}' WITH (FORMAT parquet)",
                file.display()
            ))
            .await
            .expect("import");
    }
    client
        .batch_execute(
            "CREATE TABLE client_notes (ts TIMESTAMPTZ NOT NULL, model TEXT, \
             value DOUBLE PRECISION, ok BOOLEAN)",
        )
        .await
        .expect("create");
    (server, alerts, data)
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_and_sqlalchemy() {
    let (server, _alerts, _data) = server_with_events().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_clients.py");
    let port = server.addr.port().to_string();
    let rows = ROWS.to_string();
    tokio::task::spawn_blocking(move || {
        run(
            Command::new("python3").arg(script).args([&port, &rows]),
            "python_clients.py (pip install -r tests/requirements.txt)",
        )
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let (server, _alerts, _data) = server_with_events().await;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/JdbcClient.java");
    let port = server.addr.port().to_string();
    let rows = ROWS.to_string();
    tokio::task::spawn_blocking(move || {
        run(
            Command::new("java")
                .args(["-cp", "/usr/share/java/postgresql.jar"])
                .arg(source)
                .args([&port, &rows]),
            "JdbcClient.java (apt-get install default-jdk-headless libpostgresql-jdbc-java)",
        )
    })
    .await
    .expect("join");
}
