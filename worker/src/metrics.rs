//! The worker's metrics, through the `metrics` facade (served on `metrics.listen`).
//! No labels but an attempt's outcome: a worker's figures add up across replicas.

/// Chunks this worker runs at once.
pub const SLOTS: &str = "ferry_worker_slots";
/// Slots busy with an attempt now.
pub const SLOTS_BUSY: &str = "ferry_worker_slots_busy";
/// Wall time of an attempt, by outcome.
pub const CHUNK_SECONDS: &str = "ferry_worker_chunk_seconds";
/// Rows this worker streamed into targets (`rate()` of it is rows/s).
pub const ROWS: &str = "ferry_worker_rows_total";

/// Registers help texts.
pub fn describe() {
    metrics::describe_gauge!(SLOTS, "chunks this worker runs at once");
    metrics::describe_gauge!(SLOTS_BUSY, "slots busy with an attempt");
    metrics::describe_histogram!(
        CHUNK_SECONDS,
        metrics::Unit::Seconds,
        "wall time of a chunk attempt, by outcome"
    );
    metrics::describe_counter!(ROWS, "rows streamed into targets");
}
