//! The evaluators: their definitions (a log in `lookout.evaluators`), the
//! background loop that judges new rows, and the statements.
//!
//! Exactly one verdict per row and evaluator version: a row is a candidate
//! while `judge_scores` has no record of its key for the version and no
//! call for it is in flight here. A call's verdict is written (durably)
//! first; the key stays in the in-flight set until a candidate query that
//! started after the write has finished, since an older query's rows may
//! not show the verdict yet. A call that does not finish
//! (429 or 5xx after its retries, a timeout, the endpoint down) records
//! nothing, so the row is judged later rather than skipped. What a crash
//! can repeat is the calls in flight when it happened (at most
//! `CONCURRENCY` per evaluator): their answers were never recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use lookout_query::ext::{
    instant, int_values as ints, quote_ident, quote_literal, quoted_table, text_values as strings,
};
use lookout_query::{
    Access, ExtStatement, Lookout, Output, QueryError, Result, SqlExtension, SqlSession, SqlState,
};
use tokio::sync::Semaphore;

use crate::grammar::{Definition, Statement, is_evaluator_statement, parse};
use crate::judge::{self, Verdict};
use crate::metrics::EvaluatorMetrics;

type Micros = i64;

/// Where verdicts go: a versioned table, one record per (row, evaluator,
/// version), so score functions, label joins and alert rules read it.
pub(crate) const SCORES: &str = "judge_scores";

const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lookout.evaluators (
        ts TIMESTAMPTZ NOT NULL, seq BIGINT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
        version BIGINT, definition TEXT
    ) WITH (partition_column = 'none', bucket = '30 days')",
    "CREATE TABLE IF NOT EXISTS judge_scores (
        ts TIMESTAMPTZ NOT NULL, call_key TEXT NOT NULL, evaluator TEXT NOT NULL,
        evaluator_version BIGINT NOT NULL, call_ts TIMESTAMPTZ, outcome TEXT NOT NULL,
        score DOUBLE PRECISION, reason TEXT, judge_model TEXT, input_tokens BIGINT,
        output_tokens BIGINT, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
        attempts BIGINT, error TEXT, passed BOOLEAN
    ) WITH (key = 'call_key, evaluator, evaluator_version', version = 'ts',
            partition_column = 'none')",
];

/// `lookout.evaluator_runs`: each evaluator version's calls, from its verdicts.
const RUNS_VIEW: &str = "SELECT evaluator, evaluator_version,
        count(*) AS judged,
        sum(CASE WHEN outcome = 'scored' THEN 1 ELSE 0 END) AS scored,
        sum(CASE WHEN outcome IN ('malformed', 'out_of_range') THEN 1 ELSE 0 END) AS malformed,
        sum(CASE WHEN outcome = 'refused' THEN 1 ELSE 0 END) AS failed,
        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
        sum(cost_usd) AS cost_usd,
        approx_percentile_cont(latency_ms, 0.5) AS p50_latency_ms,
        approx_percentile_cont(latency_ms, 0.99) AS p99_latency_ms,
        min(ts) AS first_at, max(ts) AS last_at
    FROM judge_scores GROUP BY evaluator, evaluator_version";

/// `lookout.judge_agreement`: how each evaluator version agrees with human
/// reviewers' verdicts on the same rows (review queues write them to
/// `feedback` as `source = 'review'`, `kind = 'verdict'`): Spearman's rank
/// correlation (Pearson's of average ranks, ties shared as scipy's
/// `spearmanr` shares them), Pearson's correlation of the values, and
/// Cohen's kappa of pass/fail (the judge's `passed`, the reviewer's value
/// above 0), with the share of rows where they agree.
const AGREEMENT_VIEW: &str = "WITH pairs AS (
        SELECT j.evaluator, j.evaluator_version, j.score, j.passed, f.value AS human
        FROM judge_scores j
        JOIN feedback f ON f.request_id = j.call_key
        WHERE j.outcome = 'scored' AND f.source = 'review' AND f.kind = 'verdict'
          AND f.value IS NOT NULL),
    ranked AS (
        SELECT evaluator, evaluator_version, score, human,
            CASE WHEN passed THEN 1.0 ELSE 0.0 END AS judge_pass,
            CASE WHEN human > 0 THEN 1.0 ELSE 0.0 END AS human_pass,
            rank() OVER (PARTITION BY evaluator, evaluator_version ORDER BY score)
              + (count(*) OVER (PARTITION BY evaluator, evaluator_version, score) - 1) / 2.0 AS score_rank,
            rank() OVER (PARTITION BY evaluator, evaluator_version ORDER BY human)
              + (count(*) OVER (PARTITION BY evaluator, evaluator_version, human) - 1) / 2.0 AS human_rank
        FROM pairs)
    SELECT evaluator, evaluator_version, pairs, spearman, pearson, agreement,
        CASE WHEN expected < 1 THEN (agreement - expected) / (1 - expected) END AS kappa
    FROM (
        SELECT evaluator, evaluator_version, count(*) AS pairs,
            corr(score_rank, human_rank) AS spearman,
            corr(score, human) AS pearson,
            avg(CASE WHEN judge_pass = human_pass THEN 1.0 ELSE 0.0 END) AS agreement,
            avg(judge_pass) * avg(human_pass) + (1 - avg(judge_pass)) * (1 - avg(human_pass)) AS expected
        FROM ranked GROUP BY evaluator, evaluator_version) s";

