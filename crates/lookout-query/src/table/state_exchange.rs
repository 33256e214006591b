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
//!
//! Rows waiting for an output are charged to the query's memory pool, as
//! `RepartitionExec` charges them: a batch sent as slices once, until its
//! last slice is taken; a copied part on its own. Unlike `RepartitionExec`
//! nothing is spilled (writing states out and back would be the copies this
//! node exists to avoid): a query whose waiting states pass its budget
//! fails with `ResourcesExhausted` (53200).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
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

/// Rows on their way to an output, with the memory they hold charged to
/// the pool until the output takes them.
struct Routed {
    batch: RecordBatch,
    /// Shared by the slices of one batch; the last one taken frees it.
    _charge: Arc<MemoryReservation>,
}

type Sent = Result<Routed>;

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
                reservation: MemoryConsumer::new(format!("StateExchangeExec[{partition}]"))
                    .register(context.memory_pool()),
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
    /// Grown by what the next send holds, then handed over with it.
    reservation: MemoryReservation,
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
        let send = |output: usize, part: RecordBatch, charge: &Arc<MemoryReservation>| {
            let routed = Routed {
                batch: part,
                _charge: Arc::clone(charge),
            };
            // A receiver that is gone stopped reading: its rows are not needed.
            if senders[output].send(Ok(routed)).is_ok() {
                gate.sent(output);
            }
        };
        let bytes = batch.get_array_memory_size();
        if bytes / rows < LARGE_ROW_BYTES {
            // Each part is a copy, charged on its own.
            let reservation = &mut self.reservation;
            return self.partitioner.partition(batch, |output, part| {
                reservation.try_grow(part.get_array_memory_size())?;
                send(output, part, &Arc::new(reservation.take()));
                Ok(())
            });
        }
        // The slices share the batch's buffers: it is charged once.
        self.reservation.try_grow(bytes)?;
        let charge = Arc::new(self.reservation.take());
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
                send(output, batch.slice(*row as usize, 1), &charge);
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
            // The consumer charges what it keeps of the rows to its own
            // reservation; theirs is freed here (the slices' with the last).
            Some((next.map(|routed| routed.batch), (receiver, held)))
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
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

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
        outputs_in(plan, SessionContext::new().task_ctx())
            .await
            .expect("outputs")
    }

    /// A task context whose memory pool holds `limit` bytes.
    fn context_with_memory(limit: usize) -> (Arc<TaskContext>, Arc<dyn MemoryPool>) {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(limit));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&pool))
            .build_arc()
            .expect("runtime");
        let session = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        (session.task_ctx(), pool)
    }

    /// Like [`outputs`], in `context`; the first error of any output.
    async fn outputs_in(
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<Vec<Vec<String>>> {
        let count = plan.properties().partitioning.partition_count();
        let mut all = Vec::new();
        for output in 0..count {
            let batches: Vec<RecordBatch> = plan
                .execute(output, Arc::clone(&context))?
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
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
        Ok(all)
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

    fn exchange(state_bytes: usize) -> (Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>) {
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("model", 0));
        let repartition =
            RepartitionExec::try_new(input(state_bytes), Partitioning::Hash(vec![key], 3))
                .expect("repartition");
        let exchange = StateExchangeExec::replacing(&repartition).expect("exchange");
        (Arc::new(exchange), Arc::new(repartition))
    }

    #[tokio::test]
    async fn charges_waiting_rows_to_the_memory_pool() {
        for state_bytes in [16, LARGE_ROW_BYTES + 1] {
            let (exchange, repartition) = exchange(state_bytes);
            let expected = outputs(repartition).await;
            let (context, pool) = context_with_memory(64 << 20);
            // Output 0 read to its end: every router is done, and the rows
            // of the other outputs wait, charged.
            let mut streams: Vec<SendableRecordBatchStream> = (0..3)
                .map(|o| exchange.execute(o, Arc::clone(&context)).expect("execute"))
                .collect();
            while let Some(b) = streams[0].next().await {
                b.expect("batch");
            }
            let waiting = expected[1].len() + expected[2].len();
            assert!(waiting > 0);
            assert!(
                pool.reserved() > 0,
                "{state_bytes}-byte rows waiting, none charged"
            );
            for stream in &mut streams[1..] {
                while let Some(b) = stream.next().await {
                    b.expect("batch");
                }
            }
            drop(streams);
            assert_eq!(pool.reserved(), 0, "{state_bytes}-byte rows left charged");
            // All outputs again, in a fresh pool: the same rows, nothing kept.
            let (context, pool) = context_with_memory(64 << 20);
            let got = outputs_in(Arc::clone(&exchange), context).await;
            assert_eq!(got.expect("outputs"), expected);
            assert_eq!(pool.reserved(), 0);
        }
    }

    #[tokio::test]
    async fn fails_when_waiting_states_pass_the_budget() {
        let (exchange, _) = exchange(LARGE_ROW_BYTES + 1);
        // Less than one row's state.
        let (context, pool) = context_with_memory(LARGE_ROW_BYTES / 2);
        let failed = outputs_in(exchange, context)
            .await
            .expect_err("over budget");
        assert!(
            matches!(failed.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{failed}"
        );
        assert_eq!(pool.reserved(), 0);
    }
}
