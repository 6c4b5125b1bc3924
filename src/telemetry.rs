//! Logging (tracing) and metrics (Prometheus recorder) setup, done once per process.

use crate::config::{LogFormat, LogSettings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` overrides the configured filter.
/// Calling it twice is harmless (the second call is ignored), which tests rely on.
pub fn init_logging(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Logs go to standard error: standard output carries what a command answers (the lines of
    // `events tail`, the seed summary), which scripts and operators read.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder. The `metrics` facade allows one global recorder, so
/// every server in the process (tests run several) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = with_buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Latency buckets in seconds (every `*_seconds` histogram: request durations, the writer's
/// commit): 0.5 ms to 10 s, fine where an order's path lives (milliseconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Jobs per group-commit batch: up to the largest `writer.max_batch` one would configure.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Histograms exported as Prometheus histograms (buckets) rather than the exporter's default
/// summaries: Grafana aggregates buckets across processes (`histogram_quantile`), which
/// quantiles computed per process cannot be.
fn with_buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    let buckets = [
        (Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS),
        (
            Matcher::Full("writer_batch_size".into()),
            BATCH_SIZE_BUCKETS,
        ),
    ];
    buckets
        .into_iter()
        .fold(builder, |builder, (matcher, values)| {
            // Fails only for an empty list, which the lists above are not; the exporter's
            // defaults (summaries) would then do.
            builder
                .set_buckets_for_metric(matcher, values)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "histogram buckets not set");
                    PrometheusBuilder::new()
                })
        })
}
