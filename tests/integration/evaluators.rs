//! LLM evaluators against a local OpenAI-compatible server
//! (`tests/clients/fake_llm.py`): every matching row judged once per
//! version, across a kill -9; 429 with Retry-After and timeouts retried, malformed and
//! out-of-range answers recorded as such, 4xx refusals recorded, an endpoint
//! that keeps failing opens the circuit and records nothing; the API key
//! sent to the judge and shown nowhere; back-fill of a new version.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, rows, spawn_server_with, wait_for_rows, wait_ready};

const KEY: &str = "sk-test-0123456789-secret";

/// The fake judge, serving until dropped.
pub(crate) struct FakeJudge {
    child: Child,
    pub(crate) port: u16,
    log: std::path::PathBuf,
}

impl FakeJudge {
    pub(crate) async fn start(dir: &Path) -> FakeJudge {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/fake_llm.py");
        let port_file = dir.join("judge.port");
        let log = dir.join("judge.log");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 tests/clients/fake_llm.py");
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let port = text.trim().parse().expect("port");
                return FakeJudge { child, port, log };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the fake judge did not start");
    }

    /// Each request the judge got: (prompt, Authorization header). The
    /// judge appends its log every 50 ms; this waits for it to settle.
    fn requests(&self) -> Vec<(String, Option<String>)> {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("log line");
                assert!(
                    v["invalid"].is_null(),
                    "the judge got an invalid request: {v}"
                );
                assert_eq!(v["response_format"], "json_schema", "{v}");
                (
                    v["prompt"].as_str().unwrap_or("").to_string(),
                    v["authorization"].as_str().map(str::to_string),
                )
            })
            .collect()
    }
}

impl Drop for FakeJudge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, pg: u16, config: &Path) -> Child {
    let config = config.to_str().expect("path");
    spawn_server_with(
        dir,
        pg,
        &[("LOOKOUT_CONFIG", config), ("JUDGE_API_KEY", KEY)],
    )
}

/// A fake judge and the server judging with it (evaluators look for new
/// rows every 100 ms), over `dir`.
struct Judged {
    server: Child,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
    pg: u16,
}

impl Judged {
    async fn start(dir: &Path) -> (FakeJudge, Judged, tokio_postgres::Client) {
        let judge = FakeJudge::start(dir).await;
        let config = dir.join("lookout.toml");
        std::fs::write(&config, "[server]\nevaluator_interval = \"100ms\"\n").expect("config");
        let data = dir.join("data");
        let pg = free_port();
        let server = spawn(&data, pg, &config);
        let client = wait_ready(pg).await;
        let judged = Judged {
            server,
            data,
            config,
            pg,
        };
        (judge, judged, client)
    }

    /// kill -9, then start again on the same data.
    async fn restart(&mut self) -> tokio_postgres::Client {
        let _ = self.server.kill();
        let _ = self.server.wait();
        self.server = spawn(&self.data, self.pg, &self.config);
        wait_ready(self.pg).await
    }
}

