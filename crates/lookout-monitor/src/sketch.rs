//! A mergeable quantile sketch with 1 % relative accuracy (DDSketch:
//! Masson, Rim and Lee, VLDB 2019), and drift measures computed from two
//! sketches.
//!
//! Values map to logarithmic buckets: a positive `v` goes to bucket
//! `k = ceil(log_γ v)`, covering (γ^(k−1), γ^k] with γ = (1+α)/(1−α), and
//! every value in it is within α of the bucket's representative
//! 2γ^k/(γ+1). Negative values mirror that; |v| ≤ 1e-9 counts as zero.
//! The store is unbounded (no bucket collapsing), so bucket counts stay
//! exact however many sketches are merged: a bucket per 2 % of value range,
//! about 1,000 buckets from 1 µs to 1 day of latency. Counts are `f64` so
//! that rows can carry sampling weights.

use std::collections::BTreeMap;

use crate::stats;

/// Relative accuracy of every quantile read from a sketch.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Magnitudes at or below this count as zero.
const ZERO_MAGNITUDE: f64 = 1e-9;
const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be read back as a sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SketchDecodeError(&'static str);

impl std::fmt::Display for SketchDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid quantile sketch: {}", self.0)
    }
}

impl std::error::Error for SketchDecodeError {}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// Bucket key of a positive magnitude above [`ZERO_MAGNITUDE`].
fn key(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

/// Keys that finite magnitudes above [`ZERO_MAGNITUDE`] map to.
fn key_range() -> std::ops::RangeInclusive<i32> {
    key(ZERO_MAGNITUDE)..=key(f64::MAX)
}

fn upper_bound(key: i32) -> f64 {
    gamma().powi(key)
}

/// Counts per bucket key, dense from `offset`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Buckets {
    offset: i32,
    counts: Vec<f64>,
}

impl Buckets {
    fn add(&mut self, key: i32, weight: f64) {
        if self.counts.is_empty() {
            self.offset = key;
        }
        if key < self.offset {
            let grow = (self.offset - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.offset = key;
        }
        let index = (key - self.offset) as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0.0);
        }
        self.counts[index] += weight;
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, f64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0.0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }
}

/// Position of a bucket on the value axis, comparable across sketches.
type Ordinal = i64;
const ZERO_ORDINAL: Ordinal = 2 << 32;

fn positive_ordinal(key: i32) -> Ordinal {
    ZERO_ORDINAL + (1 << 32) + key as i64
}

fn negative_ordinal(key: i32) -> Ordinal {
    ZERO_ORDINAL - (1 << 32) - key as i64
}

/// The bucket a value falls in, as an ordinal.
#[cfg(test)]
fn ordinal_of(value: f64) -> Ordinal {
    if value > ZERO_MAGNITUDE {
        positive_ordinal(key(value))
    } else if value < -ZERO_MAGNITUDE {
        negative_ordinal(key(-value))
    } else {
        ZERO_ORDINAL
    }
}

