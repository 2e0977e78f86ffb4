//! The coordination store: where the truth about jobs and chunks lives.
//!
//! The scheduler talks to [`Coordination`] at the level of the domain (create a job,
//! assign a chunk, report its state, complete it) and never sees keys or rows. Two
//! implementations: [`LocalStore`] (a SQLite state file, for `ferryctl local`) and, in
//! distributed mode, etcd. Every mutation is written through before the caller updates
//! its own model, so a process killed at any point resumes from the store:
//! VERIFIED chunks stay verified; chunks that were in flight go back to PLANNED and are
//! re-copied with overwrite under a higher attempt.
//!
//! [`EtcdStore`] implements the same semantics on etcd; the shared [`conformance`] suite
//! checks both.
//!
//! A chunk's life: `PLANNED → ASSIGNED → COPYING → VERIFYING → VERIFIED`, back to
//! `PLANNED` (attempt + 1 at the next assignment) on a failed copy, a mismatch or a lost
//! worker, and `FAILED` after the last allowed attempt.

pub mod cluster;
#[cfg(feature = "testing")]
pub mod cluster_conformance;
mod coalesce;
#[cfg(feature = "testing")]
pub mod conformance;
mod etcd;
mod etcd_cluster;
mod etcd_split;
mod etcd_values;
mod in_process;
pub mod keys;
mod local;
mod transitions;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableSchema;

pub use cluster::{ClusterProtocol, ClusterRef};
pub use etcd::{EtcdAccess, EtcdFailure, EtcdStore, EtcdStoreOptions};
pub use in_process::InProcessCluster;
pub use local::LocalStore;

/// Where a chunk is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChunkState {
    /// Waiting for a worker.
    Planned,
    /// Given to a worker that has not started yet.
    Assigned,
    /// Being copied into the target.
    Copying,
    /// Copied; checksums being compared.
    Verifying,
    /// Copied and verified. Never copied again.
    Verified,
    /// Gave up after the last attempt; the reason is kept.
    Failed,
    /// Copied and committed into a target table loaded without its primary key
    /// (`chunking.defer_key`), with the source checksum kept; no worker holds it. Once
    /// every chunk of the table is copied the key is built, and the chunk is verified
    /// (VERIFIED, or back to PLANNED for a keyed re-copy on a mismatch).
    Copied,
}

impl ChunkState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Planned => "PLANNED",
            ChunkState::Assigned => "ASSIGNED",
            ChunkState::Copying => "COPYING",
            ChunkState::Verifying => "VERIFYING",
            ChunkState::Verified => "VERIFIED",
            ChunkState::Failed => "FAILED",
            ChunkState::Copied => "COPIED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ChunkState::Planned,
            ChunkState::Assigned,
            ChunkState::Copying,
            ChunkState::Verifying,
            ChunkState::Verified,
            ChunkState::Failed,
            ChunkState::Copied,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// Whether a worker holds the chunk.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            ChunkState::Assigned | ChunkState::Copying | ChunkState::Verifying
        )
    }
}

impl fmt::Display for ChunkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table of a job, as planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    /// The table as the source described it.
    pub schema: TableSchema,
    /// What the table is split on.
    pub key: SplitKey,
    /// Planning remarks shown in the report (e.g. "no usable key: copied as one chunk").
    pub warnings: Vec<String>,
    /// The smallest and largest integer key of each planned unit (the table, or each of
    /// its partitions) when planned, for a single integer key: where the scheduler cuts a
    /// chunk with an unbounded end when it splits it. A hint only: the outer pieces stay
    /// unbounded, so rows inserted since still belong to exactly one chunk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_spans: Vec<PlannedKeySpan>,
    /// Whether ferry created the target table in this job without its primary key
    /// (`chunking.defer_key`): its chunks end COPIED, and the key is built once all of
    /// them are copied, then they are verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_deferred: bool,
}

/// The integer keys a planned unit held when it was planned ([`TableRecord::key_spans`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedKeySpan {
    /// The leaf partition, or `None` for a table planned as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The smallest key then.
    pub min: i64,
    /// The largest key then.
    pub max: i64,
}

