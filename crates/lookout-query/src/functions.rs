//! Functions Lookout adds to DataFusion's.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::error::SqlState;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// Registers Lookout's functions in a session.
pub(crate) fn register(ctx: &SessionContext) {
    // TimescaleDB's name for date_bin, with the same arguments.
    ctx.register_udf(crate::date_bin::date_bin().with_aliases(["time_bucket"]));
    ctx.register_udf(crate::date_trunc::date_trunc());
    ctx.register_udaf(AggregateUDF::from(PercentileCont::new(false)));
    ctx.register_udaf(AggregateUDF::from(PercentileCont::new(true)));
    ctx.register_udaf(AggregateUDF::from(Mode::new()));
    // PostgreSQL's name for the sample variance.
    let var_samp = datafusion::functions_aggregate::variance::var_samp_udaf();
    ctx.register_udaf(var_samp.as_ref().clone().with_aliases(["variance"]));
    ctx.register_udf(width_bucket());
    crate::pg::functions::register(ctx);
    // Replaces DataFusion's, which takes chrono's patterns, not PostgreSQL's.
    ctx.register_udf(crate::pg::to_char::to_char());
    if let Err(e) = crate::json::register(ctx) {
        tracing::error!("json operators unavailable: {e}");
    }
    lookout_monitor::register(ctx);
}

