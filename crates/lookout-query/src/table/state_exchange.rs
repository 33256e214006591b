//! Moving partial aggregation states to the final aggregation without
//! copying them.
//!
//! DataFusion's `RepartitionExec` copies every batch it routes (a `take` of
//! the rows for each output), then concatenates the small batches an output
//! receives. For partial states of a few rows that hold samples (`drift_*`
//! keeps every value of its windows) that is two copies of megabytes per
//! group, into fresh pages the kernel must first fault in and zero (a third
//! of `drift_psi` by model over 10 M rows). [`StateExchangeExec`] routes by
//! the same hash, to the same outputs, but sends batches whose rows are
//! large as slices of one row each: no byte of a state is copied. Batches of
//! small rows are routed as `RepartitionExec` routes them.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, stream};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Rows of at least this many bytes on average travel as slices of their
/// batch; smaller ones are copied, as `RepartitionExec` copies them.
const LARGE_ROW_BYTES: usize = 64 * 1024;

type Sent = Result<RecordBatch>;

/// A hash repartitioning of partial aggregation states (see the module).
pub(crate) struct StateExchangeExec {
    input: Arc<dyn ExecutionPlan>,
    /// The hash expressions and output count of the repartitioning replaced.
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    outputs: usize,
    properties: Arc<PlanProperties>,
    /// The outputs' receivers, made when the first output is executed and
    /// handed out once each.
    running: Mutex<Option<Running>>,
    metrics: ExecutionPlanMetricsSet,
}

/// Holds the routers back while every output has batches waiting, as
/// DataFusion's repartitioning does: an output waiting for rows is never
/// starved, and memory does not grow while all consumers are behind.
struct Gate {
    waiting: Vec<AtomicUsize>,
    opened: Notify,
}

impl Gate {
    fn new(outputs: usize) -> Self {
        Gate {
            waiting: (0..outputs).map(|_| AtomicUsize::new(0)).collect(),
            opened: Notify::new(),
        }
    }

    async fn open(&self) {
        loop {
            // Registered before the check, so a receipt between the two wakes it.
            let opened = self.opened.notified();
            if self.waiting.iter().any(|w| w.load(Ordering::Acquire) == 0) {
                return;
            }
            opened.await;
        }
    }

    fn sent(&self, output: usize) {
        self.waiting[output].fetch_add(1, Ordering::AcqRel);
    }

    fn received(&self, output: usize) {
        if self.waiting[output].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.opened.notify_waiters();
        }
    }
}

struct Running {
    receivers: Vec<Option<UnboundedReceiver<Sent>>>,
    gate: Arc<Gate>,
    /// The tasks reading the inputs; aborted when every output stream (and
    /// this) is gone.
    tasks: Arc<Vec<SpawnedTask<()>>>,
}

impl StateExchangeExec {
    /// The exchange doing what `repartition` does, if it repartitions by
    /// hash without keeping an order.
    pub(crate) fn replacing(repartition: &RepartitionExec) -> Option<StateExchangeExec> {
        let Partitioning::Hash(exprs, outputs) = repartition.partitioning() else {
            return None;
        };
        if repartition.preserve_order() {
            return None;
        }
        Some(StateExchangeExec {
            input: Arc::clone(repartition.input()),
            exprs: exprs.clone(),
            outputs: *outputs,
            properties: Arc::clone(repartition.properties()),
            running: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn start(&self, context: &Arc<TaskContext>) -> Result<Running> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..self.outputs).map(|_| unbounded_channel()).unzip();
        let gate = Arc::new(Gate::new(self.outputs));
        let inputs = self.input.properties().partitioning.partition_count();
        let mut tasks = Vec::with_capacity(inputs);
        for partition in 0..inputs {
            let rows = self.input.execute(partition, Arc::clone(context))?;
            let router = Router {
                exprs: self.exprs.clone(),
                partitioner: BatchPartitioner::new_hash_partitioner(
                    key_columns(self.exprs.len()),
                    self.outputs,
                    MetricBuilder::new(&self.metrics).subset_time("routing_time", partition),
                )?,
                senders: senders.clone(),
                gate: Arc::clone(&gate),
                sliced: MetricBuilder::new(&self.metrics).counter("rows_sliced", partition),
            };
            tasks.push(SpawnedTask::spawn(router.run(rows)));
        }
        Ok(Running {
            receivers: receivers.into_iter().map(Some).collect(),
            gate,
            tasks: Arc::new(tasks),
        })
    }
}

/// Columns 0..n: the key arrays the router hashes, in a batch of their own.
fn key_columns(n: usize) -> Vec<Arc<dyn PhysicalExpr>> {
    (0..n)
        .map(|i| Arc::new(Column::new(&format!("key{i}"), i)) as Arc<dyn PhysicalExpr>)
        .collect()
}

/// Routes one input partition's batches to the outputs.
struct Router {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    partitioner: BatchPartitioner,
    senders: Vec<UnboundedSender<Sent>>,
    gate: Arc<Gate>,
    sliced: Count,
}

impl Router {
    async fn run(mut self, mut rows: SendableRecordBatchStream) {
        let mut failed = None;
        while let Some(batch) = rows.next().await {
            self.gate.open().await;
            if let Err(error) = batch.and_then(|batch| self.route(batch)) {
                failed = Some(error);
                break;
            }
        }
        if let Some(error) = failed {
            let error = Arc::new(error);
            for sender in &self.senders {
                // An output that is gone has nothing to tell.
                let _ = sender.send(Err(DataFusionError::Shared(Arc::clone(&error))));
            }
        }
    }

