//! Drift of embeddings between a baseline and a current window: the cosine
//! distance between the windows' mean embeddings, and the maximum mean
//! discrepancy (MMD) with a permutation p-value on bounded samples.
//!
//! Every embedding of a group must have the same number of dimensions. A
//! window keeps the sum of its embeddings and, for MMD, a bounded sample:
//! the rows with the smallest hash of their values, which two partial states
//! merge into exactly (the smallest `k` of a union are the smallest `k` of
//! the parts' smallest `k`). `docs/monitoring.md` states the definitions;
//! `tests/data/monitor_references.py` computes them with numpy and scipy.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array};
use arrow::datatypes::Float64Type;
use arrow::error::ArrowError;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::udf::{Accumulators, Aggregate, Spec, binary, float, selected};

/// The largest number of dimensions an embedding may have (pgvector's limit).
pub(crate) const MAX_DIMENSIONS: usize = 16_000;
/// Rows each window keeps for MMD unless the call says otherwise.
const DEFAULT_SAMPLE: usize = 500;
/// The most rows a window may keep for MMD: the kernel matrix of the pooled
/// sample is `(2 * MAX_SAMPLE)²` doubles (32 MB) per group.
const MAX_SAMPLE: usize = 1_000;
/// Permutations of the MMD test unless the call says otherwise.
const DEFAULT_PERMUTATIONS: usize = 200;
/// The most permutations a call may ask for.
const MAX_PERMUTATIONS: usize = 2_000;
/// The seed of both the sample hash and the permutations, so a result is a
/// pure function of the rows.
const SEED: u64 = 0x4C4F_4F4B_4F55_5421;
/// The first byte of an encoded state.
const FORMAT_VERSION: u8 = 1;

/// What an embedding aggregate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbeddingOutput {
    /// `drift_embedding_cosine`: cosine distance of the windows' means.
    Cosine,
    /// `drift_embedding_mmd`: the unbiased MMD² estimate.
    Mmd,
    /// `drift_embedding_mmd_pvalue`: the permutation test's p-value.
    MmdPvalue,
    /// `embedding_state` / `embedding_merge`: the mean state, as BYTEA.
    State,
}

/// One window's embeddings: their count and sum, and a bounded sample.
#[derive(Debug, Clone, Default)]
struct Window {
    count: f64,
    sum: Vec<f64>,
    /// (hash, values) of sampled rows; pruned to the sample size lazily.
    sample: Vec<(u64, Vec<f64>)>,
}

impl Window {
    fn add(&mut self, values: &[f64], keep: usize) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; values.len()];
        }
        for (s, v) in self.sum.iter_mut().zip(values) {
            *s += v;
        }
        self.count += 1.0;
        if keep > 0 {
            self.sample.push((sample_hash(values), values.to_vec()));
            if self.sample.len() >= 2 * keep {
                prune(&mut self.sample, keep);
            }
        }
    }

    fn absorb(&mut self, other: Window, keep: usize) {
        if self.sum.is_empty() {
            self.sum = other.sum;
        } else {
            for (s, v) in self.sum.iter_mut().zip(&other.sum) {
                *s += v;
            }
        }
        self.count += other.count;
        if keep > 0 {
            self.sample.extend(other.sample);
            if self.sample.len() >= 2 * keep {
                prune(&mut self.sample, keep);
            }
        }
    }

    fn mean(&self) -> Option<Vec<f64>> {
        (self.count > 0.0).then(|| self.sum.iter().map(|s| s / self.count).collect())
    }

    /// The sampled embeddings in lexicographic order of their values (the
    /// order the permutations are drawn over).
    fn sampled(&self, keep: usize) -> Vec<&[f64]> {
        let mut kept: Vec<&(u64, Vec<f64>)> = self.sample.iter().collect();
        kept.sort_by(|a, b| by_hash(a, b));
        kept.truncate(keep);
        let mut values: Vec<&[f64]> = kept.into_iter().map(|(_, v)| v.as_slice()).collect();
        values.sort_by(|a, b| lexicographic(a, b));
        values
    }
}

/// The state of one group: the embeddings' dimension (0 before the first)
/// and the baseline and current windows (a state function uses the first).
#[derive(Debug, Clone, Default)]
pub(crate) struct EmbeddingState {
    dims: usize,
    windows: [Window; 2],
}

