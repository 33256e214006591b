//! Evaluator-score rollups: how much traffic an LLM judge scored, the share
//! that passed, and a mergeable state for rollup tables.

use crate::drift::Bytes;
use crate::stats;
use datafusion::common::DataFusionError;
use datafusion::error::Result;

const FORMAT_VERSION: u8 = 1;

/// Count, NULL count, mean and M2 (Welford; Chan et al. to merge) and the
/// count at or above a pass threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreState {
    /// The pass threshold the state counts against.
    pub threshold: f64,
    /// Rows seen, scored or not.
    pub rows: f64,
    /// Rows with a score.
    pub scored: f64,
    /// Mean of the scores.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Scores at or above the threshold.
    pub passed: f64,
}

impl ScoreState {
    /// An empty state counting passes at `threshold`.
    pub fn new(threshold: f64) -> Self {
        ScoreState {
            threshold,
            rows: 0.0,
            scored: 0.0,
            mean: 0.0,
            m2: 0.0,
            passed: 0.0,
        }
    }

    /// Adds a row (`None` for a row the judge did not score).
    pub fn add(&mut self, score: Option<f64>) {
        self.rows += 1.0;
        let Some(x) = score.filter(|x| x.is_finite()) else {
            return;
        };
        self.scored += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.scored;
        self.m2 += delta * (x - self.mean);
        if x >= self.threshold {
            self.passed += 1.0;
        }
    }

    /// Adds another state with the same threshold.
    pub fn merge(&mut self, other: &ScoreState) -> Result<()> {
        if other.threshold.to_bits() != self.threshold.to_bits()
            && other.rows > 0.0
            && self.rows > 0.0
        {
            return Err(DataFusionError::Execution(format!(
                "cannot merge score states with thresholds {} and {}",
                self.threshold, other.threshold
            )));
        }
        if self.rows == 0.0 {
            self.threshold = other.threshold;
        }
        let n = self.scored + other.scored;
        if n > 0.0 {
            let delta = other.mean - self.mean;
            self.mean += delta * other.scored / n;
            self.m2 += other.m2 + delta * delta * self.scored * other.scored / n;
        }
        self.scored = n;
        self.rows += other.rows;
        self.passed += other.passed;
        Ok(())
    }

    /// Share of scored rows at or above the threshold.
    pub fn pass_rate(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.passed / self.scored)
    }

    /// Wilson 95 % interval of the pass rate.
    pub fn pass_rate_interval(&self) -> Option<(f64, f64)> {
        (self.scored > 0.0).then(|| stats::wilson_interval(self.passed, self.scored))
    }

    /// Share of rows that have a score.
    pub fn coverage(&self) -> Option<f64> {
        (self.rows > 0.0).then(|| self.scored / self.rows)
    }

    /// Mean score.
    pub fn mean(&self) -> Option<f64> {
        (self.scored > 0.0).then_some(self.mean)
    }

    /// Sample standard deviation (n − 1), as SQL's `stddev`.
    pub fn stddev(&self) -> Option<f64> {
        (self.scored > 1.0).then(|| (self.m2 / (self.scored - 1.0)).sqrt())
    }

    /// Serialises the state (the BYTEA format, see `docs/storage.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(49);
        out.push(FORMAT_VERSION);
        for v in [
            self.threshold,
            self.rows,
            self.scored,
            self.mean,
            self.m2,
            self.passed,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads a state written by [`ScoreState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<ScoreState> {
        let bad = || DataFusionError::Execution("invalid score state".into());
        let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
        if version != FORMAT_VERSION || rest.len() != 48 {
            return Err(bad());
        }
        let mut r = Bytes(rest);
        Ok(ScoreState {
            threshold: r.f64()?,
            rows: r.f64()?,
            scored: r.f64()?,
            mean: r.f64()?,
            m2: r.f64()?,
            passed: r.f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_states_equal_one_pass() {
        let scores: Vec<Option<f64>> = (0..1000)
            .map(|i| (i % 7 != 0).then(|| ((i * 37) % 101) as f64 / 100.0))
            .collect();
        let mut whole = ScoreState::new(0.5);
        let mut parts = [
            ScoreState::new(0.5),
            ScoreState::new(0.5),
            ScoreState::new(0.5),
        ];
        for (i, s) in scores.iter().enumerate() {
            whole.add(*s);
            parts[i % 3].add(*s);
        }
        let mut merged = ScoreState::new(0.5);
        for p in &parts {
            merged
                .merge(&ScoreState::decode(&p.encode()).expect("decodes"))
                .expect("same threshold");
        }
        assert_eq!(merged.rows, whole.rows);
        assert_eq!(merged.passed, whole.passed);
        assert!((merged.mean().unwrap() - whole.mean().unwrap()).abs() < 1e-12);
        assert!((merged.stddev().unwrap() - whole.stddev().unwrap()).abs() < 1e-12);
        assert!(
            merged
                .merge(&{
                    let mut other = ScoreState::new(0.7);
                    other.add(Some(1.0));
                    other
                })
                .is_err()
        );
    }
}
