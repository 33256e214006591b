//! The plumbing shared by every monitoring function: argument checking with
//! errors that name the function and its signature, and one accumulator
//! shape (per-group state, serialised as bytes between partial and final
//! aggregation) for all aggregates.

use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::docs::FunctionDoc;
use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// What an argument accepts, and the type it is cast to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Arg {
    /// Any number, read as DOUBLE PRECISION.
    Number,
    /// A number or a boolean (pass/fail judges), read as DOUBLE PRECISION.
    Score,
    /// BOOLEAN.
    Boolean,
    /// A number (binned by baseline quantiles) or text (one bin per value).
    NumberOrText,
    /// Text, or a boolean or integer read as text.
    Category,
    /// BYTEA (a sketch or score state).
    Bytes,
    /// A constant positive integer.
    ConstInteger,
    /// A constant number.
    ConstNumber,
    /// An array of numbers (an embedding), read as DOUBLE PRECISION[].
    Embedding,
}

impl Arg {
    fn accepts(self, t: &DataType) -> Option<DataType> {
        let numeric = t.is_numeric() || t.is_null();
        let text = matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            || matches!(t, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
        match self {
            Arg::Number | Arg::ConstNumber if numeric => Some(DataType::Float64),
            Arg::Score if numeric || t == &DataType::Boolean => Some(DataType::Float64),
            Arg::Boolean if t == &DataType::Boolean || t.is_null() => Some(DataType::Boolean),
            Arg::NumberOrText if numeric => Some(DataType::Float64),
            Arg::NumberOrText | Arg::Category if text => Some(DataType::Utf8),
            Arg::Category if t.is_integer() || t == &DataType::Boolean || t.is_null() => {
                Some(DataType::Utf8)
            }
            Arg::Bytes
                if matches!(
                    t,
                    DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                ) || t.is_null() =>
            {
                Some(DataType::Binary)
            }
            Arg::ConstInteger if t.is_integer() || t.is_null() => Some(DataType::Int64),
            Arg::Embedding => match t {
                DataType::Null => Some(embedding_type()),
                DataType::List(item)
                | DataType::LargeList(item)
                | DataType::FixedSizeList(item, _)
                    if item.data_type().is_numeric() || item.data_type().is_null() =>
                {
                    Some(embedding_type())
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The type embeddings are read as: a list of DOUBLE PRECISION.
pub(crate) fn embedding_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// The Postgres name of an Arrow type, for messages.
fn sql_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Null => "unknown",
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
            "text"
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "array",
        _ => "an unsupported type",
    }
}

/// A function's name and arguments, and the signature shown in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) required: &'static [Arg],
    pub(crate) optional: &'static [Arg],
    /// E.g. `drift_psi(value numeric|text, is_current boolean [, bins integer])`.
    pub(crate) usage: &'static str,
}

impl Spec {
    fn doc(&self, aggregate: bool, returns: &DataType) -> FunctionDoc {
        let arguments = self
            .usage
            .split_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .unwrap_or_default();
        FunctionDoc {
            name: self.name,
            aggregate,
            arguments,
            result: sql_type_name(returns),
            description: crate::docs::description(self.name),
        }
    }

    fn coerce(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        // Postgres reports a call that matches no signature as a function
        // that does not exist (SQLSTATE 42883), naming the argument types.
        let no_match = |problem: String| {
            let given: Vec<&str> = types.iter().map(sql_type_name).collect();
            DataFusionError::Plan(format!(
                "function {}({}) does not exist: {problem}; expected {}",
                self.name,
                given.join(", "),
                self.usage
            ))
        };
        let max = self.required.len() + self.optional.len();
        if types.len() < self.required.len() || types.len() > max {
            return Err(no_match(format!("it takes {} arguments", self.arity())));
        }
        self.required
            .iter()
            .chain(self.optional)
            .zip(types)
            .enumerate()
            .map(|(i, (arg, t))| {
                arg.accepts(t).ok_or_else(|| {
                    no_match(format!("argument {} cannot be {}", i + 1, sql_type_name(t)))
                })
            })
            .collect()
    }

    fn arity(&self) -> String {
        match self.optional.len() {
            0 => self.required.len().to_string(),
            n => format!("{} to {}", self.required.len(), self.required.len() + n),
        }
    }

    /// A planning error naming the function and how to call it.
    pub(crate) fn error(&self, problem: String) -> DataFusionError {
        DataFusionError::Plan(format!("{} {problem}; expected {}", self.name, self.usage))
    }

    /// The constant value of argument `index`, or `default` when absent.
    pub(crate) fn constant(
        &self,
        args: &AccumulatorArgs,
        index: usize,
        default: Option<f64>,
    ) -> Result<f64> {
        let Some(expr) = args.exprs.get(index) else {
            return default.ok_or_else(|| self.error(format!("needs argument {}", index + 1)));
        };
        let literal = expr
            .downcast_ref::<Literal>()
            .ok_or_else(|| self.error(format!("argument {} must be a constant", index + 1)))?;
        match literal.value().cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(v)) if v.is_finite() => Ok(v),
            _ => Err(self.error(format!("argument {} must not be NULL", index + 1))),
        }
    }

    /// A constant bin count between 2 and 1,000.
    pub(crate) fn bins(&self, args: &AccumulatorArgs, index: usize) -> Result<usize> {
        let bins = self.constant(args, index, Some(10.0))?;
        if bins.fract() != 0.0 || !(2.0..=1000.0).contains(&bins) {
            return Err(self.error(format!(
                "bins must be an integer from 2 to 1000, got {bins}"
            )));
        }
        Ok(bins as usize)
    }
}

/// How one aggregate function accumulates and finishes.
pub(crate) trait Aggregate: Debug + Send + Sync + 'static {
    /// Per-group state.
    type State: Debug + Send + Sync + 'static;