impl EmbeddingState {
    fn check_dims(&mut self, dims: usize) -> Result<()> {
        if dims == 0 {
            return Err(data_error("an embedding must have at least one dimension"));
        }
        if dims > MAX_DIMENSIONS {
            return Err(data_error(&format!(
                "an embedding has {dims} dimensions, more than the {MAX_DIMENSIONS} allowed"
            )));
        }
        if self.dims == 0 {
            self.dims = dims;
        } else if self.dims != dims {
            return Err(data_error(&format!(
                "embedding dimensions differ: {} and {dims}",
                self.dims
            )));
        }
        Ok(())
    }

    fn absorb(&mut self, other: EmbeddingState, keep: usize) -> Result<()> {
        if other.dims == 0 {
            return Ok(());
        }
        self.check_dims(other.dims)?;
        let [base, cur] = other.windows;
        self.windows[0].absorb(base, keep);
        self.windows[1].absorb(cur, keep);
        Ok(())
    }

    /// The state as bytes: version, dimensions, then per window its count,
    /// sum and sample (hash and values of each kept row), little-endian.
    pub(crate) fn encode(&self, keep: usize) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        out.extend_from_slice(&(self.dims as u32).to_le_bytes());
        for window in &self.windows {
            out.extend_from_slice(&window.count.to_le_bytes());
            for i in 0..self.dims {
                let s = window.sum.get(i).copied().unwrap_or(0.0);
                out.extend_from_slice(&s.to_le_bytes());
            }
            let mut kept: Vec<&(u64, Vec<f64>)> = window.sample.iter().collect();
            kept.sort_by(|a, b| by_hash(a, b));
            kept.truncate(keep);
            out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
            for (hash, values) in kept {
                out.extend_from_slice(&hash.to_le_bytes());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out
    }

    /// Reads [`EmbeddingState::encode`]'s bytes, refusing anything else.
    pub(crate) fn decode(bytes: &[u8]) -> Result<EmbeddingState> {
        let bad = || data_error("invalid embedding state: not made by embedding_state");
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(1).ok_or_else(bad)? != [FORMAT_VERSION] {
            return Err(bad());
        }
        let dims = reader.u32().ok_or_else(bad)? as usize;
        if dims > MAX_DIMENSIONS {
            return Err(bad());
        }
        let mut windows: [Window; 2] = Default::default();
        for window in &mut windows {
            window.count = reader.f64().ok_or_else(bad)?;
            if window.count.is_nan() || window.count < 0.0 {
                return Err(bad());
            }
            window.sum = reader.f64s(dims).ok_or_else(bad)?;
            let kept = reader.u32().ok_or_else(bad)? as usize;
            // Each kept row takes 8 + 8 * dims bytes: a count larger than
            // the bytes left is refused before anything is allocated.
            if kept > reader.left() / (8 + 8 * dims) {
                return Err(bad());
            }
            for _ in 0..kept {
                let hash = reader.u64().ok_or_else(bad)?;
                window
                    .sample
                    .push((hash, reader.f64s(dims).ok_or_else(bad)?));
            }
        }
        if reader.left() != 0 || dims == 0 && windows.iter().any(|w| w.count > 0.0) {
            return Err(bad());
        }
        Ok(EmbeddingState { dims, windows })
    }

    /// The number of embeddings in the first window.
    pub(crate) fn count(&self) -> f64 {
        self.windows[0].count
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn f64s(&mut self, n: usize) -> Option<Vec<f64>> {
        if n > self.left() / 8 {
            return None;
        }
        (0..n).map(|_| self.f64()).collect()
    }
}

/// A data exception (SQLSTATE 22000) with `message`.
fn data_error(message: &str) -> DataFusionError {
    DataFusionError::ArrowError(
        Box::new(ArrowError::InvalidArgumentError(message.to_string())),
        None,
    )
}

/// One step of SplitMix64: the next state and its output.
fn splitmix64(state: u64) -> (u64, u64) {
    let next = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (next, z ^ (z >> 31))
}

/// The hash ranking a row for the sample: SplitMix64 over its values' bits.
fn sample_hash(values: &[f64]) -> u64 {
    values
        .iter()
        .fold(SEED, |h, v| splitmix64(h ^ v.to_bits()).1)
}

fn lexicographic(a: &[f64], b: &[f64]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn by_hash(a: &(u64, Vec<f64>), b: &(u64, Vec<f64>)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| lexicographic(&a.1, &b.1))
}

/// Keeps the `keep` rows with the smallest (hash, values).
fn prune(sample: &mut Vec<(u64, Vec<f64>)>, keep: usize) {
    if sample.len() > keep {
        sample.select_nth_unstable_by(keep, by_hash);
        sample.truncate(keep);
    }
}

/// Cosine distance between two vectors, as scipy's `distance.cosine`
/// computes it (clipped to [0, 2]); None when either has zero length.
pub(crate) fn cosine_distance(u: &[f64], v: &[f64]) -> Option<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (uv, uu, vv) = (dot(u, v), dot(u, u), dot(v, v));
    if uu == 0.0 || vv == 0.0 {
        return None;
    }
    Some((1.0 - uv / (uu * vv).sqrt()).clamp(0.0, 2.0))
}

/// The unbiased MMD² estimate between `x` and `y` with the Gaussian kernel
/// `exp(-‖a - b‖² / h)`, `h` the median squared distance between distinct
/// rows of the pooled sample (1 when that is 0), and the p-value of a
/// permutation test with `permutations` draws (None when none are asked).
/// Both need at least two rows on each side.
pub(crate) fn mmd_test(
    x: &[&[f64]],
    y: &[&[f64]],
    permutations: usize,
) -> Option<(f64, Option<f64>)> {
    let (m, n) = (x.len(), y.len());
    if m < 2 || n < 2 {
        return None;
    }
    let pooled: Vec<&[f64]> = x.iter().chain(y).copied().collect();
    let total = m + n;
    // Upper triangle, row-major: (i, j) with i < j.
    let mut kernel = Vec::with_capacity(total * (total - 1) / 2);
    for i in 0..total {
        for j in i + 1..total {
            let d2: f64 = pooled[i]
                .iter()
                .zip(pooled[j])
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            kernel.push(d2);
        }
    }
    let bandwidth = median(&kernel).filter(|h| *h > 0.0).unwrap_or(1.0);
    for k in &mut kernel {
        *k = (-*k / bandwidth).exp();
    }
    let statistic = |in_x: &[bool]| {
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        let mut at = 0;
        for i in 0..total {
            for j in i + 1..total {
                let k = kernel[at];
                at += 1;
                match (in_x[i], in_x[j]) {
                    (true, true) => xx += k,
                    (false, false) => yy += k,
                    _ => xy += k,
                }
            }
        }
        let (m, n) = (m as f64, n as f64);
        2.0 * xx / (m * (m - 1.0)) + 2.0 * yy / (n * (n - 1.0)) - 2.0 * xy / (m * n)
    };
    let mut in_x: Vec<bool> = (0..total).map(|i| i < m).collect();
    let observed = statistic(&in_x);
    if permutations == 0 {
        return Some((observed, None));
    }
    let mut order: Vec<usize> = (0..total).collect();
    let mut rng = SEED;
    let mut as_large = 0usize;
    for _ in 0..permutations {
        order.sort_unstable();
        for i in (1..total).rev() {
            let (next, draw) = splitmix64(rng);
            rng = next;
            order.swap(i, (draw % (i as u64 + 1)) as usize);
        }
        for (position, &row) in order.iter().enumerate() {
            in_x[row] = position < m;
        }
        if statistic(&in_x) >= observed {
            as_large += 1;
        }
    }
    let p = (1 + as_large) as f64 / (1 + permutations) as f64;
    Some((observed, Some(p)))
}

/// numpy's median: the middle value, or the mean of the two middle ones.
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    let (_, upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        return Some(upper);
    }
    let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lower + upper) / 2.0)
}

