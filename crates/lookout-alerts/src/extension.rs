//! The alert statements as a Lookout SQL extension.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use lookout_query::{Access, ExtStatement, Output, QueryError, SqlExtension, SqlSession};

use crate::backtest::BacktestRow;
use crate::engine::{AlertEngine, describe_tiers};
use crate::error::{AlertError, Result};
use crate::evaluation::lock;
use crate::grammar::{AlertStatement, SilenceEnd, TimeBound, is_alert_statement, parse};
use crate::outcome::Silence;
use crate::rule::{RuleDef, format_duration};
use crate::store::{int, labels_json, opt_text, text, timestamp};

/// Handles `CREATE ALERT` and friends for every session of a database.
#[derive(Debug)]
pub(crate) struct AlertStatements {
    engine: AlertEngine,
}

impl AlertStatements {
    pub(crate) fn new(engine: AlertEngine) -> Self {
        AlertStatements { engine }
    }
}

fn backtest_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("ts", ts, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("previous_state", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("threshold", DataType::Float64, true),
        Field::new("notification", DataType::Utf8, true),
        Field::new("notifications", DataType::Int64, false),
    ]))
}

fn backtest_batch(rows: &[BacktestRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| labels_json(&r.labels)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.from.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.to.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.severity.map(|s| s.as_str())),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.n))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.threshold))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.notification.map(|e| e.as_str())),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.notifications),
        )),
    ];
    RecordBatch::try_new(backtest_schema(), columns).map_err(crate::store::arrow_err)
}

fn silence_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ends_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// The columns of `SHOW ALERTS`, as `lookout.alerts` has them.
const SHOW_COLUMNS: &str =
    "name, paused, every, severities, health, last_evaluation, calibration, calibration_warning";

fn show_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        text("name"),
        Field::new("paused", DataType::Boolean, true),
        text("every"),
        text("severities"),
        text("health"),
        Field::new(
            "last_evaluation",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        text("calibration"),
        text("calibration_warning"),
    ]))
}

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

impl SqlExtension for AlertStatements {
    fn parse(&self, sql: &str) -> Option<lookout_query::Result<Box<dyn ExtStatement>>> {
        if !is_alert_statement(sql) {
            return None;
        }
        Some(
            parse(sql)
                .map(|statement| {
                    Box::new(ParsedAlert {
                        statements: AlertStatements::new(self.engine.clone()),
                        statement,
                        sql: sql.to_string(),
                    }) as Box<dyn ExtStatement>
                })
                .map_err(Into::into),
        )
    }
}

/// An alert statement, parsed once.
#[derive(Debug)]
struct ParsedAlert {
    statements: AlertStatements,
    statement: AlertStatement,
    /// The text it was parsed from, recorded with the rules it changes.
    sql: String,
}

impl std::fmt::Display for ParsedAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.statement.fmt(f)
    }
}

