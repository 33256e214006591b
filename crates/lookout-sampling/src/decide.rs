//! Decisions: which held rows a sampled table keeps, with which weights.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use lookout_storage::{CreateTable, Storage, StorageError, TableDef, time_type};

use crate::policy::{
    ARRIVED, HOUR, RESCUE_EVERY, SamplingPolicy, WAL_ROWS, counts_table, floor_hour, held_table,
    is_sampling, policy_of, ts_literal,
};
use crate::select::Selection;
use lookout_query::SqlState;
use lookout_query::ext::{quote_ident as quote, quoted_table};
use lookout_query::{Lookout, QueryError, Result, SqlSession};

/// How far decisions on a table have gone.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Marks {
    /// Rows that arrived before this are decided, or wait for their hour.
    pub(crate) decided_through: i64,
    /// Hours before this are closed: their rows are decided.
    pub(crate) hours_closed_before: i64,
}

/// What one decision did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Decided {
    pub(crate) kept: u64,
    pub(crate) dropped: u64,
    pub(crate) rescued: u64,
}

/// Per-process state of the decisions: one runs at a time per database,
/// marks advanced past rows that only wait, when the last rescue ran.
#[derive(Debug)]
pub(crate) struct Decisions {
    /// The database decided on.
    pub(crate) lookout: Lookout,
    pub(crate) running: tokio::sync::Mutex<()>,
    pub(crate) marks: Mutex<HashMap<String, Marks>>,
    pub(crate) last_rescue: Mutex<HashMap<String, Instant>>,
    /// The error of each table's last decision, when it failed (shown by
    /// `SHOW SAMPLING`; cleared by the next decision that succeeds).
    pub(crate) failures: Mutex<HashMap<String, String>>,
    metrics: crate::metrics::SamplingMetrics,
}

impl Decisions {
    pub(crate) fn new(lookout: Lookout) -> Decisions {
        Decisions {
            metrics: crate::metrics::SamplingMetrics::register(lookout.metrics()),
            lookout,
            running: tokio::sync::Mutex::default(),
            marks: Mutex::default(),
            last_rescue: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

/// When a decision runs and what it may close.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The decision's "now" (the session's `lookout.now`, or the clock).
    pub(crate) now: i64,
    /// Close every hour that has rows (`RESET SAMPLING`).
    pub(crate) close_all: bool,
    /// Run the rescue pass even if it ran less than a minute ago.
    pub(crate) rescue_now: bool,
}

pub(crate) struct Plan<'a> {
    pub(crate) policy: &'a SamplingPolicy,
    pub(crate) def: TableDef,
    pub(crate) marks: Marks,
    pub(crate) cutoff: i64,
    pub(crate) close_before: i64,
}

impl Plan<'_> {
    pub(crate) fn ts(&self) -> String {
        quote(&self.def.options.time_column)
    }

    pub(crate) fn columns(&self) -> Vec<String> {
        self.def.columns.iter().map(|c| quote(&c.name)).collect()
    }