/// Builds or merges embedding windows and reads one result off them.
#[derive(Debug)]
pub(crate) struct EmbeddingAggregate {
    output: EmbeddingOutput,
    /// Rows each window keeps for MMD (0: means only).
    sample: usize,
    permutations: usize,
    input_is_state: bool,
}

fn bounded(
    spec: &Spec,
    args: &AccumulatorArgs,
    index: usize,
    default: usize,
    max: usize,
    what: &str,
) -> Result<usize> {
    let value = spec.constant(args, index, Some(default as f64))?;
    if value.fract() != 0.0 || value < 2.0 || value > max as f64 {
        return Err(spec.error(format!(
            "{what} must be an integer from 2 to {max}, got {value}"
        )));
    }
    Ok(value as usize)
}

/// `drift_embedding_cosine`, `drift_embedding_mmd`, `drift_embedding_mmd_pvalue`.
pub(crate) fn build_drift(
    output: EmbeddingOutput,
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    let (sample, permutations) = match output {
        EmbeddingOutput::Mmd => (
            bounded(spec, args, 2, DEFAULT_SAMPLE, MAX_SAMPLE, "sample")?,
            0,
        ),
        EmbeddingOutput::MmdPvalue => (
            bounded(spec, args, 3, DEFAULT_SAMPLE, MAX_SAMPLE, "sample")?,
            bounded(
                spec,
                args,
                2,
                DEFAULT_PERMUTATIONS,
                MAX_PERMUTATIONS,
                "permutations",
            )?,
        ),
        _ => (0, 0),
    };
    Ok(Box::new(EmbeddingAggregate {
        output,
        sample,
        permutations,
        input_is_state: false,
    }))
}

