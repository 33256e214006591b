//! Real drivers and tools against a running server: psycopg 3, asyncpg,
//! SQLAlchemy + pandas (tests/clients/python_clients.py) and pgjdbc
//! (tests/clients/JdbcClient.java), each connecting, introspecting, querying
//! the bench data, inserting and recovering from errors.

use std::path::Path;
use std::process::Command;

use crate::harness::{
    TestServer, alert_statements, generate_events, run_on_fresh_server, run_program,
};

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

/// Runs a client program against a server with the bench events; it gets
/// the port and the row count as its last two arguments.
async fn run_client(program: &str, args: &[&str], install_hint: &'static str) {
    let (server, _alerts, _data) = server_with_events().await;
    let mut cmd = Command::new(program);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .args([server.addr.port().to_string(), ROWS.to_string()]);
    run_program(cmd, install_hint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_and_sqlalchemy() {
    run_client(
        "python3",
        &["tests/clients/python_clients.py"],
        "python_clients.py (pip install -r tests/requirements.txt)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    run_client(
        "java",
        &[
            "-cp",
            "/usr/share/java/postgresql.jar",
            "tests/clients/JdbcClient.java",
        ],
        "JdbcClient.java (apt-get install default-jdk-headless libpostgresql-jdbc-java)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_transactions_and_list_parameters() {
    run_on_fresh_server(
        "python3",
        &["transactions.py"],
        "transactions.py (pip install -r tests/requirements.txt)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_parameters_and_transactions() {
    run_on_fresh_server(
        "node",
        &["transactions.js"],
        "transactions.js (npm ci in tests/clients)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_writes() {
    run_on_fresh_server(
        "java",
        &["-cp", "/usr/share/java/postgresql.jar", "JdbcWrites.java"],
        "JdbcWrites.java (apt-get install default-jdk-headless libpostgresql-jdbc-java)",
    )
    .await;
}

/// Grafana's PostgreSQL macros, expanded as its data source does (macros.go)
/// for a dashboard range of `from`..`to` (RFC 3339).
pub(crate) fn expand_grafana_macros(sql: &str, from: &str, to: &str) -> String {
    fn seconds(interval: &str) -> u64 {
        let interval = interval.trim().trim_matches('\'');
        let (n, unit) = interval.split_at(interval.len() - 1);
        let n: u64 = n.parse().expect("interval");
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => panic!("interval unit {other}"),
        }
    }
    let mut out = sql
        .replace("$__timeFrom()", &format!("'{from}'"))
        .replace("$__timeTo()", &format!("'{to}'"));
    for (name, alias) in [
        ("$__timeGroupAlias(", true),
        ("$__timeGroup(", false),
        ("$__timeFilter(", false),
    ] {
        while let Some(at) = out.find(name) {
            let args_at = at + name.len();
            let end = args_at + out[args_at..].find(')').expect("macro args");
            let args: Vec<&str> = out[args_at..end].split(',').map(str::trim).collect();
            let expansion = if name == "$__timeFilter(" {
                format!("{} BETWEEN '{from}' AND '{to}'", args[0])
            } else {
                let group = format!(
                    "floor(extract(epoch from {})/{s})*{s}",
                    args[0],
                    s = seconds(args[1])
                );
                if alias {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            };
            out.replace_range(at..=end, &expansion);
        }
    }
    out
}

/// Every query of the Grafana dashboard in docs/ runs against the bench
/// data over the extended protocol with binary results, as pgx sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_run() {
    let (server, _alerts, _data) = server_with_events().await;
    let client = server.client().await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/lookout-monitoring.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let (from, to) = ("2025-01-01T00:00:00Z", "2025-01-08T00:00:00Z");
    let mut queries: Vec<(String, String)> = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        queries.push((
            format!("variable {}", variable["name"]),
            variable["query"].as_str().expect("query").to_string(),
        ));
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((
                format!("{} / {}", panel["title"], target["refId"]),
                target["rawSql"].as_str().expect("rawSql").to_string(),
            ));
        }
    }
    assert!(queries.len() >= 6);
    // `$model` as Grafana interpolates a multi-value variable: first every
    // model (the "All" choice), then one, which must narrow the panel.
    let models: Vec<String> = client
        .query(expand_grafana_macros(&queries[0].1, from, to).as_str(), &[])
        .await
        .expect("variable query")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    assert!(models.len() >= 2, "{models:?}");
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|m| format!("'{}'", m.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let filtered = queries
        .iter()
        .filter(|(_, sql)| sql.contains("$model"))
        .count();
    assert!(filtered >= 5, "every events panel filters by $model");
    for (what, sql) in queries {
        let all = expand_grafana_macros(&sql, from, to).replace("$model", &quoted(&models));
        if sql.contains("$model") {
            let one =
                expand_grafana_macros(&sql, from, to).replace("$model", &quoted(&models[..1]));
            let rows_all = crate::harness::rows(&client, &all).await;
            let rows_one = crate::harness::rows(&client, &one).await;
            assert!(
                !rows_one.is_empty() && rows_one != rows_all,
                "{what}: choosing one model changes nothing\n{one}"
            );
        }
        let sql = all;
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
        if what.starts_with("\"Alerts\"") {
            continue;
        }
        assert!(!rows.is_empty(), "{what}: no rows\n{sql}");
        if sql.contains("AS \"time\"") {
            // Grafana's time series need a numeric `time` column first.
            let time: f64 = rows[0].get("time");
            assert!(time >= 1_735_689_600.0, "{what}: time {time}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_server_side_cursors_and_pandas_chunks() {
    run_on_fresh_server(
        "python3",
        &["server_cursors.py"],
        "server_cursors.py (pip install -r tests/requirements.txt)",
    )
    .await;
}
