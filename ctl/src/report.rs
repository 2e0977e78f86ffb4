//! The end-of-run report: per table and for the job, as a table for people or one JSON
//! object for programs.

use std::fmt::Write as _;

use ferry_coordination::{ChunkState, JobRecord};
use ferry_coordinator::scheduler::RunOutcome;
use serde::Serialize;

use crate::exit_code;
use crate::local::PreparedJob;

/// The report of one run of a job.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The job's name.
    pub job: String,
    /// Every chunk VERIFIED.
    pub ok: bool,
    /// The run was stopped before every chunk ended; running the same command resumes.
    pub interrupted: bool,
    /// The job was resumed from its state file.
    pub resumed: bool,
    /// Rows verified in the target over the whole job (all runs).
    pub rows: u64,
    /// Rows copied and verified by this run.
    pub rows_this_run: u64,
    /// Wall time of this run.
    pub duration_secs: f64,
    /// `rows_this_run / duration_secs`.
    pub rows_per_sec: f64,
    /// Chunks re-queued at start because an earlier run stopped while they were in flight.
    pub requeued_chunks: usize,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Chunks that ended FAILED, with their reasons.
    pub failed_chunks: Vec<FailedChunk>,
    /// Whether the job was verify-only (`ferryctl verify`): nothing was copied, and
    /// `rows` counts rows found alike on both sides.
    pub verify_only: bool,
}

/// One table's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    /// The table.
    pub table: String,
    /// Rows verified in the target.
    pub rows: u64,
    /// Chunks planned.
    pub chunks: usize,
    /// Chunks VERIFIED.
    pub verified: usize,
    /// Chunks FAILED.
    pub failed: usize,
    /// Chunks not ended (interrupted run).
    pub pending: usize,
    /// Attempts over all chunks (1 per chunk when nothing went wrong).
    pub attempts: u64,
    /// Checksum mismatches that a re-copy repaired.
    pub mismatches_repaired: u64,
    /// Failed attempts (copy errors or mismatches) that a re-copy repaired.
    pub failures_repaired: u64,
    /// Time from the table's first chunk start to its last chunk end, in this run.
    pub duration_secs: f64,
    /// What the table is split on.
    pub split_key: String,
    /// Planning remarks.
    pub warnings: Vec<String>,
    /// Chunks whose source and target differ (a verify-only job).
    pub differing: usize,
    /// Per leaf partition, for a table planned by partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionReport>,
}

/// One leaf partition's part of a table's report.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// The partition.
    pub partition: String,
    /// Rows verified (copied, or found alike on both sides).
    pub rows: u64,
    /// Chunks planned.
    pub chunks: usize,
    /// Chunks VERIFIED.
    pub verified: usize,
    /// Chunks whose source and target differ (a verify-only job).
    pub differing: usize,
    /// Chunks FAILED on an error.
    pub errors: usize,
}

/// A chunk that ended FAILED.
#[derive(Clone, Debug, Serialize)]
pub struct FailedChunk {
    /// Its table.
    pub table: String,
    /// Its id.
    pub chunk: u32,
    /// Its leaf partition, when its table is planned by partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The rows it owns.
    pub range: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub reason: String,
    /// Source and target differ (a verify-only job's finding), rather than an error.
    pub differs: bool,
}