/// The session's settings by lower-case name, shared with `current_setting()`
/// and `set_config()`, and the assignments `set_config()` made, which the
/// session applies before its next statement.
#[derive(Debug, Clone, Default)]
pub(crate) struct SettingValues {
    values: Arc<RwLock<BTreeMap<String, String>>>,
    assignments: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

fn setting_key(name: &str) -> String {
    match name.to_lowercase() {
        n if n == "time zone" => "timezone".to_string(),
        n => n,
    }
}

impl SettingValues {
    pub(crate) fn replace(&self, values: BTreeMap<String, String>) {
        match self.values.write() {
            Ok(mut guard) => *guard = values,
            Err(poisoned) => *poisoned.into_inner() = values,
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        let name = setting_key(name);
        match self.values.read() {
            Ok(guard) => guard.get(&name).cloned(),
            Err(poisoned) => poisoned.into_inner().get(&name).cloned(),
        }
    }

    fn assign(&self, name: &str, value: &str) {
        let key = setting_key(name);
        match self.values.write() {
            Ok(mut guard) => guard.insert(key.clone(), value.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(key.clone(), value.to_string()),
        };
        let mut pending = self.assignments.lock().unwrap_or_else(|p| p.into_inner());
        pending.push((key, value.to_string()));
    }

    /// Every setting and its value.
    pub(crate) fn all(&self) -> BTreeMap<String, String> {
        match self.values.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn take_assignments(&self) -> Vec<(String, String)> {
        let mut pending = self.assignments.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }
}

/// `current_setting(name [, missing_ok])`: a setting's value as `SHOW` gives
/// it, as in PostgreSQL (an unknown name is an error unless `missing_ok`).
/// Volatile, not stable as in PostgreSQL, so planning does not fold it into
/// a constant before a `set_config()` earlier in the same statement runs.
pub(crate) fn current_setting(values: SettingValues) -> ScalarUDF {
    ScalarUDF::from(SettingFunction {
        kind: SettingKind::Current,
        values,
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Volatile,
        ),
    })
}

/// `set_config(name, value, is_local)`: sets a setting as `SET` does and
/// returns the value, as in PostgreSQL. Statements autocommit, so a local
/// setting (`is_local` true) ends with its statement: only the value is
/// returned.
pub(crate) fn set_config(values: SettingValues) -> ScalarUDF {
    ScalarUDF::from(SettingFunction {
        kind: SettingKind::Set,
        values,
        signature: Signature::exact(
            vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
            Volatility::Volatile,
        ),
    })
}

/// `session_user`, `current_user`, `current_role` and `user` (each its own
/// function, so each names its column as in PostgreSQL): who the session
/// runs as.
pub(crate) fn session_users(values: SettingValues) -> [ScalarUDF; 4] {
    ["session_user", "current_user", "current_role", "user"].map(|name| {
        ScalarUDF::from(SettingFunction {
            kind: SettingKind::User(name),
            values: values.clone(),
            signature: Signature::nullary(Volatility::Stable),
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SettingKind {
    Current,
    Set,
    /// The user, under this function name.
    User(&'static str),
}

/// The session-bound setting functions.
#[derive(Debug)]
struct SettingFunction {
    kind: SettingKind,
    values: SettingValues,
    signature: Signature,
}

impl PartialEq for SettingFunction {
    fn eq(&self, other: &Self) -> bool {
        // One of each per session; sessions never share a function registry.
        self.kind == other.kind
    }
}

impl Eq for SettingFunction {}

impl std::hash::Hash for SettingFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl SettingFunction {
    fn current(&self, arrays: &[ArrayRef]) -> Result<Vec<Option<String>>> {
        let names = arrays[0].as_string::<i32>();
        let missing_ok = arrays.get(1).map(|a| a.as_boolean().clone());
        let mut out = Vec::with_capacity(names.len());
        for row in 0..names.len() {
            if names.is_null(row) {
                out.push(None);
                continue;
            }
            let name = names.value(row);
            match self.values.get(name) {
                Some(v) => out.push(Some(v)),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|m| m.is_valid(row) && m.value(row)) =>
                {
                    out.push(None)
                }
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )));
                }
            }
        }
        Ok(out)
    }

    fn set(&self, arrays: &[ArrayRef]) -> Result<Vec<Option<String>>> {
        let names = arrays[0].as_string::<i32>();
        let values = arrays[1].as_string::<i32>();
        let local = arrays[2].as_boolean();
        let mut out = Vec::with_capacity(names.len());
        for row in 0..names.len() {
            if names.is_null(row) {
                return Err(DataFusionError::External(Box::new(crate::QueryError::new(
                    SqlState::NullValueNotAllowed,
                    "NULL value not allowed for set_config's name",
                ))));
            }
            let name = setting_key(names.value(row));
            let value = if values.is_null(row) {
                ""
            } else {
                values.value(row)
            };
            check_setting(&name, value).map_err(|e| DataFusionError::External(Box::new(e)))?;
            if !(local.is_valid(row) && local.value(row)) {
                self.values.assign(&name, value);
            }
            out.push(Some(value.to_string()));
        }
        Ok(out)
    }
}

impl ScalarUDFImpl for SettingFunction {
    fn name(&self) -> &str {
        match self.kind {
            SettingKind::Current => "current_setting",
            SettingKind::Set => "set_config",
            SettingKind::User(name) => name,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let SettingKind::User(_) = self.kind {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                self.values.get("session_authorization"),
            )));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = match self.kind {
            SettingKind::Current => self.current(&arrays)?,
            _ => self.set(&arrays)?,
        };
        let array: ArrayRef = Arc::new(arrow::array::StringArray::from(out));
        Ok(ColumnarValue::Array(array))
    }
}

/// `percentile_cont(f) WITHIN GROUP (ORDER BY x)` exactly as PostgreSQL
/// computes it (linear interpolation between the two nearest ranks), also
/// with an array of fractions, which returns an array; and
/// `percentile_disc`, which returns the first value at or past the fraction.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PercentileCont {
    signature: Signature,
    discrete: bool,
}

impl PercentileCont {
    fn new(discrete: bool) -> Self {
        PercentileCont {
            signature: Signature::any(2, Volatility::Immutable),
            discrete,
        }
    }
}

fn fractions(args: &AccumulatorArgs) -> Result<(Vec<f64>, bool)> {
    let bad = || {
        DataFusionError::Plan(
            "percentile_cont needs a constant fraction or array of fractions between 0 and 1"
                .into(),
        )
    };
    let lit = args
        .exprs
        .get(1)
        .and_then(|e| e.downcast_ref::<Literal>())
        .ok_or_else(bad)?;
    let (values, is_list): (Vec<f64>, bool) = match lit.value() {
        ScalarValue::List(list) => {
            let inner = arrow::compute::cast(&list.value(0), &DataType::Float64)?;
            (
                inner
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(f64::NAN))
                    .collect(),
                true,
            )
        }
        v => match v.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(f)) => (vec![f], false),
            _ => return Err(bad()),
        },
    };
    if values.iter().any(|f| !(0.0..=1.0).contains(f)) {
        return Err(DataFusionError::Execution(
            "percentile value must be between 0 and 1".into(),
        ));
    }
    Ok((values, is_list))
}

