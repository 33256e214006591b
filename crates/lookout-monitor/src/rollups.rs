//! Sketch and score aggregates, and the scalar functions that read sketches
//! and score states back.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::score::ScoreState;
use crate::sketch::{self, QuantileSketch};
use crate::udf::{Accumulators, Aggregate, Spec, binary, float, selected};

fn decode_sketch(bytes: &[u8]) -> Result<QuantileSketch> {
    QuantileSketch::decode(bytes).map_err(|e| DataFusionError::Execution(e.to_string()))
}

/// What a sketch aggregate returns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SketchOutput {
    /// The sketch itself, as BYTEA.
    Sketch,
    /// One quantile read from it.
    Quantile(f64),
}

/// Builds sketches from values (`quantile_sketch`, `latency_quantile`) or
/// merges sketches (`sketch_merge`).
#[derive(Debug)]
pub(crate) struct SketchAggregate {
    output: SketchOutput,
    input_is_sketch: bool,
    /// The second argument is each value's weight.
    weighted: bool,
}

pub(crate) fn build_sketch(_spec: &Spec, args: &AccumulatorArgs) -> Result<Box<dyn Accumulators>> {
    Ok(Box::new(SketchAggregate {
        output: SketchOutput::Sketch,
        input_is_sketch: false,
        weighted: args.exprs.len() > 1,
    }))
}

pub(crate) fn build_sketch_merge(
    _spec: &Spec,
    _args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    Ok(Box::new(SketchAggregate {
        output: SketchOutput::Sketch,
        input_is_sketch: true,
        weighted: false,
    }))
}

pub(crate) fn build_latency_quantile(
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    quantile_of(spec, args, 1, false)
}

pub(crate) fn build_weighted_quantile(
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    quantile_of(spec, args, 2, true)
}

/// A sketch aggregate returning the quantile given by argument `q_at`.
fn quantile_of(
    spec: &Spec,
    args: &AccumulatorArgs,
    q_at: usize,
    weighted: bool,
) -> Result<Box<dyn Accumulators>> {
    let q = spec.constant(args, q_at, None)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(spec.error(format!("q must be between 0 and 1, got {q}")));
    }
    Ok(Box::new(SketchAggregate {
        output: SketchOutput::Quantile(q),
        input_is_sketch: false,
        weighted,
    }))
}

impl Aggregate for SketchAggregate {
    type State = QuantileSketch;

    fn new_state(&self) -> QuantileSketch {
        QuantileSketch::default()
    }

    fn update(
        &self,
        states: &mut [QuantileSketch],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        if self.input_is_sketch {
            let sketches = binary(&args[0])?;
            for (row, group) in groups.iter().enumerate() {
                if selected(filter, row) && sketches.is_valid(row) {
                    states[*group].merge(&decode_sketch(sketches.value(row))?);
                }
            }
        } else {
            let values = args[0].as_primitive::<Float64Type>();
            // A second numeric argument is the row's weight (the rows a
            // sampled row stands for); NULL or non-positive weights count nothing.
            let weights = args
                .get(1)
                .filter(|_| self.weighted)
                .map(|w| w.as_primitive::<Float64Type>());
            for (row, group) in groups.iter().enumerate() {
                if !selected(filter, row) || !values.is_valid(row) {
                    continue;
                }
                match weights {
                    Some(w) if w.is_valid(row) => {
                        states[*group].add_weighted(values.value(row), w.value(row))
                    }
                    Some(_) => {}
                    None => states[*group].add(values.value(row)),
                }
            }
        }
        Ok(())
    }

    fn merge(&self, state: &mut QuantileSketch, encoded: &[u8]) -> Result<()> {
        state.merge(&decode_sketch(encoded)?);
        Ok(())
    }

    fn encode(&self, state: &QuantileSketch) -> Vec<u8> {
        state.encode()
    }

