//! The coordinator's metrics, through the `metrics` facade (served by
//! `ferry_server::metrics_http` on `metrics.listen`). Labels stay bounded: a job's name,
//! a table's name, a chunk state, a failure kind or a throttle reason; never a chunk id.
//! Every name and label is listed in `docs/metrics.md`.

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_model::ids::ChunkId;

use crate::cluster::tally::ChunkTally;
use crate::scheduler::JobEvent;

/// Chunks the throttle allows in flight, per job.
pub const THROTTLE_CONCURRENCY: &str = "ferry_throttle_concurrency";
/// Chunks copying, per job (chunks verifying after their copy are not counted).
pub const CHUNKS_IN_FLIGHT: &str = "ferry_scheduler_chunks_in_flight";
/// The last load reading of the source (probe units), per job.
pub const SOURCE_LOAD: &str = "ferry_throttle_source_load";
/// 1 while the job is paused (operator or load), else 0.
pub const THROTTLE_PAUSED: &str = "ferry_throttle_paused";
/// 1 for the reason that limits the job's concurrency now, 0 for the others.
pub const THROTTLE_LIMITED_BY: &str = "ferry_throttle_limited_by";
/// The job-wide rate limits in force (0: none).
pub const THROTTLE_ROWS_PER_SEC: &str = "ferry_throttle_rows_per_second_limit";
/// The job-wide byte rate limit in force (0: none).
pub const THROTTLE_BYTES_PER_SEC: &str = "ferry_throttle_bytes_per_second_limit";
/// Load probes that failed (counted as high load).
pub const PROBE_FAILURES: &str = "ferry_throttle_probe_failures_total";
/// 1 while this coordinator leads.
pub const LEADER: &str = "ferry_coordinator_leader";
/// Terms this coordinator has led (each won election).
pub const TERMS: &str = "ferry_coordinator_terms_total";
/// Lost terms this coordinator ended itself once etcd answered again (election key
/// deleted, lease revoked) instead of leaving them to expire.
pub const LOST_TERMS_ENDED: &str = "ferry_coordinator_lost_terms_ended_total";
/// From writing an assignment to the worker's first sign of running it.
pub const ASSIGNMENT_SECONDS: &str = "ferry_coordinator_assignment_seconds";
/// Chunks waiting for a worker, per job: what a worker autoscaler scales on.
pub const CHUNKS_PENDING: &str = "ferry_coordinator_chunks_pending";
/// Chunks of a job by state.
pub const JOB_CHUNKS: &str = "ferry_job_chunks";
/// Rows streamed into the target by attempts, per job and table.
pub const ROWS_COPIED: &str = "ferry_job_rows_copied_total";
/// Rows of verified chunks, per job and table.
pub const ROWS_VERIFIED: &str = "ferry_job_rows_verified_total";
/// Attempts started, per job and table.
pub const ATTEMPTS: &str = "ferry_job_attempts_total";
/// Attempts that ended without verifying, per job and kind (`mismatch`, `error`).
pub const ATTEMPT_FAILURES: &str = "ferry_job_attempt_failures_total";
/// Estimated seconds until the job's last chunk is verified, at this run's pace.
pub const ETA_SECONDS: &str = "ferry_job_eta_seconds";

/// Registers help texts; call once at start.
pub fn describe() {
    metrics::describe_gauge!(THROTTLE_CONCURRENCY, "chunks the throttle allows in flight");
    metrics::describe_gauge!(
        CHUNKS_IN_FLIGHT,
        "chunks copying (verifying ones not counted)"
    );
    metrics::describe_gauge!(SOURCE_LOAD, "last load reading of the source database");
    metrics::describe_gauge!(
        THROTTLE_PAUSED,
        "1 while the job is paused by an operator or by load"
    );
    metrics::describe_gauge!(
        THROTTLE_LIMITED_BY,
        "1 for what limits the job's concurrency now (schedule, load, operator, default)"
    );
    metrics::describe_gauge!(THROTTLE_ROWS_PER_SEC, "job-wide rows/s limit (0: none)");
    metrics::describe_gauge!(THROTTLE_BYTES_PER_SEC, "job-wide bytes/s limit (0: none)");
    metrics::describe_counter!(
        PROBE_FAILURES,
        "load probes that failed and counted as high load"
    );
    metrics::describe_gauge!(LEADER, "1 while this coordinator leads the cluster");
    metrics::describe_counter!(TERMS, "terms this coordinator has led");
    metrics::describe_counter!(
        LOST_TERMS_ENDED,
        "lost terms this coordinator ended itself once etcd answered again"
    );
    metrics::describe_gauge!(CHUNKS_PENDING, "chunks waiting for a worker");
    metrics::describe_histogram!(
        ASSIGNMENT_SECONDS,
        metrics::Unit::Seconds,
        "from writing an assignment to the worker's first progress or result"
    );
    metrics::describe_gauge!(JOB_CHUNKS, "chunks of a job by state");
    metrics::describe_counter!(ROWS_COPIED, "rows streamed into the target by attempts");
    metrics::describe_counter!(ROWS_VERIFIED, "rows of verified chunks");
    metrics::describe_counter!(ATTEMPTS, "chunk attempts started");
    metrics::describe_counter!(
        ATTEMPT_FAILURES,
        "attempts that ended without verifying, by kind"
    );
    metrics::describe_gauge!(
        ETA_SECONDS,
        "estimated seconds until the job's last chunk is verified, at this run's pace"
    );
}

/// What limits a job's concurrency, from the throttle's reasons (their first words).
pub fn limiting_reason(reasons: &[String]) -> &'static str {
    let text = reasons.join("\n").to_lowercase();
    if text.contains("operator") || text.contains("override") {
        "operator"
    } else if text.contains("load") {
        "load"
    } else if text.contains("window") || text.contains("schedule") {
        "schedule"
    } else {
        "default"
    }
}

