//! Review queues: their state in memory, the log that makes it durable, and
//! the statements.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use lookout_query::{
    Access, ExtStatement, Lookout, Output, QueryError, Result, SqlExtension, SqlSession,
};
use tokio::sync::Mutex;

use crate::grammar::{Statement, is_review_statement, parse};
use lookout_query::SqlState;

type Micros = i64;

const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lookout.review_queues (
        ts TIMESTAMPTZ NOT NULL, seq BIGINT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
        source TEXT, key_column TEXT, labels TEXT, lease_micros BIGINT,
        rule TEXT, rule_every_micros BIGINT
    ) WITH (partition_column = 'none', bucket = '30 days')",
    "CREATE TABLE IF NOT EXISTS lookout.review_items (
        ts TIMESTAMPTZ NOT NULL, seq BIGINT NOT NULL, queue TEXT NOT NULL, item TEXT NOT NULL,
        event TEXT NOT NULL, reviewer TEXT, lease_until TIMESTAMPTZ, value DOUBLE PRECISION,
        label TEXT
    ) WITH (partition_column = 'none', bucket = '30 days')",
];

/// Views over the log, for dashboards: (name, query).
const VIEWS: &[(&str, &str)] = &[(
    "review_queue_items",
    "SELECT i.queue, i.item,
            CASE WHEN i.event = 'completed' THEN 'completed'
                 WHEN i.event = 'claimed' AND i.lease_until > now() THEN 'claimed'
                 ELSE 'pending' END AS status,
            e.enqueued_at,
            CASE WHEN i.event IN ('claimed', 'completed') THEN i.reviewer END AS reviewer,
            CASE WHEN i.event = 'claimed' THEN i.lease_until END AS lease_until,
            CASE WHEN i.event = 'completed' THEN i.ts END AS completed_at,
            CASE WHEN i.event = 'completed' THEN i.value END AS value,
            CASE WHEN i.event = 'completed' THEN i.label END AS label
     FROM (SELECT *, row_number() OVER (PARTITION BY queue, item ORDER BY seq DESC) AS rn
           FROM lookout.review_items) i
     JOIN (SELECT queue, item, min(ts) AS enqueued_at FROM lookout.review_items
           WHERE event = 'enqueued' GROUP BY queue, item) e
       ON e.queue = i.queue AND e.item = i.item
     JOIN (SELECT name, action, seq,
                  row_number() OVER (PARTITION BY name ORDER BY seq DESC) AS rn
           FROM lookout.review_queues) q
       ON q.name = i.queue AND q.rn = 1 AND q.action = 'create' AND i.seq > q.seq
     WHERE i.rn = 1",
)];

/// Where an item stands.
#[derive(Debug, Clone, PartialEq)]
enum ItemState {
    Pending,
    Claimed { reviewer: String, until: Micros },
    Completed,
}

#[derive(Debug)]
struct Item {
    state: ItemState,
    enqueued_at: Micros,
    /// Position in the queue (order of enqueueing).
    position: u64,
}

#[derive(Debug, Clone)]
struct QueueDef {
    source: String,
    key: String,
    labels: String,
    lease: Micros,
    /// The enqueue rule run on a schedule: (every, query).
    rule: Option<(Micros, String)>,
}

#[derive(Debug)]
struct Queue {
    def: QueueDef,
    items: HashMap<String, Item>,
    /// Items not yet completed, in the order they were enqueued.
    open: BTreeMap<u64, String>,
    /// When the enqueue rule runs next (at once after a start).
    next_rule_at: Micros,
}

impl Queue {
    fn new(def: QueueDef) -> Self {
        Queue {
            def,
            items: HashMap::new(),
            open: BTreeMap::new(),
            next_rule_at: 0,
        }
    }