    fn evaluate(&self, state: &mut QuantileSketch) -> Result<ScalarValue> {
        Ok(match self.output {
            SketchOutput::Sketch => {
                ScalarValue::Binary((state.count() > 0.0).then(|| state.encode()))
            }
            SketchOutput::Quantile(q) => float(state.quantile(q)),
        })
    }

    fn size(&self, state: &QuantileSketch) -> usize {
        state.heap_size()
    }
}

/// What a score aggregate returns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScoreOutput {
    PassRate,
    PassRateLow,
    PassRateHigh,
    Coverage,
    State,
}

/// Accumulates evaluator scores (or merges score states, `score_merge`).
#[derive(Debug)]
pub(crate) struct ScoreAggregate {
    output: ScoreOutput,
    threshold: f64,
    input_is_state: bool,
}

/// Default pass threshold of `score_state` and `score_coverage`.
const DEFAULT_THRESHOLD: f64 = 0.5;

pub(crate) fn build_score(
    output: ScoreOutput,
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    let threshold = match output {
        ScoreOutput::Coverage => DEFAULT_THRESHOLD,
        ScoreOutput::State => spec.constant(args, 1, Some(DEFAULT_THRESHOLD))?,
        _ => spec.constant(args, 1, None)?,
    };
    Ok(Box::new(ScoreAggregate {
        output,
        threshold,
        input_is_state: false,
    }))
}

pub(crate) fn build_score_merge(
    _spec: &Spec,
    _args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    Ok(Box::new(ScoreAggregate {
        output: ScoreOutput::State,
        threshold: DEFAULT_THRESHOLD,
        input_is_state: true,
    }))
}

impl Aggregate for ScoreAggregate {
    type State = ScoreState;

    fn new_state(&self) -> ScoreState {
        ScoreState::new(self.threshold)
    }

    fn update(
        &self,
        states: &mut [ScoreState],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        if self.input_is_state {
            let encoded = binary(&args[0])?;
            for (row, group) in groups.iter().enumerate() {
                if selected(filter, row) && encoded.is_valid(row) {
                    states[*group].merge(&ScoreState::decode(encoded.value(row))?)?;
                }
            }
        } else {
            let scores = args[0].as_primitive::<Float64Type>();
            for (row, group) in groups.iter().enumerate() {
                if selected(filter, row) {
                    states[*group].add(scores.is_valid(row).then(|| scores.value(row)));
                }
            }
        }
        Ok(())
    }

    fn merge(&self, state: &mut ScoreState, encoded: &[u8]) -> Result<()> {
        state.merge(&ScoreState::decode(encoded)?)
    }

    fn encode(&self, state: &ScoreState) -> Vec<u8> {
        state.encode()
    }

    fn evaluate(&self, state: &mut ScoreState) -> Result<ScalarValue> {
        Ok(match self.output {
            ScoreOutput::PassRate => float(state.pass_rate()),
            ScoreOutput::PassRateLow => float(state.pass_rate_interval().map(|i| i.0)),
            ScoreOutput::PassRateHigh => float(state.pass_rate_interval().map(|i| i.1)),
            ScoreOutput::Coverage => float(state.coverage()),
            ScoreOutput::State => ScalarValue::Binary((state.rows > 0.0).then(|| state.encode())),
        })
    }

    fn size(&self, _state: &ScoreState) -> usize {
        std::mem::size_of::<ScoreState>()
    }
}

/// Row `row` of a BYTEA column as a sketch; `None` when NULL.
fn sketch_at(array: &BinaryArray, row: usize) -> Result<Option<QuantileSketch>> {
    if array.is_null(row) {
        return Ok(None);
    }
    decode_sketch(array.value(row)).map(Some)
}

fn floats(array: &ArrayRef) -> &Float64Array {
    array.as_primitive::<Float64Type>()
}

fn rows(args: &[ArrayRef]) -> usize {
    args.first().map_or(0, |a| a.len())
}