impl JobReport {
    /// Builds the report of a run.
    pub fn new(job: &JobRecord, prepared: &PreparedJob, outcome: &RunOutcome) -> Self {
        let mut tables: Vec<TableReport> = job
            .tables
            .iter()
            .enumerate()
            .map(|(index, table)| TableReport {
                table: table.schema.name.to_string(),
                rows: 0,
                chunks: 0,
                verified: 0,
                failed: 0,
                pending: 0,
                attempts: 0,
                mismatches_repaired: 0,
                failures_repaired: 0,
                duration_secs: outcome
                    .table_elapsed
                    .get(index)
                    .map_or(0.0, |d| d.as_secs_f64()),
                split_key: describe_key(&table.key),
                warnings: table.warnings.clone(),
                differing: 0,
                partitions: Vec::new(),
            })
            .collect();
        let mut failed_chunks = Vec::new();
        for chunk in &outcome.chunks {
            let Some(table) = tables.get_mut(chunk.table_index) else {
                continue;
            };
            table.chunks += 1;
            table.attempts += u64::from(chunk.attempt.0);
            if let Some(partition) = &chunk.partition {
                let index = match table
                    .partitions
                    .iter()
                    .position(|known| &known.partition == partition)
                {
                    Some(index) => index,
                    None => {
                        table.partitions.push(PartitionReport {
                            partition: partition.clone(),
                            rows: 0,
                            chunks: 0,
                            verified: 0,
                            differing: 0,
                            errors: 0,
                        });
                        table.partitions.len() - 1
                    }
                };
                let part = &mut table.partitions[index];
                part.chunks += 1;
                match chunk.state {
                    ChunkState::Verified => {
                        part.verified += 1;
                        part.rows += chunk.rows;
                    }
                    ChunkState::Failed if chunk.differs() => part.differing += 1,
                    ChunkState::Failed => part.errors += 1,
                    _ => {}
                }
            }
            match chunk.state {
                ChunkState::Verified => {
                    table.verified += 1;
                    table.rows += chunk.rows;
                    table.mismatches_repaired += u64::from(chunk.mismatches);
                    table.failures_repaired += u64::from(chunk.failures);
                }
                ChunkState::Failed => {
                    table.failed += 1;
                    table.differing += usize::from(chunk.differs());
                    failed_chunks.push(FailedChunk {
                        table: table.table.clone(),
                        chunk: chunk.id.0,
                        partition: chunk.partition.clone(),
                        range: chunk.range.to_string(),
                        attempts: chunk.attempt.0,
                        reason: chunk.last_error.clone().unwrap_or_default(),
                        differs: chunk.differs(),
                    });
                }
                _ => table.pending += 1,
            }
        }
        let rows: u64 = tables.iter().map(|table| table.rows).sum();
        let rows_this_run = rows.saturating_sub(prepared.rows_verified_before);
        let duration_secs = outcome.elapsed.as_secs_f64();
        JobReport {
            job: job.id.to_string(),
            ok: failed_chunks.is_empty() && !outcome.interrupted,
            interrupted: outcome.interrupted,
            resumed: prepared.resumed,
            rows,
            rows_this_run,
            duration_secs,
            rows_per_sec: if duration_secs > 0.0 {
                rows_this_run as f64 / duration_secs
            } else {
                0.0
            },
            requeued_chunks: outcome.requeued.len(),
            tables,
            failed_chunks,
            verify_only: false,
        }
    }

    /// Whether the run found differences and nothing else went wrong: every FAILED
    /// chunk differs (a verify-only job), none failed on an error.
    pub fn only_differences(&self) -> bool {
        !self.failed_chunks.is_empty() && self.failed_chunks.iter().all(|chunk| chunk.differs)
    }

    /// The exit code this run deserves.
    pub fn exit_code(&self) -> i32 {
        if self.only_differences() && !self.interrupted {
            exit_code::DIFFERENCES
        } else if !self.failed_chunks.is_empty() {
            exit_code::FAILED_CHUNKS
        } else if self.interrupted {
            exit_code::INTERRUPTED
        } else {
            exit_code::OK
        }
    }