impl AggregateUDFImpl for PercentileCont {
    fn name(&self) -> &str {
        if self.discrete {
            "percentile_disc"
        } else {
            "percentile_cont"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.get(1) {
            Some(DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)) => {
                DataType::List(float_list_field())
            }
            _ => DataType::Float64,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_values", args.name),
            DataType::List(float_list_field()),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let (fractions, as_list) = fractions(&args)?;
        Ok(Box::new(PercentileAccumulator {
            values: Vec::new(),
            fractions,
            as_list,
            discrete: self.discrete,
            descending: descending(&args),
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }

    /// The rows may come in any order: the values are ranked when the
    /// result is computed, in the direction `WITHIN GROUP` gives.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let (fractions, as_list) = fractions(&args)?;
        Ok(Box::new(PercentileGroups {
            groups: Vec::new(),
            fractions,
            as_list,
            discrete: self.discrete,
            descending: descending(&args),
        }))
    }
}

/// Whether `WITHIN GROUP (ORDER BY x DESC)` ranks the values from the
/// largest, as PostgreSQL does: `percentile_cont(0.1)` is then the value a
/// tenth of the way down from the top.
fn descending(args: &AccumulatorArgs) -> bool {
    args.order_bys.first().is_some_and(|o| o.options.descending)
}

fn float_list_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float64, true))
}

/// One list per group (`None` for a NULL list).
fn lists(values: impl IntoIterator<Item = Option<Vec<f64>>>) -> ArrayRef {
    let mut lengths = Vec::new();
    let mut flat = Vec::new();
    let mut valid = Vec::new();
    for v in values {
        valid.push(v.is_some());
        let v = v.unwrap_or_default();
        lengths.push(v.len());
        flat.extend(v);
    }
    let nulls = valid
        .iter()
        .any(|v| !v)
        .then(|| arrow::buffer::NullBuffer::from(valid));
    Arc::new(ListArray::new(
        float_list_field(),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(Float64Array::from(flat)),
        nulls,
    ))
}

/// The percentiles of `values` (reordered in place) ranked from the
/// smallest, or from the largest if `descending`; `None` when there are
/// none. Only the ranks the fractions need are put in place, by selection.
fn percentiles(
    values: &mut [f64],
    fractions: &[f64],
    discrete: bool,
    descending: bool,
) -> Option<Vec<f64>> {
    if descending {
        // Ranked from the largest, values are ranked as their negations
        // from the smallest; negation is exact, and undone afterwards (a
        // window frame evaluates the same values again).
        let negate = |values: &mut [f64]| values.iter_mut().for_each(|v| *v = -*v);
        negate(values);
        let result = percentiles(values, fractions, discrete, false);
        negate(values);
        return result.map(|r| r.into_iter().map(|v| -v).collect());
    }
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let discrete_rank = |q: f64| {
        ((q * n as f64).ceil() as usize)
            .saturating_sub(1)
            .min(n - 1)
    };
    let mut ranks: Vec<usize> = fractions
        .iter()
        .flat_map(|q| match discrete {
            true => [discrete_rank(*q); 2],
            false => interpolation_ranks(n, *q),
        })
        .collect();
    lookout_monitor::stats::select_ranks(values, &mut ranks);
    Some(
        fractions
            .iter()
            .map(|q| match discrete {
                true => values[discrete_rank(*q)],
                false => interpolate(values, *q),
            })
            .collect(),
    )
}