/// `embedding_state(embedding)`.
pub(crate) fn build_state(_spec: &Spec, _args: &AccumulatorArgs) -> Result<Box<dyn Accumulators>> {
    Ok(Box::new(EmbeddingAggregate {
        output: EmbeddingOutput::State,
        sample: 0,
        permutations: 0,
        input_is_state: false,
    }))
}

/// `embedding_merge(state)`.
pub(crate) fn build_merge(_spec: &Spec, _args: &AccumulatorArgs) -> Result<Box<dyn Accumulators>> {
    Ok(Box::new(EmbeddingAggregate {
        output: EmbeddingOutput::State,
        sample: 0,
        permutations: 0,
        input_is_state: true,
    }))
}

impl Aggregate for EmbeddingAggregate {
    type State = EmbeddingState;

    fn new_state(&self) -> EmbeddingState {
        EmbeddingState::default()
    }

    fn update(
        &self,
        states: &mut [EmbeddingState],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        if self.input_is_state {
            let encoded = binary(&args[0])?;
            for (row, group) in groups.iter().enumerate() {
                if selected(filter, row) && encoded.is_valid(row) {
                    let other = EmbeddingState::decode(encoded.value(row))?;
                    states[*group].absorb(other, 0)?;
                }
            }
            return Ok(());
        }
        let lists = args[0].as_list_opt::<i32>().ok_or_else(|| {
            DataFusionError::Internal(format!("expected float8[], got {}", args[0].data_type()))
        })?;
        let items = lists.values().as_primitive::<Float64Type>();
        let offsets = lists.value_offsets();
        let current = match args.get(1) {
            Some(a) if self.output != EmbeddingOutput::State => {
                Some(a.as_boolean_opt().ok_or_else(|| {
                    DataFusionError::Internal("is_current must be BOOLEAN".into())
                })?)
            }
            _ => None,
        };
        for (row, group) in groups.iter().enumerate() {
            if !selected(filter, row) || lists.is_null(row) {
                continue;
            }
            let window = match current {
                Some(c) if c.is_null(row) => continue,
                Some(c) => usize::from(c.value(row)),
                None => 0,
            };
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            if items.null_count() > 0 && (start..end).any(|i| items.is_null(i)) {
                return Err(DataFusionError::ArrowError(
                    Box::new(ArrowError::InvalidArgumentError(
                        "an embedding must not contain NULL elements".into(),
                    )),
                    None,
                ));
            }
            let state = &mut states[*group];
            state.check_dims(end - start)?;
            state.windows[window].add(&items.values()[start..end], self.sample);
        }
        Ok(())
    }

    fn merge(&self, state: &mut EmbeddingState, encoded: &[u8]) -> Result<()> {
        state.absorb(EmbeddingState::decode(encoded)?, self.sample)
    }

    fn encode(&self, state: &EmbeddingState) -> Vec<u8> {
        state.encode(self.sample)
    }

    fn evaluate(&self, state: &mut EmbeddingState) -> Result<ScalarValue> {
        let [base, cur] = &state.windows;
        Ok(match self.output {
            EmbeddingOutput::State => {
                ScalarValue::Binary((base.count > 0.0).then(|| state.encode(0)))
            }
            EmbeddingOutput::Cosine => match (base.mean(), cur.mean()) {
                (Some(b), Some(c)) => float(cosine_distance(&b, &c)),
                _ => ScalarValue::Float64(None),
            },
            EmbeddingOutput::Mmd | EmbeddingOutput::MmdPvalue => {
                let permutations = match self.output {
                    EmbeddingOutput::MmdPvalue => self.permutations,
                    _ => 0,
                };
                let result = mmd_test(
                    &base.sampled(self.sample),
                    &cur.sampled(self.sample),
                    permutations,
                );
                float(match self.output {
                    EmbeddingOutput::Mmd => result.map(|r| r.0),
                    _ => result.and_then(|r| r.1),
                })
            }
        })
    }

