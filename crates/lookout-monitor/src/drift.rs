//! Drift aggregates: a baseline and a current window inside one GROUP BY,
//! told apart by a boolean expression.

use std::collections::HashMap;

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::quantile_bins::quantile_bins;
use crate::stats;
use crate::udf::{Accumulators, Aggregate, Spec, float, selected};

/// What a numeric drift aggregate reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    Psi,
    Kl,
    Js,
    Ks,
    KsPvalue,
    Wasserstein,
    Chi2Pvalue,
    NewCategoryShare,
}

/// Builds the numeric or the categorical form, by the value's type.
pub(crate) fn build(
    measure: Measure,
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    let bins = match measure {
        Measure::Psi | Measure::Kl | Measure::Js => spec.bins(args, 2)?,
        _ => 0,
    };
    let value_type = args.expr_fields.first().map(|f| f.data_type().clone());
    Ok(match value_type {
        Some(DataType::Utf8) => Box::new(CategoricalDrift {
            measure,
            weighted: false,
        }),
        _ => Box::new(NumericDrift { measure, bins }),
    })
}

fn windows(args: &[ArrayRef]) -> Result<&BooleanArray> {
    args.get(1)
        .and_then(|a| a.as_any().downcast_ref::<BooleanArray>())
        .ok_or_else(|| DataFusionError::Internal("is_current must be BOOLEAN".into()))
}

/// The finite values of each window, collected per group.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    base: Chunked,
    cur: Chunked,
}

/// Values held in chunks of bounded size: growing never copies what is
/// held (a doubling vector of a million samples copies them again at each
/// step, into fresh pages the kernel zeroes first), and chunks are small
/// enough for the allocator to reuse from one query to the next.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    chunks: Vec<Vec<f64>>,
    /// Values merged from another state's encoding, held as slices of that
    /// array's buffer instead of copied out of it.
    shared: Vec<ScalarBuffer<f64>>,
    len: usize,
}

/// Values per chunk (512 KiB).
const CHUNK: usize = 1 << 16;

impl Chunked {
    fn push(&mut self, value: f64) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < last.capacity() => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Adds the finite ones of `values`.
    fn extend_finite(&mut self, values: &[f64]) {
        if !values.iter().all(|v| v.is_finite()) {
            values
                .iter()
                .filter(|v| v.is_finite())
                .for_each(|v| self.push(*v));
            return;
        }
        let mut rest = values;
        while !rest.is_empty() {
            let room = match self.chunks.last() {
                Some(last) if last.len() < last.capacity() => last.capacity() - last.len(),
                _ => {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                    CHUNK
                }
            };
            let (now, later) = rest.split_at(room.min(rest.len()));
            if let Some(last) = self.chunks.last_mut() {
                last.extend_from_slice(now);
            }
            self.len += now.len();
            rest = later;
        }
    }