/// A chunk as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// The chunk's index in the job.
    pub id: ChunkId,
    /// Index of its table in [`JobRecord::tables`].
    pub table_index: usize,
    /// The leaf partition it belongs to ([`ferry_model::schema::Partitioning`]), when its table
    /// is planned by native partitions: the chunk then owns the rows of `range` in that
    /// partition only. `None` for a table planned as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The rows it owns.
    pub range: ChunkRange,
    /// Rows expected, for scheduling (largest first) and progress.
    pub estimated_rows: u64,
    /// Where it is in its life.
    pub state: ChunkState,
    /// The last attempt assigned (0 before the first assignment).
    pub attempt: Attempt,
    /// Attempts that failed (copy error or mismatch); compared with `max_attempts`.
    pub failures: u32,
    /// Attempts whose checksum did not match.
    pub mismatches: u32,
    /// Rows copied by the verified attempt.
    pub rows: u64,
    /// The verified checksum.
    pub checksum: Option<RangeChecksum>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The worker holding it, while in flight.
    pub worker: Option<WorkerId>,
    /// What the last attempt did, kept after it ended: for the evidence report.
    #[serde(default)]
    pub evidence: ChunkEvidence,
}

/// A chunk's last attempt as evidence for sign-off (`ferryctl report`): who ran it, when,
/// and what the target held. Absent in records stored before ferry kept it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEvidence {
    /// The worker that ran the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    /// When the last attempt was assigned, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_unix_ms: Option<i64>,
    /// When the last attempt ended, in milliseconds since the Unix epoch (the
    /// verification time of a VERIFIED chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_unix_ms: Option<i64>,
    /// The target side of the last comparison: equal to `checksum` when VERIFIED, what
    /// the target held when a verify-only job found the chunk different.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_checksum: Option<RangeChecksum>,
    /// What the last attempt of a sync pass's chunk changed in the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<ferry_model::execution::SyncChanges>,
}

impl ChunkRecord {
    /// Whether a verify-only job found this chunk's source and target different (as
    /// opposed to FAILED on an error).
    pub fn differs(&self) -> bool {
        self.state == ChunkState::Failed
            && self.evidence.target_checksum.is_some()
            && self.checksum != self.evidence.target_checksum
    }

    /// A chunk as planned: PLANNED, no attempt yet, nothing copied.
    pub fn planned(
        id: ChunkId,
        table_index: usize,
        partition: Option<String>,
        range: ChunkRange,
        estimated_rows: u64,
    ) -> Self {
        Self {
            id,
            table_index,
            partition,
            range,
            estimated_rows,
            state: ChunkState::Planned,
            attempt: Attempt(0),
            failures: 0,
            mismatches: 0,
            rows: 0,
            checksum: None,
            last_error: None,
            worker: None,
            evidence: ChunkEvidence::default(),
        }
    }
}

/// Now, in milliseconds since the Unix epoch, as the stores stamp attempts.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's name (from the spec).
    pub id: JobId,
    /// Unique per creation of the job: the target's fence is keyed by it.
    pub run_id: String,
    /// The spec's fingerprint: resuming with a different spec is refused.
    pub fingerprint: String,
    /// The tables, in plan order.
    pub tables: Vec<TableRecord>,
}

impl JobRecord {
    /// A new job planned from `spec` into `tables`, with a fresh run id (the target's
    /// fence is keyed by it, so each creation of a job is told apart).
    pub fn new(spec: &ferry_model::spec::JobSpec, tables: Vec<TableRecord>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        Self {
            id: JobId(spec.name.clone()),
            run_id: format!("{}-{nanos:x}-{:x}", spec.name, std::process::id()),
            fingerprint: spec.fingerprint(),
            tables,
        }
    }
}

/// How an attempt ended, as the scheduler records it.
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkCompletion {
    /// Copied and verified (a sync pass: caught up).
    Verified {
        /// Rows copied (a sync pass: rows changed).
        rows: u64,
        /// The matching checksum.
        checksum: RangeChecksum,
        /// What a sync pass changed; `None` for other jobs.
        sync: Option<ferry_model::execution::SyncChanges>,
    },
    /// Copied into a target table whose primary key is not built yet: COPIED, with the
    /// source checksum kept for the verification after the key is built.
    Copied {
        /// Rows copied.
        rows: u64,
        /// The source side of the checksum.
        checksum: RangeChecksum,
    },
    /// Failed; back to PLANNED for another attempt with overwrite.
    Retry {
        /// Why.
        reason: String,
        /// Whether it failed on a checksum mismatch.
        mismatch: bool,
    },
    /// Stopped by ferry, not by a fault (paused longer than the throttle's
    /// `pause_timeout`): back to PLANNED for another attempt with overwrite, without
    /// counting as a failure.
    Requeue {
        /// Why.
        reason: String,
    },
    /// Failed for good.
    Failed {
        /// Why.
        reason: String,
        /// Whether it failed on a checksum mismatch.
        mismatch: bool,
    },
    /// A verify-only job compared both sides and they differ: final (FAILED, with both
    /// checksums kept).
    Differs {
        /// What the source range holds.
        source: RangeChecksum,
        /// What the target range holds.
        target: RangeChecksum,
    },
}