    fn new_state(&self) -> Self::State;

    /// Adds the selected rows of `args` (already cast per the spec) to the
    /// states of their groups.
    fn update(
        &self,
        states: &mut [Self::State],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()>;

    fn merge(&self, state: &mut Self::State, encoded: &[u8]) -> Result<()>;

    /// Merges the state encoded at `row` of `states`. Aggregates whose
    /// states hold many values may keep slices of the array's buffer
    /// instead of copying the values out of it.
    fn merge_row(&self, state: &mut Self::State, states: &BinaryArray, row: usize) -> Result<()> {
        self.merge(state, states.value(row))
    }

    fn encode(&self, state: &Self::State) -> Vec<u8>;

    /// Appends [`Aggregate::encode`]'s bytes to `out`; aggregates with
    /// large states write them there directly instead of copying them twice.
    fn encode_into(&self, state: &Self::State, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode(state));
    }

    fn evaluate(&self, state: &mut Self::State) -> Result<ScalarValue>;

    fn size(&self, state: &Self::State) -> usize;
}

/// Whether `row` passes an aggregate's FILTER clause.
pub(crate) fn selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// Builds the aggregate for one call, from its constant arguments and types.
pub(crate) type Build = fn(&Spec, &AccumulatorArgs) -> Result<Box<dyn Accumulators>>;

/// Makes either kind of DataFusion accumulator for one aggregate.
pub(crate) trait Accumulators: Send {
    fn single(self: Box<Self>) -> Box<dyn Accumulator>;
    fn grouped(self: Box<Self>) -> Box<dyn GroupsAccumulator>;
}

impl<A: Aggregate> Accumulators for A {
    fn single(self: Box<Self>) -> Box<dyn Accumulator> {
        let state = self.new_state();
        Box::new(Single {
            aggregate: *self,
            state,
        })
    }

    fn grouped(self: Box<Self>) -> Box<dyn GroupsAccumulator> {
        Box::new(Grouped {
            aggregate: *self,
            states: Vec::new(),
        })
    }
}

/// An aggregate UDF defined by a [`Spec`], a result type and a builder.
#[derive(Debug)]
pub(crate) struct MonitorAggregate {
    spec: Spec,
    signature: Signature,
    returns: DataType,
    build: Build,
}

impl MonitorAggregate {
    pub(crate) fn new(spec: Spec, returns: DataType, build: Build) -> Self {
        MonitorAggregate {
            spec,
            signature: Signature::user_defined(Volatility::Immutable),
            returns,
            build,
        }
    }

    /// The aggregate as the function catalog lists it.
    pub(crate) fn doc(&self) -> FunctionDoc {
        self.spec.doc(true, &self.returns)
    }
}

impl PartialEq for MonitorAggregate {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for MonitorAggregate {}

impl Hash for MonitorAggregate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec.hash(state);
    }
}

impl AggregateUDFImpl for MonitorAggregate {
    fn name(&self) -> &str {
        self.spec.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.spec.coerce(arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_state", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok((self.build)(&self.spec, &args)?.single())
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok((self.build)(&self.spec, &args)?.grouped())
    }
}

#[derive(Debug)]
struct Single<A: Aggregate> {
    aggregate: A,
    state: A::State,
}

impl<A: Aggregate> Accumulator for Single<A> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |a| a.len());
        let groups = vec![0; rows];
        self.aggregate
            .update(std::slice::from_mut(&mut self.state), values, &groups, None)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let encoded = binary(&states[0])?;
        for row in (0..encoded.len()).filter(|row| encoded.is_valid(*row)) {
            self.aggregate.merge_row(&mut self.state, encoded, row)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(
            self.aggregate.encode(&self.state),
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.aggregate.evaluate(&mut self.state)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.aggregate.size(&self.state)
    }
}

#[derive(Debug)]
struct Grouped<A: Aggregate> {
    aggregate: A,
    states: Vec<A::State>,
}

