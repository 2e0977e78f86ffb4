//! The seam between the scheduler (which decides what runs) and the chunk runner (which
//! copies and verifies one chunk). The in-process pool calls the runner directly; in
//! distributed mode the same runner runs inside a worker process.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::checksum::RangeChecksum;
use crate::ids::{Attempt, ChunkId, JobId, WorkerId};
use crate::key::{ChunkRange, SplitKey};
use crate::schema::TableSchema;
use crate::spec::{JobMode, VerifyMode};

/// Receives rows-copied increments while a chunk streams, for progress display.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// One attempt of one chunk, as a worker receives it.
#[derive(Clone)]
pub struct ChunkTask {
    /// The job.
    pub job: JobId,
    /// The job run, for the target's fence.
    pub run_id: String,
    /// The chunk.
    pub chunk: ChunkId,
    /// This attempt; the target refuses it once a higher one has committed.
    pub attempt: Attempt,
    /// The worker running it.
    pub worker: WorkerId,
    /// The table.
    pub table: Arc<TableSchema>,
    /// What the table is split on.
    pub key: Arc<SplitKey>,
    /// The leaf partition the chunk belongs to, when its table is planned by native
    /// partitions: read, write and checksum are then restricted to it.
    pub partition: Option<String>,
    /// The rows the chunk owns; the target range is cleared before writing.
    pub range: ChunkRange,
    /// How to verify.
    pub verify: VerifyMode,
    /// Copy the chunk, or only compare both sides (a verify-only job: nothing is
    /// written to the target).
    pub mode: JobMode,
    /// The exported source snapshot every read of the attempt imports
    /// (`consistency: job_snapshot`); `None`: the chunk is read in a snapshot of its own.
    pub source_snapshot: Option<String>,
    /// Cancels the attempt; nothing is committed after it fires.
    pub cancel: CancellationToken,
    /// Called with each batch's row count.
    pub progress: ProgressFn,
    /// Called when the attempt moves on to verification.
    pub on_verifying: Arc<dyn Fn() + Send + Sync>,
    /// Paces the rows (throttle pause and rate limits).
    pub admission: Arc<dyn Admission>,
}

impl ChunkTask {
    /// The table as the connectors must see it for this chunk: restricted to the chunk's
    /// partition when it has one.
    pub fn chunk_table(&self) -> Arc<TableSchema> {
        match &self.partition {
            Some(partition) => Arc::new(self.table.for_partition(partition)),
            None => self.table.clone(),
        }
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkResult {
    /// Copied, and verified per the job's verify mode.
    Verified {
        /// Rows copied.
        rows: u64,
        /// The source checksum (row count only when verify mode is `count` or `none`).
        checksum: RangeChecksum,
    },
    /// Copied, but the target does not match what was read from the source.
    Mismatch {
        /// What the source stream held.
        source: RangeChecksum,
        /// What the target range holds.
        target: RangeChecksum,
    },
    /// The attempt failed before it could be verified; nothing of it was committed.
    Error {
        /// What went wrong.
        message: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// A database did not answer (down, restarting, failing over, read-only after a
    /// switch); nothing of it was committed. Not a failure of the chunk: it waits for
    /// the database and is copied again, without counting an attempt.
    Unavailable {
        /// What the database said, or how the connection failed.
        message: String,
    },
    /// The attempt was cancelled (shutdown); nothing of it was committed.
    Cancelled,
    /// The attempt was stopped by the throttle (paused past its timeout); nothing of it
    /// was committed and it does not count as a failure.
    Requeued {
        /// Why.
        reason: String,
    },
}

impl ChunkResult {
    /// The result's kind in one word (`verified`, `mismatch`, `error`, `unavailable`,
    /// `cancelled`, `requeued`), for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ChunkResult::Verified { .. } => "verified",
            ChunkResult::Mismatch { .. } => "mismatch",
            ChunkResult::Error { .. } => "error",
            ChunkResult::Unavailable { .. } => "unavailable",
            ChunkResult::Cancelled => "cancelled",
            ChunkResult::Requeued { .. } => "requeued",
        }
    }
}

/// Admits rows into the target at the pace the job's throttle allows: waits while the job
/// is paused and while the job-wide rate limits are spent.
#[async_trait]
pub trait Admission: Send + Sync {
    /// Waits until `rows` rows of `bytes` bytes may be written. Errors with a reason when
    /// the job stayed paused longer than its pause timeout (the chunk is then re-queued).
    async fn admit(&self, rows: u64, bytes: u64) -> Result<(), String>;

    /// Whether a rows-per-second limit is in force: rows must then travel where they can
    /// be counted as they pass (not as undecoded native bytes).
    fn limits_rows(&self) -> bool {
        false
    }

    /// Whether a bytes-per-second limit is in force: bytes must then pass through ferry
    /// (not be moved server to server, where nothing paces them).
    fn limits_bytes(&self) -> bool {
        false
    }
}

/// Waits for `resumed` (a paused job resuming) at most `timeout`; past it, the error
/// every [`Admission`] gives, so the chunk is handed back and re-copied later.
pub async fn wait_out_pause(
    timeout: std::time::Duration,
    resumed: impl std::future::Future,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, resumed).await {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "paused for longer than the pause timeout ({} s); the chunk is re-copied when the job resumes",
            timeout.as_secs()
        )),
    }
}

/// Admits everything at once (no throttle).
pub struct Unthrottled;

#[async_trait]
impl Admission for Unthrottled {
    async fn admit(&self, _rows: u64, _bytes: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Runs one chunk attempt: copy with overwrite, then verify.
#[async_trait]
pub trait ChunkExecutor: Send + Sync {
    /// Runs the attempt to its end. Never panics on bad data: every failure is a
    /// [`ChunkResult`].
    async fn execute(&self, task: ChunkTask) -> ChunkResult;
}