    /// Adds values encoded by [`Chunked::encode_into`] (little-endian
    /// `f64`s) as one chunk of their size.
    fn extend_from_le_bytes(&mut self, bytes: &[u8]) {
        let mut chunk = vec![0.0f64; bytes.len() / 8];
        if cfg!(target_endian = "little") {
            let whole = chunk.len() * 8;
            bytemuck::cast_slice_mut::<f64, u8>(&mut chunk).copy_from_slice(&bytes[..whole]);
        } else {
            for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
                *v = f64::from_le_bytes(b.try_into().unwrap_or_default());
            }
        }
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Adds the values encoded at `bytes` (as [`Chunked::extend_from_le_bytes`]
    /// takes them) of `buffer`, as a slice of it where it is aligned for
    /// `f64`s.
    fn extend_from_buffer(&mut self, buffer: &Buffer, bytes: Range<usize>) {
        let values = buffer.slice_with_length(bytes.start, bytes.len() / 8 * 8);
        if cfg!(target_endian = "little") && values.as_ptr().align_offset(align_of::<f64>()) == 0 {
            self.len += values.len() / 8;
            self.shared.push(ScalarBuffer::from(values));
        } else {
            self.extend_from_le_bytes(&buffer.as_slice()[bytes]);
        }
    }

    /// Appends the count, then the values as little-endian `f64`s.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        for chunk in self.slices() {
            if cfg!(target_endian = "little") {
                out.extend_from_slice(bytemuck::cast_slice(chunk));
            } else {
                out.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Values held as one chunk.
    fn from_vec(values: Vec<f64>) -> Self {
        Chunked {
            len: values.len(),
            chunks: vec![values],
            shared: Vec::new(),
        }
    }

    /// All values in one vector (moved out when held in one chunk); give
    /// them back with [`Chunked::from_vec`], as a window frame evaluates the
    /// same state again after more rows.
    fn take_all(&mut self) -> Vec<f64> {
        let all = match (self.chunks.len(), self.shared.is_empty()) {
            (1, true) => self.chunks.pop().unwrap_or_default(),
            _ => self.slices().concat(),
        };
        self.chunks.clear();
        self.shared.clear();
        self.len = 0;
        all
    }

    /// The chunks as slices.
    fn slices(&self) -> Vec<&[f64]> {
        let shared = self.shared.iter().map(|values| &values[..]);
        self.chunks
            .iter()
            .map(Vec::as_slice)
            .chain(shared)
            .collect()
    }

    /// Counts per bin of [`stats::bin_counts`], chunk by chunk.
    fn bin_counts(&self, edges: &[f64]) -> Vec<f64> {
        let mut total = vec![0.0; edges.len() + 1];
        for chunk in self.slices() {
            for (t, c) in total.iter_mut().zip(stats::bin_counts(chunk, edges)) {
                *t += c;
            }
        }
        total
    }

    fn held_bytes(&self) -> usize {
        8 * self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + 8 * self.shared.iter().map(ScalarBuffer::len).sum::<usize>()
            + std::mem::size_of::<Vec<f64>>() * self.chunks.capacity()
            + std::mem::size_of::<ScalarBuffer<f64>>() * self.shared.capacity()
    }
}

#[derive(Debug)]
struct NumericDrift {
    measure: Measure,
    bins: usize,
}

impl Aggregate for NumericDrift {
    type State = Samples;

    fn new_state(&self) -> Samples {
        Samples::default()
    }

    fn update(
        &self,
        states: &mut [Samples],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args[0].as_primitive::<Float64Type>();
        let current = windows(args)?;
        let raw = values.values();
        let all_valid = filter.is_none() && values.null_count() == 0 && current.null_count() == 0;
        if all_valid
            && groups
                .first()
                .is_some_and(|g| groups.iter().all(|h| h == g))
        {
            // One group (as the partition-keyed aggregation hands batches
            // over): each window's values are split off whole.
            let state = &mut states[groups[0]];
            let base = arrow::compute::not(current)?;
            for (mask, target) in [(current, &mut state.cur), (&base, &mut state.base)] {
                let picked = arrow::compute::filter(values, mask)?;
                target.extend_finite(picked.as_primitive::<Float64Type>().values());
            }
            return Ok(());
        }
        for (row, group) in groups.iter().enumerate() {
            if !all_valid && (!selected(filter, row) || values.is_null(row) || current.is_null(row))
            {
                continue;
            }
            let v = raw[row];
            if v.is_finite() {
                let state = &mut states[*group];
                if current.value(row) {
                    state.cur.push(v)
                } else {
                    state.base.push(v)
                }
            }
        }
        Ok(())
    }

    fn merge(&self, state: &mut Samples, encoded: &[u8]) -> Result<()> {
        let mut reader = Bytes(encoded);
        for target in [&mut state.base, &mut state.cur] {
            let n = reader.u64()? as usize;
            let bytes = reader.take(n.saturating_mul(8))?;
            if !bytes.is_empty() {
                target.extend_from_le_bytes(bytes);
            }
        }
        Ok(())
    }

    fn merge_row(&self, state: &mut Samples, states: &BinaryArray, row: usize) -> Result<()> {
        let encoded = states.value(row);
        let start = states.value_offsets()[row] as usize;
        let mut reader = Bytes(encoded);
        for target in [&mut state.base, &mut state.cur] {
            let n = reader.u64()? as usize;
            let at = start + (encoded.len() - reader.0.len());
            let bytes = reader.take(n.saturating_mul(8))?;
            if !bytes.is_empty() {
                target.extend_from_buffer(states.values(), at..at + bytes.len());
            }
        }
        Ok(())
    }

    fn encode(&self, state: &Samples) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * (state.base.len + state.cur.len));
        self.encode_into(state, &mut out);
        out
    }