    /// Applies one logged event.
    fn apply(&mut self, event: &Event) {
        match event.kind.as_str() {
            "enqueued" => {
                if !self.items.contains_key(&event.item) {
                    self.open.insert(event.seq, event.item.clone());
                    self.items.insert(
                        event.item.clone(),
                        Item {
                            state: ItemState::Pending,
                            enqueued_at: event.ts,
                            position: event.seq,
                        },
                    );
                }
            }
            kind => {
                let Some(item) = self.items.get_mut(&event.item) else {
                    return;
                };
                item.state = match kind {
                    "claimed" => ItemState::Claimed {
                        reviewer: event.reviewer.clone().unwrap_or_default(),
                        until: event.lease_until.unwrap_or(event.ts),
                    },
                    "completed" => {
                        self.open.remove(&item.position);
                        ItemState::Completed
                    }
                    _ => ItemState::Pending,
                };
            }
        }
    }
}

/// One row of `lookout.review_items`.
#[derive(Debug, Clone)]
struct Event {
    ts: Micros,
    seq: u64,
    queue: String,
    item: String,
    kind: String,
    reviewer: Option<String>,
    lease_until: Option<Micros>,
    value: Option<f64>,
    label: Option<String>,
}

impl Event {
    /// An event of `kind` for `item`, by `reviewer` if any.
    fn new(state: &mut State, ts: Micros, queue: &str, item: &str, kind: &str) -> Event {
        Event {
            ts,
            seq: state.seq(),
            queue: queue.to_string(),
            item: item.to_string(),
            kind: kind.to_string(),
            reviewer: None,
            lease_until: None,
            value: None,
            label: None,
        }
    }

    fn values(&self) -> String {
        format!(
            "(to_timestamp_micros({}), {}, {}, {}, {}, {}, {}, {}, {})",
            self.ts,
            self.seq,
            text(&self.queue),
            text(&self.item),
            text(&self.kind),
            text_or_null(self.reviewer.as_deref()),
            self.lease_until
                .map_or("NULL".into(), |t| format!("to_timestamp_micros({t})")),
            number_or_null(self.value),
            text_or_null(self.label.as_deref()),
        )
    }
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, Queue>,
    next_seq: u64,
}

impl State {
    fn queue(&mut self, name: &str) -> Result<&mut Queue> {
        self.queues.get_mut(name).ok_or_else(|| {
            QueryError::new(
                SqlState::UndefinedObject,
                format!("review queue \"{name}\" does not exist"),
            )
        })
    }

    /// The queue of `item`, if `reviewer` holds its claim.
    fn claimed(&mut self, name: &str, item: &str, reviewer: &str) -> Result<&mut Queue> {
        let queue = self.queue(name)?;
        holds_claim(queue, name, item, reviewer)?;
        Ok(queue)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

/// A SQL string literal.
fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn text_or_null(s: Option<&str>) -> String {
    s.map_or("NULL".into(), text)
}

/// A float as a SQL literal (`{:?}` keeps `1.0` a float).
fn number_or_null(v: Option<f64>) -> String {
    v.map_or("NULL".into(), |v| format!("{v:?}"))
}

/// A SQL identifier.
fn ident(s: &str) -> String {
    lookout_query::quote_ident(s)
}

use lookout_query::ext::{int_values as integers, text_values as strings};

/// The review queues of one database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReviewQueues {
    db: Lookout,
    /// Every change to any queue holds it from reading the state to
    /// applying the logged change: the serialised write path.
    state: Arc<Mutex<State>>,
    /// Stops the rule scheduler.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    scheduler: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl ReviewQueues {
    /// Creates the log tables if needed, restores every queue from them and
    /// adds the review statements to the database's SQL.
    pub async fn start(db: Lookout) -> Result<ReviewQueues> {
        let mut session = db.session();
        for sql in TABLES {
            session.query(sql).await?;
        }
        for (name, sql) in VIEWS {
            db.register_view(name, sql);
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let queues = ReviewQueues {
            db: db.clone(),
            state: Arc::default(),
            stop: Arc::new(stop),
            scheduler: Arc::default(),
        };
        queues.restore().await?;
        db.register_extension(Arc::new(ReviewStatements {
            queues: queues.clone(),
        }));
        let task = tokio::spawn(queues.clone().schedule_loop(stopped));
        if let Ok(mut slot) = queues.scheduler.lock() {
            *slot = Some(task);
        }
        Ok(queues)
    }

    /// Stops running enqueue rules; waits for a rule in progress.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.scheduler.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Runs each queue's enqueue rule when it is due (checked every second).
    async fn schedule_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            let now = self.db.storage().clock().now_micros();
            let due: Vec<(String, String)> = {
                let mut state = self.state.lock().await;
                state
                    .queues
                    .iter_mut()
                    .filter_map(|(name, q)| {
                        let (every, query) = q.def.rule.clone()?;
                        (q.next_rule_at <= now).then(|| {
                            q.next_rule_at = now + every;
                            (name.clone(), query)
                        })
                    })
                    .collect()
            };
            for (name, query) in due {
                let mut session = self.db.session();
                let run = self.run(
                    Statement::Enqueue {
                        name: name.clone(),
                        query,
                    },
                    &mut session,
                );
                if let Err(e) = run.await {
                    tracing::warn!(queue = name, error = %e, "review queue rule failed");
                }
            }
        }
    }

