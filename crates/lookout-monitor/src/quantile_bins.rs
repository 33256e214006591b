//! Quantile bins of many values without moving them.
//!
//! PSI, KL and JS bin both windows by the baseline's quantiles. Selecting
//! the ranks of those quantiles in the whole baseline reorders all of it a
//! few times over (and needs it in one vector, a copy of every value). Here
//! a sample of the values says roughly where each rank's value lies; one
//! pass over the values counts those below each such interval and copies
//! out only those inside it, and selection runs on those few. The counts
//! prove that every rank fell inside its interval; when the sample misled
//! (it can, by chance or by an unlucky order), the answer comes from
//! selecting in all values instead, so the result never depends on the
//! sample, only the time does.

use crate::stats::{bin_counts, quantile_edges, select_ranks};

/// Below this many values, selecting in a copy of all of them is as quick.
const SAMPLED_MIN: usize = 1 << 16;

/// How many standard deviations of the sample's rank error an interval
/// spans on each side: a rank misses its interval about once in 2,000.
const SPREAD: f64 = 3.5;

/// Most intervals looked for in one pass (with many bins, selection in
/// all values is as quick; their classes fit a byte).
const MAX_INTERVALS: usize = 32;

/// Buckets of the table that classifies most values with one lookup.
const BUCKETS: usize = 4096;

/// Marks a bucket whose values are classified by comparing with the bounds.
const MIXED: u8 = u8::MAX;

/// The inner edges of `bins` quantile bins of all values in `chunks`, as
/// [`quantile_edges`] finds them, and how many of the values each bin
/// holds, as [`bin_counts`] counts them; the chunks are left as they are.
/// Values must be finite.
pub(crate) fn quantile_bins(chunks: &[&[f64]], bins: usize) -> (Vec<f64>, Vec<f64>) {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    // About n^(2/3) sampled values: sorting them costs little next to the
    // pass, and the intervals hold a few percent of the values each.
    let sample = ((n as f64).powf(2.0 / 3.0) as usize).clamp(2048, 1 << 15);
    sampled(chunks, bins, sample, SPREAD).unwrap_or_else(|| selected(chunks, bins))
}

/// The answer by selection in a copy of all values.
fn selected(chunks: &[&[f64]], bins: usize) -> (Vec<f64>, Vec<f64>) {
    let mut all = chunks.concat();
    let edges = quantile_edges(&mut all, bins);
    let counts = bin_counts(&all, &edges);
    (edges, counts)
}

/// The position of quantile `k/bins` among `n` sorted values, and the two
/// ranks interpolated between (as [`quantile_edges`] does).
fn quantile_ranks(k: usize, bins: usize, n: usize) -> (f64, usize, usize) {
    let pos = (k as f64 / bins as f64) * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    (pos, lo, (lo + 1).min(n - 1))
}

/// A closed range of values that holds the values of some ranks.
#[derive(Debug, Clone, Copy)]
struct Interval {
    low: f64,
    high: f64,
}

/// The answer through a sample of `sample` values, or `None` when a rank
/// fell outside its interval (or there are too few values to bother).
fn sampled(
    chunks: &[&[f64]],
    bins: usize,
    sample: usize,
    spread: f64,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    if n < SAMPLED_MIN.max(2 * sample) || bins < 2 {
        return None;
    }
    let mut ranks: Vec<usize> = (1..bins)
        .flat_map(|k| {
            let (_, lo, hi) = quantile_ranks(k, bins, n);
            [lo, hi]
        })
        .collect();
    ranks.dedup();

    let picked = sorted_sample(chunks, n, sample);
    let m = picked.len();
    let intervals = merged(ranks.iter().map(|&r| {
        let share = r as f64 / n as f64;
        let at = share * m as f64;
        let reach = spread * (m as f64 * share * (1.0 - share)).sqrt() + 1.0;
        let low = match (at - reach).floor() {
            x if x < 0.0 => f64::NEG_INFINITY,
            x => picked[x as usize],
        };
        let high = match (at + reach).ceil() {
            x if x >= (m - 1) as f64 => f64::INFINITY,
            x => picked[x as usize],
        };
        Interval { low, high }
    }));

    if intervals.len() > MAX_INTERVALS {
        return None;
    }
    let classes = Classes::new(&intervals, picked[0], picked[m - 1]);
    let mut counts = vec![0usize; 2 * intervals.len() + 1];
    let mut inside: Vec<Vec<f64>> = vec![Vec::new(); intervals.len()];
    for chunk in chunks {
        for &v in *chunk {
            let c = classes.of(v);
            counts[c] += 1;
            if c & 1 == 1 {
                inside[c >> 1].push(v);
            }
        }
    }

    // Ranks held by each interval: those after the values below it.
    let mut below = Vec::with_capacity(intervals.len());
    let mut seen = 0;
    for (j, held) in inside.iter().enumerate() {
        seen += counts[2 * j];
        below.push(seen);
        seen += held.len();
    }
    let lengths: Vec<usize> = inside.iter().map(Vec::len).collect();
    let holder =
        |r: usize| (0..lengths.len()).find(|&j| below[j] <= r && r < below[j] + lengths[j]);
    let mut wanted: Vec<Vec<usize>> = vec![Vec::new(); inside.len()];
    for &r in &ranks {
        let j = holder(r)?;
        wanted[j].push(r - below[j]);
    }
    for (held, ranks) in inside.iter_mut().zip(&mut wanted) {
        select_ranks(held, ranks);
    }
    let value = |r: usize| holder(r).map(|j| inside[j][r - below[j]]);

    let mut edges = Vec::with_capacity(bins - 1);
    let mut at_or_above = Vec::with_capacity(bins - 1);
    for k in 1..bins {
        let (pos, lo, hi) = quantile_ranks(k, bins, n);
        let (low, high) = (value(lo)?, value(hi)?);
        let edge = low + (high - low) * (pos - lo as f64);
        let less = values_below(edge, &intervals, &counts, &inside)?;
        edges.push(edge);
        at_or_above.push(n - less);
    }
    let mut per_bin = Vec::with_capacity(bins);
    let mut under = n;
    for above in at_or_above {
        per_bin.push(under.saturating_sub(above) as f64);
        under = above;
    }
    per_bin.push(under as f64);
    Some((edges, per_bin))
}

