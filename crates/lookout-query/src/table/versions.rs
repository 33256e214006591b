//! Tables of versioned records (`CREATE TABLE ... WITH (key = ..., version
//! = ..., deleted = ...)`): every version is stored, appended like any row;
//! queries see the latest version of each key, unless it is a tombstone.
//! Corrections and deletions of labels and feedback are new versions.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Column;
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::error::Result;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, LogicalPlanBuilder, SortExpr, TableProviderFilterPushDown, col, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use lookout_storage::Versions;

use crate::table::provider::LookoutTable;

/// The row-number column the latest-version filter uses; never shown.
const RANK: &str = "__lookout_version_rank";

/// A versioned table as queries see it: the latest version of each key.
#[derive(Debug)]
pub(crate) struct LatestVersions {
    stored: Arc<LookoutTable>,
    versions: Versions,
}

impl LatestVersions {
    pub(crate) fn new(stored: LookoutTable, versions: Versions) -> Self {
        LatestVersions {
            stored: Arc::new(stored),
            versions,
        }
    }

    /// The table holding every version.
    pub(crate) fn stored(&self) -> &LookoutTable {
        &self.stored
    }

    fn on_key_only(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty() && columns.iter().all(|c| self.versions.key.contains(&c.name))
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

#[async_trait]
impl TableProvider for LatestVersions {
    fn schema(&self) -> SchemaRef {
        self.stored.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // A filter on key columns only keeps or drops whole records, so it
        // can run before the ranking (and reach the Parquet scan); any other
        // filter must not choose which version is the latest.
        Ok(filters
            .iter()
            .map(|f| {
                if self.on_key_only(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stored: Arc<dyn TableProvider> = Arc::clone(&self.stored) as _;
        let rank = row_number()
            .partition_by(self.versions.key.iter().map(|k| column(k)).collect())
            .order_by(vec![SortExpr::new(
                column(&self.versions.version),
                false,
                true,
            )])
            .build()?
            .alias(RANK);
        let mut latest = col(RANK).eq(lit(1u64));
        if let Some(deleted) = &self.versions.deleted {
            latest = latest.and(column(deleted).is_not_true());
        }
        let schema = self.schema();
        let shown: Vec<Expr> = match projection {
            Some(p) => p.iter().map(|i| column(schema.field(*i).name())).collect(),
            None => schema.fields().iter().map(|f| column(f.name())).collect(),
        };
        let mut plan = LogicalPlanBuilder::scan("stored", provider_as_source(stored), None)?;
        let on_key: Vec<Expr> = filters
            .iter()
            .filter(|f| self.on_key_only(f))
            .cloned()
            .collect();
        if let Some(on_key) = conjunction(on_key) {
            plan = plan.filter(on_key)?;
        }
        let plan = plan
            .window(vec![rank])?
            .filter(latest)?
            .project(shown)?
            .limit(0, limit)?
            .build()?;
        state.create_physical_plan(&plan).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.insert_into(state, input, insert_op).await
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.stored.delete_from(state, filters).await
    }
}