/// A DDSketch of the non-NULL, finite values of a column.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileSketch {
    positive: Buckets,
    negative: Buckets,
    zero: f64,
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        QuantileSketch {
            positive: Buckets::default(),
            negative: Buckets::default(),
            zero: 0.0,
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl QuantileSketch {
    /// Adds one value (non-finite values are ignored).
    pub fn add(&mut self, value: f64) {
        self.add_weighted(value, 1.0);
    }

    /// Adds a value standing for `weight` rows.
    pub fn add_weighted(&mut self, value: f64, weight: f64) {
        if !value.is_finite() || weight.is_nan() || weight <= 0.0 {
            return;
        }
        if value > ZERO_MAGNITUDE {
            self.positive.add(key(value), weight);
        } else if value < -ZERO_MAGNITUDE {
            self.negative.add(key(-value), weight);
        } else {
            self.zero += weight;
        }
        self.count += weight;
        self.sum += value * weight;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of another sketch.
    pub fn merge(&mut self, other: &QuantileSketch) {
        for (key, count) in other.positive.iter() {
            self.positive.add(key, count);
        }
        for (key, count) in other.negative.iter() {
            self.negative.add(key, count);
        }
        self.zero += other.zero;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number (total weight) of values.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Sum of the values, exact up to floating point.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Bytes held, for memory accounting (cheap: no encoding).
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + 8 * (self.positive.counts.capacity() + self.negative.counts.capacity())
    }

    /// Buckets in value order: (ordinal, representative value, count).
    fn ordered(&self) -> impl Iterator<Item = (Ordinal, f64, f64)> + '_ {
        let g = gamma();
        let representative = move |key: i32| upper_bound(key) * 2.0 / (1.0 + g);
        let negatives = self
            .negative
            .iter()
            .rev()
            .map(move |(k, c)| (negative_ordinal(k), -representative(k), c));
        let zero = (self.zero > 0.0).then_some((ZERO_ORDINAL, 0.0, self.zero));
        let positives = self
            .positive
            .iter()
            .map(move |(k, c)| (positive_ordinal(k), representative(k), c));
        negatives.chain(zero).chain(positives)
    }

    /// The q-quantile as `numpy.quantile(method='inverted_cdf')` defines it
    /// (the smallest value with at least a share q of values at or below
    /// it), within [`RELATIVE_ACCURACY`] of its value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        if q == 0.0 {
            return Some(self.min);
        }
        let target = q * self.count;
        let mut seen = 0.0;
        for (_, value, count) in self.ordered() {
            seen += count;
            if seen >= target {
                return Some(value.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The bucket holding the inverted-CDF q-quantile.
    fn quantile_ordinal(&self, q: f64) -> Option<Ordinal> {
        let target = q * self.count;
        let mut seen = 0.0;
        let mut last = None;
        for (ordinal, _, count) in self.ordered() {
            seen += count;
            last = Some(ordinal);
            if seen >= target {
                break;
            }
        }
        last
    }

    /// Serialises the sketch (the BYTEA format, see `docs/storage.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 10 * (self.positive.counts.len() + 2));
        out.push(FORMAT_VERSION);
        for v in [
            RELATIVE_ACCURACY,
            self.count,
            self.sum,
            self.min,
            self.max,
            self.zero,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for buckets in [&self.positive, &self.negative] {
            let nonzero: Vec<(i32, f64)> = buckets.iter().collect();
            write_varint(&mut out, nonzero.len() as u64);
            let mut previous = 0i64;
            for (key, count) in nonzero {
                write_varint(&mut out, zigzag(key as i64 - previous));
                out.extend_from_slice(&count.to_le_bytes());
                previous = key as i64;
            }
        }
        out
    }

    /// Reads a sketch written by [`QuantileSketch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<QuantileSketch, SketchDecodeError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.byte()? != FORMAT_VERSION {
            return Err(SketchDecodeError("unknown format version"));
        }
        if reader.f64()? != RELATIVE_ACCURACY {
            return Err(SketchDecodeError("relative accuracy differs from 0.01"));
        }
        let mut sketch = QuantileSketch {
            count: reader.f64()?,
            sum: reader.f64()?,
            min: reader.f64()?,
            max: reader.f64()?,
            zero: reader.f64()?,
            ..QuantileSketch::default()
        };
        for negative in [false, true] {
            let n = reader.varint()?;
            let mut key = 0i64;
            for _ in 0..n {
                key += unzigzag(reader.varint()?);
                // Keys outside what finite values map to would make the
                // dense store allocate without bound.
                let key = i32::try_from(key)
                    .ok()
                    .filter(|k| key_range().contains(k))
                    .ok_or(SketchDecodeError("bucket key out of range"))?;
                let count = reader.f64()?;
                if !(count.is_finite() && count > 0.0) {
                    return Err(SketchDecodeError("bucket count is not positive"));
                }
                if negative {
                    sketch.negative.add(key, count);
                } else {
                    sketch.positive.add(key, count);
                }
            }
        }
        if reader.at != bytes.len() {
            return Err(SketchDecodeError("trailing bytes"));
        }
        Ok(sketch)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, SketchDecodeError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(SketchDecodeError("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn f64(&mut self) -> Result<f64, SketchDecodeError> {
        let end = self.at + 8;
        let raw = self
            .bytes
            .get(self.at..end)
            .ok_or(SketchDecodeError("truncated"))?;
        self.at = end;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(raw);
        Ok(f64::from_le_bytes(buf))
    }

    fn varint(&mut self) -> Result<u64, SketchDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SketchDecodeError("varint too long"))
    }
}

/// Bucket counts of two sketches on their common bucket grid, in value order.
fn aligned(base: &QuantileSketch, cur: &QuantileSketch) -> Vec<(Ordinal, [f64; 2])> {
    let mut merged: BTreeMap<Ordinal, [f64; 2]> = BTreeMap::new();
    for (side, sketch) in [base, cur].into_iter().enumerate() {
        for (ordinal, _, count) in sketch.ordered() {
            merged.entry(ordinal).or_default()[side] += count;
        }
    }
    merged.into_iter().collect()
}

/// The bin edges `sketch_psi` uses, as bucket ordinals: bucket `e_k` holds
/// the baseline's k/bins quantile and opens bin k.
pub fn aligned_edges(base: &QuantileSketch, bins: usize) -> Vec<Ordinal> {
    (1..bins)
        .filter_map(|k| base.quantile_ordinal(k as f64 / bins as f64))
        .collect()
}

/// Histograms of two sketches over `bins` bins whose edges are aligned to
/// buckets ([`aligned_edges`]); `None` when either sketch is empty.
pub fn binned(
    base: &QuantileSketch,
    cur: &QuantileSketch,
    bins: usize,
) -> Option<(Vec<f64>, Vec<f64>)> {
    if base.count <= 0.0 || cur.count <= 0.0 {
        return None;
    }
    let edges = aligned_edges(base, bins);
    let mut counts = [vec![0.0; bins], vec![0.0; bins]];
    for (ordinal, [b, c]) in aligned(base, cur) {
        let bin = edges.partition_point(|e| *e <= ordinal);
        counts[0][bin] += b;
        counts[1][bin] += c;
    }
    let [b, c] = counts;
    Some((b, c))
}

/// KS statistic evaluated at bucket boundaries, where both CDFs are known
/// exactly; the exact D lies in [D, D + the largest share of either sample
/// in one bucket]. Returns (D, that largest share).
pub fn ks_statistic(base: &QuantileSketch, cur: &QuantileSketch) -> Option<(f64, f64)> {
    if base.count <= 0.0 || cur.count <= 0.0 {
        return None;
    }
    let (mut fb, mut fc, mut d, mut widest) = (0.0, 0.0, 0.0f64, 0.0f64);
    for (_, [b, c]) in aligned(base, cur) {
        fb += b / base.count;
        fc += c / cur.count;
        d = d.max((fb - fc).abs());
        widest = widest.max(b / base.count).max(c / cur.count);
    }
    Some((d, widest))
}

/// PSI of two sketches over bucket-aligned bins.
pub fn psi(base: &QuantileSketch, cur: &QuantileSketch, bins: usize) -> Option<f64> {
    binned(base, cur, bins).map(|(b, c)| stats::psi(&b, &c))
}

/// Jensen-Shannon distance (base 2) of two sketches over bucket-aligned bins.
pub fn js_distance(base: &QuantileSketch, cur: &QuantileSketch, bins: usize) -> Option<f64> {
    binned(base, cur, bins).map(|(b, c)| stats::js_distance(&b, &c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of positive and negative values with ties.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let v = (u * 12.0).exp() / 10.0;
                if state.is_multiple_of(7) {
                    -v
                } else if state.is_multiple_of(11) {
                    0.0
                } else {
                    v.round()
                }
            })
            .collect()
    }

    fn inverted_cdf(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn quantiles_within_relative_accuracy() {
        let mut data = values(20_000, 7);
        let mut sketch = QuantileSketch::default();
        data.iter().for_each(|v| sketch.add(*v));
        data.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = inverted_cdf(&data, q);
            let estimate = sketch.quantile(q).expect("not empty");
            assert!(
                (estimate - exact).abs() <= RELATIVE_ACCURACY * exact.abs() + 1e-12,
                "q={q}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn merge_equals_one_sketch_and_survives_encoding() {
        let data = values(5_000, 3);
        let mut whole = QuantileSketch::default();
        let mut parts = vec![QuantileSketch::default(); 3];
        for (i, v) in data.iter().enumerate() {
            whole.add(*v);
            parts[i % 3].add(*v);
        }
        let mut merged = QuantileSketch::default();
        for p in &parts {
            merged.merge(&QuantileSketch::decode(&p.encode()).expect("decodes"));
        }
        for q in [0.01, 0.5, 0.99] {
            assert_eq!(merged.quantile(q), whole.quantile(q));
        }
        assert_eq!(merged.count(), whole.count());
        assert_eq!(
            QuantileSketch::decode(&whole.encode())
                .expect("decodes")
                .encode(),
            whole.encode()
        );
        assert!(QuantileSketch::decode(&[1, 2, 3]).is_err());
        // A far-off bucket key is refused, not allocated for.
        let mut bytes = QuantileSketch::default().encode();
        bytes.truncate(bytes.len() - 2);
        bytes.push(1);
        bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        bytes.extend_from_slice(&1.0f64.to_le_bytes());
        bytes.push(0);
        assert_eq!(
            QuantileSketch::decode(&bytes),
            Err(SketchDecodeError("bucket key out of range"))
        );
        assert!(QuantileSketch::decode(&[]).is_err());
    }

    #[test]
    fn drift_from_sketches_equals_exact_drift_on_bucket_aligned_bins() {
        let base = values(8_000, 11);
        let cur: Vec<f64> = values(6_000, 12).iter().map(|v| v * 1.3).collect();
        let (mut sb, mut sc) = (QuantileSketch::default(), QuantileSketch::default());
        base.iter().for_each(|v| sb.add(*v));
        cur.iter().for_each(|v| sc.add(*v));
        let edges = aligned_edges(&sb, 10);
        let bin_of = |v: &f64| edges.partition_point(|e| *e <= ordinal_of(*v));
        let (mut b, mut c) = (vec![0.0; 10], vec![0.0; 10]);
        base.iter().for_each(|v| b[bin_of(v)] += 1.0);
        cur.iter().for_each(|v| c[bin_of(v)] += 1.0);
        let sketch_psi = psi(&sb, &sc, 10).expect("not empty");
        assert!((sketch_psi - stats::psi(&b, &c)).abs() <= 1e-9);

        // The exact KS statistic lies within the stated bound.
        let (mut bs, mut cs) = (base.clone(), cur.clone());
        bs.sort_by(f64::total_cmp);
        cs.sort_by(f64::total_cmp);
        let exact = stats::ks_statistic(&bs, &cs);
        let (d, widest) = ks_statistic(&sb, &sc).expect("not empty");
        assert!(
            d <= exact + 1e-12 && exact <= d + widest + 1e-12,
            "{d} {widest} {exact}"
        );
    }
}
