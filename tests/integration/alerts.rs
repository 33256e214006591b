//! Alert rules end to end: the real `lookout` binary evaluating on schedule,
//! a real HTTP receiver (Python's http.server), a real Prometheus
//! Alertmanager, restarts and kill -9; and back-tests on generated bench
//! data that must find exactly the five injected anomalies.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    TestServer, alert_statements, free_port, rows, spawn_server, spawn_server_with, wait_for_rows,
    wait_ready,
};

/// `tests/data/webhook_receiver.py`, appending each POSTed body to a file.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        Self::start_failing(0)
    }

    /// A receiver whose first `fail_first` requests get HTTP 500.
    fn start_failing(fail_first: usize) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let out = dir.path().join("hooks.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/webhook_receiver.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&port_file)
            .arg(&out)
            .arg(fail_first.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let started = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port");
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Receiver {
            child,
            out,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver wrote JSON"))
            .collect()
    }

    async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= count {
                return m;
            }
            assert!(
                started.elapsed() < timeout,
                "expected {count} notifications, got {}: {m:?}",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alert(message: &Value) -> &Value {
    &message["alerts"][0]
}

/// A server process killed when the test ends, even by a panic.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop_cleanly(process: &mut Process) {
    let child = &mut process.0;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait");
    assert!(code.success(), "clean shutdown exits 0, got {code:?}");
}

const SIGNAL_TABLE: &str =
    "CREATE TABLE sig (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, v DOUBLE PRECISION)";

fn live_rule(target: &str, for_: &str) -> String {
    format!(
        "CREATE ALERT lat EVERY '1 second' FOR '{for_}'
           SEVERITY P0 WHEN value > 90, SEVERITY P1 WHEN value > 40
           LABELS (team = 'llm') NOTIFY '{target}'
         AS SELECT DISTINCT ON (model) model, v AS value FROM sig ORDER BY model, ts DESC"
    )
}

/// The table `sig` and rule `lat` over it (P0 above 90, P1 above 40).
async fn create_signal_rule(client: &tokio_postgres::Client, target: &str, for_: &str) {
    client.simple_query(SIGNAL_TABLE).await.expect("table");
    client
        .simple_query(&live_rule(target, for_))
        .await
        .expect("create alert");
}

async fn insert(client: &tokio_postgres::Client, model: &str, v: f64) {
    client
        .simple_query(&format!("INSERT INTO sig VALUES (now(), '{model}', {v})"))
        .await
        .expect("insert");
}

async fn instance_state(
    client: &tokio_postgres::Client,
    model: &str,
) -> Option<(String, Option<String>)> {
    rows(
        client,
        &format!(
            "SELECT state, since FROM lookout.alert_instances WHERE rule = 'lat' AND labels = '{{\"model\":\"{model}\"}}'"
        ),
    )
    .await
    .into_iter()
    .next()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_goes_pending_firing_escalated_resolved_and_restarts_send_no_duplicate() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    create_signal_rule(&client, &receiver.url(), "2 seconds").await;
    insert(&client, "a", 50.0).await;
    insert(&client, "b", 1.0).await;

    // Pending is visible in SQL (never notified), then firing arrives.
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("firing") {
        if let Some((state, _)) = instance_state(&client, "a").await
            && seen.last() != Some(&state)
        {
            seen.push(state);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "states seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ["pending", "firing"]);
    let firing = receiver.wait_for(1, Duration::from_secs(10)).await;
    let first = alert(&firing[0]).clone();
    assert_eq!(firing[0]["status"], "firing");
    assert_eq!(firing[0]["version"], "4");
    assert_eq!(first["labels"]["alertname"], "lat");
    assert_eq!(first["labels"]["severity"], "P1");
    assert_eq!(first["labels"]["model"], "a");
    assert_eq!(first["labels"]["team"], "llm");
    assert_eq!(first["annotations"]["value"], "50");
    assert_eq!(first["annotations"]["threshold"], "40");

    // A clean restart between evaluations sends nothing again.
    stop_cleanly(&mut server);
    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(receiver.messages().len(), 1, "{:?}", receiver.messages());
    let (state, since) = instance_state(&client, "a").await.expect("instance a");
    assert_eq!(state, "firing");
    assert!(since.is_some());

    // The extended protocol describes and runs alert statements too.
    let shown = client.query("SHOW ALERTS", &[]).await.expect("SHOW ALERTS");
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].get::<_, String>("name"), "lat");
    assert_eq!(
        shown[0].get::<_, Option<String>>("health").as_deref(),
        Some("ok")
    );

    // Escalation notifies, with the same fingerprint and startsAt.
    insert(&client, "a", 100.0).await;
    let m = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(alert(&m[1])["labels"]["severity"], "P0");
    assert_eq!(alert(&m[1])["status"], "firing");
    assert_eq!(alert(&m[1])["fingerprint"], first["fingerprint"]);
    assert_eq!(alert(&m[1])["startsAt"], first["startsAt"]);

    // De-escalation does not; recovery resolves.
    insert(&client, "a", 50.0).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.messages().len(), 2);
    insert(&client, "a", 1.0).await;
    let m = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(m[2]["status"], "resolved");
    assert_eq!(alert(&m[2])["status"], "resolved");
    assert_eq!(alert(&m[2])["fingerprint"], first["fingerprint"]);
    assert_eq!(alert(&m[2])["startsAt"], first["startsAt"]);
    assert_ne!(alert(&m[2])["endsAt"], "0001-01-01T00:00:00Z");

    // A silenced instance fires without a notification (the silence ends at
    // an instant given as an expression).
    client
        .simple_query("CREATE SILENCE UNTIL now() + INTERVAL '1 hour' WHERE model = 'b' COMMENT 'maintenance'")
        .await
        .expect("silence");
    insert(&client, "b", 50.0).await;
    wait_for_rows(
        &client,
        "SELECT state FROM lookout.alert_instances WHERE rule = 'lat' AND labels = '{\"model\":\"b\"}'",
        Duration::from_secs(20),
        |r| r.first().and_then(|r| r[0].as_deref()) == Some("firing"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.messages().len(), 3);
    let silenced = rows(
        &client,
        "SELECT count(*) FROM lookout.alert_history WHERE rule = 'lat' AND notification = 'silenced'",
    )
    .await;
    assert_eq!(silenced[0][0].as_deref(), Some("1"));

    // A query that fails: the rule reports error, firing instances show it
    // and keep firing (no resolution is sent).
    client.simple_query("DROP TABLE sig").await.expect("drop");
    let health = wait_for_rows(
        &client,
        "SELECT health, last_error FROM lookout.alerts WHERE name = 'lat'",
        Duration::from_secs(20),
        |r| r[0][0].as_deref() == Some("error"),
    )
    .await;
    assert!(
        health[0][1].as_deref().unwrap_or("").contains("sig"),
        "{health:?}"
    );
    let (state, _) = instance_state(&client, "b").await.expect("instance b");
    assert_eq!(state, "error");
    assert_eq!(receiver.messages().len(), 3);

    // Every notification is recorded as delivered; history has each transition.
    let delivered = rows(
        &client,
        "SELECT notification, delivery FROM lookout.alert_notifications WHERE rule = 'lat' ORDER BY ts",
    )
    .await;
    assert_eq!(
        delivered,
        [
            [Some("firing".into()), Some("delivered".into())],
            [Some("firing".into()), Some("delivered".into())],
            [Some("resolved".into()), Some("delivered".into())],
        ]
    );
    let transitions = rows(
        &client,
        "SELECT previous_state, state, severity, notification FROM lookout.alert_history
         WHERE rule = 'lat' AND labels = '{\"model\":\"a\"}' AND (previous_state <> state OR notification IS NOT NULL)
         ORDER BY ts",
    )
    .await;
    let t: Vec<Vec<&str>> = transitions
        .iter()
        .map(|r| r.iter().map(|c| c.as_deref().unwrap_or("-")).collect())
        .collect();
    assert_eq!(
        t,
        [
            ["inactive", "pending", "P1", "-"],
            ["pending", "firing", "P1", "firing"],
            ["firing", "firing", "P0", "escalated"],
            ["firing", "resolved", "P1", "resolved"],
            ["resolved", "inactive", "P1", "-"],
        ]
    );
    stop_cleanly(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calibration_cut_by_kill_9_resumes_with_the_same_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    client.simple_query(SIGNAL_TABLE).await.expect("table");
    // One value a minute for a day, for two models.
    client
        .simple_query(
            "INSERT INTO sig SELECT to_timestamp(1735689600 + i * 60),
                    CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 100 + (i % 7)
             FROM generate_series(0, 2879) AS t(i)",
        )
        .await
        .expect("history");
    // 1,000 baseline points (the cap), a few ms each: long enough to interrupt.
    client
        .batch_execute(
            "SET lookout.now = '2025-01-03 00:00:00+00';
             CREATE ALERT slow_baseline EVERY '1 minute'
               SEVERITY P2 WHEN value > BASELINE(3 SIGMA OVER '2 days' STEP '1 minute')
             AS SELECT model, avg(v) AS value FROM sig
                WHERE ts >= now() - INTERVAL '10 minutes' AND ts < now() GROUP BY model",
        )
        .await
        .expect("rule");
    wait_for_rows(
        &client,
        "SELECT calibration, calibration_progress FROM lookout.alerts WHERE name = 'slow_baseline'",
        Duration::from_secs(60),
        |r| r[0][0].as_deref() == Some("running") && r[0][1].as_deref() != Some("0"),
    )
    .await;
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();

    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    let r = wait_for_rows(
        &client,
        "SELECT calibration, calibration_warning FROM lookout.alerts WHERE name = 'slow_baseline'",
        Duration::from_secs(120),
        |r| r[0][0].as_deref() == Some("done"),
    )
    .await;
    assert_eq!(r[0][1], None);
    let thresholds = rows(
        &client,
        "SELECT labels, points, baseline_to FROM lookout.alert_thresholds WHERE rule = 'slow_baseline' ORDER BY labels",
    )
    .await;
    assert_eq!(thresholds.len(), 2, "{thresholds:?}");
    for t in &thresholds {
        assert_eq!(
            t[1].as_deref(),
            Some("1000"),
            "capped at 1,000 points: {t:?}"
        );
        assert_eq!(
            t[2].as_deref(),
            Some("2025-01-03 00:00:00+00"),
            "the original window: {t:?}"
        );
    }
    stop_cleanly(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_delivery_and_its_record_sends_at_most_one_duplicate() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // The failpoint aborts the process right after a delivery succeeds and
    // before it is recorded: the worst moment for a crash.
    let mut server = Process(spawn_server_with(
        dir.path(),
        port,
        &[("LOOKOUT_FAILPOINT", "crash-after-delivery")],
    ));
    let client = wait_ready(port).await;
    create_signal_rule(&client, &receiver.url(), "0").await;
    insert(&client, "a", 50.0).await;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "failpoint never hit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "the server aborted");
    assert_eq!(receiver.messages().len(), 1);

    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    let m = receiver.wait_for(2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let m2 = receiver.messages();
    assert_eq!(m2.len(), 2, "exactly one duplicate: {m2:?}");
    assert_eq!(m[0], m[1], "the duplicate is the same notification");
    assert_eq!(alert(&m[1])["status"], "firing");
    let (state, _) = instance_state(&client, "a").await.expect("instance");
    assert_eq!(state, "firing");
    stop_cleanly(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_and_p2_goes_to_the_digest() {
    let receiver = Receiver::start_failing(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lookout.toml");
    std::fs::write(&config, "[alerts]\ndigest_every = '2 seconds'\n").expect("config");
    let port = free_port();
    let data = dir.path().join("data");
    let mut server = Process(spawn_server_with(
        &data,
        port,
        &[("LOOKOUT_CONFIG", config.to_str().expect("utf-8 path"))],
    ));
    let client = wait_ready(port).await;
    client.simple_query(SIGNAL_TABLE).await.expect("table");
    let url = receiver.url();
    client
        .batch_execute(&format!(
            "CREATE ALERT pages EVERY '1 second' SEVERITY P1 WHEN value > 40 NOTIFY '{url}'
               AS SELECT model, v AS value FROM sig;
             CREATE ALERT review EVERY '1 second' SEVERITY P2 WHEN value > 40 NOTIFY '{url}'
               AS SELECT model, v AS value FROM sig;"
        ))
        .await
        .expect("rules");
    insert(&client, "a", 50.0).await;
    let m = receiver.wait_for(2, Duration::from_secs(30)).await;
    let page: Vec<&Value> = m.iter().filter(|x| x["receiver"] == "lookout").collect();
    let digest: Vec<&Value> = m
        .iter()
        .filter(|x| x["receiver"] == "lookout-digest")
        .collect();
    assert_eq!(page.len(), 1, "{m:?}");
    assert_eq!(alert(page[0])["labels"]["alertname"], "pages");
    assert_eq!(digest.len(), 1, "{m:?}");
    assert_eq!(alert(digest[0])["labels"]["alertname"], "review");
    assert_eq!(alert(digest[0])["labels"]["severity"], "P2");
    // The P2 rule never paged on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = receiver.messages();
    assert!(
        !m.iter()
            .any(|x| x["receiver"] == "lookout" && alert(x)["labels"]["alertname"] == "review"),
        "{m:?}"
    );
    let delivered = rows(
        &client,
        "SELECT count(*) FROM lookout.alert_notifications WHERE delivery = 'delivered'",
    )
    .await;
    assert_eq!(
        delivered[0][0].as_deref(),
        Some(m.len().to_string().as_str())
    );
    stop_cleanly(&mut server);
}

fn http_get(url: &str) -> Option<String> {
    let mut response = ureq::get(url).call().ok()?;
    response.body_mut().read_to_string().ok()
}

/// A Prometheus Alertmanager (Debian package prometheus-alertmanager).
struct Alertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "Alertmanager is installed (apt-get install prometheus-alertmanager; .ci/run does)",
            );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        )
        .expect("config");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager");
        let started = Instant::now();
        while tokio::task::spawn_blocking(move || {
            http_get(&format!("http://127.0.0.1:{port}/-/ready"))
        })
        .await
        .expect("join")
        .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "alertmanager did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Alertmanager {
            child,
            port,
            _dir: dir,
        }
    }

    /// Alerts Alertmanager holds as active (resolved ones are not listed).
    async fn alerts(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v2/alerts", self.port);
        let body = tokio::task::spawn_blocking(move || http_get(&url))
            .await
            .expect("join")
            .unwrap_or_default();
        match serde_json::from_str(&body) {
            Ok(Value::Array(a)) => a
                .into_iter()
                .filter(|a| a["labels"]["alertname"] == "lat")
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn wait_until(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let alerts = self.alerts().await;
            if check(&alerts) {
                return alerts;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Alertmanager never showed {what}: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_firing_escalation_and_resolution() {
    let am = Alertmanager::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Process(spawn_server(dir.path(), port));
    let client = wait_ready(port).await;
    create_signal_rule(
        &client,
        &format!("alertmanager://127.0.0.1:{}", am.port),
        "0",
    )
    .await;
    insert(&client, "a", 50.0).await;
    let alerts = am
        .wait_until("a P1 alert", |a| {
            a.iter()
                .any(|x| x["labels"]["severity"] == "P1" && x["status"]["state"] == "active")
        })
        .await;
    let p1 = &alerts[0];
    assert_eq!(p1["labels"]["model"], "a");
    assert_eq!(p1["labels"]["team"], "llm");
    // endsAt = evaluation + 4·max(EVERY, 1 minute): Alertmanager will not
    // time it out between re-posts.
    let ends =
        chrono::DateTime::parse_from_rfc3339(p1["endsAt"].as_str().expect("endsAt")).expect("time");
    let left = ends.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::seconds(200),
        "endsAt only {left} ahead"
    );

    insert(&client, "a", 100.0).await;
    am.wait_until("only the P0 alert", |a| {
        a.len() == 1 && a[0]["labels"]["severity"] == "P0"
    })
    .await;
    insert(&client, "a", 1.0).await;
    am.wait_until("no active alert", |a| a.is_empty()).await;
    stop_cleanly(&mut server);
}

/// The five rules of docs/alerts.md's back-test example.
const BENCH_RULES: &str = "
SET lookout.now = '2025-01-03 00:00:00+00';
CREATE ALERT latency_p50 EVERY '1 hour'
  SEVERITY P1 WHEN value > BASELINE(4 SIGMA OVER '2 days' MARGIN 15%)
  MIN SAMPLES 200
AS SELECT model, latency_quantile(latency_ms, 0.5) AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '6 hours' AND ts < now() AND status = 'ok' GROUP BY model;
CREATE ALERT feature_drift EVERY '6 hours' SEVERITY P2 WHEN value > 0.1 MIN SAMPLES 1000
AS SELECT model, drift_psi(feature_x, ts >= now() - INTERVAL '1 day') AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '2 days' AND ts < now() GROUP BY model;
CREATE ALERT category_drift EVERY '6 hours' SEVERITY P2 WHEN value > 0.1
AS SELECT drift_psi(feature_cat, ts >= now() - INTERVAL '1 day') AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '2 days' AND ts < now();
CREATE ALERT groundedness EVERY '1 hour' FOR '1 hour' SEVERITY P1 WHEN value < 0.7 MIN SAMPLES 30
AS SELECT model_version, avg(score_groundedness) AS value, count(score_groundedness) AS n
   FROM events WHERE ts >= now() - INTERVAL '6 hours' AND ts < now() GROUP BY model_version;
CREATE ALERT rate_limited EVERY '5 minutes' SEVERITY P0 WHEN value > 0.1 MIN SAMPLES 50
AS SELECT model, avg(CASE WHEN status = 'rate_limited' THEN 1.0 ELSE 0.0 END) AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '15 minutes' AND ts < now() GROUP BY model;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_on_bench_data_find_exactly_the_injected_anomalies() {
    let server = TestServer::start().await;
    let alerts = alert_statements(&server.lookout).await;
    let data = tempfile::tempdir().expect("tempdir");
    let files = crate::harness::generate_events(data.path(), 1_000_000, 4);
    server
        .lookout
        .import_parquet("events", &files, None)
        .await
        .expect("import");
    let client = server.client().await;
    client.batch_execute(BENCH_RULES).await.expect("rules");

    // The latency baseline is calibrated in the background over days 1-2.
    let r = wait_for_rows(
        &client,
        "SELECT calibration, calibration_progress, calibration_warning FROM lookout.alerts WHERE name = 'latency_p50'",
        Duration::from_secs(120),
        |r| r[0][0].as_deref() == Some("done"),
    )
    .await;
    assert_eq!(r[0][1].as_deref(), Some("1"));
    assert_eq!(r[0][2], None, "no warning with 8 points per model");
    let thresholds = rows(
        &client,
        "SELECT count(*), min(points), max(points), min(threshold / mean) FROM lookout.alert_thresholds WHERE rule = 'latency_p50'",
    )
    .await;
    assert_eq!(
        thresholds[0][0].as_deref(),
        Some("8"),
        "one threshold per model"
    );
    assert_eq!(
        thresholds[0][1].as_deref(),
        Some("8"),
        "2 days / 6-hour window"
    );
    let floor: f64 = thresholds[0][3]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("ratio");
    assert!(
        floor >= 1.15 - 1e-9,
        "MARGIN 15% floors every threshold: {floor}"
    );

    // Too short a baseline warns; RECALIBRATE records a new calibration.
    client
        .batch_execute(
            "CREATE ALERT short_baseline EVERY '1 hour'
               SEVERITY P2 WHEN value > BASELINE(3 SIGMA OVER '3 hours')
             AS SELECT model, count(*) AS value FROM events
                WHERE ts >= now() - INTERVAL '1 hour' AND ts < now() GROUP BY model",
        )
        .await
        .expect("short baseline rule");
    let calibrated = |r: &[Vec<Option<String>>]| r[0][0].as_deref() == Some("done");
    let r = wait_for_rows(
        &client,
        "SELECT calibration, calibration_warning FROM lookout.alerts WHERE name = 'short_baseline'",
        Duration::from_secs(60),
        calibrated,
    )
    .await;
    let warning = r[0][1].clone().unwrap_or_default();
    assert!(warning.contains("only 3 baseline points"), "{warning}");
    client
        .batch_execute(
            "SET lookout.now = '2025-01-04 00:00:00+00'; RECALIBRATE ALERT short_baseline",
        )
        .await
        .expect("recalibrate");
    wait_for_rows(
        &client,
        "SELECT count(DISTINCT ts) FROM lookout.alert_thresholds WHERE rule = 'short_baseline'",
        Duration::from_secs(60),
        |r| r[0][0].as_deref() == Some("2"),
    )
    .await;
    let latest = rows(
        &client,
        "SELECT min(baseline_to) FROM lookout.alert_thresholds WHERE rule = 'short_baseline'
         AND ts = (SELECT max(ts) FROM lookout.alert_thresholds WHERE rule = 'short_baseline')",
    )
    .await;
    assert_eq!(latest[0][0].as_deref(), Some("2025-01-04 00:00:00+00"));

    let mut fired = Vec::new();
    for (rule, step) in [
        ("latency_p50", "1 hour"),
        ("feature_drift", "6 hours"),
        ("category_drift", "6 hours"),
        ("groundedness", "1 hour"),
        ("rate_limited", "5 minutes"),
    ] {
        let result = rows(
            &client,
            &format!("BACKTEST ALERT {rule} FROM '2025-01-03' TO '2025-01-08' STEP '{step}'"),
        )
        .await;
        for r in &result {
            if r[2].as_deref() != Some("firing") && r[3].as_deref() == Some("firing") {
                fired.push((
                    rule,
                    r[1].clone().unwrap_or_default(),
                    r[0].clone().unwrap_or_default(),
                ));
            }
        }
        let sent = result.last().and_then(|r| r[9].clone());
        assert!(sent.is_some(), "{rule} reports its notification count");
    }
    let within = |ts: &str, from: &str, to: &str| ts >= from && ts <= to;
    assert_eq!(fired.len(), 5, "exactly five anomalies fire: {fired:?}");
    let expect = [
        (
            "latency_p50",
            "{\"model\":\"orion-mini\"}",
            "2025-01-06 09:00",
            "2025-01-06 18:00",
        ),
        (
            "feature_drift",
            "{\"model\":\"vega-70b\"}",
            "2025-01-07 00:00",
            "2025-01-08 00:00:00+00",
        ),
        (
            "category_drift",
            "{}",
            "2025-01-07 00:00",
            "2025-01-08 00:00:00+00",
        ),
        (
            "groundedness",
            "{\"model_version\":\"orion-large@3.1\"}",
            "2025-01-07 00:00",
            "2025-01-08 00:00:00+00",
        ),
        (
            "rate_limited",
            "{\"model\":\"vega-8b\"}",
            "2025-01-07 14:00",
            "2025-01-07 14:45",
        ),
    ];
    for ((rule, labels, ts), (want_rule, want_labels, from, to)) in fired.iter().zip(expect) {
        assert_eq!((*rule, labels.as_str()), (want_rule, want_labels));
        assert!(
            within(ts, from, to),
            "{rule} fired at {ts}, expected in [{from}, {to}]"
        );
    }
    alerts.shutdown().await;
    server.stop().await;
}
