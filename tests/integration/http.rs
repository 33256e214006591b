//! The HTTP listener through real clients: Prometheus scraping `/metrics`
//! (and promtool checking it), OTLP/HTTP exports in JSON and protobuf, the
//! OpenTelemetry Python SDK tracing an `openai` app, and the bearer token.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, rows, wait_for_rows, wait_ready};

/// The binary serving Postgres on `pg` and HTTP on `http`.
fn spawn(dir: &Path, pg: u16, http: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", &format!("127.0.0.1:{pg}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--data")
        .arg(dir)
        .env("LOOKOUT_LOG", "warn")
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lookout")
}

/// The binary serving a data directory below `dir` with `toml` as its
/// configuration file; the child, its Postgres and HTTP ports, the data
/// directory.
fn spawn_configured(dir: &Path, toml: &str) -> (Child, u16, u16, std::path::PathBuf) {
    let config = dir.join("lookout.toml");
    std::fs::write(&config, toml).expect("config");
    let data = dir.join("data");
    let (pg, http) = (free_port(), free_port());
    let env = [("LOOKOUT_CONFIG", config.to_str().expect("path"))];
    (spawn(&data, pg, http, &env), pg, http, data)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An HTTP client that hands back every status rather than failing on 4xx/5xx.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().expect("GET");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut request = agent().post(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.send(body).expect("POST");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_vec().unwrap_or_default(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Prometheus scrapes the engine's metrics, and promtool finds them well formed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_engines_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pg, http) = (free_port(), free_port());
    let server = spawn(dir.path(), pg, http, &[]);
    let client = wait_ready(pg).await;
    let url = format!("http://127.0.0.1:{http}/metrics");
    let scrape = |url: String| async move {
        tokio::task::spawn_blocking(move || get(&url))
            .await
            .expect("join")
    };
    let (_, before) = scrape(url.clone()).await;
    for sql in [
        "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION)",
        "INSERT INTO calls VALUES ('2026-12-01 00:00:00+00', 'a', 120), ('2026-12-01 00:01:00+00', 'b', 80)",
        "SELECT count(*) FROM calls",
        "SELECT * FROM no_such_table",
    ] {
        let _ = client.simple_query(sql).await;
    }
    let (status, text) = scrape(url.clone()).await;
    assert_eq!(status, 200, "{text}");
    // The engine runs statements of its own (alerts, review queues), so
    // what this test did shows in the differences.
    let delta = |series: &str| value(&text, series) - value(&before, series);
    assert_eq!(
        delta("lookout_statements_total{kind=\"insert\",outcome=\"ok\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        delta("lookout_statements_total{kind=\"select\",outcome=\"error\"}"),
        1.0,
        "{text}"
    );
    assert!(
        delta("lookout_statements_total{kind=\"select\",outcome=\"ok\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        delta("lookout_statements_total{kind=\"ddl\",outcome=\"ok\"}"),
        1.0,
        "{text}"
    );
    assert!(
        delta("lookout_rows_written_total{via=\"wal\"}") >= 2.0,
        "{text}"
    );
    assert!(value(&text, "lookout_connections") >= 1.0, "{text}");
    for family in [
        "lookout_wal_sync_seconds_count ",
        "lookout_statement_seconds_bucket{le=",
        "lookout_column_cache_hits_total ",
        "lookout_buffered_bytes ",
    ] {
        assert!(text.contains(family), "{family:?} missing:\n{text}");
    }
    // Prometheus asks for OpenMetrics and gets it.
    let openmetrics = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let mut r = agent()
                .get(&url)
                .header(
                    "Accept",
                    "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
                )
                .call()
                .expect("GET");
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                content_type,
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        }
    })
    .await
    .expect("join");
    assert!(
        openmetrics.0.starts_with("application/openmetrics-text"),
        "{}",
        openmetrics.0
    );
    assert!(openmetrics.1.ends_with("# EOF\n"), "{}", openmetrics.1);
    assert!(!text.contains("# EOF"), "{text}");
    // promtool reads the classic exposition and lints names, types and units.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; .ci/run does)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scraping the listener every second.
    let prom_dir = tempfile::tempdir().expect("tempdir");
    let prom_port = free_port();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lookout\n    static_configs:\n      - targets: ['127.0.0.1:{http}']\n"
        ),
    )
    .expect("config");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .current_dir(prom_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus; .ci/run does)");
    let query = format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=lookout_statements_total%7Bkind%3D%22insert%22%7D"
    );
    let up = format!("http://127.0.0.1:{prom_port}/api/v1/query?query=up%7Bjob%3D%22lookout%22%7D");
    let answer = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            let inserts = agent()
                .get(&query)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok());
            let health = agent()
                .get(&up)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok());
            if let (Some(inserts), Some(health)) = (&inserts, &health)
                && inserts.contains("\"outcome\":\"ok\"")
                && health.contains("\"1\"]")
            {
                return (inserts.clone(), health.clone());
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "Prometheus did not scrape Lookout: {inserts:?} {health:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .expect("join");
    assert!(answer.1.contains("\"lookout\""), "{}", answer.1);
    stop(prometheus);
    drop(client);
    stop(server);
}