    async fn restore(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let defs = self
            .db
            .sql(
                "SELECT seq, name, action, source, key_column, labels, lease_micros,
                        rule, rule_every_micros
                 FROM lookout.review_queues ORDER BY seq",
            )
            .await?;
        for b in &defs {
            let (seq, name, action) = (integers(b, 0)?, strings(b, 1)?, strings(b, 2)?);
            let (source, key, labels, lease) = (
                strings(b, 3)?,
                strings(b, 4)?,
                strings(b, 5)?,
                integers(b, 6)?,
            );
            let (rule, rule_every) = (strings(b, 7)?, integers(b, 8)?);
            for r in 0..b.num_rows() {
                let name = name[r].clone().unwrap_or_default();
                state.next_seq = state.next_seq.max(seq[r].unwrap_or(0) as u64);
                if action[r].as_deref() == Some("create") {
                    let def = QueueDef {
                        source: source[r].clone().unwrap_or_default(),
                        key: key[r].clone().unwrap_or_default(),
                        labels: labels[r].clone().unwrap_or_default(),
                        lease: lease[r].unwrap_or(0),
                        rule: rule_every[r].zip(rule[r].clone()),
                    };
                    state.queues.insert(name, Queue::new(def));
                } else {
                    state.queues.remove(&name);
                }
            }
        }
        let events = self
            .db
            .sql(
                "SELECT CAST(ts AS BIGINT), seq, queue, item, event, reviewer,
                        CAST(lease_until AS BIGINT), value, label
                 FROM lookout.review_items ORDER BY seq",
            )
            .await?;
        let mut restored = 0usize;
        for b in &events {
            let (ts, seq, queue, item) = (
                integers(b, 0)?,
                integers(b, 1)?,
                strings(b, 2)?,
                strings(b, 3)?,
            );
            let (kind, reviewer, until) = (strings(b, 4)?, strings(b, 5)?, integers(b, 6)?);
            for r in 0..b.num_rows() {
                let event = Event {
                    ts: ts[r].unwrap_or(0),
                    seq: seq[r].unwrap_or(0) as u64,
                    queue: queue[r].clone().unwrap_or_default(),
                    item: item[r].clone().unwrap_or_default(),
                    kind: kind[r].clone().unwrap_or_default(),
                    reviewer: reviewer[r].clone(),
                    lease_until: until[r],
                    value: None,
                    label: None,
                };
                state.next_seq = state.next_seq.max(event.seq);
                // Events of a queue since dropped (or of its earlier life) are skipped.
                if let Some(q) = state.queues.get_mut(&event.queue) {
                    q.apply(&event);
                    restored += 1;
                }
            }
        }
        if restored > 0 {
            tracing::info!(events = restored, "restored review queues");
        }
        Ok(())
    }

    /// Appends `events` to the log (one durable write), then applies them.
    async fn log(&self, state: &mut State, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = events.iter().map(Event::values).collect();
        self.db
            .sql(&format!(
                "INSERT INTO lookout.review_items VALUES {}",
                values.join(", ")
            ))
            .await?;
        for event in &events {
            if let Some(q) = state.queues.get_mut(&event.queue) {
                q.apply(event);
            }
        }
        Ok(())
    }