/// How far back the background pass looks for rows not judged yet: rows
/// that arrive later than this behind their own time are left to
/// `EVALUATE`, so each pass reads a bounded range.
const LOOKBACK: Micros = 86_400_000_000;
/// Between full passes over `LOOKBACK`, a pass reads only from this far
/// before the last complete pass's end (rows arriving a little late).
const RECENT: Micros = 5 * 60_000_000;
/// How often the background pass reads the whole `LOOKBACK` again (rows
/// arriving later than `RECENT`, and rows whose calls did not finish).
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);
/// How long shutdown waits for calls in flight before abandoning them
/// (an abandoned call records nothing; its row is judged after a restart).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Consecutive unfinished calls that open an evaluator's circuit.
const BREAKER_FAILURES: u32 = 5;
/// The first pause of an open circuit; it doubles at each reopening.
const BREAKER_PAUSE: Duration = Duration::from_secs(30);
const BREAKER_MAX_PAUSE: Duration = Duration::from_secs(600);
/// Attempts of one call for 429, 5xx and transport failures.
const ATTEMPTS: u32 = 3;
/// Rows fetched per candidate query, per unit of concurrency.
const FETCH_PER_SLOT: usize = 4;

/// How the background loop runs.
#[derive(Debug, Clone)]
pub struct EvaluatorOptions {
    /// Look for new rows this often; `None`: no background judging.
    pub interval: Option<Duration>,
}

impl Default for EvaluatorOptions {
    fn default() -> Self {
        EvaluatorOptions {
            interval: Some(Duration::from_secs(1)),
        }
    }
}

/// What one evaluator does at run time (not logged).
#[derive(Debug)]
struct Runtime {
    permits: Semaphore,
    /// Keys called for: `None` while the call runs, then the generation of
    /// the last candidate query started before its verdict was written.
    in_flight: Mutex<HashMap<String, Option<u64>>>,
    /// Candidate queries started.
    generation: AtomicU64,
    /// When the next call may start (the rate limit).
    next_call: Mutex<Instant>,
    failures: AtomicU32,
    reopenings: AtomicU32,
    /// The end of the last pass that found every candidate of its range,
    /// and when the last full pass ran.
    scanned: Mutex<(Option<Micros>, Option<Instant>)>,
    open_until: Mutex<Option<Instant>>,
    /// (UTC day number, dollars spent that day).
    spent: Mutex<(i64, f64)>,
    last_error: Mutex<Option<String>>,
}

