//! Grouping by a table's partition column without hashing it row by row.
//!
//! Every stored file holds one value of its table's partition column, and
//! the scan hands out batches cut from one file, so a batch's partition
//! column is almost always one value repeated. DataFusion's partial
//! aggregation hashes and compares that string on every row (more than half
//! of `GROUP BY model` over a cached scan). [`PartitionKeyAggregation`]
//! replaces such a partial aggregation with [`PartitionKeyAggregateExec`],
//! which checks each batch for a repeated value (one comparison of the
//! batch's bytes with themselves shifted by one value), looks the value up
//! once, and gives every row its number; the other group columns, if any,
//! are grouped together with that number. A batch that is not constant (rows
//! not yet flushed, a plan that mixed batches) is looked up row by row, so
//! the answer never depends on how batches were cut.
//!
//! The output is the partial aggregation's own: the same group columns and
//! accumulator states, so the final aggregation above merges it unchanged.
//! Like DataFusion's, it emits what it holds early when the memory pool
//! refuses more, and passes states through unaggregated when grouping does
//! not reduce the rows.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
};
use futures::{StreamExt, stream};

use crate::table::scan_exec::LookoutScanExec;
use crate::table::state_exchange::StateExchangeExec;

/// The physical optimizer rule: a partial aggregation grouped by a table's
/// partition column (found by following the aggregation's input down to the
/// table's scan) becomes a [`PartitionKeyAggregateExec`].
#[derive(Debug, Default)]
pub(crate) struct PartitionKeyAggregation;

