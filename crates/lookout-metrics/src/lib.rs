//! Lookout's own metrics.
//!
//! One [`Registry`] per open database. Each part of the engine (storage, the
//! query layer, the server, alerts, sampling) registers its instruments in it
//! when it starts and updates them as it works; the HTTP listener encodes the
//! whole registry in the OpenMetrics text format on `GET /metrics`.
//!
//! The instruments are [`prometheus_client`]'s (counters, gauges, histograms,
//! families of them by label); values read from elsewhere at scrape time,
//! such as a cache's size, are registered as functions with
//! [`Registry::gauge_fn`] and [`Registry::counter_fn`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The prefix of every metric name.
pub const PREFIX: &str = "lookout";

/// A label set of fixed names and values known when the code is written.
pub type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Histograms of durations in seconds, one per label set.
pub type SecondsFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The buckets of every duration histogram: 100 µs to about 105 s, each
/// four times the last (a WAL fsync and a compaction both land in a
/// bucket of their own).
pub fn seconds_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 4.0, 11,
    ))
}

/// A family of duration histograms with [`seconds_histogram`]'s buckets.
pub fn seconds_family<L: Clone + Eq + std::hash::Hash>() -> SecondsFamily<L> {
    Family::new_with_constructor(seconds_histogram as fn() -> Histogram)
}

/// Seconds since `started`, for [`Histogram::observe`].
pub fn seconds_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

/// The metrics of one database. Cheap to clone; clones share the registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<prometheus_client::registry::Registry>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry whose metric names all start with `lookout_`.
    pub fn new() -> Registry {
        Registry {
            inner: Arc::new(Mutex::new(
                prometheus_client::registry::Registry::with_prefix(PREFIX),
            )),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut prometheus_client::registry::Registry) -> R) -> R {
        // A panic while registering leaves nothing half-done worth refusing.
        let mut registry = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry)
    }

    /// Registers an instrument under `lookout_<name>` and returns it (a
    /// handle: updating the returned value updates the registered one).
    /// Counters get the `_total` suffix when encoded; `help` is one phrase
    /// without a final period (the encoder adds one).
    pub fn register<M>(&self, name: &str, help: &str, metric: M) -> M
    where
        M: prometheus_client::registry::Metric + Clone,
    {
        self.with(|r| r.register(name, help, metric.clone()));
        metric
    }

    /// Registers a gauge whose value `read` gives at each scrape.
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let read = Box::new(read);
        self.with(|r| {
            r.register_collector(Box::new(FnMetric {
                name,
                help,
                read: Read::Gauge(read),
            }))
        });
    }

    /// Registers a counter whose value `read` gives at each scrape; `name`
    /// is given without `_total`.
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let read = Box::new(read);
        self.with(|r| {
            r.register_collector(Box::new(FnMetric {
                name,
                help,
                read: Read::Counter(read),
            }))
        });
    }

    /// Every metric in the OpenMetrics text format (ending with `# EOF`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        self.with(|r| prometheus_client::encoding::text::encode(&mut text, r))?;
        Ok(text)
    }

    /// Every metric in Prometheus' classic text format (version 0.0.4), for
    /// clients that do not ask for OpenMetrics (curl, promtool, older
    /// scrapers): the same samples, with counters described under their
    /// sample name (`x_total`) and no `# EOF`.
    pub fn encode_classic(&self) -> Result<String, fmt::Error> {
        Ok(openmetrics_to_classic(&self.encode()?))
    }
}

/// Rewrites OpenMetrics text as the classic text format. OpenMetrics names
/// a counter family `x` and its sample `x_total`; the classic format names
/// both `x_total`. Our registry has no units, `_created` samples or info
/// metrics, so nothing else differs.
fn openmetrics_to_classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

type GaugeRead = Box<dyn Fn() -> i64 + Send + Sync>;
type CounterRead = Box<dyn Fn() -> u64 + Send + Sync>;

enum Read {
    Gauge(GaugeRead),
    Counter(CounterRead),
}

/// A metric read at scrape time.
struct FnMetric {
    name: &'static str,
    help: &'static str,
    read: Read,
}

impl fmt::Debug for FnMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnMetric")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for FnMetric {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // The registry adds its prefix (and `_total` to counters).
        let name = self.name;
        match &self.read {
            Read::Gauge(read) => {
                let gauge = ConstGauge::new(read());
                let metric =
                    encoder.encode_descriptor(name, self.help, None, gauge.metric_type())?;
                gauge.encode(metric)
            }
            Read::Counter(read) => {
                let counter = ConstCounter::new(read());
                let metric =
                    encoder.encode_descriptor(name, self.help, None, counter.metric_type())?;
                counter.encode(metric)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_instruments_and_scrape_time_values() {
        let registry = Registry::new();
        let rows = registry.register("rows_written", "Rows written", Counter::<u64>::default());
        let kinds: Family<Labels<1>, Counter> = Family::default();
        let kinds = registry.register("statements", "Statements run", kinds);
        let latency = registry.register("statement_seconds", "Statement time", seconds_family());
        registry.gauge_fn("cache_bytes", "Bytes cached", || 42);
        registry.counter_fn("cache_hits", "Cache hits", || 7);
        rows.inc_by(3);
        kinds.get_or_create(&[("kind", "select")]).inc();
        latency.get_or_create(&[("kind", "select")]).observe(0.002);
        let text = registry.encode().expect("encode");
        for line in [
            "# TYPE lookout_rows_written counter",
            "lookout_rows_written_total 3",
            "lookout_statements_total{kind=\"select\"} 1",
            "lookout_statement_seconds_count{kind=\"select\"} 1",
            "lookout_statement_seconds_bucket{le=\"0.0064\",kind=\"select\"} 1",
            "lookout_cache_bytes 42",
            "lookout_cache_hits_total 7",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        let classic = registry.encode_classic().expect("encode");
        for line in [
            "# HELP lookout_rows_written_total Rows written.",
            "# TYPE lookout_rows_written_total counter",
            "lookout_rows_written_total 3",
            "# TYPE lookout_cache_hits_total counter",
            "# TYPE lookout_statement_seconds histogram",
            "# TYPE lookout_cache_bytes gauge",
        ] {
            assert!(
                classic.lines().any(|l| l == line),
                "{line:?} missing in:\n{classic}"
            );
        }
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