impl Runtime {
    fn new(concurrency: usize) -> Runtime {
        Runtime {
            permits: Semaphore::new(concurrency),
            in_flight: Mutex::default(),
            generation: AtomicU64::new(0),
            next_call: Mutex::new(Instant::now()),
            failures: AtomicU32::new(0),
            reopenings: AtomicU32::new(0),
            scanned: Mutex::default(),
            open_until: Mutex::default(),
            spent: Mutex::default(),
            last_error: Mutex::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Evaluator {
    def: Definition,
    version: i64,
    /// When this version was made: it judges rows from then on.
    since: Micros,
    paused: bool,
    runtime: Arc<Runtime>,
}

#[derive(Debug, Default)]
struct State {
    evaluators: BTreeMap<String, Evaluator>,
    next_seq: i64,
}

#[derive(Debug)]
struct Inner {
    db: Lookout,
    state: tokio::sync::Mutex<State>,
    metrics: EvaluatorMetrics,
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    calls: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// The evaluators of one database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Evaluators {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(SqlState::InternalError, e.to_string())
}

fn day_of(micros: Micros) -> i64 {
    micros.div_euclid(86_400_000_000)
}

impl Evaluators {
    /// Creates the tables if needed, restores the evaluators, adds the
    /// statements and (with an interval) starts judging.
    pub async fn start(db: Lookout, options: EvaluatorOptions) -> Result<Evaluators> {
        let mut session = db.session();
        for sql in TABLES {
            session.query(sql).await?;
        }
        db.register_view("evaluator_runs", RUNS_VIEW);
        db.register_view("judge_agreement", AGREEMENT_VIEW);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let evaluators = Evaluators {
            inner: Arc::new(Inner {
                metrics: EvaluatorMetrics::register(db.metrics()),
                db: db.clone(),
                state: tokio::sync::Mutex::default(),
                stop,
                task: Mutex::default(),
                calls: tokio::sync::Mutex::default(),
            }),
        };
        evaluators.restore().await?;
        db.register_extension(Arc::new(EvaluatorStatements {
            evaluators: evaluators.clone(),
        }));
        if let Some(every) = options.interval {
            let task = tokio::spawn(evaluators.clone().run_loop(every, stopped));
            *lock(&evaluators.inner.task) = Some(task);
        }
        Ok(evaluators)
    }

    /// Stops judging and waits for the calls in flight (their verdicts are
    /// recorded).
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let mut calls = self.inner.calls.lock().await;
        let drained = async { while calls.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_WAIT, drained).await.is_err() {
            tracing::warn!("evaluators: judge calls still running at shutdown were abandoned");
            calls.abort_all();
        }
    }

    fn now(&self) -> Micros {
        self.inner.db.storage().clock().now_micros()
    }

    async fn restore(&self) -> Result<()> {
        let batches = self
            .inner
            .db
            .sql(
                "SELECT seq, name, action, version, definition, CAST(ts AS BIGINT)
                 FROM lookout.evaluators ORDER BY seq",
            )
            .await?;
        let mut state = self.inner.state.lock().await;
        for b in &batches {
            let (seq, version, ts) = (ints(b, 0)?, ints(b, 3)?, ints(b, 5)?);
            let (name, action, definition) = (strings(b, 1)?, strings(b, 2)?, strings(b, 4)?);
            for r in 0..b.num_rows() {
                state.next_seq = state.next_seq.max(seq[r].unwrap_or(0));
                let name = name[r].clone().unwrap_or_default();
                match action[r].as_deref() {
                    Some("create" | "alter") => {
                        let def: Definition =
                            serde_json::from_str(definition[r].as_deref().unwrap_or(""))
                                .map_err(internal)?;
                        let paused = state.evaluators.get(&name).is_some_and(|e| e.paused);
                        let runtime = Arc::new(Runtime::new(def.concurrency));
                        state.evaluators.insert(
                            name,
                            Evaluator {
                                def,
                                version: version[r].unwrap_or(1),
                                since: ts[r].unwrap_or(0),
                                paused,
                                runtime,
                            },
                        );
                    }
                    Some("pause" | "resume") => {
                        if let Some(e) = state.evaluators.get_mut(&name) {
                            e.paused = action[r].as_deref() == Some("pause");
                        }
                    }
                    _ => {
                        state.evaluators.remove(&name);
                    }
                }
            }
        }
        // Today's spending, so a restart does not reset the budget.
        let today = day_of(self.now());
        let spent = self
            .inner
            .db
            .sql(&format!(
                "SELECT evaluator, sum(cost_usd) FROM {SCORES}
                 WHERE ts >= to_timestamp_micros({}) GROUP BY evaluator",
                today * 86_400_000_000
            ))
            .await?;
        for b in &spent {
            let names = strings(b, 0)?;
            let dollars = cast(b.column(1), &DataType::Float64).map_err(internal)?;
            let dollars = dollars.as_primitive::<arrow::datatypes::Float64Type>();
            for (r, name) in names.iter().enumerate() {
                if let Some(e) = name.as_ref().and_then(|n| state.evaluators.get(n)) {
                    *lock(&e.runtime.spent) = (today, dollars.value(r));
                }
            }
        }
        Ok(())
    }

    /// Appends one change to the log (durable before it takes effect).
    async fn log(
        &self,
        state: &mut State,
        name: &str,
        action: &str,
        version: i64,
        def: Option<&Definition>,
        at: Micros,
    ) -> Result<()> {
        state.next_seq += 1;
        let definition = match def {
            Some(d) => quote_literal(&serde_json::to_string(d).map_err(internal)?),
            None => "NULL".into(),
        };
        self.inner
            .db
            .sql(&format!(
                "INSERT INTO lookout.evaluators VALUES (to_timestamp_micros({at}), {}, {}, {}, {version}, {definition})",
                state.next_seq,
                quote_literal(name),
                quote_literal(action),
            ))
            .await?;
        Ok(())
    }

    /// The background loop: every `every`, starts calls for each active
    /// evaluator's new rows.
    async fn run_loop(self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let active: Vec<(String, Evaluator)> = {
                let state = self.inner.state.lock().await;
                state
                    .evaluators
                    .iter()
                    .filter(|(_, e)| !e.paused)
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect()
            };
            let now = self.now();
            for (name, evaluator) in active {
                let range = (pass_start(&evaluator, now), now);
                match self.start_calls(&name, &evaluator, range).await {
                    Ok((_, true)) => {
                        let mut scanned = lock(&evaluator.runtime.scanned);
                        scanned.0 = Some(scanned.0.map_or(now, |s| s.max(now)));
                    }
                    Ok((_, false)) => {}
                    Err(e) => {
                        *lock(&evaluator.runtime.last_error) = Some(e.to_string());
                        tracing::warn!(evaluator = name, error = %e, "evaluator: finding rows to judge failed");
                    }
                }
            }
            // Reap finished calls.
            let mut calls = self.inner.calls.lock().await;
            while calls.try_join_next().is_some() {}
        }
    }

    /// Why `evaluator` makes no calls now, if it does not.
    fn blocked(&self, evaluator: &Evaluator) -> Option<&'static str> {
        if evaluator.paused {
            return Some("paused");
        }
        if lock(&evaluator.runtime.open_until).is_some_and(|t| t > Instant::now()) {
            return Some("circuit_open");
        }
        if let Some(budget) = evaluator.def.budget_usd_per_day {
            let (day, spent) = *lock(&evaluator.runtime.spent);
            if day == day_of(self.now()) && spent >= budget {
                return Some("budget_exhausted");
            }
        }
        None
    }