/// The value of `series` (name and labels as printed) in an exposition; 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// One JSON span of an export: `attributes` as OTLP JSON key-values.
fn json_span(trace: &str, span: &str, start_ns: u64, attributes: &str) -> String {
    format!(
        r#"{{"traceId":"{trace}","spanId":"{span}","name":"chat judge-small","kind":3,
            "startTimeUnixNano":"{start_ns}","endTimeUnixNano":"{}",
            "attributes":[{attributes}],"status":{{"code":1}}}}"#,
        start_ns + 250_000_000
    )
}

const GENAI: &str = r#"{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
    {"key":"gen_ai.request.model","value":{"stringValue":"judge-small"}},
    {"key":"gen_ai.usage.input_tokens","value":{"intValue":"11"}},
    {"key":"gen_ai.usage.output_tokens","value":{"intValue":"7"}},
    {"key":"gen_ai.input.messages","value":{"stringValue":"secret prompt"}}"#;

/// OTLP JSON (gzip) and protobuf exports: GenAI spans stored durably before
/// the 200, malformed ones counted in a partial success, other spans
/// skipped, bad requests answered 400/415, and the bearer token enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_are_stored_before_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pg, http) = (free_port(), free_port());
    let token = "s3cret-token";
    let server = spawn(dir.path(), pg, http, &[("LOOKOUT_HTTP_TOKEN", token)]);
    drop(wait_ready(pg).await);
    let url = format!("http://127.0.0.1:{http}/v1/traces");
    let start = 1_764_806_400_000_000_000u64; // 2025-12-04
    let spans = [
        json_span(
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            start,
            GENAI,
        ),
        json_span(
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b175",
            start + 1_000_000_000,
            GENAI,
        ),
        // Malformed: a span id of 4 bytes.
        json_span("5b8efff798038103d269b633813fc60c", "eee19b7e", start, GENAI),
        // Not a GenAI call: skipped.
        json_span(
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b176",
            start,
            r#"{"key":"http.method","value":{"stringValue":"GET"}}"#,
        ),
    ];
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"judge"}}}}]}},
            "scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    );
    let bearer = format!("Bearer {token}");
    let answers = tokio::task::spawn_blocking({
        let url = url.clone();
        let bearer = bearer.clone();
        move || {
            let json = [("Content-Type", "application/json")];
            let unauthorized = post(&url, &json, body.as_bytes());
            let wrong_token = post(
                &url,
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", "Bearer nope"),
                ],
                body.as_bytes(),
            );
            let auth = [
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Authorization", bearer.as_str()),
            ];
            let stored = post(&url, &auth, &gzip(body.as_bytes()));
            let garbage = post(
                &url,
                &[
                    ("Content-Type", "application/x-protobuf"),
                    ("Authorization", bearer.as_str()),
                ],
                b"\xff\xff\xff\xff",
            );
            let text = post(
                &url,
                &[
                    ("Content-Type", "text/plain"),
                    ("Authorization", bearer.as_str()),
                ],
                b"hello",
            );
            let bomb = post(
                &url,
                &[
                    ("Content-Type", "application/json"),
                    ("Content-Encoding", "gzip"),
                    ("Authorization", bearer.as_str()),
                ],
                &gzip(&vec![b' '; 40 << 20]),
            );
            [unauthorized, wrong_token, stored, garbage, text, bomb]
        }
    })
    .await
    .expect("join");
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [401, 401, 200, 400, 415, 413]);
    let partial: serde_json::Value = serde_json::from_slice(&answers[2].1).expect("JSON answer");
    // OTLP JSON writes 64-bit integers as strings; either form is read.
    let rejected = partial["partialSuccess"]["rejectedSpans"].to_string();
    assert_eq!(rejected.trim_matches('"'), "1", "{partial}");
    let why = partial["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("span id"), "{partial}");
    // Durable before the answer: killed at once, the rows are there after a restart.
    stop(server);
    let server = spawn(dir.path(), pg, http, &[("LOOKOUT_HTTP_TOKEN", token)]);
    let client = wait_ready(pg).await;
    let got = rows(
        &client,
        "SELECT model, operation, input_tokens, output_tokens, service, status, duration_ms, content IS NULL, \
         attributes, span_id FROM genai_calls ORDER BY ts",
    )
    .await;
    let expected = |span: &str| {
        [
            "judge-small",
            "chat",
            "11",
            "7",
            "judge",
            "ok",
            "250",
            "t",
            "{}",
            span,
        ]
        .map(|s| Some(s.to_string()))
        .to_vec()
    };
    assert_eq!(
        got,
        vec![expected("eee19b7ec3c1b174"), expected("eee19b7ec3c1b175")]
    );

    // The same call as protobuf, as the SDK's exporter sends it.
    let proto = protobuf_export(start + 2_000_000_000);
    let (status, answer) = tokio::task::spawn_blocking(move || {
        post(
            &url,
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Authorization", bearer.as_str()),
            ],
            &proto,
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200);
    // An empty ExportTraceServiceResponse: no partial success.
    assert!(answer.is_empty(), "{answer:?}");
    wait_for_rows(
        &client,
        "SELECT count(*) FROM genai_calls",
        Duration::from_secs(5),
        |r| r[0][0].as_deref() == Some("3"),
    )
    .await;
    drop(client);
    stop(server);
}

/// An ExportTraceServiceRequest with one GenAI span, encoded by hand from
/// the protobuf definitions (field numbers of trace.proto and common.proto).
fn protobuf_export(start_ns: u64) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 1), out);
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn string_attr(key: &str, value: &str) -> Vec<u8> {
        let mut any = Vec::new();
        field(1, value.as_bytes(), &mut any);
        let mut kv = Vec::new();
        field(1, key.as_bytes(), &mut kv);
        field(2, &any, &mut kv);
        kv
    }
    let mut span = Vec::new();
    field(1, &[7; 16], &mut span);
    field(2, &[9; 8], &mut span);
    field(5, b"chat judge-small", &mut span);
    fixed64(7, start_ns, &mut span);
    fixed64(8, start_ns + 100_000_000, &mut span);
    field(9, &string_attr("gen_ai.operation.name", "chat"), &mut span);
    field(
        9,
        &string_attr("gen_ai.request.model", "judge-small"),
        &mut span,
    );
    let mut scope_spans = Vec::new();
    field(2, &span, &mut scope_spans);
    let mut resource_spans = Vec::new();
    field(2, &scope_spans, &mut resource_spans);
    let mut request = Vec::new();
    field(1, &resource_spans, &mut request);
    request
}

