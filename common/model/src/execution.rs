//! The seam between the scheduler (which decides what runs) and the chunk runner (which
//! copies and verifies one chunk). The in-process pool calls the runner directly; in
//! distributed mode the same runner runs inside a worker process.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::checksum::RangeChecksum;
use crate::ids::{Attempt, ChunkId, JobId, WorkerId};
use crate::key::{ChunkRange, SplitKey};
use crate::schema::TableSchema;
use crate::spec::{JobMode, JobSpec, VerifyMode, WatermarkSpec};
use crate::sync::{MethodError, TableMethod, choose_method};

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
    /// Whether the chunk's target table was created by this job without its primary
    /// key (`chunking.defer_key`): while the target has no key yet, the copy skips the
    /// range's delete when no earlier attempt of the chunk committed, does not read the
    /// range back, and ends [`ChunkResult::Copied`]; the scheduler verifies it once the
    /// key is built. Once the key exists the chunk is copied and verified as any other.
    pub key_deferred: bool,
    /// How to verify.
    pub verify: VerifyMode,
    /// Copy the chunk, only compare both sides (a verify-only job: nothing is written
    /// to the target), or catch it up (a sync pass).
    pub mode: JobMode,
    /// The exported source snapshot every read of the attempt imports
    /// (`consistency: job_snapshot`); `None`: the chunk is read in a snapshot of its own.
    pub source_snapshot: Option<String>,
    /// What a sync pass reads by (`mode` is [`JobMode::Sync`]); `None` for other jobs.
    pub sync: Option<Arc<SyncPass>>,
    /// Cancels the attempt; nothing is committed after it fires.
    pub cancel: CancellationToken,
    /// Called with each batch's row count.
    pub progress: ProgressFn,
    /// Called when the attempt moves on to verification.
    pub on_verifying: Arc<dyn Fn() + Send + Sync>,
    /// Paces the rows (throttle pause and rate limits).
    pub admission: Arc<dyn Admission>,
    /// Asks the attempt to hand its chunk back before it writes, so that the scheduler
    /// cuts the chunk for idle workers (`chunking.split_idle`): the runner's admission
    /// then refuses the next batch ([`GiveBackAdmission`]) and the attempt ends
    /// [`ChunkResult::Requeued`] with nothing committed. Fired too late (the copy already
    /// committed), it changes nothing: the attempt ends as it would have.
    pub give_back: CancellationToken,
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

/// What the chunks of a sync pass read by: the spec's watermark and the pass's marks
/// (`sync.since`, set by `ferryctl sync`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPass {
    /// The watermark column (`watermark:`), when the spec names one.
    pub watermark: Option<WatermarkSpec>,
    /// Per qualified table name: read rows whose watermark is at or past this.
    pub since: BTreeMap<String, i64>,
}

impl SyncPass {
    /// The pass a spec describes, or `None` when its job is not a sync pass.
    pub fn of(spec: &JobSpec) -> Option<Arc<SyncPass>> {
        (spec.mode == JobMode::Sync).then(|| {
            Arc::new(SyncPass {
                watermark: spec.watermark.clone(),
                since: spec.sync.since.clone(),
            })
        })
    }

    /// How `table` (split on `key`) is synced, and from which mark (microseconds since
    /// the epoch; `None`: every row of the range).
    pub fn method_of(
        &self,
        table: &TableSchema,
        key: &SplitKey,
    ) -> Result<(TableMethod, Option<i64>), MethodError> {
        let method = choose_method(table, key, self.watermark.as_ref())?;
        Ok((method, self.since.get(&table.name.to_string()).copied()))
    }
}

/// What one chunk of a sync pass changed in the target (all zero when it was already
/// caught up), reported with its result and kept in its record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncChanges {
    /// Source rows read past the mark (watermark tables).
    pub rows_read: u64,
    /// Rows inserted into the target.
    pub inserted: u64,
    /// Target rows replaced by newer source rows.
    pub updated: u64,
    /// Target rows deleted (gone at the source).
    pub deleted: u64,
    /// Rows re-copied because the range's checksums differed (tables without a
    /// watermark); the range counts as repaired.
    pub recopied_rows: u64,
    /// Whether the range was re-copied.
    pub repaired: bool,
    /// Whether the keyed diff ran (it is skipped when both sides hold as many rows after
    /// the upsert: see `docs/sync.md`).
    pub keys_compared: bool,
}

impl SyncChanges {
    /// The rows the target was behind by: inserted + updated + deleted + re-copied.
    pub fn changed_rows(&self) -> u64 {
        self.inserted + self.updated + self.deleted + self.recopied_rows
    }

    /// Adds another chunk's changes.
    pub fn add(&mut self, other: &SyncChanges) {
        self.rows_read += other.rows_read;
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.recopied_rows += other.recopied_rows;
        self.repaired |= other.repaired;
        self.keys_compared |= other.keys_compared;
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkResult {
    /// Copied, and verified per the job's verify mode (a sync pass: caught up).
    Verified {
        /// Rows copied (a sync pass: rows changed, [`SyncChanges::changed_rows`]).
        rows: u64,
        /// The source checksum (row count only when verify mode is `count` or `none`).
        checksum: RangeChecksum,
        /// What a sync pass changed; `None` for other jobs.
        sync: Option<SyncChanges>,
    },
    /// Copied and committed into a target table whose primary key is not built yet
    /// ([`ChunkTask::key_deferred`]): not read back; verified once the key exists.
    Copied {
        /// Rows copied.
        rows: u64,
        /// The source side of the checksum, as the copy streamed it (native or
        /// canonical, whichever way the rows passed; the row count only when the job
        /// does not verify by checksum).
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
            ChunkResult::Copied { .. } => "copied",
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

/// The reason an attempt handed back on request gives ([`ChunkTask::give_back`]).
pub const GIVEN_BACK: &str =
    "handed back before writing, to be cut into pieces for idle workers (chunking.split_idle)";

/// An [`Admission`] that refuses every batch once its attempt is asked to hand its
/// chunk back ([`ChunkTask::give_back`]): admission is asked before each batch is sent to
/// the target, so a refused attempt never commits.
pub struct GiveBackAdmission {
    inner: Arc<dyn Admission>,
    give_back: CancellationToken,
}

impl GiveBackAdmission {
    /// Wraps `inner` for an attempt whose give-back request is `give_back`.
    pub fn new(inner: Arc<dyn Admission>, give_back: CancellationToken) -> Self {
        Self { inner, give_back }
    }

    fn check(&self) -> Result<(), String> {
        if self.give_back.is_cancelled() {
            Err(GIVEN_BACK.to_owned())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Admission for GiveBackAdmission {
    async fn admit(&self, rows: u64, bytes: u64) -> Result<(), String> {
        self.check()?;
        // A batch waiting for its turn under a rate limit is not sent once asked back.
        tokio::select! {
            admitted = self.inner.admit(rows, bytes) => admitted?,
            () = self.give_back.cancelled() => {}
        }
        self.check()
    }

    fn limits_rows(&self) -> bool {
        self.inner.limits_rows()
    }

    fn limits_bytes(&self) -> bool {
        self.inner.limits_bytes()
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