    /// Starts calls for rows of `range` not judged yet, up to what the
    /// evaluator's concurrency allows; returns how many started, and
    /// whether the query found every candidate of the range (then each is
    /// judged or being judged).
    async fn start_calls(
        &self,
        name: &str,
        evaluator: &Evaluator,
        range: (Micros, Micros),
    ) -> Result<(usize, bool)> {
        if self.blocked(evaluator).is_some() {
            return Ok((0, false));
        }
        let runtime = &evaluator.runtime;
        let free = runtime.permits.available_permits();
        if free == 0 {
            return Ok((0, false));
        }
        let limit = evaluator.def.concurrency * FETCH_PER_SLOT;
        let rows = self.candidates(name, evaluator, range, limit).await?;
        let complete = rows.len() < limit;
        let mut started = 0;
        for row in rows {
            if started >= free {
                break;
            }
            {
                let mut in_flight = lock(&runtime.in_flight);
                if in_flight.contains_key(&row.key) {
                    continue;
                }
                in_flight.insert(row.key.clone(), None);
            }
            started += 1;
            let this = self.clone();
            let name = name.to_string();
            let evaluator = evaluator.clone();
            self.inner
                .calls
                .lock()
                .await
                .spawn(async move { this.judge_row(&name, &evaluator, row).await });
        }
        Ok((started, complete))
    }

    /// Rows of `range` matching the evaluator and not judged by its version.
    async fn candidates(
        &self,
        name: &str,
        evaluator: &Evaluator,
        range: (Micros, Micros),
        limit: usize,
    ) -> Result<Vec<Candidate>> {
        let sql = candidates_sql(&self.inner.db, name, evaluator, range, limit)?;
        let runtime = &evaluator.runtime;
        let generation = runtime.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let batches = self.inner.db.sql(&sql).await?;
        // Verdicts written before this query started are in its rows.
        lock(&runtime.in_flight).retain(|_, done| done.is_none_or(|g| g >= generation));
        let placeholders = placeholders(&evaluator.def.prompt);
        let mut out = Vec::new();
        for b in &batches {
            let keys = strings(b, 0)?;
            let times = ints(b, 1)?;
            let values: Vec<Vec<Option<String>>> = (0..placeholders.len())
                .map(|i| strings(b, 2 + i))
                .collect::<Result<_>>()?;
            for r in 0..b.num_rows() {
                let Some(key) = keys[r].clone() else { continue };
                let fields: Vec<(String, String)> = placeholders
                    .iter()
                    .zip(&values)
                    .map(|(p, v)| (p.clone(), v[r].clone().unwrap_or_default()))
                    .collect();
                out.push(Candidate {
                    key,
                    ts: times[r],
                    prompt: fill(&evaluator.def.prompt, &fields),
                });
            }
        }
        Ok(out)
    }

    /// Judges one row and records the verdict; an unfinished call records
    /// nothing (the row stays a candidate).
    async fn judge_row(&self, name: &str, evaluator: &Evaluator, row: Candidate) {
        let runtime = Arc::clone(&evaluator.runtime);
        let result = self.call_and_record(name, evaluator, &row).await;
        let mut in_flight = lock(&runtime.in_flight);
        match result {
            Ok(()) => {
                let generation = runtime.generation.load(Ordering::SeqCst);
                in_flight.insert(row.key, Some(generation));
            }
            Err(e) => {
                // Nothing recorded: the row is a candidate again.
                in_flight.remove(&row.key);
                *lock(&runtime.last_error) = Some(e);
            }
        }
    }

