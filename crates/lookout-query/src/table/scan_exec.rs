//! A transparent plan node that names the table and shows how many files
//! the manifest statistics ruled out, so `EXPLAIN` tells what was pruned.

use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use futures::StreamExt;
use lookout_storage::FilePin;

/// What pruning did for one scan.
#[derive(Debug, Clone)]
pub(crate) struct ScanSummary {
    pub(crate) table: String,
    pub(crate) files_total: usize,
    pub(crate) files_scanned: usize,
    pub(crate) buffered_rows: usize,
    /// The table's partition column: each stored file holds one value of it.
    pub(crate) partition_column: Option<String>,
}

#[derive(Debug)]
pub(crate) struct LookoutScanExec {
    summary: ScanSummary,
    /// Keeps the scanned files on storage while the plan or a stream of it lives.
    pin: Arc<FilePin>,
    input: Arc<dyn ExecutionPlan>,
}

impl LookoutScanExec {
    /// The scanned table's partition column, if it has one.
    pub(crate) fn partition_column(&self) -> Option<&str> {
        self.summary.partition_column.as_deref()
    }

    pub(crate) fn new(
        summary: ScanSummary,
        pin: Arc<FilePin>,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        LookoutScanExec {
            summary,
            pin,
            input,
        }
    }
}

impl DisplayAs for LookoutScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "LookoutScan: table={}, files={} of {} (pruned {} by manifest statistics), buffered_rows={}",
            s.table,
            s.files_scanned,
            s.files_total,
            s.files_total - s.files_scanned,
            s.buffered_rows
        )
    }
}

impl ExecutionPlan for LookoutScanExec {
    fn name(&self) -> &'static str {
        "LookoutScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(LookoutScanExec {
                summary: self.summary.clone(),
                pin: Arc::clone(&self.pin),
                input,
            })),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "LookoutScan takes one child".into(),
            )),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    // The input's row and byte counts: the join selection builds hash
    // tables on the smaller side by them (unknown, it builds on the left,
    // which may be a table of millions of rows joined to a handful).
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats.first() {
            Some(stats) => Ok(Arc::clone(stats)),
            None => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    // Filters (also TopK's dynamic filters) pass through to the Parquet scan.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let rows = self.input.execute(partition, context)?;
        let pin = Arc::clone(&self.pin);
        let schema = rows.schema();
        // The stream outlives the plan: it carries the pin until it ends.
        let pinned = rows.map(move |batch| {
            let _held = &pin;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, pinned)))
    }
}