#[async_trait]
impl ExtStatement for ParsedAlert {
    /// Rules are the admin's; anyone may look at them and back-test them,
    /// and writers (the on-call) may silence.
    fn access(&self) -> Access {
        match self.statement {
            AlertStatement::Show | AlertStatement::Backtest { .. } => Access::Read,
            AlertStatement::CreateSilence { .. } | AlertStatement::DropSilence { .. } => {
                Access::Write
            }
            _ => Access::Admin,
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match self.statement {
            AlertStatement::Backtest { .. } => Some(backtest_schema()),
            AlertStatement::CreateSilence { .. } => Some(silence_schema()),
            AlertStatement::Show => Some(show_schema()),
            _ => None,
        }
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> lookout_query::Result<Output> {
        Ok(self
            .statements
            .run(self.statement.clone(), &self.sql, session)
            .await?)
    }
}

/// The instant a time bound names: a literal as parsed, an expression as
/// the session evaluates it.
async fn instant(session: &mut dyn SqlSession, bound: TimeBound, clause: &str) -> Result<i64> {
    match bound {
        TimeBound::At(micros) => Ok(micros),
        // Checked again as SQL: the grammar's lexer stops at `AS`.
        TimeBound::Expression(e) => Ok(lookout_query::ext::instant(session, &e, clause).await?),
    }
}

impl AlertStatements {
    async fn run(
        &self,
        statement: AlertStatement,
        sql: &str,
        session: &mut dyn SqlSession,
    ) -> Result<Output> {
        let engine = &self.engine;
        let anchor = session.now_micros();
        match statement {
            AlertStatement::Create {
                rule,
                if_not_exists,
            } => {
                if lock(&engine.inner.rules).contains_key(&rule.name) {
                    return if if_not_exists {
                        Ok(command("CREATE ALERT"))
                    } else {
                        Err(AlertError::Exists(rule.name))
                    };
                }
                self.check_query(&rule, session).await?;
                let version = engine.new_version();
                self.record_rule(&rule, version, "create", false, sql)
                    .await?;
                let calibrate = rule.has_baseline();
                let name = rule.name.clone();
                engine.add_rule(rule, version);
                if calibrate {
                    engine.spawn_calibration(name, anchor);
                }
                Ok(command("CREATE ALERT"))
            }
            AlertStatement::Drop { name, if_exists } => {
                let Some((def, version)) = self.rule(&name) else {
                    return if if_exists {
                        Ok(command("DROP ALERT"))
                    } else {
                        Err(AlertError::NotFound(name))
                    };
                };
                self.record_rule(&def, version, "drop", false, &self.definition(&name).await?)
                    .await?;
                lock(&engine.inner.rules).remove(&name);
                Ok(command("DROP ALERT"))
            }
            AlertStatement::SetPaused { name, paused } => {
                let (def, version) = self
                    .rule(&name)
                    .ok_or_else(|| AlertError::NotFound(name.clone()))?;
                let definition = self.definition(&name).await?;
                self.record_rule(
                    &def,
                    version,
                    if paused { "pause" } else { "resume" },
                    paused,
                    &definition,
                )
                .await?;
                engine.set_paused(&name, paused);
                Ok(command("ALTER ALERT"))
            }
            AlertStatement::Show => {
                let plan = session
                    .logical_plan(&format!(
                        "SELECT {SHOW_COLUMNS} FROM lookout.alerts ORDER BY name"
                    ))
                    .await?;
                let schema = Arc::new(plan.schema().as_arrow().clone());
                let stream = session.execute_logical(plan).await?;
                Ok(Output::Rows { schema, stream })
            }
            AlertStatement::Recalibrate { name } => {
                if self.rule(&name).is_none() {
                    return Err(AlertError::NotFound(name));
                }
                engine.spawn_calibration(name, anchor);
                Ok(command("RECALIBRATE ALERT"))
            }
            AlertStatement::Backtest {
                name,
                from,
                to,
                step,
            } => {
                let from = instant(session, from, "FROM").await?;
                let to = instant(session, to, "TO").await?;
                if to < from {
                    return Err(AlertError::InvalidValue(
                        "BACKTEST: TO is before FROM".into(),
                    ));
                }
                let rows = engine.backtest(&name, from, to, step).await?;
                Ok(Output::from_batches(
                    backtest_schema(),
                    vec![backtest_batch(&rows)?],
                ))
            }
            AlertStatement::CreateSilence {
                ends,
                matchers,
                comment,
            } => {
                let ends_at = match ends {
                    SilenceEnd::After(duration) => engine.now_micros() + duration,
                    SilenceEnd::Until(bound) => instant(session, bound, "UNTIL").await?,
                };
                let id = engine.inner.last_silence_id.fetch_add(1, Ordering::SeqCst) + 1;
                engine
                    .inner
                    .db
                    .sql(&format!(
                        "INSERT INTO lookout.alert_silences VALUES ({}, {id}, 'create', {}, {}, {})",
                        timestamp(engine.new_version()),
                        timestamp(ends_at),
                        text(&labels_json(&matchers)),
                        text(&comment)
                    ))
                    .await?;
                lock(&engine.inner.silences).push(Silence {
                    id,
                    ends_at,
                    matchers,
                });
                let batch = RecordBatch::try_new(
                    silence_schema(),
                    vec![
                        Arc::new(Int64Array::from(vec![id])),
                        Arc::new(
                            TimestampMicrosecondArray::from(vec![ends_at]).with_timezone("UTC"),
                        ),
                    ],
                )
                .map_err(crate::store::arrow_err)?;
                Ok(Output::from_batches(silence_schema(), vec![batch]))
            }
            AlertStatement::DropSilence { id } => {
                let ends_at = {
                    let silences = lock(&engine.inner.silences);
                    silences.iter().find(|s| s.id == id).map(|s| s.ends_at)
                }
                .ok_or_else(|| AlertError::NotFound(format!("silence {id}")))?;
                engine
                    .inner
                    .db
                    .sql(&format!(
                        "INSERT INTO lookout.alert_silences VALUES ({}, {id}, 'drop', {}, '{{}}', NULL)",
                        timestamp(engine.new_version()),
                        timestamp(ends_at)
                    ))
                    .await?;
                lock(&engine.inner.silences).retain(|s| s.id != id);
                Ok(command("DROP SILENCE"))
            }
        }
    }

    fn rule(&self, name: &str) -> Option<(RuleDef, i64)> {
        lock(&self.engine.inner.rules)
            .get(name)
            .map(|r| (r.def.clone(), r.version))
    }

    async fn definition(&self, name: &str) -> Result<String> {
        let rows = self
            .engine
            .inner
            .db
            .sql(&format!(
                "SELECT definition FROM lookout.alert_rules WHERE name = {} ORDER BY version DESC LIMIT 1",
                text(name)
            ))
            .await?;
        let batch = rows
            .first()
            .filter(|b| b.num_rows() > 0)
            .ok_or_else(|| AlertError::NotFound(name.to_string()))?;
        Ok(crate::store::get_text(batch, 0, "definition")?.unwrap_or_default())
    }

    /// Plans the rule's query: it must return a numeric `value` (and an
    /// integer `n` with MIN SAMPLES).
    async fn check_query(&self, rule: &RuleDef, session: &dyn SqlSession) -> Result<()> {
        let schema = session.describe(&rule.query).await.map_err(|e| {
            AlertError::Query(QueryError::new(
                e.state(),
                format!("the query of alert \"{}\" does not plan: {e}", rule.name),
            ))
        })?;
        let schema = schema.ok_or_else(|| {
            AlertError::InvalidQuery(
                "the alert's AS clause must be a query that returns rows".into(),
            )
        })?;
        let value = schema.field_with_name("value").map_err(|_| {
            AlertError::InvalidQuery(format!(
                "the query of alert \"{}\" must return a column named value (got {})",
                rule.name,
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !value.data_type().is_numeric() {
            return Err(AlertError::InvalidQuery(format!(
                "column value of alert \"{}\" must be numeric, not {}",
                rule.name,
                value.data_type()
            )));
        }
        match schema.field_with_name("n") {
            Ok(n) if !n.data_type().is_integer() => Err(AlertError::InvalidQuery(format!(
                "column n of alert \"{}\" must be an integer count, not {}",
                rule.name,
                n.data_type()
            ))),
            Err(_) if rule.min_samples.is_some() => Err(AlertError::InvalidQuery(format!(
                "alert \"{}\" has MIN SAMPLES, so its query must return a count column named n",
                rule.name
            ))),
            _ => Ok(()),
        }
    }

    async fn record_rule(
        &self,
        def: &RuleDef,
        version: i64,
        action: &str,
        paused: bool,
        definition: &str,
    ) -> Result<()> {
        let recover = def
            .recover
            .map(|r| format!("value {} {}", r.op.as_str(), r.value));
        let sql = format!(
            "INSERT INTO lookout.alert_rules VALUES ({}, {}, {version}, {}, {paused}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            timestamp(self.engine.new_version()),
            text(&def.name),
            text(action),
            text(definition),
            text(&format_duration(def.every)),
            text(&format_duration(def.for_)),
            text(&format_duration(def.keep_firing_for)),
            text(&describe_tiers(def)),
            opt_text(recover.as_deref()),
            int(def.min_samples),
            text(&labels_json(&def.labels)),
            text(&format_duration(def.delay)),
            text(&format_duration(def.repeat_every)),
            text(&def.notify.join(", ")),
            text(&def.query),
        );
        self.engine.inner.db.sql(&sql).await?;
        Ok(())
    }
}
