#!/usr/bin/env python3
"""Reference values for Lookout's monitoring functions, from scipy, numpy and
statsmodels, exactly as docs/monitoring.md defines each function.

    monitor_references.py fixtures OUT.json
        small data sets (up to 10 k rows) with their expected outputs; the
        output is checked in (crates/lookout-monitor/fixtures/references.json)
    monitor_references.py embeddings OUT.json
        embedding data sets with their expected drift; checked in
        (crates/lookout-monitor/fixtures/embeddings.json)
    monitor_references.py large SEED ROWS OUT.parquet OUT.json
        a large data set (regenerated at test time) as Parquet with columns
        ts, dataset, value, category, score, is_current, and expected outputs
"""
import json
import struct
import sys

import numpy as np
from scipy.spatial.distance import cosine, jensenshannon, pdist, squareform
from scipy.stats import chi2_contingency, entropy, ks_2samp, wasserstein_distance
from statsmodels.stats.proportion import proportion_confint

EPS = 1e-4
QUANTILES = [0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999]


def numeric_expected(base, cur, bins=10):
    base, cur = np.asarray(base, float), np.asarray(cur, float)
    if len(base) == 0 or len(cur) == 0:
        return {k: None for k in ["psi", "kl", "js", "ks", "ks_pvalue", "wasserstein"]}
    edges = np.quantile(base, [k / bins for k in range(1, bins)])
    b = np.bincount(np.searchsorted(edges, base, side="right"), minlength=bins) / len(base)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / len(cur)
    return binned_expected(b, c) | {
        "ks": float(ks_2samp(base, cur).statistic),
        "ks_pvalue": float(ks_2samp(base, cur, method="auto").pvalue),
        "wasserstein": float(wasserstein_distance(base, cur)),
    }


def binned_expected(b, c):
    b0, c0 = np.where(b == 0, EPS, b), np.where(c == 0, EPS, c)
    return {
        "psi": float(np.sum((c0 - b0) * np.log(c0 / b0))),
        "kl": float(entropy(b0, c0)),
        "js": float(jensenshannon(b, c, base=2)),
    }


def categorical_expected(base, cur):
    if len(base) == 0 or len(cur) == 0:
        return {k: None for k in ["psi", "kl", "js", "chi2_pvalue", "new_category_share"]}
    cats = sorted(set(base) | set(cur))
    bc = np.array([base.count(k) for k in cats], float)
    cc = np.array([cur.count(k) for k in cats], float)
    out = binned_expected(bc / bc.sum(), cc / cc.sum())
    out["chi2_pvalue"] = 1.0 if len(cats) < 2 else float(chi2_contingency(np.array([bc, cc])).pvalue)
    seen = set(base)
    out["new_category_share"] = sum(1 for x in cur if x not in seen) / len(cur)
    return out


def score_expected(scores, threshold):
    x = np.array([s for s in scores if s is not None], float)
    passed = int(np.sum(x >= threshold))
    lo, hi = proportion_confint(passed, len(x), method="wilson")
    return {
        "threshold": threshold,
        "pass_rate": passed / len(x),
        "pass_rate_low": float(lo),
        "pass_rate_high": float(hi),
        "coverage": len(x) / len(scores),
        "mean": float(np.mean(x)),
        "stddev": float(np.std(x, ddof=1)),
    }


def quantiles_expected(values):
    x = np.asarray(values, float)
    return {str(q): float(np.quantile(x, q, method="inverted_cdf")) for q in QUANTILES}