impl Drop for Judged {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn count(rows: &[Vec<Option<String>>]) -> i64 {
    rows[0][0].as_deref().unwrap_or("0").parse().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluators_judge_each_row_once_and_record_every_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (judge, mut lookout, client) = Judged::start(dir.path()).await;
    let setup = format!(
        "CREATE TABLE llm_calls (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, status TEXT, question TEXT, answer TEXT);
         CREATE EVALUATOR groundedness ON llm_calls KEY request_id
           WHERE status = 'ok'
           ENDPOINT 'http://127.0.0.1:{}/v1' MODEL 'judge-small' API KEY ENV 'JUDGE_API_KEY'
           PROMPT 'Is the answer supported? Q: {{{{question}}}} A: {{{{answer}}}}'
           SCORE BETWEEN 0 AND 1
           RATE LIMIT 600 PER MINUTE CONCURRENCY 3 TIMEOUT '1 second' BUDGET 5 USD PER DAY
           PRICE 1, 2 USD PER MILLION TOKENS;",
        judge.port
    );
    client.batch_execute(&setup).await.expect("setup");
    let mut inserts = Vec::new();
    for i in 0..8 {
        let answer = if i % 2 == 0 { "correct" } else { "wrong" };
        inserts.push(format!(
            "(now(), 'm', 'r{i}', 'ok', 'question {i}', '{answer}')"
        ));
    }
    for (id, question) in [
        ("malformed", "MALFORMED"),
        ("range", "OUT-OF-RANGE"),
        ("limited", "RATE-LIMIT"),
        ("refused", "BAD-REQUEST"),
        ("slow", "SLOW"),
    ] {
        inserts.push(format!("(now(), 'm', '{id}', 'ok', '{question}', 'x')"));
    }
    inserts.push("(now(), 'm', 'skipped', 'error', 'question', 'correct')".into());
    client
        .batch_execute(&format!(
            "INSERT INTO llm_calls VALUES {}",
            inserts.join(", ")
        ))
        .await
        .expect("insert");
    wait_for_rows(
        &client,
        "SELECT count(*) FROM judge_scores",
        Duration::from_secs(60),
        |r| count(r) >= 13,
    )
    .await;
    let outcomes = rows(
        &client,
        "SELECT call_key, outcome, score, attempts, judge_model, input_tokens, output_tokens, cost_usd, evaluator_version, passed
         FROM judge_scores ORDER BY call_key",
    )
    .await;
    let by_key: HashMap<String, Vec<Option<String>>> = outcomes
        .iter()
        .map(|r| (r[0].clone().expect("key"), r.clone()))
        .collect();
    assert_eq!(by_key.len(), 13, "{outcomes:?}");
    let cell = |key: &str, i: usize| by_key[key][i].clone().unwrap_or_default();
    for i in 0..8 {
        let key = format!("r{i}");
        assert_eq!(cell(&key, 1), "scored");
        assert_eq!(cell(&key, 2), if i % 2 == 0 { "0.9" } else { "0.2" });
        assert_eq!(cell(&key, 4), "judge-small-0301");
        // 100 input tokens at $1/M and 10 output tokens at $2/M.
        assert_eq!(cell(&key, 7), "0.00012");
        // Pass/fail: at or above the middle of SCORE BETWEEN 0 AND 1.
        assert_eq!(cell(&key, 9), if i % 2 == 0 { "t" } else { "f" });
    }
    assert_eq!(cell("malformed", 1), "malformed");
    assert_eq!(cell("malformed", 9), "", "no pass/fail without a score");
    assert_eq!(cell("range", 1), "out_of_range");
    assert_eq!(cell("range", 2), "7");
    assert_eq!(
        (cell("limited", 1), cell("limited", 3)),
        ("scored".into(), "2".into())
    );
    assert_eq!(cell("refused", 1), "refused");
    // The first attempt timed out (1 s); the second was answered at once.
    assert_eq!(
        (cell("slow", 1), cell("slow", 3)),
        ("scored".into(), "2".into())
    );
    assert!(!by_key.contains_key("skipped"));

    // The key went to the judge and nowhere else.
    let requests = judge.requests();
    assert!(
        requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some(&*format!("Bearer {KEY}")))
    );
    let shown = rows(&client, "SHOW EVALUATORS").await;
    let shown_text = format!("{shown:?}");
    assert!(
        !shown_text.contains(KEY) && shown_text.contains("JUDGE_API_KEY"),
        "{shown_text}"
    );
    let logged = rows(&client, "SELECT definition FROM lookout.evaluators").await;
    assert!(!format!("{logged:?}").contains(KEY));
    let runs = rows(
        &client,
        "SELECT judged, scored, malformed, failed, p50_latency_ms IS NOT NULL FROM lookout.evaluator_runs",
    )
    .await;
    assert_eq!(
        runs,
        vec![
            ["13", "10", "2", "1", "t"]
                .map(|s| Some(s.to_string()))
                .to_vec()
        ]
    );

