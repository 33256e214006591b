//! How a rollup follows its source: the deltas each write derives (one row
//! per bucket and group it touches, committed with the write), and the
//! merge the storage engine applies when it flushes and compacts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::BoxFuture;
use lookout_query::Result;
use lookout_query::ext::{Derive, DerivedKind, IngestHook, quote_ident as quote};
use lookout_storage::{Combine, Derivation, Storage, StorageError, TableDef};

use crate::grammar::{RollupDef, parse_create};

/// The name recorded in a rollup table's definition.
pub(crate) const KIND: &str = "rollup";

/// Runs `sql` over `rows` registered as the table `name` (so errors name
/// the user's table), in a small single-threaded context with Lookout's
/// functions.
async fn run_over(
    name: &str,
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
    sql: &str,
) -> Result<RecordBatch> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    lookout_query::register_functions(&ctx);
    let table = MemTable::try_new(Arc::clone(&schema), vec![rows])?;
    ctx.register_table(
        datafusion::common::TableReference::bare(name.to_string()),
        Arc::new(table),
    )?;
    let frame = ctx.sql(sql).await?;
    let out_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok(arrow::compute::concat_batches(&out_schema, &batches)?)
}

/// Casts `batch` to `schema` column by column (names and order agree).
pub(crate) fn fit(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl RollupDef {
    /// This rollup's rows for `rows` of the source table.
    pub(crate) async fn delta(
        &self,
        source: &TableDef,
        rows: Vec<RecordBatch>,
    ) -> Result<RecordBatch> {
        let schema = source.schema()?;
        let from = quote(&source.name);
        let sql = self.delta_sql(&source.options.time_column, &from);
        run_over(&source.name, schema, rows, &sql).await
    }

    /// Merges rollup rows into one row per bucket and group.
    pub(crate) async fn merge(
        &self,
        rows: Vec<RecordBatch>,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let sql = self.merge_sql(&quote(&self.name));
        let merged = run_over(&self.name, Arc::clone(schema), rows, &sql).await?;
        fit(&merged, schema)
    }
}

/// Merges a rollup table's rows when the storage engine flushes or compacts them.
#[derive(Debug)]
pub(crate) struct Combiner {
    pub(crate) rollup: Arc<RollupDef>,
}

impl Combine for Combiner {
    fn combine(
        &self,
        rows: RecordBatch,
    ) -> BoxFuture<'static, lookout_storage::Result<RecordBatch>> {
        let rollup = Arc::clone(&self.rollup);
        Box::pin(async move {
            let schema = rows.schema();
            rollup
                .merge(vec![rows], &schema)
                .await
                .map_err(|e| StorageError::InvalidData(e.to_string()))
        })
    }
}

/// Rollup tables as a kind of derived table.
#[derive(Debug)]
pub(crate) struct RollupKind;

impl DerivedKind for RollupKind {
    fn name(&self) -> &'static str {
        KIND
    }

    /// Before kinds were recorded, a rollup's definition was its `CREATE
    /// ROLLUP` statement, and the only other derived tables were sampled
    /// tables' held areas (`ALTER TABLE ... SET SAMPLING`).
    fn recognises(&self, definition: &str) -> bool {
        crate::grammar::starts_with_words(definition, "create", "rollup")
    }

    fn combiner(&self, table: &TableDef) -> Result<Option<Arc<dyn Combine>>> {
        let definition = table.derived.as_ref().map(|d| d.definition.as_str());
        let (rollup, _) = parse_create(definition.unwrap_or_default())?;
        Ok(Some(Arc::new(Combiner {
            rollup: Arc::new(rollup),
        })))
    }
}

/// Whether `derivation` defines a rollup.
pub(crate) fn is_rollup(derivation: &Derivation) -> bool {
    RollupKind.defines(derivation)
}

/// The rollups of `table`.
pub(crate) fn rollups_of(storage: &Storage, table: &str) -> Result<Vec<RollupDef>> {
    let manifest = storage.manifest()?;
    manifest
        .tables
        .values()
        .filter_map(|t| t.def.derived.as_ref())
        .filter(|d| d.source == table && is_rollup(d))
        .map(|d| parse_create(&d.definition).map(|(def, _)| def))
        .collect()
}

/// Adds every rollup's deltas to each write of its source.
#[derive(Debug)]
pub(crate) struct RollupHook;

#[async_trait]
impl IngestHook for RollupHook {
    fn derive(&self, storage: &Storage, table: &str) -> Result<Vec<Arc<dyn Derive>>> {
        rollups_of(storage, table)?
            .into_iter()
            .map(|rollup| {
                let schema = storage.table(&rollup.name)?.schema()?;
                Ok(Arc::new(Deltas { rollup, schema }) as Arc<dyn Derive>)
            })
            .collect()
    }
}

/// One rollup's deltas.
#[derive(Debug)]
struct Deltas {
    rollup: RollupDef,
    /// The rollup table's columns.
    schema: SchemaRef,
}

#[async_trait]
impl Derive for Deltas {
    fn target(&self) -> &str {
        &self.rollup.name
    }

    async fn rows(&self, source: &TableDef, rows: RecordBatch) -> Result<RecordBatch> {
        fit(&self.rollup.delta(source, vec![rows]).await?, &self.schema)
    }

    async fn merge(&self, rows: Vec<RecordBatch>) -> Result<RecordBatch> {
        self.rollup.merge(rows, &self.schema).await
    }
}