    fn encode_into(&self, state: &Samples, out: &mut Vec<u8>) {
        state.base.encode_into(out);
        state.cur.encode_into(out);
    }

    fn evaluate(&self, state: &mut Samples) -> Result<ScalarValue> {
        if state.base.is_empty() || state.cur.is_empty() {
            return Ok(ScalarValue::Float64(None));
        }
        let value = match self.measure {
            Measure::Psi | Measure::Kl | Measure::Js => {
                // Binned measures need only the baseline's quantiles, found
                // without sorting or moving its values.
                let (edges, b) = quantile_bins(&state.base.slices(), self.bins);
                let c = state.cur.bin_counts(&edges);
                match self.measure {
                    Measure::Psi => stats::psi(&b, &c),
                    Measure::Kl => stats::kl(&b, &c),
                    _ => stats::js_distance(&b, &c),
                }
            }
            Measure::Ks | Measure::KsPvalue | Measure::Wasserstein => {
                let (mut base, mut cur) = (state.base.take_all(), state.cur.take_all());
                base.sort_unstable_by(f64::total_cmp);
                cur.sort_unstable_by(f64::total_cmp);
                let value = match self.measure {
                    Measure::Ks => stats::ks_statistic(&base, &cur),
                    Measure::KsPvalue => {
                        stats::ks_pvalue(stats::ks_statistic(&base, &cur), base.len(), cur.len())
                    }
                    _ => stats::wasserstein(&base, &cur),
                };
                (state.base, state.cur) = (Chunked::from_vec(base), Chunked::from_vec(cur));
                value
            }
            Measure::Chi2Pvalue | Measure::NewCategoryShare => {
                return Err(DataFusionError::Internal(
                    "categorical measure on numbers".into(),
                ));
            }
        };
        Ok(float(Some(value)))
    }

    fn size(&self, state: &Samples) -> usize {
        std::mem::size_of_val(state) + state.base.held_bytes() + state.cur.held_bytes()
    }
}

/// Builds a weighted drift aggregate (`weighted_drift_psi(value,
/// is_current, weight [, bins])`, ...): numeric or categorical by the
/// value's type. Rows with a NULL, non-finite or non-positive weight count
/// for nothing.
pub(crate) fn build_weighted(
    measure: Measure,
    spec: &Spec,
    args: &AccumulatorArgs,
) -> Result<Box<dyn Accumulators>> {
    let bins = match measure {
        Measure::Psi | Measure::Kl | Measure::Js => spec.bins(args, 3)?,
        _ => 0,
    };
    let value_type = args.expr_fields.first().map(|f| f.data_type().clone());
    Ok(match value_type {
        Some(DataType::Utf8) => Box::new(CategoricalDrift {
            measure,
            weighted: true,
        }),
        _ => Box::new(WeightedNumericDrift { measure, bins }),
    })
}

fn weight_at(args: &[ArrayRef], row: usize) -> Option<f64> {
    let weights = args.get(2)?.as_primitive::<Float64Type>();
    let w = weights.is_valid(row).then(|| weights.value(row))?;
    (w.is_finite() && w > 0.0).then_some(w)
}