    async fn call_and_record(
        &self,
        name: &str,
        evaluator: &Evaluator,
        row: &Candidate,
    ) -> std::result::Result<(), String> {
        let runtime = &evaluator.runtime;
        let def = &evaluator.def;
        let Ok(_permit) = runtime.permits.acquire().await else {
            return Err("shutting down".into());
        };
        // The rate limit: calls start at least 60 / rate seconds apart.
        let at = {
            let mut next = lock(&runtime.next_call);
            let at = (*next).max(Instant::now());
            *next = at + Duration::from_secs_f64(60.0 / def.rate_per_minute.max(1e-6));
            at
        };
        tokio::time::sleep_until(at.into()).await;
        if let Some(why) = self.blocked(evaluator) {
            return Err(format!("not called: {why}"));
        }
        let api_key = match &def.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("the API key variable {var} is not set in the server's environment")
            })?),
        };
        let request = judge::Request {
            url: format!("{}/chat/completions", def.endpoint.trim_end_matches('/')),
            api_key,
            model: def.model.clone(),
            prompt: row.prompt.clone(),
            score_range: (def.score_min, def.score_max),
            timeout: Duration::from_micros(def.timeout as u64),
            attempts: ATTEMPTS,
        };
        let started = Instant::now();
        let called = tokio::task::spawn_blocking(move || judge::call(&request))
            .await
            .map_err(|e| e.to_string())?;
        let metrics = &self.inner.metrics;
        metrics
            .call_seconds
            .observe(lookout_metrics::seconds_since(started));
        let verdict = match called {
            Ok(v) => v,
            Err(unavailable) => {
                metrics
                    .calls
                    .get_or_create(&[("outcome", "unavailable")])
                    .inc();
                let failures = runtime.failures.fetch_add(1, Ordering::SeqCst) + 1;
                if failures >= BREAKER_FAILURES {
                    let n = runtime.reopenings.fetch_add(1, Ordering::SeqCst);
                    let pause = (BREAKER_PAUSE * 2u32.pow(n.min(5))).min(BREAKER_MAX_PAUSE);
                    *lock(&runtime.open_until) = Some(Instant::now() + pause);
                    runtime.failures.store(0, Ordering::SeqCst);
                    tracing::warn!(
                        evaluator = name,
                        pause_s = pause.as_secs(),
                        "evaluator: the judge keeps failing; pausing calls"
                    );
                }
                return Err(unavailable.error);
            }
        };
        runtime.failures.store(0, Ordering::SeqCst);
        runtime.reopenings.store(0, Ordering::SeqCst);
        let (price_in, price_out) = def.price_per_million;
        let cost = (verdict.input_tokens as f64 * price_in
            + verdict.output_tokens as f64 * price_out)
            / 1e6;
        metrics
            .calls
            .get_or_create(&[("outcome", verdict.outcome.as_str())])
            .inc();
        metrics.cost_usd.inc_by(cost);
        metrics
            .tokens
            .get_or_create(&[("direction", "input")])
            .inc_by(verdict.input_tokens.max(0) as u64);
        metrics
            .tokens
            .get_or_create(&[("direction", "output")])
            .inc_by(verdict.output_tokens.max(0) as u64);
        {
            let today = day_of(self.now());
            let mut spent = lock(&runtime.spent);
            if spent.0 != today {
                *spent = (today, 0.0);
            }
            spent.1 += cost;
        }
        self.record(name, evaluator, row, &verdict, cost)
            .await
            .map_err(|e| e.to_string())
    }

    async fn record(
        &self,
        name: &str,
        evaluator: &Evaluator,
        row: &Candidate,
        v: &Verdict,
        cost: f64,
    ) -> Result<()> {
        let def = &evaluator.def;
        // The judge's pass/fail: a score in the upper half of the range.
        let passed = (v.outcome == judge::Outcome::Scored)
            .then(|| v.score.map(|s| s >= (def.score_min + def.score_max) / 2.0))
            .flatten();
        let batch = verdict_batch(self.now(), name, evaluator.version, row, v, cost, passed)?;
        self.inner.db.write(SCORES, batch).await?;
        Ok(())
    }

    /// Runs one statement.
    async fn run(&self, statement: Statement, session: &mut dyn SqlSession) -> Result<Output> {
        let now = session.now_micros().max(self.now());
        match statement {
            Statement::Create {
                name,
                if_not_exists,
                def,
            } => {
                let mut state = self.inner.state.lock().await;
                if state.evaluators.contains_key(&name) {
                    if if_not_exists {
                        return Ok(command("CREATE EVALUATOR"));
                    }
                    return Err(QueryError::new(
                        SqlState::DuplicateObject,
                        format!("evaluator \"{name}\" already exists"),
                    ));
                }
                let evaluator = Evaluator {
                    runtime: Arc::new(Runtime::new(def.concurrency)),
                    def: *def,
                    version: 1,
                    since: now,
                    paused: false,
                };
                self.check(session, &name, &evaluator).await?;
                self.log(&mut state, &name, "create", 1, Some(&evaluator.def), now)
                    .await?;
                state.evaluators.insert(name, evaluator);
                Ok(command("CREATE EVALUATOR"))
            }
            Statement::Alter { name, changes } => {
                let mut state = self.inner.state.lock().await;
                let old = state
                    .evaluators
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| undefined(&name))?;
                let mut def = old.def.clone();
                for change in &changes {
                    change.apply(&mut def);
                }
                let evaluator = Evaluator {
                    runtime: Arc::new(Runtime::new(def.concurrency)),
                    def,
                    version: old.version + 1,
                    since: now,
                    paused: old.paused,
                };
                self.check(session, &name, &evaluator).await?;
                self.log(
                    &mut state,
                    &name,
                    "alter",
                    evaluator.version,
                    Some(&evaluator.def),
                    now,
                )
                .await?;
                state.evaluators.insert(name, evaluator);
                Ok(command("ALTER EVALUATOR"))
            }
            Statement::Drop { name, if_exists } => {
                let mut state = self.inner.state.lock().await;
                if !state.evaluators.contains_key(&name) {
                    return if if_exists {
                        Ok(command("DROP EVALUATOR"))
                    } else {
                        Err(undefined(&name))
                    };
                }
                self.log(&mut state, &name, "drop", 0, None, now).await?;
                state.evaluators.remove(&name);
                Ok(command("DROP EVALUATOR"))
            }
            Statement::Pause { name, paused } => {
                let mut state = self.inner.state.lock().await;
                let version = state
                    .evaluators
                    .get(&name)
                    .ok_or_else(|| undefined(&name))?
                    .version;
                let action = if paused { "pause" } else { "resume" };
                self.log(&mut state, &name, action, version, None, now)
                    .await?;
                if let Some(e) = state.evaluators.get_mut(&name) {
                    e.paused = paused;
                }
                Ok(command(if paused {
                    "PAUSE EVALUATOR"
                } else {
                    "RESUME EVALUATOR"
                }))
            }
            Statement::Evaluate { name, from, to } => {
                let evaluator = {
                    let state = self.inner.state.lock().await;
                    state
                        .evaluators
                        .get(&name)
                        .cloned()
                        .ok_or_else(|| undefined(&name))?
                };
                let range = (
                    instant(session, &from, "EVALUATE ... FROM").await?,
                    instant(session, &to, "EVALUATE ... TO").await?,
                );
                let judged = self.backfill(&name, &evaluator, range).await?;
                Ok(Output::Command {
                    tag: "EVALUATE",
                    rows: Some(judged),
                })
            }
            Statement::Show => self.show().await,
        }
    }

    /// Judges every row of `range` for `evaluator`'s version, waiting for
    /// the calls; returns how many rows got a verdict here.
    async fn backfill(
        &self,
        name: &str,
        evaluator: &Evaluator,
        range: (Micros, Micros),
    ) -> Result<u64> {
        let counted = |db: Lookout| async move {
            let b = db
                .sql(&format!(
                    "SELECT count(*) FROM {SCORES} WHERE evaluator = {} AND evaluator_version = {}",
                    quote_literal(name),
                    evaluator.version
                ))
                .await?;
            Ok::<i64, QueryError>(
                b.first()
                    .and_then(|b| ints(b, 0).ok()?.first().copied().flatten())
                    .unwrap_or(0),
            )
        };
        let before = counted(self.inner.db.clone()).await?;
        loop {
            if let Some(why) = self.blocked(evaluator) {
                return Err(QueryError::new(
                    SqlState::ObjectNotInPrerequisiteState,
                    format!("evaluator \"{name}\" cannot call its judge now: {why}"),
                ));
            }
            let (started, _) = self.start_calls(name, evaluator, range).await?;
            let in_flight = running(&evaluator.runtime);
            if started == 0 && in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut calls = self.inner.calls.lock().await;
            while calls.try_join_next().is_some() {}
        }
        let after = counted(self.inner.db.clone()).await?;
        Ok((after - before).max(0) as u64)
    }

    /// Plans the evaluator's query once, so a bad `WHERE`, key or
    /// placeholder fails `CREATE`/`ALTER` rather than every tick.
    async fn check(
        &self,
        session: &mut dyn SqlSession,
        name: &str,
        evaluator: &Evaluator,
    ) -> Result<()> {
        let sql = candidates_sql(&self.inner.db, name, evaluator, (0, 0), 0)?;
        session.logical_plan(&sql).await?;
        Ok(())
    }

    async fn show(&self) -> Result<Output> {
        let state = self.inner.state.lock().await;
        let counts = self
            .inner
            .db
            .sql(&format!(
                "SELECT evaluator, evaluator_version, count(*),
                        sum(CASE WHEN outcome = 'scored' THEN 1 ELSE 0 END),
                        sum(CASE WHEN outcome <> 'scored' THEN 1 ELSE 0 END)
                 FROM {SCORES} GROUP BY evaluator, evaluator_version"
            ))
            .await?;
        let mut judged: BTreeMap<(String, i64), (i64, i64, i64)> = BTreeMap::new();
        for b in &counts {
            let (n, v) = (strings(b, 0)?, ints(b, 1)?);
            let (all, scored, other) = (ints(b, 2)?, ints(b, 3)?, ints(b, 4)?);
            for r in 0..b.num_rows() {
                if let (Some(n), Some(v)) = (n[r].clone(), v[r]) {
                    judged.insert(
                        (n, v),
                        (
                            all[r].unwrap_or(0),
                            scored[r].unwrap_or(0),
                            other[r].unwrap_or(0),
                        ),
                    );
                }
            }
        }
        let schema = show_schema();
        let mut cols: [Vec<Option<String>>; 7] = Default::default();
        let mut numbers: [Vec<i64>; 5] = Default::default();
        let mut spent = Vec::new();
        for (name, e) in &state.evaluators {
            let (all, scored, other) = judged
                .get(&(name.clone(), e.version))
                .copied()
                .unwrap_or_default();
            let status = self.blocked(e).unwrap_or("active");
            cols[0].push(Some(name.clone()));
            cols[1].push(Some(quoted_table(&e.def.source)));
            cols[2].push(Some(e.def.model.clone()));
            cols[3].push(Some(e.def.endpoint.clone()));
            cols[4].push(Some(status.to_string()));
            // The variable's name only: its value is a secret.
            cols[5].push(e.def.api_key_env.clone());
            cols[6].push(lock(&e.runtime.last_error).clone());
            numbers[0].push(e.version);
            numbers[1].push(all);
            numbers[2].push(scored);
            numbers[3].push(other);
            numbers[4].push(running(&e.runtime) as i64);
            let (day, dollars) = *lock(&e.runtime.spent);
            spent.push(if day == day_of(self.now()) {
                dollars
            } else {
                0.0
            });
        }
        let text = |v: &Vec<Option<String>>| Arc::new(StringArray::from(v.clone())) as ArrayRef;
        let int = |v: &Vec<i64>| Arc::new(Int64Array::from(v.clone())) as ArrayRef;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                text(&cols[0]),
                int(&numbers[0]),
                text(&cols[1]),
                text(&cols[2]),
                text(&cols[3]),
                text(&cols[5]),
                text(&cols[4]),
                int(&numbers[1]),
                int(&numbers[2]),
                int(&numbers[3]),
                int(&numbers[4]),
                Arc::new(Float64Array::from(spent)),
                text(&cols[6]),
            ],
        )
        .map_err(internal)?;
        Ok(Output::from_batches(schema, vec![batch]))
    }
}