/// An error of the coordination store.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The state file could not be opened or written.
    #[error("state file {path}: {source}")]
    Storage {
        /// The state file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The state file cannot be opened at all (a folder, a missing folder, no permission).
    #[error(
        "cannot open state file {path}: {source}; choose another --state (a file in a \
         folder that exists and is writable)"
    )]
    OpenStateFile {
        /// The state file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The state file is not a SQLite database, or SQLite found it damaged.
    #[error(
        "state file {path} is damaged or not a ferry state file ({detail}): move it away \
         (or pass another --state) and run again to start over; chunks already in the target \
         are copied again with overwrite"
    )]
    StateFileDamaged {
        /// The state file.
        path: String,
        /// What SQLite said.
        detail: String,
    },
    /// The state file was written by a newer ferry, in a format this one cannot read.
    #[error(
        "state file {path} has format version {found}; this ferry reads version {supported}: \
         run the newer ferryctl that wrote it, or pass another --state to start over"
    )]
    StateFileTooNew {
        /// The state file.
        path: String,
        /// Its format version.
        found: i64,
        /// The newest this ferry reads.
        supported: i64,
    },
    /// A stored value could not be decoded.
    #[error(
        "state file {path}: corrupt record: {detail}; move the file away (or pass another \
         --state) and run again to start over; chunks already in the target are copied again \
         with overwrite"
    )]
    Corrupt {
        /// The state file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// The job or chunk does not exist.
    #[error("{what} not found in the coordination store")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A write carried an attempt older than the chunk's current one.
    #[error("chunk {chunk}: attempt {attempt} is stale, the chunk is at attempt {current}")]
    StaleAttempt {
        /// The chunk.
        chunk: ChunkId,
        /// The stale attempt.
        attempt: Attempt,
        /// The current attempt.
        current: Attempt,
    },
    /// A transition that the chunk state machine does not allow.
    #[error("chunk {chunk}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The chunk.
        chunk: ChunkId,
        /// Its state.
        from: ChunkState,
        /// The refused state.
        to: ChunkState,
    },
    /// The job (or other record) to create exists already.
    #[error("{what} already exists in the coordination store")]
    AlreadyExists {
        /// What was to be created.
        what: String,
    },
    /// An etcd request failed, timed out, or kept losing its compare to other writers.
    /// [`CoordinationError::is_retryable`] tells which.
    #[error("etcd: failed to {operation}: {source}")]
    Etcd {
        /// What was being done, e.g. "assign chunk 3 of job orders".
        operation: String,
        /// The classified failure.
        #[source]
        source: EtcdFailure,
    },
    /// A worker tried to register under a name that a live worker holds (on another
    /// lease): two workers of one name would take each other's assignments.
    #[error(
        "worker name {worker} is taken: a live worker holds it (pid {pid} on host {host}, \
         registered at {registered_at}); give this worker another --name, or stop that one \
         (its name is free once its lease ends)"
    )]
    WorkerNameTaken {
        /// The name.
        worker: WorkerId,
        /// The holder's host.
        host: String,
        /// The holder's process id.
        pid: u32,
        /// When the holder registered (RFC 3339, UTC).
        registered_at: String,
    },
    /// A value stored in etcd could not be decoded (or a record could not be encoded).
    #[error(
        "etcd key {key}: corrupt value: {detail} (written by another program or a newer \
         ferry?)"
    )]
    CorruptValue {
        /// The key, as text.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// A chunk could not be split: it started already (only a PLANNED chunk at attempt 0
    /// may be, so no row is lost or copied twice), or the pieces were not at least two.
    #[error("chunk {chunk}: cannot be split: {reason}")]
    SplitRefused {
        /// The chunk.
        chunk: ChunkId,
        /// Why.
        reason: String,
    },
    /// A fenced store's leader key no longer has the creation revision of the term it
    /// was fenced with: this process lost leadership, and the write was refused whole.
    #[error(
        "not the leader: leader key {leader_key} no longer has create revision \
         {create_revision}; the write was refused"
    )]
    NotLeader {
        /// The leader key, as text.
        leader_key: String,
        /// The creation revision of the leader key in the lost term.
        create_revision: i64,
    },
}