/// (value, weight) pairs of each window, collected per group.
#[derive(Debug, Default)]
pub(crate) struct WeightedSamples {
    base: Vec<(f64, f64)>,
    cur: Vec<(f64, f64)>,
}

#[derive(Debug)]
struct WeightedNumericDrift {
    measure: Measure,
    bins: usize,
}

impl Aggregate for WeightedNumericDrift {
    type State = WeightedSamples;

    fn new_state(&self) -> WeightedSamples {
        WeightedSamples::default()
    }

    fn update(
        &self,
        states: &mut [WeightedSamples],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args[0].as_primitive::<Float64Type>();
        let current = windows(args)?;
        for (row, group) in groups.iter().enumerate() {
            if !selected(filter, row) || values.is_null(row) || current.is_null(row) {
                continue;
            }
            let (v, Some(w)) = (values.value(row), weight_at(args, row)) else {
                continue;
            };
            if v.is_finite() {
                let state = &mut states[*group];
                if current.value(row) {
                    state.cur.push((v, w))
                } else {
                    state.base.push((v, w))
                }
            }
        }
        Ok(())
    }

    fn merge(&self, state: &mut WeightedSamples, encoded: &[u8]) -> Result<()> {
        let mut reader = Bytes(encoded);
        for target in [&mut state.base, &mut state.cur] {
            let n = reader.u64()? as usize;
            target.reserve(n.min(encoded.len() / 16));
            for _ in 0..n {
                target.push((reader.f64()?, reader.f64()?));
            }
        }
        Ok(())
    }

