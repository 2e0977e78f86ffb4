//! The operator-facing operations on a running job, as plain Rust: what the Control API
//! (`service::control`) exposes over gRPC. Implemented by the job runtime that owns the
//! scheduler and the throttle ([`crate::pacer::JobPacer`] for `ferryctl local`).

use async_trait::async_trait;
use ferry_coordination::{ChunkRecord, ChunkState, PolicyChange};

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such job here.
    #[error("job {0:?} is not known to this ferry")]
    UnknownJob(String),
    /// No such live worker.
    #[error("worker {0:?} is not live in this ferry; `ferryctl workers` lists the live ones")]
    UnknownWorker(String),
    /// A submitted spec is invalid (every problem listed), or its job cannot be planned.
    #[error("invalid spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
    /// A throttle change is invalid; the old policy stays.
    #[error("invalid throttle change: {}", .0.join("; "))]
    InvalidThrottle(Vec<String>),
    /// A request's argument is invalid (a chunk state, a table, a selector).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A ListChunks page token this ferry did not issue.
    #[error(
        "page_token {} was not issued by ListChunks; start again with an empty page_token",
        ferry_model::spec::clipped(.0)
    )]
    BadPageToken(String),
    /// A stored record cannot be read: garbage, or written by a newer ferry.
    #[error("{0}")]
    CorruptRecord(String),
    /// Storing or applying failed.
    #[error("{0}")]
    Internal(String),
    /// This coordinator does not lead; writes go to the leader.
    #[error("this coordinator is a standby: send this request to the leader{}", leader_hint(.0))]
    NotLeader(Option<String>),
    /// Not available here (e.g. a cluster operation asked of `ferryctl local`).
    #[error("{0}")]
    Unsupported(String),
    /// The job (or worker) exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A database or etcd could not be reached; trying again may work.
    #[error("{0}")]
    Unavailable(String),
}

fn leader_hint(address: &Option<String>) -> String {
    match address {
        Some(address) => format!(" at {address} (--endpoint {address})"),
        None => " (none is elected right now; try again in a few seconds)".to_owned(),
    }
}

/// A job's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStatusView {
    /// `RUNNING`, `PAUSED`, `DONE`, `FAILED`.
    pub state: JobStateView,
    /// Rows in verified chunks.
    pub rows_verified: u64,
    /// Rows streamed into the target by this run (including attempts later re-copied).
    pub rows_streamed: u64,
    /// Chunks planned.
    pub chunks_total: u32,
    /// Chunks verified.
    pub chunks_verified: u32,
    /// Chunks failed.
    pub chunks_failed: u32,
    /// Chunks running.
    pub chunks_running: u32,
    /// What the job waits for (an unavailable database), if anything.
    pub waiting: Option<String>,
    /// Estimated time until every chunk is verified (or COPIED, in a table loaded
    /// without its key), at this run's pace (the value of the `ferry_job_eta_seconds`
    /// metric); `None` until the run finished a chunk.
    pub eta: Option<std::time::Duration>,
}

/// Counts of a job's chunks by state (what [`JobStatusView`] reports of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Chunks planned.
    pub total: u32,
    /// Chunks VERIFIED.
    pub verified: u32,
    /// Chunks FAILED.
    pub failed: u32,
    /// Chunks held by a worker.
    pub running: u32,
    /// Rows in VERIFIED chunks.
    pub rows_verified: u64,
}

impl ChunkCounts {
    /// Counts `(state, rows)` pairs.
    pub fn of(chunks: impl Iterator<Item = (ChunkState, u64)>) -> Self {
        let mut counts = Self::default();
        for (state, rows) in chunks {
            counts.total += 1;
            match state {
                ChunkState::Verified => {
                    counts.verified += 1;
                    counts.rows_verified += rows;
                }
                ChunkState::Failed => counts.failed += 1,
                state if state.in_flight() => counts.running += 1,
                _ => {}
            }
        }
        counts
    }

    /// Counts stored records.
    pub fn of_records(chunks: &[ChunkRecord]) -> Self {
        Self::of(chunks.iter().map(|chunk| (chunk.state, chunk.rows)))
    }
}

/// A job's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobStateView {
    /// Copying.
    #[default]
    Running,
    /// Paused by an operator or by load.
    Paused,
    /// Every chunk verified.
    Done,
    /// Ended with failed chunks.
    Failed,
    /// Cancelled by an operator (distributed mode).
    Cancelled,
}

/// What the throttle allows, and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveView {
    /// Chunks allowed in flight.
    pub concurrency: u32,
    /// Whether the job is paused.
    pub paused: bool,
    /// One line per cap or pause.
    pub reasons: Vec<String>,
    /// The last load reading.
    pub load: Option<f64>,
    /// Chunks running now.
    pub in_flight: u32,
    /// Rows per second allowed, 0 = unlimited.
    pub rows_per_sec: u64,
    /// Bytes per second allowed, 0 = unlimited.
    pub bytes_per_sec: u64,
}