/// `sketch_quantile(sketch, q)`.
pub(crate) fn sketch_quantile(spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    let sketches = binary(&args[0])?;
    let qs = floats(&args[1]);
    let mut out = Vec::with_capacity(rows(args));
    for row in 0..rows(args) {
        let Some(s) = sketch_at(sketches, row)? else {
            out.push(None);
            continue;
        };
        if qs.is_null(row) {
            out.push(None);
            continue;
        }
        let q = qs.value(row);
        if !(0.0..=1.0).contains(&q) {
            return Err(spec.error(format!("q must be between 0 and 1, got {q}")));
        }
        out.push(s.quantile(q));
    }
    Ok(Arc::new(Float64Array::from(out)))
}

/// `sketch_count(sketch)`.
pub(crate) fn sketch_count(_spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    let sketches = binary(&args[0])?;
    let out = (0..rows(args))
        .map(|row| Ok(sketch_at(sketches, row)?.map(|s| s.count())))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Float64Array::from(out)))
}

/// Which sketch drift a scalar computes.
#[derive(Debug, Clone, Copy)]
enum SketchDrift {
    Psi,
    Js,
    Ks,
}

fn sketch_drift(spec: &Spec, args: &[ArrayRef], measure: SketchDrift) -> Result<ArrayRef> {
    let (base, cur) = (binary(&args[0])?, binary(&args[1])?);
    let bins: Option<&Int64Array> = args.get(2).map(|a| a.as_primitive::<Int64Type>());
    let mut out = Vec::with_capacity(rows(args));
    for row in 0..rows(args) {
        let (Some(b), Some(c)) = (sketch_at(base, row)?, sketch_at(cur, row)?) else {
            out.push(None);
            continue;
        };
        let bins = match bins {
            Some(a) if a.is_null(row) => {
                out.push(None);
                continue;
            }
            Some(a) => a.value(row),
            None => 10,
        };
        if !(2..=1000).contains(&bins) {
            return Err(spec.error(format!(
                "bins must be an integer from 2 to 1000, got {bins}"
            )));
        }
        let value = match measure {
            SketchDrift::Psi => sketch::psi(&b, &c, bins as usize),
            SketchDrift::Js => sketch::js_distance(&b, &c, bins as usize),
            SketchDrift::Ks => sketch::ks_statistic(&b, &c).map(|(d, _)| d),
        };
        out.push(value.filter(|v| !v.is_nan()));
    }
    Ok(Arc::new(Float64Array::from(out)))
}

pub(crate) fn sketch_psi(spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    sketch_drift(spec, args, SketchDrift::Psi)
}

pub(crate) fn sketch_js(spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    sketch_drift(spec, args, SketchDrift::Js)
}

pub(crate) fn sketch_ks(spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    sketch_drift(spec, args, SketchDrift::Ks)
}

fn score_accessor(args: &[ArrayRef], read: fn(&ScoreState) -> Option<f64>) -> Result<ArrayRef> {
    let states = binary(&args[0])?;
    let out = (0..rows(args))
        .map(|row| {
            if states.is_null(row) {
                return Ok(None);
            }
            Ok(read(&ScoreState::decode(states.value(row))?).filter(|v| !v.is_nan()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Float64Array::from(out)))
}

pub(crate) fn score_state_mean(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, ScoreState::mean)
}

pub(crate) fn score_state_stddev(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, ScoreState::stddev)
}

pub(crate) fn score_state_count(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, |s| Some(s.scored))
}

pub(crate) fn score_state_coverage(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, ScoreState::coverage)
}

pub(crate) fn score_state_pass_rate(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, ScoreState::pass_rate)
}

pub(crate) fn score_state_pass_rate_low(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, |s| s.pass_rate_interval().map(|i| i.0))
}

pub(crate) fn score_state_pass_rate_high(_: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    score_accessor(args, |s| s.pass_rate_interval().map(|i| i.1))
}

/// The BYTEA type sketches and score states are stored as.
pub(crate) const BYTES: DataType = DataType::Binary;
