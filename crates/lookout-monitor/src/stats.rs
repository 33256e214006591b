//! The statistics behind the drift and score functions, on plain slices.
//!
//! Every function here matches a named scipy/numpy/statsmodels reference
//! (see `docs/monitoring.md`); the tests compare against golden values.

use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::kolmogorov;

/// Proportion given to an empty bin by PSI and KL (fixed, as in Evidently's
/// default and the bench's plain-SQL PSI).
pub const EMPTY_BIN_SHARE: f64 = 1e-4;

/// Largest sample for which the two-sample KS p-value is exact (scipy's
/// `method='auto'` switches to the asymptotic distribution above it).
const KS_EXACT_MAX_N: usize = 10_000;

/// The `bins - 1` inner bin edges: the quantiles of `values` at k/bins,
/// interpolating linearly between the two nearest ranks (numpy's default,
/// DuckDB's `quantile_cont`). Found by selection, not by sorting; `values`
/// is reordered.
pub fn quantile_edges(values: &mut [f64], bins: usize) -> Vec<f64> {
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    // The ranks each edge interpolates between, then all of them selected
    // at once: each selection splits the slice, and the ranks left of it are
    // looked for on the left only (about n·log(ranks) comparisons instead of
    // one pass over what is left per edge).
    let positions: Vec<f64> = (1..bins)
        .map(|k| (k as f64 / bins as f64) * (n - 1) as f64)
        .collect();
    let mut ranks: Vec<usize> = positions
        .iter()
        .flat_map(|pos| {
            let lo = (pos.floor() as usize).min(n - 1);
            [lo, (lo + 1).min(n - 1)]
        })
        .collect();
    select_ranks(values, &mut ranks);
    positions
        .iter()
        .map(|pos| {
            let lo = (pos.floor() as usize).min(n - 1);
            let (low, high) = (values[lo], values[(lo + 1).min(n - 1)]);
            low + (high - low) * (pos - lo as f64)
        })
        .collect()
}

/// Reorders `values` so that each position in `ranks` (below `values.len()`;
/// sorted here) holds the value of that rank in `f64::total_cmp` order, as
/// sorting would put it there, in about n·log(ranks) comparisons.
pub fn select_ranks(values: &mut [f64], ranks: &mut Vec<usize>) {
    ranks.sort_unstable();
    ranks.dedup();
    ranks.retain(|r| *r < values.len());
    select_sorted_ranks(values, 0, ranks);
}

/// [`select_ranks`] on `values` starting at rank `offset` of the whole.
fn select_sorted_ranks(values: &mut [f64], offset: usize, ranks: &[usize]) {
    if ranks.is_empty() || values.is_empty() {
        return;
    }
    let middle = ranks.len() / 2;
    let at = ranks[middle] - offset;
    let (left, _, right) = values.select_nth_unstable_by(at, f64::total_cmp);
    select_sorted_ranks(left, offset, &ranks[..middle]);
    select_sorted_ranks(right, offset + at + 1, &ranks[middle + 1..]);
}

/// Counts per bin, where bin k holds the values x with
/// `edges[k-1] <= x < edges[k]` (numpy's `searchsorted(edges, x, 'right')`).
/// Counted edge by edge (how many values lie at or above it), which the
/// compiler turns into vector compares, rather than by a search per value.
pub fn bin_counts(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let at_or_above: Vec<usize> = edges
        .iter()
        .map(|e| values.iter().filter(|x| e <= *x).count())
        .collect();
    let mut counts = Vec::with_capacity(edges.len() + 1);
    let mut below = values.len();
    for above in at_or_above {
        counts.push(below.saturating_sub(above) as f64);
        below = above;
    }
    counts.push(below as f64);
    counts
}

fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

fn with_empty_bin_share(shares: Vec<f64>) -> Vec<f64> {
    shares
        .into_iter()
        .map(|p| if p == 0.0 { EMPTY_BIN_SHARE } else { p })
        .collect()
}

/// Population stability index Σ (c − b)·ln(c / b) of two histograms over the
/// same bins; empty bins count as [`EMPTY_BIN_SHARE`], without renormalising.
pub fn psi(base_counts: &[f64], cur_counts: &[f64]) -> f64 {
    let b = with_empty_bin_share(shares(base_counts));
    let c = with_empty_bin_share(shares(cur_counts));
    b.iter().zip(&c).map(|(b, c)| (c - b) * (c / b).ln()).sum()
}

/// KL(baseline ‖ current) in nats: empty bins as [`EMPTY_BIN_SHARE`], then
/// both renormalised (`scipy.stats.entropy`).
pub fn kl(base_counts: &[f64], cur_counts: &[f64]) -> f64 {
    let b = shares(&with_empty_bin_share(shares(base_counts)));
    let c = shares(&with_empty_bin_share(shares(cur_counts)));
    b.iter()
        .zip(&c)
        .map(|(b, c)| if *b > 0.0 { b * (b / c).ln() } else { 0.0 })
        .sum()
}