    // Killed and restarted: nothing is judged twice.
    let calls_before = judge.requests().len();
    assert_eq!(
        calls_before, 15,
        "13 rows, one retried after its 429 and one after its timeout: {requests:?}"
    );
    drop(client);
    let client = lookout.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        judge.requests().len(),
        calls_before,
        "a row was judged again after a restart"
    );

    // A new prompt is a new version; EVALUATE back-fills the past for it.
    client
        .batch_execute(
            "ALTER EVALUATOR groundedness SET PROMPT 'Second rubric: {{question}} / {{answer}}'",
        )
        .await
        .expect("alter");
    let backfill = client
        .execute(
            "EVALUATE groundedness FROM '2000-01-01' TO '2100-01-01'",
            &[],
        )
        .await
        .expect("evaluate");
    assert_eq!(backfill, 13);
    let v2 = rows(
        &client,
        "SELECT count(*) FROM judge_scores WHERE evaluator_version = 2",
    )
    .await;
    assert_eq!(count(&v2), 13);

    // An endpoint that keeps failing opens the circuit; nothing is recorded
    // for its rows, which stay to be judged.
    client
        .batch_execute(
            "CREATE EVALUATOR flaky ON llm_calls KEY request_id
               ENDPOINT 'http://127.0.0.1:1/v1' MODEL 'judge-small' PROMPT 'DOWN {{question}}'
               CONCURRENCY 4 TIMEOUT '1 second';
             INSERT INTO llm_calls VALUES (now(), 'm', 'd1', 'ok', 'q', 'a'), (now(), 'm', 'd2', 'ok', 'q', 'a'),
               (now(), 'm', 'd3', 'ok', 'q', 'a'), (now(), 'm', 'd4', 'ok', 'q', 'a'), (now(), 'm', 'd5', 'ok', 'q', 'a')",
        )
        .await
        .expect("flaky evaluator");
    // SHOW EVALUATORS: name, version, source, model, endpoint, api_key_env, status, ...
    wait_for_rows(&client, "SHOW EVALUATORS", Duration::from_secs(60), |r| {
        r.iter().any(|row| {
            row[0].as_deref() == Some("flaky") && row[6].as_deref() == Some("circuit_open")
        })
    })
    .await;
    let flaky = rows(
        &client,
        "SELECT count(*) FROM judge_scores WHERE evaluator = 'flaky'",
    )
    .await;
    assert_eq!(count(&flaky), 0);
    drop(client);
    drop(lookout);
}

/// `lookout.judge_agreement` against scipy's `spearmanr` and `pearsonr`
/// and statsmodels' `cohens_kappa` on the same pairs (ties included); rows without a human verdict, and
/// verdicts that are not scores, do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_agreement_matches_scipy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = lookout_query::Lookout::open(dir.path())
        .await
        .expect("open");
    let evaluators = lookout_evaluators::Evaluators::start(
        db.clone(),
        lookout_evaluators::EvaluatorOptions { interval: None },
    )
    .await
    .expect("evaluators");
    let judge = [0.9, 0.2, 0.9, 0.5, 0.7, 0.1, 0.9, 0.3];
    let human = [1, 0, 1, 1, 0, 0, 1, 0];
    let mut scores = Vec::new();
    let mut verdicts = Vec::new();
    for (i, (s, h)) in judge.iter().zip(human).enumerate() {
        scores.push(format!(
            "(now(), 'r{i}', 'g', 1, now(), 'scored', {s}, NULL, 'j', 1, 1, 0, 1, 1, NULL, {})",
            *s >= 0.5
        ));
        verdicts.push(format!(
            "(now(), 'r{i}', 'review', 'verdict', {h}, NULL, 'ann', false)"
        ));
    }
    // Not counted: a malformed answer, and a judged row nobody reviewed.
    scores.push(
        "(now(), 'r0x', 'g', 1, now(), 'malformed', NULL, NULL, 'j', 1, 1, 0, 1, 1, NULL, NULL)"
            .into(),
    );
    scores.push(
        "(now(), 'lonely', 'g', 1, now(), 'scored', 0.4, NULL, 'j', 1, 1, 0, 1, 1, NULL, false)"
            .into(),
    );
    verdicts.push("(now(), 'r0x', 'review', 'verdict', 0, NULL, 'ann', false)".into());
    let sql = format!(
        "CREATE TABLE feedback (ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, source TEXT NOT NULL,
           kind TEXT NOT NULL, value DOUBLE PRECISION, label TEXT, author TEXT, deleted BOOLEAN)
           WITH (key = 'request_id, source, kind', version = 'ts', deleted = 'deleted');
         INSERT INTO judge_scores VALUES {};
         INSERT INTO feedback VALUES {};",
        scores.join(", "),
        verdicts.join(", ")
    );
    let mut session = db.session();
    session.query(&sql).await.expect("fixtures");
    // Not inside a transaction block (its log is not transactional), but
    // SHOW is.
    session.query("BEGIN").await.expect("begin");
    session
        .query("SHOW EVALUATORS")
        .await
        .expect("show in a block");
    let refused = session
        .query("CREATE EVALUATOR e ON feedback KEY request_id ENDPOINT 'http://127.0.0.1:1/v1' MODEL 'm' PROMPT 'p'")
        .await
        .expect_err("CREATE EVALUATOR in a block");
    assert_eq!(refused.sqlstate(), "0A000", "{refused}");
    session.query("ROLLBACK").await.expect("rollback");
    let got = session
        .query("SELECT pairs, spearman, pearson, agreement, kappa FROM lookout.judge_agreement")
        .await
        .expect("agreement");
    let b = &got[0];
    let number = |i: usize| {
        arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Float64)
            .expect("cast")
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .expect("f64")
            .value(0)
    };
    assert_eq!(number(0), 8.0);
    // scipy.stats.spearmanr and pearsonr of the same lists.
    assert!(
        (number(1) - 0.7826237921249264).abs() < 1e-12,
        "{}",
        number(1)
    );
    assert!(
        (number(2) - 0.7612189262042536).abs() < 1e-12,
        "{}",
        number(2)
    );
    evaluators.shutdown().await;
    db.close().await.expect("close");
}