impl PhysicalOptimizerRule for PartitionKeyAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let replaced = node
                .downcast_ref::<AggregateExec>()
                .and_then(PartitionKeyAggregateExec::replacing);
            Ok(match replaced {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
        .and_then(exchange_states)
    }

    fn name(&self) -> &str {
        "partition_key_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each hash repartitioning of a [`PartitionKeyAggregateExec`]'s
/// states replaced by a [`StateExchangeExec`], which routes them alike
/// without copying them.
fn exchange_states(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let exchange = node
            .downcast_ref::<RepartitionExec>()
            .filter(|r| {
                r.input()
                    .downcast_ref::<PartitionKeyAggregateExec>()
                    .is_some()
            })
            .and_then(StateExchangeExec::replacing);
        Ok(match exchange {
            Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .data()
}

/// A partial aggregation that numbers its partition-column groups per batch.
#[derive(Debug)]
pub(crate) struct PartitionKeyAggregateExec {
    /// The aggregation this replaces: its expressions, schema and properties.
    original: Arc<AggregateExec>,
    /// Where the partition column is among the group expressions.
    key_position: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl PartitionKeyAggregateExec {
    /// The replacement for `agg`, when it is a plain partial aggregation whose
    /// group columns include the partition column of the table below it.
    fn replacing(agg: &AggregateExec) -> Option<PartitionKeyAggregateExec> {
        let partition_column = partition_column_below(agg.input())?;
        Self::keyed_by(agg, &partition_column)
    }

    /// `agg` grouping the text column `key` by numbering, when `agg` is a
    /// plain partial aggregation grouping by `key` (a column) and any other
    /// expressions.
    fn keyed_by(agg: &AggregateExec, key: &str) -> Option<PartitionKeyAggregateExec> {
        let plain = *agg.mode() == AggregateMode::Partial
            && !agg.group_expr().has_grouping_set()
            && !agg.group_expr().is_empty()
            && agg.limit_options().is_none()
            && agg.dynamic_expressions_produced().is_empty()
            && agg.properties().output_ordering().is_none()
            && agg.aggr_expr().iter().all(|a| a.order_bys().is_empty());
        if !plain {
            return None;
        }
        let input_schema = agg.input().schema();
        let key_position = agg.group_expr().expr().iter().position(|(expr, _)| {
            expr.downcast_ref::<Column>().is_some_and(|column| {
                let field = input_schema.field(column.index());
                field.name() == key && *field.data_type() == DataType::Utf8
            })
        })?;
        Some(PartitionKeyAggregateExec {
            original: Arc::new(agg.clone()),
            key_position,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn input(&self) -> &Arc<dyn ExecutionPlan> {
        self.original.input()
    }
}

/// The partition column of the table scanned below `plan`, if the way down
/// passes only nodes with one input (filters, coalescing, repartitioning).
/// Only a hint: each batch is checked for a repeated value whatever the plan
/// says, so a projection that renamed a column costs time, not correctness.
fn partition_column_below(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let mut node = plan;
    loop {
        if let Some(scan) = node.downcast_ref::<LookoutScanExec>() {
            return scan.partition_column().map(str::to_string);
        }
        let children = node.children();
        let [child] = children.as_slice() else {
            return None;
        };
        node = child;
    }
}

impl DisplayAs for PartitionKeyAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = &self.original.group_expr().expr()[self.key_position].1;
        write!(f, "PartitionKeyAggregate: key={key}, ")?;
        self.original.fmt_as(t, f)
    }
}

impl ExecutionPlan for PartitionKeyAggregateExec {
    fn name(&self) -> &'static str {
        "PartitionKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.original.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.original.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.original.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let original = Arc::clone(&self.original).replace_children(children, options)?;
        let original = original
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| DataFusionError::Internal("aggregation changed kind".into()))?
            .clone();
        Ok(Arc::new(PartitionKeyAggregateExec {
            original: Arc::new(original),
            key_position: self.key_position,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input().execute(partition, Arc::clone(&context))?;
        let options = &context.session_config().options().execution;
        let schema = self.original.schema();
        let reservation = MemoryConsumer::new(format!("PartitionKeyAggregate[{partition}]"))
            .register(context.memory_pool());
        let groups = Groups::new(self, &self.input().schema())?;
        let arguments = aggregate_arguments(self.original.aggr_expr());
        let state = AggregationState {
            input,
            groups,
            constants: arguments.iter().map(|a| vec![None; a.len()]).collect(),
            arguments,
            filters: self.original.filter_expr().to_vec(),
            schema: Arc::clone(&schema),
            batch_size: usize::from(options.batch_size),
            probe_rows: options.skip_partial_aggregation_probe_rows_threshold,
            probe_ratio: options.skip_partial_aggregation_probe_ratio_threshold,
            rows_seen: 0,
            passing_through: false,
            pending: VecDeque::new(),
            reservation,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            constant_batches: MetricBuilder::new(&self.metrics)
                .counter("constant_key_batches", partition),
            mixed_batches: MetricBuilder::new(&self.metrics)
                .counter("mixed_key_batches", partition),
            finished: false,
        };
        let batches = stream::try_unfold(state, |mut state| async move {
            let next = state.next_batch().await?;
            Ok(next.map(|batch| (batch, state)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// What each aggregate reads from an input row (its arguments).
fn aggregate_arguments(
    aggregates: &[Arc<AggregateFunctionExpr>],
) -> Vec<Vec<Arc<dyn PhysicalExpr>>> {
    aggregates.iter().map(|a| a.expressions()).collect()
}

/// The groups seen so far and their accumulators.
struct Groups {
    key_position: usize,
    /// The group expressions, in order; the one at `key_position` is the
    /// partition column.
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Partition values, numbered in the order first seen.
    keys: Box<dyn GroupValues>,
    /// (partition value number, other group columns) when there are others.
    combined: Option<Box<dyn GroupValues>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    key_ids: Vec<usize>,
    group_ids: Vec<usize>,
    /// Per aggregate, the single-group accumulator of the current run of
    /// one-group batches, for the aggregates [`sums_runs`] accepts. Adding
    /// a batch's rows one by one into the same group's slot is a chain of
    /// dependent additions (two thirds of `count(*), sum(x) ...
    /// GROUP BY model`); a single-group accumulator uses the vectorised
    /// kernels, and its state is merged into the group once per run.
    runs: Vec<Option<Box<dyn Accumulator>>>,
    /// Which aggregates take the run path (see `runs`).
    runs_natively: Vec<bool>,
    /// The group the runs in `runs` belong to.
    run_group: Option<usize>,
    /// The last partition column found to hold one value: the scan hands
    /// out slices of one array per value, and a slice of this one is known
    /// to hold it without comparing its bytes again. Holding it keeps its
    /// buffers, so their addresses name them.
    known_constant: Option<ArrayRef>,
}

impl Groups {
    fn new(exec: &PartitionKeyAggregateExec, input_schema: &SchemaRef) -> Result<Groups> {
        let group_by = exec.original.group_expr();
        let group_schema = group_by.group_schema(input_schema)?;
        let key_field = group_schema.field(exec.key_position).clone();
        let keys = new_group_values(Arc::new(Schema::new(vec![key_field])), &GroupOrdering::None)?;
        let combined = if group_by.expr().len() > 1 {
            let mut fields = vec![Field::new("partition_key", DataType::UInt32, false)];
            fields.extend(
                group_schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(position, _)| *position != exec.key_position)
                    .map(|(_, field)| field.as_ref().clone()),
            );
            Some(new_group_values(
                Arc::new(Schema::new(fields)),
                &GroupOrdering::None,
            )?)
        } else {
            None
        };
        let aggregates = exec.original.aggr_expr().to_vec();
        let runs_natively: Vec<bool> = aggregates.iter().map(|a| sums_runs(a)).collect();
        Ok(Groups {
            key_position: exec.key_position,
            group_exprs: group_by.expr().iter().map(|(e, _)| Arc::clone(e)).collect(),
            keys,
            combined,
            accumulators: aggregates.iter().map(accumulator).collect::<Result<_>>()?,
            aggregates,
            key_ids: Vec::new(),
            group_ids: Vec::new(),
            runs: runs_natively.iter().map(|_| None).collect(),
            runs_natively,
            run_group: None,
            known_constant: None,
        })
    }

    fn len(&self) -> usize {
        match &self.combined {
            Some(combined) => combined.len(),
            None => self.keys.len(),
        }
    }

    fn size(&self) -> usize {
        self.keys.size()
            + self.combined.as_ref().map_or(0, |c| c.size())
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.runs.iter().flatten().map(|r| r.size()).sum::<usize>()
            + (self.key_ids.capacity() + self.group_ids.capacity()) * size_of::<usize>()
    }

    /// Numbers the rows of `batch` by group; true when its partition column
    /// held one value.
    fn number_rows(&mut self, batch: &RecordBatch) -> Result<bool> {
        let rows = batch.num_rows();
        let key_column = &self.group_exprs[self.key_position]
            .evaluate(batch)?
            .into_array(rows)?;
        let constant = match self.one_value(key_column) {
            Some(value) => {
                // One id stands for every row; `update` widens it to the
                // batch only for the aggregates that add row by row.
                self.key_ids.clear();
                self.keys.intern(&[value], &mut self.key_ids)?;
                true
            }
            None => {
                self.key_ids.clear();
                self.keys
                    .intern(std::slice::from_ref(key_column), &mut self.key_ids)?;
                false
            }
        };
        if let Some(combined) = &mut self.combined {
            // Numbers travel as UInt32 into the combined grouping.
            if u32::try_from(self.keys.len()).is_err() {
                return Err(DataFusionError::ResourcesExhausted(
                    "more than 2^32 partition values in one aggregation".into(),
                ));
            }
            let ids = if constant {
                UInt32Array::from_value(
                    self.key_ids.first().copied().unwrap_or_default() as u32,
                    rows,
                )
            } else {
                self.key_ids.iter().map(|&id| id as u32).collect()
            };
            let mut columns: Vec<ArrayRef> = vec![Arc::new(ids)];
            for (position, expr) in self.group_exprs.iter().enumerate() {
                if position != self.key_position {
                    columns.push(expr.evaluate(batch)?.into_array(rows)?);
                }
            }
            self.group_ids.clear();
            if constant {
                intern_runs(combined.as_mut(), &columns, &mut self.group_ids)?;
            } else {
                combined.intern(&columns, &mut self.group_ids)?;
            }
        } else {
            std::mem::swap(&mut self.group_ids, &mut self.key_ids);
        }
        Ok(constant)
    }

    /// `column`'s one value (as an array of one row) if every row holds
    /// it.
    fn one_value(&mut self, column: &ArrayRef) -> Option<ArrayRef> {
        if let Some(known) = &self.known_constant
            && !column.is_empty()
            && is_slice_of(column, known)
        {
            return Some(column.slice(0, 1));
        }
        let value = repeated_value(column)?;
        if column.null_count() == 0 {
            self.known_constant = Some(Arc::clone(column));
        }
        Some(value)
    }

    /// Adds a numbered batch of `rows` rows to its groups. `constant` says
    /// that every row is in one group (the batch held one partition value)
    /// and `group_ids` holds that group's id once.
    fn update(
        &mut self,
        arguments: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
        constant: bool,
        rows: usize,
    ) -> Result<()> {
        let run_group = match (constant, &self.combined, self.group_ids.first()) {
            (true, None, Some(&group)) => Some(group),
            _ => None,
        };
        // Which aggregates add this batch as a run: a FILTER is applied as
        // NULLs, so an aggregate without arguments keeps the row-by-row path.
        let on_runs: Vec<bool> = (0..arguments.len())
            .map(|i| {
                run_group.is_some()
                    && self.runs_natively[i]
                    && (filters[i].is_none() || !arguments[i].is_empty())
            })
            .collect();
        if let Some(group) = run_group
            && on_runs.iter().any(|on| !on)
        {
            self.group_ids.resize(rows, group);
        }
        if run_group.is_some() && run_group != self.run_group {
            self.flush_runs()?;
            self.run_group = run_group;
        }
        let total = self.len();
        for (index, (values, filter)) in arguments.iter().zip(filters).enumerate() {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            if on_runs[index] {
                let run = match &mut self.runs[index] {
                    Some(run) => run,
                    empty => empty.insert(self.aggregates[index].create_accumulator()?),
                };
                match filter {
                    None => run.update_batch(values)?,
                    Some(filter) => run.update_batch(&filtered_as_nulls(values, filter)?)?,
                }
            } else {
                self.accumulators[index].update_batch(values, &self.group_ids, filter, total)?;
            }
        }
        Ok(())
    }

    /// Merges the runs' states into their group's accumulators.
    fn flush_runs(&mut self) -> Result<()> {
        let Some(group) = self.run_group.take() else {
            return Ok(());
        };
        let total = self.len();
        for (accumulator, run) in self.accumulators.iter_mut().zip(&mut self.runs) {
            if let Some(mut run) = run.take() {
                let state = run
                    .state()?
                    .into_iter()
                    .map(|value| value.to_array_of_size(1))
                    .collect::<Result<Vec<_>>>()?;
                accumulator.merge_batch(&state, &[group], total)?;
            }
        }
        Ok(())
    }

    /// Everything held, as partial-aggregation rows; leaves no groups.
    fn emit(&mut self, schema: &SchemaRef) -> Result<Option<RecordBatch>> {
        self.flush_runs()?;
        if self.len() == 0 {
            return Ok(None);
        }
        let keys = self.keys.emit(EmitTo::All)?.remove(0);
        let mut columns = match &mut self.combined {
            Some(combined) => {
                let mut grouped = combined.emit(EmitTo::All)?.into_iter();
                let ids = grouped
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("no partition key ids".into()))?;
                let mut columns: Vec<ArrayRef> = grouped.collect();
                columns.insert(self.key_position, take(&keys, &ids, None)?);
                columns
            }
            None => vec![keys],
        };
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }

    /// Each row of `batch` as its own partial state, as DataFusion passes
    /// rows through when grouping does not reduce them.
    fn pass_through(
        &self,
        batch: &RecordBatch,
        arguments: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self
            .group_exprs
            .iter()
            .map(|e| {
                e.evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
            })
            .collect::<Result<_>>()?;
        for ((accumulator, values), filter) in self.accumulators.iter().zip(arguments).zip(filters)
        {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            columns.extend(accumulator.convert_to_state(values, filter)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Fresh groups and accumulators after an emission.
    fn reset(&mut self) -> Result<()> {
        self.accumulators = self
            .aggregates
            .iter()
            .map(accumulator)
            .collect::<Result<_>>()?;
        Ok(())
    }
}

fn accumulator(aggregate: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if aggregate.groups_accumulator_supported() {
        aggregate.create_groups_accumulator()
    } else {
        let aggregate = Arc::clone(aggregate);
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            aggregate.create_accumulator()
        })))
    }
}

/// `values` with the rows `filter` does not select (false or NULL) made
/// NULL: the aggregates of [`sums_runs`] pass over NULLs, so this is their
/// FILTER without copying the values (filtering would copy them).
fn filtered_as_nulls(values: &[ArrayRef], filter: &BooleanArray) -> Result<Vec<ArrayRef>> {
    let selected = match filter.nulls() {
        Some(nulls) => filter.values() & nulls.inner(),
        None => filter.values().clone(),
    };
    let dropped = BooleanArray::new(!&selected, None);
    values
        .iter()
        .map(|v| Ok(arrow::compute::nullif(v, &dropped)?))
        .collect()
}

/// Whether runs of `aggregate` are summed apart and merged (see
/// `Groups::runs`): DataFusion's own aggregates whose state is a few
/// scalars, and that pass over NULL arguments. An aggregate that keeps its rows (a sample, a sketch) would
/// copy them into its state and back once per run.
fn sums_runs(aggregate: &AggregateFunctionExpr) -> bool {
    const SMALL_STATES: [&str; 7] = ["count", "sum", "min", "max", "avg", "bool_and", "bool_or"];
    aggregate.groups_accumulator_supported()
        && !aggregate.is_distinct()
        && SMALL_STATES.contains(&aggregate.fun().name())
}

/// Numbers the rows of `columns` (the partition value's number, then the
/// other group columns) into `ids`. Files are sorted by time, so a time
/// bucket holds for hundreds of rows in a row: each run of rows equal in
/// every column is numbered once, by its first row, instead of hashing
/// every row. Runs are found with Arrow's `partition`, whose equality
/// (floats by their bits) is never looser than the grouping's.
fn intern_runs(
    values: &mut dyn GroupValues,
    columns: &[ArrayRef],
    ids: &mut Vec<usize>,
) -> Result<()> {
    let rows = columns.first().map_or(0, |c| c.len());
    let runs = match arrow::compute::partition(&columns[1..]) {
        Ok(runs) if runs.len() * 4 <= rows => runs.ranges(),
        _ => return values.intern(columns, ids),
    };
    let heads = UInt32Array::from_iter_values(runs.iter().map(|r| r.start as u32));
    let heads = columns
        .iter()
        .map(|c| take(c, &heads, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut head_ids = Vec::with_capacity(runs.len());
    values.intern(&heads, &mut head_ids)?;
    ids.reserve(rows);
    for (run, id) in runs.iter().zip(head_ids) {
        ids.extend(std::iter::repeat_n(id, run.len()));
    }
    Ok(())
}

/// Whether `column` is a slice of the text array `of` (shares its bytes and
/// lies within its offsets), without NULLs.
fn is_slice_of(column: &ArrayRef, of: &ArrayRef) -> bool {
    let (Some(part), Some(whole)) = (column.as_string_opt::<i32>(), of.as_string_opt::<i32>())
    else {
        return false;
    };
    let span = |offsets: &[i32]| {
        let start = offsets.as_ptr() as usize;
        (start, start + std::mem::size_of_val(offsets))
    };
    let (part_start, part_end) = span(part.value_offsets());
    let (whole_start, whole_end) = span(whole.value_offsets());
    part.null_count() == 0
        && part.value_data().as_ptr() == whole.value_data().as_ptr()
        && whole_start <= part_start
        && part_end <= whole_end
}

/// A one-row slice holding the value every row of a string `column` holds,
/// or None when the rows differ (or the column is not Utf8).
fn repeated_value(column: &ArrayRef) -> Option<ArrayRef> {
    let rows = column.len();
    if rows == 0 {
        return None;
    }
    if column.null_count() == rows {
        return Some(column.slice(0, 1));
    }
    if column.null_count() != 0 {
        return None;
    }
    let strings = column.as_string_opt::<i32>()?;
    let offsets = strings.value_offsets();
    let start = i64::from(offsets[0]);
    let width = i64::from(offsets[1]) - start;
    // Every value as long as the first (in i64: a wide first value times
    // the row number may pass i32 before a shorter value shows)...
    let same_width = offsets
        .iter()
        .zip(0i64..)
        .all(|(&offset, i)| i64::from(offset) == start + i * width);
    if !same_width {
        return None;
    }
    // ...and the bytes equal to themselves shifted by one value: each value
    // then equals the one before it.
    let (start, width) = (start as usize, width as usize);
    let bytes = &strings.value_data()[start..start + rows * width];
    (bytes[width..] == bytes[..bytes.len() - width]).then(|| column.slice(0, 1))
}

/// `expr` evaluated on `batch`. A constant (`count(*)` counts a constant
/// one) is made into an array once, kept in `kept` and sliced for later
/// batches no longer than it.
fn argument(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    kept: &mut Option<ArrayRef>,
) -> Result<ArrayRef> {
    let rows = batch.num_rows();
    let Some(literal) = expr.downcast_ref::<Literal>() else {
        return expr.evaluate(batch)?.into_array(rows);
    };
    if let Some(array) = kept.as_ref().filter(|a| a.len() >= rows) {
        return Ok(array.slice(0, rows));
    }
    let array = literal.value().to_array_of_size(rows)?;
    *kept = Some(Arc::clone(&array));
    Ok(array)
}

/// One partition's run of the aggregation.
struct AggregationState {
    input: SendableRecordBatchStream,
    groups: Groups,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// The arrays made for the constant arguments, per argument.
    constants: Vec<Vec<Option<ArrayRef>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    schema: SchemaRef,
    batch_size: usize,
    probe_rows: usize,
    probe_ratio: f64,
    rows_seen: usize,
    passing_through: bool,
    pending: VecDeque<RecordBatch>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
    constant_batches: Count,
    mixed_batches: Count,
    finished: bool,
}

impl AggregationState {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.baseline.record_output(batch.num_rows());
                return Ok(Some(batch));
            }
            if self.finished {
                self.baseline.done();
                return Ok(None);
            }
            match self.input.next().await {
                Some(batch) => {
                    let batch = batch?;
                    let timer = self.baseline.elapsed_compute().clone();
                    let _timer = timer.timer();
                    self.consume(&batch)?;
                }
                None => {
                    let timer = self.baseline.elapsed_compute().clone();
                    let _timer = timer.timer();
                    self.emit_all()?;
                    self.reservation.free();
                    self.finished = true;
                }
            }
        }
    }

    fn consume(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let arguments = self
            .arguments
            .iter()
            .zip(&mut self.constants)
            .map(|(exprs, constants)| {
                exprs
                    .iter()
                    .zip(constants.iter_mut())
                    .map(|(e, constant)| argument(e, batch, constant))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|filter| {
                filter
                    .as_ref()
                    .map(|f| {
                        f.evaluate(batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        if self.passing_through {
            let out = self
                .groups
                .pass_through(batch, &arguments, &filters, &self.schema)?;
            self.pending.push_back(out);
            return Ok(());
        }
        let constant = self.groups.number_rows(batch)?;
        if constant {
            self.constant_batches.add(1);
        } else {
            self.mixed_batches.add(1);
        }
        self.groups
            .update(&arguments, &filters, constant, batch.num_rows())?;
        self.rows_seen += batch.num_rows();
        if self.rows_seen >= self.probe_rows && self.rows_seen - batch.num_rows() < self.probe_rows
        {
            let ratio = self.groups.len() as f64 / self.rows_seen as f64;
            if self.probe_ratio < 1.0 && ratio >= self.probe_ratio {
                self.emit_all()?;
                self.passing_through = true;
                return Ok(());
            }
        }
        if self.reservation.try_resize(self.groups.size()).is_err() {
            // Partial states may be emitted at any time: the final
            // aggregation merges them. Hand them on rather than fail.
            self.emit_all()?;
            self.reservation.resize(self.groups.size());
        }
        Ok(())
    }

    fn emit_all(&mut self) -> Result<()> {
        if let Some(batch) = self.groups.emit(&self.schema)? {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let length = self.batch_size.min(batch.num_rows() - offset);
                self.pending.push_back(batch.slice(offset, length));
                offset += length;
            }
            self.groups.reset()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn a_repeated_value_is_found_and_a_difference_is_not_missed() {
        let one = |v: &[Option<&str>]| repeated_value(&strings(v)).is_some();
        assert!(one(&[Some("vega"), Some("vega"), Some("vega")]));
        assert!(one(&[Some(""), Some("")]));
        assert!(one(&[None, None]));
        assert!(one(&[Some("x")]));
        assert!(!one(&[Some("vega"), Some("vega"), Some("vegb")]));
        assert!(!one(&[Some("ab"), Some("ba")]));
        assert!(!one(&[Some("ab"), Some("abab")]));
        assert!(!one(&[Some("a"), None]));
        assert!(!one(&[]));
        // A slice's offsets do not start at zero.
        let column = strings(&[Some("q"), Some("vega"), Some("vega"), Some("zz")]);
        assert!(repeated_value(&column.slice(1, 2)).is_some());
        assert!(repeated_value(&column.slice(1, 3)).is_none());
        let value = repeated_value(&column.slice(1, 2)).expect("one value");
        assert_eq!(value.as_string::<i32>().value(0), "vega");
    }

    #[test]
    fn a_slice_is_told_from_a_copy_and_from_what_lies_outside() {
        let whole = strings(&[Some("vega"); 8]);
        assert!(is_slice_of(&whole.slice(0, 5), &whole));
        assert!(is_slice_of(&whole.slice(3, 5), &whole));
        assert!(is_slice_of(&whole, &whole));
        // The same text in other buffers, or rows past the known ones.
        assert!(!is_slice_of(&strings(&[Some("vega"); 8]), &whole));
        let longer = strings(&[Some("vega"); 9]);
        assert!(!is_slice_of(&longer, &longer.slice(0, 8)));
        assert!(!is_slice_of(&strings(&[None, None]), &whole));
    }

    /// Batches whose `model` is one value, mixed, or NULL, over two partitions.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("segment", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = |models: Vec<Option<&str>>, start: i64| {
            let rows = models.len() as i64;
            let segments: Vec<Option<String>> = (start..start + rows)
                .map(|i| (i % 5 != 0).then(|| format!("s{}", i % 3)))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    strings(&models),
                    Arc::new(StringArray::from(segments)),
                    Arc::new(Int64Array::from_iter(
                        (start..start + rows).map(|i| (i % 7 != 0).then_some(i)),
                    )),
                ],
            )
            .expect("batch")
        };
        let first = vec![
            batch(vec![Some("vega"); 50], 0),
            batch(
                (0..40)
                    .map(|i| Some(if i % 2 == 0 { "orion" } else { "vega" }))
                    .collect(),
                50,
            ),
            batch(vec![None; 10], 90),
        ];
        let second = vec![
            batch(vec![Some("orion"); 30], 100),
            batch(vec![Some("lyra"); 1], 130),
            batch(
                (0..20).map(|i| (i % 4 != 0).then_some("lyra")).collect(),
                131,
            ),
        ];
        MemTable::try_new(schema, vec![first, second]).expect("table")
    }

    /// The answer of `sql`, with partial aggregations as DataFusion plans
    /// them or keyed by `model`.
    async fn answer(
        sql: &str,
        keyed: bool,
        (probe_rows, probe_ratio): (usize, f64),
    ) -> (String, usize) {
        let mut config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(16);
        config
            .options_mut()
            .execution
            .skip_partial_aggregation_probe_rows_threshold = probe_rows;
        config
            .options_mut()
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = probe_ratio;
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table("t", Arc::new(table()))
            .expect("register");
        let plan = ctx
            .sql(sql)
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical");
        let mut replaced = 0;
        let plan = if keyed {
            plan.transform_up(|node| {
                let exec = node
                    .downcast_ref::<AggregateExec>()
                    .and_then(|agg| PartitionKeyAggregateExec::keyed_by(agg, "model"));
                Ok(match exec {
                    Some(exec) => {
                        replaced += 1;
                        Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)
                    }
                    None => Transformed::no(node),
                })
            })
            .data()
            .and_then(exchange_states)
            .expect("rewrite")
        } else {
            plan
        };
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .expect(sql);
        (
            pretty_format_batches(&batches).expect("format").to_string(),
            replaced,
        )
    }

    #[tokio::test]
    async fn keyed_partial_aggregation_answers_as_datafusion_does() {
        let queries = [
            "SELECT model, count(*), sum(n), min(n), avg(n) FROM t GROUP BY model ORDER BY model",
            // Runs of one-model batches summed apart, beside aggregates
            // that keep the groups accumulator (FILTER, DISTINCT, states
            // that are not a few scalars).
            "SELECT model, count(n), max(segment), min(segment), sum(n) FILTER (WHERE n > 40), bool_or(n > 100), round(var_samp(n), 6), median(n), count(DISTINCT segment) FROM t GROUP BY model ORDER BY model",
            // Runs with a FILTER (false and NULL conditions) made NULLs.
            "SELECT model, count(*) FILTER (WHERE n > 40), count(*) FILTER (WHERE n IS NULL), avg(n) FILTER (WHERE n % 3 = 0), min(segment) FILTER (WHERE n < 60), max(n) FILTER (WHERE segment = 'b'), bool_and(n > 10) FILTER (WHERE n > 20), sum(n) FILTER (WHERE NULL), count(n) FROM t GROUP BY model ORDER BY model",
            "SELECT model, segment, count(*), count(n) FILTER (WHERE n % 2 = 0), max(segment) FROM t GROUP BY model, segment ORDER BY model, segment",
            "SELECT segment, model, count(DISTINCT n), sum(n) FROM t WHERE n > 3 GROUP BY segment, model ORDER BY segment, model",
            "SELECT model, n, count(*) FROM t GROUP BY model, n ORDER BY model, n",
            "SELECT model, n % 4, upper(segment), count(*), sum(n) FROM t GROUP BY model, n % 4, upper(segment) ORDER BY 1, 2, 3",
            // Runs of equal buckets (and NULLs among them) numbered once.
            "SELECT model, n / 10 AS bucket, count(*), sum(n), max(segment) FROM t GROUP BY model, n / 10 ORDER BY 1, 2",
            "SELECT coalesce(n, 0) / 40 AS bucket, model, count(*), sum(n), min(segment) FROM t GROUP BY coalesce(n, 0) / 40, model ORDER BY 1, 2",
            "SELECT model, coalesce(n, 1) / 1000 AS bucket, n IS NULL, count(*) FILTER (WHERE n > 5) FROM t GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        ];
        for sql in queries {
            // Never passing rows through; passing them through when
            // grouping does not reduce them; and passing them through after
            // the first batch, with a run of one model still to merge.
            for probe in [(100_000, 0.3), (8, 0.3), (8, 0.01)] {
                let (expected, _) = answer(sql, false, probe).await;
                let (got, replaced) = answer(sql, true, probe).await;
                // count(DISTINCT) plans two aggregations, both keyed.
                assert!(replaced >= 1, "{sql}");
                assert_eq!(expected, got, "{sql} (probe {probe:?})");
            }
        }
    }

    #[tokio::test]
    async fn only_plain_groupings_by_the_key_are_replaced() {
        for sql in [
            "SELECT segment, count(*) FROM t GROUP BY segment ORDER BY 1, 2",
            "SELECT model, count(*) FROM t GROUP BY ROLLUP (model) ORDER BY 1, 2",
            "SELECT lower(model), count(*) FROM t GROUP BY lower(model) ORDER BY 1, 2",
            "SELECT n % 3, count(*) FROM t GROUP BY n % 3 ORDER BY 1, 2",
            "SELECT count(*) FROM t",
        ] {
            let (expected, _) = answer(sql, false, (100_000, 0.3)).await;
            let (got, replaced) = answer(sql, true, (100_000, 0.3)).await;
            assert_eq!(replaced, 0, "{sql}");
            assert_eq!(expected, got, "{sql}");
        }
    }
}