/// Jensen-Shannon distance in base 2, no smoothing (0·ln 0 = 0), as
/// `scipy.spatial.distance.jensenshannon(b, c, base=2)`.
pub fn js_distance(base_counts: &[f64], cur_counts: &[f64]) -> f64 {
    let b = shares(base_counts);
    let c = shares(cur_counts);
    let rel = |p: f64, m: f64| if p > 0.0 { p * (p / m).ln() } else { 0.0 };
    let divergence: f64 = b
        .iter()
        .zip(&c)
        .map(|(b, c)| {
            let m = (b + c) / 2.0;
            rel(*b, m) + rel(*c, m)
        })
        .sum::<f64>()
        / 2.0;
    (divergence / std::f64::consts::LN_2).max(0.0).sqrt()
}

/// Two-sample Kolmogorov-Smirnov statistic D = sup |F_b − F_c| of two sorted
/// samples.
pub fn ks_statistic(base: &[f64], cur: &[f64]) -> f64 {
    let (n, m) = (base.len() as f64, cur.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < base.len() && j < cur.len() {
        let x = base[i].min(cur[j]);
        while i < base.len() && base[i] <= x {
            i += 1;
        }
        while j < cur.len() && cur[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // Past the end of one sample the difference only shrinks.
    d.max((i as f64 / n - j as f64 / m).abs())
}

/// Two-sided p-value of the two-sample KS test with statistic `d`, as
/// `scipy.stats.ks_2samp(method='auto')`: exact up to 10,000 values per
/// sample, Kolmogorov's distribution with n·m/(n+m) values above.
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if n.max(m) <= KS_EXACT_MAX_N
        && let Some(p) = ks_exact_pvalue(d, n, m)
    {
        return p;
    }
    let (n, m) = (n as f64, m as f64);
    let effective = (n * m / (n + m)).round_ties_even();
    kolmogorov::sf(effective.max(1.0) as u64, d)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// P(D ≥ d) under the null hypothesis, by walking the lattice of merged
/// samples: a(i, j) is the probability that a uniformly random path from
/// (0, 0) to (i, j) stays strictly inside the band |i/n − j/m| < d, so
/// a(i, j) = (i·a(i−1, j) + j·a(i, j−1)) / (i + j) stays within [0, 1].
fn ks_exact_pvalue(d: f64, n: usize, m: usize) -> Option<f64> {
    let (n64, m64) = (n as u64, m as u64);
    let g = gcd(n64, m64);
    let lcm = (n64 / g) * m64;
    // D is a multiple of 1/lcm; recover that integer exactly.
    let h = (d * lcm as f64).round() as u64;
    if h == 0 {
        return Some(1.0);
    }
    // Inside the band: |i·m − j·n| < h·g.
    let bound = (h * g) as i128;
    let inside =
        |i: usize, j: usize| ((i as i128) * (m as i128) - (j as i128) * (n as i128)).abs() < bound;
    let mut row = vec![0.0f64; m + 1];
    // Row i = 0: only (0, j) with j·n < bound.
    row[0] = 1.0;
    for j in 1..=m {
        row[j] = if inside(0, j) { row[j - 1] } else { 0.0 };
    }
    // The band [lo, hi] only moves right as i grows, so cells right of it
    // are still zero and only those it leaves on the left need clearing.
    let mut previous_lo = 0;
    for i in 1..=n {
        let fi = i as f64;
        let center = i as f64 * m as f64 / n as f64;
        let half = bound as f64 / n as f64;
        let lo = ((center - half).floor().max(0.0)) as usize;
        let hi = (((center + half).ceil()) as usize).min(m);
        for cell in &mut row[previous_lo.min(lo)..lo] {
            *cell = 0.0;
        }
        previous_lo = lo;
        let mut left = 0.0;
        for (j, cell) in row.iter_mut().enumerate().take(hi + 1).skip(lo) {
            let value = if inside(i, j) {
                let fj = j as f64;
                (fi * *cell + fj * left) / (fi + fj)
            } else {
                0.0
            };
            *cell = value;
            left = value;
        }
    }
    let p = 1.0 - row[m];
    (0.0..=1.0).contains(&p).then_some(p)
}

/// First Wasserstein distance ∫|F_b − F_c| dx of two sorted samples
/// (`scipy.stats.wasserstein_distance`).
pub fn wasserstein(base: &[f64], cur: &[f64]) -> f64 {
    let (n, m) = (base.len() as f64, cur.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    while i < base.len() || j < cur.len() {
        let x = match (base.get(i), cur.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        if let Some(p) = prev {
            total += (i as f64 / n - j as f64 / m).abs() * (x - p);
        }
        while i < base.len() && base[i] <= x {
            i += 1;
        }
        while j < cur.len() && cur[j] <= x {
            j += 1;
        }
        prev = Some(x);
    }
    total
}

/// The `bins - 1` inner bin edges of a weighted sample sorted by value: for
/// each k/bins, the first value whose cumulative share of the weight reaches
/// it (numpy's `quantile(x, q, weights=w, method='inverted_cdf')`).
pub fn weighted_quantile_edges(sorted: &[(f64, f64)], bins: usize) -> Vec<f64> {
    let total: f64 = sorted.iter().map(|(_, w)| w).sum();
    let mut cdf = Vec::with_capacity(sorted.len());
    let mut running = 0.0;
    for (_, w) in sorted {
        running += w;
        cdf.push(running / total);
    }
    (1..bins)
        .map(|k| {
            let q = k as f64 / bins as f64;
            let i = cdf.partition_point(|c| *c < q).min(sorted.len() - 1);
            sorted[i].0
        })
        .collect()
}

/// Weight per bin, bins as in [`bin_counts`].
pub fn weighted_bin_sums(values: &[(f64, f64)], edges: &[f64]) -> Vec<f64> {
    let mut sums = vec![0.0; edges.len() + 1];
    for (x, w) in values {
        sums[edges.partition_point(|e| e <= x)] += w;
    }
    sums
}

/// Walks two weighted samples sorted by value, calling `step(x, next, Fb,
/// Fc)` for each distinct value x, with both weighted empirical CDFs at x
/// and the next distinct value (None after the last).
fn walk_weighted_cdfs(
    base: &[(f64, f64)],
    cur: &[(f64, f64)],
    mut step: impl FnMut(f64, Option<f64>, f64, f64),
) {
    let total = |s: &[(f64, f64)]| s.iter().map(|(_, w)| w).sum::<f64>();
    let (wb, wc) = (total(base), total(cur));
    let (mut i, mut j, mut fb, mut fc) = (0, 0, 0.0, 0.0);
    while i < base.len() || j < cur.len() {
        let x = match (base.get(i), cur.get(j)) {
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => break,
        };
        while i < base.len() && base[i].0 <= x {
            fb += base[i].1;
            i += 1;
        }
        while j < cur.len() && cur[j].0 <= x {
            fc += cur[j].1;
            j += 1;
        }
        let next = match (base.get(i), cur.get(j)) {
            (Some(a), Some(b)) => Some(a.0.min(b.0)),
            (Some(a), None) => Some(a.0),
            (None, Some(b)) => Some(b.0),
            (None, None) => None,
        };
        step(x, next, fb / wb, fc / wc);
    }
}

/// Two-sample KS statistic of weighted samples sorted by value: the largest
/// gap between their weighted empirical CDFs.
pub fn weighted_ks_statistic(base: &[(f64, f64)], cur: &[(f64, f64)]) -> f64 {
    let mut d = 0.0f64;
    walk_weighted_cdfs(base, cur, |_, _, fb, fc| d = d.max((fb - fc).abs()));
    d
}

/// First Wasserstein distance of weighted samples sorted by value
/// (`scipy.stats.wasserstein_distance(b, c, wb, wc)`).
pub fn weighted_wasserstein(base: &[(f64, f64)], cur: &[(f64, f64)]) -> f64 {
    let mut total = 0.0;
    walk_weighted_cdfs(base, cur, |x, next, fb, fc| {
        if let Some(next) = next {
            total += (fb - fc).abs() * (next - x);
        }
    });
    total
}

/// p-value of the χ² test of homogeneity on the 2×k table of counts
/// (`scipy.stats.chi2_contingency`, Yates' correction when k = 2).
pub fn chi2_homogeneity_pvalue(base_counts: &[f64], cur_counts: &[f64]) -> f64 {
    let k = base_counts.len();
    if k < 2 {
        return 1.0;
    }
    let row_totals = [
        base_counts.iter().sum::<f64>(),
        cur_counts.iter().sum::<f64>(),
    ];
    let total = row_totals[0] + row_totals[1];
    let mut statistic = 0.0;
    for (row, counts) in [base_counts, cur_counts].iter().enumerate() {
        for (col, observed) in counts.iter().enumerate() {
            let expected = row_totals[row] * (base_counts[col] + cur_counts[col]) / total;
            let mut diff = (observed - expected).abs();
            if k == 2 {
                diff -= diff.min(0.5);
            }
            statistic += diff * diff / expected;
        }
    }
    match ChiSquared::new((k - 1) as f64) {
        Ok(dist) => dist.sf(statistic),
        Err(_) => f64::NAN,
    }
}

/// z for a two-sided 95 % interval: `scipy.stats.norm.isf(0.025)`.
const Z_95: f64 = 1.959_963_984_540_054;

/// Wilson score interval (95 %) of a proportion `passed / n`, as
/// `statsmodels proportion_confint(method='wilson')`.
pub fn wilson_interval(passed: f64, n: f64) -> (f64, f64) {
    let p = passed / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (center - half, center + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9,
            "{actual} differs from {expected}"
        );
    }

    fn numeric_case() -> (Vec<f64>, Vec<f64>) {
        let base = (0..200).map(|i| 0.1 * i as f64).collect();
        let cur = (0..150).map(|i| 0.1 * i as f64 + 2.0).collect();
        (base, cur)
    }

    #[test]
    fn numeric_golden_vectors() {
        let (base, cur) = numeric_case();
        let mut shuffled: Vec<f64> = base.iter().rev().copied().collect();
        let edges = quantile_edges(&mut shuffled, 10);
        // The same edges as interpolating in the sorted sample.
        let by_sorting: Vec<f64> = (1..10)
            .map(|k| {
                let pos = k as f64 / 10.0 * (base.len() - 1) as f64;
                let lo = pos.floor() as usize;
                base[lo] + (base[lo + 1] - base[lo]) * (pos - lo as f64)
            })
            .collect();
        assert_eq!(edges, by_sorting);
        let (b, c) = (bin_counts(&base, &edges), bin_counts(&cur, &edges));
        assert_close(psi(&b, &c), 1.4608108252496521);
        assert_close(kl(&b, &c), 1.2209200958936637);
        assert_close(js_distance(&b, &c), 0.3383555418502933);
        let d = ks_statistic(&base, &cur);
        assert_close(d, 0.155);
        assert_close(ks_pvalue(d, base.len(), cur.len()), 0.029557261789682196);
        assert_close(wasserstein(&base, &cur), 1.3);
    }

    #[test]
    fn edges_and_bins_match_sorting_and_searching() {
        // A small deterministic generator: ties, negative values, few and
        // many values, bins from 2 to 20.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..300 {
            let n = 1 + (next() % 500) as usize;
            let levels = 1 + next() % 50;
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    (next() % levels) as f64 * 0.5 - 7.0
                        + if case % 3 == 0 {
                            (next() % 1000) as f64 / 1e3
                        } else {
                            0.0
                        }
                })
                .collect();
            let bins = 2 + (next() % 19) as usize;
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            let expected: Vec<f64> = (1..bins)
                .map(|k| {
                    let pos = k as f64 / bins as f64 * (n - 1) as f64;
                    let lo = (pos.floor() as usize).min(n - 1);
                    let hi = (lo + 1).min(n - 1);
                    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
                })
                .collect();
            let mut shuffled = values.clone();
            let edges = quantile_edges(&mut shuffled, bins);
            assert_eq!(edges, expected, "case {case}");
            let mut searched = vec![0.0; edges.len() + 1];
            for x in &values {
                searched[edges.partition_point(|e| e <= x)] += 1.0;
            }
            assert_eq!(bin_counts(&values, &edges), searched, "case {case}");
        }
    }

    #[test]
    fn categorical_golden_vectors() {
        let (b, c) = ([50.0, 30.0, 20.0], [35.0, 40.0, 25.0]);
        assert_close(psi(&b, &c), 0.09342662640169846);
        assert_close(kl(&b, &c), 0.04740413997098998);
        assert_close(js_distance(&b, &c), 0.12952013926389636);
        assert_close(chi2_homogeneity_pvalue(&b, &c), 0.09870764250999253);
        let (b, c) = ([60.0, 40.0, 0.0], [50.0, 40.0, 10.0]);
        assert_close(psi(&b, &c), 0.7083169080497109);
        assert_close(kl(&b, &c), 0.10859129441919926);
        assert_close(js_distance(&b, &c), 0.23083193818809797);
    }

    #[test]
    fn identical_samples_do_not_drift() {
        let (base, _) = numeric_case();
        assert_eq!(ks_statistic(&base, &base), 0.0);
        assert_eq!(ks_pvalue(0.0, 200, 200), 1.0);
        assert_eq!(wasserstein(&base, &base), 0.0);
        assert_eq!(chi2_homogeneity_pvalue(&[5.0], &[7.0]), 1.0);
    }

    #[test]
    fn wilson_matches_statsmodels() {
        // proportion_confint(30, 100, method='wilson')
        let (lo, hi) = wilson_interval(30.0, 100.0);
        assert_close(lo, 0.21894885294932756);
        assert_close(hi, 0.39584854633346667);
    }
}
