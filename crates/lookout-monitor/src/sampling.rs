//! The hash that decides which rows of nominal traffic a sampled table keeps.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::error::Result;
use twox_hash::XxHash32;

use crate::udf::Spec;

/// Where a key falls in [0, 1): xxHash32 (seed 0) of its UTF-8 bytes over
/// 2³², the hash Langfuse and ClickHouse sample traces by, so a key is kept
/// at rate `p` by every service that computes `sample_hash(key) < p`.
pub(crate) fn key_position(key: &str) -> f64 {
    f64::from(XxHash32::oneshot(0, key.as_bytes())) / 4_294_967_296.0
}

/// `sample_hash(key)`: NULL for a NULL key.
pub(crate) fn sample_hash(_spec: &Spec, args: &[ArrayRef]) -> Result<ArrayRef> {
    let keys = args[0].as_string::<i32>();
    let out: Float64Array = (0..keys.len())
        .map(|i| keys.is_valid(i).then(|| key_position(keys.value(i))))
        .collect();
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::key_position;

    #[test]
    fn positions_are_xxhash32_over_two_to_the_32() {
        // xxHash32("", seed 0) = 0x02CC5D05 and xxHash32("abc") = 0x32D153FF,
        // the reference vectors of the xxHash specification.
        assert_eq!(
            key_position(""),
            f64::from(0x02CC_5D05u32) / 4_294_967_296.0
        );
        assert_eq!(
            key_position("abc"),
            f64::from(0x32D1_53FFu32) / 4_294_967_296.0
        );
    }

    #[test]
    fn positions_are_uniform_enough_to_sample_by() {
        let n = 100_000;
        let kept = (0..n)
            .filter(|i| key_position(&format!("req-{i:08}")) < 0.02)
            .count();
        // Binomial(100000, 0.02): mean 2000, sd 44; 5 sd either side.
        assert!((1780..=2220).contains(&kept), "kept {kept}");
    }
}