    fn encode(&self, state: &WeightedSamples) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 16 * (state.base.len() + state.cur.len()));
        for pairs in [&state.base, &state.cur] {
            out.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
            for (v, w) in pairs.iter() {
                out.extend_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    fn evaluate(&self, state: &mut WeightedSamples) -> Result<ScalarValue> {
        if state.base.is_empty() || state.cur.is_empty() {
            return Ok(ScalarValue::Float64(None));
        }
        // Sorted by value, then weight, so the sums do not depend on how
        // rows reached the groups.
        let order = |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
        state.base.sort_unstable_by(order);
        state.cur.sort_unstable_by(order);
        let (base, cur) = (&state.base, &state.cur);
        let value = match self.measure {
            Measure::Psi | Measure::Kl | Measure::Js => {
                let edges = stats::weighted_quantile_edges(base, self.bins);
                let b = stats::weighted_bin_sums(base, &edges);
                let c = stats::weighted_bin_sums(cur, &edges);
                match self.measure {
                    Measure::Psi => stats::psi(&b, &c),
                    Measure::Kl => stats::kl(&b, &c),
                    _ => stats::js_distance(&b, &c),
                }
            }
            Measure::Ks => stats::weighted_ks_statistic(base, cur),
            Measure::Wasserstein => stats::weighted_wasserstein(base, cur),
            _ => {
                return Err(DataFusionError::Internal(
                    "no weighted form of this measure".into(),
                ));
            }
        };
        Ok(float(Some(value)))
    }

    fn size(&self, state: &WeightedSamples) -> usize {
        std::mem::size_of_val(state) + 16 * (state.base.capacity() + state.cur.capacity())
    }
}

/// Row counts per category, [baseline, current].
pub(crate) type CategoryCounts = HashMap<String, [f64; 2]>;

#[derive(Debug)]
struct CategoricalDrift {
    measure: Measure,
    /// Whether rows count by their weight (the third argument) or as 1.
    weighted: bool,
}

impl Aggregate for CategoricalDrift {
    type State = CategoryCounts;

    fn new_state(&self) -> CategoryCounts {
        CategoryCounts::new()
    }

    fn update(
        &self,
        states: &mut [CategoryCounts],
        args: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = args[0].as_string::<i32>();
        let current = windows(args)?;
        for (row, group) in groups.iter().enumerate() {
            if !selected(filter, row) || values.is_null(row) || current.is_null(row) {
                continue;
            }
            let weight = if self.weighted {
                match weight_at(args, row) {
                    Some(w) => w,
                    None => continue,
                }
            } else {
                1.0
            };
            let side = usize::from(current.value(row));
            let category = values.value(row);
            let counts = &mut states[*group];
            match counts.get_mut(category) {
                Some(c) => c[side] += weight,
                None => {
                    let mut c = [0.0; 2];
                    c[side] = weight;
                    counts.insert(category.to_owned(), c);
                }
            }
        }
        Ok(())
    }

    fn merge(&self, state: &mut CategoryCounts, encoded: &[u8]) -> Result<()> {
        let mut reader = Bytes(encoded);
        let n = reader.u64()?;
        for _ in 0..n {
            let len = reader.u64()? as usize;
            let name = String::from_utf8(reader.take(len)?.to_vec())
                .map_err(|_| DataFusionError::Internal("category state is not UTF-8".into()))?;
            let (b, c) = (reader.f64()?, reader.f64()?);
            let entry = state.entry(name).or_default();
            entry[0] += b;
            entry[1] += c;
        }
        Ok(())
    }

    fn encode(&self, state: &CategoryCounts) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(state.len() as u64).to_le_bytes());
        for (name, [b, c]) in state {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    fn evaluate(&self, state: &mut CategoryCounts) -> Result<ScalarValue> {
        // Sorted, so the sums do not depend on how rows reached the groups.
        let mut categories: Vec<(&String, &[f64; 2])> = state.iter().collect();
        categories.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let base: Vec<f64> = categories.iter().map(|(_, c)| c[0]).collect();
        let cur: Vec<f64> = categories.iter().map(|(_, c)| c[1]).collect();
        let (base_total, cur_total) = (base.iter().sum::<f64>(), cur.iter().sum::<f64>());
        if base_total == 0.0 || cur_total == 0.0 {
            return Ok(ScalarValue::Float64(None));
        }
        let value = match self.measure {
            Measure::Psi => stats::psi(&base, &cur),
            Measure::Kl => stats::kl(&base, &cur),
            Measure::Js => stats::js_distance(&base, &cur),
            Measure::Chi2Pvalue => stats::chi2_homogeneity_pvalue(&base, &cur),
            Measure::NewCategoryShare => {
                // Folded from +0.0: an empty f64 sum is -0.0.
                let unseen = base
                    .iter()
                    .zip(&cur)
                    .filter(|(b, _)| **b == 0.0)
                    .fold(0.0, |sum, (_, c)| sum + c);
                unseen / cur_total
            }
            Measure::Ks | Measure::KsPvalue | Measure::Wasserstein => {
                return Err(DataFusionError::Internal(
                    "numeric measure on categories".into(),
                ));
            }
        };
        Ok(float(Some(value)))
    }

    fn size(&self, state: &CategoryCounts) -> usize {
        state.keys().map(|k| k.capacity() + 48).sum::<usize>() + 48
    }
}

/// A cursor over a serialised state.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(DataFusionError::Execution(
                "truncated aggregate state".into(),
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }

    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Float64Array;

    use super::*;

    /// Values spread over several chunks, in an order with no pattern.
    fn values(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 100_003) as f64 / 7.0)
            .collect()
    }

    #[test]
    fn chunked_values_encode_merge_and_count_as_one_vector() {
        let all = values(3 * CHUNK + 17);
        let mut held = Chunked::default();
        all.iter().for_each(|v| held.push(*v));
        assert_eq!(held.chunks.len(), 4);
        let mut encoded = Vec::new();
        held.encode_into(&mut encoded);
        assert_eq!(encoded.len(), 8 + 8 * all.len());

        let mut bulk = Chunked::default();
        bulk.push(all[0]);
        bulk.extend_finite(&all[1..CHUNK + 3]);
        bulk.extend_finite(&[f64::NAN, all[CHUNK + 3], f64::INFINITY]);
        bulk.extend_finite(&all[CHUNK + 4..]);
        assert_eq!(bulk.len, all.len());
        assert_eq!(bulk.take_all(), all);

        let mut merged = Chunked::default();
        merged.push(-1.0);
        merged.extend_from_le_bytes(&encoded[8..]);
        merged.push(-2.0);
        let edges = [-1.5, 0.0, 10.0, 5000.0, 14_000.0];
        let mut expected = vec![-1.0];
        expected.extend_from_slice(&all);
        expected.push(-2.0);
        assert_eq!(
            merged.bin_counts(&edges),
            stats::bin_counts(&expected, &edges)
        );
        assert_eq!(merged.take_all(), expected);
        assert!(merged.is_empty());
    }

    #[test]
    fn merged_rows_share_the_buffer_or_copy_it_when_unaligned() {
        let drift = NumericDrift {
            measure: Measure::Psi,
            bins: 10,
        };
        let all = values(CHUNK + 100);
        let mut state = Samples::default();
        state.base.extend_finite(&all[..CHUNK]);
        state.cur.extend_finite(&all[CHUNK..]);
        let encoded = drift.encode(&state);
        let expected = drift.evaluate(&mut state).expect("evaluate");
        for pad in [0usize, 3] {
            // A value of `pad` bytes before the state moves it off the
            // alignment of f64s: its values are then copied.
            let array = BinaryArray::from_iter_values([vec![0u8; pad], encoded.clone()]);
            let mut merged = Samples::default();
            drift.merge_row(&mut merged, &array, 1).expect("merge");
            assert_eq!(merged.base.shared.len(), usize::from(pad == 0));
            assert_eq!(drift.evaluate(&mut merged).expect("evaluate"), expected);
            let mut again = Vec::new();
            drift.encode_into(&merged, &mut again);
            assert_eq!(again, encoded);
            assert_eq!(merged.base.take_all(), all[..CHUNK]);
        }
    }

    #[test]
    fn a_state_evaluates_again_after_more_rows() {
        // A window frame evaluates one accumulator after each row it adds.
        for measure in [Measure::Psi, Measure::Ks, Measure::Wasserstein] {
            let drift = NumericDrift { measure, bins: 10 };
            let all = values(2 * CHUNK + 5);
            let windows = |n: usize| -> ArrayRef {
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0))))
            };
            let (first, rest) = all.split_at(CHUNK + 1);
            let mut state = Samples::default();
            for part in [first, rest] {
                let args: Vec<ArrayRef> = vec![
                    Arc::new(Float64Array::from(part.to_vec())),
                    windows(part.len()),
                ];
                let groups = vec![0; part.len()];
                drift
                    .update(std::slice::from_mut(&mut state), &args, &groups, None)
                    .expect("update");
                let again = drift.evaluate(&mut state).expect("evaluate");
                assert_eq!(drift.evaluate(&mut state).expect("evaluate"), again);
            }
            let mut whole = Samples::default();
            let args: Vec<ArrayRef> = vec![
                Arc::new(Float64Array::from(all.clone())),
                windows(all.len()),
            ];
            // Rows of `rest` restart the window pattern at their first row.
            let mut pattern: Vec<bool> = (0..first.len()).map(|i| i % 3 == 0).collect();
            pattern.extend((0..rest.len()).map(|i| i % 3 == 0));
            let args = vec![
                Arc::clone(&args[0]),
                Arc::new(BooleanArray::from(pattern)) as ArrayRef,
            ];
            drift
                .update(
                    std::slice::from_mut(&mut whole),
                    &args,
                    &vec![0; all.len()],
                    None,
                )
                .expect("update");
            assert_eq!(
                drift.evaluate(&mut state).expect("evaluate"),
                drift.evaluate(&mut whole).expect("evaluate"),
                "{measure:?}"
            );
        }
    }
}