/// Where a background pass starts: the whole look-back window at the first
/// pass and every `FULL_PASS_EVERY`, else a little before the end of the
/// last pass that found all its candidates.
fn pass_start(evaluator: &Evaluator, now: Micros) -> Micros {
    let floor = evaluator.since.max(now - LOOKBACK);
    let mut scanned = lock(&evaluator.runtime.scanned);
    match *scanned {
        (Some(through), Some(full)) if full.elapsed() < FULL_PASS_EVERY => {
            floor.max(through - RECENT)
        }
        _ => {
            scanned.1 = Some(Instant::now());
            floor
        }
    }
}

/// Calls running now.
fn running(runtime: &Runtime) -> usize {
    lock(&runtime.in_flight)
        .values()
        .filter(|done| done.is_none())
        .count()
}

/// A row to judge.
#[derive(Debug, Clone)]
struct Candidate {
    key: String,
    ts: Option<Micros>,
    prompt: String,
}

/// The `{{column}}` placeholders of a prompt, in order, each once.
pub(crate) fn placeholders(prompt: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim().to_string();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
        rest = &after[end + 2..];
    }
    out
}

/// The prompt with each placeholder replaced by its value.
pub(crate) fn fill(prompt: &str, values: &[(String, String)]) -> String {
    let mut out = String::with_capacity(prompt.len());
    let mut rest = prompt;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        match values.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The query for rows of `range` not yet judged by the evaluator's version:
/// key, time, then each placeholder's column as text.
fn candidates_sql(
    db: &Lookout,
    name: &str,
    evaluator: &Evaluator,
    range: (Micros, Micros),
    limit: usize,
) -> Result<String> {
    let def = &evaluator.def;
    let table = db.storage().table(&def.source).map_err(|_| {
        QueryError::new(
            SqlState::UndefinedTable,
            format!("relation \"{}\" does not exist", def.source),
        )
    })?;
    let time = quote_ident(&table.options.time_column);
    let key = format!("CAST({} AS VARCHAR)", quote_ident(&def.key));
    let mut select = vec![
        format!("{key} AS \"_key\""),
        format!("CAST({time} AS BIGINT) AS \"_ts\""),
    ];
    for (i, p) in placeholders(&def.prompt).iter().enumerate() {
        select.push(format!("CAST({} AS VARCHAR) AS \"_p{i}\"", quote_ident(p)));
    }
    let filter = def
        .filter
        .as_ref()
        .map(|f| format!(" AND ({f})"))
        .unwrap_or_default();
    let sample = if def.sample < 1.0 {
        format!(" AND sample_hash({key}) < {}", def.sample)
    } else {
        String::new()
    };
    Ok(format!(
        "SELECT {} FROM {} WHERE {} IS NOT NULL AND {time} >= to_timestamp_micros({}) AND {time} < to_timestamp_micros({}){filter}{sample}
           AND {key} NOT IN (SELECT call_key FROM {SCORES} WHERE evaluator = {} AND evaluator_version = {})
         ORDER BY {time} LIMIT {limit}",
        select.join(", "),
        quoted_table(&def.source),
        quote_ident(&def.key),
        range.0,
        range.1,
        quote_literal(name),
        evaluator.version,
    ))
}

fn verdict_batch(
    now: Micros,
    name: &str,
    version: i64,
    row: &Candidate,
    v: &Verdict,
    cost: f64,
    passed: Option<bool>,
) -> Result<RecordBatch> {
    let ts = |t: Option<Micros>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC"))
    };
    let text = |s: Option<&str>| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
    let int = |n: Option<i64>| -> ArrayRef { Arc::new(Int64Array::from(vec![n])) };
    let float = |n: Option<f64>| -> ArrayRef { Arc::new(Float64Array::from(vec![n])) };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("ts", ts(Some(now))),
        ("call_key", text(Some(&row.key))),
        ("evaluator", text(Some(name))),
        ("evaluator_version", int(Some(version))),
        ("call_ts", ts(row.ts)),
        ("outcome", text(Some(v.outcome.as_str()))),
        ("score", float(v.score)),
        ("reason", text(v.reason.as_deref())),
        ("judge_model", text(v.judge_model.as_deref())),
        ("input_tokens", int(Some(v.input_tokens))),
        ("output_tokens", int(Some(v.output_tokens))),
        ("cost_usd", float(Some(cost))),
        ("latency_ms", float(Some(v.latency_ms))),
        ("attempts", int(Some(i64::from(v.attempts)))),
        ("error", text(v.error.as_deref())),
        (
            "passed",
            Arc::new(arrow::array::BooleanArray::from(vec![passed])),
        ),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(internal)
}