/// How many values are below `edge`, from the counts between intervals
/// and the values inside them; `None` if the edge falls strictly between
/// two intervals, where the counts do not say.
fn values_below(
    edge: f64,
    intervals: &[Interval],
    counts: &[usize],
    inside: &[Vec<f64>],
) -> Option<usize> {
    let mut less = 0;
    for (j, (interval, held)) in intervals.iter().zip(inside).enumerate() {
        let after = j
            .checked_sub(1)
            .map_or(f64::NEG_INFINITY, |i| intervals[i].high);
        if interval.low <= edge {
            less += counts[2 * j];
        } else if after < edge {
            return None;
        }
        less += match interval {
            i if i.high < edge => held.len(),
            i if i.low >= edge => 0,
            _ => held.iter().filter(|x| **x < edge).count(),
        };
    }
    let last = intervals.last().map_or(f64::NEG_INFINITY, |i| i.high);
    if last < edge {
        return None;
    }
    Some(less)
}

/// About `size` of the `n` values, one from each stretch of `n / size`
/// (at a pseudo-random place in it, so a period in the data does not bias
/// the sample), sorted.
fn sorted_sample(chunks: &[&[f64]], n: usize, size: usize) -> Vec<f64> {
    let stride = n / size;
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ n as u64;
    let mut picked = Vec::with_capacity(size + 1);
    let mut start = 0;
    let mut chunk = 0;
    let mut offset = 0;
    while start + stride <= n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut at = start + (state % stride as u64) as usize - offset;
        while at >= chunks[chunk].len() {
            at -= chunks[chunk].len();
            offset += chunks[chunk].len();
            chunk += 1;
        }
        picked.push(chunks[chunk][at]);
        start += stride;
    }
    picked.sort_unstable_by(f64::total_cmp);
    picked
}

/// Tells for a value which interval it is in (class 2j+1 for interval j)
/// or which two it lies between (class 2j: below interval j), mostly by a
/// lookup in equal-width buckets over the sample's range: a bucket gets its
/// class when no bound lies in it or beside it, so a value that rounding
/// puts in the next bucket still gets its own class.
struct Classes {
    /// Interval bounds in order, each with whether a value equal to it is
    /// above it (a low bound: equal is inside).
    bounds: Vec<(f64, bool)>,
    low: f64,
    scale: f64,
    table: Vec<u8>,
}

impl Classes {
    fn new(intervals: &[Interval], low: f64, high: f64) -> Self {
        let bounds: Vec<(f64, bool)> = intervals
            .iter()
            .flat_map(|i| [(i.low, true), (i.high, false)])
            .collect();
        let mut classes = Classes {
            bounds,
            low,
            scale: BUCKETS as f64 / (high - low),
            table: vec![MIXED; BUCKETS],
        };
        // Buckets narrower than a few thousand steps between neighbouring
        // floats would not round reliably: every value is then compared.
        let width = (high - low) / BUCKETS as f64;
        if !(classes.scale.is_finite() && width > 1e-12 * low.abs().max(high.abs())) {
            return classes;
        }
        let start = |b: usize| match b {
            0 => f64::NEG_INFINITY,
            b if b >= BUCKETS => f64::INFINITY,
            b => low + b as f64 / classes.scale,
        };
        for b in 0..BUCKETS {
            let (from, to) = (start(b.saturating_sub(1)), start(b + 2));
            let clear = classes.bounds.iter().all(|(x, _)| *x < from || *x > to);
            if clear {
                let inner = low + (b as f64 + 0.5) / classes.scale;
                classes.table[b] = classes.compared(inner) as u8;
            }
        }
        classes
    }

