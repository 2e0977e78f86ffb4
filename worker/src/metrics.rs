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

/// This agent's slots in [`SLOTS`] while it lives (registered and not yet gone).
pub struct SlotsGauge(f64);

impl SlotsGauge {
    /// Adds `slots` to the gauge until dropped.
    pub fn register(slots: u32) -> SlotsGauge {
        describe();
        let slots = f64::from(slots);
        metrics::gauge!(SLOTS).increment(slots);
        SlotsGauge(slots)
    }
}

impl Drop for SlotsGauge {
    fn drop(&mut self) {
        metrics::gauge!(SLOTS).decrement(self.0);
    }
}