    /// The rows this decision looks at, with their hour, hash, rate,
    /// whether a keep-rule over the row matches, and whether it arrived
    /// before the last decision (`_again`): new arrivals, and the held rows
    /// of the hours it closes. A [`Selection`] drops the `_again` rows whose
    /// key the table holds already (kept by a rule), and finds the rows a
    /// rule reading other tables keeps and the (segment, hour)s closed
    /// before: by sets it reads first, so that no join ever holds the held
    /// rows in a hash table.
    pub(crate) fn candidates(&self) -> String {
        let p = self.policy;
        let source = quote(&p.table);
        let held = quoted_table(&held_table(&p.table));
        let (ts, key) = (self.ts(), quote(&p.key));
        let (wm, cutoff) = (
            ts_literal(self.marks.decided_through),
            ts_literal(self.cutoff),
        );
        let (hc, hc2) = (
            ts_literal(self.marks.hours_closed_before),
            ts_literal(self.close_before),
        );
        format!(
            "SELECT {}, date_bin(INTERVAL '1 hour', {source}.{ts}, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS \"_hour\", \
             sample_hash(CAST({source}.{key} AS VARCHAR)) AS \"_h\", \
             least(greatest(coalesce(CAST(({}) AS DOUBLE PRECISION), 0.0), 0.0), 1.0) AS \"_rate\", \
             ({}) AS \"_keep\", {ARRIVED} < {wm} AS \"_again\" \
             FROM {held} AS {source} \
             WHERE ({ARRIVED} >= {wm} AND {ARRIVED} < {cutoff}) \
                OR ({ARRIVED} < {wm} AND {source}.{ts} >= {hc} AND {source}.{ts} < {hc2})",
            self.columns()
                .iter()
                .map(|c| format!("{source}.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.rate,
            SamplingPolicy::keep_expr(&p.row_rules()),
        )
    }

    /// The (segment, hour)s closed by earlier decisions: a row of one is late.
    pub(crate) fn closed_sql(&self) -> String {
        let segments: String = self
            .policy
            .segment_by
            .iter()
            .map(|c| format!("{}, ", quote(c)))
            .collect();
        format!(
            "SELECT DISTINCT {segments}\"hour\" AS \"_hour\" FROM {} WHERE closes_hour",
            quoted_table(&counts_table(&self.policy.table))
        )
    }

    /// Keys the table holds in the hours this decision closes (rows a rule
    /// kept earlier); None when no candidate can be such a row.
    pub(crate) fn published_sql(&self) -> Option<String> {
        let (ts, key) = (self.ts(), quote(&self.policy.key));
        (self.marks.decided_through > 0).then(|| {
            format!(
                "SELECT DISTINCT {key} FROM {} WHERE {ts} >= {} AND {ts} < {} AND {key} IS NOT NULL",
                quoted_table(&self.policy.table),
                ts_literal(self.marks.hours_closed_before),
                ts_literal(self.close_before),
            )
        })
    }

    /// Keys of candidates that a rule reading other tables keeps.
    pub(crate) fn matched_sql(&self) -> Option<String> {
        self.table_rule_keys(&format!("{ARRIVED} < {}", ts_literal(self.cutoff)))
    }

    /// The table's columns, the weight column given by `weight`.
    pub(crate) fn output_columns(&self, weight: &str) -> Vec<String> {
        self.def
            .columns
            .iter()
            .map(|c| {
                if c.name == self.policy.weight {
                    format!("{weight} AS {}", quote(&c.name))
                } else {
                    quote(&c.name)
                }
            })
            .collect()
    }

    /// Keys of held rows (that `filter` selects) that a table-reading rule
    /// matches, one filter per rule; None without such rules.
    pub(crate) fn table_rule_keys(&self, filter: &str) -> Option<String> {
        let p = self.policy;
        let rules = p.table_rules();
        if rules.is_empty() {
            return None;
        }
        let held = quoted_table(&held_table(&p.table));
        let (source, key) = (quote(&p.table), quote(&p.key));
        let selects: Vec<String> = rules
            .iter()
            .map(|rule| {
                format!(
                    "SELECT {source}.{key} AS \"_matched\" FROM {held} AS {source} WHERE {filter} AND ({rule})"
                )
            })
            .collect();
        Some(selects.join(" UNION "))
    }

    /// The candidates' columns the first pass of a selection reads: the
    /// segment columns, the key and the decision's marks.
    pub(crate) fn narrow_candidates(&self) -> String {
        let p = self.policy;
        let mut names: Vec<&String> = p.segment_by.iter().collect();
        if !names.contains(&&p.key) {
            names.push(&p.key);
        }
        let columns: String = names.iter().map(|c| format!("{}, ", quote(c))).collect();
        format!(
            "SELECT {columns}\"_hour\", \"_h\", \"_rate\", \"_keep\", \"_again\" FROM ({}) c",
            self.candidates()
        )
    }

    /// The first pass of a decision's [`Selection`]: the counts-table rows,
    /// and the selection that keeps rows by them.
    pub(crate) async fn count(
        &self,
        session: &mut dyn SqlSession,
    ) -> Result<(Vec<Count>, Selection)> {
        let narrow = session.logical_plan(&self.narrow_candidates()).await?;
        let schema: SchemaRef = Arc::new(narrow.schema().as_arrow().clone());
        let mut selection = Selection::new(self.policy, &schema, self.close_before)?;
        selection.add_closed(&collect(session, &self.closed_sql()).await?)?;
        if let Some(sql) = self.published_sql() {
            selection.add_published(&collect(session, &sql).await?)?;
        }
        if let Some(sql) = self.matched_sql() {
            selection.add_matched(&collect(session, &sql).await?)?;
        }
        let mut rows = session.execute_logical(narrow).await?;
        while let Some(batch) = rows.next().await {
            selection.count(&batch?)?;
        }
        Ok((selection.counts()?, selection))
    }

    /// The second pass: the kept rows, in the table's columns, as the
    /// candidates are read again (never all held at once).
    pub(crate) async fn kept(
        &self,
        session: &mut dyn SqlSession,
        mut selection: Selection,
    ) -> Result<KeptRows> {
        let (_, rows) = stream(session, &self.candidates()).await?;
        let columns = self.def.columns.len();
        let weight = self
            .def
            .columns
            .iter()
            .position(|c| c.name == self.policy.weight)
            .ok_or_else(|| missing_column(&self.policy.weight, &self.policy.table))?;
        Ok(Box::pin(
            rows.map(move |batch| selection.keep(&batch?, columns, weight))
                .try_filter(|batch| futures::future::ready(batch.num_rows() > 0)),
        ))
    }

    /// Dropped rows still in the overflow that a rule reading other tables
    /// now matches, and that are not in the table.
    pub(crate) fn rescue_sql(&self, overflow_from: i64) -> Option<String> {
        let p = self.policy;
        let source = quote(&p.table);
        let (ts, key) = (self.ts(), quote(&p.key));
        let out = self.output_columns("1.0");
        let decided = format!(
            "{ARRIVED} < {} AND {ARRIVED} >= {} AND {source}.{ts} < {}",
            ts_literal(self.marks.decided_through),
            ts_literal(overflow_from),
            ts_literal(self.marks.hours_closed_before),
        );
        let matched = self.table_rule_keys(&decided)?;
        // The matched keys (few) come first in an inner join, so that its
        // hash table holds them, not the held rows (`key IN (...)` built
        // it on the held rows, as its other side has no row estimate).
        Some(format!(
            "SELECT {}, date_bin(INTERVAL '1 hour', {ts}, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS \"_hour\" \
             FROM (SELECT DISTINCT \"_matched\" FROM ({matched}) r) m \
             JOIN {} AS {source} ON {source}.{key} = m.\"_matched\" WHERE {decided} \
             AND {source}.{key} NOT IN (SELECT {key} FROM {} WHERE {key} IS NOT NULL)",
            out.join(", "),
            quoted_table(&held_table(&p.table)),
            quoted_table(&p.table),
        ))
    }
}

/// The counts table's columns for a policy.
pub(crate) fn counts_schema(policy: &SamplingPolicy, def: &TableDef) -> Result<Schema> {
    let source = def.schema()?;
    let mut fields = vec![
        Field::new("decided_at", time_type(), false),
        Field::new("hour", time_type(), true),
    ];
    for c in &policy.segment_by {
        let f = source
            .field_with_name(c)
            .map_err(|_| missing_column(c, &def.name))?;
        fields.push(Field::new(c, f.data_type().clone(), true));
    }
    for name in [
        "seen",
        "kept_by_rule",
        "kept_by_rate",
        "kept_for_minimum",
        "rescued",
        "dropped",
    ] {
        fields.push(Field::new(name, DataType::Int64, false));
    }
    fields.push(Field::new("weight", DataType::Float64, true));
    fields.push(Field::new("closes_hour", DataType::Boolean, false));
    fields.push(Field::new("decided_through", time_type(), false));
    fields.push(Field::new("hours_closed_before", time_type(), false));
    Ok(Schema::new(fields))
}

pub(crate) fn missing_column(column: &str, table: &str) -> QueryError {
    QueryError::new(
        SqlState::UndefinedColumn,
        format!("column \"{column}\" of relation \"{table}\" does not exist"),
    )
}

/// One row of the counts table.
#[derive(Debug, Default, Clone)]
pub(crate) struct Count {
    pub(crate) hour: Option<i64>,
    /// The segment's values, as one-row arrays of the segment columns.
    pub(crate) segment: Vec<ArrayRef>,
    pub(crate) seen: i64,
    pub(crate) kept_by_rule: i64,
    pub(crate) kept_by_rate: i64,
    pub(crate) kept_for_minimum: i64,
    pub(crate) rescued: i64,
    pub(crate) dropped: i64,
    pub(crate) weight: Option<f64>,
    /// Whether this decision closed the (segment, hour).
    pub(crate) closes_hour: bool,
}

pub(crate) fn counts_batch(
    schema: &SchemaRef,
    segments: usize,
    counts: &[Count],
    decided_at: i64,
    marks: Marks,
) -> Result<RecordBatch> {
    let n = counts.len();
    let stamp = |v: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![v; n])) };
    let mut columns: Vec<ArrayRef> = vec![
        stamp(decided_at),
        Arc::new(TimestampMicrosecondArray::from(
            counts.iter().map(|c| c.hour).collect::<Vec<_>>(),
        )),
    ];
    for i in 0..segments {
        let field = schema.field(2 + i);
        let parts: Vec<ArrayRef> = counts
            .iter()
            .map(|c| {
                c.segment
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| arrow::array::new_null_array(field.data_type(), 1))
            })
            .collect();
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        columns.push(if refs.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            arrow::compute::concat(&refs)?
        });
    }
    let ints = |f: fn(&Count) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(counts.iter().map(f).collect::<Vec<_>>()))
    };
    columns.push(ints(|c| c.seen));
    columns.push(ints(|c| c.kept_by_rule));
    columns.push(ints(|c| c.kept_by_rate));
    columns.push(ints(|c| c.kept_for_minimum));
    columns.push(ints(|c| c.rescued));
    columns.push(ints(|c| c.dropped));
    columns.push(Arc::new(Float64Array::from(
        counts.iter().map(|c| c.weight).collect::<Vec<_>>(),
    )));
    columns.push(Arc::new(BooleanArray::from(
        counts.iter().map(|c| c.closes_hour).collect::<Vec<_>>(),
    )));
    columns.push(stamp(marks.decided_through));
    columns.push(stamp(marks.hours_closed_before));
    // The time columns' time zone comes from the schema.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(&c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Timestamps (of any unit) as microseconds since the epoch.