    fn route(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let (senders, gate) = (&self.senders, &self.gate);
        let send = |output: usize, part: RecordBatch| -> Result<()> {
            // A receiver that is gone stopped reading: its rows are not needed.
            if senders[output].send(Ok(part)).is_ok() {
                gate.sent(output);
            }
            Ok(())
        };
        if batch.get_array_memory_size() / rows < LARGE_ROW_BYTES {
            return self.partitioner.partition(batch, send);
        }
        // Hash the keys (with each row's number) as DataFusion does, then
        // send each row as a slice of the batch.
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.exprs.len() + 1);
        let mut fields = Vec::with_capacity(self.exprs.len() + 1);
        for (i, expr) in self.exprs.iter().enumerate() {
            let array = expr.evaluate(&batch)?.into_array(rows)?;
            fields.push(Field::new(
                format!("key{i}"),
                array.data_type().clone(),
                true,
            ));
            columns.push(array);
        }
        fields.push(Field::new("row", DataType::UInt32, false));
        let numbers = u32::try_from(rows)
            .map_err(|_| DataFusionError::Internal("batch of more than 2^32 rows".into()))?;
        columns.push(Arc::new(UInt32Array::from_iter_values(0..numbers)));
        let keys = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let sliced = &self.sliced;
        self.partitioner.partition(keys, |output, routed| {
            let numbers = routed
                .columns()
                .last()
                .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
                .ok_or_else(|| {
                    DataFusionError::Internal("routed rows lost their numbers".into())
                })?;
            for row in numbers.values() {
                sliced.add(1);
                send(output, batch.slice(*row as usize, 1))?;
            }
            Ok(())
        })
    }
}

impl fmt::Debug for StateExchangeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateExchangeExec")
            .field("exprs", &self.exprs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for StateExchangeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exprs: Vec<String> = self.exprs.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "StateExchange: partitioning=Hash([{}], {}), input_partitions={}",
            exprs.join(", "),
            self.outputs,
            self.input.properties().partitioning.partition_count()
        )
    }
}