/// End to end: an `openai` app instrumented by OpenTelemetry's GenAI
/// instrumentation exports its calls to Lookout; they read back over SQL;
/// an evaluator judges them with a local judge; an alert on the judge's
/// scores fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instrumented_openai_app_traces_into_lookout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let judge = crate::evaluators::FakeJudge::start(dir.path()).await;
    let (server, pg, http, _) =
        spawn_configured(dir.path(), "[server]\nevaluator_interval = \"100ms\"\n");
    let client = wait_ready(pg).await;
    // The calls table as the first export would create it, so the
    // evaluator and the alert can be defined before the app runs.
    let ddl = include_str!("../../docs/genai-tracing.md")
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the documented CREATE TABLE");
    client.batch_execute(ddl).await.expect("create genai_calls");
    client
        .batch_execute(&format!(
            "CREATE EVALUATOR answer_quality ON genai_calls KEY span_id WHERE status <> 'error'
               ENDPOINT 'http://127.0.0.1:{}/v1' MODEL 'judge-small'
               PROMPT 'Rate the answer of {{{{model}}}} ({{{{output_tokens}}}} tokens) from 0 to 1.';
             CREATE ALERT judge_scores_low EVERY '1 second' SEVERITY P1 WHEN value < 0.5
             AS SELECT avg(score) AS value FROM judge_scores
                WHERE evaluator = 'answer_quality' AND ts >= now() - INTERVAL '1 hour' AND ts < now();",
            judge.port
        ))
        .await
        .expect("evaluator and alert");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/otlp_genai.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--otlp", &format!("http://127.0.0.1:{http}")])
        .args(["--pg", &pg.to_string()]);
    crate::harness::run_program(
        cmd,
        "python3 tests/clients/otlp_genai.py (pip install -r tests/requirements.txt)",
    )
    .await;
    // Three successful calls judged (the fake judge scores them 0.2) ...
    wait_for_rows(
        &client,
        "SELECT count(*), min(score), max(score) FROM judge_scores WHERE evaluator = 'answer_quality'",
        Duration::from_secs(30),
        |r| r[0][0].as_deref() == Some("3"),
    )
    .await;
    // ... and the alert on the judge's scores fires.
    wait_for_rows(
        &client,
        "SELECT state FROM lookout.alert_instances WHERE rule = 'judge_scores_low'",
        Duration::from_secs(30),
        |r| r.first().and_then(|r| r[0].as_deref()) == Some("firing"),
    )
    .await;
    drop(client);
    stop(server);
}