def fixtures():
    rng = np.random.default_rng(20261127)
    numeric = {
        "golden": ([0.1 * i for i in range(200)], [0.1 * i + 2.0 for i in range(150)]),
        "normal_shift": (rng.normal(0, 1, 5000), rng.normal(0.1, 1.1, 4000)),
        "normal_same": (rng.normal(0, 1, 3000), rng.normal(0, 1, 3000)),
        "lognormal_tail": (rng.lognormal(3, 1, 8000), rng.lognormal(3.1, 1.2, 10000)),
        "ties": (rng.poisson(5, 3000).astype(float), rng.poisson(5.5, 2500).astype(float)),
        "tiny": (rng.normal(0, 1, 5), rng.normal(1, 1, 3)),
        "empty_current": (rng.normal(0, 1, 100), []),
    }
    letters = list("abcdef")
    categorical = {
        "golden": (["a"] * 50 + ["b"] * 30 + ["c"] * 20, ["a"] * 35 + ["b"] * 40 + ["c"] * 25),
        "golden_new": (["a"] * 60 + ["b"] * 40, ["a"] * 50 + ["b"] * 40 + ["z"] * 10),
        "shifted": (
            list(rng.choice(letters, 4000, p=[0.3, 0.25, 0.2, 0.15, 0.07, 0.03])),
            list(rng.choice(letters + ["g"], 3000, p=[0.25, 0.25, 0.2, 0.15, 0.08, 0.04, 0.03])),
        ),
        "two_categories": (["ok"] * 70 + ["error"] * 30, ["ok"] * 55 + ["error"] * 45),
        "one_category": (["ok"] * 10, ["ok"] * 12),
    }
    scores = [None if rng.random() < 0.2 else float(round(s, 3)) for s in rng.beta(5, 2, 3000)]
    latency = rng.lognormal(6, 0.8, 10000)
    out = {"numeric": {}, "categorical": {}}
    for name, (b, c) in numeric.items():
        b, c = [float(v) for v in b], [float(v) for v in c]
        out["numeric"][name] = {"base": b, "cur": c, "expected": numeric_expected(b, c)}
    for name, (b, c) in categorical.items():
        b, c = [str(v) for v in b], [str(v) for v in c]
        out["categorical"][name] = {"base": b, "cur": c, "expected": categorical_expected(b, c)}
    out["scores"] = {"values": scores, "expected": score_expected(scores, 0.7)}
    latency = [float(v) for v in latency]
    out["latency"] = {"values": latency, "expected": quantiles_expected(latency)}
    # Weights of a sampled table: kept rows stand for 1 (keep-rules), 50 (a 2 %
    # hash sample) or a fractional N/kept; a stream of its own, so the fixtures
    # above do not change.
    wrng = np.random.default_rng(2026112702)
    weights = [float(w) for w in wrng.choice([1.0, 50.0, 7.25], size=len(latency), p=[0.2, 0.7, 0.1])]
    x, w = np.asarray(latency), np.asarray(weights)
    out["weighted_latency"] = {
        "values": latency,
        "weights": weights,
        "total": float(w.sum()),
        "expected": {str(q): float(np.quantile(x, q, weights=w, method="inverted_cdf")) for q in QUANTILES},
    }
    out["weighted_drift"] = weighted_drift_fixture()
    return out


def weighted_ecdf_gap(b, wb, c, wc):
    """sup |F_b - F_c| and the integral of |F_b - F_c|, weighted ECDFs."""
    grid = np.unique(np.concatenate([b, c]))

    def cdf(x, w):
        order = np.argsort(x, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(w[order])]) / w.sum()
        return cum[np.searchsorted(x[order], grid, side="right")]

    gap = np.abs(cdf(b, wb) - cdf(c, wc))
    return float(gap.max())