impl<A: Aggregate> Grouped<A> {
    fn grow(&mut self, groups: usize) {
        while self.states.len() < groups {
            self.states.push(self.aggregate.new_state());
        }
    }
}

impl<A: Aggregate> GroupsAccumulator for Grouped<A> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.aggregate
            .update(&mut self.states, values, group_indices, opt_filter)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let encoded = binary(&values[0])?;
        for (row, group) in group_indices.iter().enumerate() {
            if encoded.is_valid(row) {
                self.aggregate
                    .merge_row(&mut self.states[*group], encoded, row)?;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = emit_to.take_needed(&mut self.states);
        let values = taken
            .iter_mut()
            .map(|s| self.aggregate.evaluate(s))
            .collect::<Result<Vec<_>>>()?;
        if values.is_empty() {
            return Ok(arrow::array::new_empty_array(&self.aggregate_type()?));
        }
        ScalarValue::iter_to_array(values)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = emit_to.take_needed(&mut self.states);
        let encoded = encoded_states(&self.aggregate, &taken)?;
        Ok(vec![Arc::new(encoded)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values.first().map_or(0, |a| a.len());
        let mut states: Vec<A::State> = (0..rows).map(|_| self.aggregate.new_state()).collect();
        let groups: Vec<usize> = (0..rows).collect();
        self.aggregate
            .update(&mut states, values, &groups, opt_filter)?;
        let encoded = encoded_states(&self.aggregate, &states)?;
        Ok(vec![Arc::new(encoded)])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .states
                .iter()
                .map(|s| self.aggregate.size(s))
                .sum::<usize>()
    }
}

impl<A: Aggregate> Grouped<A> {
    /// The result type, read off an empty state (for an empty emit).
    fn aggregate_type(&self) -> Result<DataType> {
        Ok(self
            .aggregate
            .evaluate(&mut self.aggregate.new_state())?
            .data_type())
    }
}

/// Encoded states as one BYTEA array, each written once into a buffer
/// reserved for all of them (a builder grows by doubling, copying megabytes
/// of samples again at each step). States past the array's 2 GiB are an
/// error, not a panic.
fn encoded_states<A: Aggregate>(aggregate: &A, states: &[A::State]) -> Result<BinaryArray> {
    // Held bytes bound the encoded ones closely enough for a reservation,
    // which never needs to pass what one array can hold.
    let estimate: usize = states.iter().map(|s| aggregate.size(s)).sum();
    let mut values = Vec::with_capacity(estimate.min(i32::MAX as usize));
    let mut offsets = Vec::with_capacity(states.len() + 1);
    offsets.push(0i32);
    for state in states {
        aggregate.encode_into(state, &mut values);
        let end = i32::try_from(values.len()).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "aggregate states of more than {} bytes exceed the 2 GiB a batch can hold",
                values.len()
            ))
        })?;
        offsets.push(end);
    }
    // The buffer becomes the array's: where held bytes overstated the
    // encoded ones (small states, compact encodings), give the rest back so
    // memory accounting sees what the states take.
    if values.capacity() > values.len() + values.len() / 8 {
        values.shrink_to_fit();
    }
    Ok(BinaryArray::try_new(
        arrow::buffer::OffsetBuffer::new(offsets.into()),
        values.into(),
        None,
    )?)
}

/// The argument as a BYTEA array.
pub(crate) fn binary(array: &ArrayRef) -> Result<&BinaryArray> {
    array.as_any().downcast_ref::<BinaryArray>().ok_or_else(|| {
        DataFusionError::Internal(format!("expected BYTEA, got {}", array.data_type()))
    })
}

/// A NULL instead of NaN, so a failed computation never passes a threshold.
pub(crate) fn float(value: Option<f64>) -> ScalarValue {
    ScalarValue::Float64(value.filter(|v| !v.is_nan()))
}

/// Evaluates a scalar function over arrays (already cast per the spec).
pub(crate) type Eval = fn(&Spec, &[ArrayRef]) -> Result<ArrayRef>;

/// A scalar UDF defined by a [`Spec`], a result type and an evaluator.
#[derive(Debug)]
pub(crate) struct MonitorScalar {
    spec: Spec,
    signature: Signature,
    returns: DataType,
    eval: Eval,
}

impl MonitorScalar {
    pub(crate) fn new(spec: Spec, returns: DataType, eval: Eval) -> Self {
        MonitorScalar {
            spec,
            signature: Signature::user_defined(Volatility::Immutable),
            returns,
            eval,
        }
    }

    /// The function as the function catalog lists it.
    pub(crate) fn doc(&self) -> FunctionDoc {
        self.spec.doc(false, &self.returns)
    }
}

impl PartialEq for MonitorScalar {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for MonitorScalar {}

impl Hash for MonitorScalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec.hash(state);
    }
}

impl ScalarUDFImpl for MonitorScalar {
    fn name(&self) -> &str {
        self.spec.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.spec.coerce(arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.eval)(&self.spec, &arrays)?))
    }
}