    fn size(&self, state: &EmbeddingState) -> usize {
        let window = |w: &Window| 8 * w.sum.len() + w.sample.len() * (32 + 8 * state.dims);
        window(&state.windows[0]) + window(&state.windows[1])
    }
}

fn states_at(array: &BinaryArray, row: usize) -> Result<Option<EmbeddingState>> {
    if array.is_null(row) {
        return Ok(None);
    }
    EmbeddingState::decode(array.value(row)).map(Some)
}

/// `embedding_state_drift_cosine(baseline, current)`: the cosine distance
/// between the means two states hold.
pub(crate) fn state_drift_cosine(_spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    let (base, cur) = (binary(&args[0])?, binary(&args[1])?);
    let out = (0..base.len())
        .map(|row| {
            let (Some(b), Some(c)) = (states_at(base, row)?, states_at(cur, row)?) else {
                return Ok(None);
            };
            if b.dims != c.dims {
                return Err(data_error(&format!(
                    "embedding dimensions differ: {} and {}",
                    b.dims, c.dims
                )));
            }
            Ok(match (b.windows[0].mean(), c.windows[0].mean()) {
                (Some(b), Some(c)) => cosine_distance(&b, &c),
                _ => None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Float64Array::from(out)))
}

/// `embedding_state_count(state)`: the embeddings a state holds.
pub(crate) fn state_count(_spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    let states = binary(&args[0])?;
    let out = (0..states.len())
        .map(|row| Ok(states_at(states, row)?.map(|s| s.count())))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Float64Array::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_refuse_other_bytes() {
        let mut state = EmbeddingState::default();
        for (i, v) in [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]].iter().enumerate() {
            state.check_dims(2).expect("dims");
            state.windows[i % 2].add(v, 2);
        }
        let bytes = state.encode(2);
        let back = EmbeddingState::decode(&bytes).expect("decode");
        assert_eq!(back.dims, 2);
        assert_eq!(back.windows[0].sum, vec![1.5, 2.5]);
        assert_eq!(back.windows[0].sample.len(), 2);
        assert_eq!(back.encode(2), bytes);
        for cut in 0..bytes.len() {
            assert!(
                EmbeddingState::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(EmbeddingState::decode(&huge).is_err());
        let mut extra = bytes;
        extra.push(0);
        assert!(EmbeddingState::decode(&extra).is_err());
    }

    #[test]
    fn dimensions_must_agree() {
        let mut state = EmbeddingState::default();
        state.check_dims(3).expect("first");
        let err = state.check_dims(4).expect_err("differs");
        assert!(
            err.to_string()
                .contains("embedding dimensions differ: 3 and 4"),
            "{err}"
        );
        assert!(state.check_dims(0).is_err());
        assert!(state.check_dims(MAX_DIMENSIONS + 1).is_err());
    }

    #[test]
    fn merged_samples_equal_the_sample_of_the_union() {
        let rows: Vec<Vec<f64>> = (0..300)
            .map(|i| vec![f64::from(i).sin(), f64::from(i % 7)])
            .collect();
        let mut whole = Window::default();
        for r in &rows {
            whole.add(r, 50);
        }
        let mut parts = [Window::default(), Window::default(), Window::default()];
        for (i, r) in rows.iter().enumerate() {
            parts[i % 3].add(r, 50);
        }
        let mut merged = Window::default();
        for p in parts {
            merged.absorb(p, 50);
        }
        assert_eq!(whole.sampled(50), merged.sampled(50));
        assert_eq!(whole.sampled(50).len(), 50);
    }

    #[test]
    fn mmd_of_identical_windows_is_small_and_of_shifted_ones_significant() {
        let base: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![f64::from(i).cos(), f64::from(i).sin()])
            .collect();
        let shifted: Vec<Vec<f64>> = base.iter().map(|v| vec![v[0] + 3.0, v[1]]).collect();
        fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
            v.iter().map(Vec::as_slice).collect()
        }
        let (same, p_same) = mmd_test(&refs(&base), &refs(&base), 100).expect("enough rows");
        let (far, p_far) = mmd_test(&refs(&base), &refs(&shifted), 100).expect("enough rows");
        assert!(same < 0.05 && far > 0.5, "{same} {far}");
        assert!(p_same.expect("p") > 0.5 && p_far.expect("p") < 0.02);
        assert!(mmd_test(&refs(&base[..1]), &refs(&base), 10).is_none());
    }
}