def weighted_drift_fixture():
    """Weighted drift of a sampled table (weights 1, 50 and 7.25) against
    numpy's weighted quantiles and histograms and scipy's weighted
    Wasserstein distance; a stream of its own."""
    rng = np.random.default_rng(2026112801)
    b = rng.lognormal(5, 1, 3000)
    c = rng.lognormal(5.3, 1.1, 2500)
    wb = rng.choice([1.0, 50.0, 7.25], size=len(b), p=[0.2, 0.7, 0.1])
    wc = rng.choice([1.0, 50.0, 7.25], size=len(c), p=[0.3, 0.6, 0.1])
    bins = 10
    edges = np.quantile(b, [k / bins for k in range(1, bins)], weights=wb, method="inverted_cdf")
    hb = np.bincount(np.searchsorted(edges, b, side="right"), weights=wb, minlength=bins)
    hc = np.bincount(np.searchsorted(edges, c, side="right"), weights=wc, minlength=bins)
    numeric = binned_expected(hb / hb.sum(), hc / hc.sum()) | {
        "ks": weighted_ecdf_gap(b, wb, c, wc),
        "wasserstein": float(wasserstein_distance(b, c, wb, wc)),
    }
    cats = list("abcde")
    kb = rng.choice(cats, size=2000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    kc = rng.choice(cats + ["f"], size=1800, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    vb = rng.choice([1.0, 50.0, 7.25], size=len(kb), p=[0.2, 0.7, 0.1])
    vc = rng.choice([1.0, 50.0, 7.25], size=len(kc), p=[0.2, 0.7, 0.1])
    names = sorted(set(kb) | set(kc))
    cb = np.array([vb[kb == k].sum() for k in names])
    cc = np.array([vc[kc == k].sum() for k in names])
    return {
        "numeric": {
            "base": [float(v) for v in b], "base_weights": [float(v) for v in wb],
            "cur": [float(v) for v in c], "cur_weights": [float(v) for v in wc],
            "expected": numeric,
        },
        "categorical": {
            "base": [str(v) for v in kb], "base_weights": [float(v) for v in vb],
            "cur": [str(v) for v in kc], "cur_weights": [float(v) for v in vc],
            "expected": binned_expected(cb / cb.sum(), cc / cc.sum()),
        },
    }


MASK = (1 << 64) - 1
SEED = 0x4C4F4F4B4F555421


def splitmix64(state):
    """One SplitMix64 step: the next state and its output."""
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def sample_hash(row):
    h = SEED
    for v in row:
        h = splitmix64(h ^ struct.unpack("<Q", struct.pack("<d", v))[0])[1]
    return h


def embedding_sample(rows, keep):
    """The `keep` rows with the smallest (hash, values), in value order."""
    ranked = sorted((sample_hash(r), tuple(r)) for r in rows)[:keep]
    return np.array(sorted(values for _, values in ranked), float)


def mmd_test(x, y, permutations):
    """Unbiased MMD^2 with the Gaussian kernel exp(-d^2 / h), h the median
    squared distance of the pooled rows, and the permutation p-value with
    SplitMix64-driven Fisher-Yates shuffles, as docs/monitoring.md states."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return None, None
    z = np.vstack([x, y])
    d2 = pdist(z, "sqeuclidean")
    h = float(np.median(d2))
    if not h > 0:
        h = 1.0
    k = np.exp(-squareform(d2) / h)
    np.fill_diagonal(k, 0.0)

    def statistic(ix, iy):
        return (k[np.ix_(ix, ix)].sum() / (m * (m - 1)) + k[np.ix_(iy, iy)].sum() / (n * (n - 1))
                - 2 * k[np.ix_(ix, iy)].sum() / (m * n))

    total = m + n
    observed = statistic(list(range(m)), list(range(m, total)))
    state, as_large = SEED, 0
    for _ in range(permutations):
        order = list(range(total))
        for i in range(total - 1, 0, -1):
            state, draw = splitmix64(state)
            j = draw % (i + 1)
            order[i], order[j] = order[j], order[i]
        if statistic(order[:m], order[m:]) >= observed:
            as_large += 1
    return float(observed), (1 + as_large) / (1 + permutations)


def embeddings_fixture():
    rng = np.random.default_rng(2026120501)
    rows = lambda n, dims, loc=0.0, scale=1.0: np.round(rng.normal(loc, scale, (n, dims)), 6)
    direction = np.zeros(4)
    direction[0] = 1.0
    datasets = {
        "shifted": (rows(120, 16), rows(100, 16, 0.3)),
        "same": (rows(80, 8), rows(90, 8)),
        "rotated": (rows(50, 4) + 2 * direction, rows(60, 4) + 2 * np.roll(direction, 1)),
        "tiny": (rows(1, 3), rows(3, 3, 1.0)),
        "sampled": (rows(260, 6), rows(240, 6, 0.1, 1.2)),
    }
    out = {}
    for name, (b, c) in datasets.items():
        expected = {"cosine": float(cosine(b.mean(axis=0), c.mean(axis=0)))}
        mmd, p = mmd_test(embedding_sample(b, 500), embedding_sample(c, 500), 200)
        expected |= {"mmd": mmd, "mmd_pvalue": p}
        mmd, p = mmd_test(embedding_sample(b, 100), embedding_sample(c, 100), 50)
        expected |= {"mmd_sample_100": mmd, "mmd_pvalue_50_sample_100": p}
        out[name] = {"base": b.tolist(), "cur": c.tolist(), "expected": expected}
    return out


def large(seed, rows, parquet_path, json_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    half = rows // 2
    datasets = {
        "lognormal": (rng.lognormal(5, 1, half), rng.lognormal(5.02, 1.01, rows - half)),
        "normal": (rng.normal(0, 1, half), rng.normal(0, 1, rows - half)),
    }
    cats = list("abcdefghij")
    p = np.arange(10, 0, -1, dtype=float)
    p /= p.sum()
    q = p.copy()
    q[0] -= 0.002
    q[9] += 0.002
    base_cat = rng.choice(cats, half, p=p)
    cur_cat = rng.choice(cats + ["k"], rows - half, p=np.append(q * 0.999, 0.001))
    scores = rng.beta(5, 2, rows)
    scores = np.where(rng.random(rows) < 0.1, np.nan, np.round(scores, 4))
    table = {"dataset": [], "value": [], "category": [], "score": [], "is_current": []}
    expected = {}
    for name, (b, c) in datasets.items():
        n = len(b) + len(c)
        table["dataset"] += [name] * n
        table["value"] += list(b) + list(c)
        table["category"] += list(base_cat) + list(cur_cat)
        table["score"] += [None if np.isnan(s) else float(s) for s in scores]
        table["is_current"] += [False] * len(b) + [True] * len(c)
        expected[name] = numeric_expected(b, c) | {
            "quantiles": quantiles_expected(np.concatenate([b, c]))
        }
    expected["categories"] = categorical_expected(list(base_cat), list(cur_cat))
    expected["scores"] = score_expected([None if np.isnan(s) else s for s in scores], 0.7)
    n = len(table["value"])
    start = np.datetime64("2025-01-01T00:00:00", "us")
    table["ts"] = pa.array(start + np.arange(n) * np.timedelta64(1, "s"), pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table(table), parquet_path)
    with open(json_path, "w") as f:
        json.dump(expected, f)


def main():
    if sys.argv[1] == "fixtures":
        with open(sys.argv[2], "w") as f:
            json.dump(fixtures(), f)
    elif sys.argv[1] == "embeddings":
        with open(sys.argv[2], "w") as f:
            json.dump(embeddings_fixture(), f)
    elif sys.argv[1] == "large":
        large(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