impl CoordinationError {
    /// Returns whether the same call may succeed if tried again unchanged: etcd
    /// unavailable or overloaded, a request timeout, a busy state file. A refused
    /// compare, a stale attempt, lost leadership, a corrupt value and every other
    /// error are final.
    ///
    /// A retryable error from a write may still have been applied (the answer was lost
    /// after etcd committed): reload the affected records before acting on them again.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinationError::Etcd { source, .. } => source.is_retryable(),
            CoordinationError::Storage { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            CoordinationError::Corrupt { .. }
            | CoordinationError::SplitRefused { .. }
            | CoordinationError::OpenStateFile { .. }
            | CoordinationError::StateFileDamaged { .. }
            | CoordinationError::StateFileTooNew { .. }
            | CoordinationError::NotFound { .. }
            | CoordinationError::StaleAttempt { .. }
            | CoordinationError::InvalidTransition { .. }
            | CoordinationError::AlreadyExists { .. }
            | CoordinationError::WorkerNameTaken { .. }
            | CoordinationError::CorruptValue { .. }
            | CoordinationError::NotLeader { .. } => false,
        }
    }
}

/// Shorthand for coordination results.
pub type Result<T, E = CoordinationError> = std::result::Result<T, E>;

/// The store of jobs, chunks and workers. All methods are atomic; a failed call changed
/// nothing.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Loads a job and its chunks, if it exists.
    async fn load_job(&self, job: &JobId) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>>;

    /// Loads a job's record without its chunks, if it exists (a worker needs the tables,
    /// not every chunk: its assignments carry theirs). No default from
    /// [`Coordination::load_job`]: every store reads the record alone.
    async fn load_job_record(&self, job: &JobId) -> Result<Option<JobRecord>>;

    /// Creates a job with its planned chunks.
    async fn create_job(&self, job: &JobRecord, chunks: &[ChunkRecord]) -> Result<()>;

    /// Records a live worker.
    async fn register_worker(&self, worker: &WorkerId) -> Result<()>;

    /// Returns every in-flight chunk of the job to PLANNED: their workers are gone (the
    /// process that ran them stopped). Their next attempt overwrites. Returns their ids.
    async fn requeue_in_flight(&self, job: &JobId) -> Result<Vec<ChunkId>>;

    /// Assigns a PLANNED chunk to a worker, bumping its attempt; returns the new attempt.
    async fn assign(&self, job: &JobId, chunk: ChunkId, worker: &WorkerId) -> Result<Attempt>;

    /// Assigns a PLANNED chunk to a worker and records it COPYING, as [`Coordination::assign`]
    /// then [`Coordination::report_state`] would, in one write where the store can (one
    /// SQLite transaction, one etcd txn): a chunk's start costs one commit, not two.
    async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
    ) -> Result<Attempt> {
        let attempt = self.assign(job, chunk, worker).await?;
        self.report_state(job, chunk, attempt, ChunkState::Copying)
            .await?;
        Ok(attempt)
    }

    /// Moves an in-flight chunk to COPYING or VERIFYING. Refused for a stale attempt.
    async fn report_state(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        state: ChunkState,
    ) -> Result<()>;

    /// Ends an attempt. Refused for a stale attempt.
    async fn complete(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        completion: &ChunkCompletion,
    ) -> Result<ChunkRecord>;

    /// Cuts a PLANNED chunk none of whose attempts wrote into `pieces` (range and
    /// estimated rows each, at least two, covering exactly the chunk's rows, in key
    /// order): the chunk keeps the first piece (and its attempt count), and the others
    /// become new PLANNED chunks of its table and partition with the next free ids.
    /// `after` is the chunk's attempt now, which the caller knows wrote nothing:
    /// `Attempt(0)` for a chunk that never started, `Attempt(1)` for one whose first
    /// attempt the caller saw handed back before writing (a give-back request answered
    /// [`ferry_model::execution::ChunkResult::Requeued`]). Atomic: the chunk and the new
    /// ones are written together or not at all. Returns the pieces as stored, the chunk
    /// first. Refused ([`CoordinationError::SplitRefused`]) for any other chunk.
    async fn split_chunk(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>>;

    /// Puts FAILED chunks (or all non-verified ones) back to PLANNED with their failure
    /// count reset, so an operator can retry them.
    async fn reset_failed(&self, job: &JobId) -> Result<Vec<ChunkId>>;

    /// Lists a job's chunks in id order (none for an unknown job).
    async fn list_chunks(&self, job: &JobId) -> Result<Vec<ChunkRecord>> {
        Ok(self
            .load_job(job)
            .await?
            .map(|(_, chunks)| chunks)
            .unwrap_or_default())
    }

    /// Loads one chunk of a job as stored now (`None` when the job or chunk is unknown).
    /// A worker reads a chunk this way when its plan may have changed since it read the
    /// job (a chunk split before it started, see [`Coordination::split_chunk`]).
    async fn load_chunk(&self, job: &JobId, chunk: ChunkId) -> Result<Option<ChunkRecord>> {
        Ok(self
            .list_chunks(job)
            .await?
            .into_iter()
            .find(|record| record.id == chunk))
    }

    /// Stores the job's throttle policy (JSON of `ThrottlePolicy`) and records the change
    /// in its history, atomically.
    async fn save_policy(
        &self,
        job: &JobId,
        policy_json: &str,
        change: &PolicyChange,
    ) -> Result<()>;

    /// Loads the job's stored throttle policy (JSON), if any.
    async fn load_policy(&self, job: &JobId) -> Result<Option<String>>;

    /// Every recorded policy change of the job, oldest first.
    async fn policy_history(&self, job: &JobId) -> Result<Vec<PolicyChange>>;

    /// Appends an entry to the job's history without changing its policy (an operator's
    /// cancel, re-copy, submit or drain), atomically with respect to [`Self::save_policy`].
    async fn record_event(&self, job: &JobId, event: &PolicyChange) -> Result<()>;
}