pub(crate) fn micros(column: &ArrayRef) -> Result<ArrayRef> {
    let unit = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None);
    Ok(arrow::compute::cast(
        &arrow::compute::cast(column, &unit)?,
        &DataType::Int64,
    )?)
}

/// Creates (or widens) the counts table for a policy.
pub(crate) async fn ensure_counts_table(storage: &Storage, policy: &SamplingPolicy) -> Result<()> {
    let def = storage.table(&policy.table)?;
    let schema = counts_schema(policy, &def)?;
    let name = counts_table(&policy.table);
    let request = CreateTable {
        time_column: Some("decided_at".into()),
        partition_column: Some(None),
        bucket_micros: Some(30 * 24 * HOUR),
        ttl_micros: None,
        versions: None,
        derived: None,
    };
    if !storage.create_table(&name, &schema, request, true).await? {
        for field in schema.fields().iter().skip(2).take(policy.segment_by.len()) {
            storage.add_column(&name, field, true).await?;
        }
    }
    Ok(())
}

pub(crate) async fn read_marks(session: &mut dyn SqlSession, table: &str) -> Result<Marks> {
    let sql = format!(
        "SELECT CAST(max(decided_through) AS BIGINT), CAST(max(hours_closed_before) AS BIGINT) FROM {}",
        quoted_table(&counts_table(table))
    );
    let batches = session.query(&sql).await?;
    let first = |i: usize| -> i64 {
        batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| b.column(i).as_primitive::<Int64Type>())
            .filter(|c| c.is_valid(0))
            .map(|c| c.value(0))
            .unwrap_or(0)
    };
    Ok(Marks {
        decided_through: first(0),
        hours_closed_before: first(1),
    })
}

