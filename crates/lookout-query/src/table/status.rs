//! Built-in tables of the `lookout` schema that report the engine's state
//! (`lookout.column_cache`, `lookout.plan_cache`, `lookout.replication`):
//! one row computed when
//! the query runs, so a prepared statement sees the figures of each
//! execution.

use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::table::provider::storage_err;

/// The names of the built-in status tables, which no stored table may take.
pub(crate) const STATUS_TABLES: [&str; 3] = ["column_cache", "plan_cache", "replication"];

/// Computes a status table's row.
type RowFn = Arc<dyn Fn(&SchemaRef) -> datafusion::error::Result<RecordBatch> + Send + Sync>;

/// A status table: its schema and what computes its row.
pub(crate) struct StatusTable {
    schema: SchemaRef,
    row: RowFn,
}

impl std::fmt::Debug for StatusTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl StatusTable {
    /// The status table `name`, if there is one.
    pub(crate) fn open(lookout: &crate::Lookout, name: &str) -> Option<StatusTable> {
        match name {
            "column_cache" => Some(column_cache(lookout)),
            "plan_cache" => Some(plan_cache(lookout)),
            "replication" => Some(replication(lookout)),
            _ => None,
        }
    }
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn int_value(v: u64) -> ArrayRef {
    Arc::new(Int64Array::from(vec![i64::try_from(v).unwrap_or(i64::MAX)]))
}

/// `lookout.column_cache`: the shared cache of decoded columns.
fn column_cache(lookout: &crate::Lookout) -> StatusTable {
    let schema = Arc::new(Schema::new(vec![
        int("budget_bytes"),
        int("used_bytes"),
        int("columns"),
        int("files"),
        int("hits"),
        int("misses"),
        int("evictions"),
        Field::new("hit_ratio", DataType::Float64, true),
    ]));
    let cache = Arc::clone(lookout.column_cache());
    StatusTable {
        schema,
        row: Arc::new(move |schema| {
            let s = cache.stats();
            Ok(RecordBatch::try_new(
                Arc::clone(schema),
                vec![
                    int_value(s.budget_bytes),
                    int_value(s.used_bytes),
                    int_value(s.columns),
                    int_value(s.files),
                    int_value(s.hits),
                    int_value(s.misses),
                    int_value(s.evictions),
                    hit_ratio(s.hits, s.misses),
                ],
            )?)
        }),
    }
}

/// Hits over uses, NULL before the first use.
fn hit_ratio(hits: u64, misses: u64) -> ArrayRef {
    let uses = hits + misses;
    Arc::new(Float64Array::from(vec![
        (uses > 0).then(|| hits as f64 / uses as f64),
    ]))
}

/// `lookout.plan_cache`: the plans sessions keep of the queries they ran.
fn plan_cache(lookout: &crate::Lookout) -> StatusTable {
    let schema = Arc::new(Schema::new(vec![
        int("budget_per_session"),
        int("plans"),
        int("hits"),
        int("misses"),
        int("evictions"),
        Field::new("hit_ratio", DataType::Float64, true),
    ]));
    let stats = lookout.plan_cache_stats();
    let budget = lookout.options().plan_cache as u64;
    StatusTable {
        schema,
        row: Arc::new(move |schema| {
            let s = stats.figures();
            Ok(RecordBatch::try_new(
                Arc::clone(schema),
                vec![
                    int_value(budget),
                    int_value(s.plans),
                    int_value(s.hits),
                    int_value(s.misses),
                    int_value(s.evictions),
                    hit_ratio(s.hits, s.misses),
                ],
            )?)
        }),
    }
}

/// `lookout.replication`: which manifest version queries read, when the
/// writer committed it and, on a replica, until when it is known current.
fn replication(lookout: &crate::Lookout) -> StatusTable {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("role", DataType::Utf8, false),
        int("manifest_version"),
        Field::new("committed_at", utc(), true),
        Field::new("checked_at", utc(), false),
        Field::new("lag_seconds", DataType::Float64, false),
        Field::new("following", DataType::Boolean, false),
        Field::new("last_error", DataType::Utf8, true),
    ]));
    let storage = lookout.storage().clone();
    StatusTable {
        schema,
        row: Arc::new(move |schema| {
            let r = storage.replication().map_err(storage_err)?;
            let now = storage.clock().now_micros();
            let time = |micros: i64| -> ArrayRef {
                Arc::new(
                    TimestampMicrosecondArray::from(vec![(micros > 0).then_some(micros)])
                        .with_timezone("UTC"),
                )
            };
            // The writer reads what it committed last: current by definition.
            let lag = if r.read_only {
                (now - r.checked_micros).max(0) as f64 / 1e6
            } else {
                0.0
            };
            Ok(RecordBatch::try_new(
                Arc::clone(schema),
                vec![
                    Arc::new(StringArray::from(vec![if r.read_only {
                        "replica"
                    } else {
                        "writer"
                    }])),
                    int_value(r.manifest_version),
                    time(r.committed_micros),
                    Arc::new(
                        TimestampMicrosecondArray::from(vec![r.checked_micros])
                            .with_timezone("UTC"),
                    ),
                    Arc::new(Float64Array::from(vec![lag])),
                    Arc::new(BooleanArray::from(vec![r.last_error.is_none()])),
                    Arc::new(StringArray::from(vec![r.last_error])),
                ],
            )?)
        }),
    }
}

#[async_trait]
impl TableProvider for StatusTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let source = MemorySourceConfig::try_new(
            &[vec![(self.row)(&self.schema)?]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(DataSourceExec::from_data_source(source))
    }
}
