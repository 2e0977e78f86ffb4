//! The coordinator's metrics (Prometheus names via the `metrics` facade; the HTTP
//! exporter comes with distributed mode). Labels stay bounded: no job or chunk ids.

/// Chunks the throttle allows in flight.
pub const THROTTLE_CONCURRENCY: &str = "ferry_throttle_concurrency";
/// Chunks in flight.
pub const CHUNKS_IN_FLIGHT: &str = "ferry_scheduler_chunks_in_flight";
/// The last load reading of the source (probe units).
pub const SOURCE_LOAD: &str = "ferry_throttle_source_load";
/// 1 while the job is paused (operator or load), else 0.
pub const THROTTLE_PAUSED: &str = "ferry_throttle_paused";
/// Load probes that failed (counted as high load).
pub const PROBE_FAILURES: &str = "ferry_throttle_probe_failures_total";

/// Registers help texts; call once at start.
pub fn describe() {
    metrics::describe_gauge!(THROTTLE_CONCURRENCY, "chunks the throttle allows in flight");
    metrics::describe_gauge!(CHUNKS_IN_FLIGHT, "chunks in flight");
    metrics::describe_gauge!(SOURCE_LOAD, "last load reading of the source database");
    metrics::describe_gauge!(
        THROTTLE_PAUSED,
        "1 while the job is paused by an operator or by load"
    );
    metrics::describe_counter!(
        PROBE_FAILURES,
        "load probes that failed and counted as high load"
    );
}