pub(crate) async fn collect(session: &mut dyn SqlSession, sql: &str) -> Result<RecordBatch> {
    let (schema, rows) = stream(session, sql).await?;
    let batches: Vec<RecordBatch> = rows
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<_, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Runs `sql`: its schema and its stream of batches.
pub(crate) async fn stream(
    session: &mut dyn SqlSession,
    sql: &str,
) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let plan = session.logical_plan(sql).await?;
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    Ok((schema, session.execute_logical(plan).await?))
}

/// Kept rows as a decision's second pass produces them.
pub(crate) type KeptRows = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// Writes kept rows and counts together: one WAL record, or for more than
/// [`WAL_ROWS`] rows one bulk load committed with the counts, fed as the
/// rows are selected. Unless exactly `expected` rows come, nothing is
/// written.
pub(crate) async fn commit(
    storage: &Storage,
    table: &str,
    kept: KeptRows,
    expected: usize,
    counts: (String, RecordBatch),
) -> Result<()> {
    let mismatch = |selected: usize| {
        QueryError::new(
            SqlState::InternalError,
            format!(
                "sampling of \"{table}\": {selected} rows selected but {expected} counted; nothing was written"
            ),
        )
    };
    if expected <= WAL_ROWS {
        let kept: Vec<RecordBatch> = kept.try_collect().await?;
        let selected: usize = kept.iter().map(RecordBatch::num_rows).sum();
        if selected != expected {
            return Err(mismatch(selected));
        }
        let mut group = vec![counts];
        if let Some(first) = kept.first() {
            let kept = arrow::compute::concat_batches(first.schema_ref(), &kept)?;
            group.push((table.to_string(), kept));
        }
        storage.write_group(group).await?;
        return Ok(());
    }
    // The load sees a storage error; the selection's own error, kept here,
    // is the one returned.
    let failure: Arc<Mutex<Option<QueryError>>> = Arc::default();
    let fail = {
        let failure = Arc::clone(&failure);
        move |e: QueryError| {
            let message = e.to_string();
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            StorageError::InvalidData(message)
        }
    };
    let selected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&selected);
    let on_error = fail.clone();
    let rows = kept
        .map(move |batch| match batch {
            Ok(batch) => {
                counted.fetch_add(batch.num_rows(), std::sync::atomic::Ordering::Relaxed);
                Ok(batch)
            }
            Err(e) => Err(on_error(e)),
        })
        .chain(
            futures::stream::once(async move {
                let selected = selected.load(std::sync::atomic::Ordering::Relaxed);
                (selected != expected).then(|| Err(fail(mismatch(selected))))
            })
            .filter_map(futures::future::ready),
        );
    let loaded = storage
        .bulk_load_with(
            table,
            Box::pin(rows),
            move || async move { Ok(vec![counts]) },
        )
        .await;
    if let Err(e) = loaded {
        let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        return Err(failure.unwrap_or_else(|| e.into()));
    }
    Ok(())
}