/// Off loopback, the HTTP listener needs a bearer token.
#[test]
fn http_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("0.0.0.0:{}", free_port())])
        .arg("--data")
        .arg(dir.path())
        .env_remove("LOOKOUT_HTTP_TOKEN")
        .output()
        .expect("run lookout");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a bearer token"), "{stderr}");
}

/// With `[http] tls = true` the listener speaks HTTPS only, with the
/// `[tls]` certificate, and still asks for the token (curl as the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_metrics_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(made.success());
    let config = dir.path().join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[http]\ntls = true\nbearer_token = \"tok-123\"\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let (pg, http) = (free_port(), free_port());
    let data = dir.path().join("data");
    let server = spawn(
        &data,
        pg,
        http,
        &[("LOOKOUT_CONFIG", config.to_str().expect("path"))],
    );
    drop(wait_ready(pg).await);
    let curl = |args: Vec<String>| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let https = format!("https://127.0.0.1:{http}/metrics");
    let cacert = cert.display().to_string();
    let answers = tokio::task::spawn_blocking(move || {
        [
            curl(vec![
                "--cacert".into(),
                cacert.clone(),
                "-H".into(),
                "Authorization: Bearer tok-123".into(),
                https.clone(),
            ]),
            curl(vec!["--cacert".into(), cacert, https]),
            curl(vec![format!("http://127.0.0.1:{http}/metrics")]),
        ]
    })
    .await
    .expect("join");
    // Plain HTTP gets no HTTP answer at all (000).
    assert_eq!(answers, ["200", "401", "000"].map(String::from));
    stop(server);
}

/// Creates `calls` with two rows of these latencies.
async fn two_calls(client: &tokio_postgres::Client, first: f64, second: f64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION); \
             INSERT INTO calls VALUES ('2026-12-01 00:00:00+00', 'a', {first}), \
             ('2026-12-01 00:01:00+00', 'b', {second})"
        ))
        .await
        .expect("insert");
}