/// A runtime change of the throttle policy; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThrottleUpdate {
    /// New operator cap on concurrency.
    pub max_concurrency: Option<u32>,
    /// Remove the operator cap.
    pub clear_override: bool,
    /// New rows/s limit (0 removes it).
    pub rows_per_sec: Option<u64>,
    /// New bytes/s limit (0 removes it).
    pub bytes_per_sec: Option<u64>,
    /// New load `max`.
    pub load_max: Option<f64>,
    /// New load `critical`.
    pub load_critical: Option<f64>,
    /// A replacement schedule, as YAML (the spec's `throttle.schedule` list).
    pub schedule_yaml: Option<String>,
    /// The job's new weight among the cluster's jobs (the spec's `priority`).
    pub priority: Option<u32>,
}

/// Operations an operator can run against a job.
#[async_trait]
pub trait JobControl: Send + Sync {
    /// The job's progress.
    async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError>;
    /// Pauses the job (stored, so it stays paused across restarts). `actor`, here and in
    /// every other change, is the caller's identity recorded in the job's history.
    async fn pause(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError>;
    /// Resumes a paused job.
    async fn resume(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError>;
    /// Validates, stores and applies a throttle change; returns the new policy (JSON).
    async fn update_throttle(
        &self,
        job: &str,
        update: ThrottleUpdate,
        actor: &str,
    ) -> Result<(String, EffectiveView), ControlError>;
    /// The policy (JSON) and what it gives now, or at `at` (schedule only).
    async fn throttle(
        &self,
        job: &str,
        at: Option<jiff::Timestamp>,
    ) -> Result<(String, EffectiveView), ControlError>;
    /// The job's history, oldest first: every policy change and every operator action.
    async fn history(&self, job: &str) -> Result<Vec<PolicyChange>, ControlError>;
}

/// A planned table, as a dry run shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedTableView {
    /// Source table.
    pub source: String,
    /// Target table.
    pub target: String,
    /// Chunks planned.
    pub chunks: u32,
    /// Rows estimated.
    pub estimated_rows: u64,
    /// Planning remarks.
    pub warnings: Vec<String>,
}

/// What a submission planned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanView {
    /// The job.
    pub job: String,
    /// Its tables.
    pub tables: Vec<PlannedTableView>,
    /// Whether it was stored and started (false for a dry run).
    pub submitted: bool,
}

/// A job as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSummaryView {
    /// The job.
    pub job: String,
    /// Its state.
    pub state: JobStateView,
    /// Why it ended, when not DONE.
    pub reason: String,
    /// When it was submitted.
    pub submitted_at_unix_ms: i64,
}

/// Which chunks to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    /// Only in this state (`PLANNED`, ... `FAILED`).
    pub state: Option<String>,
    /// Only of this source table.
    pub table: Option<String>,
}

/// A chunk as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkView {
    /// Its id.
    pub id: u32,
    /// Source table.
    pub table: String,
    /// Its range, in words.
    pub range: String,
    /// Its state.
    pub state: String,
    /// The last attempt.
    pub attempt: u32,
    /// Failed attempts.
    pub failures: u32,
    /// Rows expected.
    pub estimated_rows: u64,
    /// Rows copied by the verified attempt.
    pub rows: u64,
    /// The worker holding it.
    pub worker: String,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The leaf partition it covers, when planned by partition.
    pub partition: String,
    /// The verified checksum (`rows/hash`), when verified.
    pub checksum: String,
    /// What the last attempt changed in the target (chunks of a sync pass only).
    pub sync: Option<ferry_model::execution::SyncChanges>,
}

/// Which chunks to copy again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecopySelector {
    /// These chunks.
    Ids(Vec<u32>),
    /// Every chunk of this source table.
    Table(String),
    /// Every chunk in this state (`FAILED`, `VERIFIED`).
    State(String),
}

/// A live worker as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerView {
    /// Its name.
    pub id: String,
    /// Chunks it runs at once.
    pub slots: u32,
    /// Chunks assigned to it now.
    pub busy: u32,
    /// Takes nothing new.
    pub draining: bool,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it registered.
    pub registered_at_unix_ms: i64,
}

/// The operations of a ferry cluster (a coordinator): submit and list jobs, inspect
/// and re-copy chunks, manage workers. `ferryctl local` does not offer them.
#[async_trait]
pub trait ClusterControl: Send + Sync {
    /// Validates and plans `spec_yaml`; unless `dry_run`, stores the job and starts it.
    async fn submit(
        &self,
        spec_yaml: &str,
        dry_run: bool,
        actor: &str,
    ) -> Result<PlanView, ControlError>;
    /// Every job.
    async fn list_jobs(&self) -> Result<Vec<JobSummaryView>, ControlError>;
    /// A job's chunks, in id order, from index `offset`, at most `limit`; also returns
    /// whether more follow.
    async fn list_chunks(
        &self,
        job: &str,
        filter: &ChunkFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ChunkView>, bool), ControlError>;
    /// Cancels a job.
    async fn cancel(&self, job: &str, actor: &str) -> Result<(), ControlError>;
    /// Copies chunks again with overwrite; returns their ids.
    async fn recopy(
        &self,
        job: &str,
        selector: RecopySelector,
        actor: &str,
    ) -> Result<Vec<u32>, ControlError>;
    /// The live workers.
    async fn list_workers(&self) -> Result<Vec<WorkerView>, ControlError>;
    /// Asks a worker to drain.
    async fn drain(&self, worker: &str, actor: &str) -> Result<(), ControlError>;
}