/// One entry of a job's history: a change of its throttle policy, or another action on
/// the job (see [`PolicyChange::action`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// `spec`, `operator`, `controller` or `outage`.
    pub origin: String,
    /// What changed, old → new, in words.
    pub summary: String,
    /// Who: for an operator's call the caller's identity (`token:NAME`, `cert:SUBJECT`,
    /// `local:USER` or `anonymous`); empty for ferry's own changes and for entries
    /// written before identities were recorded.
    #[serde(default)]
    pub actor: String,
    /// What kind of entry: [`THROTTLE_ACTION`] for a policy change (pause and resume
    /// included), otherwise the operator's verb (`submit`, `cancel`, `recopy`, `drain`).
    #[serde(default = "throttle_action")]
    pub action: String,
}

/// [`PolicyChange::action`] of a change to the throttle policy; entries stored before
/// actions were recorded read as this.
pub const THROTTLE_ACTION: &str = "throttle";

fn throttle_action() -> String {
    THROTTLE_ACTION.to_owned()
}

impl PolicyChange {
    /// A change of the throttle policy made by `origin` (`actor`: who, for an operator).
    pub fn throttle(at_unix_ms: i64, origin: &str, actor: &str, summary: String) -> Self {
        PolicyChange {
            at_unix_ms,
            origin: origin.to_owned(),
            summary,
            actor: actor.to_owned(),
            action: THROTTLE_ACTION.to_owned(),
        }
    }

    /// An operator's `action` on the job (`submit`, `cancel`, `recopy`, `drain`) by `actor`.
    pub fn operator_action(at_unix_ms: i64, action: &str, actor: &str, summary: String) -> Self {
        PolicyChange {
            at_unix_ms,
            origin: "operator".to_owned(),
            summary,
            actor: actor.to_owned(),
            action: action.to_owned(),
        }
    }

    /// Whether this entry changed the throttle policy (the throttle history shows only these).
    pub fn is_throttle(&self) -> bool {
        self.action.is_empty() || self.action == THROTTLE_ACTION
    }
}