impl ExecutionPlan for StateExchangeExec {
    fn name(&self) -> &'static str {
        "StateExchangeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut recursion = TreeNodeRecursion::Continue;
        for expr in &self.exprs {
            recursion = f(expr)?;
            if recursion == TreeNodeRecursion::Stop {
                break;
            }
        }
        Ok(recursion)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => {
                let repartition = RepartitionExec::try_new(
                    input,
                    Partitioning::Hash(self.exprs.clone(), self.outputs),
                )?;
                let exchange = StateExchangeExec::replacing(&repartition).ok_or_else(|| {
                    DataFusionError::Internal("state exchange lost its partitioning".into())
                })?;
                Ok(Arc::new(exchange))
            }
            _ => Err(DataFusionError::Internal(
                "StateExchange takes one child".into(),
            )),
        }
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
        if partition >= self.outputs {
            return Err(DataFusionError::Internal(format!(
                "StateExchange has {} outputs, not {}",
                self.outputs,
                partition + 1
            )));
        }
        let mut running = self
            .running
            .lock()
            .map_err(|_| DataFusionError::Internal("state exchange lock poisoned".into()))?;
        let current = match running.as_mut() {
            Some(current) if current.receivers[partition].is_some() => current,
            // Not started, or started and this output already handed out:
            // a new execution of the plan reads the inputs again.
            _ => running.insert(self.start(&context)?),
        };
        let receiver = current.receivers[partition]
            .take()
            .ok_or_else(|| DataFusionError::Internal("state exchange output taken".into()))?;
        let held = (Arc::clone(&current.gate), Arc::clone(&current.tasks));
        if current.receivers.iter().all(Option::is_none) {
            *running = None;
        }
        let batches = stream::unfold((receiver, held), move |(mut receiver, held)| async move {
            let next = receiver.recv().await?;
            if next.is_ok() {
                held.0.received(partition);
            }
            Some((next, (receiver, held)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            batches,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, StringArray};
    use arrow::compute::concat_batches;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::prelude::SessionContext;

    /// Two input partitions of (key, state) rows; `state_bytes` sets how
    /// large a row is, so both ways of routing are taken.
    fn input(state_bytes: usize) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("state", DataType::Binary, true),
        ]));
        let batch = |keys: &[Option<&str>], fill: u8| {
            let states: Vec<Vec<u8>> = (0..keys.len())
                .map(|i| vec![fill + i as u8; state_bytes])
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(keys.to_vec())),
                    Arc::new(BinaryArray::from_iter_values(states)),
                ],
            )
            .expect("batch")
        };
        let first = vec![
            batch(&[Some("orion"), Some("vega"), None, Some("lyra")], 0),
            batch(&[Some("vega")], 10),
        ];
        let second = vec![batch(&[Some("orion"), Some("lyra"), Some("deneb")], 20)];
        let source = MemorySourceConfig::try_new(&[first, second], Arc::clone(&schema), None)
            .expect("source");
        DataSourceExec::from_data_source(source)
    }

    /// Each output's rows, sorted, as text.
    async fn outputs(plan: Arc<dyn ExecutionPlan>) -> Vec<Vec<String>> {
        let context = SessionContext::new().task_ctx();
        let count = plan.properties().partitioning.partition_count();
        let mut all = Vec::new();
        for output in 0..count {
            let batches: Vec<RecordBatch> = plan
                .execute(output, Arc::clone(&context))
                .expect("execute")
                .map(|b| b.expect("batch"))
                .collect()
                .await;
            let merged = concat_batches(&plan.schema(), &batches).expect("concat");
            let keys = merged
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("keys");
            let states = merged
                .column(1)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .expect("states");
            let mut rows: Vec<String> = (0..merged.num_rows())
                .map(|r| {
                    format!(
                        "{:?} {:?}",
                        keys.is_valid(r).then(|| keys.value(r)),
                        states.value(r)
                    )
                })
                .collect();
            rows.sort();
            all.push(rows);
        }
        all
    }

    #[tokio::test]
    async fn routes_rows_where_repartitioning_does_without_copying_large_ones() {
        for state_bytes in [16, LARGE_ROW_BYTES + 1] {
            let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("model", 0));
            let repartition =
                RepartitionExec::try_new(input(state_bytes), Partitioning::Hash(vec![key], 3))
                    .expect("repartition");
            let exchange = StateExchangeExec::replacing(&repartition).expect("exchange");
            let exchange = Arc::new(exchange);
            let expected = outputs(Arc::new(repartition)).await;
            assert_eq!(
                outputs(Arc::clone(&exchange) as Arc<dyn ExecutionPlan>).await,
                expected
            );
            // A second execution reads the inputs again.
            assert_eq!(
                outputs(Arc::clone(&exchange) as Arc<dyn ExecutionPlan>).await,
                expected
            );
            let sliced = exchange
                .metrics()
                .and_then(|m| m.sum_by_name("rows_sliced"))
                .map_or(0, |v| v.as_usize());
            assert_eq!(sliced, if state_bytes > 16 { 2 * 8 } else { 0 });
        }
    }
}