    async fn run(&self, statement: Statement, session: &mut dyn SqlSession) -> Result<Output> {
        let now = session.now_micros();
        let user = session.user().to_string();
        match statement {
            Statement::Create {
                name,
                if_not_exists,
                source,
                key,
                labels,
                lease,
                rule,
            } => {
                // The item key must be a column of the source, and the labels
                // table must take a verdict: both checked by planning.
                session
                    .query(&format!(
                        "SELECT {} FROM {} LIMIT 0",
                        ident(&key),
                        lookout_query::ext::quoted_table(&source)
                    ))
                    .await?;
                session
                    .query(&format!(
                        "SELECT ts, {}, source, kind, value, label, author FROM {} LIMIT 0",
                        ident(&key),
                        lookout_query::ext::quoted_table(&labels)
                    ))
                    .await
                    .map_err(|e| {
                        QueryError::new(SqlState::InvalidTableDefinition,
                            format!(
                                "labels table \"{labels}\" cannot take verdicts: it needs columns ts, {key}, source, kind, value, label, author ({e})"
                            ),
                        )
                    })?;
                if let Some((_, query)) = &rule {
                    // The rule must plan, and its first column is the item key.
                    session
                        .query(&format!("SELECT * FROM ({query}) AS rule LIMIT 0"))
                        .await?;
                }
                let mut state = self.state.lock().await;
                if state.queues.contains_key(&name) {
                    if if_not_exists {
                        return Ok(command("CREATE REVIEW QUEUE", None));
                    }
                    return Err(QueryError::new(
                        SqlState::DuplicateObject,
                        format!("review queue \"{name}\" already exists"),
                    ));
                }
                let seq = state.seq();
                self.db
                    .sql(&format!(
                        "INSERT INTO lookout.review_queues VALUES (to_timestamp_micros({now}), {seq}, {}, 'create', {}, {}, {}, {lease}, {}, {})",
                        text(&name),
                        text(&source),
                        text(&key),
                        text(&labels),
                        text_or_null(rule.as_ref().map(|(_, q)| q.as_str())),
                        rule.as_ref()
                            .map_or("NULL".into(), |(every, _)| every.to_string()),
                    ))
                    .await?;
                let def = QueueDef {
                    source,
                    key,
                    labels,
                    lease,
                    rule,
                };
                state.queues.insert(name, Queue::new(def));
                Ok(command("CREATE REVIEW QUEUE", None))
            }
            Statement::Drop { name, if_exists } => {
                let mut state = self.state.lock().await;
                if !state.queues.contains_key(&name) {
                    if if_exists {
                        return Ok(command("DROP REVIEW QUEUE", None));
                    }
                    state.queue(&name)?;
                }
                let seq = state.seq();
                self.db
                    .sql(&format!(
                        "INSERT INTO lookout.review_queues (ts, seq, name, action) VALUES (to_timestamp_micros({now}), {seq}, {}, 'drop')",
                        text(&name)
                    ))
                    .await?;
                state.queues.remove(&name);
                Ok(command("DROP REVIEW QUEUE", None))
            }
            Statement::Enqueue { name, query } => {
                // The rule runs in the caller's session, with the caller's rights.
                let batches = session.query(&query).await?;
                let mut state = self.state.lock().await;
                let queue = state.queue(&name)?;
                let mut fresh: Vec<String> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for b in &batches {
                    if b.num_columns() == 0 {
                        continue;
                    }
                    for item in strings(b, 0)?.into_iter().flatten() {
                        if !queue.items.contains_key(&item) && seen.insert(item.clone()) {
                            fresh.push(item);
                        }
                    }
                }
                let events: Vec<Event> = fresh
                    .iter()
                    .map(|item| Event::new(&mut state, now, &name, item, "enqueued"))
                    .collect();
                let n = events.len() as u64;
                for chunk in events.chunks(10_000) {
                    self.log(&mut state, chunk.to_vec()).await?;
                }
                Ok(command("ENQUEUE", Some(n)))
            }
            Statement::Claim {
                name,
                count,
                reviewer,
            } => {
                let reviewer = reviewer.unwrap_or(user);
                let mut state = self.state.lock().await;
                let queue = state.queue(&name)?;
                let until = now + queue.def.lease;
                let claimable: Vec<String> = queue
                    .open
                    .values()
                    .filter(|item| {
                        queue.items.get(*item).is_some_and(|i| match &i.state {
                            ItemState::Pending => true,
                            ItemState::Claimed { until, .. } => *until <= now,
                            ItemState::Completed => false,
                        })
                    })
                    .take(count)
                    .cloned()
                    .collect();
                let enqueued: Vec<Micros> = claimable
                    .iter()
                    .map(|i| queue.items.get(i).map_or(0, |i| i.enqueued_at))
                    .collect();
                let events: Vec<Event> = claimable
                    .iter()
                    .map(|item| Event {
                        reviewer: Some(reviewer.clone()),
                        lease_until: Some(until),
                        ..Event::new(&mut state, now, &name, item, "claimed")
                    })
                    .collect();
                self.log(&mut state, events).await?;
                claimed_rows(&name, &claimable, &enqueued, &reviewer, until)
            }
            Statement::Submit {
                name,
                item,
                value,
                label,
                reviewer,
            } => {
                let reviewer = reviewer.unwrap_or(user);
                let mut state = self.state.lock().await;
                let def = state.claimed(&name, &item, &reviewer)?.def.clone();
                // The verdict becomes a label: a new version of the item's
                // (key, 'review', 'verdict') record in the labels table.
                self.db
                    .sql(&format!(
                        "INSERT INTO {} (ts, {}, source, kind, value, label, author) VALUES (to_timestamp_micros({now}), {}, 'review', 'verdict', {}, {}, {})",
                        lookout_query::ext::quoted_table(&def.labels),
                        ident(&def.key),
                        text(&item),
                        number_or_null(value),
                        text_or_null(label.as_deref()),
                        text(&reviewer)
                    ))
                    .await?;
                let event = Event {
                    reviewer: Some(reviewer),
                    value,
                    label,
                    ..Event::new(&mut state, now, &name, &item, "completed")
                };
                self.log(&mut state, vec![event]).await?;
                Ok(command("SUBMIT REVIEW", None))
            }
            Statement::Release {
                name,
                item,
                reviewer,
            } => {
                let reviewer = reviewer.unwrap_or(user);
                let mut state = self.state.lock().await;
                state.claimed(&name, &item, &reviewer)?;
                let event = Event {
                    reviewer: Some(reviewer),
                    ..Event::new(&mut state, now, &name, &item, "released")
                };
                self.log(&mut state, vec![event]).await?;
                Ok(command("RELEASE REVIEW", None))
            }
            Statement::Show => {
                let state = self.state.lock().await;
                show(&state, now)
            }
        }
    }
}