    fn of(&self, v: f64) -> usize {
        let bucket = (((v - self.low) * self.scale) as i64).clamp(0, BUCKETS as i64 - 1);
        match self.table[bucket as usize] {
            MIXED => self.compared(v),
            class => class as usize,
        }
    }

    fn compared(&self, v: f64) -> usize {
        self.bounds
            .iter()
            .filter(|(x, closed)| if *closed { *x <= v } else { *x < v })
            .count()
    }
}

/// The intervals in order of their low bounds, overlapping ones made one.
fn merged(intervals: impl Iterator<Item = Interval>) -> Vec<Interval> {
    let mut all: Vec<Interval> = intervals.collect();
    all.sort_by(|a, b| a.low.total_cmp(&b.low));
    let mut out: Vec<Interval> = Vec::with_capacity(all.len());
    for i in all {
        match out.last_mut() {
            Some(last) if i.low <= last.high => last.high = last.high.max(i.high),
            _ => out.push(i),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Value sets that stress the sample: ties, a few levels, sorted and
    /// reversed orders, a distribution that moves along the data, all equal.
    fn cases() -> Vec<(String, Vec<f64>)> {
        let mut next = generator(0x9e37_79b9_7f4a_7c15);
        let n = 150_000;
        let mut cases = vec![
            (
                "uniform".to_string(),
                (0..n).map(|_| (next() % 1_000_000) as f64 / 7.0).collect(),
            ),
            (
                "few levels".to_string(),
                (0..n).map(|_| (next() % 5) as f64).collect(),
            ),
            ("all equal".to_string(), vec![3.25; n]),
            (
                "two values".to_string(),
                (0..n)
                    .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
                    .collect(),
            ),
        ];
        let mut sorted: Vec<f64> = (0..n).map(|_| (next() % 10_000) as f64 - 5_000.0).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        cases.push(("sorted".to_string(), sorted.clone()));
        cases.push(("reversed".to_string(), sorted.into_iter().rev().collect()));
        // The level grows along the data: a stretch-wise sample still sees it.
        cases.push((
            "moving".to_string(),
            (0..n)
                .map(|i| i as f64 / 1000.0 + (next() % 100) as f64)
                .collect(),
        ));
        // A range of a few steps between neighbouring floats.
        cases.push((
            "narrow".to_string(),
            (0..n)
                .map(|_| 1e6 + (next() % 16) as f64 * 1.164_153_218_269_348_1e-10)
                .collect(),
        ));
        // A spike every 4096 values: a period the sample must not follow.
        cases.push((
            "periodic".to_string(),
            (0..n)
                .map(|i| {
                    if i % 4096 == 0 {
                        1e9
                    } else {
                        (next() % 1000) as f64
                    }
                })
                .collect(),
        ));
        cases
    }

    #[test]
    fn sampled_bins_equal_selected_bins() {
        for (name, values) in cases() {
            for bins in [2, 10, 20, 97] {
                // Chunks of uneven sizes, as merged states leave them.
                let chunks: Vec<&[f64]> = values
                    .chunks(40_000)
                    .chain(std::iter::once(&[][..]))
                    .collect();
                let expected = selected(&chunks, bins);
                assert_eq!(
                    quantile_bins(&chunks, bins),
                    expected,
                    "{name}, {bins} bins"
                );
                let sampled = sampled(&chunks, bins, 4096, SPREAD);
                assert_eq!(sampled.as_ref(), Some(&expected), "{name}, {bins} bins");
            }
        }
    }

    #[test]
    fn a_misleading_sample_falls_back_or_agrees() {
        // Intervals of no spread miss most ranks: the answer is then None
        // (selection over all values follows), never a different one.
        let mut fell_back = 0;
        for (name, values) in cases() {
            let chunks: Vec<&[f64]> = values.chunks(65_536).collect();
            let expected = selected(&chunks, 10);
            match sampled(&chunks, 10, 2048, 0.0) {
                Some(answer) => assert_eq!(answer, expected, "{name}"),
                None => fell_back += 1,
            }
        }
        assert!(fell_back > 0);
    }

    #[test]
    fn few_values_are_selected_directly() {
        let values: Vec<f64> = (0..1000).map(|i| (i * 37 % 101) as f64).collect();
        assert_eq!(sampled(&[&values], 10, 2048, SPREAD), None);
        assert_eq!(quantile_bins(&[&values], 10), selected(&[&values], 10));
        assert_eq!(
            quantile_bins(&[&values[..1]], 10),
            selected(&[&values[..1]], 10)
        );
    }
}
