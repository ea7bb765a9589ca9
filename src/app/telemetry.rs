//! Logging (tracing, pretty or JSON, to stderr) and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global tracing subscriber. `RUST_LOG` overrides `level`. A second call is a
/// no-op (tests start many apps in one process).
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// Latency buckets in seconds: a webhook answer should take milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide metrics recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples are kept raw until folded in: without a scrape they would pile
            // up for ever (every webhook request, every probe run). Fold them in regularly, as
            // the exporter's own `install` does.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// A counter with fixed labels, registered once and then only incremented: no registry lookup
/// per event on the hot paths (webhook, intake). The recorder is installed before the server
/// starts, so the cached handle is the real one.
#[macro_export]
macro_rules! static_counter {
    ($name:literal $(, $k:literal => $v:literal)* $(,)?) => {{
        static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        COUNTER.get_or_init(|| metrics::counter!($name $(, $k => $v)*))
    }};
}

/// A counter whose label value comes from outside (an alert name a sender chose), kept bounded:
/// the first `cap` distinct values that are plain names (`[A-Za-z0-9_:.-]`, at most 64 bytes)
/// get a series each; every other value, and every value after those, counts as `other`. One
/// per service (the intake owns it), so a running service has at most `cap + 1` series.
pub struct BoundedCounter {
    name: &'static str,
    label: &'static str,
    cap: usize,
    series: std::sync::Mutex<std::collections::BTreeMap<String, metrics::Counter>>,
}

/// The label value of everything beyond a [`BoundedCounter`]'s bound.
pub const OTHER: &str = "other";

impl BoundedCounter {
    /// A counter `name{label=…}` with at most `cap` named series plus `other`.
    pub const fn new(name: &'static str, label: &'static str, cap: usize) -> Self {
        Self {
            name,
            label,
            cap,
            series: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Counts one event for `value` (or `other`).
    pub fn count(&self, value: &str) {
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = series.get(value) {
            c.increment(1);
            return;
        }
        let label = if plain_label(value) && series.len() < self.cap {
            value
        } else {
            OTHER
        };
        let counter = series
            .entry(label.to_owned())
            .or_insert_with(|| metrics::counter!(self.name, self.label => label.to_owned()));
        counter.increment(1);
    }
}

/// A value that needs no escaping anywhere in the exposition format and reads as a name.
pub fn plain_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}