fn undefined(name: &str) -> QueryError {
    QueryError::new(
        SqlState::UndefinedObject,
        format!("evaluator \"{name}\" does not exist"),
    )
}

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("endpoint", DataType::Utf8, false),
        Field::new("api_key_env", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("judged", DataType::Int64, false),
        Field::new("scored", DataType::Int64, false),
        Field::new("not_scored", DataType::Int64, false),
        Field::new("in_flight", DataType::Int64, false),
        Field::new("spent_today_usd", DataType::Float64, false),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

/// The statement extension.
#[derive(Debug)]
struct EvaluatorStatements {
    evaluators: Evaluators,
}

impl SqlExtension for EvaluatorStatements {
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
        if !is_evaluator_statement(sql) {
            return None;
        }
        Some(parse(sql).map(|statement| {
            Box::new(ParsedEvaluator {
                evaluators: self.evaluators.clone(),
                statement,
            }) as Box<dyn ExtStatement>
        }))
    }
}

#[derive(Debug)]
struct ParsedEvaluator {
    evaluators: Evaluators,
    statement: Statement,
}

impl std::fmt::Display for ParsedEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.statement.fmt(f)
    }
}

#[async_trait]
impl ExtStatement for ParsedEvaluator {
    /// Admins define evaluators (they spend money and send rows to an
    /// endpoint); writers back-fill; readers look.
    fn access(&self) -> Access {
        match self.statement {
            Statement::Show => Access::Read,
            Statement::Evaluate { .. } => Access::Write,
            _ => Access::Admin,
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        matches!(self.statement, Statement::Show).then(show_schema)
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output> {
        self.evaluators.run(self.statement.clone(), session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_filled() {
        let prompt = "Q: {{question}}\nA: {{ answer }}\nAgain: {{question}} {{missing}} {{";
        assert_eq!(placeholders(prompt), ["question", "answer", "missing"]);
        let filled = fill(
            prompt,
            &[
                ("question".into(), "why {{answer}}?".into()),
                ("answer".into(), "because".into()),
            ],
        );
        // A value is pasted as is, never expanded again.
        assert_eq!(
            filled,
            "Q: why {{answer}}?\nA: because\nAgain: why {{answer}}? {{missing}} {{"
        );
    }
}