/// Checks that `reviewer` holds `item`'s claim (an expired lease still
/// counts until someone else claims the item).
fn holds_claim(queue: &Queue, name: &str, item: &str, reviewer: &str) -> Result<()> {
    let not_ready = |m: String| QueryError::new(SqlState::ObjectNotInPrerequisiteState, m);
    match queue.items.get(item).map(|i| &i.state) {
        None => Err(QueryError::new(
            SqlState::UndefinedObject,
            format!("\"{item}\" is not in review queue \"{name}\""),
        )),
        Some(ItemState::Claimed { reviewer: r, .. }) if r == reviewer => Ok(()),
        Some(ItemState::Claimed { reviewer: r, .. }) => Err(not_ready(format!(
            "\"{item}\" of review queue \"{name}\" is claimed by {r}, not {reviewer}"
        ))),
        Some(ItemState::Pending) => Err(not_ready(format!(
            "\"{item}\" of review queue \"{name}\" is not claimed; CLAIM it first"
        ))),
        Some(ItemState::Completed) => Err(not_ready(format!(
            "\"{item}\" of review queue \"{name}\" is already reviewed"
        ))),
    }
}

fn command(tag: &'static str, rows: Option<u64>) -> Output {
    Output::Command { tag, rows }
}

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

fn claim_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("queue", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, false),
        timestamp_field("enqueued_at"),
        Field::new("reviewer", DataType::Utf8, false),
        timestamp_field("lease_until"),
    ]))
}

