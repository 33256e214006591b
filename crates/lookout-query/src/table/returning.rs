//! `RETURNING` on `INSERT`, `UPDATE` and `DELETE`.
//!
//! The write is planned without its `RETURNING` list. While it runs, the
//! table provider hands every row it inserts, rewrites or removes to a
//! [`Returned`] collector carried in the session config, so the rows
//! returned are exactly the rows written, in the same commit. The list is
//! a query over those rows, planned as `SELECT <list> FROM <rows> AS
//! <table or alias>` through the SQL planner, so `*`, `t.*`, expressions,
//! functions and output names behave as in any `SELECT`.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, SchemaProvider, Session as CatalogSession, TableProvider,
};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{
    FromTable, Ident, SelectItem, Statement, TableFactor, TableObject,
};

use crate::error::{QueryError, Result};

/// The name the returned rows are planned under; no SQL names it, since
/// the `FROM` it appears in is built here and aliased to the table.
const RETURNED: &str = "lookout returned rows";

/// Collects the rows a write statement wrote or removed, for its
/// `RETURNING` list; set in the session config of that one statement.
#[derive(Debug, Default)]
pub(crate) struct Returned(Mutex<Vec<RecordBatch>>);

impl Returned {
    /// Keeps `rows` (in the table's columns) to be returned.
    pub(crate) fn keep(&self, rows: RecordBatch) {
        if rows.num_rows() > 0 {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(rows);
        }
    }

    fn batches(&self) -> Vec<RecordBatch> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Takes the `RETURNING` list off a write statement and returns it as the
/// query that computes it over the written rows, or `None` when there is
/// none.
pub(crate) fn split(stmt: &mut Statement) -> Result<Option<Statement>> {
    let (items, table) = match stmt {
        Statement::Insert(insert) => {
            let Some(items) = insert.returning.take() else {
                return Ok(None);
            };
            // The alias names the rows in the RETURNING list only (the
            // planner takes no alias on INSERT; ON CONFLICT is refused).
            let alias = match (insert.table_alias.take(), &insert.table) {
                (Some(alias), _) => alias.alias,
                (None, TableObject::TableName(name)) => last_part(name)?,
                (None, _) => return Err(unsupported("RETURNING after INSERT into a function")),
            };
            (items, alias)
        }
        Statement::Update(update) => {
            let Some(items) = update.returning.take() else {
                return Ok(None);
            };
            if update.from.is_some() || !update.table.joins.is_empty() {
                return Err(unsupported("RETURNING on an UPDATE with FROM or joins"));
            }
            (items, relation_alias(&update.table.relation)?)
        }
        Statement::Delete(delete) => {
            let Some(items) = delete.returning.take() else {
                return Ok(None);
            };
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            let [only] = from.as_slice() else {
                return Err(unsupported("RETURNING on a DELETE from several tables"));
            };
            if delete.using.is_some() || !only.joins.is_empty() {
                return Err(unsupported("RETURNING on a DELETE with USING or joins"));
            }
            (items, relation_alias(&only.relation)?)
        }
        _ => return Ok(None),
    };
    let list = items
        .iter()
        .map(SelectItem::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {list} FROM {} AS {table}",
        Ident::with_quote('"', RETURNED)
    );
    let mut parsed =
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&crate::pg::dialect::Postgres, &sql)
            .map_err(|e| QueryError::syntax(format!("RETURNING list: {e}")))?;
    match (parsed.pop(), parsed.is_empty()) {
        (Some(select @ Statement::Query(_)), true) => Ok(Some(select)),
        _ => Err(QueryError::syntax(
            "RETURNING takes a list of output expressions",
        )),
    }
}

fn unsupported(what: &str) -> QueryError {
    QueryError::unsupported(format!("{what} is not supported"))
}

fn last_part(name: &datafusion::sql::sqlparser::ast::ObjectName) -> Result<Ident> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .cloned()
        .ok_or_else(|| QueryError::syntax(format!("not a table name: {name}")))
}

fn relation_alias(relation: &TableFactor) -> Result<Ident> {
    match relation {
        TableFactor::Table {
            alias: Some(alias), ..
        } => Ok(alias.name.clone()),
        TableFactor::Table { name, .. } => last_part(name),
        _ => Err(unsupported("RETURNING on a write to anything but a table")),
    }
}

/// A state that plans the `RETURNING` query: the session's, with the
/// returned rows (in `columns`) visible under the name [`split`] uses.
pub(crate) fn planning_state(state: &SessionState, columns: SchemaRef) -> SessionState {
    let list = Arc::new(WithReturned {
        inner: Arc::clone(state.catalog_list()),
        catalog: state.config().options().catalog.default_catalog.clone(),
        schema: state.config().options().catalog.default_schema.clone(),
        rows: Arc::new(ReturnedTable { columns }),
    });
    SessionStateBuilder::new_from_existing(state.clone())
        .with_catalog_list(list)
        .build()
}

/// Reads the rows of the statement's [`Returned`] collector.
#[derive(Debug)]
struct ReturnedTable {
    columns: SchemaRef,
}

#[async_trait]
impl TableProvider for ReturnedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.columns)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let rows = state
            .config()
            .get_extension::<Returned>()
            .map(|r| r.batches())
            .unwrap_or_default();
        let rows = rows
            .iter()
            .map(|b| conform(b, &self.columns))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[rows],
            Arc::clone(&self.columns),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// `rows` in exactly the columns the query was planned with (the stored
/// rows may carry other field metadata or nullability).
fn conform(rows: &RecordBatch, columns: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    if rows.num_columns() != columns.fields().len() {
        return Err(DataFusionError::Internal(
            "returned rows do not match the table".into(),
        ));
    }
    let arrays = rows
        .columns()
        .iter()
        .zip(columns.fields())
        .map(|(a, f)| arrow::compute::cast(a, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(columns), arrays)?)
}

/// The session's catalogs, with the returned rows added to the default
/// schema.
#[derive(Debug)]
struct WithReturned {
    inner: Arc<dyn CatalogProviderList>,
    catalog: String,
    schema: String,
    rows: Arc<dyn TableProvider>,
}

impl CatalogProviderList for WithReturned {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        if name != self.catalog {
            return Some(inner);
        }
        Some(Arc::new(CatalogWithReturned {
            inner,
            schema: self.schema.clone(),
            rows: Arc::clone(&self.rows),
        }))
    }
}

#[derive(Debug)]
struct CatalogWithReturned {
    inner: Arc<dyn CatalogProvider>,
    schema: String,
    rows: Arc<dyn TableProvider>,
}

impl CatalogProvider for CatalogWithReturned {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        if name != self.schema {
            return Some(inner);
        }
        Some(Arc::new(SchemaWithReturned {
            inner,
            rows: Arc::clone(&self.rows),
        }))
    }
}

#[derive(Debug)]
struct SchemaWithReturned {
    inner: Arc<dyn SchemaProvider>,
    rows: Arc<dyn TableProvider>,
}

#[async_trait]
impl SchemaProvider for SchemaWithReturned {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if name == RETURNED {
            return Ok(Some(Arc::clone(&self.rows)));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name == RETURNED || self.inner.table_exist(name)
    }
}