/// The two ranks the q-quantile of `n` values interpolates between.
fn interpolation_ranks(n: usize, q: f64) -> [usize; 2] {
    let pos = q * (n - 1) as f64;
    [pos.floor() as usize, pos.ceil() as usize]
}

/// One result per group: an array of percentiles, or the single one.
fn result_array(results: impl Iterator<Item = Option<Vec<f64>>>, as_list: bool) -> ArrayRef {
    if as_list {
        lists(results)
    } else {
        Arc::new(Float64Array::from_iter(
            results.map(|r| r.and_then(|v| v.first().copied())),
        ))
    }
}

/// All groups' values in one place: rows are appended straight to their
/// group, without the per-group slicing of the generic adapter.
#[derive(Debug)]
struct PercentileGroups {
    groups: Vec<Vec<f64>>,
    fractions: Vec<f64>,
    as_list: bool,
    discrete: bool,
    descending: bool,
}

impl GroupsAccumulator for PercentileGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let floats = arrow::compute::cast(&values[0], &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        if opt_filter.is_none() && floats.null_count() == 0 {
            // Rows of one group come in runs (files are sorted by time and
            // grouped by time bucket): each run is copied whole.
            let values = floats.values();
            for (group, rows) in runs(group_indices) {
                self.groups[group].extend_from_slice(&values[rows]);
            }
            return Ok(());
        }
        for (row, group) in group_indices.iter().enumerate() {
            let selected = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if selected && floats.is_valid(row) {
                self.groups[*group].push(floats.value(row));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = emit_to.take_needed(&mut self.groups);
        let results = taken
            .iter_mut()
            .map(|values| percentiles(values, &self.fractions, self.discrete, self.descending));
        Ok(result_array(results, self.as_list))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = emit_to.take_needed(&mut self.groups);
        Ok(vec![lists(taken.into_iter().map(Some))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let states = values[0].as_list::<i32>();
        let inner = states.values().as_primitive::<Float64Type>();
        let offsets = states.value_offsets();
        for (row, group) in group_indices.iter().enumerate() {
            if states.is_null(row) {
                continue;
            }
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let target = &mut self.groups[*group];
            if inner.null_count() == 0 {
                target.extend_from_slice(&inner.values()[start..end]);
            } else {
                target.extend(
                    (start..end)
                        .filter(|i| inner.is_valid(*i))
                        .map(|i| inner.value(i)),
                );
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let floats = arrow::compute::cast(&values[0], &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        let rows = (0..floats.len()).map(|row| {
            let selected = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            Some(if selected && floats.is_valid(row) {
                vec![floats.value(row)]
            } else {
                Vec::new()
            })
        });
        Ok(vec![lists(rows)])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .groups
                .iter()
                .map(|g| g.capacity() * 8 + 24)
                .sum::<usize>()
    }
}

/// The runs of equal ids in `group_indices`: each group with its rows.
fn runs(group_indices: &[usize]) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let group = *group_indices.get(start)?;
        let length = group_indices[start..]
            .iter()
            .take_while(|g| **g == group)
            .count();
        let rows = start..start + length;
        start += length;
        Some((group, rows))
    })
}

#[derive(Debug)]
struct PercentileAccumulator {
    values: Vec<f64>,
    fractions: Vec<f64>,
    as_list: bool,
    discrete: bool,
    descending: bool,
}

impl PercentileAccumulator {
    fn push(&mut self, array: &ArrayRef) -> Result<()> {
        let floats = arrow::compute::cast(array, &DataType::Float64)?;
        self.values
            .extend(floats.as_primitive::<Float64Type>().iter().flatten());
        Ok(())
    }
}

/// The q-quantile with Postgres's interpolation, from values whose
/// [`interpolation_ranks`] are in place (sorted ones are).
fn interpolate(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let [lo, hi] = interpolation_ranks(sorted.len(), q);
    if lo == hi {
        sorted[lo]
    } else {
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    }
}

impl Accumulator for PercentileAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.push(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.push(&lists.value(i))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = lists(std::iter::once(Some(std::mem::take(&mut self.values))));
        Ok(vec![ScalarValue::try_from_array(&values, 0)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let result = percentiles(
            &mut self.values,
            &self.fractions,
            self.discrete,
            self.descending,
        );
        ScalarValue::try_from_array(&result_array(std::iter::once(result), self.as_list), 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * 8 + self.fractions.capacity() * 8
    }
}

/// `mode() WITHIN GROUP (ORDER BY x)`: the most frequent value, the
/// smallest of equally frequent ones.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mode {
    signature: Signature,
}

impl Mode {
    fn new() -> Self {
        Mode {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for Mode {
    fn name(&self) -> &str {
        "mode"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(
            args.input_fields[0].data_type().clone(),
            true,
        ));
        Ok(vec![Arc::new(Field::new(
            format!("{}_values", args.name),
            DataType::List(item),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ModeAccumulator {
            data_type: args.exprs[0].data_type(args.schema)?,
            counts: std::collections::HashMap::new(),
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct ModeAccumulator {
    data_type: DataType,
    counts: std::collections::HashMap<ScalarValue, u64>,
}

impl ModeAccumulator {
    fn add(&mut self, array: &ArrayRef) -> Result<()> {
        for i in 0..array.len() {
            if array.is_valid(i) {
                *self
                    .counts
                    .entry(ScalarValue::try_from_array(array, i)?)
                    .or_default() += 1;
            }
        }
        Ok(())
    }
}

impl Accumulator for ModeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.add(&lists.value(i))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut values = Vec::new();
        for (value, n) in &self.counts {
            values.extend(std::iter::repeat_n(value.clone(), *n as usize));
        }
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &self.data_type,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let best = self.counts.iter().max_by(|(a, n), (b, m)| {
            n.cmp(m)
                .then_with(|| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal))
        });
        match best {
            Some((value, _)) => Ok(value.clone()),
            None => ScalarValue::try_from(&self.data_type),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.keys().map(|k| k.size() + 8).sum::<usize>()
    }
}

/// `width_bucket(x, low, high, count)`: the bucket of `x` among `count`
/// equal buckets from `low` to `high`; 0 below, `count + 1` at or above.
fn width_bucket() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::create_udf;
    create_udf(
        "width_bucket",
        vec![
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
            DataType::Int64,
        ],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let x = arrays[0].as_primitive::<Float64Type>();
            let low = arrays[1].as_primitive::<Float64Type>();
            let high = arrays[2].as_primitive::<Float64Type>();
            let count = arrays[3].as_primitive::<arrow::datatypes::Int64Type>();
            let mut out = arrow::array::Int32Builder::with_capacity(x.len());
            for i in 0..x.len() {
                if x.is_null(i) || low.is_null(i) || high.is_null(i) || count.is_null(i) {
                    out.append_null();
                    continue;
                }
                let (x, lo, hi) = (x.value(i), low.value(i), high.value(i));
                let n = i32::try_from(count.value(i)).unwrap_or(0);
                if n <= 0 {
                    return Err(DataFusionError::Execution(
                        "count must be greater than zero".into(),
                    ));
                }
                if lo == hi {
                    return Err(DataFusionError::Execution(
                        "lower bound cannot equal upper bound".into(),
                    ));
                }
                let bucket = if lo < hi {
                    if x < lo {
                        0
                    } else if x >= hi {
                        n + 1
                    } else {
                        ((x - lo) / (hi - lo) * f64::from(n)).floor() as i32 + 1
                    }
                } else if x > lo {
                    0
                } else if x <= hi {
                    n + 1
                } else {
                    ((lo - x) / (lo - hi) * f64::from(n)).floor() as i32 + 1
                };
                out.append_value(bucket);
            }
            let array: ArrayRef = Arc::new(out.finish());
            if scalar {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            } else {
                Ok(ColumnarValue::Array(array))
            }
        }),
    )
}

/// Refuses values Lookout cannot take: a `lookout.now` that is not a
/// timestamp, a time zone other than UTC.
pub(crate) fn check_setting(key: &str, value: &str) -> crate::Result<()> {
    let is_default = value.eq_ignore_ascii_case("default") || value.is_empty();
    match key {
        "lookout.now" if !is_default && crate::copy::parse_timestamp_micros(value).is_none() => {
            Err(crate::QueryError::new(
                SqlState::InvalidDatetimeFormat,
                format!("invalid value for lookout.now: \"{value}\" (expected a timestamp)"),
            ))
        }
        "statement_timeout" => crate::interrupt::parse(value).map(|_| ()),
        "time zone" | "timezone" => {
            let utc = [
                "utc",
                "etc/utc",
                "gmt",
                "z",
                "+00",
                "+00:00",
                "0",
                "zulu",
                "universal",
                "default",
            ];
            if utc.contains(&value.to_ascii_lowercase().as_str()) {
                Ok(())
            } else {
                Err(crate::QueryError::new(
                    SqlState::InvalidParameterValue,
                    format!(
                        "Lookout shows every timestamp in UTC; time zone \"{value}\" is not supported"
                    ),
                ))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_postgres() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(interpolate(&v, 0.5), 2.5);
        assert_eq!(interpolate(&v, 0.0), 1.0);
        assert_eq!(interpolate(&v, 1.0), 4.0);
        assert!((interpolate(&v, 0.1) - 1.3).abs() < 1e-12);
    }

    #[test]
    fn runs_of_groups_are_added_whole_as_row_by_row() {
        assert_eq!(
            runs(&[2, 2, 0, 1, 1, 1, 2]).collect::<Vec<_>>(),
            vec![(2, 0..2), (0, 2..3), (1, 3..6), (2, 6..7)]
        );
        assert_eq!(runs(&[]).count(), 0);
        let values: ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values(0..7));
        let groups = [2, 2, 0, 1, 1, 1, 2];
        let states = [None, Some(BooleanArray::from(vec![true; 7]))].map(|filter| {
            let mut acc = PercentileGroups {
                groups: Vec::new(),
                fractions: vec![0.5],
                as_list: false,
                discrete: false,
                descending: false,
            };
            acc.update_batch(std::slice::from_ref(&values), &groups, filter.as_ref(), 3)
                .unwrap();
            acc.groups
        });
        assert_eq!(
            states[0],
            vec![vec![2.0], vec![3.0, 4.0, 5.0], vec![0.0, 1.0, 6.0]]
        );
        assert_eq!(states[0], states[1]);
    }

    #[test]
    fn selected_percentiles_are_those_of_the_sorted_values() {
        let fractions = [0.0, 0.01, 0.1, 0.25, 0.5, 0.5, 0.95, 0.99, 1.0];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for case in 0..200 {
            let n = 1 + (case * 7) % 300;
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 40) as f64 / 4.0 - 3.0
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            for discrete in [false, true] {
                let expected: Vec<f64> = fractions
                    .iter()
                    .map(|q| match discrete {
                        true => {
                            sorted[((q * n as f64).ceil() as usize)
                                .saturating_sub(1)
                                .min(n - 1)]
                        }
                        false => interpolate(&sorted, *q),
                    })
                    .collect();
                let got = percentiles(&mut values.clone(), &fractions, discrete, false);
                assert_eq!(got, Some(expected), "case {case}, discrete {discrete}");
            }
        }
    }
}