impl Decisions {
    /// Decides what is due in every sampled table.
    pub(crate) async fn decide_all(&self, lookout: &Lookout, clock: Clock) -> Result<Decided> {
        let mut total = Decided::default();
        let names: Vec<String> = lookout
            .storage()
            .manifest()?
            .tables
            .values()
            .filter_map(|e| e.def.derived.as_ref().filter(|d| is_sampling(d)))
            .map(|d| d.source.clone())
            .collect();
        // One table's failure (a keep-rule reading a dropped table) does not
        // hold up the others; the first error is returned after all ran.
        let mut first_error = None;
        for table in names {
            match self.decide(lookout, &table, clock).await {
                Ok(d) => {
                    total.kept += d.kept;
                    total.dropped += d.dropped;
                    total.rescued += d.rescued;
                }
                Err(e) => {
                    tracing::warn!(table, error = %e, "sampling decision failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// Decides what is due in one sampled table.
    pub(crate) async fn decide(
        &self,
        lookout: &Lookout,
        table: &str,
        clock: Clock,
    ) -> Result<Decided> {
        // Every write that took its arrival time before this has committed.
        let real = {
            let _gate = lookout.ingest().gate().write().await;
            lookout.storage().clock().now_micros()
        };
        let started = std::time::Instant::now();
        let result = self.decide_at(lookout, table, clock, real).await;
        let metrics = &self.metrics;
        metrics
            .decision_seconds
            .observe(lookout_metrics::seconds_since(started));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .decisions
            .get_or_create(&[("outcome", outcome)])
            .inc();
        if let Ok(d) = &result {
            for (label, n) in [
                ("kept", d.kept),
                ("dropped", d.dropped),
                ("rescued", d.rescued),
            ] {
                metrics.rows.get_or_create(&[("result", label)]).inc_by(n);
            }
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => failures.remove(table),
            Err(e) => failures.insert(table.to_string(), e.to_string()),
        };
        result
    }

    /// Forgets `table`'s last error (its policy was set anew or reset).
    pub(crate) fn forget_failure(&self, table: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(table);
    }

    /// The error of `table`'s last decision, if it failed.
    pub(crate) fn failure(&self, table: &str) -> Option<String> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(table).cloned()
    }

    /// Decides what is due in one sampled table, for rows that arrived
    /// before `real` (all of which have committed).
    pub(crate) async fn decide_at(
        &self,
        lookout: &Lookout,
        table: &str,
        clock: Clock,
        real: i64,
    ) -> Result<Decided> {
        let _running = self.running.lock().await;
        let storage = lookout.storage();
        let Some(policy) = policy_of(storage, table)? else {
            return Err(QueryError::new(
                SqlState::ObjectNotInPrerequisiteState,
                format!("table \"{table}\" is not sampled"),
            ));
        };
        let mut session = lookout.session();
        let stored = read_marks(&mut session, table).await?;
        // Marks this process advanced past rows that only wait for their
        // hour (nothing written); after a restart those rows are looked at
        // again, which decides nothing twice.
        let marks = {
            let cached = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            match cached.get(table) {
                Some(m)
                    if m.decided_through >= stored.decided_through
                        && m.hours_closed_before >= stored.hours_closed_before =>
                {
                    *m
                }
                _ => stored,
            }
        };
        let def = storage.table(table)?;
        let mut cutoff = (clock.now - policy.window).min(real);
        let mut close_before = floor_hour(clock.now - 2 * policy.window);
        if clock.close_all {
            cutoff = real;
            let sql = format!(
                "SELECT CAST(max({}) AS BIGINT) FROM {}",
                quote(&def.options.time_column),
                quoted_table(&held_table(table))
            );
            let last = collect(&mut session, &sql).await?;
            let last = last.column(0).as_primitive::<Int64Type>();
            if last.is_valid(0) {
                close_before = close_before.max(floor_hour(last.value(0)) + HOUR);
            }
        }
        let plan = Plan {
            policy: &policy,
            def,
            marks,
            cutoff: cutoff.max(marks.decided_through),
            close_before: close_before.max(marks.hours_closed_before),
        };
        let mut decided = Decided::default();
        let advanced = Marks {
            decided_through: plan.cutoff,
            hours_closed_before: plan.close_before,
        };
        if advanced != marks {
            let (counts, selection) = plan.count(&mut session).await?;
            if counts.is_empty() {
                // Nothing decided: only rows waiting for their hour arrived.
                self.marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(table.to_string(), advanced);
            } else {
                let schema = storage.table(&counts_table(table))?.schema()?;
                let batch =
                    counts_batch(&schema, policy.segment_by.len(), &counts, real, advanced)?;
                let expected: i64 = counts
                    .iter()
                    .map(|c| c.kept_by_rule + c.kept_by_rate + c.kept_for_minimum)
                    .sum();
                let expected = usize::try_from(expected).unwrap_or(0);
                decided.kept = expected as u64;
                decided.dropped = counts.iter().map(|c| c.dropped as u64).sum();
                let kept = plan.kept(&mut session, selection).await?;
                commit(storage, table, kept, expected, (counts_table(table), batch)).await?;
                self.marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(table.to_string(), advanced);
            }
        }
        let plan = Plan {
            marks: advanced,
            ..plan
        };
        decided.rescued = self
            .rescue(lookout, &mut session, &plan, real, clock)
            .await?;
        self.collect_held(storage, &plan, real).await?;
        Ok(decided)
    }

    pub(crate) async fn rescue(
        &self,
        lookout: &Lookout,
        session: &mut dyn SqlSession,
        plan: &Plan<'_>,
        real: i64,
        clock: Clock,
    ) -> Result<u64> {
        let policy = plan.policy;
        let Some(sql) = plan.rescue_sql(real - policy.overflow) else {
            return Ok(0);
        };
        {
            let mut last = self.last_rescue.lock().unwrap_or_else(|p| p.into_inner());
            let due = clock.rescue_now
                || last
                    .get(&policy.table)
                    .is_none_or(|t| t.elapsed() >= RESCUE_EVERY);
            if !due {
                return Ok(0);
            }
            last.insert(policy.table.clone(), Instant::now());
        }
        let found = collect(session, &sql).await?;
        if found.num_rows() == 0 {
            return Ok(0);
        }
        // Counts of rescued rows per (segment, hour).
        let segments = policy.segment_by.len();
        let hour_col = found.num_columns() - 1;
        let mut counts: Vec<Count> = Vec::new();
        let hours = micros(found.column(hour_col))?;
        let hours = hours.as_primitive::<Int64Type>();
        let seg_cols: Vec<ArrayRef> = policy
            .segment_by
            .iter()
            .map(|c| {
                found
                    .column_by_name(c)
                    .cloned()
                    .ok_or_else(|| missing_column(c, &policy.table))
            })
            .collect::<Result<_>>()?;
        for row in 0..found.num_rows() {
            let segment: Vec<ArrayRef> = seg_cols.iter().map(|c| c.slice(row, 1)).collect();
            let hour = hours.is_valid(row).then(|| hours.value(row));
            let same = |c: &&mut Count| {
                c.hour == hour
                    && c.segment
                        .iter()
                        .zip(&segment)
                        .all(|(a, b)| a.to_data() == b.to_data())
            };
            match counts.iter_mut().find(same) {
                Some(c) => {
                    c.rescued += 1;
                    c.dropped -= 1;
                }
                None => counts.push(Count {
                    hour,
                    segment,
                    rescued: 1,
                    dropped: -1,
                    ..Count::default()
                }),
            }
        }
        let storage = lookout.storage();
        let kept = found.project(&(0..hour_col).collect::<Vec<_>>())?;
        let schema = storage.table(&counts_table(&policy.table))?.schema()?;
        let batch = counts_batch(&schema, segments, &counts, real, plan.marks)?;
        let n = kept.num_rows() as u64;
        commit(
            storage,
            &policy.table,
            Box::pin(futures::stream::iter([Ok(kept)])),
            n as usize,
            (counts_table(&policy.table), batch),
        )
        .await?;
        Ok(n)
    }

    /// Drops held files whose rows are all decided and past the overflow.
    pub(crate) async fn collect_held(
        &self,
        storage: &Storage,
        plan: &Plan<'_>,
        real: i64,
    ) -> Result<()> {
        let expired_before = plan.marks.decided_through.min(real - plan.policy.overflow);
        let closed = plan.marks.hours_closed_before;
        let ts = plan.def.options.time_column.clone();
        storage
            .drop_files(&held_table(&plan.policy.table), |f| {
                let decided = matches!(
                    f.stats.get(&ts).and_then(|s| s.max.as_ref()),
                    Some(lookout_storage::StatValue::Int(max)) if *max < closed
                );
                decided && f.max_time < expired_before
            })
            .await?;
        Ok(())
    }
}

/// Runs decisions every `interval` until the database closes.
pub(crate) fn spawn_decisions(
    lookout: Lookout,
    decisions: Arc<Decisions>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let clock = Clock {
                now: lookout.storage().clock().now_micros(),
                close_all: false,
                rescue_now: false,
            };
            // Failures are logged per table; the next tick retries.
            let _ = decisions.decide_all(&lookout, clock).await;
        }
    })
}