fn timestamps(values: Vec<Option<Micros>>) -> ArrayRef {
    Arc::new(arrow::array::TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn claimed_rows(
    name: &str,
    items: &[String],
    enqueued: &[Micros],
    reviewer: &str,
    until: Micros,
) -> Result<Output> {
    let n = items.len();
    let schema = claim_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![name; n])),
            Arc::new(StringArray::from(items.to_vec())),
            timestamps(enqueued.iter().map(|t| Some(*t)).collect()),
            Arc::new(StringArray::from(vec![reviewer; n])),
            timestamps(vec![Some(until); n]),
        ],
    )
    .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
    Ok(Output::from_batches(schema, vec![batch]))
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("pending", DataType::Int64, false),
        Field::new("claimed", DataType::Int64, false),
        Field::new("completed", DataType::Int64, false),
        timestamp_field("oldest_pending"),
        Field::new("oldest_pending_age_s", DataType::Float64, true),
    ]))
}

fn show(state: &State, now: Micros) -> Result<Output> {
    let mut names: Vec<&String> = state.queues.keys().collect();
    names.sort();
    let mut cols: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
    let (mut pending, mut claimed, mut completed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut oldest, mut age) = (Vec::new(), Vec::new());
    for name in names {
        let q = &state.queues[name];
        let (mut p, mut c, mut d, mut first) = (0i64, 0i64, 0i64, None::<Micros>);
        for item in q.items.values() {
            match &item.state {
                ItemState::Claimed { until, .. } if *until > now => c += 1,
                ItemState::Completed => d += 1,
                _ => {
                    p += 1;
                    first = Some(first.map_or(item.enqueued_at, |f| f.min(item.enqueued_at)));
                }
            }
        }
        cols.0.push(name.clone());
        cols.1.push(q.def.source.clone());
        cols.2.push(q.def.labels.clone());
        pending.push(p);
        claimed.push(c);
        completed.push(d);
        oldest.push(first);
        age.push(first.map(|f| (now - f) as f64 / 1e6));
    }
    let schema = show_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(cols.0)),
            Arc::new(StringArray::from(cols.1)),
            Arc::new(StringArray::from(cols.2)),
            Arc::new(arrow::array::Int64Array::from(pending)),
            Arc::new(arrow::array::Int64Array::from(claimed)),
            Arc::new(arrow::array::Int64Array::from(completed)),
            timestamps(oldest),
            Arc::new(arrow::array::Float64Array::from(age)),
        ],
    )
    .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
    Ok(Output::from_batches(schema, vec![batch]))
}

/// The statement extension.
#[derive(Debug)]
struct ReviewStatements {
    queues: ReviewQueues,
}

impl SqlExtension for ReviewStatements {
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
        if !is_review_statement(sql) {
            return None;
        }
        Some(parse(sql).map(|statement| {
            Box::new(ParsedReview {
                queues: self.queues.clone(),
                statement,
            }) as Box<dyn ExtStatement>
        }))
    }
}

/// A review statement, parsed once.
#[derive(Debug)]
struct ParsedReview {
    queues: ReviewQueues,
    statement: Statement,
}

impl std::fmt::Display for ParsedReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.statement.fmt(f)
    }
}

#[async_trait]
impl ExtStatement for ParsedReview {
    /// Admins define queues; writers (reviewers) fill and work them;
    /// readers look at them.
    fn access(&self) -> Access {
        match self.statement {
            Statement::Show => Access::Read,
            Statement::Create { .. } | Statement::Drop { .. } => Access::Admin,
            _ => Access::Write,
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match self.statement {
            Statement::Claim { .. } => Some(claim_schema()),
            Statement::Show => Some(show_schema()),
            _ => None,
        }
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output> {
        self.queues.run(self.statement.clone(), session).await
    }
}