/// A served store's tables are Delta tables: rows flushed by the server
/// reach the table's Delta log within seconds, and the lag metric says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_tables_are_published_as_delta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, pg, http, data) =
        spawn_configured(dir.path(), "[storage]\nflush_age = \"1 second\"\n");
    let client = wait_ready(pg).await;
    two_calls(&client, 120.0, 80.0).await;
    let url = format!("http://127.0.0.1:{http}/metrics");
    let mut published = false;
    for _ in 0..150 {
        let url = url.clone();
        let (_, text) = tokio::task::spawn_blocking(move || get(&url))
            .await
            .expect("join");
        let log = data.join("data/calls/_delta_log");
        // Created, then the flushed file added: version 1 at least.
        if log.join("00000000000000000001.json").exists()
            && text.contains("lookout_delta_lag_versions 0")
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(published, "no Delta log for calls within 30 s");
    // A pass may have published the new table (its creation and its
    // definition) before the flush: the rows follow on a later pass.
    let mut read = serde_json::Value::Null;
    for _ in 0..30 {
        read = crate::delta::read_as_delta(&data.join("data/calls"), "latency_ms");
        if read["deltalake"]["rows"].as_i64() == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(read["deltalake"]["rows"].as_i64(), Some(2), "{read}");
    assert_eq!(read["deltalake"]["sum"].as_f64(), Some(200.0), "{read}");
    drop(client);
    stop(server);
}

/// Servers killed with SIGKILL while rows flow into a table and its rollup
/// (so while Delta commits of two tables are in flight) leave logs the next
/// server brings in step: in the end deltalake reads every acknowledged row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_logs_catch_up_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = "[storage]\nflush_age = \"1 second\"\n";
    let mut acknowledged = 0i64;
    for round in 0..4u64 {
        let (server, pg, _, _) = spawn_configured(dir.path(), toml);
        let client = wait_ready(pg).await;
        if round == 0 {
            client
                .batch_execute(
                    "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, latency_ms DOUBLE PRECISION); \
                     CREATE ROLLUP calls_minutely ON calls GROUP BY model EVERY '1 minute' AS (count(*))",
                )
                .await
                .expect("create");
        }
        // Writes until killed at a different moment each round.
        let stop_at = std::time::Instant::now() + Duration::from_millis(700 + 450 * round);
        while std::time::Instant::now() < stop_at {
            client
                .batch_execute(
                    "INSERT INTO calls SELECT now(), 'm' || (i % 3), i FROM generate_series(1, 50) AS g(i)",
                )
                .await
                .expect("insert");
            acknowledged += 50;
        }
        stop(server);
    }
    let (server, pg, http, data) = spawn_configured(dir.path(), toml);
    let client = wait_ready(pg).await;
    let url = format!("http://127.0.0.1:{http}/metrics");
    let mut last = serde_json::Value::Null;
    for _ in 0..150 {
        let shown: i64 = client
            .query_one("SELECT count(*) FROM calls", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(shown, acknowledged, "every acknowledged row survives");
        let url = url.clone();
        let (_, metrics) = tokio::task::spawn_blocking(move || get(&url))
            .await
            .expect("join");
        if metrics.contains("lookout_delta_lag_versions 0") {
            last = crate::delta::read_as_delta(&data.join("data/calls"), "latency_ms");
            let rollup = crate::delta::read_as_delta(&data.join("data/calls_minutely"), "count");
            if last["deltalake"]["rows"].as_i64() == Some(acknowledged)
                && rollup["deltalake"]["sum"].as_f64() == Some(acknowledged as f64)
            {
                drop(client);
                stop(server);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the Delta logs did not catch up with {acknowledged} rows: {last}");
}

/// A server stopped with SIGTERM flushes its buffered rows and brings the
/// Delta logs in step before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_publishes_the_last_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, pg, _, data) = spawn_configured(dir.path(), "");
    let client = wait_ready(pg).await;
    two_calls(&client, 1.5, 2.5).await;
    drop(client);
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let read = crate::delta::read_as_delta(&data.join("data/calls"), "latency_ms");
    assert_eq!(read["deltalake"]["rows"].as_i64(), Some(2), "{read}");
    assert_eq!(read["polars"]["sum"].as_f64(), Some(4.0), "{read}");
}