    /// Renders the report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>7}  {:>8}  {:>10}  {:>8}  {:>8}",
            "table", "rows", "chunks", "attempts", "mismatches", "errors", "seconds"
        );
        for table in &self.tables {
            let chunks = if table.verified == table.chunks {
                table.chunks.to_string()
            } else {
                format!("{}/{}", table.verified, table.chunks)
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>7}  {:>8}  {:>10}  {:>8}  {:>8.1}",
                table.table,
                table.rows,
                chunks,
                table.attempts,
                table.mismatches_repaired,
                table
                    .failures_repaired
                    .saturating_sub(table.mismatches_repaired),
                table.duration_secs
            );
            for warning in &table.warnings {
                let _ = writeln!(out, "  warning: {warning}");
            }
        }
        if self.verify_only {
            self.render_verify(&mut out);
            return out;
        }
        let _ = writeln!(
            out,
            "(mismatches and errors: failed attempts that a re-copy with overwrite repaired)"
        );
        let status = if self.ok {
            "every chunk VERIFIED"
        } else if !self.failed_chunks.is_empty() {
            "FAILED chunks"
        } else {
            "interrupted; run the same command again to resume"
        };
        let _ = writeln!(
            out,
            "job {}: {} rows verified ({} this run in {:.1} s, {:.0} rows/s){}: {status}",
            self.job,
            self.rows,
            self.rows_this_run,
            self.duration_secs,
            self.rows_per_sec,
            if self.resumed { ", resumed" } else { "" },
        );
        for failed in &self.failed_chunks {
            let _ = writeln!(
                out,
                "FAILED chunk {} of {}{} {} after {} attempts: {}",
                failed.chunk,
                failed.table,
                failed
                    .partition
                    .as_ref()
                    .map(|partition| format!(" partition {partition}"))
                    .unwrap_or_default(),
                failed.range,
                failed.attempts,
                failed.reason
            );
        }
        out
    }
}

impl JobReport {
    /// The verify-only part of [`JobReport::render`]: per table and partition, whether
    /// both sides agree, then each differing or failed chunk.
    fn render_verify(&self, out: &mut String) {
        let _ = writeln!(out, "verify-only: nothing was written to the target");
        for table in &self.tables {
            let verdict = if table.differing > 0 {
                format!("{} chunks DIFFER", table.differing)
            } else if table.failed > 0 {
                format!("{} chunks failed", table.failed)
            } else if table.pending > 0 {
                "not finished".to_owned()
            } else {
                "source and target agree".to_owned()
            };
            let _ = writeln!(
                out,
                "  {}: {} rows alike in {}/{} chunks: {verdict}",
                table.table, table.rows, table.verified, table.chunks
            );
            for part in &table.partitions {
                let verdict = if part.differing > 0 {
                    format!("{} chunks DIFFER", part.differing)
                } else if part.errors > 0 {
                    format!("{} chunks failed", part.errors)
                } else if part.verified < part.chunks {
                    "not finished".to_owned()
                } else {
                    "agree".to_owned()
                };
                let _ = writeln!(
                    out,
                    "    partition {}: {} rows alike in {}/{} chunks: {verdict}",
                    part.partition, part.rows, part.verified, part.chunks
                );
            }
        }
        let status = if self.ok {
            "source and target agree"
        } else if self.only_differences() {
            "DIFFERENCES found"
        } else if !self.failed_chunks.is_empty() {
            "FAILED chunks"
        } else {
            "interrupted; run the same command again to resume"
        };
        let _ = writeln!(
            out,
            "job {}: {} rows compared alike in {:.1} s ({:.0} rows/s): {status}",
            self.job, self.rows, self.duration_secs, self.rows_per_sec,
        );
        for failed in &self.failed_chunks {
            let _ = writeln!(
                out,
                "{} chunk {} of {}{} {}: {}",
                if failed.differs {
                    "DIFFERING"
                } else {
                    "FAILED"
                },
                failed.chunk,
                failed.table,
                failed
                    .partition
                    .as_ref()
                    .map(|partition| format!(" partition {partition}"))
                    .unwrap_or_default(),
                failed.range,
                failed.reason
            );
        }
    }
}

fn describe_key(key: &ferry_model::key::SplitKey) -> String {
    use ferry_model::key::{Bucketing, SplitKey};
    match key {
        SplitKey::Columns { names, .. } => names.join(", "),
        SplitKey::Rowid => "rowid".to_string(),
        SplitKey::Hash {
            column,
            buckets,
            bucketing: Bucketing::EngineHash,
        } => format!("hash({column}) mod {buckets}"),
        SplitKey::Hash {
            column,
            buckets,
            bucketing: Bucketing::Modulo,
        } => format!("{column} mod {buckets}"),
        SplitKey::None => "none".to_string(),
    }
}