/// The rate limit spaces calls out (a lower bound on their spread, which a
/// slow machine only widens), and the daily budget stops calls once spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_budget_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (judge, lookout, client) = Judged::start(dir.path()).await;
    // 100 input and 10 output tokens a call: $0.012 at these prices, so a
    // $0.03 budget is spent after three calls.
    client
        .batch_execute(&format!(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, kind TEXT, answer TEXT);
             CREATE EVALUATOR paced ON calls KEY request_id WHERE kind = 'paced'
               ENDPOINT 'http://127.0.0.1:{port}/v1' MODEL 'judge-small' PROMPT 'Rate {{{{answer}}}}'
               RATE LIMIT 2 PER SECOND CONCURRENCY 4;
             CREATE EVALUATOR costly ON calls KEY request_id WHERE kind = 'costly'
               ENDPOINT 'http://127.0.0.1:{port}/v1' MODEL 'judge-small' PROMPT 'Rate {{{{answer}}}}'
               CONCURRENCY 1 BUDGET 0.03 USD PER DAY PRICE 100, 200 USD PER MILLION TOKENS;",
            port = judge.port
        ))
        .await
        .expect("setup");
    let mut rows_sql = Vec::new();
    for i in 0..5 {
        rows_sql.push(format!("(now(), 'm', 'p{i}', 'paced', 'correct {i}')"));
    }
    for i in 0..6 {
        rows_sql.push(format!("(now(), 'm', 'c{i}', 'costly', 'correct {i}')"));
    }
    client
        .batch_execute(&format!("INSERT INTO calls VALUES {}", rows_sql.join(", ")))
        .await
        .expect("insert");
    let paced = wait_for_rows(
        &client,
        "SELECT count(*), CAST(max(ts) AS BIGINT) - CAST(min(ts) AS BIGINT) FROM judge_scores WHERE evaluator = 'paced'",
        Duration::from_secs(60),
        |r| r[0][0].as_deref() == Some("5"),
    )
    .await;
    // Five calls at most two a second: the first and the last start at
    // least two seconds apart (recorded after calls that may differ in
    // length, hence the margin; unpaced, four would be at once).
    let spread_us: i64 = paced[0][1]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("spread");
    assert!(spread_us >= 1_500_000, "five calls within {spread_us} µs");
    // SHOW EVALUATORS: name, version, source, model, endpoint, api_key_env, status, ...
    wait_for_rows(&client, "SHOW EVALUATORS", Duration::from_secs(60), |r| {
        r.iter().any(|row| {
            row[0].as_deref() == Some("costly") && row[6].as_deref() == Some("budget_exhausted")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let costly = rows(
        &client,
        "SELECT count(*), sum(cost_usd) FROM judge_scores WHERE evaluator = 'costly'",
    )
    .await;
    assert_eq!(
        count(&costly),
        3,
        "calls after the budget was spent: {costly:?}"
    );
    drop(client);
    drop(lookout);
}