/// Every throttle reason label, so that the inactive ones read 0.
pub const THROTTLE_REASONS: [&str; 4] = ["schedule", "load", "operator", "default"];

/// One running job's progress metrics, fed by its scheduler's events.
pub struct JobMetrics {
    job: String,
    /// Per table (by index), its counters, looked up once: `RowsCopied` comes per batch.
    tables: Vec<TableCounters>,
    /// The attempt failures each chunk had when last seen (to count new ones).
    seen: HashMap<ChunkId, (u32, u32)>,
}

/// One table's counters.
struct TableCounters {
    copied: metrics::Counter,
    verified: metrics::Counter,
    attempts: metrics::Counter,
}

impl JobMetrics {
    /// Metrics for `job`, whose tables (by index) are `tables`.
    pub fn new(job: &str, tables: Vec<String>) -> Self {
        describe();
        let tables = tables
            .into_iter()
            .map(|table| {
                let labels = [("ferry_job", job.to_owned()), ("table", table)];
                TableCounters {
                    copied: metrics::counter!(ROWS_COPIED, &labels),
                    verified: metrics::counter!(ROWS_VERIFIED, &labels),
                    attempts: metrics::counter!(ATTEMPTS, &labels),
                }
            })
            .collect();
        JobMetrics {
            job: job.to_owned(),
            tables,
            seen: HashMap::new(),
        }
    }

    /// Follows one event; `tally` is the job's counts after it.
    pub fn observe(&mut self, event: &JobEvent, tally: &ChunkTally) {
        let job = self.job.clone();
        match event {
            JobEvent::Loaded { chunks } => {
                // Every failure kind exists from the start (at 0), so dashboards and
                // alerts see a series before the first failure.
                for kind in ["mismatch", "error"] {
                    metrics::counter!(ATTEMPT_FAILURES, "ferry_job" => job.clone(), "kind" => kind)
                        .increment(0);
                }
                let mut verified_rows: HashMap<usize, u64> = HashMap::new();
                for (_, state, rows) in chunks {
                    if *state == ChunkState::Verified {
                        // The table of a loaded chunk is not in the event: counted as the
                        // job's first table would be wrong, so the job total goes to "*".
                        *verified_rows.entry(usize::MAX).or_default() += rows;
                    }
                }
                if let Some(rows) = verified_rows.get(&usize::MAX) {
                    metrics::counter!(ROWS_VERIFIED, "ferry_job" => job.clone(), "table" => "*")
                        .absolute(*rows);
                }
            }
            JobEvent::ChunkStarted { table_index, .. } => {
                if let Some(table) = self.tables.get(*table_index) {
                    table.attempts.increment(1);
                }
            }
            JobEvent::RowsCopied { table_index, rows } => {
                if let Some(table) = self.tables.get(*table_index) {
                    table.copied.increment(*rows);
                }
                // Per batch: the chunk counts did not change.
                return;
            }
            JobEvent::ChunkFinished {
                record: Some(record),
                table_index,
                ..
            } => {
                let (old_mismatches, old_failures) =
                    self.seen.get(&record.id).copied().unwrap_or((0, 0));
                let new_mismatches = record.mismatches.saturating_sub(old_mismatches);
                let new_failures = record.failures.saturating_sub(old_failures);
                self.seen
                    .insert(record.id, (record.mismatches, record.failures));
                if new_mismatches > 0 {
                    metrics::counter!(ATTEMPT_FAILURES, "ferry_job" => job.clone(), "kind" => "mismatch")
                        .increment(u64::from(new_mismatches));
                }
                if new_failures > new_mismatches {
                    metrics::counter!(ATTEMPT_FAILURES, "ferry_job" => job.clone(), "kind" => "error")
                        .increment(u64::from(new_failures - new_mismatches));
                }
                if record.state == ChunkState::Verified
                    && let Some(table) = self.tables.get(*table_index)
                {
                    table.verified.increment(record.rows);
                }
            }
            JobEvent::ChunkFinished { record: None, .. } | JobEvent::ChunkSplit { .. } => {}
        }
        self.publish_counts(tally);
    }

    /// Sets the state gauges, the pending chunks and the ETA from the tally.
    pub fn publish_counts(&self, tally: &ChunkTally) {
        let counts = tally.counts();
        let planned = counts
            .total
            .saturating_sub(counts.verified + counts.failed + counts.running);
        let job = self.job.clone();
        for (state, value) in [
            ("planned", planned),
            ("running", counts.running),
            ("verified", counts.verified),
            ("failed", counts.failed),
        ] {
            metrics::gauge!(JOB_CHUNKS, "ferry_job" => job.clone(), "state" => state)
                .set(f64::from(value));
        }
        metrics::gauge!(CHUNKS_PENDING, "ferry_job" => job.clone()).set(f64::from(planned));
        match tally.eta() {
            Some(eta) => metrics::gauge!(ETA_SECONDS, "ferry_job" => job).set(eta.as_secs_f64()),
            None if planned + counts.running == 0 => {
                metrics::gauge!(ETA_SECONDS, "ferry_job" => job).set(0.0);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiting_reason_is_read_from_the_throttle_reasons() {
        let reason = |lines: &[&str]| {
            limiting_reason(&lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            reason(&["operator override: max_concurrency 2"]),
            "operator"
        );
        assert_eq!(
            reason(&["load 0.93 >= max 0.8: concurrency halved"]),
            "load"
        );
        assert_eq!(reason(&["window night (22:00-06:00): 8"]), "schedule");
        assert_eq!(reason(&[]), "default");
    }
}
